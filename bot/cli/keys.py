"""`jitpass keys rotate|retire|generate`: master keys."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bot.cli.common import actor, opened_runtime, replace_file
from bot.cli.help import add_command, described
from bot.domain.config import Settings
from bot.domain.errors import InputError
from bot.domain.vault import format_key_line, generate_key, parse_key_ring, retire_key_lines


def _key_file(settings: Settings, verb: str, hint: str) -> Path:
    """The key file `keys rotate|retire` may rewrite; InputError when the ring comes from the environment."""
    if settings.master_key:
        raise InputError(f"JITPASS_MASTER_KEY is set in the environment, so jitpass cannot {verb} it.",
                         hint=hint + "; or use JITPASS_MASTER_KEY_FILE.")
    path = settings.master_key_file
    if not path.exists():
        raise InputError(f"master key file {path} does not exist: nothing to {verb}. Looked in: {settings.where()}")
    return path




async def _retire(settings: Settings, path: Path) -> tuple[int, tuple[str, ...]]:
    """Move every item onto the active key, then drop the other keys from the file (comments kept)."""
    text = path.read_text(encoding="utf-8")
    active = parse_key_ring(text, source=f"master key file {path}").active.key_id
    new_text, retired = retire_key_lines(text, active, source=f"master key file {path}")
    if not retired:
        return 0, ()
    # The store first: once no item needs the old keys, dropping them from the file cannot lose anything.
    async with opened_runtime(settings) as rt:
        moved = await rt.catalog.retire_old_keys(actor(), retired)
    replace_file(path, new_text, suffix=".tmp")
    return moved, retired


async def cmd_keys_retire(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    path = _key_file(settings, "retire keys in",
                     "Re-wrap with `jitpass keys rotate`, then remove every line but the last from the value yourself")
    moved, retired = await _retire(settings, path)
    if not retired:
        print(f"{path} holds only the active key: nothing to retire")
        return 0
    print(f"retired master key(s) {', '.join(retired)}; {moved} item(s) re-wrapped under the active key")
    return 0


async def cmd_keys_rotate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    path = _key_file(settings, "add a key to",
                     "Append the line printed by `jitpass keys generate` to the value (the last key is active), "
                     "restart, then run `jitpass keys rotate` again")
    # Open with the current ring first: a wrong key fails here, before anything changes.
    async with opened_runtime(settings):
        pass
    old_text = path.read_text(encoding="utf-8")
    new_key = generate_key()
    path.write_text(old_text.rstrip("\n") + "\n" + format_key_line(new_key) + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    try:
        async with opened_runtime(settings) as rt:
            moved = await rt.catalog.rotate_master_key(actor())
    except BaseException:
        path.write_text(old_text, encoding="utf-8")  # nothing was re-wrapped: keep the old ring
        raise
    if args.retire_old:
        await _retire(settings, path)
    print(f"new master key {new_key.key_id} is active; {moved} item(s) re-wrapped"
          + ("; old keys retired" if args.retire_old else "; old keys can now be removed with --retire-old"))
    return 0


async def cmd_keys_generate(args: argparse.Namespace) -> int:
    print(format_key_line(generate_key()))
    return 0


def add_commands(sub: Any) -> None:
    """Add this command group to the `jitpass` sub-command parser."""
    keys = sub.add_parser("keys", help="master keys", description="The master keys that seal every item's secrets.",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog=described(["jitpass keys rotate", "jitpass keys retire"])).add_subparsers(
        dest="keys_cmd", required=True, metavar="COMMAND")
    p = add_command(keys, "rotate", "add a new master key and re-wrap every item under it",
                    description="Add a new master key to the key file (the last key is active) and re-wrap every "
                    "item's data key under it, audited as key.rotated. Refused when the ring comes from "
                    "JITPASS_MASTER_KEY (append a `jitpass keys generate` line to it yourself).",
                    example=["jitpass keys rotate", "jitpass keys rotate --retire-old"])
    p.add_argument("--retire-old", action="store_true",
                   help="then drop the old keys from the key file (comments kept), as `keys retire` does")
    p.set_defaults(handler=cmd_keys_rotate)
    p = add_command(keys, "retire", "retire every master key but the active one, without adding a key",
                    description="Re-wrap any item still sealed under an older key with the active (last) key, "
                    "then remove the older keys from the key file. Comments stay; each removed line becomes "
                    "`# retired master key <id>`. Audited as key.retired.", example="jitpass keys retire")
    p.set_defaults(handler=cmd_keys_retire)
    p = add_command(keys, "generate", "print a new key-ring line (for JITPASS_MASTER_KEY)",
                    description="Print a new master key line, for JITPASS_MASTER_KEY. Touches no store.",
                    example="jitpass keys generate")
    p.set_defaults(handler=cmd_keys_generate)
