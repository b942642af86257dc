"""The `jitpass` command line, run as real processes against real SQLite files."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest

FIXTURES = Path(__file__).parent.parent / "fixtures"
ROOT = Path(__file__).parent.parent.parent

GOOD_POLICY = """
timezone = "Europe/Amsterdam"
[defaults]
max_duration = "4h"
[approvers]
slack = ["ULEAD"]
[vaults.acme]
approvals_required = 2
"""


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("JITPASS_", "SLACK_", "CONNECTIONS__"))}
        self.env.update({
            "JITPASS_STORE": f"sqlite:///{tmp_path / 'jitpass.db'}",
            "JITPASS_MASTER_KEY_FILE": str(tmp_path / "jitpass.key"),
            "JITPASS_DOTENV": str(tmp_path / "none.env"),
            "JITPASS_ADMIN": "admin-alice",
            "JITPASS_HOME": str(tmp_path),
        })
        self.tmp = tmp_path

    def __call__(self, *args: str, stdin: str = "", entry: str = "jitpass") -> subprocess.CompletedProcess[str]:
        jitpass = [str(Path(sys.executable).parent / "jitpass")]
        command = jitpass if entry == "jitpass" else [sys.executable, "-m", "bot"]
        return subprocess.run([*command, *args], input=stdin, capture_output=True, text=True, env=self.env,
                              cwd=self.tmp, timeout=60)

    def events(self) -> list[dict[str, object]]:
        done = self("audit", "export", "--format", "jsonl")
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def assert_no_items(cli: Cli) -> None:
    """Nothing stored: either no store was created at all, or it lists no item."""
    listed = cli("items", "list", "--json")
    if listed.returncode == 0:
        assert json.loads(listed.stdout) == []
    else:
        assert listed.returncode == 2 and "no jitpass store at" in listed.stderr, listed.stderr


PASSWORDS = ["Tr1cky,pass\"word", "zd-admin-9f8e7d", "üñíçødé-пароль"]


def test_import_1password_csv_then_list_and_show_metadata_only(cli: Cli) -> None:
    done = cli("items", "import", str(FIXTURES / "1password-export.csv"), "--vault", "acme")
    assert done.returncode == 0, done.stderr
    assert "imported 8, updated 0, unchanged 0, skipped 1" in done.stdout
    listing = cli("items", "list", "--json")
    items = json.loads(listing.stdout)
    assert len(items) == 8
    raw = (FIXTURES / "1password-export.csv").read_text(encoding="utf-8")
    secrets = [row["Password"] for row in csv.DictReader(io.StringIO(raw)) if row.get("Password")]
    assert secrets
    for output in (listing.stdout, cli("items", "list").stdout, cli("items", "show", items[0]["name"]).stdout):
        assert not any(s in output for s in secrets)
    assert sum(e["type"] == "item.added" for e in cli.events()) == 8


def test_add_reads_password_and_seed_from_stdin_never_argv(cli: Cli) -> None:
    done = cli("items", "add", "acme-zendesk", "--vault", "acme", "--username", "support@acme.example",
               "--url", "https://acme.zendesk.example", stdin=f"{PASSWORDS[0]}\nJBSWY3DPEHPK3PXPJBSWY3DP\n")
    assert done.returncode == 0, done.stderr
    shown = json.loads(cli("items", "show", "acme-zendesk", "--json").stdout)
    assert shown["has_totp"] is True and shown["username"] == "support@acme.example"
    assert PASSWORDS[0] not in json.dumps(shown)


def test_add_with_invalid_totp_seed_is_refused_and_stores_nothing(cli: Cli) -> None:
    done = cli("items", "add", "acme-zendesk", "--vault", "acme", stdin="pw-123456\nnot a seed!!\n")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "not a seed" not in done.stderr
    assert_no_items(cli)


def test_malformed_csv_rows_are_reported_by_number_and_nothing_is_imported(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Title,Url,Username,Password,OTPAuth\n"
                   "Good One,https://a.example,u,p1,\n"
                   ",https://b.example,u,p2,\n"
                   "Bad Otp,https://c.example,u,p3,otpauth://totp/x?secret=!!!\n", encoding="utf-8")
    done = cli("items", "import", str(bad))
    assert done.returncode == 2
    assert "line 3" in done.stderr and "line 4" in done.stderr and "Traceback" not in done.stderr
    assert_no_items(cli)
    skipped = cli("items", "import", str(bad), "--skip-bad")
    assert skipped.returncode == 0 and "imported 1, updated 0, unchanged 0, skipped 2" in skipped.stdout


def test_import_json_and_remove(cli: Cli) -> None:
    assert cli("items", "import", str(FIXTURES / "items.json")).returncode == 0
    names = [i["name"] for i in json.loads(cli("items", "list", "--json").stdout)]
    assert len(names) == 3
    assert cli("items", "remove", names[0]).returncode == 0
    assert names[0] not in cli("items", "list").stdout
    gone = cli("items", "show", names[0])
    assert gone.returncode == 2 and f"no item called '{names[0]}'" in gone.stderr


def test_audit_verify_detects_an_edited_event(cli: Cli, tmp_path: Path) -> None:
    cli("items", "import", str(FIXTURES / "items.json"))
    ok = cli("audit", "verify")
    assert ok.returncode == 0 and "3 event(s) verified" in ok.stdout
    with closing(sqlite3.connect(tmp_path / "jitpass.db")) as conn:
        conn.execute("UPDATE events SET reason = 'edited' WHERE seq = 2")
        conn.commit()
    broken = cli("audit", "verify")
    assert broken.returncode == 3 and "seq 2" in broken.stderr


def test_audit_export_csv_and_since(cli: Cli) -> None:
    cli("items", "import", str(FIXTURES / "items.json"))
    done = cli("audit", "export", "--format", "csv", "--since", "30d")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["type"] for r in rows] == ["item.added"] * 3
    assert rows[0]["actor_user_id"] == "admin-alice" and rows[0]["seq"] == "1"
    bad = cli("audit", "export", "--since", "thirty days")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_keys_rotate_keeps_every_item_readable_and_retires_old_key(cli: Cli, tmp_path: Path) -> None:
    cli("items", "add", "acme-zendesk", "--vault", "acme", stdin="secret-pw-1\n\n")
    old_ring = (tmp_path / "jitpass.key").read_text()
    done = cli("keys", "rotate", "--retire-old")
    assert done.returncode == 0, done.stderr
    assert "1 item(s) re-wrapped" in done.stdout
    new_ring = (tmp_path / "jitpass.key").read_text()
    old_ids = {line.split(":")[0] for line in old_ring.splitlines() if line and not line.startswith("#")}
    assert not any(line.split(":")[0] in old_ids for line in new_ring.splitlines() if line and line[0] != "#")
    # With only the new key, the item still opens: rotating its password needs to decrypt the TOTP part.
    assert cli("items", "rotate", "acme-zendesk", stdin="secret-pw-2\n").returncode == 0
    assert "key.rotated" in [e["type"] for e in cli.events()]


def test_keys_retire_drops_old_keys_without_adding_one_and_keeps_comments(cli: Cli, tmp_path: Path) -> None:
    key_file = tmp_path / "jitpass.key"
    cli("items", "add", "acme-zendesk", "--vault", "acme", stdin="secret-pw-1\n\n")
    first_id = next(line.split(":")[0] for line in key_file.read_text().splitlines() if line and line[0] != "#")
    # A second key appended by hand (as with JITPASS_MASTER_KEY): the item is still sealed under the first.
    key_file.write_text(key_file.read_text() + "# added by ops\n" + cli("keys", "generate").stdout)
    ring_ids = [line.split(":")[0] for line in key_file.read_text().splitlines() if line and line[0] != "#"]
    done = cli("keys", "retire")
    assert done.returncode == 0, done.stderr
    assert f"retired master key(s) {first_id}; 1 item(s) re-wrapped" in done.stdout
    text = key_file.read_text()
    kept = [line.split(":")[0] for line in text.splitlines() if line and line[0] != "#"]
    assert kept == [ring_ids[-1]]  # no third key: the active one stays, alone
    assert "# added by ops" in text and "# jitpass master key ring" in text
    assert f"# retired master key {first_id}" in text
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert cli("items", "rotate", "acme-zendesk", stdin="secret-pw-2\n").returncode == 0  # opens with the new ring
    retired = [e for e in cli.events() if e["type"] == "key.retired"]
    assert len(retired) == 1 and retired[0]["details"]["retired"] == [first_id]  # type: ignore[index]
    again = cli("keys", "retire")
    assert again.returncode == 0 and "nothing to retire" in again.stdout


def test_wrong_master_key_gives_a_clear_message_without_a_trace(cli: Cli, tmp_path: Path) -> None:
    cli("items", "add", "acme-zendesk", "--vault", "acme", stdin="secret-pw-1\n\n")
    cli.env["JITPASS_MASTER_KEY"] = cli("keys", "generate").stdout.strip()
    done = cli("items", "list")
    assert done.returncode == 2
    assert "master key does not match" in done.stderr and "Traceback" not in done.stderr


def test_corrupted_database_file_gives_a_clear_message(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "jitpass.db").write_bytes(os.urandom(4096))
    done = cli("items", "list")
    assert done.returncode == 2 and "not a valid jitpass store" in done.stderr and "Traceback" not in done.stderr


def test_policy_check_names_key_and_line(cli: Cli, tmp_path: Path) -> None:
    good = tmp_path / "policy.toml"
    good.write_text(GOOD_POLICY, encoding="utf-8")
    ok = cli("policy", "check", str(good))
    assert ok.returncode == 0 and "1 vault(s)" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD_POLICY.replace('approvals_required = 2', 'approvals_required = "two"'), encoding="utf-8")
    done = cli("policy", "check", str(bad))
    assert done.returncode == 2
    assert "vaults.acme.approvals_required (line 8)" in done.stderr


def test_python_dash_m_bot_is_the_same_program(cli: Cli) -> None:
    cli("items", "import", str(FIXTURES / "items.json"))
    assert cli("items", "list", "--json", entry="module").stdout == cli("items", "list", "--json").stdout


def test_rotation_due_lists_items_revealed_since_rotation(cli: Cli, tmp_path: Path) -> None:
    cli("items", "import", str(FIXTURES / "items.json"))
    assert json.loads(cli("items", "list", "--rotation-due", "--json").stdout) == []


def _free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(cli: Cli) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = _free_port()
    cli.env["PORT"] = str(port)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "jitpass"), "serve", "--demo"], cwd=cli.tmp,
                            env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def test_serve_demo_creates_key_seeds_demo_item_and_answers_healthz(
    served: tuple[subprocess.Popen[str], int], cli: Cli, tmp_path: Path
) -> None:
    proc, port = served
    body: dict[str, object] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(150):
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    body = await response.json()
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    assert body.get("status") == "ok"
    assert isinstance(body["store"], dict) and body["store"]["kind"] == "sqlite"
    assert stat.S_IMODE((tmp_path / "jitpass.key").stat().st_mode) == 0o600
    names = [i["name"] for i in json.loads(cli("items", "list", "--json").stdout)]
    assert names == ["demo-zendesk"]
    proc.terminate()
    output = proc.communicate(timeout=15)[0]
    assert "master_key_created" in output and "production" in output
    assert proc.returncode == 0 and "event=stopping reason=SIGTERM" in output  # a clean stop, not a kill
