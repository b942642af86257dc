"""Durable chat effects in the store: written with their state change, leased once, ordered per lane,
superseded card updates dropped, outcomes recorded with their event and refs in one unit of work."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.domain.errors import AuditWriteError
from bot.domain.model import EffectDraft, EffectKind, EffectOutcome, EffectStatus, Status, TransitionDraft
from bot.ports import EffectLease, Store
from tests.contract.conftest import Harness
from tests.support.stores import FakeClock, draft, make_request, make_sealed

PLATFORMS = {"slack"}
LEASE = timedelta(seconds=10)


async def _pending_request(store: Store, request_id: str = "R1", *kinds: EffectKind) -> None:
    # One item per request: a person has one open request per item (the store holds that).
    await store.create_request(make_request(request_id, item=f"item-{request_id.lower()}"),
                               draft("request.created", request_id=request_id),
                               [EffectDraft(k) for k in kinds])


async def _claim(store: Store, clock: FakeClock, owner: str = "w1", limit: int = 10) -> list[str]:
    now = clock.now()
    return [f"{e.request_id}:{e.kind.value}" for e in
            await store.claim_effects(now, owner, now + LEASE, platforms=PLATFORMS, limit=limit)]


async def test_effects_are_written_with_the_request_and_the_transition(store: Store, clock: FakeClock) -> None:
    await _pending_request(store, "R1", EffectKind.POST_CARD)
    moved = await store.transition("R1", {Status.PENDING}, {"status": Status.DECLINED},
                                   draft("request.declined", request_id="R1"),
                                   effects=[EffectDraft(EffectKind.UPDATE_CARD),
                                            EffectDraft(EffectKind.TELL, {"message": "declined"})])
    assert moved is not None
    effects = await store.effects_of("R1")
    assert [(e.kind, e.status, e.attempts, e.platform) for e in effects] == [
        (EffectKind.POST_CARD, EffectStatus.PENDING, 0, "slack"),
        (EffectKind.UPDATE_CARD, EffectStatus.PENDING, 0, "slack"),
        (EffectKind.TELL, EffectStatus.PENDING, 0, "slack"),
    ]
    assert effects[2].payload == {"message": "declined"}
    assert await store.effect_counts() == {"pending": 3, "failed": 0, "failed_wipes": 0, "failed_deliveries": 0,
                                          "retrying_wipes": 0}


async def test_a_failed_compare_writes_no_effects(store: Store) -> None:
    await _pending_request(store, "R1")
    lost = await store.transition("R1", {Status.ACTIVE}, {"status": Status.EXPIRED}, None,
                                  effects=[EffectDraft(EffectKind.WIPE)])
    assert lost is None and await store.effects_of("R1") == []


async def test_an_audit_failure_writes_neither_the_change_nor_its_effects(harness: Harness) -> None:
    store = harness.store
    await _pending_request(store, "R1")
    await harness.break_audit()
    with pytest.raises(AuditWriteError):
        await store.transition("R1", {Status.PENDING}, {"status": Status.CANCELLED},
                               draft("request.cancelled", request_id="R1"),
                               effects=[EffectDraft(EffectKind.UPDATE_CARD)])
    assert (await store.get_request("R1")).status is Status.PENDING  # type: ignore[union-attr]
    if harness.kind == "sqlite":  # one transaction; a standalone MongoDB compensates the request only
        assert await store.effects_of("R1") == []


async def test_one_lane_runs_in_order_and_lanes_run_side_by_side(store: Store, clock: FakeClock) -> None:
    await _pending_request(store, "R1", EffectKind.POST_CARD, EffectKind.DELIVER, EffectKind.UPDATE_CARD,
                           EffectKind.WIPE, EffectKind.TELL)
    # The card post and the delivery lead their lanes; the update waits for the post, the wipe for the delivery.
    assert sorted(await _claim(store, clock)) == ["R1:deliver", "R1:post_card", "R1:tell"]
    assert await _claim(store, clock, owner="w2") == []  # leased: nobody else gets them
    first = {e.kind: e for e in await store.effects_of("R1")}
    assert first[EffectKind.DELIVER].attempts == 1 and first[EffectKind.DELIVER].lease_owner == "w1"
    assert await store.settle_effect(first[EffectKind.DELIVER], "w1", EffectOutcome(EffectStatus.DONE))
    assert await _claim(store, clock, owner="w2") == ["R1:wipe"]


async def test_a_lease_held_by_a_dead_worker_is_taken_over_when_it_runs_out(store: Store, clock: FakeClock) -> None:
    await _pending_request(store, "R1", EffectKind.WIPE)
    assert await _claim(store, clock, owner="dead") == ["R1:wipe"]
    (leased,) = await store.effects_of("R1")
    assert await store.next_effect_at(PLATFORMS) == clock.now() + LEASE
    clock.advance(seconds=LEASE.total_seconds())
    assert await _claim(store, clock, owner="alive") == ["R1:wipe"]
    # The dead worker's late outcome is refused: the lease is no longer its.
    assert not await store.settle_effect(leased, "dead", EffectOutcome(EffectStatus.DONE))
    (taken,) = await store.effects_of("R1")
    assert taken.attempts == 2 and taken.lease_owner == "alive" and taken.status is EffectStatus.PENDING


async def test_a_live_worker_renews_its_leases(store: Store, clock: FakeClock) -> None:
    await _pending_request(store, "R1", EffectKind.DELIVER)
    await _claim(store, clock, owner="w1")
    clock.advance(seconds=8)
    assert await store.renew_leases("w1", clock.now() + LEASE) == 1
    clock.advance(seconds=8)
    assert await _claim(store, clock, owner="w2") == []


async def test_two_workers_claiming_at_once_never_both_get_an_effect(store: Store, clock: FakeClock) -> None:
    for n in range(20):
        await _pending_request(store, f"R{n}", EffectKind.TELL)
    got = await asyncio.gather(*(_claim(store, clock, owner=f"w{i}", limit=7) for i in range(4)))
    claimed = [one for batch in got for one in batch]
    assert len(claimed) == len(set(claimed)) == 20


async def test_a_backlogs_deliveries_and_wipes_are_claimed_before_older_cards_and_messages(
        store: Store, clock: FakeClock) -> None:
    # A restart after downtime: card updates and messages due for minutes, then the secret lane's work.
    for n in range(4):
        await _pending_request(store, f"C{n}", EffectKind.UPDATE_CARD, EffectKind.TELL)
        clock.advance(seconds=1)
    await _pending_request(store, "W1", EffectKind.WIPE, EffectKind.UPDATE_CARD)
    clock.advance(seconds=1)
    await _pending_request(store, "D1", EffectKind.DELIVER)
    clock.advance(seconds=1)
    await _pending_request(store, "W2", EffectKind.WIPE)
    assert await _claim(store, clock, limit=3) == ["W1:wipe", "D1:deliver", "W2:wipe"]
    # The rest in due order; the lane rule still holds (W1's card update is not behind its wipe: lanes differ).
    assert await _claim(store, clock, limit=4) == ["C0:update_card", "C0:tell", "C1:update_card", "C1:tell"]
    # A short first pass is topped up from the other lanes in the same claim, secret lane first.
    await _pending_request(store, "W3", EffectKind.WIPE)
    now = clock.now()
    batch = await store.claim_effects_with_rows(now, "w1", now + LEASE, platforms=PLATFORMS, limit=3)
    assert [f"{c.effect.request_id}:{c.effect.kind.value}" for c in batch.claimed] == [
        "W3:wipe", "C2:update_card", "C2:tell"]


async def test_a_retry_waits_until_its_time_and_counts_attempts(store: Store, clock: FakeClock) -> None:
    await _pending_request(store, "R1", EffectKind.UPDATE_CARD)
    await _claim(store, clock)
    (effect,) = await store.effects_of("R1")
    retry_at = clock.now() + timedelta(seconds=30)
    assert await store.settle_effect(effect, "w1", EffectOutcome(EffectStatus.PENDING, error="chat.update:http 500",
                                                                 retry_at=retry_at))
    assert await _claim(store, clock) == []
    assert await store.next_effect_at(PLATFORMS) == retry_at
    clock.advance(seconds=30)
    assert await _claim(store, clock) == ["R1:update_card"]
    (again,) = await store.effects_of("R1")
    assert again.attempts == 2 and again.error == "chat.update:http 500"


async def test_a_newer_card_update_drops_unclaimed_older_ones_but_never_a_wipe(store: Store, clock: FakeClock) -> None:
    await _pending_request(store, "R1", EffectKind.UPDATE_CARD, EffectKind.WIPE)
    await store.transition("R1", {Status.PENDING}, {"status": Status.CANCELLED}, None,
                           effects=[EffectDraft(EffectKind.UPDATE_CARD), EffectDraft(EffectKind.WIPE)])
    kinds = [(e.kind, e.status) for e in await store.effects_of("R1")]
    assert kinds == [(EffectKind.UPDATE_CARD, EffectStatus.DROPPED), (EffectKind.WIPE, EffectStatus.PENDING),
                     (EffectKind.UPDATE_CARD, EffectStatus.PENDING), (EffectKind.WIPE, EffectStatus.PENDING)]


async def test_an_outcome_records_its_event_refs_revealed_and_follow_ups_together(store: Store,
                                                                                   clock: FakeClock) -> None:
    await store.create_request(make_request("R1", status=Status.ACTIVE, refs={"command": {"u": 1}}),
                               draft("request.created", request_id="R1"), [EffectDraft(EffectKind.DELIVER)])
    await _claim(store, clock)
    (effect,) = await store.effects_of("R1")
    outcome = EffectOutcome(EffectStatus.DONE, event=draft("grant.revealed", request_id="R1"),
                            refs={"delivery": {"via": "dm", "ts": "1.2"}}, revealed=True,
                            follow_ups=(EffectDraft(EffectKind.TELL, {"message": "hi"}),))
    assert await store.settle_effect(effect, "w1", outcome)
    request = await store.get_request("R1")
    assert request is not None and request.revealed
    assert request.refs == {"command": {"u": 1}, "delivery": {"via": "dm", "ts": "1.2"}}
    assert [e.type async for e in store.events(types={"grant.revealed"})] == ["grant.revealed"]
    assert [(e.kind, e.status) for e in await store.effects_of("R1")] == [
        (EffectKind.DELIVER, EffectStatus.DONE), (EffectKind.TELL, EffectStatus.PENDING)]


async def test_a_failed_wipe_counts_as_an_alert(store: Store, clock: FakeClock) -> None:
    await _pending_request(store, "R1", EffectKind.WIPE)
    await _claim(store, clock)
    (effect,) = await store.effects_of("R1")
    await store.settle_effect(effect, "w1", EffectOutcome(EffectStatus.FAILED, error="timeout",
                                                          event=draft("alert.wipe_exhausted", request_id="R1")))
    assert await store.effect_counts() == {"pending": 0, "failed": 1, "failed_wipes": 1, "failed_deliveries": 0,
                                          "retrying_wipes": 0}
    assert await _claim(store, clock) == []


async def test_final_delivery_failures_and_retrying_wipes_are_counted_for_healthz(store: Store,
                                                                                 clock: FakeClock) -> None:
    await _pending_request(store, "R1", EffectKind.DELIVER)
    await _pending_request(store, "R2", EffectKind.WIPE)
    await _pending_request(store, "R3", EffectKind.WIPE)
    await _claim(store, clock)
    (deliver,), (wipe,) = await store.effects_of("R1"), await store.effects_of("R2")
    assert await store.effect_counts() == {"pending": 3, "failed": 0, "failed_wipes": 0, "failed_deliveries": 0,
                                          "retrying_wipes": 0}  # claimed, not yet failed: nothing to report
    kept = await store.settle_effects([
        (deliver, EffectOutcome(EffectStatus.FAILED, error="http_403")),
        (wipe, EffectOutcome(EffectStatus.PENDING, error="timeout", retry_at=clock.now() + timedelta(seconds=5))),
    ], "w1")
    assert kept == [True, True]
    assert await store.effect_counts() == {"pending": 2, "failed": 1, "failed_wipes": 0, "failed_deliveries": 1,
                                          "retrying_wipes": 1}


async def test_only_effects_of_platforms_this_worker_serves_are_claimed(store: Store, clock: FakeClock) -> None:
    await store.create_request(make_request("R1", platform="teams"), draft("request.created", request_id="R1"),
                               [EffectDraft(EffectKind.POST_CARD)])
    assert await _claim(store, clock) == []
    now = clock.now()
    claimed = await store.claim_effects(now, "w1", now + LEASE, platforms={"teams"}, limit=5)
    assert [e.kind for e in claimed] == [EffectKind.POST_CARD]


async def test_a_batch_of_transitions_is_one_unit_in_order_and_a_failed_compare_skips_only_itself(
        store: Store) -> None:
    for n in range(5):
        await _pending_request(store, f"R{n}")
    await store.transition("R2", {Status.PENDING}, {"status": Status.CANCELLED}, None)
    drafts = [TransitionDraft(f"R{n}", frozenset({Status.PENDING}), {"status": Status.TIMED_OUT},
                              draft("request.timed_out", request_id=f"R{n}"),
                              (EffectDraft(EffectKind.UPDATE_CARD),)) for n in range(5)]
    results = await store.transition_many(drafts)
    assert [r.status if r else None for r in results] == [Status.TIMED_OUT] * 2 + [None] + [Status.TIMED_OUT] * 2
    # Their events are chained in the order given; R2 (already cancelled) got neither an event nor an effect.
    timed_out = [e async for e in store.events(types={"request.timed_out"})]
    assert [e.request_id for e in timed_out] == ["R0", "R1", "R3", "R4"]
    assert [e.seq for e in timed_out] == sorted(e.seq for e in timed_out)
    assert [e.kind for e in await store.effects_of("R2")] == []
    assert [e.kind for e in await store.effects_of("R3")] == [EffectKind.UPDATE_CARD]
    assert await store.transition_many([]) == []


async def test_an_audit_failure_in_a_batch_writes_none_of_it(harness: Harness) -> None:
    store = harness.store
    for n in range(3):
        await _pending_request(store, f"R{n}")
    await harness.break_audit()
    with pytest.raises(AuditWriteError):
        await store.transition_many([TransitionDraft(f"R{n}", frozenset({Status.PENDING}),
                                                     {"status": Status.CANCELLED},
                                                     draft("request.cancelled", request_id=f"R{n}"),
                                                     (EffectDraft(EffectKind.UPDATE_CARD),)) for n in range(3)])
    if harness.kind == "sqlite":  # one transaction (a standalone MongoDB undoes only the failed one)
        assert [(await store.get_request(f"R{n}")).status for n in range(3)] == [Status.PENDING] * 3  # type: ignore[union-attr]
        assert [await store.effects_of(f"R{n}") for n in range(3)] == [[], [], []]


async def test_outcomes_settled_together_each_keep_their_lease_check_event_and_refs(store: Store,
                                                                                    clock: FakeClock) -> None:
    for n in range(3):
        await store.create_request(make_request(f"R{n}", item=f"item-{n}", status=Status.ACTIVE),
                                   draft("request.created", request_id=f"R{n}"), [EffectDraft(EffectKind.DELIVER)])
    await _claim(store, clock)
    effects = [(await store.effects_of(f"R{n}"))[0] for n in range(3)]
    stolen = effects[1]
    clock.advance(seconds=LEASE.total_seconds())
    assert await _claim(store, clock, owner="w2") == ["R0:deliver", "R1:deliver", "R2:deliver"]
    # w1's lease on all three ran out; w2 settles two of its three in one batch, and w1's late one is refused.
    fresh = [(await store.effects_of(f"R{n}"))[0] for n in range(3)]
    kept = await store.settle_effects([
        (fresh[0], EffectOutcome(EffectStatus.DONE, event=draft("grant.revealed", request_id="R0"),
                                 refs={"delivery": {"ts": "1.0"}}, revealed=True)),
        (fresh[2], EffectOutcome(EffectStatus.PENDING, error="http 500", retry_at=clock.now() + LEASE,
                                 event=draft("grant.delivery_failed", request_id="R2"))),
    ], "w2")
    assert kept == [True, True]
    assert await store.settle_effects([(stolen, EffectOutcome(EffectStatus.DONE))], "w1") == [False]
    assert [e.request_id async for e in store.events(types={"grant.revealed", "grant.delivery_failed"})] == [
        "R0", "R2"]
    first = await store.get_request("R0")
    assert first is not None and first.revealed and first.refs == {"delivery": {"ts": "1.0"}}
    assert [(await store.effects_of(f"R{n}"))[0].status for n in range(3)] == [EffectStatus.DONE] + [
        EffectStatus.PENDING] * 2
    assert await store.settle_effects([], "w2") == []


async def test_the_background_handle_sees_and_writes_the_same_store(store: Store, clock: FakeClock) -> None:
    background = store.background()
    assert background.background() is background
    await _pending_request(store, "R1", EffectKind.TELL)
    assert [e.kind for e in await background.effects_of("R1")] == [EffectKind.TELL]
    assert await background.transition("R1", {Status.PENDING}, {"status": Status.CANCELLED},
                                       draft("request.cancelled", request_id="R1")) is not None
    # Events written on either handle form one chain.
    await store.append_event(draft("report.generated"))
    seqs = [e.seq async for e in store.events()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert (await store.get_request("R1")).status is Status.CANCELLED  # type: ignore[union-attr]


async def test_a_claim_with_rows_returns_each_effect_with_its_request_and_item_in_one_call(
        store: Store, clock: FakeClock) -> None:
    await store.add_items([make_sealed("item-r1")], [])
    await _pending_request(store, "R1", EffectKind.POST_CARD, EffectKind.TELL)
    await _pending_request(store, "R2", EffectKind.POST_CARD)  # its item was never added (or was removed)
    now = clock.now()
    batch = await store.claim_effects_with_rows(now, "w1", now + LEASE, platforms=PLATFORMS, limit=10)
    got = {(c.effect.request_id, c.effect.kind): c for c in batch.claimed}
    assert sorted(got) == [("R1", EffectKind.POST_CARD), ("R1", EffectKind.TELL), ("R2", EffectKind.POST_CARD)]
    one = got[("R1", EffectKind.POST_CARD)]
    assert one.request == await store.get_request("R1")
    assert one.item is not None and one.item == (await store.get_item("item-r1")).item  # type: ignore[union-attr]
    assert one.effect.attempts == 1 and one.effect.lease_owner == "w1"
    assert got[("R2", EffectKind.POST_CARD)].request is not None and got[("R2", EffectKind.POST_CARD)].item is None
    # A short batch says when to look again, read with the claim: here when the leases just taken run out.
    assert batch.next_at == now + LEASE == await store.next_effect_at(PLATFORMS)
    # Leased: a second claim gets nothing, and says the same moment.
    again = await store.claim_effects_with_rows(now, "w2", now + LEASE, platforms=PLATFORMS, limit=10)
    assert again.claimed == [] and again.next_at == now + LEASE


async def test_a_full_claim_with_rows_says_claim_again_and_a_short_one_when_the_next_is_due(
        store: Store, clock: FakeClock) -> None:
    for n in range(3):
        await _pending_request(store, f"R{n}", EffectKind.TELL)
    now = clock.now()
    full = await store.claim_effects_with_rows(now, "w1", now + LEASE, platforms=PLATFORMS, limit=2)
    assert len(full.claimed) == 2 and full.next_at is None  # full: claim again at once
    rest = await store.claim_effects_with_rows(now, "w1", now + LEASE, platforms=PLATFORMS, limit=2)
    assert [c.effect.request_id for c in rest.claimed] == ["R2"]
    assert rest.next_at == now + LEASE
    for claimed in (*full.claimed, *rest.claimed):
        retry_at = now + timedelta(seconds=3)
        assert await store.settle_effect(claimed.effect, "w1", EffectOutcome(EffectStatus.PENDING, error="x",
                                                                             retry_at=retry_at))
    later = await store.claim_effects_with_rows(now, "w1", now + LEASE, platforms=PLATFORMS, limit=2)
    assert later.claimed == [] and later.next_at == now + timedelta(seconds=3)
    nothing = await store.claim_effects_with_rows(now, "w1", now + LEASE, platforms={"teams"}, limit=2)
    assert nothing.claimed == [] and nothing.next_at is None


async def test_the_next_claimable_moment_skips_effects_waiting_behind_their_lanes_head(
        store: Store, clock: FakeClock) -> None:
    await _pending_request(store, "R1", EffectKind.POST_CARD)
    now = clock.now()
    posting = await store.claim_effects_with_rows(now, "w1", now + LEASE, platforms=PLATFORMS, limit=10)
    assert [c.effect.kind for c in posting.claimed] == [EffectKind.POST_CARD]
    # While the card is being posted, an approval writes the card's update: due now, but behind the post.
    clock.advance(seconds=1)
    await store.transition("R1", {Status.PENDING}, {"status": Status.DECLINED},
                           draft("request.declined", request_id="R1"), effects=[EffectDraft(EffectKind.UPDATE_CARD)])
    now = clock.now()
    blocked = await store.claim_effects_with_rows(now, "w1", now + LEASE, platforms=PLATFORMS, limit=10)
    assert blocked.claimed == []
    assert blocked.next_at is not None
    if store.kind == "sqlite":  # exact: the post's lease end (a store may say "now"; the worker then waits a bit)
        assert blocked.next_at == posting.claimed[0].effect.lease_until
    assert await store.settle_effect(posting.claimed[0].effect, "w1", EffectOutcome(EffectStatus.DONE))
    after = await store.claim_effects_with_rows(now, "w1", now + LEASE, platforms=PLATFORMS, limit=10)
    assert [c.effect.kind for c in after.claimed] == [EffectKind.UPDATE_CARD]
    assert after.claimed[0].request is not None and after.claimed[0].request.status is Status.DECLINED


async def test_effects_leased_as_written_are_as_if_claimed_then(store: Store, clock: FakeClock) -> None:
    # The writer's own worker gets the first of each lane on its platforms, leased (attempt 1), without a claim.
    lease = EffectLease("w1", clock.now() + LEASE, frozenset(PLATFORMS))
    leased = await store.create_request(
        make_request("R1", item="item-r1"), draft("request.created", request_id="R1"),
        [EffectDraft(EffectKind.POST_CARD), EffectDraft(EffectKind.UPDATE_CARD), EffectDraft(EffectKind.TELL)],
        lease=lease)

    assert sorted((e.kind, e.attempts, e.lease_owner) for e in leased) == [
        (EffectKind.POST_CARD, 1, "w1"), (EffectKind.TELL, 1, "w1")]
    stored = {e.kind: e for e in await store.effects_of("R1")}
    assert {e.id for e in leased} == {stored[EffectKind.POST_CARD].id, stored[EffectKind.TELL].id}
    assert stored[EffectKind.UPDATE_CARD].lease_owner is None  # behind the post in its lane
    assert await _claim(store, clock, owner="w2") == []  # leased: nobody else gets them, nor what waits behind
    card = next(e for e in leased if e.kind is EffectKind.POST_CARD)
    assert await store.settle_effect(card, "w1", EffectOutcome(EffectStatus.DONE))
    assert await _claim(store, clock, owner="w2") == ["R1:update_card"]


async def test_a_lease_from_a_writer_that_died_runs_out_and_another_worker_claims(store: Store,
                                                                                  clock: FakeClock) -> None:
    lease = EffectLease("w1", clock.now() + LEASE, frozenset(PLATFORMS))
    leased = await store.create_request(make_request("R1", item="item-r1"),
                                        draft("request.created", request_id="R1"),
                                        [EffectDraft(EffectKind.POST_CARD)], lease=lease)
    assert [e.attempts for e in leased] == [1]
    clock.advance(seconds=LEASE.total_seconds() + 1)
    assert await _claim(store, clock, owner="w2") == ["R1:post_card"]
    assert [(e.attempts, e.lease_owner) for e in await store.effects_of("R1")] == [(2, "w2")]
    assert not await store.settle_effect(leased[0], "w1", EffectOutcome(EffectStatus.DONE))  # w1's lease is over


async def test_no_lease_for_other_platforms_and_none_without_a_lease(store: Store, clock: FakeClock) -> None:
    teams_only = EffectLease("w1", clock.now() + LEASE, frozenset({"teams"}))
    assert await store.create_request(make_request("R1", item="item-r1"), draft("request.created", request_id="R1"),
                                      [EffectDraft(EffectKind.POST_CARD)], lease=teams_only) == []
    assert await store.create_request(make_request("R2", item="item-r2"), draft("request.created", request_id="R2"),
                                      [EffectDraft(EffectKind.POST_CARD)]) == []
    assert sorted(await _claim(store, clock)) == ["R1:post_card", "R2:post_card"]
