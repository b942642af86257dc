"""TeamsNotifier: renders what the core decided as proactive Teams messages.

The approval card goes to the vault's leads channel and is updated in place for every later
state. The secret goes only to the requester's 1:1 chat with the bot (opened on demand when
the request was typed in a channel) and is replaced by an "access ended" card when the grant
ends. Every reference needed later is returned to the core as refs.

Intent first: the connector has no history to search, so `delivery_target` posts a placeholder card
(no secret) to the 1:1 chat and returns its activity id; the core stores it, and only then does
`deliver_secret` put the secret into that same activity (PUT). A crash at any point leaves at most a
placeholder, never a secret whose message id is unknown: the wipe always knows what to replace.
Every method returns `Sent` or `Failed` (each connector call bounded by the call timeout).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import tzinfo
from typing import Any

import aiohttp
from microsoft_agents.activity import Activity, ActivityTypes

from adapters.teams import cards
from adapters.teams.connector import Connector, ServiceUrlBook, card_activity
from adapters.teams.refs import DELIVERY, LEADS, PERSONAL, VERSION, ConversationRef, RequesterRef
from bot.domain.errors import DeliveryError, refused_for_good
from bot.domain.model import AccessRequest, Item, Reveal
from bot.domain.policy import Policy
from bot.ports import Failed, NotifyResult, Sent

__all__ = ["TeamsNotifier"]

log = logging.getLogger("jitpass.teams")

RequestLookup = Callable[[str], Awaitable[AccessRequest]]
SaveRefs = Callable[[str, Mapping[str, Any]], Awaitable[object]]


class TeamsNotifier:
    """bot.ports.Notifier for Teams."""

    platform = "teams"

    def __init__(self, policy: Policy, connector: Connector, service_urls: ServiceUrlBook,
                 get_request: RequestLookup, save_refs: SaveRefs, *, timeout: float = 10.0) -> None:
        self.policy = policy
        self.connector = connector
        self.service_urls = service_urls
        self.get_request = get_request
        self.save_refs = save_refs
        self.timeout = timeout
        self._opened: dict[str, ConversationRef] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    # -- the leads' card ---------------------------------------------------------------------

    async def request_posted(self, request: AccessRequest, item: Item, *, attempt: int = 1) -> NotifyResult:
        # `attempt` unused: the Bot Connector cannot list a channel's messages, so a card the connector took
        # just before a crash (its id never saved) cannot be found again; the retry posts a second card.
        if ConversationRef.from_refs(request.refs, LEADS) is not None:
            return Sent(done=False)  # posted (and saved) before: never twice
        channel = self.policy.leads_channel(request.vault, self.platform)
        if not channel:
            log.warning("event=teams_no_leads_channel request_id=%s vault=%s note=\"set [leads_channel] teams in "
                        "the policy\"", request.id, request.vault)
            return Failed("no_leads_channel", permanent=True)

        async def post() -> Mapping[str, Any]:
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

        return await self._run("request_posted", post)

    async def request_updated(self, request: AccessRequest, item: Item) -> NotifyResult:
        leads = ConversationRef.from_refs(request.refs, LEADS)
        if leads is None or not leads.activity_id:
            return Sent(done=False)

        async def update() -> None:
            await self.connector.update(leads, card_activity(cards.approval_card(request, item, self.tz)))
            log.info("event=teams_request_updated request_id=%s status=%s", request.id, request.status.value)

        return await self._run("request_updated", update)

    # -- the requester's private card --------------------------------------------------------

    async def delivery_target(self, request: AccessRequest) -> NotifyResult:
        """The activity that will hold the secret: the delivered card, or a new placeholder card."""
        delivered = ConversationRef.from_refs(request.refs, DELIVERY)
        if delivered is not None and delivered.activity_id:
            return Sent()

        async def placeholder() -> Mapping[str, Any]:
            personal, opened = await self._personal_chat(request)
            card = cards.request_sent_card(request, self.tz, note="Approved: your access is on its way.")
            posted = await self.connector.send(personal, card_activity(card))
            refs: dict[str, Any] = {DELIVERY: posted.to_dict()}
            if opened:
                refs[PERSONAL] = personal.to_dict()
            return refs

        return await self._run("delivery_target", placeholder)

    async def deliver_secret(self, request: AccessRequest, reveal: Reveal) -> NotifyResult:
        delivered = ConversationRef.from_refs(request.refs, DELIVERY)
        if delivered is None or not delivered.activity_id:
            return Failed("no_delivery_target")

        async def put() -> None:
            await self.connector.update(delivered, card_activity(cards.delivery_card(request, reveal, self.tz)))
            log.info("event=teams_grant_delivered request_id=%s conversation_id=%s activity_id=%s", request.id,
                     delivered.conversation_id, delivered.activity_id)

        result = await self._run("deliver_secret", put)
        return Sent({"delivery": {"via": "teams"}}) if isinstance(result, Sent) else result

    async def secret_revoked(self, request: AccessRequest, item: Item) -> NotifyResult:
        delivered = ConversationRef.from_refs(request.refs, DELIVERY)
        if delivered is None or not delivered.activity_id:
            return Sent(done=False)

        async def wipe() -> None:
            await self.connector.update(delivered, card_activity(cards.grant_ended_card(request, item, self.tz)))
            log.info("event=teams_delivery_wiped request_id=%s status=%s", request.id, request.status.value)

        return await self._run("secret_revoked", wipe)

    async def requester_told(self, request: AccessRequest, message: str, *, reply: bool = False) -> NotifyResult:
        """Tell the requester in their personal chat (a reply, too: Teams has no per-command reply URL)."""
        async def tell() -> Mapping[str, Any] | None:
            personal, opened = await self._personal_chat(request)
            await self.connector.send(personal, Activity(type=ActivityTypes.message, text=message))
            return {PERSONAL: personal.to_dict()} if opened else None

        return await self._run("requester_told", tell)

    async def leads_told(self, vault: str, message: str) -> NotifyResult:
        """Post a notice (direct use of a 1Password item) to the vault's Teams leads channel."""
        channel = self.policy.leads_channel(vault, self.platform)
        service_url = self.service_urls.for_tenant("")
        if not channel or not service_url:
            return Sent(done=False)

        async def post() -> None:
            await self.connector.send(ConversationRef(service_url, channel, ""),
                                      Activity(type=ActivityTypes.message, text=message))

        return await self._run("leads_told", post)

    # -- internals ---------------------------------------------------------------------------

    async def _run(self, what: str, call: Callable[[], Awaitable[Mapping[str, Any] | None]]) -> NotifyResult:
        """One notifier call under the call timeout; connector and SDK failures become `Failed`."""
        try:
            async with asyncio.timeout(self.timeout):
                refs = await call()
        except TimeoutError:
            return Failed(f"{what}:timeout")
        except aiohttp.ClientResponseError as exc:
            retry = exc.headers.get("Retry-After", "") if exc.headers else ""
            retry_after = float(retry) if retry.replace(".", "", 1).isdigit() else None
            # 400 BadArgument, 401/403 (the bot may not post there: the app was removed for this user), 404 (no
            # such conversation or activity), 413 (too big): retrying the same call cannot help. 429 and 5xx can.
            return Failed(f"{what}:http_{exc.status}", retry_after=retry_after,
                          permanent=refused_for_good(exc.status))
        except DeliveryError as exc:
            log.warning("event=teams_call_refused what=%s error=%s", what, exc.message)
            return Failed(f"{what}:refused")
        except (aiohttp.ClientError, OSError) as exc:
            return Failed(f"{what}:{type(exc).__name__}")
        return Sent(refs)

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
        # Effects of one request run concurrently (a message and the delivery): open the chat once.
        async with self._opening.setdefault(requester.user_id, asyncio.Lock()):
            opened = self._opened.get(requester.user_id)
            if opened is None:
                opened = await self.connector.open_personal_chat(requester.service_url, requester.tenant_id,
                                                                 requester.user_id, requester.bot_id)
                log.info("event=teams_personal_chat_opened request_id=%s conversation_id=%s", request.id,
                         opened.conversation_id)
                self._opened[requester.user_id] = opened
        return opened, True

