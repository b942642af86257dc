"""The Teams app package: `python -m adapters.teams.package` builds what Teams accepts for upload."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from adapters.teams.package import main, png_size

BOT_ID = "8f0d2a4c-1b2e-4c3d-9e8f-0a1b2c3d4e5f"
ROOT = Path(__file__).resolve().parents[2]


def package(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapters.teams.package", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"})


def test_the_package_holds_a_filled_manifest_and_both_icons_at_its_root(tmp_path: Path) -> None:
    out = tmp_path / "jitpass-teams.zip"
    done = package("--bot-id", BOT_ID, "--version", "1.2.3", "--website", "https://jitpass.example.com",
                   "--out", str(out))

    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(archive.read("manifest.json"))
        assert png_size(archive.read("color.png")) == (192, 192)
        assert png_size(archive.read("outline.png")) == (32, 32)
    assert manifest["id"] == BOT_ID and manifest["bots"][0]["botId"] == BOT_ID
    assert manifest["version"] == "1.2.3"
    assert manifest["developer"]["privacyUrl"] == "https://jitpass.example.com"
    assert set(manifest["bots"][0]["scopes"]) == {"personal", "team", "groupChat"}
    assert "{{" not in json.dumps(manifest)


def test_the_package_refuses_what_teams_would_refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID", raising=False)
    monkeypatch.delenv("MICROSOFT_APP_ID", raising=False)
    out = tmp_path / "x.zip"
    with pytest.raises(SystemExit) as no_bot_id:
        main(["--out", str(out)])
    assert no_bot_id.value.code == 2 and "--bot-id is required" in capsys.readouterr().err
    assert main(["--bot-id", "my-bot", "--out", str(out)]) == 2
    assert "botId must be the bot's Entra app id (a GUID)" in capsys.readouterr().err
    assert main(["--bot-id", BOT_ID, "--website", "http://insecure.example", "--out", str(out)]) == 2
    assert "developer.websiteUrl must be an https URL" in capsys.readouterr().err
    assert main(["--bot-id", BOT_ID, "--version", "one", "--out", str(out)]) == 2
    assert not out.exists()
