"""Invariants the store itself holds (unique claim keys), on every store: not a read before a write.

At most one open request per person and item; at most one active grant per exclusive item. The
single-process tests show the refusal and that nothing was written; the two-process tests race real
processes on the same SQLite file or MongoDB database and count the winners."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from bot.domain.errors import ClaimTaken, Conflict
from bot.domain.model import Identity, RequestKind, Status
from tests.contract.conftest import Harness
from tests.contract.test_processes import _finish, _workers
from tests.support.stores import ANN, BOB, START, draft, make_request

ROUNDS = 20  # items each pair of processes races for


def _activation(hours: int = 1) -> dict[str, object]:
    return {"status": Status.ACTIVE, "starts_at": START, "ends_at": START + timedelta(hours=hours),
            "exclusive": True}


async def _approved(harness: Harness, request_id: str, requester: Identity, item: str = "db-admin") -> None:
    await harness.store.create_request(make_request(request_id, requester=requester, item=item, exclusive=True),
                                       draft("request.created", request_id=request_id))
    assert await harness.store.transition(request_id, {Status.PENDING}, {"status": Status.APPROVED}, None)


async def test_a_second_open_request_of_one_person_for_one_item_is_refused_by_the_store(harness: Harness) -> None:
    store = harness.store
    await store.create_request(make_request("R1"), draft("request.created", request_id="R1"))
    before = [e async for e in store.events()]
    with pytest.raises(ClaimTaken) as refused:
        await store.create_request(make_request("R2"), draft("request.created", request_id="R2"))
    assert refused.value.claim == "open" and isinstance(refused.value, Conflict)
    assert await store.get_request("R2") is None
    assert [e async for e in store.events()] == before  # the event went with the refused insert

    # Another item, another person, or the same person linked under another account key: separate claims.
    await store.create_request(make_request("R3", item="other"), draft("request.created", request_id="R3"))
    await store.create_request(make_request("R4", requester=BOB), draft("request.created", request_id="R4"))
    with pytest.raises(ClaimTaken):
        await store.create_request(make_request("R5", requester=BOB, person=ANN.key),
                                   draft("request.created", request_id="R5"))
    # An extension is not a second request for the item.
    await store.create_request(make_request("R6", kind=RequestKind.EXTENSION, parent_id="R1"),
                               draft("request.created", request_id="R6"))
    # Once the first is closed the person may ask again.
    assert await store.transition("R1", {Status.PENDING}, {"status": Status.CANCELLED}, None)
    await store.create_request(make_request("R2"), draft("request.created", request_id="R2"))


async def test_a_second_holder_of_an_exclusive_item_is_refused_by_the_store(harness: Harness) -> None:
    store = harness.store
    await _approved(harness, "R1", ANN)
    await _approved(harness, "R2", BOB)
    assert (await store.transition("R1", {Status.APPROVED}, _activation(), draft("grant.activated"))) is not None
    before = [e async for e in store.events()]
    with pytest.raises(ClaimTaken) as refused:
        await store.transition("R2", {Status.APPROVED}, _activation(), draft("grant.activated", request_id="R2"))
    assert refused.value.claim == "hold"
    assert (await store.get_request("R2")).status is Status.APPROVED  # type: ignore[union-attr]
    assert [e async for e in store.events()] == before

    # A grant of a non-exclusive item holds nothing.
    await _approved(harness, "R3", ANN, item="shared")
    assert await store.transition("R3", {Status.APPROVED}, {**_activation(), "exclusive": False}, None)
    # When the holder's grant ends, the next one may start.
    assert await store.transition("R1", {Status.ACTIVE}, {"status": Status.EXPIRED}, None)
    assert await store.transition("R2", {Status.APPROVED}, _activation(), None)


async def test_two_processes_asking_for_the_same_items_at_once_get_one_open_request_each(
        harness: Harness) -> None:
    items = [f"item-{i}" for i in range(ROUNDS)]
    with _workers(*(["open-requests", harness.kind, harness.url, harness.db_name or "-", who, *items]
                    for who in ("alpha", "beta"))) as procs:
        won = [int(_finish(p)) for p in procs]
    assert sum(won) == ROUNDS, won
    for item in items:
        found = await harness.store.find_requests(item=item, statuses={Status.PENDING})
        assert len(found) == 1, (item, [r.id for r in found])


async def test_two_processes_starting_grants_of_the_same_exclusive_items_at_once_start_one_each(
        harness: Harness) -> None:
    items = [f"item-{i}" for i in range(ROUNDS)]
    for item in items:
        await _approved(harness, f"alpha-{item}", ANN, item)
        await _approved(harness, f"beta-{item}", BOB, item)
    with _workers(*(["activate", harness.kind, harness.url, harness.db_name or "-", who, *items]
                    for who in ("alpha", "beta"))) as procs:
        won = [int(_finish(p)) for p in procs]
    assert sum(won) == ROUNDS, won
    for item in items:
        active = await harness.store.find_requests(item=item, statuses={Status.ACTIVE})
        assert len(active) == 1, item
        events = [e async for e in harness.store.events() if e.type == "grant.activated" and e.item == item]
        assert [e.request_id for e in events] == [active[0].id]  # the loser wrote no event


def test_claim_keys_leave_closed_requests_and_extensions_free() -> None:
    from storage.codec import claims

    open_one = make_request("R1")
    assert claims(open_one) == {"open_claim": f"open:{ANN.key}|db-admin", "hold_claim": "free:R1"}
    held = replace(open_one, status=Status.ACTIVE, exclusive=True, person="person:ann")
    assert claims(held) == {"open_claim": "open:person:ann|db-admin", "hold_claim": "hold:db-admin"}
    for status in (Status.EXPIRED, Status.CANCELLED, Status.DECLINED, Status.TIMED_OUT, Status.REVOKED):
        assert claims(replace(held, status=status)) == {"open_claim": "free:R1", "hold_claim": "free:R1"}
    assert claims(replace(held, kind=RequestKind.EXTENSION)) == {"open_claim": "free:R1", "hold_claim": "free:R1"}
