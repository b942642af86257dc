"""The request lifecycle through AccessService, on a real SQLite file with an injected clock.

Chat platforms are represented by a notifier that records what the core told it: the port
itself, not a patch of our code. The real adapters are covered end to end in tests/e2e.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest

from bot.bootstrap import Runtime, open_runtime
from bot.cli.progress import progress
from bot.domain.audit import verify_chain
from bot.domain.config import parse_policy
from bot.domain.errors import AuditWriteError, Conflict, InputError, NotAllowed, NotFound, ParseError
from bot.domain.model import SYSTEM, AccessRequest, Event, Identity, Item, Reveal, Secret, Status
from bot.ports import NotifyResult, Sent
from bot.services.importers import ItemInput
from tests.support.app import CANARY_PASSWORD, CANARY_SEED, TEST_POLICY, FakeClock, canary_items, test_settings

ALICE = Identity("slack", "UALICE", "alice")
BOB = Identity("slack", "UBOB", "bob")
LEAD1 = Identity("slack", "ULEAD1", "lead one")
LEAD2 = Identity("slack", "ULEAD2", "lead two")
MALLORY = Identity("slack", "UMALLORY", "mallory")


class RecordingNotifier:
    platform = "slack"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.runtime: Runtime | None = None

    async def request_posted(self, request: AccessRequest, item: Item, *, attempt: int = 1) -> NotifyResult:
        self.calls.append(("posted", request.id, request.status))
        return Sent({"card": {"channel": "CLEADS", "ts": "1.0"}})

    async def request_updated(self, request: AccessRequest, item: Item) -> NotifyResult:
        self.calls.append(("updated", request.id, request.status))
        return Sent()

    async def delivery_target(self, request: AccessRequest) -> NotifyResult:
        return Sent({"delivery_intent": {"via": "dm", "channel": "DALICE"}})

    async def deliver_secret(self, request: AccessRequest, reveal: Reveal) -> NotifyResult:
        self.calls.append(("delivered", request.id, reveal))
        return Sent({"delivery": {"ts": "2.0"}})

    async def secret_revoked(self, request: AccessRequest, item: Item) -> NotifyResult:
        self.calls.append(("revoked", request.id, request.status))
        return Sent()

    async def requester_told(self, request: AccessRequest, message: str) -> NotifyResult:
        self.calls.append(("told", request.id, message))
        return Sent()

    async def of(self, kind: str) -> list[tuple[str, str, Any]]:
        """What the notifier was asked to do once every due effect has run."""
        assert self.runtime is not None
        await self.runtime.effects.run_due()
        return [c for c in self.calls if c[0] == kind]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def runtime(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Runtime]:
    rt = await open_runtime(test_settings(tmp_path), clock=clock, policy=parse_policy(TEST_POLICY))
    await rt.catalog.add(canary_items(), SYSTEM, source="test")
    try:
        yield rt
    finally:
        await rt.store.close()


@pytest.fixture
def notifier(runtime: Runtime) -> RecordingNotifier:
    recorder = RecordingNotifier()
    recorder.runtime = runtime
    runtime.service.register_notifier(recorder)
    return recorder


async def events(rt: Runtime) -> list[Event]:
    return [e async for e in rt.store.events()]


async def types(rt: Runtime) -> list[str]:
    return [e.type for e in await events(rt)]


async def test_lead_approves_and_requester_gets_secret_and_code(runtime: Runtime, notifier: RecordingNotifier,
                                                                clock: FakeClock) -> None:
    request = await runtime.service.request_access(ALICE, "acme-zendesk fix broken trigger for 1h")
    assert request.status is Status.PENDING and request.reason == "fix broken trigger"
    await runtime.effects.run_due()  # the card is posted by the effects worker
    assert (await runtime.service.get_request(request.id)).refs == {"card": {"channel": "CLEADS", "ts": "1.0"}}
    assert request.timeout_at == clock.now() + timedelta(minutes=30)

    clock.advance(timedelta(minutes=10))  # waiting for a lead is not taken from the window
    granted = await runtime.service.approve(request.id, LEAD1)
    assert granted.status is Status.ACTIVE
    assert granted.starts_at == clock.now() and granted.ends_at == clock.now() + timedelta(hours=1)
    (_, _, reveal), = await notifier.of("delivered")
    assert reveal.password == Secret(CANARY_PASSWORD)
    assert reveal.code is not None and pyotp.TOTP(CANARY_SEED).verify(reveal.code.code, for_time=clock.now())
    assert 0 < reveal.code.seconds_left <= 30
    granted = await runtime.service.get_request(request.id)
    assert granted.refs["delivery"] == {"ts": "2.0"} and granted.revealed
    assert any("approved by lead one" in c[2] for c in await notifier.of("told"))

    clock.advance(timedelta(seconds=45))
    code = await runtime.service.new_code(request.id, ALICE)
    assert code.code is not None and pyotp.TOTP(CANARY_SEED).verify(code.code.code, for_time=clock.now())

    assert await types(runtime) == [
        *["item.added"] * 2, "request.created", "request.approved", "grant.activated", "grant.delivery_started",
        "grant.revealed", "grant.code_shown",
    ]


async def test_window_end_expires_grant_marks_rotation_and_stops_codes(runtime: Runtime, notifier: RecordingNotifier,
                                                                        clock: FakeClock) -> None:
    request = await runtime.service.request_access(ALICE, "acme-zendesk rotate api key for 30m")
    await runtime.service.approve(request.id, LEAD1)
    await runtime.effects.run_due()
    clock.advance(timedelta(minutes=29))
    assert await runtime.service.run_due() == 0
    clock.advance(timedelta(minutes=1))
    assert await runtime.service.run_due() == 1

    ended = await runtime.service.get_request(request.id)
    assert ended.status is Status.EXPIRED and ended.ended_at == clock.now()
    assert await notifier.of("revoked") == [("revoked", request.id, Status.EXPIRED)]
    with pytest.raises(Conflict, match="expired"):
        await runtime.service.new_code(request.id, ALICE)
    item = await runtime.service.get_item("acme-zendesk")
    assert item.rotation_due is not None and item.rotation_due.seen_by == (ALICE,)
    assert item.rotation_due.request_ids == (request.id,)

    await runtime.catalog.rotate_password("acme-zendesk", Secret("new-password-1"), SYSTEM)
    assert (await runtime.service.get_item("acme-zendesk")).rotation_due is None
    assert (await types(runtime))[-4:] == ["grant.expired", "grant.wiped", "access.refused", "item.rotated"]


async def test_grants_ending_together_end_in_one_batch_with_rotation_and_extensions_closed(
        runtime: Runtime, notifier: RecordingNotifier, clock: FakeClock) -> None:
    first = await runtime.service.approve((await runtime.service.request_access(
        ALICE, "acme-zendesk rotate api key for 30m")).id, LEAD1)
    second = await runtime.service.approve((await runtime.service.request_access(
        BOB, "acme-zendesk check the trigger log for 30m")).id, LEAD1)
    await runtime.effects.run_due()  # both delivered: the password was seen by both
    clock.advance(timedelta(minutes=10))
    waiting = await runtime.service.request_extension(second.id, BOB, "15m")  # still pending at the end
    clock.advance(timedelta(minutes=20))
    assert await runtime.service.run_due() == 2

    for grant in (first, second):
        ended = await runtime.service.get_request(grant.id)
        assert ended.status is Status.EXPIRED and ended.ended_at == grant.ends_at
    assert (await runtime.service.get_request(waiting.id)).status is Status.CANCELLED
    item = await runtime.service.get_item("acme-zendesk")
    assert item.rotation_due is not None and set(item.rotation_due.seen_by) == {ALICE, BOB}
    assert set(item.rotation_due.request_ids) == {first.id, second.id}
    trail = [e async for e in runtime.store.events(types={"grant.expired"})]
    assert [e.request_id for e in trail] == [first.id, second.id]  # chained in due order
    assert [e.seq for e in trail] == [trail[0].seq, trail[0].seq + 1]  # one batch, nothing between
    await runtime.effects.run_due()
    assert sorted(r for _, r, _ in await notifier.of("revoked")) == sorted([first.id, second.id])


async def test_pending_request_times_out_and_requester_is_told(runtime: Runtime, notifier: RecordingNotifier,
                                                                clock: FakeClock) -> None:
    request = await runtime.service.request_access(ALICE, "acme-zendesk look at ticket 42")
    clock.advance(timedelta(minutes=30))
    await runtime.service.run_due()
    assert (await runtime.service.get_request(request.id)).status is Status.TIMED_OUT
    assert any("timed out" in c[2] for c in await notifier.of("told"))
    with pytest.raises(Conflict, match="already timed out"):
        await runtime.service.approve(request.id, LEAD1)


async def test_requester_cannot_approve_own_request_and_refusal_is_audited(runtime: Runtime,
                                                                            notifier: RecordingNotifier) -> None:
    lead_request = await runtime.service.request_access(LEAD1, "acme-zendesk check billing settings")
    with pytest.raises(NotAllowed, match="your own request"):
        await runtime.service.approve(lead_request.id, LEAD1)
    with pytest.raises(NotAllowed, match="not an approver"):
        await runtime.service.approve(lead_request.id, MALLORY)
    refused = [e for e in await events(runtime) if e.type == "access.refused"]
    assert [(e.actor, e.request_id) for e in refused] == [(LEAD1, lead_request.id), (MALLORY, lead_request.id)]
    assert (await runtime.service.get_request(lead_request.id)).status is Status.PENDING


async def test_two_of_m_approvals_and_double_click_counts_once(runtime: Runtime, notifier: RecordingNotifier) -> None:
    request = await runtime.service.request_access(ALICE, "globex-aws investigate outage for 2h")
    assert "2 approvals needed" in request.notes
    first = await runtime.service.approve(request.id, LEAD1)
    assert first.status is Status.PENDING and len(first.approvals) == 1
    with pytest.raises(Conflict, match="already approved"):
        await runtime.service.approve(request.id, LEAD1)
    second = await runtime.service.approve(request.id, LEAD2)
    assert second.status is Status.ACTIVE
    assert (await types(runtime)).count("request.approval_added") == 1
    assert len(await notifier.of("delivered")) == 1


async def test_concurrent_approvals_apply_once(runtime: Runtime, notifier: RecordingNotifier) -> None:
    request = await runtime.service.request_access(ALICE, "acme-zendesk fix broken trigger")
    results = await asyncio.gather(runtime.service.approve(request.id, LEAD1),
                                   runtime.service.approve(request.id, LEAD2), return_exceptions=True)
    assert sum(isinstance(r, AccessRequest) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 1
    assert (await types(runtime)).count("request.approved") == 1
    assert len(await notifier.of("delivered")) == 1


async def test_decline_with_reason_tells_requester(runtime: Runtime, notifier: RecordingNotifier) -> None:
    request = await runtime.service.request_access(ALICE, "acme-zendesk export all tickets")
    declined = await runtime.service.decline(request.id, LEAD2, "use the read-only account")
    assert declined.status is Status.DECLINED and declined.decline_reason == "use the read-only account"
    assert any("declined by lead two: use the read-only account" in c[2] for c in await notifier.of("told"))
    with pytest.raises(Conflict, match="already declined by lead two"):
        await runtime.service.approve(request.id, LEAD1)


async def test_scheduled_window_activates_at_its_start(runtime: Runtime, notifier: RecordingNotifier,
                                                        clock: FakeClock) -> None:
    request = await runtime.service.request_access(ALICE, "acme-zendesk planned migration today 14:00-16:00")
    approved = await runtime.service.approve(request.id, LEAD1)
    assert approved.status is Status.APPROVED and not await notifier.of("delivered")
    clock.advance(timedelta(hours=5))  # 09:00 -> 14:00
    await runtime.service.run_due()
    active = await runtime.service.get_request(request.id)
    assert active.status is Status.ACTIVE and active.ends_at == clock.now() + timedelta(hours=2)
    assert len(await notifier.of("delivered")) == 1


async def test_extension_moves_end_only_when_approved(runtime: Runtime, notifier: RecordingNotifier,
                                                      clock: FakeClock) -> None:
    grant = await runtime.service.approve((await runtime.service.request_access(
        ALICE, "acme-zendesk long debugging session for 1h")).id, LEAD1)
    assert grant.ends_at is not None
    extension = await runtime.service.request_extension(grant.id, ALICE, "30m")
    assert (await runtime.service.get_request(grant.id)).ends_at == grant.ends_at
    with pytest.raises(Conflict, match="already waiting"):
        await runtime.service.request_extension(grant.id, ALICE, "15m")
    await runtime.service.approve(extension.id, LEAD2)
    assert (await runtime.service.get_request(grant.id)).ends_at == grant.ends_at + timedelta(minutes=30)
    with pytest.raises(InputError, match="at most 8h"):
        await runtime.service.request_extension(grant.id, ALICE, "8h")
    assert "grant.extended" in await types(runtime)


async def test_exclusive_item_queues_second_requester_until_holder_ends(runtime: Runtime, notifier: RecordingNotifier,
                                                                        clock: FakeClock) -> None:
    first = await runtime.service.request_access(ALICE, "globex-aws deploy hotfix for 1h")
    await runtime.service.approve(first.id, LEAD1)
    await runtime.service.approve(first.id, LEAD2)
    await runtime.effects.run_due()
    second = await runtime.service.request_access(BOB, "globex-aws check cost report for 1h")
    assert any(n.startswith("queued: alice holds it until") for n in second.notes)
    await runtime.service.approve(second.id, LEAD1)
    queued = await runtime.service.approve(second.id, LEAD2)
    assert queued.status is Status.APPROVED and queued.starts_at == clock.now() + timedelta(hours=1)
    clock.advance(timedelta(minutes=20))
    await runtime.service.done(first.id, ALICE)  # the holder finishes early: the queue moves on at once
    started = await runtime.service.get_request(second.id)
    assert started.status is Status.ACTIVE and started.ends_at == clock.now() + timedelta(hours=1)
    assert len(await notifier.of("delivered")) == 2


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("acme-zendsk fix broken trigger", NotFound, "no item called 'acme-zendsk'"),
        ("acme-zendesk", InputError, "reason is missing"),
        ("acme-zendesk fix for 1h", InputError, "too short"),
        ("acme-zendesk fix broken trigger for 9h", InputError, "longer than vault 'acme' allows"),
        ("acme-zendesk fix broken trigger for 30s", InputError, "shorter than vault 'acme' allows"),
        ("acme-zendesk fix broken trigger for 3 fortnights", ParseError, "fortnights"),
    ],
)
async def test_bad_requests_are_refused_with_a_specific_message_and_change_nothing(
    runtime: Runtime, notifier: RecordingNotifier, text: str, error: type[Exception], message: str
) -> None:
    before = await types(runtime)
    with pytest.raises(error, match=message):
        await runtime.service.request_access(ALICE, text)
    assert await types(runtime) == before
    assert await runtime.store.find_requests() == []


async def test_unknown_item_suggests_close_names(runtime: Runtime) -> None:
    with pytest.raises(NotFound) as caught:
        await runtime.service.request_access(ALICE, "acme-zendsk fix broken trigger")
    assert caught.value.suggestions == ["acme-zendesk"]


async def test_foreign_holder_cannot_see_or_end_a_grant(runtime: Runtime, notifier: RecordingNotifier) -> None:
    grant = await runtime.service.approve((await runtime.service.request_access(
        ALICE, "acme-zendesk fix broken trigger")).id, LEAD1)
    with pytest.raises(NotAllowed):
        await runtime.service.new_code(grant.id, MALLORY)
    with pytest.raises(NotAllowed):
        await runtime.service.done(grant.id, MALLORY)
    assert (await runtime.service.get_request(grant.id)).status is Status.ACTIVE


async def test_reveal_fails_closed_when_the_audit_write_fails(runtime: Runtime, notifier: RecordingNotifier,
                                                              tmp_path: Path) -> None:
    grant = await runtime.service.approve((await runtime.service.request_access(
        ALICE, "acme-zendesk fix broken trigger")).id, LEAD1)
    await runtime.effects.run_due()
    # A real SQLite trigger makes the events table refuse writes, as a full disk or lost lock would.
    with closing(sqlite3.connect(tmp_path / "jitpass.db")) as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(AuditWriteError):
        await runtime.service.new_code(grant.id, ALICE)
    assert len(await notifier.of("delivered")) == 1  # only the delivery before the failure


async def test_audit_chain_stays_intact_and_never_holds_a_secret(runtime: Runtime, notifier: RecordingNotifier,
                                                                 clock: FakeClock) -> None:
    grant = await runtime.service.approve((await runtime.service.request_access(
        ALICE, "acme-zendesk fix broken trigger for 1h")).id, LEAD1)
    await runtime.effects.run_due()
    await runtime.service.new_code(grant.id, ALICE)
    clock.advance(timedelta(hours=2))
    await runtime.service.run_due()
    report = await verify_chain(runtime.store.events())
    assert report.ok and report.checked == len(await events(runtime))
    for event in await events(runtime):
        text = repr(event)
        assert CANARY_PASSWORD not in text and CANARY_SEED not in text


async def test_done_records_who_ended_the_grant_and_late_approver_hears_it_was_approved(
    runtime: Runtime, notifier: RecordingNotifier
) -> None:
    request = await runtime.service.request_access(ALICE, "acme-zendesk fix broken trigger")
    await runtime.service.approve(request.id, LEAD1)
    with pytest.raises(Conflict, match=f"{request.id} was already approved by lead one"):
        await runtime.service.approve(request.id, LEAD2)
    ended = await runtime.service.done(request.id, ALICE)
    assert ended.status is Status.REVOKED and ended.ended_by == ALICE


async def test_live_code_shows_only_the_code_and_audits_only_when_asked(runtime: Runtime, notifier: RecordingNotifier,
                                                                        clock: FakeClock) -> None:
    grant = await runtime.service.approve((await runtime.service.request_access(
        ALICE, "acme-zendesk fix broken trigger")).id, LEAD1)
    before = await types(runtime)
    opened = await runtime.service.live_code(grant.id, ALICE, via="app_home", audit=True)
    clock.advance(timedelta(seconds=30))
    refreshed = await runtime.service.live_code(grant.id, ALICE, via="app_home", audit=False)
    assert opened is not None and refreshed is not None
    assert pyotp.TOTP(CANARY_SEED).verify(refreshed.code, for_time=clock.now())
    shown = [(e.type, e.details["via"], e.details["password"]) for e in (await events(runtime))[len(before):]]
    assert shown == [("grant.code_shown", "app_home", False)]
    with pytest.raises(NotAllowed):
        await runtime.service.live_code(grant.id, MALLORY, via="app_home", audit=False)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "drawn"), [(_Terminal(), True), (io.StringIO(), False)])
async def test_large_imports_show_progress_on_a_terminal_only(runtime: Runtime, stream: io.StringIO,
                                                              drawn: bool) -> None:
    entries = [ItemInput(name=f"bulk-{i:03}", vault="bulk", password=Secret(f"pw-{i}")) for i in range(50)]
    with progress(stream) as tracker:
        added = await runtime.catalog.add(entries, SYSTEM, source="test", tracker=tracker)
    assert len(added) == 50
    assert ("sealing items" in stream.getvalue()) is drawn
    assert (stream.getvalue() == "") is not drawn
