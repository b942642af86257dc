"""One encoding of items and requests to plain documents, shared by every store so they cannot drift.

Documents hold only JSON-compatible values (plus `bytes` for sealed key material). Times are
`bot.domain.audit.format_time` text: one spelling per instant that also sorts correctly as a string, so
both SQLite and MongoDB can range-query them without a datetime type of their own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from bot.domain.audit import format_time, parse_time
from bot.domain.model import (
    BUILTIN,
    OPEN_STATUSES,
    AccessRequest,
    Approval,
    Effect,
    EffectKind,
    EffectStatus,
    ExternalRef,
    Identity,
    Item,
    RequestKind,
    RotationDue,
    SealedItem,
    Status,
    Window,
)

__all__ = [
    "CLAIM_FIELDS",
    "KEY_FIELDS",
    "REQUEST_FIELDS",
    "claims",
    "effect_from_doc",
    "identity_from_doc",
    "identity_to_doc",
    "item_from_doc",
    "item_to_doc",
    "request_from_doc",
    "request_to_doc",
    "sealed_from_doc",
    "sealed_to_doc",
    "time_from_doc",
    "time_to_doc",
]

REQUEST_FIELDS = frozenset(AccessRequest.__dataclass_fields__)
KEY_FIELDS = ("key_id", "wrapped_key", "nonce", "ciphertext")


def time_to_doc(at: datetime | None) -> str | None:
    """A datetime as sortable UTC text, or None."""
    return None if at is None else format_time(at)


def time_from_doc(text: str | None) -> datetime | None:
    """The datetime a `time_to_doc` text stands for, or None."""
    return None if text is None else parse_time(text)


def _time(text: Any) -> datetime:
    parsed = time_from_doc(text)
    if parsed is None:
        raise ValueError("a required time is missing from a stored document")
    return parsed


def identity_to_doc(identity: Identity) -> dict[str, Any]:
    """`Identity.to_dict` plus its groups, so a stored request reads back equal to the one written."""
    doc: dict[str, Any] = identity.to_dict()
    if identity.groups:
        doc["groups"] = sorted(identity.groups)
    if identity.email:
        doc["email"] = identity.email
    return doc


def identity_from_doc(doc: dict[str, Any]) -> Identity:
    """The Identity an `identity_to_doc` document stands for."""
    identity = Identity.from_dict(doc)
    groups = doc.get("groups")
    email = doc.get("email")
    if groups or email:
        identity = Identity(identity.platform, identity.user_id, identity.display, frozenset(groups or ()),
                            str(email or ""))
    return identity


def _optional_identity(doc: dict[str, Any] | None) -> Identity | None:
    return None if doc is None else identity_from_doc(doc)


def _rotation_due_to_doc(due: RotationDue | None) -> dict[str, Any] | None:
    if due is None:
        return None
    return {
        "since": format_time(due.since),
        "seen_by": [identity_to_doc(i) for i in due.seen_by],
        "request_ids": list(due.request_ids),
    }


def _rotation_due_from_doc(doc: dict[str, Any] | None) -> RotationDue | None:
    if doc is None:
        return None
    return RotationDue(
        since=_time(doc["since"]),
        seen_by=tuple(identity_from_doc(i) for i in doc.get("seen_by") or ()),
        request_ids=tuple(str(r) for r in doc.get("request_ids") or ()),
    )


def _external_to_doc(ref: ExternalRef | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    return {"vault_id": ref.vault_id, "item_id": ref.item_id, "vault_title": ref.vault_title,
            "version": ref.version, "revision": ref.revision}


def _external_from_doc(doc: dict[str, Any] | None) -> ExternalRef | None:
    if doc is None:
        return None
    return ExternalRef(vault_id=str(doc["vault_id"]), item_id=str(doc["item_id"]),
                       vault_title=str(doc.get("vault_title") or ""), version=int(doc.get("version") or 0),
                       revision=str(doc.get("revision") or ""))


def item_to_doc(item: Item) -> dict[str, Any]:
    """An item's metadata as a plain document (no secret is ever part of it)."""
    return {
        "name": item.name,
        "vault": item.vault,
        "username": item.username,
        "url": item.url,
        "notes": item.notes,
        "tags": list(item.tags),
        "has_password": item.has_password,
        "has_totp": item.has_totp,
        "created_at": time_to_doc(item.created_at),
        "updated_at": time_to_doc(item.updated_at),
        "password_rotated_at": time_to_doc(item.password_rotated_at),
        "rotation_due": _rotation_due_to_doc(item.rotation_due),
        "source": item.source,
        "category": item.category,
        "external": _external_to_doc(item.external),
    }


