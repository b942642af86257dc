"""TeamsNotifier: renders what the core decided as proactive Teams messages.

The approval card goes to the vault's leads channel and is updated in place for every later
state. The secret goes only to the requester's 1:1 chat with the bot (opened on demand when
the request was typed in a channel) and is replaced by an "access ended" card when the grant
ends. Every reference needed later is returned to the core as refs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import tzinfo
from typing import Any

from microsoft_agents.activity import Activity, ActivityTypes

from adapters.teams import cards
from adapters.teams.connector import Connector, ServiceUrlBook, card_activity
from adapters.teams.refs import DELIVERY, LEADS, PERSONAL, VERSION, ConversationRef, RequesterRef
from bot.domain.errors import DeliveryError
from bot.domain.model import AccessRequest, Item, Reveal
from bot.domain.policy import Policy

__all__ = ["TeamsNotifier"]

log = logging.getLogger("jitpass.teams")

RequestLookup = Callable[[str], Awaitable[AccessRequest]]
SaveRefs = Callable[[str, Mapping[str, Any]], Awaitable[object]]


class TeamsNotifier:
    """bot.ports.Notifier for Teams."""

    platform = "teams"

    def __init__(self, policy: Policy, connector: Connector, service_urls: ServiceUrlBook,
                 get_request: RequestLookup, save_refs: SaveRefs) -> None:
        self.policy = policy
        self.connector = connector
        self.service_urls = service_urls
        self.get_request = get_request
        self.save_refs = save_refs

    # -- the leads' card ---------------------------------------------------------------------

    async def request_posted(self, request: AccessRequest, item: Item) -> Mapping[str, Any] | None:
        channel = self.policy.leads_channel(request.vault, self.platform)
        if not channel:
            log.warning("event=teams_no_leads_channel request_id=%s vault=%s note=\"set [leads_channel] teams in "
                        "the policy\"", request.id, request.vault)
            return None
        requester = await self._requester(request)
        tenant = requester.tenant_id if requester else ""
        service_url = (requester.service_url if requester else "") or self.service_urls.for_tenant(tenant)
        if not service_url:
            raise DeliveryError("no Teams service URL is known yet: message the bot once first")
        where = ConversationRef(service_url, channel, tenant)
        posted = await self.connector.send(where, card_activity(cards.approval_card(request, item, self.tz)))
        log.info("event=teams_request_posted request_id=%s conversation_id=%s activity_id=%s", request.id,
                 channel, posted.activity_id)
        return {VERSION: 1, LEADS: posted.to_dict()}

    async def request_updated(self, request: AccessRequest, item: Item) -> Mapping[str, Any] | None:
        leads = ConversationRef.from_refs(request.refs, LEADS)
        if leads is None or not leads.activity_id:
            return None
        await self.connector.update(leads, card_activity(cards.approval_card(request, item, self.tz)))
        log.info("event=teams_request_updated request_id=%s status=%s", request.id, request.status.value)
        return None

    # -- the requester's private card --------------------------------------------------------

    async def deliver_secret(self, request: AccessRequest, reveal: Reveal) -> Mapping[str, Any] | None:
        activity = card_activity(cards.delivery_card(request, reveal, self.tz))
        delivered = ConversationRef.from_refs(request.refs, DELIVERY)
        if delivered is not None and delivered.activity_id:
            # Re-delivery (an extension moved the end): refresh the card the requester already has.
            await self.connector.update(delivered, activity)
            log.info("event=teams_delivery_refreshed request_id=%s", request.id)
            return None
        personal, opened = await self._personal_chat(request)
        delivered = await self.connector.send(personal, activity)
        log.info("event=teams_grant_delivered request_id=%s conversation_id=%s activity_id=%s", request.id,
                 personal.conversation_id, delivered.activity_id)
        refs: dict[str, Any] = {DELIVERY: delivered.to_dict()}
        if opened:
            refs[PERSONAL] = personal.to_dict()
        return refs

    async def secret_revoked(self, request: AccessRequest, item: Item) -> Mapping[str, Any] | None:
        delivered = ConversationRef.from_refs(request.refs, DELIVERY)
        if delivered is None or not delivered.activity_id:
            return None
        await self.connector.update(delivered, card_activity(cards.grant_ended_card(request, item, self.tz)))
        log.info("event=teams_delivery_wiped request_id=%s status=%s", request.id, request.status.value)
        return None

    async def requester_told(self, request: AccessRequest, message: str) -> None:
        personal, opened = await self._personal_chat(request)
        if opened:
            await self.save_refs(request.id, {PERSONAL: personal.to_dict()})
        await self.connector.send(personal, Activity(type=ActivityTypes.message, text=message))

    async def leads_told(self, vault: str, message: str) -> None:
        """Post a notice (direct use of a 1Password item) to the vault's Teams leads channel."""
        channel = self.policy.leads_channel(vault, self.platform)
        service_url = self.service_urls.for_tenant("")
        if not channel or not service_url:
            return
        await self.connector.send(ConversationRef(service_url, channel, ""),
                                  Activity(type=ActivityTypes.message, text=message))

    # -- internals ---------------------------------------------------------------------------

    @property
    def tz(self) -> tzinfo:
        return self.policy.timezone

    async def _requester(self, request: AccessRequest) -> RequesterRef | None:
        """Where the requester reached us; an extension falls back to its grant's reference."""
        found = RequesterRef.from_refs(request.refs)
        if found is None and request.parent_id:
            parent = await self.get_request(request.parent_id)
            found = RequesterRef.from_refs(parent.refs)
        return found

    async def _personal_chat(self, request: AccessRequest) -> tuple[ConversationRef, bool]:
        """The requester's 1:1 chat with the bot, and whether it had to be opened just now."""
        known = ConversationRef.from_refs(request.refs, PERSONAL)
        if known is not None:
            return ConversationRef(known.service_url, known.conversation_id, known.tenant_id), False
        requester = await self._requester(request)
        if requester is None:
            raise DeliveryError(f"{request.id} has no Teams conversation reference")
        if requester.is_personal:
            return requester.personal(), False
        if request.parent_id:
            parent = await self.get_request(request.parent_id)
            known = ConversationRef.from_refs(parent.refs, PERSONAL)
            if known is not None:
                return ConversationRef(known.service_url, known.conversation_id, known.tenant_id), True
        opened = await self.connector.open_personal_chat(requester.service_url, requester.tenant_id,
                                                         requester.user_id, requester.bot_id)
        log.info("event=teams_personal_chat_opened request_id=%s conversation_id=%s", request.id,
                 opened.conversation_id)
        return opened, True

