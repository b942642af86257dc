"""The effects worker's loop on every store: one claim per batch brings the rows the effects run with,
and an effect waiting behind another in its lane does not send the loop back to claim nothing again and again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from bot.domain.config import parse_policy
from bot.domain.model import SYSTEM, AccessRequest, Identity, Item, Reveal
from bot.domain.vault import KeyRing, Vault, generate_key
from bot.ports import NotifyResult, Sent
from bot.services.access import AccessService
from bot.services.catalog import Catalog
from bot.services.effects import EffectRunner
from bot.services.metrics import Metrics, metered
from tests.contract.conftest import Harness
from tests.support.app import TEST_POLICY, canary_items

ALICE = Identity("slack", "UALICE", "alice")


class HeldNotifier:
    """Posts a card only once `release` is set; records every card call with the item it was given."""

    platform = "slack"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.posting = asyncio.Event()
        self.calls: list[tuple[str, str, str, str]] = []

    async def request_posted(self, request: AccessRequest, item: Item, *, attempt: int = 1) -> NotifyResult:
        self.posting.set()
        await self.release.wait()
        self.calls.append(("posted", request.id, request.status.value, item.username))
        return Sent({"card": {"channel": "CLEADS", "ts": "1.1"}})

    async def request_updated(self, request: AccessRequest, item: Item) -> NotifyResult:
        self.calls.append(("updated", request.id, request.status.value, item.username))
        return Sent()

    async def delivery_target(self, request: AccessRequest) -> NotifyResult:
        return Sent()

    async def deliver_secret(self, request: AccessRequest, reveal: Reveal) -> NotifyResult:
        return Sent()

    async def secret_revoked(self, request: AccessRequest, item: Item) -> NotifyResult:
        return Sent()

    async def requester_told(self, request: AccessRequest, message: str, *, reply: bool = False) -> NotifyResult:
        return Sent()

    async def leads_told(self, vault: str, message: str) -> NotifyResult:
        return Sent(done=False)


@dataclass
class Worker:
    service: AccessService
    effects: EffectRunner
    notifier: HeldNotifier
    metrics: Metrics

    def calls(self, operation: str) -> float:
        return self.metrics.registry.get_sample_value("jitpass_store_operation_seconds_count",
                                                      {"operation": operation}) or 0.0


@pytest.fixture
async def worker(harness: Harness) -> AsyncIterator[Worker]:
    vault = Vault(KeyRing([generate_key()]))
    await harness.store.set_meta("key_check", vault.key_check())
    await Catalog(harness.store, vault, harness.clock).add(canary_items(), SYSTEM, source="test")
    metrics = Metrics()
    service = AccessService(metered(harness.store, metrics), vault, parse_policy(TEST_POLICY), harness.clock)
    notifier = HeldNotifier()
    service.register_notifier(notifier)
    effects = EffectRunner(service)
    effects.start()
    try:
        yield Worker(service, effects, notifier, metrics)
    finally:
        await effects.stop()


async def test_a_card_update_behind_its_post_waits_for_it_without_the_worker_claiming_over_and_over(
        worker: Worker) -> None:
    request = await worker.service.request_access(ALICE, "acme-zendesk fix broken trigger for 1h")
    await asyncio.wait_for(worker.notifier.posting.wait(), 5)  # the loop claimed the card post; it is held
    await worker.service.cancel(request.id, ALICE)  # its card update: due now, behind the post in the card lane
    claims = worker.calls("claim_effects_with_rows")
    # Real time passes while the post is held (the loop's waits are on the event loop's clock, not the store's).
    await asyncio.sleep(0.3)
    assert worker.calls("claim_effects_with_rows") - claims <= 2, "the loop spun on an effect it cannot claim"
    worker.notifier.release.set()
    await worker.effects.drain(timeout=5)
    # The post ran with the rows its claim returned (the item's username from the catalogue), then the update,
    # woken by the post's end, with the request as cancelled: neither read the request or the item itself.
    assert worker.notifier.calls == [("posted", request.id, "pending", "support@acme.example"),
                                     ("updated", request.id, "cancelled", "support@acme.example")]
    assert worker.calls("claim_effects") == 0
    assert worker.calls("get_request") == 1  # the cancel's own read
    assert worker.calls("get_item") == 1  # request_access's own read
