"""Audit events: canonical encoding, SHA-256 hash chain, chain verification.

Each event's hash covers its canonical encoding plus the previous event's hash, so editing,
deleting or reordering any event breaks the chain from that point on.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.domain.model import Event, EventDraft, Identity

__all__ = [
    "EVENT_TYPES",
    "GENESIS_HASH",
    "ChainReport",
    "canonical",
    "event_from_dict",
    "event_to_dict",
    "format_time",
    "parse_time",
    "seal_event",
    "verify_chain",
]

GENESIS_HASH = "0" * 64

EVENT_TYPES = frozenset(
    {
        "request.created",
        "request.approval_added",
        "request.approved",
        "request.declined",
        "request.cancelled",
        "request.timed_out",
        "grant.activated",
        "grant.extended",
        "grant.revealed",
        "grant.code_shown",
        "grant.delivery_started",  # the secret is about to leave for the chat platform (not a reveal)
        "grant.delivery_failed",
        "grant.reveal_failed",
        "grant.wiped",
        "grant.wipe_failed",
        "alert.wipe_exhausted",  # a wipe spent its retry budget: the secret may still be on screen
        "chat.effect_failed",  # a card post/update or message spent its retry budget
        "grant.expired",
        "grant.revoked",
        "access.refused",
        "access.refused_burst",  # how many rate-limit refusals followed the first (audited) one of a burst
        "access.shadow",
        "item.added",
        "item.updated",
        "item.removed",
        "item.rotated",
        "key.rotated",
        "key.retired",  # old master keys dropped from the key file after every item moved off them
        "retention.purged",
        "report.generated",
    }
)


def format_time(at: datetime) -> str:
    """UTC, microseconds, `Z`: one spelling per instant, so hashes are stable across stores."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Exactly what format_time writes (years 1000-9999). Such a text goes through the fast C parser
# (reading 10,000 requests parses 50,000 times: strptime alone was a fifth of a start-up backlog's CPU);
# anything else through strptime, which refuses what format_time never writes.
_STORED_TIME = re.compile(r"[1-9]\d{3}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def parse_time(text: str) -> datetime:
    """The instant a `format_time` text stands for (ValueError for any other text)."""
    if _STORED_TIME.fullmatch(text):
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _body(
    seq: int, event_id: str, at: datetime, draft_type: str, actor: Identity | None, request_id: str | None,
    item: str | None, vault: str | None, reason: str, details: dict[str, Any], prev_hash: str,
) -> dict[str, Any]:
    return {
        "seq": seq,
        "id": event_id,
        "at": format_time(at),
        "type": draft_type,
        "actor": actor.to_dict() if actor else None,
        "request_id": request_id,
        "item": item,
        "vault": vault,
        "reason": reason,
        "details": details,
        "prev_hash": prev_hash,
    }


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(body)).hexdigest()


def seal_event(draft: EventDraft, *, seq: int, prev_hash: str, at: datetime, event_id: str | None = None) -> Event:
    """Give a draft its place in the chain."""
    if draft.type not in EVENT_TYPES:
        raise ValueError(f"unknown audit event type {draft.type!r}")
    event_id = event_id or uuid.uuid4().hex
    # Round-trip details through JSON so what is hashed is exactly what any store gives back.
    details = json.loads(json.dumps(draft.details, default=str))
    at = parse_time(format_time(at))
    body = _body(seq, event_id, at, draft.type, draft.actor, draft.request_id, draft.item, draft.vault,
                 draft.reason, details, prev_hash)
    return Event(seq=seq, id=event_id, at=at, type=draft.type, actor=draft.actor, request_id=draft.request_id,
                 item=draft.item, vault=draft.vault, reason=draft.reason, details=details,
                 prev_hash=prev_hash, hash=_hash(body))


def event_to_dict(event: Event) -> dict[str, Any]:
    body = _body(event.seq, event.id, event.at, event.type, event.actor, event.request_id, event.item,
                 event.vault, event.reason, event.details, event.prev_hash)
    body["hash"] = event.hash
    return body


def event_from_dict(data: dict[str, Any]) -> Event:
    actor = data.get("actor")
    at = data["at"]
    return Event(
        seq=int(data["seq"]), id=str(data["id"]),
        at=parse_time(at) if isinstance(at, str) else at.astimezone(UTC),
        type=str(data["type"]), actor=Identity.from_dict(actor) if actor else None,
        request_id=data.get("request_id"), item=data.get("item"), vault=data.get("vault"),
        reason=str(data.get("reason") or ""), details=dict(data.get("details") or {}),
        prev_hash=str(data["prev_hash"]), hash=str(data["hash"]),
    )


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    problem: str = ""
    last_seq: int = 0


async def verify_chain(
    events: AsyncIterable[Event], *, start_seq: int = 0, start_hash: str = GENESIS_HASH
) -> ChainReport:
    """Walk events in sequence order from a start point (genesis or a purge checkpoint)."""
    expected_seq, prev_hash, checked = start_seq + 1, start_hash, 0
    async for event in events:
        body = _body(event.seq, event.id, event.at, event.type, event.actor, event.request_id, event.item,
                     event.vault, event.reason, event.details, event.prev_hash)
        if event.seq != expected_seq:
            what = "missing (deleted?)" if event.seq > expected_seq else "out of order"
            return ChainReport(False, checked, expected_seq, f"event {expected_seq} is {what}", expected_seq - 1)
        if event.prev_hash != prev_hash:
            return ChainReport(False, checked, event.seq, f"event {event.seq} does not follow the event before it")
        if _hash(body) != event.hash:
            return ChainReport(False, checked, event.seq, f"event {event.seq} was modified after it was written")
        prev_hash, expected_seq, checked = event.hash, expected_seq + 1, checked + 1
    return ChainReport(True, checked, last_seq=expected_seq - 1)
