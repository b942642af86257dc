"""AccessService: the one place that decides who may see which credential when.

Every state change is a compare-and-set in the store together with its audit event; every
reveal writes its audit event before the secret leaves this module. What chat must show is
recorded as effects (bot.model.EffectDraft) in the same store transaction as the change; the
effects worker (bot.services.effects) carries them out through the platform's `Notifier`. No chat call
happens inline, so no chat outage can delay or undo a state change.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import difflib
import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.domain import wording
from bot.domain.audit import format_time
from bot.domain.errors import (
    FIELD_DURATION,
    FIELD_ITEM,
    FIELD_REASON,
    FIELD_START,
    ClaimTaken,
    Conflict,
    InputError,
    JitpassError,
    NotAllowed,
    NotFound,
    SecretSourceError,
    StoreError,
)
from bot.domain.model import (
    ACTIVE_STATUSES,
    CHAT_PLATFORMS,
    OPEN_STATUSES,
    SYSTEM,
    AccessRequest,
    Approval,
    CodeView,
    EffectDraft,
    EffectKind,
    EventDraft,
    Identity,
    Item,
    RequestKind,
    Reveal,
    RotationDue,
    SealedItem,
    Status,
    TransitionDraft,
    Window,
    new_request_id,
)
from bot.domain.policy import Policy, VaultPolicy
from bot.domain.request_text import RequestDraft, format_duration, parse_duration, parse_request
from bot.domain.syntax import Hint, Typed, example
from bot.domain.vault import Vault
from bot.ports import Claimed, Clock, EffectLease, Failed, Notifier, RefusalBurst, SecretRead, Store
from bot.services.cas import changing_too_quickly, retry_cas
from bot.services.rate_limits import ACTIONS, action_of, rate_key
from bot.services.rotation import note_password_read
from bot.services.secrets import BuiltinSource, SecretSources

__all__ = ["AccessService", "new_request_id"]

log = logging.getLogger("jitpass.service")

# Grants ended in one store transaction: a burst of 10,000 ends is 50 commits, not 10,000.
EXPIRY_BATCH = 200
EXAMPLE = example("", "acme-zendesk fix broken trigger for 1h")


# Requests changed by the use case running in this task, told to `on_change` once when it finishes.
_CHANGES: contextvars.ContextVar[dict[str, AccessRequest] | None] = contextvars.ContextVar("jitpass_changes",
                                                                                         default=None)


class EffectLessee(Protocol):
    """This process's effects worker (`EffectRunner`) as the service sees it."""

    def lease(self) -> EffectLease:
        """A lease for effects written now, to this worker."""
        ...

    def adopt(self, claimed: list[Claimed]) -> None:
        """Run these effects, leased to this worker as they were written (committed)."""
        ...