def item_from_doc(doc: dict[str, Any]) -> Item:
    """The Item an `item_to_doc` document stands for."""
    return Item(
        name=str(doc["name"]),
        vault=str(doc["vault"]),
        username=str(doc.get("username") or ""),
        url=str(doc.get("url") or ""),
        notes=str(doc.get("notes") or ""),
        tags=tuple(str(t) for t in doc.get("tags") or ()),
        has_password=bool(doc.get("has_password", True)),
        has_totp=bool(doc.get("has_totp", False)),
        created_at=time_from_doc(doc.get("created_at")),
        updated_at=time_from_doc(doc.get("updated_at")),
        password_rotated_at=time_from_doc(doc.get("password_rotated_at")),
        rotation_due=_rotation_due_from_doc(doc.get("rotation_due")),
        source=str(doc.get("source") or BUILTIN),
        category=str(doc.get("category") or ""),
        external=_external_from_doc(doc.get("external")),
    )


def sealed_to_doc(sealed: SealedItem) -> dict[str, Any]:
    """Item metadata plus its key id and encrypted payload (bytes)."""
    return {
        **item_to_doc(sealed.item),
        "key_id": sealed.key_id,
        "wrapped_key": bytes(sealed.wrapped_key),
        "nonce": bytes(sealed.nonce),
        "ciphertext": bytes(sealed.ciphertext),
    }


def sealed_from_doc(doc: dict[str, Any]) -> SealedItem:
    """The SealedItem a `sealed_to_doc` document stands for."""
    return SealedItem(
        item=item_from_doc(doc),
        key_id=str(doc["key_id"]),
        wrapped_key=bytes(doc["wrapped_key"]),
        nonce=bytes(doc["nonce"]),
        ciphertext=bytes(doc["ciphertext"]),
    )


def _window_to_doc(window: Window) -> dict[str, Any]:
    return {"duration": window.duration.total_seconds(), "start": time_to_doc(window.start)}


def _window_from_doc(doc: dict[str, Any]) -> Window:
    return Window(duration=timedelta(seconds=float(doc["duration"])), start=time_from_doc(doc.get("start")))


def request_to_doc(request: AccessRequest) -> dict[str, Any]:
    """Every AccessRequest field as a JSON-compatible document, plus the derived `requester_key`."""
    return {
        "id": request.id,
        "item": request.item,
        "vault": request.vault,
        "requester": identity_to_doc(request.requester),
        # Derived, for indexed lookups by person; ignored when decoding.
        "requester_key": request.requester.key,
        "reason": request.reason,
        "window": _window_to_doc(request.window),
        "status": request.status.value,
        "created_at": format_time(request.created_at),
        "updated_at": format_time(request.updated_at),
        "required_approvals": request.required_approvals,
        "approvals": [
            {"approver": identity_to_doc(a.approver), "at": format_time(a.at)} for a in request.approvals
        ],
        "decided_by": None if request.decided_by is None else identity_to_doc(request.decided_by),
        "ended_by": None if request.ended_by is None else identity_to_doc(request.ended_by),
        "decided_at": time_to_doc(request.decided_at),
        "decline_reason": request.decline_reason,
        "timeout_at": time_to_doc(request.timeout_at),
        "starts_at": time_to_doc(request.starts_at),
        "ends_at": time_to_doc(request.ends_at),
        "ended_at": time_to_doc(request.ended_at),
        "revealed": request.revealed,
        "kind": request.kind.value,
        "parent_id": request.parent_id,
        "notes": list(request.notes),
        "platform": request.platform,
        "refs": dict(request.refs),
        "refs_version": request.refs_version,
        "version": request.version,
        "person": request.person,
        "exclusive": request.exclusive,
        # Derived, unique in every store (a plain unique index, no partial filter): see `claims`.
        **claims(request),
    }


