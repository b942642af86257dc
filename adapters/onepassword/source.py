"""1Password behind jitpass's ports: Connect as an ItemFeed and SecretSource, the Events API as a UsageFeed.

Every Connect failure becomes a SecretSourceError whose message the requester may read and whose
detail (status, server message) goes to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from bot.domain.errors import SecretSourceError
from bot.domain.model import ONEPASSWORD, SealedItem, Secret
from bot.ports import ItemUsage, SecretRead, SourceItem, SourceSummary, SourceVault, UsagePage

from .client import ConnectClient, EventsClient, OnePasswordError
from .items import code_of, password_fields, source_item, summary

__all__ = ["ConnectSource", "EventsFeed", "explain"]

log = logging.getLogger("jitpass.onepassword")

_WORDS = {
    "unreachable": "1Password is not reachable right now; nothing was shown. Try again in a few minutes.",
    "server_error": "1Password is not reachable right now; nothing was shown. Try again in a few minutes.",
    "rate_limited": "1Password is not reachable right now (too many requests); nothing was shown. "
                    "Try again in a minute.",
    "unauthorized": "1Password refused jitpass's Connect token; nothing was shown. An admin must check "
                    "OP_CONNECT_TOKEN (a token of this Connect server's account).",
    "forbidden": "jitpass may no longer read this item's 1Password vault; nothing was shown. An admin must add "
                 "the vault to the Connect token.",
    "not_found": "This item is no longer in 1Password; nothing was shown.",
    "bad_request": "1Password did not accept jitpass's request; nothing was shown.",
    "bad_response": "1Password answered something jitpass cannot read; nothing was shown.",
}


def explain(error: OnePasswordError) -> SecretSourceError:
    """The SecretSourceError for a failed call: requester-fit message, reason, and the detail for the log."""
    return SecretSourceError(_WORDS.get(error.reason, _WORDS["unreachable"]), source=ONEPASSWORD,
                             reason=error.reason, detail=str(error))


class ConnectSource:
    """Items of the served 1Password vaults, read through a Connect server."""

    source = ONEPASSWORD

    def __init__(self, client: ConnectClient, fingerprint: Callable[[Secret], str]) -> None:
        self.client = client
        self._fingerprint = fingerprint

    async def close(self) -> None:
        await self.client.close()

    async def vaults(self) -> list[SourceVault]:
        try:
            docs = await self.client.vaults()
        except OnePasswordError as exc:
            raise explain(exc) from None
        return [SourceVault(id=str(d.get("id")), title=str(d.get("name") or "")) for d in docs]

    async def summaries(self, vault_id: str) -> list[SourceSummary]:
        try:
            docs = await self.client.items(vault_id)
        except OnePasswordError as exc:
            raise explain(exc) from None
        return [s for s in (summary(vault_id, d) for d in docs) if s is not None]

    async def item(self, vault_id: str, item_id: str) -> SourceItem:
        try:
            doc = await self.client.item(vault_id, item_id)
        except OnePasswordError as exc:
            raise explain(exc) from None
        return source_item(vault_id, doc, self._fingerprint)

    async def read(self, sealed: SealedItem, now: datetime) -> SecretRead:
        """Fetch this one item now; its password and current code, nothing kept."""
        ref = sealed.item.external
        if ref is None:
            raise SecretSourceError("This item has no 1Password reference; nothing was shown.", source=self.source,
                                    reason="bad_item")
        try:
            doc = await self.client.item(ref.vault_id, ref.item_id)
        except OnePasswordError as exc:
            raise explain(exc) from None
        passwords = [f for f in password_fields(doc) if f.get("value")]
        if len(passwords) != 1:
            what = "no password" if not passwords else f"{len(passwords)} password fields"
            raise SecretSourceError(f"The 1Password item for {sealed.item.name} now has {what}; nothing was shown. "
                                    "Ask an admin to fix the item in 1Password.", source=self.source,
                                    reason="bad_item")
        password = Secret(str(passwords[0]["value"]))
        return SecretRead(password=password, code=code_of(doc, now), revision=self._fingerprint(password),
                          version=int(doc.get("version") or 0))


class EventsFeed:
    """Item usages from the Events API (cursor-based)."""

    def __init__(self, client: EventsClient, *, limit: int = 100) -> None:
        self.client = client
        self.limit = limit

    async def close(self) -> None:
        await self.client.close()

    async def page(self, *, cursor: str | None, start: datetime | None) -> UsagePage:
        try:
            data = await self.client.item_usages(
                cursor=cursor, limit=self.limit,
                start_time=start.astimezone(UTC).isoformat().replace("+00:00", "Z") if start else None)
        except OnePasswordError as exc:
            if exc.reason == "bad_request" and cursor:
                raise SecretSourceError("the stored Events API cursor is no longer valid", source=ONEPASSWORD,
                                        reason="bad_cursor", detail=str(exc)) from None
            words = ("the Events API refused OP_EVENTS_TOKEN (expired, revoked, or without the item usage "
                     "feature)" if exc.reason == "unauthorized" else f"the Events API could not be read ({exc.reason})")
            raise SecretSourceError(words, source=ONEPASSWORD, reason=exc.reason, detail=str(exc)) from None
        usages = []
        for raw in data["items"]:
            usage = _usage(raw)
            if usage is None:
                log.warning("event=onepassword_usage_unreadable uuid=%s", str(raw.get("uuid", ""))[:40])
                continue
            usages.append(usage)
        return UsagePage(cursor=data["cursor"], has_more=data["has_more"], usages=tuple(usages))


def _usage(raw: object) -> ItemUsage | None:
    if not isinstance(raw, dict):
        return None
    user = raw.get("user") if isinstance(raw.get("user"), dict) else {}
    assert isinstance(user, dict)
    try:
        at = datetime.fromisoformat(str(raw["timestamp"]).replace("Z", "+00:00"))
        return ItemUsage(id=str(raw["uuid"]), at=at if at.tzinfo else at.replace(tzinfo=UTC),
                         vault_id=str(raw["vault_uuid"]), item_id=str(raw["item_uuid"]),
                         action=str(raw.get("action") or ""), email=str(user.get("email") or "").lower(),
                         name=str(user.get("name") or ""), used_version=int(raw.get("used_version") or 0))
    except (KeyError, ValueError, TypeError):
        return None
