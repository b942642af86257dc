"""Catalogue sync from 1Password: metadata of every item in the served vaults, never a secret.

One run reads the vault list, each served vault's item summaries, and the full item only for items
that are new or whose version changed (to learn the username, the one-time password field and the
password's fingerprint). It then removes, updates and adds catalogue entries, each audited with
`source: 1password`. A failing vault (403, 404, outage) leaves its items as they were; a failing
token (401) or an unreachable server stops the run before anything changed. Items that cannot be
served (no password, several passwords, a name another item has) are named in the report and the
run continues with the rest.

Crash points: every catalogue change is one store write with its event. A rename is a removal (with
its item.updated event) then an add; a crash between the two leaves the item missing until the next
run adds it again (as item.added).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime

from bot.domain.errors import JitpassError, SecretSourceError
from bot.domain.model import ONEPASSWORD, OPEN_STATUSES, SYSTEM, EventDraft, ExternalRef, Identity, Item, SealedItem
from bot.domain.policy import OnePasswordVault, Policy
from bot.domain.vault import Vault
from bot.ports import Clock, ItemFeed, SourceItem, SourceVault, Store
from bot.services.access import AccessService
from bot.services.rotation import with_new_password_state

__all__ = ["OnePasswordSync", "SyncReport", "item_name"]

log = logging.getLogger("jitpass.onepassword.sync")

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def item_name(prefix: str, title: str) -> str:
    """The jitpass name of a 1Password item: the vault's prefix and the title in lower-case words with '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return (prefix + slug)[:64].rstrip("-._")


