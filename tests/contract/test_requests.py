"""Requests: round trips, filters, compare-and-set transitions with their events, due times."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from bot.domain.errors import AuditWriteError, Conflict
from bot.domain.model import Approval, EventDraft, Identity, RequestKind, Status, Window
from bot.ports import Store
from tests.contract.conftest import Harness
from tests.support.stores import ANN, BOB, START, FakeClock, draft, make_request


def _created(request_id: str) -> EventDraft:
    return draft("request.created", request_id=request_id, item="db-admin", vault="prod")


async def _events_of(store: Store, event_type: str) -> list[str | None]:
    return [e.request_id async for e in store.events(types={event_type})]


async def test_a_created_request_reads_back_equal_with_every_field(store: Store) -> None:
    request = make_request(
        "R1", window=Window(duration=timedelta(minutes=90, microseconds=7), start=START + timedelta(hours=2)),
        required_approvals=2, approvals=(Approval(BOB, START),), decided_by=BOB, decided_at=START,
        decline_reason="", starts_at=START + timedelta(hours=2), ends_at=START + timedelta(hours=3, seconds=30),
        revealed=True, notes=("2 approvals needed", "outside working hours"), refs={"channel": "C1", "ts": "1.2"},
        refs_version=3, version=4,
    )
    await store.create_request(request, _created("R1"))

    assert await store.get_request("R1") == request
    assert await store.get_request("R404") is None
    assert await _events_of(store, "request.created") == ["R1"]


async def test_creating_a_request_with_an_existing_id_is_a_conflict_and_records_nothing(store: Store) -> None:
    await store.create_request(make_request("R1"), _created("R1"))
    with pytest.raises(Conflict):
        await store.create_request(make_request("R1", reason="again"), _created("R1"))
    assert await store.count_events() == 1
    stored = await store.get_request("R1")
    assert stored is not None and stored.reason == "fix the nightly job"


async def test_find_requests_filters_by_every_field_and_lists_newest_first(store: Store, clock: FakeClock) -> None:
    # R1 is over: Ann may have one open request for db-admin (R3) at a time, the store holds that.
    await store.create_request(make_request("R1", status=Status.EXPIRED), _created("R1"))
    await store.create_request(make_request("R2", item="aws-root", requester=BOB, at=START),  # same instant as R1
                               _created("R2"))
    later = START + timedelta(minutes=5)
    await store.create_request(make_request("R3", status=Status.ACTIVE, at=later), _created("R3"))
    await store.create_request(make_request("R4", kind=RequestKind.EXTENSION, parent_id="R3", at=later),
                               _created("R4"))

    async def ids(**filters: Any) -> list[str]:
        return [r.id for r in await store.find_requests(**filters)]

    assert await ids() == ["R4", "R3", "R2", "R1"]
    assert await ids(requester=ANN) == ["R4", "R3", "R1"]
    assert await ids(requester=Identity(BOB.platform, BOB.user_id)) == ["R2"]  # groups/display don't matter
    assert await ids(statuses={Status.ACTIVE}) == ["R3"]
    assert await ids(statuses={Status.PENDING, Status.ACTIVE}, item="db-admin") == ["R4", "R3"]
    assert await ids(statuses=set()) == []
    assert await ids(parent_id="R3") == ["R4"]
    assert await ids(parent_ids={"R3", "R2", "R9"}) == ["R4"]  # the extensions of any of them
    assert await ids(parent_ids={"R1"}) == [] and await ids(parent_ids=set()) == []
    assert await ids(kind=RequestKind.ACCESS, requester=ANN) == ["R3", "R1"]
    assert await ids(limit=2) == ["R4", "R3"]


async def test_a_transition_applies_changes_bumps_version_and_records_its_event(store: Store,
                                                                                 clock: FakeClock) -> None:
    await store.create_request(make_request("R1"), _created("R1"))
    decided = clock.advance(minutes=3)
    changes = {"status": Status.APPROVED, "approvals": (Approval(BOB, decided),), "decided_by": BOB,
               "decided_at": decided, "timeout_at": None, "starts_at": decided}

    updated = await store.transition("R1", {Status.PENDING}, changes,
                                     draft("request.approved", BOB, request_id="R1"), expected_version=0)

    assert updated is not None
    assert (updated.status, updated.version, updated.updated_at, updated.timeout_at) == (
        Status.APPROVED, 1, decided, None)
    assert updated.approvals == (Approval(BOB, decided),)
    assert await store.get_request("R1") == updated
    assert await _events_of(store, "request.approved") == ["R1"]


async def test_a_transition_from_the_wrong_status_writes_nothing(store: Store) -> None:
    await store.create_request(make_request("R1"), _created("R1"))

    lost = await store.transition("R1", {Status.ACTIVE}, {"status": Status.EXPIRED},
                                  draft("grant.expired", request_id="R1"))

    assert lost is None
    assert await store.get_request("R1") == make_request("R1")
    assert await store.count_events() == 1
    assert await store.transition("R404", {Status.PENDING}, {"status": Status.DECLINED}, None) is None
    assert await store.transition("R1", set(), {"status": Status.DECLINED}, None) is None


async def test_a_transition_at_a_stale_version_loses_to_the_one_before_it(store: Store) -> None:
    await store.create_request(make_request("R1", required_approvals=2), _created("R1"))
    first = await store.transition("R1", {Status.PENDING}, {"approvals": (Approval(BOB, START),)},
                                   draft("request.approval_added", BOB, request_id="R1"), expected_version=0)
    second = await store.transition("R1", {Status.PENDING}, {"approvals": (Approval(ANN, START),)},
                                    draft("request.approval_added", ANN, request_id="R1"), expected_version=0)

    assert first is not None and first.version == 1
    assert second is None
    stored = await store.get_request("R1")
    assert stored is not None and stored.approvals == (Approval(BOB, START),)
    assert len(await _events_of(store, "request.approval_added")) == 1


async def test_a_transition_without_an_event_records_none(store: Store) -> None:
    await store.create_request(make_request("R1", status=Status.ACTIVE), _created("R1"))
    updated = await store.transition("R1", {Status.ACTIVE}, {"revealed": True}, None)
    assert updated is not None and updated.revealed and updated.version == 1
    assert await store.count_events() == 1


async def test_a_transition_refuses_unknown_or_store_owned_fields(store: Store) -> None:
    await store.create_request(make_request("R1"), _created("R1"))
    with pytest.raises(ValueError, match="colour"):
        await store.transition("R1", {Status.PENDING}, {"colour": "red"}, None)
    with pytest.raises(ValueError, match="version"):
        await store.transition("R1", {Status.PENDING}, {"version": 9}, None)
    assert await store.get_request("R1") == make_request("R1")


async def test_a_failed_audit_write_rolls_the_transition_back(harness: Harness) -> None:
    store = harness.store
    await store.create_request(make_request("R1"), _created("R1"))
    await harness.break_audit()

    with pytest.raises(AuditWriteError, match=r"request\.declined"):
        await store.transition("R1", {Status.PENDING}, {"status": Status.DECLINED, "decided_by": BOB},
                               draft("request.declined", BOB, request_id="R1"))
    with pytest.raises(AuditWriteError):
        await store.create_request(make_request("R2", item="aws-root"), _created("R2"))
    with pytest.raises(AuditWriteError):
        await store.append_event(draft())

    assert await store.get_request("R1") == make_request("R1")
    assert await store.get_request("R2") is None
    assert await store.count_events() == 1
    # The store stays usable: a change that needs no event still goes through.
    assert await store.transition("R1", {Status.PENDING}, {"revealed": True}, None) is not None


async def test_saving_refs_is_compare_and_set_on_refs_version(store: Store) -> None:
    await store.create_request(make_request("R1", refs={"channel": "C1"}), _created("R1"))

    assert await store.save_refs("R1", {"channel": "C1", "ts": "1.5"}, expected_version=0)
    assert not await store.save_refs("R1", {"channel": "C9"}, expected_version=0)
    assert not await store.save_refs("R404", {}, expected_version=0)

    stored = await store.get_request("R1")
    assert stored is not None
    assert (stored.refs, stored.refs_version, stored.version) == ({"channel": "C1", "ts": "1.5"}, 1, 0)
    # A later transition keeps the saved refs.
    moved = await store.transition("R1", {Status.PENDING}, {"status": Status.CANCELLED}, None)
    assert moved is not None and moved.refs == {"channel": "C1", "ts": "1.5"} and moved.refs_version == 1


async def test_due_requests_are_the_open_ones_whose_next_time_has_come(store: Store) -> None:
    hour = timedelta(hours=1)
    requests = [
        make_request("PENDING-DUE", timeout_at=START + hour),
        make_request("PENDING-LATER", timeout_at=START + 5 * hour),
        make_request("APPROVED-DUE", status=Status.APPROVED, timeout_at=None, starts_at=START + 2 * hour),
        make_request("ACTIVE-DUE", status=Status.ACTIVE, timeout_at=None, starts_at=START,
                     ends_at=START + 0.5 * hour),
        make_request("ACTIVE-LATER", status=Status.ACTIVE, timeout_at=None, ends_at=START + 4 * hour),
        # Final statuses are never due, whatever their times say.
        make_request("EXPIRED", status=Status.EXPIRED, timeout_at=START, ends_at=START),
        make_request("DECLINED", status=Status.DECLINED, timeout_at=START),
    ]
    for r in requests:  # one item each: a person has one open request per item
        await store.create_request(replace(r, item=r.id.lower()), _created(r.id))

    due = await store.due_requests(START + 2 * hour)

    assert [r.id for r in due] == ["ACTIVE-DUE", "PENDING-DUE", "APPROVED-DUE"]
    assert await store.due_requests(START) == []
    assert await store.next_due_at() == START + 0.5 * hour


async def test_next_due_at_is_none_without_open_requests(store: Store) -> None:
    assert await store.next_due_at() is None
    await store.create_request(make_request("R1", status=Status.EXPIRED), _created("R1"))
    assert await store.next_due_at() is None


async def test_concurrent_attempts_at_one_transition_apply_it_once(store: Store) -> None:
    await store.create_request(make_request("R1"), _created("R1"))

    outcomes = await asyncio.gather(*(
        store.transition("R1", {Status.PENDING}, {"status": Status.DECLINED, "decided_by": who},
                         draft("request.declined", who, request_id="R1"))
        for who in (ANN, BOB, ANN, BOB)
    ))

    assert sum(o is not None for o in outcomes) == 1
    assert len(await _events_of(store, "request.declined")) == 1
