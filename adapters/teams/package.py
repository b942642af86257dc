"""Build the Teams app package: `python -m adapters.teams.package --bot-id <Entra app id>`.

Fills the manifest template in `adapters/teams/app/`, checks what Teams checks on upload
(GUIDs, lengths, icon sizes, nothing left unfilled) and writes a zip with `manifest.json`,
`color.png` (192x192) and `outline.png` (32x32) at its root, ready for Teams admin center
("Upload a custom app") or Developer Portal.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["APP_DIR", "build_package", "main", "render_manifest"]

APP_DIR = Path(__file__).with_name("app")
ICONS = {"color.png": (192, 192), "outline.png": (32, 32)}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_FIXED_TIME = (2026, 1, 1, 0, 0, 0)  # zip entries get a fixed date: the same inputs give the same bytes


class PackageError(Exception):
    """The package would be refused by Teams; the message says why."""


def png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise PackageError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def render_manifest(template: str, values: Mapping[str, str]) -> dict[str, object]:
    """The manifest with every `{{NAME}}` filled in and its limits checked."""
    text = template
    for placeholder, value in values.items():
        text = text.replace("{{" + placeholder + "}}", json.dumps(value)[1:-1])
    left = sorted(set(re.findall(r"\{\{([A-Z_]+)\}\}", text)))
    if left:
        raise PackageError(f"manifest placeholders without a value: {', '.join(left)}")
    manifest: dict[str, object] = json.loads(text)
    bots = manifest.get("bots")
    assert isinstance(bots, list)
    for bot in bots:
        if not _GUID.match(str(bot["botId"])):
            raise PackageError(f"botId must be the bot's Entra app id (a GUID), not {bot['botId']!r}")
    if not _GUID.match(str(manifest["id"])):
        raise PackageError(f"id must be a GUID, not {manifest['id']!r}")
    if not _VERSION.match(str(manifest["version"])):
        raise PackageError(f"version must look like 1.2.3, not {manifest['version']!r}")
    name, description = manifest["name"], manifest["description"]
    assert isinstance(name, dict) and isinstance(description, dict)
    limits: list[tuple[str, str, int]] = [
        ("name.short", str(name["short"]), 30), ("name.full", str(name["full"]), 100),
        ("description.short", str(description["short"]), 80), ("description.full", str(description["full"]), 4000),
    ]
    for where, text_value, limit in limits:
        if len(text_value) > limit:
            raise PackageError(f"{where} is {len(text_value)} characters; Teams allows {limit}")
    developer = manifest["developer"]
    assert isinstance(developer, dict)
    for key in ("websiteUrl", "privacyUrl", "termsOfUseUrl"):
        if not str(developer[key]).startswith("https://"):
            raise PackageError(f"developer.{key} must be an https URL")
    return manifest


def build_package(out: Path, values: Mapping[str, str], app_dir: Path = APP_DIR) -> Path:
    """Write the zip to `out` and return it."""
    manifest = render_manifest((app_dir / "manifest.json").read_text(encoding="utf-8"), values)
    icons = manifest["icons"]
    assert isinstance(icons, dict)
    files: dict[str, bytes] = {"manifest.json": (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()}
    for name, size in ICONS.items():
        data = (app_dir / name).read_bytes()
        if png_size(data) != size:
            raise PackageError(f"{name} is {png_size(data)[0]}x{png_size(data)[1]}; Teams needs {size[0]}x{size[1]}")
        if name not in icons.values():
            raise PackageError(f"the manifest does not name {name}")
        files[name] = data
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=_FIXED_TIME), data)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    env = os.environ
    default_bot = env.get("CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID") or env.get("MICROSOFT_APP_ID") or ""
    parser = argparse.ArgumentParser(prog="python -m adapters.teams.package", description=__doc__.splitlines()[0])
    parser.add_argument("--bot-id", default=default_bot,
                        help="the bot's Entra app (client) id; default CONNECTIONS__SERVICE_CONNECTION__SETTINGS__"
                             "CLIENTID")
    parser.add_argument("--app-id", help="the Teams app id (a GUID); default: the bot id")
    parser.add_argument("--version", default="0.1.0", help="app package version, e.g. 0.1.0 (raise it on every upload)")
    parser.add_argument("--developer", default="jitpass", help="developer name shown in Teams")
    parser.add_argument("--website", default="https://example.com/jitpass", help="developer website (https)")
    parser.add_argument("--privacy", help="privacy statement URL (https); default: the website")
    parser.add_argument("--terms", help="terms of use URL (https); default: the website")
    parser.add_argument("--out", type=Path, default=Path("dist/jitpass-teams.zip"), help="zip to write")
    args = parser.parse_args(argv)
    if not args.bot_id:
        parser.error("--bot-id is required: the bot's Entra app (client) id, a GUID")
    values = {
        "BOT_ID": args.bot_id, "APP_ID": args.app_id or args.bot_id, "VERSION": args.version,
        "DEVELOPER": args.developer, "WEBSITE_URL": args.website, "PRIVACY_URL": args.privacy or args.website,
        "TERMS_URL": args.terms or args.website,
    }
    try:
        path = build_package(args.out, values)
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}: upload it in Teams (Apps > Manage your apps > Upload an app) or Teams admin center")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
