"""`./dev jitpass …` runs the CLI from the checkout without activating anything (README "Commands")."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.e2e.test_cli import ROOT


def _dev(home: Path, *args: str, stdin: str = "", cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # A newcomer's shell: no virtualenv on PATH, no jitpass settings but the home.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JITPASS_", "SLACK_", "CONNECTIONS__", "OP_")) and k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env["JITPASS_HOME"] = str(home)
    return subprocess.run([str(ROOT / "dev"), "jitpass", *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_dev_jitpass_items_list_works_from_the_repo_on_the_home_it_is_given(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    in_repo = {p.name for p in ROOT.iterdir()}

    missing = _dev(home, "items", "list")
    assert missing.returncode == 2 and "no jitpass store at" in missing.stderr and str(home) in missing.stderr
    assert "Traceback" not in missing.stderr

    added = _dev(home, "items", "add", "acme-zendesk", "--vault", "acme", stdin="s3cret-pw\n\n")
    assert added.returncode == 0, added.stderr
    listed = _dev(home, "items", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(i["name"], i["vault"]) for i in json.loads(listed.stdout)] == [("acme-zendesk", "acme")]
    table = _dev(home, "items", "list")
    assert table.returncode == 0 and "acme-zendesk" in table.stdout and "s3cret-pw" not in table.stdout

    assert {p.name for p in home.iterdir()} >= {"jitpass.db", "jitpass.key"}
    # Nothing of the store was created in the checkout (other tools' caches may come and go there).
    assert not [n for n in {p.name for p in ROOT.iterdir()} - in_repo if n.startswith("jitpass")]


def test_dev_jitpass_reads_relative_paths_from_where_it_is_run(tmp_path: Path) -> None:
    """`cd ~/exports && ~/jitpass/dev jitpass items import export.csv`: the file is the caller's, not the checkout's."""
    home, here = tmp_path / "home", tmp_path / "exports"
    home.mkdir()
    here.mkdir()
    (here / "export.csv").write_text("Title,Password\nAcme VPN,pw-2\n", encoding="utf-8")
    imported = _dev(home, "items", "import", "export.csv", "--vault", "acme", cwd=here)
    assert imported.returncode == 0, imported.stderr
    listed = _dev(home, "items", "list", "--json", cwd=here)
    assert [i["name"] for i in json.loads(listed.stdout)] == ["acme-vpn"]
