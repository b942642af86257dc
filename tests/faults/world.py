"""A fault-test world: real `python -m bot serve` processes on one store (a SQLite file, or a MongoDB
database), the Slack stand-in in this process (faults injected at its HTTP boundary), and helpers that
read the trail straight from the store's files / collections (no server, no key needed).

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
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.bootstrap import open_runtime
from bot.domain.model import SYSTEM
from storage.mongo.store import DEFAULT_DB, mongo_location
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
    mongodb_url: str = ""  # the store is this MongoDB database instead of the SQLite file `db`
    _users: dict[str, SlackUsers] = field(default_factory=dict)

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
        """One sender per server, so every command and press gets a response_url of its own."""
        return self._users.setdefault(server.url, SlackUsers(self.fake, server.url))

    async def request(self, server: Server, text: str, user_id: str = "UREQ") -> str:
        reply = await self.users(server).command(text, user_id)
        assert reply.status == 200, reply.text
        found = re.search(r"R-[0-9A-Z]{8}", reply.text)
        assert found, reply.text
        return found.group()

    # -- reading the store (no server, no key needed) ------------------------------------------------
    def events(self, request_id: str) -> list[tuple[str, dict[str, Any]]]:
        if self.mongodb_url:
            with self._mongo() as db:
                docs = db["events"].find({"request_id": request_id}).sort("_id", 1)
                return [(str(d["type"]), dict(d.get("details") or {})) for d in docs]
        with closing(sqlite3.connect(self.db)) as conn:
            rows = conn.execute("SELECT type, details FROM events WHERE request_id = ? ORDER BY seq", (request_id,))
            return [(str(t), json.loads(d)) for t, d in rows]

    def types(self, request_id: str) -> list[str]:
        return [t for t, _ in self.events(request_id)]

    def status(self, request_id: str) -> str:
        if self.mongodb_url:
            with self._mongo() as db:
                found = db["requests"].find_one({"_id": request_id}, {"status": 1})
                assert found is not None, request_id
                return str(found["status"])
        with closing(sqlite3.connect(self.db)) as conn:
            return str(conn.execute("SELECT status FROM requests WHERE id = ?", (request_id,)).fetchone()[0])

    @contextmanager
    def _mongo(self) -> Iterator[Any]:
        from pymongo import MongoClient

        client: MongoClient[dict[str, Any]] = MongoClient(self.mongodb_url, serverSelectionTimeoutMS=5000)
        try:
            yield client[mongo_location(self.mongodb_url)[1] or DEFAULT_DB]
        finally:
            client.close()

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
async def world(tmp_path: Path, *, store_url: str = "", env: dict[str, str] | None = None) -> AsyncIterator[World]:
    """Items seeded in a fresh store (a SQLite file, or `store_url`), a started Slack stand-in, and the env
    for `jitpass serve` (plus `env`)."""
    settings = test_settings(tmp_path, **({"store_url": store_url} if store_url else {}))
    policy = tmp_path / "policy.toml"
    policy.write_text(TEST_POLICY.replace('min_duration = "1m"', 'min_duration = "1s"'), encoding="utf-8")
    runtime = await open_runtime(settings)
    await runtime.catalog.add(canary_items(), SYSTEM, source="test")
    await runtime.close()
    fake = FakeSlack()
    await fake.start()
    server_env = {
        "PATH": os.environ.get("PATH", ""), "JITPASS_DOTENV": str(tmp_path / "no.env"),
        "JITPASS_HOME": str(tmp_path),
        "JITPASS_STORE": settings.store_url, "JITPASS_MASTER_KEY": settings.master_key or "",
        "JITPASS_POLICY": str(policy), "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake.url, "JITPASS_CALL_TIMEOUT": CALL_TIMEOUT, "JITPASS_EFFECT_LEASE": LEASE,
    } | (env or {})
    try:
        yield World(tmp_path, fake, server_env, tmp_path / "jitpass.db", tmp_path / "server.log",
                    mongodb_url=store_url if store_url.startswith("mongodb") else "")
    finally:
        await fake.stop()
