"""A scheduler tick that fails (the store is away) tries again within seconds, not at the next replan
interval: a window that ended during a store outage ends as soon as the store is back."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

from bot.domain.config import parse_policy
from bot.domain.model import SYSTEM, Identity, Status
from bot.domain.vault import KeyRing, Vault, generate_key
from bot.services.access import AccessService
from bot.services.catalog import Catalog
from bot.services.schedule import GrantScheduler
from storage.sqlite.store import SqliteStore
from tests.support.app import TEST_POLICY, canary_items
from tests.support.stores import FakeClock


async def test_a_failed_tick_is_retried_within_seconds_and_the_overdue_grant_then_expires(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "jitpass.db", clock)
    await store.open()
    vault = Vault(KeyRing([generate_key()]))
    await store.set_meta("key_check", vault.key_check())
    await Catalog(store, vault, clock).add(canary_items(), SYSTEM, source="test")
    service = AccessService(store, vault, parse_policy(TEST_POLICY), clock)
    request = await service.request_access(Identity("slack", "UALICE", "alice"),
                                           "acme-zendesk fix broken trigger for 1h")
    await service.approve(request.id, Identity("slack", "ULEAD1", "lead one"))
    scheduler = GrantScheduler(service, replan_every=timedelta(hours=1))  # only a retry can end it in time
    await scheduler.start()
    try:
        await store.close()  # the store goes away ...
        clock.advance(hours=1, seconds=1)  # ... across the window end
        assert await scheduler.tick() == 0  # fails, and plans a retry
        await store.open()  # the store is back
        started = time.monotonic()
        while (await service.get_request(request.id)).status is not Status.EXPIRED:
            assert time.monotonic() - started < 10, "not expired within 10 s of the store coming back"
            await asyncio.sleep(0.1)
        assert time.monotonic() - started < 6
    finally:
        await scheduler.shutdown()
        await store.close()
