"""Admin operations on the credential catalogue: add, import, rotate, remove, and master-key rotation."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from bot.domain.errors import Conflict, ImportFileError, InputError, NotFound
from bot.domain.model import BUILTIN, OPEN_STATUSES, EventDraft, Identity, Item, SealedItem, Secret
from bot.domain.vault import Vault
from bot.ports import QUIET, Clock, Store, Tracker
from bot.services.importers import ItemInput

__all__ = ["NAME_PATTERN", "Catalog", "ImportOutcome"]

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _check_name(kind: str, value: str) -> None:
    if not NAME_PATTERN.match(value):
        raise InputError(f"{kind} name {value!r} is not valid: use lower-case letters, digits, '.', '_' or '-' "
                         "(at most 64 characters, starting with a letter or digit).", hint="Example: acme-zendesk")


def _refuse_outside(item: Item, what: str) -> None:
    if item.source != BUILTIN:
        raise InputError(f"'{item.name}' is kept in {item.source}: {what}. Nothing was changed.")


@dataclass(frozen=True)
class ImportOutcome:
    """What an import did: items added, items updated (with the fields that changed), rows left alone."""

    added: list[Item] = field(default_factory=list)
    updated: list[tuple[Item, tuple[str, ...]]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _label(entry: ItemInput) -> str:
    return entry.source_label or entry.name


class Catalog:
    """Items and keys, as an admin changes them. Every change is audited; no secret ever is."""

    def __init__(self, store: Store, vault: Vault, clock: Clock) -> None:
        self.store = store
        self.vault = vault
        self.clock = clock

    def _seal(self, entry: ItemInput) -> SealedItem:
        _check_name("Item", entry.name)
        _check_name("Vault", entry.vault)
        now = self.clock.now()
        item = Item(name=entry.name, vault=entry.vault, username=entry.username, url=entry.url, notes=entry.notes,
                    tags=tuple(entry.tags), has_password=entry.password is not None,
                    has_totp=entry.totp is not None, created_at=now, updated_at=now, password_rotated_at=now)
        return self.vault.seal(item, entry.password, entry.totp)

    async def add(self, entries: Sequence[ItemInput], actor: Identity, *, source: str = "cli",
                  tracker: Tracker = QUIET) -> list[Item]:
        """Add items all-or-nothing: one bad or duplicate name and nothing is stored."""
        tracker.start("sealing items", total=len(entries))
        sealed = []
        for entry in entries:
            sealed.append(self._seal(entry))
            tracker.advance()
        tracker.start("storing items")
        events = [EventDraft("item.added", actor, None, s.item.name, s.item.vault, "",
                             {"source": source, "has_password": s.item.has_password, "has_totp": s.item.has_totp})
                  for s in sealed]
        await self.store.add_items(sealed, events)
        tracker.finish()
        return [s.item for s in sealed]

    async def import_items(self, entries: Sequence[ItemInput], actor: Identity, *, source: str, update: bool,
                           skip_bad: bool, tracker: Tracker = QUIET) -> ImportOutcome:
        """Add new items; with `update`, change existing ones in place (audited `item.updated`, the changed
        field names only). Without `update` an existing name is a row problem: nothing is stored unless
        `skip_bad`, which skips those rows."""
        fresh: list[ItemInput] = []
        changes: list[tuple[ItemInput, SealedItem, tuple[str, ...]]] = []
        unchanged: list[str] = []
        problems: list[str] = []
        for entry in entries:
            existing = await self.store.get_item(entry.name)
            if existing is None:
                fresh.append(entry)
            elif not update:
                problems.append(f"{_label(entry)}: an item named {entry.name!r} already exists "
                                "(use --update to change it)")
            elif existing.item.source != BUILTIN:
                problems.append(f"{_label(entry)}: {entry.name!r} is kept in {existing.item.source}; not updated")
            else:
                changed = self._changed_fields(existing, entry)
                if not changed:
                    unchanged.append(entry.name)
                elif "vault" in changed and await self.store.find_requests(item=entry.name,
                                                                          statuses=OPEN_STATUSES):
                    problems.append(f"{_label(entry)}: {entry.name!r} has open requests; its vault cannot "
                                    "change until they end")
                else:
                    changes.append((entry, existing, changed))
        if problems and not skip_bad:
            word = "row" if len(problems) == 1 else "rows"
            raise ImportFileError(f"import rejected: {len(problems)} {word} clash with the catalogue; nothing "
                                  "was imported (use --skip-bad to import the rest)", problems)
        added = await self.add(fresh, actor, source=source, tracker=tracker)
        updated = []
        for entry, existing, changed in changes:
            updated.append((await self._update(existing, entry, changed, actor, source), changed))
        return ImportOutcome(added=added, updated=updated, unchanged=unchanged, skipped=problems)

    def _changed_fields(self, existing: SealedItem, entry: ItemInput) -> tuple[str, ...]:
        old = existing.item
        password, seed = self.vault.open(existing)
        # A row without a password or seed keeps the stored one: an export made without secrets
        # (or a column dropped) must not wipe every password on --update.
        pairs = (("vault", old.vault, entry.vault), ("username", old.username, entry.username),
                 ("url", old.url, entry.url), ("notes", old.notes, entry.notes),
                 ("tags", tuple(old.tags), tuple(entry.tags)), ("password", password, entry.password or password),
                 ("totp", seed, entry.totp or seed))
        return tuple(name for name, before, after in pairs if before != after)

    async def _update(self, existing: SealedItem, entry: ItemInput, changed: tuple[str, ...], actor: Identity,
                      source: str) -> Item:
        _check_name("Vault", entry.vault)
        now = self.clock.now()
        item = replace(existing.item, vault=entry.vault, username=entry.username, url=entry.url,
                       notes=entry.notes, tags=tuple(entry.tags), updated_at=now)
        if "password" in changed:  # a new password from the export is a rotation done elsewhere
            item = replace(item, password_rotated_at=now, rotation_due=None)
        password, seed = self.vault.open(existing)
        sealed = self.vault.seal(item, entry.password or password, entry.totp or seed)
        await self.store.replace_item(sealed, EventDraft(
            "item.updated", actor, None, item.name, item.vault, "",
            {"source": source, "changed": list(changed), "from_vault": existing.item.vault}))
        return item

    async def get(self, name: str) -> SealedItem:
        sealed = await self.store.get_item(name)
        if sealed is None:
            names = [i.name for i in await self.store.list_items()]
            close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.5)
            close += [n for n in names if name.lower() in n and n not in close][: 3 - len(close)]
            raise NotFound(f"There is no item called '{name}'.", close)
        return sealed

    async def remove(self, name: str, actor: Identity) -> None:
        """Delete an item; refused while a request for it is open."""
        sealed = await self.get(name)
        _refuse_outside(sealed.item, "remove it there, or stop serving its vault in the policy")
        open_requests = await self.store.find_requests(item=name, statuses=OPEN_STATUSES)
        if open_requests:
            raise Conflict(f"'{name}' has open request(s) {', '.join(r.id for r in open_requests)}; "
                           "end or cancel them first.")
        await self.store.remove_item(name, EventDraft("item.removed", actor, None, name, sealed.item.vault))

    async def rotate_password(self, name: str, password: Secret, actor: Identity) -> Item:
        """Record a new password (after rotating it at the provider); clears rotation-due."""
        if not password:
            raise InputError("The new password is empty; nothing was changed.")
        sealed = await self.get(name)
        _refuse_outside(sealed.item, "rotate it there; jitpass notices the new password at the next sync")
        _, seed = self.vault.open(sealed)
        now = self.clock.now()
        item = replace(sealed.item, has_password=True, updated_at=now, password_rotated_at=now, rotation_due=None)
        was_due = sealed.item.rotation_due
        await self.store.replace_item(self.vault.seal(item, password, seed), EventDraft(
            "item.rotated", actor, None, name, item.vault, "",
            {"was_due_since": was_due.since.isoformat() if was_due else None}))
        return item

    async def rotation_due(self) -> list[Item]:
        """Items whose password was revealed since its last rotation, oldest exposure first."""
        items = [i for i in await self.store.list_items() if i.rotation_due is not None]
        return sorted(items, key=lambda i: i.rotation_due.since if i.rotation_due else self.clock.now())

    async def rotate_master_key(self, actor: Identity) -> int:
        """Re-wrap every item's data key under the ring's active key; returns how many moved."""
        sealed = await self.store.list_sealed_items()
        active = self.vault.ring.active.key_id
        moved = [self.vault.rewrap(s) for s in sealed if s.key_id != active]
        await self.store.rewrap_items(moved, EventDraft("key.rotated", actor, None, None, None, "",
                                                        {"key_id": active, "items": len(moved)}))
        await self.store.set_meta("key_check", self.vault.key_check())
        return len(moved)

    async def retire_old_keys(self, actor: Identity, retired: Sequence[str]) -> int:
        """Make sure no item needs the `retired` keys (re-wrap stragglers under the active key), audited.

        Called before the key file loses those keys: afterwards the store needs only the active key.
        """
        sealed = await self.store.list_sealed_items()
        active = self.vault.ring.active.key_id
        moved = [self.vault.rewrap(s) for s in sealed if s.key_id != active]
        await self.store.rewrap_items(moved, EventDraft("key.retired", actor, None, None, None, "",
                                                        {"key_id": active, "retired": list(retired),
                                                         "items": len(moved)}))
        await self.store.set_meta("key_check", self.vault.key_check())
        return len(moved)
