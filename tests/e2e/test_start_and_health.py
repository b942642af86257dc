"""Start-up failures say what failed and leave nothing running; /healthz tells the truth about writes."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.test_cli import FIXTURES, Cli, _free_port
from tests.support.app import running_app, test_settings

GARBAGE = bytes(range(256)) * 16  # 4 KiB, the same every run


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def _corrupt(path: Path, offset: int = 8192) -> None:
    with path.open("r+b") as db:
        db.seek(offset)
        db.write(GARBAGE)


def test_every_command_on_a_corrupted_file_says_so_and_exits(cli: Cli, tmp_path: Path) -> None:
    assert cli("items", "import", str(FIXTURES / "items.json")).returncode == 0
    _corrupt(tmp_path / "jitpass.db")
    cli.env["PORT"] = str(_free_port())
    for command in (("items", "list"), ("audit", "verify"), ("serve",)):
        done = cli(*command)  # Cli bounds every run (60 s): a hang fails the test instead of stalling the suite
        assert done.returncode == 2, (command, done.stderr)
        assert "is not a valid jitpass store" in done.stderr, (command, done.stderr)
        assert "Traceback" not in done.stderr and "error id" not in done.stderr


def test_a_busy_port_is_named_and_nothing_starts_before_the_bind(cli: Cli, tmp_path: Path) -> None:
    with closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cli.env["PORT"] = str(port)
        done = subprocess.run([str(Path(sys.executable).parent / "jitpass"), "serve"], capture_output=True,
                              text=True, env=cli.env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert f"port {port} is in use" in done.stderr and "error id" not in done.stderr
    # No start-up work ran: no store file, no master key created.
    assert not (tmp_path / "jitpass.db").exists() and not (tmp_path / "jitpass.key").exists()


def test_an_unreadable_queued_requests_journal_is_named_at_start(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "slack-queued-0.jsonl").mkdir()  # what the journal's path holds is not a file
    cli.env.update({"PORT": str(_free_port()), "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s3cret",
                    "SLACK_API_URL": f"http://127.0.0.1:{_free_port()}/api/"})  # nothing listens there
    done = cli("serve")
    assert done.returncode == 2, done.stderr
    assert f"cannot read the queued-requests journal {tmp_path / 'slack-queued-0.jsonl'}: Is a directory" \
        in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "error id" not in done.stderr


async def _health(base_url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/healthz") as response:
        return response.status, await response.json()


async def test_healthz_is_degraded_while_the_store_cannot_write_and_never_queues_behind_writes(
        tmp_path: Path) -> None:
    settings = test_settings(tmp_path, health_timeout=0.3)
    async with running_app(tmp_path, settings=settings) as running:
        assert (await _health(running.base_url))[0] == 200
        # Another process holds the write lock: every write waits (up to the 10 s busy timeout).
        with closing(sqlite3.connect(tmp_path / "jitpass.db", isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            queued = asyncio.create_task(running.runtime.store.set_meta("queued", "write"))
            await asyncio.sleep(0)  # the queued write now holds the store's own lock, waiting for the file
            status, body = await _health(running.base_url)
            assert status == 503 and body["status"] == "degraded"
            assert isinstance(body["store"], dict) and body["store"]["writable"] is False
            assert not queued.done(), "health answered while our own write was still waiting"
            other.execute("ROLLBACK")
        await queued
        status, body = await _health(running.base_url)
        assert status == 200 and body["status"] == "ok"
        assert isinstance(body["store"], dict) and body["store"]["writable"] is True
        assert body["store"]["kind"] == "sqlite"
