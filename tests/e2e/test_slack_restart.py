"""A grant that ends while jitpass is down is revoked, and its secret wiped in Slack, when it starts again.

Runs the real `python -m bot serve` (real clock) twice against a FakeSlack in this process.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from adapters.slack.blocks import Actions
from bot.bootstrap import open_runtime
from bot.domain.model import SYSTEM
from tests.support.app import CANARY_PASSWORD, CANARY_SEED, TEST_POLICY, canary_items, test_settings
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackUsers, fake_slack

ROOT = Path(__file__).resolve().parents[2]
GRANT_SECONDS = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _server(env: dict[str, str], port: int, log_path: Path) -> AsyncIterator[str]:
    """`python -m bot serve` until it says it is listening; killed (not stopped) on exit, like a crash."""
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "--port", str(port), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=log_file)
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
            assert b"listening" in line, (line, log_path.read_text())
            yield f"http://127.0.0.1:{port}"
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


async def test_grant_that_ended_while_down_is_revoked_at_start(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    policy = tmp_path / "policy.toml"
    policy.write_text(TEST_POLICY.replace('min_duration = "1m"', 'min_duration = "1s"'), encoding="utf-8")
    runtime = await open_runtime(settings)
    await runtime.catalog.add(canary_items(), SYSTEM, source="test")
    await runtime.store.close()
    log_path = tmp_path / "server.log"

    async with fake_slack() as fake:
        env = {
            "PATH": os.environ.get("PATH", ""), "JITPASS_DOTENV": str(tmp_path / "no.env"),
            "JITPASS_HOME": str(tmp_path),
            "JITPASS_STORE": settings.store_url, "JITPASS_MASTER_KEY": settings.master_key or "",
            "JITPASS_AUDIT_KEY_FILE": str(tmp_path / "jitpass-audit.key"),
            "JITPASS_POLICY": str(policy), "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.url,
        }
        port = _free_port()
        async with _server(env, port, log_path) as url:
            users = SlackUsers(fake, url)
            reply = await users.command(f"acme-zendesk restart drill for {GRANT_SECONDS}s", "UREQ")
            request_id = re.search(r"R-[0-9A-Z]{8}", reply.text).group()  # type: ignore[union-attr]
            await users.press(Actions.APPROVE, request_id, "ULEAD1")
            await fake.wait_for(lambda c: c.key == reply.response_url and CANARY_PASSWORD in c.dump(), timeout=10)
            approved_at = time.monotonic()
        # Down before the grant ends: nobody is left to revoke it...
        assert not _wiped(fake, reply.response_url)
        await asyncio.sleep(max(0.0, approved_at + GRANT_SECONDS + 0.5 - time.monotonic()))

        async with _server(env, port, log_path):
            # ...until the new process plans from the store and finds it overdue.
            wipe = await fake.wait_for(lambda c: _is_wipe(c, reply.response_url), timeout=15)

    assert CANARY_PASSWORD not in wipe.dump()
    assert "expired" in (fake.shown(reply.response_url) or {}).get("text", "")
    runtime = await open_runtime(settings)
    try:
        request = await runtime.service.get_request(request_id)
        expired = [e async for e in runtime.store.events(types={"grant.expired"}) if e.request_id == request_id]
    finally:
        await runtime.store.close()
    assert request.status.value == "expired" and len(expired) == 1
    server_log = log_path.read_text()
    assert CANARY_PASSWORD not in server_log and CANARY_SEED not in server_log


def _is_wipe(call: object, key: str) -> bool:
    return getattr(call, "key", None) == key and bool(getattr(call, "args", {}).get("replace_original"))


def _wiped(fake: FakeSlack, key: str) -> bool:
    return any(_is_wipe(c, key) for c in fake.calls)
