"""Exports and terminal listings of hostile chat input, run as real `jitpass` processes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.e2e.test_cli import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


FORMULA_ADMIN = "=HYPERLINK(\"http://evil.example\",\"click\")\x1b[31m"


def test_csv_export_neutralises_a_formula_actor_and_jsonl_keeps_it_exact(cli: Cli, tmp_path: Path) -> None:
    cli.env["JITPASS_ADMIN"] = FORMULA_ADMIN
    items = {"items": [{"name": "calc", "vault": "acme", "password": "pw", "notes": "n"}]}
    (tmp_path / "items.json").write_text(json.dumps(items), encoding="utf-8")
    assert cli("items", "import", str(tmp_path / "items.json")).returncode == 0

    done = cli("audit", "export", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    row = next(csv.DictReader(io.StringIO(done.stdout)))
    assert row["actor_display"] == "'=HYPERLINK(\"http://evil.example\",\"click\")"
    assert done.stdout.splitlines()[0].startswith('"seq","id"')  # every cell quoted, as OWASP recommends

    exact = json.loads(cli("audit", "export").stdout.splitlines()[0])
    assert exact["actor"]["display"] == FORMULA_ADMIN


def test_items_list_on_a_terminal_shows_no_escapes_and_no_markup(cli: Cli, tmp_path: Path) -> None:
    items = {"items": [{"name": "db", "vault": "acme", "password": "pw", "username": "[bold]x[/bold]\x1b[2J",
                        "url": "https://a.example/\x9b31m"}]}
    (tmp_path / "items.json").write_text(json.dumps(items), encoding="utf-8")
    assert cli("items", "import", str(tmp_path / "items.json")).returncode == 0
    listing = cli("items", "list")
    assert listing.returncode == 0, listing.stderr
    assert "\x1b" not in listing.stdout and "\x9b" not in listing.stdout
    assert "[bold]x[/bold]" in listing.stdout  # shown as typed, not interpreted as rich markup
