"""The access lifecycle's rules, held on every store: the real AccessService and scheduler over the store
under test (SQLite file or MongoDB), with a notifier that records what the core told the chat platform."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from bot.domain.config import parse_policy
from bot.domain.errors import Conflict, NotAllowed
from bot.domain.model import SYSTEM, AccessRequest, Event, Identity, Item, Reveal, Status
from bot.domain.vault import KeyRing, Vault, generate_key
from bot.ports import NotifyResult, Sent
from bot.services.access import AccessService
from bot.services.catalog import Catalog
from bot.services.effects import EffectRunner
from bot.services.schedule import GrantScheduler
from tests.contract.conftest import Harness
from tests.support.app import TEST_POLICY, canary_items

ALICE = Identity("slack", "UALICE", "alice")
BOB = Identity("slack", "UBOB", "bob")
LEAD1 = Identity("slack", "ULEAD1", "lead one")
LEAD2 = Identity("slack", "ULEAD2", "lead two")


class RecordingNotifier:
    platform = "slack"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def request_posted(self, request: AccessRequest, item: Item, *, attempt: int = 1) -> NotifyResult:
        self.calls.append(("posted", request.id))
        return Sent()

    async def request_updated(self, request: AccessRequest, item: Item) -> NotifyResult:
        self.calls.append(("updated", request.id))
        return Sent()

    async def delivery_target(self, request: AccessRequest) -> NotifyResult:
        return Sent({"delivery_intent": {"via": "dm", "channel": "DALICE"}})

    async def deliver_secret(self, request: AccessRequest, reveal: Reveal) -> NotifyResult:
        self.calls.append(("delivered", request.id))
        return Sent()

    async def secret_revoked(self, request: AccessRequest, item: Item) -> NotifyResult:
        self.calls.append(("revoked", request.id))
        return Sent()

    async def requester_told(self, request: AccessRequest, message: str) -> NotifyResult:
        self.calls.append(("told", request.id))
        return Sent()

    async def leads_told(self, vault: str, message: str) -> NotifyResult:
        return Sent(done=False)

    def delivered(self) -> list[str]:
        return [request_id for kind, request_id in self.calls if kind == "delivered"]


@dataclass
class Core:
    harness: Harness
    service: AccessService
    scheduler: GrantScheduler
    notifier: RecordingNotifier
    effects: EffectRunner

    async def events(self, request_id: str | None = None) -> list[Event]:
        found = [e async for e in self.harness.store.events()]
        return [e for e in found if request_id is None or e.request_id == request_id]

    async def granted(self, text: str = "acme-zendesk fix broken trigger for 1h", who: Identity = ALICE) -> str:
        request = await self.service.request_access(who, text)
        await self.service.approve(request.id, LEAD1)
        return request.id


@pytest.fixture
async def core(harness: Harness) -> AsyncIterator[Core]:
    vault = Vault(KeyRing([generate_key()]))
    await harness.store.set_meta("key_check", vault.key_check())
    await Catalog(harness.store, vault, harness.clock).add(canary_items(), SYSTEM, source="test")
    service = AccessService(harness.store, vault, parse_policy(TEST_POLICY), harness.clock)
    notifier = RecordingNotifier()
    service.register_notifier(notifier)
    yield Core(harness, service, GrantScheduler(service), notifier, EffectRunner(service))


async def test_an_approved_extension_moves_the_end_once_and_never_becomes_a_grant(core: Core) -> None:
    grant_id = await core.granted()
    grant = await core.service.get_request(grant_id)
    assert grant.ends_at is not None
    extension = await core.service.request_extension(grant_id, ALICE, "5m")
    await core.service.approve(extension.id, LEAD2)

    for _ in range(3):  # the scheduler runs every bit of due work, however often it ticks
        core.harness.clock.advance(seconds=1)
        await core.scheduler.tick()
        await core.effects.run_due()

    after = await core.service.get_request(grant_id)
    assert after.status is Status.ACTIVE and after.ends_at == grant.ends_at + timedelta(minutes=5)
    ext = await core.service.get_request(extension.id)
    assert ext.status is Status.APPROVED and ext.starts_at is None
    assert [e.type for e in await core.events(extension.id)] == ["request.created", "request.approved"]
    assert [e.type for e in await core.events(grant_id)].count("grant.extended") == 1
    assert [e.type for e in await core.events(grant_id)].count("grant.activated") == 1
    assert set(core.notifier.delivered()) == {grant_id}  # the extension got no delivery of its own
    active = await core.harness.store.find_requests(statuses={Status.ACTIVE})
    assert [r.id for r in active] == [grant_id]
    assert await core.harness.store.due_requests(core.harness.clock.now()) == []

    core.harness.clock.advance(minutes=66)
    await core.scheduler.tick()
    assert (await core.service.get_request(grant_id)).status is Status.EXPIRED
    assert (await core.service.get_request(extension.id)).status is Status.EXPIRED


async def test_extending_someone_elses_grant_is_refused_and_audited(core: Core) -> None:
    grant_id = await core.granted()
    with pytest.raises(NotAllowed, match="not your request"):
        await core.service.request_extension(grant_id, BOB, "30m")
    [refused] = [e for e in await core.events(grant_id) if e.type == "access.refused"]
    assert refused.actor == BOB and refused.reason == "extend someone else's grant"


async def test_presses_after_the_end_are_refused_and_audited_even_before_the_store_records_the_end(
        core: Core) -> None:
    grant_id = await core.granted()
    core.harness.clock.advance(hours=2)  # past the end; the scheduler has not run (late, or the store is down)
    assert (await core.service.get_request(grant_id)).status is Status.ACTIVE
    with pytest.raises(Conflict) as refused:
        await core.service.new_code(grant_id, ALICE)
    assert "is over" in refused.value.message and "active" not in refused.value.message
    await core.scheduler.tick()
    with pytest.raises(Conflict, match="is expired"):
        await core.service.reveal(grant_id, ALICE)
    reasons = [e.reason for e in await core.events(grant_id) if e.type == "access.refused"]
    assert reasons == ["see the secret of a grant that is over", "see the secret of a grant that is expired"]
    assert "grant.code_shown" not in [e.type for e in await core.events(grant_id)][2:]


async def test_a_refusal_stands_when_the_store_cannot_record_it(core: Core) -> None:
    grant_id = await core.granted()
    core.harness.clock.advance(hours=2)
    await core.harness.break_audit()
    with pytest.raises(Conflict, match="is over: nothing to show"):
        await core.service.new_code(grant_id, ALICE)


async def test_two_identical_requests_at_once_create_one_and_the_other_is_told_which(core: Core) -> None:
    # No read for an open request before the create: the create unit itself refuses the second (the
    # store's open claim), so two sent at the same moment cannot both pass a check and both be created.
    text = "acme-zendesk fix broken trigger for 1h"
    results = await asyncio.gather(core.service.request_access(ALICE, text), core.service.request_access(ALICE, text),
                                   return_exceptions=True)
    made = [r for r in results if isinstance(r, AccessRequest)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(made) == 1 and len(refused) == 1, results
    assert f"You already have request {made[0].id} for acme-zendesk (pending)" in refused[0].message
    opened = await core.harness.store.find_requests(requester=ALICE)
    assert [r.id for r in opened] == [made[0].id]
    assert [e.type for e in await core.events() if e.type.startswith("request.")] == ["request.created"]
    assert [e.kind.value for e in await core.harness.store.effects_of(made[0].id)] == ["post_card"]
    # Later, one after the other: the same friendly refusal, nothing written.
    with pytest.raises(Conflict, match=f"You already have request {made[0].id}"):
        await core.service.request_access(ALICE, text)
    assert len(await core.harness.store.find_requests(requester=ALICE)) == 1
