"""A fault-test world: real `python -m bot serve` processes on one SQLite file, the Slack stand-in in this
process (faults injected at its HTTP boundary), and helpers that read the trail straight from the file.

Servers bind 127.0.0.1 on a free port and are killed with SIGKILL (`kill -9`), never stopped politely,
unless a test says so. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.bootstrap import open_runtime
from bot.domain.model import SYSTEM
from tests.support.app import CANARY_PASSWORD, TEST_POLICY, canary_items, test_settings
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, Call, FakeSlack, SlackUsers

ROOT = Path(__file__).resolve().parents[2]
CALL_TIMEOUT = "1"
LEASE = "2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: asyncio.subprocess.Process

    def kill9(self) -> None:
        if self.process.returncode is None:
            self.process.kill()  # SIGKILL: no clean-up, no flush, like a crash


@dataclass
class World:
    tmp: Path
    fake: FakeSlack
    env: dict[str, str]
    db: Path
    log: Path

    @asynccontextmanager
    async def server(self) -> AsyncIterator[Server]:
        """A `jitpass serve` process until it says it is listening; killed -9 on exit."""
        port = free_port()
        with self.log.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "serve", "--port", str(port), cwd=ROOT, env=self.env,
                stdout=asyncio.subprocess.PIPE, stderr=log_file)
            server = Server(f"http://127.0.0.1:{port}", process)
            try:
                assert process.stdout is not None
                line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
                assert b"listening" in line, (line, self.log.read_text())
                yield server
            finally:
                server.kill9()
                await process.wait()

    def users(self, server: Server) -> SlackUsers:
        return SlackUsers(self.fake, server.url)

    async def request(self, server: Server, text: str, user_id: str = "UREQ") -> str:
        reply = await self.users(server).command(text, user_id)
        assert reply.status == 200, reply.text
        found = re.search(r"R-[0-9A-Z]{8}", reply.text)
        assert found, reply.text
        return found.group()

    # -- reading the file (no server, no key needed) -------------------------------------------------
    def events(self, request_id: str) -> list[tuple[str, dict[str, Any]]]:
        with closing(sqlite3.connect(self.db)) as conn:
            rows = conn.execute("SELECT type, details FROM events WHERE request_id = ? ORDER BY seq", (request_id,))
            return [(str(t), json.loads(d)) for t, d in rows]

    def types(self, request_id: str) -> list[str]:
        return [t for t, _ in self.events(request_id)]

    def status(self, request_id: str) -> str:
        with closing(sqlite3.connect(self.db)) as conn:
            return str(conn.execute("SELECT status FROM requests WHERE id = ?", (request_id,)).fetchone()[0])

    async def until(self, check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        """Poll the file (another process writes it) until `check` holds."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}; server log:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.1)

    # -- what Slack holds ------------------------------------------------------------------------------
    def secret_messages(self, channel: str = "DUREQ") -> list[dict[str, Any]]:
        """Messages in `channel` whose current content shows the password."""
        return [m for (c, _), m in self.fake.messages.items()
                if c == channel and CANARY_PASSWORD in json.dumps([m["text"], m["blocks"]])]

    def card(self) -> dict[str, Any]:
        (card,) = [m for (c, _), m in self.fake.messages.items() if c == "CLEADS"]
        return card


def is_delivery(call: Call) -> bool:
    return call.method == "chat.postMessage" and call.args.get("channel") == "DUREQ" and "metadata" in call.args


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """Items seeded in a fresh SQLite file, a started Slack stand-in, and the env for `jitpass serve`."""
    settings = test_settings(tmp_path)
    policy = tmp_path / "policy.toml"
    policy.write_text(TEST_POLICY.replace('min_duration = "1m"', 'min_duration = "1s"'), encoding="utf-8")
    runtime = await open_runtime(settings)
    await runtime.catalog.add(canary_items(), SYSTEM, source="test")
    await runtime.close()
    fake = FakeSlack()
    await fake.start()
    env = {
        "PATH": os.environ.get("PATH", ""), "JITPASS_DOTENV": str(tmp_path / "no.env"),
        "JITPASS_STORE": settings.store_url, "JITPASS_MASTER_KEY": settings.master_key or "",
        "JITPASS_POLICY": str(policy), "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake.url, "JITPASS_CALL_TIMEOUT": CALL_TIMEOUT, "JITPASS_EFFECT_LEASE": LEASE,
    }
    try:
        yield World(tmp_path, fake, env, tmp_path / "jitpass.db", tmp_path / "server.log")
    finally:
        await fake.stop()