@dataclass
class SyncReport:
    """What one sync changed, and every item or vault it could not serve, by name."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    unchanged: int = 0
    ended: list[str] = field(default_factory=list)  # request ids ended because their item left
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed, "
                f"{self.unchanged} unchanged, {len(self.problems)} not served")


@dataclass(frozen=True)
class _Candidate:
    name: str
    vault: SourceVault
    mapping: OnePasswordVault
    item: SourceItem | None  # None: unchanged since the stored version
    current: Item | None


class OnePasswordSync:
    """Brings the catalogue's 1Password items in line with the served vaults."""

    def __init__(self, store: Store, vault: Vault, feed: ItemFeed, policy: Policy, clock: Clock,
                 service: AccessService) -> None:
        self.store = store
        self.vault = vault
        self.feed = feed
        self.policy = policy
        self.clock = clock
        self.service = service
        self._lock = asyncio.Lock()  # the periodic run and a CLI-triggered one never interleave
        self.last_run: datetime | None = None
        self.last_ok: datetime | None = None
        self.last_error = ""
        self.last_summary = ""

    async def run(self, actor: Identity = SYSTEM) -> SyncReport:
        """One sync. Raises SecretSourceError (nothing changed) when Connect refuses the token or is down."""
        async with self._lock:
            self.last_run = self.clock.now()
            try:
                report = await self._run(actor)
            except SecretSourceError as exc:
                self.last_error = exc.reason
                raise
            self.last_ok, self.last_error, self.last_summary = self.last_run, "", report.summary()
            return report

    def describe(self) -> dict[str, object]:
        """For /healthz: when the catalogue was last read from 1Password, and how the last run went."""
        return {"last_run": self.last_run.isoformat() if self.last_run else None,
                "last_ok": self.last_ok.isoformat() if self.last_ok else None,
                "last_error": self.last_error or None, "last_summary": self.last_summary or None}

    async def _run(self, actor: Identity) -> SyncReport:
        report = SyncReport()
        vaults = await self.feed.vaults()
        served, kept_vault_ids, kept_titles = self._served(vaults, report)
        stored = await self.store.list_items()
        builtin_names = {i.name for i in stored if i.source != ONEPASSWORD}
        current = {i.external.item_id: i for i in stored if i.source == ONEPASSWORD and i.external}
        candidates: list[_Candidate] = []
        for source_vault, mapping in served:
            try:
                summaries = await self.feed.summaries(source_vault.id)
            except SecretSourceError as exc:
                report.problems.append(f"1Password vault '{source_vault.title}' could not be read ({exc.reason}); "
                                       "its items are left as they were")
                kept_vault_ids.add(source_vault.id)
                continue
            for summary in summaries:
                old = current.get(summary.item_id)
                name = item_name(mapping.prefix, summary.title)
                unchanged = (old is not None and old.external is not None and old.external.version == summary.version
                             and old.external.vault_id == source_vault.id and old.vault == mapping.vault
                             and old.name == name)
                if unchanged:
                    candidates.append(_Candidate(name, source_vault, mapping, None, old))
                    continue
                try:
                    full = await self.feed.item(source_vault.id, summary.item_id)
                except SecretSourceError as exc:
                    report.problems.append(f"1Password item '{summary.title}' in vault '{source_vault.title}' "
                                           f"could not be read ({exc.reason}); left as it was")
                    if old is not None:
                        candidates.append(_Candidate(old.name, source_vault, mapping, None, old))
                    continue
                if full.problem:
                    report.problems.append(f"1Password item '{full.title}' in vault '{source_vault.title}' "
                                           f"{full.problem}; it is not served")
                    continue
                if full.warning:
                    report.notes.append(f"1Password item '{full.title}' in vault '{source_vault.title}' {full.warning}")
                if not _NAME.match(name):
                    report.problems.append(f"1Password item '{full.title}' in vault '{source_vault.title}' has a "
                                           "title that gives no usable jitpass name; it is not served")
                    continue
                candidates.append(_Candidate(name, source_vault, mapping, full, old))
        desired = self._unique(candidates, builtin_names, report)
        await self._apply(desired, current, kept_vault_ids, kept_titles, actor, report)
        log.info("event=onepassword_sync %s", report.summary().replace(", ", " ").replace(" added", "_added"))
        return report

    def _served(self, vaults: list[SourceVault],
                report: SyncReport) -> tuple[list[tuple[SourceVault, OnePasswordVault]], set[str], set[str]]:
        """The visible vaults the policy serves; ids and titles of vaults whose items must be left alone."""
        config = self.policy.onepassword
        titles = defaultdict(list)
        for v in vaults:
            titles[v.title].append(v)
        served: list[tuple[SourceVault, OnePasswordVault]] = []
        kept_ids: set[str] = set()
        kept_titles: set[str] = set()
        seen_keys: set[str] = set()
        for v in vaults:
            mapping = config.mapping_for(v.id, v.title)
            if mapping is None:
                report.notes.append(f"1Password vault '{v.title}' is not mapped in the policy "
                                    "([onepassword.vaults]); its items are not served")
                continue
            seen_keys.add(mapping.key)
            if mapping.key == v.title and len(titles[v.title]) > 1:
                report.problems.append(f"{len(titles[v.title])} 1Password vaults are called '{v.title}'; map them "
                                       "by their 26-character ids in the policy. Their items are left as they were")
                kept_ids.add(v.id)
                continue
            served.append((v, mapping))
        for mapping in config.vaults:
            if mapping.key not in seen_keys:
                report.problems.append(f"the policy serves 1Password vault '{mapping.key}', which the Connect "
                                       "token cannot see; its items are left as they were")
                kept_ids.add(mapping.key)
                kept_titles.add(mapping.key)
        return served, kept_ids, kept_titles

    def _unique(self, candidates: list[_Candidate], builtin_names: set[str],
                report: SyncReport) -> dict[str, _Candidate]:
        """One candidate per name: the item already holding a name keeps it; other claims are named."""
        by_name: dict[str, list[_Candidate]] = defaultdict(list)
        for c in candidates:
            by_name[c.name].append(c)
        desired: dict[str, _Candidate] = {}
        for name, claims in by_name.items():
            described = " and ".join(f"'{_title(c)}' (vault '{c.vault.title}')" for c in claims)
            if name in builtin_names:
                report.problems.append(f"1Password item {described} would be called '{name}', the name of a "
                                       "built-in item; rename it in 1Password or give its vault a prefix")
                continue
            if len(claims) == 1:
                desired[name] = claims[0]
                continue
            holder = next((c for c in claims if c.current is not None and c.current.name == name), None)
            others = [c for c in claims if c is not holder]
            report.problems.append(
                f"1Password items {described} would all be called '{name}'; "
                + (f"'{_title(holder)}' keeps it and the others are not served" if holder else "none is served")
                + ". Rename them in 1Password or give a vault a prefix in the policy")
            if holder is not None:
                desired[name] = holder
            del others
        return desired

    async def _apply(self, desired: dict[str, _Candidate], current: dict[str, Item], kept_vault_ids: set[str],
                     kept_titles: set[str], actor: Identity, report: SyncReport) -> None:
        now = self.clock.now()
        desired_ids = {c.current.external.item_id if c.item is None and c.current and c.current.external
                       else c.item.item_id if c.item else "" for c in desired.values()}
        # Moving an item between vaults in 1Password gives it a new id: a new item taking the name of one
        # that vanished, for the same jitpass vault, is that item moved (its grants carry on).
        by_name = {i.name: i for i in current.values()}
        for name, c in list(desired.items()):
            old = by_name.get(name)
            if c.current is None and c.item is not None and old is not None and old.external is not None \
                    and old.external.item_id not in desired_ids and old.vault == c.mapping.vault:
                desired[name] = replace(c, current=old)
                desired_ids.add(old.external.item_id)
        # Gone: deleted / archived in 1Password, or its vault no longer served.
        for item_id, item in current.items():
            ref = item.external
            assert ref is not None
            if item_id in desired_ids or ref.vault_id in kept_vault_ids or ref.vault_title in kept_titles:
                continue
            served_ids = {c.vault.id for c in desired.values()}
            why = "was deleted or archived in 1Password" if ref.vault_id in served_ids or any(
                m.key in {ref.vault_id, ref.vault_title} for m in self.policy.onepassword.vaults) \
                else "is in a 1Password vault jitpass no longer serves"
            await self._remove(item, why, actor, report)
        for name, candidate in sorted(desired.items()):
            try:
                await self._upsert(name, candidate, now, actor, report)
            except JitpassError as exc:
                report.problems.append(f"1Password item '{_title(candidate)}' could not be stored: {exc.message}")

    async def _remove(self, item: Item, why: str, actor: Identity, report: SyncReport) -> None:
        report.ended += await self.service.end_item_access(item.name, f"{why}; access to it has ended")
        await self.store.remove_item(item.name, EventDraft("item.removed", actor, None, item.name, item.vault, why, {
            "source": ONEPASSWORD, "item_id": item.external.item_id if item.external else None}))
        report.removed.append(item.name)

    async def _upsert(self, name: str, c: _Candidate, now: datetime, actor: Identity, report: SyncReport) -> None:
        old = c.current
        if c.item is None:
            report.unchanged += 1
            return
        src = c.item
        base = old or Item(name=name, vault=c.mapping.vault, created_at=now, password_rotated_at=now)
        ref = ExternalRef(vault_id=c.vault.id, item_id=src.item_id, vault_title=c.vault.title, version=src.version,
                          revision=(old.external.revision if old and old.external else src.revision))
        item = replace(base, name=name, vault=c.mapping.vault, username=src.username, url=src.url, tags=src.tags,
                       has_password=True, has_totp=src.has_totp, source=ONEPASSWORD, category=src.category,
                       external=ref, updated_at=now)
        rotated: EventDraft | None = None
        if old is not None:
            item, rotated = with_new_password_state(item, src.revision, src.version, now)
        details = {"source": ONEPASSWORD, "item_id": src.item_id, "vault_title": c.vault.title,
                   "version": src.version, "has_totp": src.has_totp}
        if old is None:
            await self.store.add_items([self._seal(item)], [EventDraft(
                "item.added", actor, None, name, item.vault, "", details)])
            report.added.append(name)
            return
        changes = _changes(old, item)
        if old.vault != item.vault:
            # Approved under another vault's approvers: those grants do not carry over.
            report.ended += await self.service.end_item_access(old.name, "moved to another vault in 1Password; "
                                                                          "access to it has ended")
        if old.name != name:
            if await self.store.find_requests(item=old.name, statuses=OPEN_STATUSES):
                report.notes.append(f"1Password item '{src.title}' was renamed; it keeps the name '{old.name}' "
                                    "until its open requests end")
                item = replace(item, name=old.name)
                changes.discard("name")
            else:
                await self.store.remove_item(old.name, EventDraft("item.updated", actor, None, old.name, old.vault,
                                                                  "renamed in 1Password",
                                                                  {**details, "renamed_to": name}))
                await self.store.add_items([self._seal(item)], [])
                report.updated.append(name)
                if rotated is not None:
                    await self.store.append_event(replace(rotated, item=name))
                    report.rotated.append(name)
                return
        sealed = await self.store.get_item(item.name)
        if sealed is None:  # pragma: no cover - removed meanwhile by an admin; the next run adds it again
            return
        if not changes and rotated is None and item == sealed.item:
            report.unchanged += 1
            return
        event = EventDraft("item.updated", actor, None, item.name, item.vault, "", {**details, "changed": sorted(
            changes)}) if changes else None
        await self.store.replace_item(replace(sealed, item=item), event)
        if changes:
            report.updated.append(item.name)
        else:
            report.unchanged += 1
        if rotated is not None:
            await self.store.append_event(rotated)
            report.rotated.append(item.name)

    def _seal(self, item: Item) -> SealedItem:
        # Nothing secret is sealed: the payload is empty; the secret stays in 1Password.
        sealed = self.vault.seal(item, None, None)
        return replace(sealed, item=replace(sealed.item, has_password=item.has_password, has_totp=item.has_totp))


def _title(c: _Candidate | None) -> str:
    if c is None:
        return ""
    if c.item is not None:
        return c.item.title
    return c.current.name if c.current else c.name


def _changes(old: Item, new: Item) -> set[str]:
    fields = ("name", "vault", "username", "url", "tags", "has_totp", "category")
    changed = {f for f in fields if getattr(old, f) != getattr(new, f)}
    if old.external and new.external and old.external.vault_id != new.external.vault_id:
        changed.add("moved")
    return changed
