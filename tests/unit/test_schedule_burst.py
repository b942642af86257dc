"""Ends a few milliseconds apart: each tick plans the next-due job while it still runs, for a moment that is
already (nearly) here. APScheduler skips a job whose earlier run has not finished (max_instances), and a
skipped date job is gone: the grants after it waited for the minute's re-plan (seen: 2,000 ends over 30 s,
half of them 20-40 s late). Every end must be applied within moments, with only the next-due job to wake it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.domain.config import parse_policy
from bot.domain.model import Status, Window
from bot.domain.vault import KeyRing, Vault, generate_key
from bot.services.access import AccessService
from bot.services.schedule import GrantScheduler
from storage.sqlite.store import SqliteStore
from tests.support.app import TEST_POLICY
from tests.support.stores import draft, make_request


class _TickingClock:
    """Moves 1 us per reading: every next end is microseconds ahead when a tick plans it, so the next-due job
    is due the moment APScheduler looks at it, while the tick that planned it is still finishing."""

    def __init__(self) -> None:
        self._now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        self._now += timedelta(microseconds=1)
        return self._now


async def test_ends_milliseconds_apart_are_all_applied_without_waiting_for_the_replan(tmp_path: Path) -> None:
    clock = _TickingClock()
    store = SqliteStore(tmp_path / "jitpass.db", clock)
    await store.open()
    service = AccessService(store, Vault(KeyRing([generate_key()])), parse_policy(TEST_POLICY), clock)
    first = clock.now() + timedelta(microseconds=2_000)
    ends = [first + timedelta(microseconds=15 * i) for i in range(40)]
    for i, end in enumerate(ends):
        started = end - timedelta(hours=1)
        await store.create_request(make_request(f"R{i}", item=f"item-{i}", status=Status.ACTIVE, at=started,
                                                window=Window(duration=timedelta(hours=1), start=started),
                                                starts_at=started, ends_at=end),
                                   draft("request.created", request_id=f"R{i}"))
    scheduler = GrantScheduler(service, replan_every=timedelta(hours=1))  # only the next-due job can end them

    await scheduler.start()
    try:
        deadline = time.monotonic() + 10
        left = set(range(len(ends)))
        while left and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            for i in list(left):
                request = await store.get_request(f"R{i}")
                if request is not None and request.status is Status.EXPIRED:
                    left.discard(i)
        assert not left, f"{len(left)} of {len(ends)} grants not expired within 10 s"
    finally:
        await scheduler.shutdown()
        await store.close()
