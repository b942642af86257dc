"""Rules both stores apply the same way: transition changes, purge bookkeeping, checkpoints."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.domain.audit import format_time, parse_time
from bot.domain.model import AccessRequest, EffectDraft, EffectKind, EffectOutcome, Event, EventDraft, Identity
from bot.domain.report_data import AccessRow
from bot.ports import Checkpoint, EffectLease

from .codec import REQUEST_FIELDS

__all__ = [
    "CHECKPOINT_KEY",
    "DUE_RULES",
    "EVENTS_PAGE",
    "PERSON_PREFIX",
    "REQUEST_EVENT_TYPES",
    "apply_changes",
    "as_recorded",
    "cas_allows",
    "checkpoint_from_json",
    "checkpoint_to_json",
    "display_label",
    "effect_docs",
    "lease_new_effects",
    "order_access_rows",
    "paged_events",
    "purge_cutoff",
    "purge_draft",
    "settled_changes",
    "supersedes",
]

CHECKPOINT_KEY = "audit_checkpoint"

# What makes an open request due: (status, the time field that is due, other fields that must match).
# An approved extension is not due by itself: it waits for its grant (the scheduler applies it).
DUE_RULES: tuple[tuple[str, str, Mapping[str, str]], ...] = (
    ("pending", "timeout_at", {}),
    ("approved", "starts_at", {"kind": "access"}),
    ("active", "ends_at", {}),
)


PERSON_PREFIX = "person:"  # the key of a person the policy's [people] links several accounts to


def display_label(display: Any, key: str | None) -> str:
    """A person's name in a report: a linked person's policy name, their display name, else the id part of
    `platform:id`."""
    if key and key.startswith(PERSON_PREFIX):
        return key[len(PERSON_PREFIX):]
    return str(display) if display else (key or "").partition(":")[2] or (key or "")


def order_access_rows(rows: list[AccessRow]) -> tuple[AccessRow, ...]:
    """Report rows busiest first: requests, reveals, granted time, then key."""
    return tuple(sorted(rows, key=lambda r: (-r.requests, -r.reveals, -r.granted_seconds, r.key)))
# Events are streamed in pages of this many so reading the trail never loads it whole.
EVENTS_PAGE = 500
# The events a report folds into its per-request figures (both stores' report modules).
REQUEST_EVENT_TYPES = (
    "request.created", "request.approval_added", "request.approved", "request.declined", "request.cancelled",
    "request.timed_out", "grant.activated", "grant.revealed", "grant.code_shown", "grant.expired", "grant.revoked",
)


async def paged_events(read_page: Callable[[int], Awaitable[Sequence[Event]]], after_seq: int) -> AsyncIterator[Event]:
    """Events after `after_seq` in sequence order, EVENTS_PAGE at a time: `read_page(last_seq)` gives the
    next page (at most EVENTS_PAGE events with seq > last_seq); a short page is the last one."""
    last = after_seq
    while True:
        page = await read_page(last)
        for event in page:
            yield event
        if len(page) < EVENTS_PAGE:
            return
        last = page[-1].seq
# The store owns these: a caller setting them would break compare-and-set.
_STORE_OWNED = frozenset({"id", "version", "refs_version"})


def cas_allows(current: AccessRequest, statuses: Collection[str], expected_version: int | None) -> bool:
    """The compare-and-set guard of `Store.transition`: the request is in one of the from-statuses
    (their values) and, when the caller pinned one, still at `expected_version`."""
    return current.status.value in statuses and (expected_version is None or current.version == expected_version)


def purge_cutoff(newest: int, first_kept: int | None) -> int:
    """The last sequence number a purge may delete: only a prefix of the chain goes (everything before
    the first event not older than the cutoff time, `first_kept`), and never the newest event."""
    cutoff = newest - 1
    return cutoff if first_kept is None else min(cutoff, first_kept - 1)


def apply_changes(current: AccessRequest, changes: Mapping[str, Any], now: datetime) -> AccessRequest:
    """`current` with `changes` applied, `version` bumped and `updated_at` = now (unless given).

    Changing `refs` here also bumps `refs_version`, so a concurrent `save_refs` on the old refs fails.
    """
    unknown = set(changes) - REQUEST_FIELDS
    if unknown:
        raise ValueError(f"not AccessRequest fields: {', '.join(sorted(unknown))}")
    owned = set(changes) & _STORE_OWNED
    if owned:
        raise ValueError(f"the store sets these fields itself: {', '.join(sorted(owned))}")
    values: dict[str, Any] = {"updated_at": now, **changes, "version": current.version + 1}
    if "refs" in changes:
        values["refs"] = dict(changes["refs"])
        values["refs_version"] = current.refs_version + 1
    return dataclasses.replace(current, **values)


def as_recorded(event: Event) -> Event:
    """The event as a later read returns it: the audit record keeps no actor groups."""
    actor = event.actor
    if actor is None or not actor.groups:
        return event
    return dataclasses.replace(event, actor=Identity(actor.platform, actor.user_id, actor.display))


def purge_draft(event: EventDraft, purged: int, checkpoint_seq: int) -> EventDraft:
    """The purge's own audit event, saying how many events went and where the chain now starts."""
    details = {**event.details, "purged": purged, "checkpoint_seq": checkpoint_seq}
    return dataclasses.replace(event, details=details)


