"""Rotation of passwords kept outside jitpass (1Password): noticing a change clears "rotation due"."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from bot.domain.model import SYSTEM, EventDraft, ExternalRef, Item, SealedItem
from bot.ports import SecretRead, Store

__all__ = ["note_password_read", "password_changed", "with_new_password_state"]


def _key_id(revision: str) -> str:
    parts = revision.split(":")
    return parts[1] if len(parts) == 3 else ""


def password_changed(ref: ExternalRef, revision: str, version: int) -> bool:
    """Whether the password is another one than when `ref` was recorded.

    Fingerprints made under the same master key compare exactly; across a master key rotation they
    cannot, and a newer item version stands in (the item was edited; the password may be new)."""
    if not revision or not ref.revision:
        return False
    if _key_id(revision) == _key_id(ref.revision):
        return revision != ref.revision
    return version > ref.version


def with_new_password_state(item: Item, revision: str, version: int, now: datetime) -> tuple[Item, EventDraft | None]:
    """`item` with its reference at `revision`/`version`; rotation due cleared (and audited) if the
    password changed while it was due."""
    ref = item.external
    assert ref is not None
    changed = password_changed(ref, revision, version)
    updated = replace(item, external=replace(ref, revision=revision or ref.revision, version=max(version, ref.version)))
    if not changed:
        return updated, None
    was_due = item.rotation_due
    updated = replace(updated, password_rotated_at=now, rotation_due=None, updated_at=now)
    return updated, EventDraft("item.rotated", SYSTEM, None, item.name, item.vault, "password changed in 1Password",
                               {"source": item.source, "was_due_since": was_due.since.isoformat() if was_due else None,
                                "version": version})


async def note_password_read(store: Store, sealed: SealedItem, read: SecretRead, now: datetime) -> SealedItem:
    """After reading an outside item at the moment of use: record a changed password (clearing rotation due)."""
    if sealed.item.external is None or not read.revision:
        return sealed
    item, event = with_new_password_state(sealed.item, read.revision, read.version, now)
    if item == sealed.item:
        return sealed
    updated = replace(sealed, item=item)
    await store.replace_item(updated, event)
    return updated