CLAIM_FIELDS = ("open_claim", "hold_claim")


def claims(request: AccessRequest) -> dict[str, str]:
    """The store's invariants as two keys, each under a unique index.

    `open_claim` is `open:<person>|<item>` while an access request is open (pending, approved, active),
    `hold_claim` is `hold:<item>` while a grant of an exclusive item is active. Otherwise each is
    `free:<id>`, unique by itself, so only a second open request or a second holder collides."""
    free = f"free:{request.id}"
    access = request.kind is RequestKind.ACCESS
    person = request.person or request.requester.key
    return {
        "open_claim": f"open:{person}|{request.item}" if access and request.status in OPEN_STATUSES else free,
        "hold_claim": f"hold:{request.item}" if access and request.exclusive and request.status is Status.ACTIVE
        else free,
    }


def request_from_doc(doc: dict[str, Any]) -> AccessRequest:
    """The AccessRequest a `request_to_doc` document stands for (unknown keys are ignored)."""
    return AccessRequest(
        id=str(doc["id"]),
        item=str(doc["item"]),
        vault=str(doc["vault"]),
        requester=identity_from_doc(doc["requester"]),
        reason=str(doc.get("reason") or ""),
        window=_window_from_doc(doc["window"]),
        status=Status(doc["status"]),
        created_at=_time(doc["created_at"]),
        updated_at=_time(doc["updated_at"]),
        required_approvals=int(doc.get("required_approvals", 1)),
        approvals=tuple(
            Approval(approver=identity_from_doc(a["approver"]), at=_time(a["at"]))
            for a in doc.get("approvals") or ()
        ),
        decided_by=_optional_identity(doc.get("decided_by")),
        ended_by=_optional_identity(doc.get("ended_by")),
        decided_at=time_from_doc(doc.get("decided_at")),
        decline_reason=str(doc.get("decline_reason") or ""),
        timeout_at=time_from_doc(doc.get("timeout_at")),
        starts_at=time_from_doc(doc.get("starts_at")),
        ends_at=time_from_doc(doc.get("ends_at")),
        ended_at=time_from_doc(doc.get("ended_at")),
        revealed=bool(doc.get("revealed", False)),
        kind=RequestKind(doc.get("kind", RequestKind.ACCESS.value)),
        parent_id=doc.get("parent_id"),
        notes=tuple(str(n) for n in doc.get("notes") or ()),
        platform=str(doc.get("platform") or ""),
        refs=dict(doc.get("refs") or {}),
        refs_version=int(doc.get("refs_version", 0)),
        version=int(doc.get("version", 0)),
        person=str(doc.get("person") or ""),
        exclusive=bool(doc.get("exclusive", False)),
    )


def effect_from_doc(doc: Mapping[str, Any]) -> Effect:
    """An Effect from a stored row / document (both stores keep the same field names)."""
    payload = doc["payload"]
    return Effect(
        id=str(doc["id"]), request_id=str(doc["request_id"]), platform=str(doc["platform"]),
        kind=EffectKind(doc["kind"]), payload=dict(json.loads(payload) if isinstance(payload, str) else payload),
        status=EffectStatus(doc["status"]), attempts=int(doc["attempts"]), due_at=_time(doc["due_at"]),
        created_at=_time(doc["created_at"]), error=str(doc.get("error") or ""),
        lease_owner=doc.get("lease_owner"), lease_until=time_from_doc(doc.get("lease_until")),
    )
