"""Direct use of a served 1Password item without a jitpass grant ("shadow access").

The Events API reports every fill / copy / reveal of an item in a shared vault. For each usage of an
item jitpass serves, we look for a grant of that item that was active at that moment and whose holder
is the 1Password user (matched by e-mail: `[onepassword.people]` in the policy first, else the
holder's e-mail as the chat platform has it: the Slack profile, or an id that is the e-mail). A usage
with no such grant is recorded as an `access.shadow` audit event (and, when the policy says so, told
to the vault's leads).

Resumable: after each page the cursor, the last usage time and the ids seen at that time are kept in
the store's meta. A cursor the Events API no longer accepts is replaced by a ResetCursor from the
last usage time; usages already handled are skipped. The position (last usage time and the ids seen
at it) is saved after every flagged usage and the cursor after every page, so a kill -9 re-reads at
most one page and flags again at most the one usage whose event was written just before the kill.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

from bot.domain.audit import format_time, parse_time
from bot.domain.errors import SecretSourceError
from bot.domain.model import ONEPASSWORD, AccessRequest, EventDraft, Identity, Item, Status
from bot.domain.policy import Policy
from bot.ports import Clock, ItemUsage, Store, UsageFeed
from bot.services.access import AccessService

__all__ = ["CURSOR_KEY", "ShadowRun", "ShadowWatch"]

log = logging.getLogger("jitpass.onepassword.events")

CURSOR_KEY = "onepassword.events.cursor"
POSITION_KEY = "onepassword.events.position"
MAX_PAGES = 50  # per run; the next run continues from the saved cursor
_GRANTED = {Status.ACTIVE, Status.EXPIRED, Status.REVOKED}


@dataclass
class ShadowRun:
    read: int = 0
    flagged: list[str] = field(default_factory=list)  # "<item> by <email>"
    cursor_reset: bool = False


def held_at(request: AccessRequest, at: datetime) -> bool:
    """Whether the request was an active grant at `at`."""
    if request.status not in _GRANTED or request.starts_at is None or request.starts_at > at:
        return False
    end = request.ended_at or request.ends_at
    return end is None or at < end


class ShadowWatch:
    """Reads item usages and flags those without a grant."""

    def __init__(self, store: Store, feed: UsageFeed, policy: Policy, clock: Clock) -> None:
        self.store = store
        self.feed = feed
        self.policy = policy
        self.clock = clock
        self._lock = asyncio.Lock()

    async def run(self, service: AccessService | None = None) -> ShadowRun:
        """Read every new usage (at most MAX_PAGES pages); returns what was flagged."""
        async with self._lock:
            return await self._run(service)

    async def _run(self, service: AccessService | None) -> ShadowRun:
        result = ShadowRun()
        cursor = await self.store.get_meta(CURSOR_KEY)
        last_at, last_ids = await self._position()
        start = last_at or (self.clock.now() - self.policy.onepassword.events_every)
        items = {i.external.item_id: i for i in await self.store.list_items()
                 if i.source == ONEPASSWORD and i.external is not None}
        for _ in range(MAX_PAGES):
            try:
                page = await self.feed.page(cursor=cursor, start=None if cursor else start)
            except SecretSourceError as exc:
                if exc.reason != "bad_cursor" or cursor is None:
                    raise
                log.warning("event=onepassword_events_cursor_reset reason=%s from=%s", exc.reason,
                            format_time(start))
                result.cursor_reset = True
                cursor, start = None, last_at or start
                continue
            for usage in page.usages:
                if last_at is not None and (usage.at < last_at or (usage.at == last_at and usage.id in last_ids)):
                    continue
                result.read += 1
                item = items.get(usage.item_id)
                flag = item is not None and await self._is_shadow(item, usage, service)
                if last_at is None or usage.at > last_at:
                    last_at, last_ids = usage.at, set()
                last_ids.add(usage.id)
                if flag and item is not None:
                    await self._flag(item, usage, service)
                    await self._save_position(last_at, last_ids)
                    result.flagged.append(f"{item.name} by {usage.email}")
            cursor = page.cursor
            if last_at is not None:
                await self._save_position(last_at, last_ids)
            await self.store.set_meta(CURSOR_KEY, cursor)
            if not page.has_more:
                break
        return result

    async def _save_position(self, at: datetime, ids: set[str]) -> None:
        await self.store.set_meta(POSITION_KEY, json.dumps({"at": format_time(at), "ids": sorted(ids)}))

    async def _position(self) -> tuple[datetime | None, set[str]]:
        raw = await self.store.get_meta(POSITION_KEY)
        if not raw:
            return None, set()
        data = json.loads(raw)
        return parse_time(str(data["at"])), {str(i) for i in data.get("ids") or ()}

    async def _is_shadow(self, item: Item, usage: ItemUsage, service: AccessService | None) -> bool:
        if item.external is None or item.external.vault_id != usage.vault_id:
            return False
        people = self.policy.onepassword
        for request in await self.store.find_requests(item=item.name):
            if not held_at(request, usage.at):
                continue
            if people.is_person(usage.email, request.requester):
                return False
            # No policy entry: the chat platform's own e-mail for the holder (Slack profile).
            if service is not None and await service.email_of(request.requester) == usage.email:
                return False
        return True

    async def _flag(self, item: Item, usage: ItemUsage, service: AccessService | None) -> None:
        actor = Identity(ONEPASSWORD, usage.email, usage.name or usage.email)
        reason = f"{usage.action or 'used'} in 1Password without a jitpass grant"
        await self.store.append_event(EventDraft("access.shadow", actor, None, item.name, item.vault, reason, {
            "source": ONEPASSWORD, "usage_id": usage.id, "action": usage.action, "used_at": format_time(usage.at),
            "email": usage.email, "used_version": usage.used_version,
        }))
        log.warning("event=shadow_access item=%s vault=%s email=%s action=%s", item.name, item.vault, usage.email,
                    usage.action)
        if service is not None and self.policy.onepassword.notify_leads:
            await service.tell_leads(item.vault, f"👀 {usage.name or usage.email} ({usage.email}) used {item.name} "
                                                 f"directly in 1Password ({usage.action or 'used'}) at "
                                                 f"{format_time(usage.at)} without a jitpass grant.")