def checkpoint_to_json(checkpoint: Checkpoint) -> str:
    """A checkpoint as the JSON kept in store metadata."""
    return json.dumps({"seq": checkpoint.seq, "hash": checkpoint.hash, "at": format_time(checkpoint.at)})


def checkpoint_from_json(text: str | None) -> Checkpoint | None:
    """The checkpoint a `checkpoint_to_json` text stands for, or None."""
    if not text:
        return None
    data = json.loads(text)
    return Checkpoint(seq=int(data["seq"]), hash=str(data["hash"]), at=parse_time(str(data["at"])))


def effect_docs(request_id: str, platform: str, drafts: Sequence[EffectDraft], now: datetime) -> list[dict[str, Any]]:
    """New pending effect documents, due now, in the order given (both stores store these fields)."""
    at = format_time(now)
    return [{"request_id": request_id, "platform": platform, "kind": d.kind.value, "lane": d.kind.lane,
             "payload": dict(d.payload), "status": "pending", "attempts": 0, "due_at": at, "created_at": at,
             "updated_at": at, "error": "", "lease_owner": None, "lease_until": None} for d in drafts]


def lease_new_effects(docs: Sequence[dict[str, Any]], lease: EffectLease | None) -> list[dict[str, Any]]:
    """Lease new effect documents (`effect_docs`, due now) as a claim by `lease.owner` would lease them now:
    those of `lease.platforms`, the first of each lane (a later one waits behind it); the docs leased."""
    if lease is None:
        return []
    leased, lanes = [], set()
    for doc in docs:
        if doc["platform"] in lease.platforms and doc["lane"] not in lanes:
            doc.update(lease_owner=lease.owner, lease_until=format_time(lease.until), attempts=1)
            leased.append(doc)
        lanes.add(doc["lane"])
    return leased


def supersedes(drafts: Sequence[EffectDraft]) -> bool:
    """Whether these effects make the request's unclaimed older card updates pointless."""
    return any(d.kind is EffectKind.UPDATE_CARD for d in drafts)


def settled_changes(current: AccessRequest, outcome: EffectOutcome) -> dict[str, Any]:
    """The request fields an outcome changes: refs merged key by key, and `revealed`."""
    changes: dict[str, Any] = {}
    if outcome.refs:
        merged = {**current.refs, **outcome.refs}
        if merged != current.refs:
            changes["refs"] = merged
    if outcome.revealed and not current.revealed:
        changes["revealed"] = True
    return changes
