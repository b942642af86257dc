"""Rate limits held by the store, on every store: a sliding window per key, checked and counted in one step.

Single process: the count is honoured, attempts leave the window by the injected clock, keys are
independent, refusals in a row form one burst that is handed out once, and empty windows are deleted.
Two processes: real processes race for one key on one SQLite file or one MongoDB database, and the
tokens they are granted together are exactly the limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.model import Identity
from bot.ports import Store
from tests.contract.conftest import Harness
from tests.contract.test_processes import _finish, _workers
from tests.support.stores import ANN, BOB, START, FakeClock

# Every method here is one document update or one SQLite transaction: never a multi-document transaction.
pytestmark = pytest.mark.same_without_transactions

HOUR = timedelta(hours=1)
ANN_TEAMS = Identity("teams", "ann-oid", "Ann")


async def _take(store: Store, clock: FakeClock, key: str = "requests|person:ann", count: int = 3,
                per: timedelta = HOUR, actor: Identity = ANN) -> bool:
    return (await store.take_rate_token(key, count, per, clock.now(), actor)).granted


async def _window_rows(harness: Harness) -> int:
    """How many windows the store keeps (its table / collection, read around the store)."""
    if harness.path is not None:
        import sqlite3
        from contextlib import closing

        with closing(sqlite3.connect(harness.path)) as conn:
            return int(conn.execute("SELECT count(*) FROM rate_windows").fetchone()[0])
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(harness.url, serverSelectionTimeoutMS=5000)
    try:
        return await client[harness.db_name or ""]["rate_limits"].count_documents({})
    finally:
        await client.close()


async def test_the_count_is_honoured_and_a_refusal_says_when_to_retry(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    granted_at = []
    for _ in range(3):
        assert await _take(store, clock)
        granted_at.append(clock.now())
        clock.advance(minutes=10)
    refused = await store.take_rate_token("requests|person:ann", 3, HOUR, clock.now(), ANN)
    assert (refused.granted, refused.refused) == (False, 1)
    assert refused.retry_at == granted_at[0] + HOUR  # when the oldest attempt leaves the window
    again = await store.take_rate_token("requests|person:ann", 3, HOUR, clock.now(), ANN_TEAMS)
    assert (again.granted, again.refused, again.retry_at) == (False, 2, granted_at[0] + HOUR)


async def test_attempts_leave_the_window_by_the_injected_clock(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    for minutes in (0, 20, 40):
        clock.at = START + timedelta(minutes=minutes)
        assert await _take(store, clock)
    clock.at = START + timedelta(minutes=59, seconds=59)
    assert not await _take(store, clock), "a sliding window: all three are still within the last hour"
    clock.at = START + HOUR  # the first attempt has left the window: exactly one token back
    assert await _take(store, clock)
    assert not await _take(store, clock)
    clock.at = START + timedelta(minutes=80)  # the one from minute 20 has left as well
    assert await _take(store, clock)
    assert not await _take(store, clock)
    clock.at = START + timedelta(hours=3)  # all of them
    assert [await _take(store, clock) for _ in range(4)] == [True, True, True, False]


async def test_separate_keys_are_independent(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    assert [await _take(store, clock, count=2) for _ in range(3)] == [True, True, False]
    assert [await _take(store, clock, "requests|person:bob", 2, actor=BOB) for _ in range(3)] == [True, True, False]
    assert [await _take(store, clock, "codes|person:ann", 2) for _ in range(3)] == [True, True, False]
    # Refusals of one key leave the others' bursts alone.
    assert (await store.take_rate_token("codes|person:ann", 2, HOUR, clock.now(), ANN)).refused == 2


async def test_a_burst_of_refusals_is_handed_out_once_when_it_ends(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    for _ in range(2):
        assert await _take(store, clock, count=2)
    first_refusal = clock.advance(minutes=1)
    assert not await _take(store, clock, count=2, actor=ANN_TEAMS)  # the first account refused is remembered
    for _ in range(4):
        clock.advance(minutes=1)
        assert not await _take(store, clock, count=2)
    last_refusal = clock.now()
    assert await store.end_rate_bursts(clock.now()) == [], "still refused: the burst goes on"

    clock.at = START + HOUR
    [burst] = await store.end_rate_bursts(clock.now())  # the key may act again: the burst is over
    assert (burst.key, burst.actor.key, burst.refused) == ("requests|person:ann", ANN_TEAMS.key, 5)
    assert (burst.first_at, burst.last_at) == (first_refusal, last_refusal)
    assert await store.end_rate_bursts(clock.now()) == [], "each burst once"
    granted = await store.take_rate_token("requests|person:ann", 2, HOUR, clock.now(), ANN)
    assert granted.granted and granted.ended is None


async def test_the_grant_that_ends_a_burst_carries_it(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    assert await _take(store, clock, count=1)
    for _ in range(3):
        assert not await _take(store, clock, count=1, actor=BOB)
    clock.advance(hours=1)
    granted = await store.take_rate_token("requests|person:ann", 1, HOUR, clock.now(), ANN)
    assert granted.granted and granted.ended is not None
    assert (granted.ended.refused, granted.ended.actor.key, granted.ended.first_at) == (3, BOB.key, START)
    assert await store.end_rate_bursts(clock.now() + timedelta(days=1)) == [], "already handed out"


async def test_empty_windows_are_deleted_so_the_table_stays_bounded(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    for person in range(20):
        assert await _take(store, clock, f"codes|person:{person}", 5, timedelta(minutes=10))
    assert await _take(store, clock, "reports|person:ann", 1)
    assert not await _take(store, clock, "reports|person:ann", 1)  # a refusal holds its window until claimed
    assert await _window_rows(harness) == 21
    clock.advance(minutes=9)
    assert await store.end_rate_bursts(clock.now()) == []
    assert await _window_rows(harness) == 21, "every window still counts an attempt"
    clock.advance(minutes=1)
    assert await store.end_rate_bursts(clock.now()) == []
    assert await _window_rows(harness) == 1, "only the window with an open burst is left"
    clock.advance(hours=1)
    [burst] = await store.end_rate_bursts(clock.now())  # claimed, then deleted in the same step
    assert burst.key == "reports|person:ann"
    assert await _window_rows(harness) == 0


async def test_two_processes_racing_for_one_key_are_granted_exactly_the_limit_together(harness: Harness) -> None:
    """Two replicas on one store share one budget: 2 x 60 attempts against a limit of 50 give 50, not 100."""
    at = [harness.kind, harness.url, harness.db_name or "-"]
    key, count, attempts = "codes|person:ann", 50, 60
    with _workers(["rate-tokens", *at, key, str(count), str(attempts), "U0ANN"],
                  ["rate-tokens", *at, key, str(count), str(attempts), "U0ANN2"]) as procs:
        granted = [int(_finish(p)) for p in procs]
    assert sum(granted) == count, granted
    # The refusals of both processes are one burst of the key, in the store (the workers run on wall time).
    [burst] = await harness.store.end_rate_bursts(datetime.now(UTC) + timedelta(hours=2))
    assert (burst.key, burst.refused) == (key, 2 * attempts - count)
