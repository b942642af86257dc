"""Who has opened the App Home is held in the store: a restarted server, or another worker, still knows.

The first test runs the real `python -m bot serve` twice on one SQLite file against a FakeSlack in this
process; the others hold `OpenedTabs` (adapters/slack/home.py) against two handles on one real SQLite
file, as two worker processes have, with the time it reads by injected.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from adapters.slack.blocks import Actions
from adapters.slack.home import SYNC_EVERY, OpenedTabs
from bot.bootstrap import open_runtime
from bot.domain.model import SYSTEM
from storage.sqlite.store import SqliteStore
from tests.e2e.test_slack_restart import _free_port, _server
from tests.support.app import CANARY_PASSWORD, TEST_POLICY, FakeClock, canary_items, test_settings
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, Call, FakeSlack, SlackUsers, fake_slack


def _publishes(fake: FakeSlack, user_id: str, after: int = 0) -> list[Call]:
    return [c for c in fake.calls[after:] if c.method == "views.publish" and c.ok and c.args["user_id"] == user_id]


async def _request_approved(fake: FakeSlack, users: SlackUsers, user_id: str) -> str:
    """`/access acme-zendesk … for 1h` by `user_id`, approved by a lead; returns once the DM delivered it."""
    reply = await users.command("acme-zendesk restart drill for 1h", user_id)
    found = re.search(r"R-[0-9A-Z]{8}", reply.text)
    assert found, reply.text
    request_id = found.group()
    await fake.wait_for(lambda c: c.method == "chat.postMessage" and c.ok and request_id in c.dump()
                        and c.args.get("channel") == "CLEADS", timeout=10)
    await users.press(Actions.APPROVE, request_id, "ULEAD1")
    await fake.wait_for(lambda c: c.method == "chat.postMessage" and c.ok and CANARY_PASSWORD in c.dump()
                        and c.args.get("channel") == f"D{user_id}", timeout=10)
    return request_id


async def test_the_home_tab_marker_survives_a_restart_of_the_server_process(tmp_path: Path) -> None:
    settings = test_settings(tmp_path)
    policy = tmp_path / "policy.toml"
    policy.write_text(TEST_POLICY, encoding="utf-8")
    runtime = await open_runtime(settings)
    await runtime.catalog.add(canary_items(), SYSTEM, source="test")
    await runtime.store.close()

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
        async with _server(env, port, tmp_path / "server.log") as url:
            users = SlackUsers(fake, url)
            opened = await users.event({"type": "app_home_opened", "user": "UREQ", "tab": "home", "channel": "DUREQ"})
            assert opened.status == 200
            await fake.wait_for(lambda c: c.method == "views.publish" and c.ok and c.args["user_id"] == "UREQ",
                                timeout=10)
        # Killed, like a crash: what it knew in memory is gone; the store still has it.
        restarted = len(fake.calls)

        async with _server(env, port, tmp_path / "server.log") as url:
            users = SlackUsers(fake, url)
            await _request_approved(fake, users, "UOTHER")  # never opened the tab
            request_id = await _request_approved(fake, users, "UREQ")
            home = await fake.wait_for(lambda c: c.method == "views.publish" and c.ok and c.args["user_id"] == "UREQ"
                                       and request_id in c.dump() and "recorded in the audit trail" in c.dump(),
                                       after=restarted, timeout=10)

    assert re.search(r"`\d{6}`", home.text()), "the opened tab gets the live code, as before the restart"
    assert _publishes(fake, "UOTHER") == [], "a tab never opened is never published, before or after"
    runtime = await open_runtime(settings)
    try:
        assert await runtime.store.home_openers("slack") == {"UREQ"}
    finally:
        await runtime.store.close()


class _Monotonic:
    """The time `OpenedTabs` reads to space its store reads, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_another_worker_learns_a_new_marker_at_the_first_change_a_second_later(tmp_path: Path) -> None:
    clock, time = FakeClock(), _Monotonic()
    first, second = SqliteStore(tmp_path / "jitpass.db", clock), SqliteStore(tmp_path / "jitpass.db", clock)
    await first.open()
    await second.open()
    try:
        here, there = OpenedTabs(first, clock, monotonic=time), OpenedTabs(second, clock, monotonic=time)
        await there.sync(force=True)
        assert there.answer("UREQ") is False and there.reads == 1

        await here.mark("UREQ")  # app_home_opened in the first worker
        assert here.answer("UREQ") is True

        # Within the second after its last read the other worker answers from memory, for everyone.
        assert all(there.answer(f"U{n}") is False for n in range(500)) and there.answer("UREQ") is False
        assert there.reads == 1
        time.now += SYNC_EVERY
        assert there.answer("UREQ") is None  # must read first
        assert await there.has_opened("UREQ") is True and await there.has_opened("UNEW") is False
        assert there.reads == 2, "one read of the new markers for both questions"
    finally:
        await first.close()
        await second.close()


async def test_a_restarted_worker_reads_every_marker_once_and_then_answers_from_memory(tmp_path: Path) -> None:
    clock, time = FakeClock(), _Monotonic()
    store = SqliteStore(tmp_path / "jitpass.db", clock)
    await store.open()
    try:
        for user in ("UANN", "UBOB"):
            await store.mark_home_opened("slack", user, clock.now())
        tabs = OpenedTabs(store, clock, monotonic=time)

        assert await tabs.has_opened("UANN") and await tabs.has_opened("UBOB")
        assert not await tabs.has_opened("UEVE")
        await tabs.mark("UANN")  # opened again: known to be stored, nothing written
        assert tabs.reads == 1
    finally:
        await store.close()