class _Ending:
    """How many due transitions are being applied right now, and an event set whenever none is."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def add(self, n: int) -> None:
        self.count = max(0, self.count + n)
        if self.count:
            self.idle.clear()
        else:
            self.idle.set()


class AccessService:
    """Request, approve, decline, cancel, reveal, new code, extend, revoke, expire, time out."""

    def __init__(self, store: Store, vault: Vault, policy: Policy, clock: Clock,
                 secrets: SecretSources | None = None) -> None:
        self.store = store
        self.vault = vault
        # Where each item's secret is read at the moment of use (built-in vault, 1Password Connect).
        self.secrets = secrets or SecretSources(BuiltinSource(vault))
        self.policy = policy
        self.clock = clock
        self.notifiers: dict[str, Notifier] = {}
        # Due transitions running now: the effects worker and App Home hold back meanwhile (access ends
        # first). One object, shared by `using` twins.
        self._ending = _Ending()
        # Called after every state change: the scheduler re-plans from the store.
        self.on_change: list[Callable[[AccessRequest], None]] = []
        # This process's effects worker, when it runs: a new request's effects are leased to it as they are
        # written and handed to it, instead of its claiming them in a unit of their own. Shared by `using`
        # twins (the worker runs on the background twin; requests are created on this one).
        self._lessee: list[EffectLessee | None] = [None]

    @property
    def lessee(self) -> EffectLessee | None:
        return self._lessee[0]

    @lessee.setter
    def lessee(self, worker: EffectLessee | None) -> None:
        self._lessee[0] = worker

    @property
    def ending(self) -> int:
        """How many due transitions are being applied right now (by this service or a `using` twin)."""
        return self._ending.count

    async def expiries_done(self, timeout: float = 10.0) -> None:
        """Wait (at most `timeout` seconds) until no due transition is being applied: an event, not a poll,
        so thousands of waiting App Home publishes cost nothing while a burst of grants is ended."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ending.idle.wait(), timeout)

    def using(self, store: Store) -> AccessService:
        """This service on another handle of the same store (the scheduler's and effects worker's
        connection): the same notifiers, callbacks and `ending` count (rate limits live in the store)."""
        twin = copy.copy(self)
        twin.store = store
        return twin

    def register_notifier(self, notifier: Notifier) -> None:
        self.notifiers[notifier.platform] = notifier

    # -- catalogue (metadata only) -------------------------------------------------------------

    async def list_items(self, query: str = "") -> list[Item]:
        """Items whose name, vault, url or tags contain every word of `query`."""
        words = query.lower().split()
        items = await self.store.list_items()
        return [
            i for i in items
            if all(w in " ".join((i.name, i.vault, i.url, i.username, *i.tags)).lower() for w in words)
        ]

    async def get_item(self, name: str) -> Item:
        """An item's metadata; NotFound suggests close names."""
        sealed = await self.store.get_item(name.lower())
        if sealed is None:
            names = [i.name for i in await self.store.list_items()]
            close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.5)
            close += [n for n in names if name.lower() in n and n not in close][: 3 - len(close)]
            raise NotFound(f"There is no item called '{name}'.", close)
        return sealed.item

    # -- requests ------------------------------------------------------------------------------

    async def request_access(
        self,
        requester: Identity,
        text: str | RequestDraft,
        *,
        refs: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        answer: Callable[[AccessRequest], str] | None = None,
    ) -> AccessRequest:
        """Parse and check a request, record it, and post the approval card.

        `request_id`: chosen by the caller (a queued command names it before it runs; a second create with
        it is a Conflict). `answer`: the words that answer the command, recorded as a durable TELL effect
        with the request (payload `reply`), for a caller whose acknowledgement did not carry them."""
        now = self.clock.now()
        if isinstance(text, RequestDraft):
            draft = text
        else:
            draft = parse_request(text, now=now, tz=self.policy.timezone, default_duration=timedelta(0))
        if not draft.item:
            raise InputError("Say which item you need, why, and for how long.", hint=EXAMPLE, field=FIELD_ITEM)
        item = await self.get_item(draft.item)
        vault = self.policy.for_vault(item.vault)
        limits = vault.limits
        reason = " ".join(draft.reason.split())
        if len(reason) < limits.min_reason_length:
            what = "is missing" if not reason else f"is too short ({len(reason)} characters)"
            raise InputError(
                f"The reason {what}: say why you need {item.name} in at least {limits.min_reason_length} characters.",
                hint=example("", f"{item.name} fix broken trigger for 1h"), field=FIELD_REASON,
            )
        window = draft.window if draft.window and draft.window.duration else None
        window = Window(duration=limits.default_duration, start=draft.window.start if draft.window else None) \
            if window is None else window
        self._check_duration(vault, window.duration, item.name)
        if window.start is not None and window.start + window.duration <= now:
            raise InputError("That window is already over.", hint=example("", f"{item.name} {reason} for 1h"),
                             field=FIELD_START)
        if vault.approvers.is_empty():
            raise NotAllowed(f"Nobody is set up to approve requests for vault '{item.vault}'; ask an admin.")
        # No look for an open request first: the create unit refuses a second one atomically (the store's
        # unique open claim, ClaimTaken below), which a read before it could not (two at once both pass it).
        notes = [f"{limits.approvals_required} approvals needed"] if limits.approvals_required > 1 else []
        if not self.policy.in_working_hours(window.start or now):
            notes.append("outside working hours")
        if vault.is_exclusive(item.name):
            holder = await self._holder(item.name, exclude=None)
            if holder is not None:
                until = wording.moment(holder.ends_at, self.policy.timezone)
                notes.append(f"queued: {holder.requester.label} holds it until {until}")
        request = AccessRequest(
            id=request_id or new_request_id(), item=item.name, vault=item.vault, requester=requester, reason=reason,
            window=window, status=Status.PENDING, created_at=now, updated_at=now,
            required_approvals=limits.approvals_required, timeout_at=now + limits.request_timeout,
            starts_at=window.start, notes=tuple(notes), platform=requester.platform, refs=dict(refs or {}),
            person=self.policy.person_of(requester), exclusive=vault.is_exclusive(item.name),
        )
        await self.check_rate(requester, "requests")  # after validation: only what would post a card counts
        lessee = self.lessee
        try:
            leased = await self.store.create_request(request, self._draft(
                "request.created", requester, request, reason, {
                    "duration": format_duration(window.duration),
                    "start": window.start.isoformat() if window.start else None,
                    "notes": notes,
                }), (*self._effects(request, EffectKind.POST_CARD), *self._answer_effect(request, answer)),
                lease=lessee.lease() if lessee is not None else None)
        except ClaimTaken:  # this person already has one open (a second at once, or from another account)
            await self._refuse_second_open(requester, item.name)
            raise Conflict(f"You already have an open request for {item.name} (from another chat account).",
                           hint="Cancel it there first.") from None
        log.info("event=request_created request_id=%s item=%s requester=%s", request.id, item.name, requester.key)
        if lessee is not None and leased:
            lessee.adopt([Claimed(effect, request, item) for effect in leased])
        self._changed(request)
        return request  # exactly the row just written: no read back

    async def not_started(self, requester: Identity, request_id: str, why: str) -> bool:
        """Audit (`access.refused`, details `why`) a request that was acknowledged but never created, e.g. it
        waited in a process that died. False: it was created after all. A store failure raises (retry later)."""
        if await self.store.get_request(request_id) is not None:
            return False
        await self.store.append_event(EventDraft(type="access.refused", actor=requester, request_id=request_id,
                                                 reason="not started", details={"why": why}))
        log.info("refused request_id=%s actor=%s why=%s", request_id, requester.key, why)
        return True

    async def request_extension(self, request_id: str, requester: Identity, duration: str | timedelta, *,
                                refs: Mapping[str, Any] | None = None) -> AccessRequest:
        """Ask the leads for more time on an active grant; the end moves only when approved."""
        grant = await self._get(request_id)
        if not self.policy.same_person(grant.requester, requester):
            await self._refuse(grant, requester, "extend someone else's grant")
            raise NotAllowed(f"{request_id} is not your request.")
        if grant.status is not Status.ACTIVE:
            raise Conflict(f"{request_id} is {grant.status.value}; only an active grant can be extended.")
        try:
            extra = duration if isinstance(duration, timedelta) else parse_duration(duration)
        except InputError as exc:
            raise InputError(exc.message, hint=example("extend", f"{request_id} 30m")) from None
        vault = self.policy.for_vault(grant.vault)
        assert grant.starts_at and grant.ends_at
        if (grant.ends_at + extra) - grant.starts_at > vault.limits.max_duration:
            raise InputError(
                f"That would make the grant {format_duration(grant.ends_at + extra - grant.starts_at)} long; "
                f"vault '{grant.vault}' allows at most {format_duration(vault.limits.max_duration)}."
            )
        pending = await self.store.find_requests(parent_id=grant.id, statuses={Status.PENDING})
        if pending:
            raise Conflict(f"Extension {pending[0].id} for {request_id} is already waiting for a lead.")
        await self.check_rate(requester, "requests", request=grant)
        now = self.clock.now()
        request = AccessRequest(
            id=new_request_id(), item=grant.item, vault=grant.vault, requester=requester,
            reason=f"extend {grant.id} by {format_duration(extra)}: {grant.reason}",
            window=Window(duration=extra), status=Status.PENDING, created_at=now, updated_at=now,
            required_approvals=vault.limits.approvals_required, timeout_at=now + vault.limits.request_timeout,
            kind=RequestKind.EXTENSION, parent_id=grant.id, platform=requester.platform, refs=dict(refs or {}),
            notes=(f"extension of {grant.id}, now ending {wording.moment(grant.ends_at, self.policy.timezone)}",),
        )
        await self.store.create_request(request, self._draft("request.created", requester, request, request.reason,
                                                             {"extends": grant.id, "by": format_duration(extra)}),
                                        self._effects(request, EffectKind.POST_CARD))
        self._changed(request)
        return await self._get(request.id)

    async def approve(self, request_id: str, approver: Identity) -> AccessRequest:
        """Add an approval; with enough of them the request is approved (and activated when due)."""
        with self._one_change():
            return await self._approve(request_id, approver)

    async def _approve(self, request_id: str, approver: Identity) -> AccessRequest:
        # Retried from a fresh read when another approver's vote bumped the version first.
        async def attempt() -> AccessRequest | None:
            request = await self._get(request_id)
            await self._authorise_decider(request, approver, "approve")
            if request.status is not Status.PENDING:
                raise Conflict(wording.already_decided(request))
            if any(self.policy.same_person(a.approver, approver) for a in request.approvals):
                raise Conflict(f"You already approved {request.id}; it needs "
                               f"{request.required_approvals - len(request.approvals)} more approval(s).")
            now = self.clock.now()
            approvals = (*request.approvals, Approval(approver, now))
            done = len(approvals) >= request.required_approvals
            changes: dict[str, Any] = {"approvals": approvals}
            if done:
                changes |= {"status": Status.APPROVED, "decided_by": approver, "decided_at": now, "timeout_at": None}
                if request.starts_at is None and not request.is_extension:
                    # An extension never starts: approving it moves its grant's end (`_apply_extension`).
                    changes["starts_at"] = now
            event = self._draft("request.approved" if done else "request.approval_added", approver, request, "",
                                {"approvals": len(approvals), "required": request.required_approvals})
            effects = self._effects(request, EffectKind.UPDATE_CARD)
            if done and not request.is_extension:
                effects += self._tell_effect(request, wording.told_approved(request, approver))
            updated = await self.store.transition(request.id, {Status.PENDING}, changes, event,
                                                  expected_version=request.version, effects=effects)
            if updated is None:
                return None
            log.info("approval request_id=%s approver=%s done=%s", updated.id, approver.key, done)
            self._changed(updated)
            if not done:
                return updated
            if updated.is_extension:
                return await self._apply_extension(updated)
            if updated.starts_at is not None and updated.starts_at <= now:
                return await self.activate(updated.id, known=updated)
            return updated
        return await retry_cas(attempt, exhausted=lambda: changing_too_quickly(request_id))

    async def decline(self, request_id: str, approver: Identity, reason: str = "") -> AccessRequest:
        """Decline a pending request, with an optional reason told to the requester."""
        request = await self._get(request_id)
        await self._authorise_decider(request, approver, "decline")
        reason = " ".join(reason.split())[:500]
        updated = await self.store.transition(
            request.id, {Status.PENDING},
            {"status": Status.DECLINED, "decided_by": approver, "decided_at": self.clock.now(),
             "decline_reason": reason, "timeout_at": None},
            self._draft("request.declined", approver, request, reason),
            effects=self._effects(request, EffectKind.UPDATE_CARD) + self._tell_effect(
                request, wording.told_declined(request, approver, reason)),
        )
        if updated is None:
            raise Conflict(wording.already_decided(await self._get(request_id)))
        self._changed(updated)
        return updated

    async def cancel(self, request_id: str, requester: Identity) -> AccessRequest:
        """The requester withdraws a request that is not active yet."""
        request = await self._get(request_id)
        if not self.policy.same_person(request.requester, requester):
            await self._refuse(request, requester, "cancel someone else's request")
            raise NotAllowed(f"{request_id} is not your request.")
        updated = await self.store.transition(
            request.id, {Status.PENDING, Status.APPROVED},
            {"status": Status.CANCELLED, "timeout_at": None, "ended_at": self.clock.now()},
            self._draft("request.cancelled", requester, request),
            effects=self._effects(request, EffectKind.UPDATE_CARD),
        )
        if updated is None:
            active = request.status is Status.ACTIVE
            hint = Hint("Use `{}` to end an active grant.", (Typed("done", request_id),)) if active else Hint("")
            raise Conflict(f"{request_id} is {request.status.value} and cannot be cancelled.", hint=hint)
        self._changed(updated)
        return updated

    async def done(self, request_id: str, holder: Identity) -> AccessRequest:
        """The holder ends their own grant now (or withdraws it if it is not active yet)."""
        request = await self._get(request_id)
        if request.status in {Status.PENDING, Status.APPROVED}:
            return await self.cancel(request_id, holder)
        if not self.policy.same_person(request.requester, holder):
            await self._refuse(request, holder, "end someone else's grant")
            raise NotAllowed(f"{request_id} is not your grant.")
        return await self._end_grant(request, Status.REVOKED, holder, "ended by the holder")

    async def revoke(self, request_id: str, actor: Identity, reason: str = "") -> AccessRequest:
        """An approver or admin ends someone's grant early."""
        request = await self._get(request_id)
        if not (self.policy.is_admin(actor) or self.policy.is_approver(request.vault, actor)
                or self.policy.same_person(request.requester, actor)):
            await self._refuse(request, actor, "revoke")
            raise NotAllowed(f"You may not revoke grants in vault '{request.vault}'.")
        return await self._end_grant(request, Status.REVOKED, actor, reason or f"revoked by {actor.label}")

    # -- the secret ----------------------------------------------------------------------------

    async def reveal(self, request_id: str, holder: Identity) -> Reveal:
        """Audit, then return the password and current TOTP code to the grant's holder."""
        return await self._reveal(request_id, holder, "grant.revealed")

    async def new_code(self, request_id: str, holder: Identity) -> Reveal:
        """Audit, then return the then-current TOTP code (with the password already revealed)."""
        await self.check_rate(holder, "codes", request=await self._get(request_id))
        return await self._reveal(request_id, holder, "grant.code_shown")

    async def live_code(self, request_id: str, holder: Identity, *, via: str, audit: bool) -> CodeView | None:
        """The current TOTP code alone (never the password), for a view that refreshes it every period.

        `audit` is True when a person starts looking (a view opens); the periodic refreshes of that
        view are not separate code views. None when the item has no TOTP seed."""
        if audit:  # a view opening counts; its periodic refreshes do not
            await self.check_rate(holder, "codes", request=await self._get(request_id))
        request, _, read = await self._open_grant(request_id, holder)
        code = read.code
        if code is None:
            return None
        if audit:  # fail closed: recorded before the code leaves
            await self.store.append_event(self._draft("grant.code_shown", holder, request, "", {
                "password": False, "code": True, "via": via}))
        return code

    async def _open_grant(
        self, request_id: str, holder: Identity
    ) -> tuple[AccessRequest, SealedItem, SecretRead]:
        """The holder's active grant and its item's secrets, read from the item's source now; refusals and
        source failures are audited (and nothing is shown)."""
        request = await self._get(request_id)
        now = self.clock.now()
        if not self.policy.same_person(request.requester, holder):
            await self._refuse(request, holder, "see someone else's secret")
            raise NotAllowed(f"{request_id} is not your grant.")
        if request.status is not Status.ACTIVE or (request.ends_at is not None and request.ends_at <= now):
            # The store may not have recorded the end yet (the scheduler is late, the store cannot write):
            # the clock decides, and the press is refused and audited like any other.
            state = "over" if request.status is Status.ACTIVE else self._state_words(request)
            await self._refuse(request, holder, f"see the secret of a grant that is {state}")
            raise Conflict(f"Access through {request_id} is {state}: nothing to show.")
        sealed = await self.store.get_item(request.item)
        if sealed is None:
            raise NotFound(f"The item '{request.item}' was removed from the catalogue.")
        try:
            read = await self.secrets.read(sealed, now)
        except SecretSourceError as exc:
            log.warning("secret source failed request_id=%s source=%s reason=%s detail=%s", request.id,
                        exc.source, exc.reason, exc.detail)
            await self.store.append_event(self._draft("grant.reveal_failed", holder, request, exc.reason, {
                "source": exc.source}))
            raise
        if sealed.item.external is not None:
            sealed = await note_password_read(self.store, sealed, read, now)
        return request, sealed, read

    async def _reveal(self, request_id: str, holder: Identity, event_type: str) -> Reveal:
        request, sealed, read = await self._open_grant(request_id, holder)
        password, code = read.password, read.code
        # Fail closed: the audit event is written first; if that raises, nothing is revealed.
        await self.store.append_event(self._draft(event_type, holder, request, "", {
            "password": password is not None, "code": code is not None,
        }))
        if password is not None and not request.revealed:
            await self.store.transition(request.id, ACTIVE_STATUSES, {"revealed": True}, None)
        assert request.ends_at is not None
        return Reveal(request_id=request.id, item=sealed.item, password=password, code=code, ends_at=request.ends_at)

    # -- what the scheduler drives ---------------------------------------------------------------

    async def activate(self, request_id: str, *, known: AccessRequest | None = None) -> AccessRequest:
        """Start an approved grant (unless its item is exclusively held) and deliver the secret.

        `known`: the request as just written by this process (no read back; the start is a CAS anyway)."""
        request = known if known is not None and known.id == request_id else await self._get(request_id)
        if request.status is not Status.APPROVED:
            return request
        if request.is_extension:  # moves its grant's end when approved; never a grant of its own
            log.warning("refused to activate an extension request_id=%s parent=%s", request.id, request.parent_id)
            return request
        now = self.clock.now()
        exclusive = self.policy.for_vault(request.vault).is_exclusive(request.item)
        if exclusive:
            holder = await self._holder(request.item, exclude=request.id)
            if holder is not None and holder.ends_at is not None:
                return await self._queue_behind(request, holder)
        duration = request.window.duration
        try:
            # `exclusive` as the policy says now: the store then lets one grant of the item be active.
            updated = await self.store.transition(
                request.id, {Status.APPROVED},
                {"status": Status.ACTIVE, "starts_at": now, "ends_at": now + duration, "exclusive": exclusive},
                self._draft("grant.activated", SYSTEM, request, "", {"ends_at": (now + duration).isoformat()}),
                effects=self._effects(request, EffectKind.UPDATE_CARD, EffectKind.DELIVER),
            )
        except ClaimTaken:  # another grant of the item started since the check above (another replica)
            holder = await self._holder(request.item, exclude=request.id)
            if holder is not None and holder.ends_at is not None:
                return await self._queue_behind(request, holder)
            return await self._get(request_id)  # that holder ended meanwhile: the next tick starts this one
        if updated is None:
            return await self._get(request_id)
        self._changed(updated)
        return updated

    async def _queue_behind(self, request: AccessRequest, holder: AccessRequest) -> AccessRequest:
        """An exclusive item is in use: plan this grant to start when the holder's ends."""
        queued = await self.store.transition(
            request.id, {Status.APPROVED}, {"starts_at": holder.ends_at}, None,
            effects=self._effects(request, EffectKind.UPDATE_CARD) + self._tell_effect(
                request, wording.told_queued(request, holder, self.policy.timezone)))
        if queued is not None:
            self._changed(queued)
        return queued or request

    async def expire(self, request_id: str, *, known: AccessRequest | None = None) -> AccessRequest:
        """End a grant whose window is over (`known`: the request as just read; the end is a CAS anyway)."""
        request = known if known is not None and known.id == request_id else await self._get(request_id)
        if request.status is not Status.ACTIVE or request.ends_at is None or request.ends_at > self.clock.now():
            return request
        return await self._end_grant(request, Status.EXPIRED, SYSTEM, "window ended")

    async def time_out(self, request_id: str) -> AccessRequest:
        """Close a pending request nobody decided in time."""
        request = await self._get(request_id)
        now = self.clock.now()
        if request.status is not Status.PENDING or request.timeout_at is None or request.timeout_at > now:
            return request
        updated = await self.store.transition(
            request.id, {Status.PENDING}, {"status": Status.TIMED_OUT, "ended_at": now, "timeout_at": None},
            self._draft("request.timed_out", SYSTEM, request, "no decision in time"),
            effects=self._effects(request, EffectKind.UPDATE_CARD) + self._tell_effect(
                request, wording.told_timed_out(request)),
        )
        if updated is None:
            return await self._get(request_id)
        self._changed(updated)
        return updated

    async def run_due(self, *, concurrency: int = 8, now: datetime | None = None) -> int:
        """Apply every timeout, activation and expiry that is due now (`now`: the moment to apply up to,
        default the clock's); returns how many ran. Expiries first, `EXPIRY_BATCH` grants per store
        transaction; then timeouts and activations, `concurrency` at a time. No chat call happens here
        (effects run later), so one slow chat API cannot delay another grant's end."""
        due = await self.store.due_requests(now or self.clock.now())
        expiring = [r for r in due if r.status is Status.ACTIVE]
        others = [r for r in due if r.status is not Status.ACTIVE]
        left = [len(due)]  # still counted in `ending`; whatever a cancellation leaves is taken back below

        def finished(n: int) -> None:
            left[0] -= n
            self._ending.add(-n)

        self._ending.add(len(due))
        ran = 0
        try:
            for start in range(0, len(expiring), EXPIRY_BATCH):
                chunk = expiring[start:start + EXPIRY_BATCH]
                try:
                    ran += len(await self.expire_many(chunk))
                except JitpassError as exc:  # the store refused the batch: the next tick tries again
                    log.warning("due expiries failed count=%d first=%s error=%s", len(chunk), chunk[0].id,
                                exc.message)
                finally:
                    finished(len(chunk))
            slots = asyncio.Semaphore(concurrency)

            async def one(request: AccessRequest) -> int:
                async with slots:
                    try:
                        if request.status is Status.PENDING:
                            await self.time_out(request.id)
                        elif request.status is Status.APPROVED:
                            await self.activate(request.id)
                        return 1
                    except JitpassError as exc:
                        log.warning("due work failed request_id=%s error=%s", request.id, exc.message)
                        return 0
                    finally:
                        finished(1)

            ran += sum(await asyncio.gather(*(one(r) for r in others)))
        finally:
            self._ending.add(-left[0])
        return ran

    async def expire_many(self, requests: Collection[AccessRequest]) -> list[AccessRequest]:
        """End every grant here whose window is over, in one store transaction; returns those ended now."""
        now = self.clock.now()
        live = [r for r in requests if r.status is Status.ACTIVE and r.ends_at is not None and r.ends_at <= now]
        drafts = [self._end_draft(r, Status.EXPIRED, SYSTEM, "window ended", "", now) for r in live]
        results = await self.store.transition_many(drafts)
        ended = [(before, after) for before, after in zip(live, results, strict=True) if after is not None]
        for _, after in ended:
            self._changed(after)
        await self._after_ends(ended, now)
        return [after for _, after in ended]

    # -- queries -------------------------------------------------------------------------------

    async def get_request(self, request_id: str) -> AccessRequest:
        return await self._get(request_id)

    async def my_requests(self, requester: Identity, *, open_only: bool = True, limit: int = 20) -> list[AccessRequest]:
        """The requester's requests, newest first."""
        statuses: Collection[Status] | None = OPEN_STATUSES if open_only else None
        return await self.store.find_requests(requester=requester, statuses=statuses, limit=limit)

    async def item_of(self, request: AccessRequest) -> Item:
        return await self._item_meta(request)

    async def save_refs(self, request_id: str, update: Mapping[str, Any]) -> AccessRequest:
        """Merge adapter refs into the request (compare-and-set on refs_version, retried)."""
        async def attempt() -> AccessRequest | None:
            current = await self._get(request_id)
            merged = {**current.refs, **update}
            if merged == current.refs:
                return current
            if await self.store.save_refs(request_id, merged, current.refs_version):
                return replace(current, refs=merged, refs_version=current.refs_version + 1)
            return None
        return await retry_cas(attempt, attempts=10, exhausted=lambda: Conflict(
            f"could not save message references for {request_id}"))

    async def end_item_access(self, item: str, reason: str) -> list[str]:
        """End every open request for an item leaving the catalogue: active grants are revoked, pending and
        approved requests cancelled; each requester is told `reason`. Returns the request ids ended."""
        ended: list[str] = []
        for request in await self.store.find_requests(item=item, statuses=OPEN_STATUSES):
            if request.status is Status.ACTIVE:
                await self._end_grant(request, Status.REVOKED, SYSTEM, reason,
                                      told=f"🔒 {request.item} {reason} ({request.id}).")
                ended.append(request.id)
                continue
            updated = await self.store.transition(
                request.id, {request.status}, {"status": Status.CANCELLED, "ended_at": self.clock.now(),
                                               "timeout_at": None},
                self._draft("request.cancelled", SYSTEM, request, reason),
                effects=self._effects(request, EffectKind.UPDATE_CARD) + self._tell_effect(
                    request, f"🚫 {request.id} for {request.item} was cancelled: {request.item} {reason}."))
            if updated is None:
                continue
            self._changed(updated)
            ended.append(request.id)
        return ended

    async def tell_leads(self, vault: str, message: str) -> None:
        """A notice for the vault's leads on every platform whose notifier can post one (`leads_told`)."""
        for notifier in self.notifiers.values():
            try:
                result = await notifier.leads_told(vault, message)
            except Exception as exc:  # a bug in a notifier; its result is the contract
                result = Failed(type(exc).__name__)
            if isinstance(result, Failed):
                log.error("leads notice failed vault=%s platform=%s error=%s", vault, notifier.platform,
                          result.error)

    async def email_of(self, who: Identity) -> str | None:
        """The person's e-mail as their chat platform knows it (Slack profile), or None when it cannot tell."""
        lookup = getattr(self.notifiers.get(who.platform), "email_of", None)
        if lookup is None:
            return None
        try:
            email = await lookup(who.user_id)
        except Exception as exc:
            log.warning("e-mail lookup failed platform=%s error=%s", who.platform, type(exc).__name__)
            return None
        return email if isinstance(email, str) else None

    async def check_rate(self, actor: Identity, action: str, *, request: AccessRequest | None = None) -> None:
        """Count one `action` ("requests", "codes", "reports") by the actor's person; NotAllowed over the limit.

        Counted by the store, so all replicas share the budget. The first refusal of a burst (the store
        numbers them) is audited as `access.refused`; the rest of it only logged."""
        limit = self.policy.rate_limits.of(action)
        now = self.clock.now()
        taken = await self.store.take_rate_token(rate_key(action, self.policy.person_of(actor)), limit.count,
                                                 limit.per, now, actor)
        if taken.granted:
            if taken.ended is not None:  # this attempt ended a burst of refusals: its volume, once
                await self._summarise_burst(taken.ended)
            return
        retry_at = taken.retry_at or now + limit.per
        wait = max(int((retry_at - now).total_seconds() // 60), 1)
        reason = f"rate limit: {action} ({limit})"
        if taken.refused == 1:
            try:
                await self.store.append_event(EventDraft(
                    "access.refused", actor, request.id if request else None, request.item if request else None,
                    request.vault if request else None, reason, {"limit": str(limit)}))
            except StoreError as exc:
                log.error("refusal not audited actor=%s what=%s error=%s", actor.key, reason, exc.message)
        log.warning("event=rate_limited actor=%s action=%s limit=%r", actor.key, action, str(limit))
        raise NotAllowed(f"Too many {action} ({limit} allowed); try again in {wait} min.")

    async def summarise_refusal_bursts(self) -> int:
        """One `access.refused_burst` per ended burst of rate-limit refusals beyond its first (audited at once):
        how many were refused, from when to when. Run on every scheduler tick; the store hands each ended
        burst to one replica only, and deletes the windows that count nothing any more."""
        written = 0
        for burst in await self.store.end_rate_bursts(self.clock.now()):
            written += await self._summarise_burst(burst)
        return written

    async def _summarise_burst(self, burst: RefusalBurst) -> int:
        """Audit one ended burst (1), or nothing when its one refusal is already in the trail (0)."""
        if burst.refused < 2:
            return 0
        action = action_of(burst.key)
        limit = str(self.policy.rate_limits.of(action)) if action in ACTIONS else "?"
        draft = EventDraft(
            "access.refused_burst", burst.actor, None, None, None, f"rate limit: {action} ({limit})",
            {"action": action, "limit": limit, "refused": burst.refused,
             "not_audited_one_by_one": burst.refused - 1, "first_at": format_time(burst.first_at),
             "last_at": format_time(burst.last_at)})
        try:
            await self.store.append_event(draft)
        except StoreError as exc:
            log.error("refusal burst not audited actor=%s action=%s refused=%d error=%s", burst.actor.key,
                      action, burst.refused, exc.message)
            return 0
        return 1

    async def record_refusal(self, actor: Identity, what: str, *, request_id: str | None = None,
                             vault: str | None = None) -> None:
        """Audit an attempt that was refused (non-admin report request, foreign button press, ...)."""
        await self.store.append_event(EventDraft("access.refused", actor, request_id, None, vault, what))

    # -- internals -----------------------------------------------------------------------------

    async def _end_grant(self, request: AccessRequest, to: Status, actor: Identity, reason: str, *,
                         told: str = "") -> AccessRequest:
        now = self.clock.now()
        draft = self._end_draft(request, to, actor, reason, told, now)
        updated = await self.store.transition(draft.request_id, draft.from_statuses, draft.changes, draft.event,
                                              effects=draft.effects)
        if updated is None:
            current = await self._get(request.id)
            if current.status in {Status.EXPIRED, Status.REVOKED}:
                return current
            raise Conflict(f"{request.id} is {current.status.value}; there is no active grant to end.")
        self._changed(updated)
        await self._after_ends([(request, updated)], now)
        return updated

    def _end_draft(self, request: AccessRequest, to: Status, actor: Identity, reason: str, told: str,
                   now: datetime) -> TransitionDraft:
        """The end of an active grant: status, its audit event, and the wipe, card update and message."""
        event_type = "grant.expired" if to is Status.EXPIRED else "grant.revoked"
        details: dict[str, Any] = {"revealed": request.revealed}
        ended_at = now
        if to is Status.EXPIRED and request.ends_at is not None:
            # Access ended at the window end (reveals check ends_at), however late this runs.
            ended_at = min(now, request.ends_at)
            details |= {"ended_at": ended_at.isoformat(), "late_seconds": round((now - ended_at).total_seconds(), 3)}
        return TransitionDraft(
            request.id, frozenset({Status.ACTIVE}),
            {"status": to, "ended_at": ended_at, "ended_by": None if actor == SYSTEM else actor},
            self._draft(event_type, actor, request, reason, details),
            self._effects(request, EffectKind.WIPE, EffectKind.UPDATE_CARD) + self._tell_effect(
                request, told or wording.told_ended(request, to)))

    async def _after_ends(self, ended: Collection[tuple[AccessRequest, AccessRequest]], now: datetime) -> None:
        """What follows ended grants: passwords seen are due for rotation, their extensions close, a grant
        queued behind an exclusive one starts. One store read per batch where nothing follows."""
        if not ended:
            return
        seen: dict[str, list[AccessRequest]] = {}
        for _, after in ended:
            if after.revealed:
                seen.setdefault(after.item, []).append(after)
        for grants in seen.values():
            await self._mark_rotation_due(grants, now)
        await self._close_extensions([after for _, after in ended], now)
        for before, _ in ended:
            await self._start_queued(before)

    async def _start_queued(self, ended: AccessRequest) -> None:
        """A grant queued behind this holder (planned to start at its end) may start now."""
        if ended.ends_at is None or not self.policy.for_vault(ended.vault).is_exclusive(ended.item):
            return
        queued = await self.store.find_requests(item=ended.item, statuses={Status.APPROVED}, kind=RequestKind.ACCESS)
        for request in sorted(queued, key=lambda r: r.created_at):
            if request.starts_at == ended.ends_at:
                await self.store.transition(request.id, {Status.APPROVED}, {"starts_at": self.clock.now()}, None)
                await self.activate(request.id)
                return

    async def _close_extensions(self, grants: Collection[AccessRequest], now: datetime) -> None:
        by_id = {g.id: g for g in grants}
        # One indexed read for the whole batch (parent_id), however many grants are open.
        for ext in await self.store.find_requests(parent_ids=set(by_id), statuses=OPEN_STATUSES):
            grant = by_id[ext.parent_id or ""]
            to = Status.CANCELLED if ext.status is Status.PENDING else grant.status
            event = self._draft("request.cancelled", SYSTEM, ext, "the grant it extends has ended") \
                if to is Status.CANCELLED else None
            await self.store.transition(ext.id, {ext.status}, {"status": to, "ended_at": now, "timeout_at": None},
                                        event, effects=self._effects(ext, EffectKind.UPDATE_CARD))

    async def _apply_extension(self, extension: AccessRequest) -> AccessRequest:
        parent_id = extension.parent_id or ""

        async def attempt() -> AccessRequest | None:
            grant = await self._get(parent_id)
            if grant.status is not Status.ACTIVE or grant.ends_at is None:
                await self.store.transition(
                    extension.id, {Status.APPROVED}, {"status": Status.CANCELLED, "ended_at": self.clock.now()},
                    self._draft("request.cancelled", SYSTEM, extension, "the grant had already ended"),
                    effects=self._effects(extension, EffectKind.UPDATE_CARD))
                raise Conflict(f"{parent_id} had already ended; the extension was not applied.")
            new_end = grant.ends_at + extension.window.duration
            updated = await self.store.transition(
                grant.id, {Status.ACTIVE}, {"ends_at": new_end},
                self._draft("grant.extended", extension.decided_by, grant, extension.reason,
                            {"extension": extension.id, "by": format_duration(extension.window.duration),
                             "ends_at": new_end.isoformat()}),
                expected_version=grant.version,
                # The delivered message is refreshed with the new end (and the current code).
                effects=self._effects(grant, EffectKind.UPDATE_CARD, EffectKind.DELIVER) + self._tell_effect(
                    grant, wording.told_extended(grant, new_end, self.policy.timezone)),
            )
            if updated is None:
                return None
            # No start of its own: an approved extension with a start would be due for activation.
            await self.store.transition(extension.id, {Status.APPROVED},
                                        {"ends_at": new_end}, None,
                                        effects=self._effects(extension, EffectKind.UPDATE_CARD))
            self._changed(updated)
            return await self._get(extension.id)
        return await retry_cas(attempt, exhausted=lambda: changing_too_quickly(parent_id))

    async def open_for_delivery(self, request_id: str, *, attempt: int) -> Reveal:
        """The secret for the effects worker to deliver; `grant.delivery_started` is written first (fail
        closed). It is not a reveal: `grant.revealed` follows only once the platform took it."""
        request = await self._get(request_id)
        _, sealed, read = await self._open_grant(request_id, request.requester)
        password, code = read.password, read.code
        await self.store.append_event(self._draft("grant.delivery_started", SYSTEM, request, "", {
            "password": password is not None, "code": code is not None, "attempt": attempt}))
        assert request.ends_at is not None
        return Reveal(request_id=request.id, item=sealed.item, password=password, code=code, ends_at=request.ends_at)

    async def after_late_delivery(self, request_id: str) -> None:
        """A delivery recorded after its grant had ended still makes the password due for rotation."""
        request = await self._get(request_id)
        if request.revealed and request.status in {Status.EXPIRED, Status.REVOKED}:
            sealed = await self.store.get_item(request.item)
            due = sealed.item.rotation_due if sealed else None
            if due is None or request.id not in due.request_ids:
                await self._mark_rotation_due([request], request.ended_at or self.clock.now())

    async def _mark_rotation_due(self, grants: Collection[AccessRequest], now: datetime) -> None:
        """The item these grants (all of one item) revealed is due for rotation; one read and one write."""
        first = next(iter(grants))
        sealed = await self.store.get_item(first.item)
        if sealed is None:
            return
        due = sealed.item.rotation_due
        seen_by = tuple(dict.fromkeys([*(due.seen_by if due else ()), *(g.requester for g in grants)]))
        request_ids = tuple(dict.fromkeys([*(due.request_ids if due else ()), *(g.id for g in grants)]))
        item = replace(sealed.item, rotation_due=RotationDue(since=due.since if due else now, seen_by=seen_by,
                                                             request_ids=request_ids))
        await self.store.replace_item(replace(sealed, item=item), None)

    async def _authorise_decider(self, request: AccessRequest, who: Identity, verb: str) -> None:
        # The person recorded when the request was made counts too: the requester's e-mail then may have
        # made them one person with an account whose own e-mail cannot be looked up now.
        if self.policy.same_person(request.requester, who) or request.person == self.policy.person_of(who):
            await self._refuse(request, who, f"self-{verb}")
            raise NotAllowed(f"You cannot {verb} your own request.")
        if not self.policy.is_approver(request.vault, who):
            await self._refuse(request, who, f"{verb} without being an approver")
            raise NotAllowed(f"You are not an approver for vault '{request.vault}'.")

    async def _refuse(self, request: AccessRequest, who: Identity, what: str) -> None:
        """Audit a refused attempt; the refusal stands even when the store cannot record it."""
        try:
            await self.store.append_event(self._draft("access.refused", who, request, what))
        except StoreError as exc:
            log.error("refusal not audited request_id=%s actor=%s what=%s error=%s", request.id, who.key, what,
                      exc.message)
        log.info("refused request_id=%s actor=%s what=%s", request.id, who.key, what)

    async def _refuse_second_open(self, requester: Identity, item: str) -> None:
        """The friendly answer before the store's unique claim refuses a second open request."""
        mine = await self.store.find_requests(requester=requester, item=item, statuses=OPEN_STATUSES,
                                              kind=RequestKind.ACCESS)
        if mine:
            raise Conflict(f"You already have request {mine[0].id} for {item} ({mine[0].status.value}).",
                           hint=Hint("Use `{}` first, or `{}`.",
                                     (Typed("cancel", mine[0].id), Typed("extend", f"{mine[0].id} 30m"))))

    async def _holder(self, item: str, exclude: str | None) -> AccessRequest | None:
        active = await self.store.find_requests(item=item, statuses={Status.ACTIVE}, kind=RequestKind.ACCESS)
        active = [r for r in active if r.id != exclude]
        return min(active, key=lambda r: r.ends_at or r.created_at) if active else None

    def _check_duration(self, vault: VaultPolicy, duration: timedelta, item: str) -> None:
        limits = vault.limits
        if duration > limits.max_duration:
            raise InputError(
                f"{format_duration(duration)} is longer than vault '{vault.name}' allows "
                f"(at most {format_duration(limits.max_duration)}).",
                hint=example("", f"{item} <why> for {format_duration(limits.max_duration)}"), field=FIELD_DURATION,
            )
        if duration < limits.min_duration:
            raise InputError(
                f"{format_duration(duration)} is shorter than vault '{vault.name}' allows "
                f"(at least {format_duration(limits.min_duration)}).",
                hint=example("", f"{item} <why> for {format_duration(limits.min_duration)}"), field=FIELD_DURATION,
            )

    def _state_words(self, request: AccessRequest) -> str:
        return {Status.PENDING: "still waiting for approval", Status.APPROVED: "approved but not started yet"}.get(
            request.status, request.status.value.replace("_", " "))

    def _draft(self, event_type: str, actor: Identity | None, request: AccessRequest, reason: str = "",
               details: dict[str, Any] | None = None) -> EventDraft:
        extra = dict(details or {})
        if actor is not None and self.policy.person_of(actor) != actor.key:
            extra["person"] = self.policy.person_of(actor)  # the person, next to the account in `actor`
        return EventDraft(type=event_type, actor=actor, request_id=request.id, item=request.item,
                          vault=request.vault, reason=reason, details=extra)

    async def _get(self, request_id: str) -> AccessRequest:
        request = await self.store.get_request(request_id.strip().upper())
        if request is None:
            raise NotFound(f"There is no request {request_id}.")
        return request


    async def _item_meta(self, request: AccessRequest) -> Item:
        sealed = await self.store.get_item(request.item)
        return sealed.item if sealed else Item(name=request.item, vault=request.vault)

    def _changed(self, request: AccessRequest) -> None:
        pending = _CHANGES.get()
        if pending is not None:  # inside a use case: told once, with its final state, when it ends
            pending[request.id] = request
            return
        for callback in self.on_change:
            callback(request)

    @contextmanager
    def _one_change(self) -> Iterator[None]:
        """Tell `on_change` once per request changed by the enclosed use case, when it ends.

        Approving then activating is one change for the listeners: one App Home publish, and the effects
        worker wakes once both transitions are written, so the card update the activation supersedes is
        dropped before it is ever sent (the card is edited once, with its final blocks). Per task: a
        ContextVar, so concurrent use cases never hold back each other's news."""
        if _CHANGES.get() is not None:  # nested: the outermost use case tells
            yield
            return
        pending: dict[str, AccessRequest] = {}
        token = _CHANGES.set(pending)
        try:
            yield
        finally:
            _CHANGES.reset(token)
            for request in pending.values():
                self._changed(request)

    @staticmethod
    def _effects(request: AccessRequest, *kinds: EffectKind) -> tuple[EffectDraft, ...]:
        """What chat must show after a change of `request` (none for requests made outside chat)."""
        if request.platform not in CHAT_PLATFORMS:
            return ()
        return tuple(EffectDraft(kind) for kind in kinds)

    @staticmethod
    def _answer_effect(request: AccessRequest,
                       answer: Callable[[AccessRequest], str] | None) -> tuple[EffectDraft, ...]:
        if answer is None or request.platform not in CHAT_PLATFORMS:
            return ()
        return (EffectDraft(EffectKind.TELL, {"message": answer(request), "reply": True}),)

    @staticmethod
    def _tell_effect(request: AccessRequest, message: str) -> tuple[EffectDraft, ...]:
        if request.platform not in CHAT_PLATFORMS:
            return ()
        return (EffectDraft(EffectKind.TELL, {"message": message}),)
