"""The audit trail: one unbroken hash chain, filtered reads, purges that leave a verifiable rest."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.domain.audit import GENESIS_HASH, verify_chain
from bot.domain.errors import AuditWriteError
from bot.ports import Store
from tests.contract.conftest import Harness
from tests.support.stores import ANN, START, FakeClock, draft


@pytest.mark.same_without_transactions  # append_event never runs in a transaction
async def test_many_appends_form_one_chain_that_verifies(store: Store, clock: FakeClock) -> None:
    for i in range(1_201):  # more than two pages of the streamed read
        clock.advance(seconds=1)
        await store.append_event(draft(details={"i": i, "text": "naïve ✓"}))

    report = await verify_chain(store.events())

    assert report.ok, report.problem
    assert (report.checked, report.last_seq) == (1_201, 1_201)
    first = await anext(store.events())
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)


async def test_an_appended_event_comes_back_exactly_as_sealed(store: Store, clock: FakeClock) -> None:
    recorded = await store.append_event(draft("request.declined", ANN, request_id="R1", item="db-admin",
                                              vault="prod", reason="not today", details={"nested": {"a": [1, 2]}}))
    system = await store.append_event(draft("retention.purged", None))

    assert [e async for e in store.events()] == [recorded, system]
    assert await store.last_event() == system
    assert recorded.at == clock.now() and system.prev_hash == recorded.hash


async def test_events_filter_by_sequence_time_window_and_type(store: Store, clock: FakeClock) -> None:
    for event_type in ("request.created", "request.approved", "grant.revealed", "grant.expired"):
        await store.append_event(draft(event_type))
        clock.advance(hours=1)

    async def seqs(**filters: object) -> list[int]:
        return [e.seq async for e in store.events(**filters)]  # type: ignore[arg-type]

    assert await seqs(after_seq=2) == [3, 4]
    assert await seqs(since=START + timedelta(hours=1)) == [2, 3, 4]
    assert await seqs(until=START + timedelta(hours=2)) == [1, 2]  # until is exclusive
    assert await seqs(types={"grant.revealed", "request.created"}) == [1, 3]
    assert await seqs(types=set()) == []
    assert await store.count_events() == 4
    assert await store.count_events(before=START + timedelta(hours=2)) == 2


async def test_an_empty_trail_has_no_last_event_and_no_checkpoint(store: Store) -> None:
    assert await store.last_event() is None
    assert await store.checkpoint() is None
    assert [e async for e in store.events()] == []
    assert (await verify_chain(store.events())).ok


async def test_purging_deletes_old_events_keeps_a_checkpoint_and_the_rest_still_verifies(
    store: Store, clock: FakeClock
) -> None:
    for day in range(10):
        await store.append_event(draft(details={"day": day}))
        clock.advance(days=1)
    fifth = [e async for e in store.events()][4]

    result = await store.purge_events(START + timedelta(days=5), draft("retention.purged", None,
                                                                       details={"days": 5}))

    assert result.purged == 5
    assert result.checkpoint is not None
    assert (result.checkpoint.seq, result.checkpoint.hash, result.checkpoint.at) == (5, fifth.hash, fifth.at)
    assert await store.checkpoint() == result.checkpoint
    remaining = [e async for e in store.events()]
    assert [e.seq for e in remaining] == [6, 7, 8, 9, 10, 11]
    assert remaining[-1].type == "retention.purged"
    assert remaining[-1].details == {"days": 5, "purged": 5, "checkpoint_seq": 5}
    report = await verify_chain(store.events(), start_seq=result.checkpoint.seq, start_hash=result.checkpoint.hash)
    assert report.ok, report.problem
    assert not (await verify_chain(store.events())).ok  # from genesis the purged start is missing


async def test_purging_never_deletes_the_newest_event(store: Store, clock: FakeClock) -> None:
    await store.append_event(draft())
    await store.append_event(draft())

    result = await store.purge_events(clock.advance(days=400), draft("retention.purged", None))

    assert result.purged == 1
    assert [e.seq async for e in store.events()] == [2, 3]
    checkpoint = await store.checkpoint()
    assert checkpoint is not None and checkpoint.seq == 1
    assert (await verify_chain(store.events(), start_seq=1, start_hash=checkpoint.hash)).ok


async def test_purging_with_nothing_old_enough_keeps_the_previous_checkpoint(store: Store, clock: FakeClock) -> None:
    for _ in range(3):
        await store.append_event(draft())
    clock.advance(days=30)
    first = await store.purge_events(clock.now(), draft("retention.purged", None))
    second = await store.purge_events(START, draft("retention.purged", None))

    assert (first.purged, second.purged) == (2, 0)
    assert second.checkpoint == first.checkpoint
    last = await store.last_event()
    assert last is not None and last.details == {"purged": 0, "checkpoint_seq": 2}
    assert first.checkpoint is not None
    assert (await verify_chain(store.events(after_seq=first.checkpoint.seq), start_seq=first.checkpoint.seq,
                               start_hash=first.checkpoint.hash)).ok


async def test_purging_stops_at_the_first_event_that_is_not_old_enough(store: Store, clock: FakeClock) -> None:
    # Times need not rise with seq (two processes, clock steps): only a prefix may go.
    await store.append_event(draft())
    clock.advance(days=10)
    await store.append_event(draft())
    clock.at = START + timedelta(days=1)
    await store.append_event(draft())
    await store.append_event(draft())

    result = await store.purge_events(START + timedelta(days=5), draft("retention.purged", None))

    assert result.purged == 1
    assert [e.seq async for e in store.events()] == [2, 3, 4, 5]


async def test_concurrent_appends_in_one_process_take_distinct_places_in_the_chain(store: Store) -> None:
    recorded = await asyncio.gather(*(store.append_event(draft(details={"i": i})) for i in range(40)))

    assert sorted(e.seq for e in recorded) == list(range(1, 41))
    assert (await verify_chain(store.events())).ok


async def test_a_purge_whose_event_cannot_be_written_changes_nothing(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    for _ in range(4):
        clock.advance(days=1)
        await store.append_event(draft())
    await harness.break_audit()

    with pytest.raises(AuditWriteError, match="nothing was changed"):
        await store.purge_events(clock.now(), draft("retention.purged", None))

    assert await store.checkpoint() is None
    assert await store.count_events() == 4
    assert (await verify_chain(store.events())).ok
