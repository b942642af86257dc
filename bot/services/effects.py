"""The effects worker: carries out the chat effects the core recorded with its state changes.

Every state change writes its effects (post/update the card, deliver, wipe, tell) in the same store
transaction as the change and its audit event. This worker claims due effects with a lease (so two
replicas never both run one), runs each under a deadline with bounded concurrency, and records the
outcome in one unit of work: the effect row, its audit event, the refs the platform returned.

Failures come back from notifiers as `Failed` results (or exceptions, recorded the same way) and are
retried with capped exponential backoff and full jitter; a Retry-After is honoured but capped and
delays only that effect. Effects of one request in one lane run in order (a wipe never overtakes its
delivery). A card update superseded by a later one is dropped; a wipe is never dropped: when its
budget is spent it fails loudly (`alert.wipe_exhausted`, counted in /healthz and reports).

Audit events of the delivery: `grant.delivery_started` (before the secret leaves: fail closed),
then `grant.revealed` when the platform took it (the only event that counts as a reveal) or
`grant.delivery_failed`. Of the wipe: `grant.wiped` or `grant.wipe_failed`, each with `attempt`. A failure
the platform says is for good (`Failed.permanent`: HTTP 4xx but 408/425/429, Slack's `invalid_blocks`,
`channel_not_found`, ...) is final at once, marked `permanent`; a final wipe failure adds `alert.wipe_exhausted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import secrets
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.domain.errors import JitpassError, SecretSourceError
from bot.domain.model import (
    SYSTEM,
    AccessRequest,
    Effect,
    EffectDraft,
    EffectKind,
    EffectOutcome,
    EffectStatus,
    EventDraft,
    Item,
    Status,
)
from bot.ports import Claimed, EffectLease, Failed, Notifier, NotifyResult, Sent

if TYPE_CHECKING:
    from bot.services.access import AccessService

__all__ = ["EffectRunner", "RetryPolicy"]

log = logging.getLogger("jitpass.effects")

# Seconds before a worker looks again when only effects behind another in their lane are due (see `_loop`).
_RECHECK_BLOCKED = 1.0


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff and budgets. A wipe gets the most attempts: a password may still be on a screen."""

    call_timeout: float = 10.0  # seconds per outbound call (the adapters apply it per HTTP call)
    retry_after_max: float = 30.0
    first_delay: float = 1.0
    max_delay: float = 300.0
    attempts: Mapping[EffectKind, int] | None = None

    def budget(self, kind: EffectKind) -> int:
        defaults = {EffectKind.WIPE: 12, EffectKind.DELIVER: 8, EffectKind.POST_CARD: 10,
                    EffectKind.UPDATE_CARD: 8, EffectKind.TELL: 6}
        return dict(self.attempts or defaults).get(kind, defaults[kind])

    @property
    def deadline(self) -> float:
        """One effect makes at most three calls (delivery: find, post, update)."""
        return self.call_timeout * 3 + 1

    # A live worker renews its leases every third of this; a dead one's effects are taken over after it.
    lease_seconds: float = 10.0

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter over a capped exponential, never shorter than a (capped) Retry-After."""
        if retry_after == 0:
            return 0.0
        ceiling = min(self.max_delay, self.first_delay * 2 ** max(0, attempt - 1))
        wait = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            wait = max(wait, min(max(retry_after, 0.0), self.retry_after_max))
        return wait


def _failed_words(request: AccessRequest, final: bool) -> str:
    if final:
        return (f"⚠️ jitpass could not deliver the password for {request.id} ({request.item}) to you. "
                "Nothing was shown. Open the jitpass App Home or ask again, and tell a lead if this keeps happening.")
    return (f"⚠️ Delivering the password for {request.id} ({request.item}) to you failed; jitpass keeps trying. "
            "You can also open the jitpass App Home for the current code.")


class EffectRunner:
    """Claims, runs and records durable chat effects; one per process, any number of processes."""

    def __init__(self, service: AccessService, policy: RetryPolicy | None = None, *, concurrency: int = 16,
                 batch: int = 64, owner: str | None = None) -> None:
        self.service = service
        self.store = service.store
        self.clock = service.clock
        self.policy = policy or RetryPolicy()
        self.owner = owner or f"w-{secrets.token_hex(6)}"
        self.batch = batch
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[bool]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._claiming = False  # a claim in flight: what it leases is not running yet, so not idle (`drain`)
        self._renewer: asyncio.Task[None] | None = None
        # Outcomes waiting to be recorded: effects finishing together are settled in one store transaction.
        self._to_settle: list[tuple[Effect, EffectOutcome, asyncio.Future[bool]]] = []
        self._settler: asyncio.Task[None] | None = None
        # Requests whose new effects were handed over as written (`adopt`): their change needs no claim.
        self._adopted: set[str] = set()
        # Handed-over effects running, by request id; and those requests changed meanwhile (a later effect
        # may wait behind one of them in its lane: its end must wake a claim).
        self._handed: dict[str, int] = {}
        self._touched: set[str] = set()
        service.on_change.append(self._changed)

    @property
    def notifiers(self) -> Mapping[str, Notifier]:
        return self.service.notifiers

    # -- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._loop(), name="jitpass-effects")
            self._renewer = loop.create_task(self._renew_leases(), name="jitpass-effects-leases")
            self.service.lessee = self

    def lease(self) -> EffectLease:
        """A lease for effects written now (`Store.create_request`), to this worker: as a claim now would."""
        return EffectLease(self.owner, self.clock.now() + self.policy.lease, frozenset(self.notifiers))

    def adopt(self, claimed: list[Claimed]) -> None:
        """Run effects leased to this worker as they were written, as if it had just claimed them: a new
        request's card post starts without a claim unit. The change that wrote them wakes no claim (the rest
        of their lanes waits behind them, and their end wakes the loop)."""
        for one in claimed:
            request_id = one.effect.request_id
            self._adopted.add(request_id)
            self._handed[request_id] = self._handed.get(request_id, 0) + 1
            self._spawn(one, handed=True)

    def _changed(self, request: AccessRequest) -> None:
        if request.id in self._adopted:
            self._adopted.discard(request.id)
            return
        if request.id in self._handed:
            self._touched.add(request.id)
        self.wake()

    async def _renew_leases(self) -> None:
        """Heartbeat: keep the leases of effects in flight here, so only a dead worker's are taken over."""
        while True:
            await asyncio.sleep(self.policy.lease_seconds / 3)
            if not self._running:
                continue
            try:
                await self.store.renew_leases(self.owner, self.clock.now() + self.policy.lease)
            except Exception as exc:
                log.warning("event=effects_lease_renewal_failed error=%s", type(exc).__name__)

    async def stop(self) -> None:
        if self.service.lessee is self:
            self.service.lessee = None
        task, self._task = self._task, None
        renewer, self._renewer = self._renewer, None
        for one in (task, renewer):
            if one is not None:
                one.cancel()
                await asyncio.gather(one, return_exceptions=True)
        for running in list(self._running):
            running.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        settler, self._settler = self._settler, None
        if settler is not None:
            settler.cancel()
            await asyncio.gather(settler, return_exceptions=True)

    def wake(self) -> None:
        """Something new may be due (called after every state change)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                again, nxt = await self._claim_and_start()
                if again:
                    continue  # more may be due already
            except Exception as exc:  # the store is down: try again shortly, keep the loop alive
                log.warning("event=effects_claim_failed error=%s", type(exc).__name__)
                again, nxt = False, self.clock.now() + timedelta(seconds=1)
            wait = 30.0 if nxt is None else max(0.0, (nxt - self.clock.now()).total_seconds())
            if wait <= 0:
                # The short batch took everything claimable: what is due now waits behind an effect in its lane
                # (its end wakes this loop, or another process picks the lane up), so claiming again at once
                # would only spin. Look again soon in case that effect's worker died (its lease then ends).
                wait = _RECHECK_BLOCKED
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(wait, 30.0))

    async def _claim_and_start(self) -> tuple[bool, datetime | None]:
        """Claim and start what is due; True: claim again at once (the batch was full, or the loop must wait
        for expiries or a slot). A short batch took everything claimable now: what is left is not due yet,
        leased, or behind an effect in its lane, and the moment the claim returns (`next_effect_at`, read with
        it) or that effect's end wakes the loop."""
        if self.service.ending:
            # Expiries first: chat work waits while the store is ending grants.
            await self.service.expiries_done(timeout=1.0)
            return True, None
        free = self._free_slots()
        if free <= 0:
            await self._wait_for_a_slot()
            return True, None
        now = self.clock.now()
        limit = min(free, self.batch)
        # One store call: the leases, each effect's request and item rows, and when to look again.
        self._claiming = True
        try:
            batch = await self.store.claim_effects_with_rows(now, self.owner, now + self.policy.lease,
                                                             platforms=set(self.notifiers), limit=limit)
        finally:
            self._claiming = False
        for claimed in batch.claimed:
            self._spawn(claimed)
        return len(batch.claimed) >= limit, batch.next_at

    def _free_slots(self) -> int:
        return self._slots._value

    async def _wait_for_a_slot(self) -> None:
        if self._running:
            await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)

    def _spawn(self, claimed: Claimed, *, handed: bool = False) -> None:
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._guarded(claimed, handed=handed),
                                                      name=f"jitpass-effect-{claimed.effect.kind}")
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[bool]) -> None:
        self._running.discard(task)
        if not self._running:
            self._idle.set()
        if task.cancelled() or task.exception() is not None or task.result():
            self.wake()

    async def _guarded(self, claimed: Claimed, *, handed: bool = False) -> bool:
        """Run one claimed effect; whether its end must wake a claim. A claimed effect's always does (what
        waited behind it in its lane may run now; a retry is due at a time the last claim did not know). A
        handed-over one's (`adopt`) only if it is to be retried or its request changed meanwhile: a new
        request's effects are the only ones in their lanes until a later change, which wakes a claim itself
        (and, made while they run, through `_touched`)."""
        effect = claimed.effect
        status: EffectStatus | None = None
        try:
            if self.service.ending:  # handed over while grants are being ended: access ends first
                await self.service.expiries_done(timeout=1.0)
            async with self._slots:
                try:
                    status = await self.run_one(effect, rows=claimed)
                except Exception as exc:  # the store failed while recording: the lease runs out, it is retried
                    # Not a JitpassError (those are recorded as failures): a store outage, or a bug.
                    log.error("event=effect_not_recorded effect=%s kind=%s request_id=%s error=%s", effect.id,
                              effect.kind, effect.request_id, type(exc).__name__,
                              exc_info=not isinstance(exc, JitpassError))
        finally:
            touched = False
            if handed:
                left = self._handed.pop(effect.request_id, 1) - 1
                if left > 0:
                    self._handed[effect.request_id] = left
                    touched = effect.request_id in self._touched
                else:
                    touched = effect.request_id in self._touched
                    self._touched.discard(effect.request_id)
        return not handed or touched or status not in (EffectStatus.DONE, EffectStatus.DROPPED, EffectStatus.FAILED)

    async def run_due(self, *, rounds: int = 50) -> int:
        """Run everything due now (and what that makes due), in this task; for tests and the CLI."""
        ran = 0
        for _ in range(rounds):
            now = self.clock.now()
            batch = await self.store.claim_effects_with_rows(now, self.owner, now + self.policy.lease,
                                                             platforms=set(self.notifiers), limit=self.batch)
            if not batch.claimed:
                break
            await asyncio.gather(*(self._guarded(c) for c in batch.claimed))
            ran += len(batch.claimed)
        return ran

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until the loop has nothing due and nothing running (tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await asyncio.wait_for(self._idle.wait(), max(0.01, deadline - loop.time()))
            nxt = await self.store.next_effect_at(set(self.notifiers))
            if self._idle.is_set() and not self._claiming and (nxt is None or nxt > self.clock.now()):
                return
            if loop.time() > deadline:
                raise TimeoutError("effects still due")
            self.wake()
            await asyncio.sleep(0.01)

    # -- one effect --------------------------------------------------------------------------

    async def run_one(self, effect: Effect, *, rows: Claimed | None = None) -> EffectStatus | None:
        """Carry out one claimed effect and record how it went (`rows`: its request and item as read with the
        claim; without them they are read here); the status recorded (None: the lease was lost)."""
        notifier = self.notifiers.get(effect.platform)
        item: Item | None = None
        if rows is not None:
            request, item = rows.request, rows.item
        else:
            request = await self.store.get_request(effect.request_id)
            if request is not None:
                item = await self.service.item_of(request)
        if notifier is None or request is None:
            dropped = EffectOutcome(EffectStatus.DROPPED, error="no such request or platform")
            return EffectStatus.DROPPED if await self._settle(effect, dropped) else None
        try:
            async with asyncio.timeout(self.policy.deadline):
                # An item deleted since the request: its card still renders from the request's own fields.
                outcome = await self._attempt(effect, notifier, request,
                                              item or Item(name=request.item, vault=request.vault))
        except TimeoutError:
            outcome = self._failure(effect, request, Failed("timeout"))
        except JitpassError as exc:  # e.g. the audit event before a delivery could not be written
            outcome = self._failure(effect, request, Failed(type(exc).__name__))
        settled = await self._settle(effect, outcome)
        if effect.kind is EffectKind.DELIVER and outcome.revealed:
            await self.service.after_late_delivery(request.id)
        return outcome.status if settled else None

    async def _settle(self, effect: Effect, outcome: EffectOutcome) -> bool:
        """Record the outcome (with others finishing together); False: the lease was lost meanwhile."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._to_settle.append((effect, outcome, done))
        if self._settler is None or self._settler.done():
            self._settler = asyncio.get_running_loop().create_task(self._settle_queued(), name="jitpass-settle")
        if not await done:
            log.warning("event=effect_lease_lost effect=%s kind=%s request_id=%s", effect.id, effect.kind,
                        effect.request_id)
            return False
        # A success at DEBUG: the adapter logs what it posted, the audit trail what it revealed (one INFO line
        # per effect less on the request path); a retry, drop or failure at INFO.
        log.log(logging.DEBUG if outcome.status is EffectStatus.DONE else logging.INFO,
                "event=effect_%s effect=%s kind=%s request_id=%s attempt=%d%s", outcome.status.value, effect.id,
                effect.kind, effect.request_id, effect.attempts, f" error={outcome.error}" if outcome.error else "")
        return True

    async def _settle_queued(self, batch: int = 64) -> None:
        """Record queued outcomes, many per transaction: what finishes while one batch is written goes
        in the next. A batch the store refuses is recorded one by one, so one bad row fails only itself
        (an unrecorded effect's lease runs out and it is tried again, as after a crash)."""
        await asyncio.sleep(0)  # effects finishing in this same moment join the first batch
        while self._to_settle:
            chunk, self._to_settle = self._to_settle[:batch], self._to_settle[batch:]
            if len(chunk) == 1:
                await self._settle_alone(*chunk[0])
                continue
            try:
                kept = await self.store.settle_effects([(e, o) for e, o, _ in chunk], self.owner)
            except Exception:
                for one in chunk:
                    await self._settle_alone(*one)
                continue
            for (_, _, done), ok in zip(chunk, kept, strict=True):
                if not done.done():
                    done.set_result(ok)

    async def _settle_alone(self, effect: Effect, outcome: EffectOutcome, done: asyncio.Future[bool]) -> None:
        try:
            ok = await self.store.settle_effects([(effect, outcome)], self.owner)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            return
        if not done.done():
            done.set_result(ok[0])

    async def _attempt(self, effect: Effect, notifier: Notifier, request: AccessRequest,
                       item: Item) -> EffectOutcome:
        kind = effect.kind
        if kind is EffectKind.DELIVER:
            return await self._deliver(effect, notifier, request)
        if kind is EffectKind.WIPE:
            result = await self._call(notifier.secret_revoked(request, item))
            return self._wipe_outcome(effect, request, result)
        if kind is EffectKind.POST_CARD:
            result = await self._call(notifier.request_posted(request, item, attempt=effect.attempts))
        elif kind is EffectKind.UPDATE_CARD:
            result = await self._call(notifier.request_updated(request, item))
        else:
            message = str(effect.payload.get("message", ""))
            # A reply answers a command acknowledged before its outcome was known ("queued").
            told = notifier.requester_told(request, message, reply=True) if effect.payload.get("reply") else \
                notifier.requester_told(request, message)
            result = await self._call(told)
        if isinstance(result, Sent):
            return EffectOutcome(EffectStatus.DONE, refs=dict(result.refs) if result.refs else None)
        return self._failure(effect, request, result)

    async def _call(self, call: Awaitable[NotifyResult]) -> NotifyResult:
        """Await a notifier call; an exception is a failure like any other (recorded, retried)."""
        try:
            result = await call
        except TimeoutError:
            return Failed("timeout")
        except Exception as exc:  # adapters return Failed; an exception is a bug or an SDK surprise
            log.warning("event=notifier_raised error=%s", type(exc).__name__)
            return Failed(str(getattr(exc, "error", "") or type(exc).__name__))
        return result if isinstance(result, Sent | Failed) else Failed("bad_notifier_result")

    async def _deliver(self, effect: Effect, notifier: Notifier, request: AccessRequest) -> EffectOutcome:
        now = self.clock.now()
        if request.status is not Status.ACTIVE or request.ends_at is None or request.ends_at <= now:
            # Pointless now: access has ended (or never started). An earlier attempt that died mid-way may
            # have reached chat (`unknown`): its wipe follows in this lane; only a surely undelivered
            # secret is reported to the requester as not delivered.
            unknown = effect.attempts > 1 or isinstance(request.refs.get("delivery_intent"), Mapping)
            event = self._event("grant.delivery_failed", request, {
                "attempt": effect.attempts, "error": "grant_not_active", "final": True, "unknown": unknown})
            told = () if request.revealed or unknown else (
                EffectDraft(EffectKind.TELL, {"message": _failed_words(request, True)}),)
            return EffectOutcome(EffectStatus.DROPPED, error="grant_not_active", event=event, follow_ups=told)
        # Intent first: where it is going is stored before the secret leaves, so a wipe can find it.
        target = await self._call(notifier.delivery_target(request))
        if isinstance(target, Failed):
            return self._failure(effect, request, target)
        if target.refs:
            request = await self.service.save_refs(request.id, target.refs)
        try:
            reveal = await self.service.open_for_delivery(request.id, attempt=effect.attempts)
        except SecretSourceError as exc:
            # The item's source (1Password) cannot answer: nothing left; the requester hears why at once.
            # Only an outage is worth retrying; a refused token, a vault out of scope or a bad item is not.
            transient = exc.reason in {"unreachable", "server_error", "rate_limited"}
            outcome = self._failure(effect, request, Failed(f"secret_source:{exc.reason}", permanent=not transient))
            if effect.attempts == 1:
                why = EffectDraft(EffectKind.TELL, {"message": f"⚠️ {request.id} for {request.item}: {exc.message}"})
                outcome = dataclasses.replace(outcome, follow_ups=(*outcome.follow_ups, why))
            return outcome
        result = await self._call(notifier.deliver_secret(request, reveal))
        if isinstance(result, Failed):
            return self._failure(effect, request, result)
        via = ""
        if result.refs and isinstance(result.refs.get("delivery"), Mapping):
            via = str(result.refs["delivery"].get("via", ""))
        # The reveal's actor is the person it reached, as for a reveal they asked for themselves.
        event = dataclasses.replace(self._event("grant.revealed", request, {
            "password": reveal.password is not None, "code": reveal.code is not None, "via": via or "delivery",
            "attempt": effect.attempts}), actor=request.requester)
        return EffectOutcome(EffectStatus.DONE, event=event, refs=dict(result.refs or {}) or None,
                             revealed=reveal.password is not None)

    def _wipe_outcome(self, effect: Effect, request: AccessRequest, result: NotifyResult) -> EffectOutcome:
        if isinstance(result, Sent):
            event = self._event("grant.wiped", request, {"attempt": effect.attempts}) if result.done else None
            return EffectOutcome(EffectStatus.DONE, event=event, refs=dict(result.refs) if result.refs else None)
        return self._failure(effect, request, result)

    def _failure(self, effect: Effect, request: AccessRequest, failed: Failed) -> EffectOutcome:
        final = failed.permanent or effect.attempts >= self.policy.budget(effect.kind)
        retry_at: datetime | None = None
        if not final:
            retry_at = self.clock.now() + timedelta(seconds=self.policy.delay(effect.attempts, failed.retry_after))
        details: dict[str, object] = {"attempt": effect.attempts, "error": failed.error}
        details |= {"final": True} if final else {"retry_at": retry_at.isoformat() if retry_at else None}
        if failed.permanent:
            details["permanent"] = True  # the platform refused the call for good: not retried
        status = EffectStatus.FAILED if final else EffectStatus.PENDING
        event: EventDraft | None = None
        alert: EventDraft | None = None
        follow_ups: tuple[EffectDraft, ...] = ()
        if effect.kind is EffectKind.DELIVER:
            event = self._event("grant.delivery_failed", request, details)
            secret_source = failed.error.startswith("secret_source:")  # the requester was told why already
            if (effect.attempts == 2 or final) and not (secret_source and effect.attempts == 1):
                follow_ups = (EffectDraft(EffectKind.TELL, {"message": _failed_words(request, final)}),)
        elif effect.kind is EffectKind.WIPE:
            event = self._event("grant.wipe_failed", request, details)
            if final:  # the secret may still be on screen: an alert (in /healthz and reports)
                alert = self._event("alert.wipe_exhausted", request, details)
        elif final:
            event = self._event("chat.effect_failed", request, {**details, "kind": effect.kind.value})
            if effect.kind is EffectKind.POST_CARD:
                follow_ups = (EffectDraft(EffectKind.TELL, {"message": (
                    f"⚠️ {request.id} is recorded, but jitpass could not post it to the leads channel: "
                    "please tell a lead.")}),)
        log.warning("event=effect_attempt_failed effect=%s kind=%s request_id=%s attempt=%d error=%s final=%s",
                    effect.id, effect.kind, request.id, effect.attempts, failed.error, final)
        return EffectOutcome(status, error=failed.error, retry_at=retry_at, event=event, follow_ups=follow_ups,
                             refs=dict(failed.refs) if failed.refs else None, alert=alert)

    @staticmethod
    def _event(event_type: str, request: AccessRequest, details: Mapping[str, object]) -> EventDraft:
        return EventDraft(type=event_type, actor=SYSTEM, request_id=request.id, item=request.item,
                          vault=request.vault, details=dict(details))
