"""Home-tab markers, on every store: who has opened the app's home tab (the Slack App Home publishes only
to them, adapters/slack/home.py).

A marker is written once per person and platform and kept: marking again changes nothing (its first time
stands, so a process asking "since" sees each marker in the window it was first written), and a second
handle on the same store (another worker process, or the process after a restart) reads what the first
wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from bot.ports import Store
from tests.contract.conftest import Harness

# Each call is one statement / one document write: never a multi-document transaction.
pytestmark = pytest.mark.same_without_transactions


@asynccontextmanager
async def _second_handle(harness: Harness) -> AsyncIterator[Store]:
    """The same store opened again, as another process opens it."""
    second: Store
    if harness.path is not None:
        from storage.sqlite.store import SqliteStore

        second = SqliteStore(harness.path, harness.clock)
    else:
        from storage.mongo.store import MongoStore

        second = MongoStore(harness.url, harness.clock, db_name=harness.db_name,
                            allow_standalone=harness.kind == "mongodb-standalone")
    await second.open()
    try:
        yield second
    finally:
        await second.close()


async def test_no_one_has_opened_the_tab_of_a_new_store(harness: Harness) -> None:
    assert await harness.store.home_openers("slack") == set()
    assert await harness.store.home_openers("slack", since=harness.clock.now()) == set()


async def test_a_marker_is_kept_per_platform_and_marking_again_changes_nothing(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    await store.mark_home_opened("slack", "UANN", clock.now())
    await store.mark_home_opened("slack", "UANN", clock.now() + timedelta(minutes=5))
    await store.mark_home_opened("teams", "bob-oid", clock.now())

    assert await store.home_openers("slack") == {"UANN"}
    assert await store.home_openers("teams") == {"bob-oid"}
    assert await store.home_openers("other") == set()


async def test_since_lists_only_the_markers_first_written_at_or_after_it(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    start = clock.now()
    await store.mark_home_opened("slack", "UANN", start)
    await store.mark_home_opened("slack", "UBOB", start + timedelta(seconds=10))
    # Ann opens the tab again later: her marker keeps its first time and is not "new" again.
    await store.mark_home_opened("slack", "UANN", start + timedelta(seconds=20))

    assert await store.home_openers("slack", since=start) == {"UANN", "UBOB"}
    assert await store.home_openers("slack", since=start + timedelta(seconds=10)) == {"UBOB"}
    assert await store.home_openers("slack", since=start + timedelta(seconds=11)) == set()


async def test_a_second_handle_on_the_store_reads_the_markers_the_first_wrote(harness: Harness) -> None:
    await harness.store.mark_home_opened("slack", "UANN", harness.clock.now())
    async with _second_handle(harness) as second:
        assert await second.home_openers("slack") == {"UANN"}
        await second.mark_home_opened("slack", "UBOB", harness.clock.now())
        await second.mark_home_opened("slack", "UANN", harness.clock.now())  # already there: no error

    assert await harness.store.home_openers("slack") == {"UANN", "UBOB"}
