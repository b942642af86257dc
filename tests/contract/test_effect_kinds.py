"""For /metrics, on every store: `effects_by_kind` (the gauges of pending durable work), and the metered
store (bot/services/metrics.py) counting only what the store really recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.domain.errors import ClaimTaken
from bot.domain.model import EffectDraft, EffectKind, EffectOutcome, EffectStatus, Status
from bot.ports import Store
from bot.services.metrics import Metrics, metered
from tests.support.stores import FakeClock, draft, make_request


async def test_pending_and_failed_effects_are_counted_per_kind(store: Store, clock: FakeClock) -> None:
    assert await store.effects_by_kind() == {"pending": {}, "failed": {}}
    for request_id, kinds in (("R1", (EffectKind.POST_CARD, EffectKind.TELL)), ("R2", (EffectKind.POST_CARD,))):
        await store.create_request(make_request(request_id, item=f"item-{request_id.lower()}"),
                                   draft("request.created", request_id=request_id), [EffectDraft(k) for k in kinds])
    now = clock.now()
    claimed = await store.claim_effects(now, "w1", now + timedelta(seconds=10), platforms={"slack"}, limit=10)
    tell = next(e for e in claimed if e.kind is EffectKind.TELL)
    post = next(e for e in claimed if e.kind is EffectKind.POST_CARD and e.request_id == "R1")
    kept = await store.settle_effects([(tell, EffectOutcome(EffectStatus.FAILED, error="http 500")),
                                       (post, EffectOutcome(EffectStatus.DONE))], "w1")

    assert kept == [True, True]
    assert await store.effects_by_kind() == {"pending": {"post_card": 1}, "failed": {"tell": 1}}


async def test_a_metered_store_counts_only_what_it_recorded_and_times_every_call(store: Store) -> None:
    metrics = Metrics()
    metered_store = metered(store, metrics)
    await metered_store.create_request(make_request("R1"), draft("request.created", request_id="R1"))
    with pytest.raises(ClaimTaken):  # the same person's second open request for the item: nothing recorded
        await metered_store.create_request(make_request("R2"), draft("request.created", request_id="R2"))
    lost = await metered_store.transition("R1", {Status.ACTIVE}, {"status": Status.DECLINED},
                                          draft("request.declined", request_id="R1"))
    won = await metered_store.transition("R1", {Status.PENDING}, {"status": Status.DECLINED},
                                         draft("request.declined", request_id="R1"))
    worker = metered_store.background()
    await worker.append_event(draft("access.refused", request_id="R1", reason="self-approve"))

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    assert lost is None and won is not None
    assert value("jitpass_requests_total", platform="slack", kind="access") == 1
    assert value("jitpass_declines_total", platform="slack") == 1
    assert value("jitpass_refusals_total", reason="self_decision") == 1
    assert value("jitpass_store_operation_seconds_count", operation="transition") == 2
    assert value("jitpass_store_operation_seconds_count", operation="create_request") == 2
    assert value("jitpass_store_errors_total", operation="create_request") == 1
    assert value("jitpass_store_operation_seconds_count", operation="append_event") == 1
    assert worker.background() is worker
