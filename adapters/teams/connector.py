"""Outbound calls to the Bot Connector service: which service URLs we trust, and the REST calls.

Proactive messages (the leads' card, the 1:1 delivery, updates in place) need the
`serviceUrl` Teams gave us in an inbound activity. We check it against the known Bot
Framework / Teams hosts before every call (unless validation is switched off), remember the
latest one per tenant in memory and in the store's meta (it must survive a restart), and
take a connector client from the Agents SDK's client factory, which attaches an Entra
token when app credentials are configured and none in anonymous mode.

`SharedClientFactory` is that factory with long-lived clients: the SDK's own makes a new aiohttp
session (so a new TCP and TLS connection, and a package-metadata scan for its User-Agent) for every
outbound call and two for every inbound activity; on the approve -> password path that was a fifth
of the event loop's time and most of the Teams tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from microsoft_agents.activity import (
    Activity,
    ActivityTypes,
    Attachment,
    ConversationAccount,
    ConversationParameters,
    RoleTypes,
)
from microsoft_agents.hosting.core import OutboundHostValidator, TurnContext
from microsoft_agents.hosting.core.authorization import AuthenticationConstants, ClaimsIdentity, Connections
from microsoft_agents.hosting.core.connector import ConnectorClientBase
from microsoft_agents.hosting.core.connector.client import UserTokenClient
from microsoft_agents.hosting.core.connector.teams import TeamsConnectorClient
from microsoft_agents.hosting.core.rest_channel_service_client_factory import RestChannelServiceClientFactory

from adapters.teams.cards import CARD_CONTENT_TYPE
from adapters.teams.refs import ConversationRef
from bot.domain.errors import DeliveryError
from bot.ports import ChatMetrics, NoMetrics, Store

__all__ = ["SERVICE_URL_HOSTS", "Connector", "MemberDirectory", "ServiceUrlBook", "ServiceUrlValidator",
           "SharedClientFactory", "card_activity", "without_nulls"]

log = logging.getLogger("jitpass.teams")

# Where Teams and the Bot Framework channels live (public cloud, GCC, GCC High, DoD).
SERVICE_URL_HOSTS = ("botframework.com", "botframework.azure.us", "smba.trafficmanager.net",
                     "teams.microsoft.com", "teams.microsoft.us")
META_KEY = "teams.service_url"
# Throttling and transient errors Microsoft asks bots to retry with a back-off.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
ATTEMPTS = 3
MAX_RETRY_AFTER = 3.0  # seconds; an approval click waits for these calls


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServiceUrlValidator(OutboundHostValidator):
    """https on the known Bot Framework / Teams hosts only; in anonymous (local development)
    mode loopback URLs are accepted too, so Microsoft 365 Agents Playground works."""

    def __init__(self, *, enabled: bool, allow_loopback: bool) -> None:
        super().__init__(list(SERVICE_URL_HOSTS), enabled=enabled, include_default_microsoft_hosts=False)
        self.allow_loopback = allow_loopback

    def is_allowed(self, url: Any) -> bool:
        if self.enabled and self.allow_loopback and _is_loopback(str(url)):
            return True
        return bool(super().is_allowed(url))


@dataclass
class _Slot:
    """One shared client, the token its session carries, and how many calls or turns hold it now."""

    token: str
    client: _SharedConnectorClient | _SharedUserTokenClient
    users: int = 0
    retired: bool = False  # a newer token replaced it: closed when its last user lets go


class _SharedConnectorClient(TeamsConnectorClient):
    """A connector client whose `close()` (called by the SDK after each turn, by `Connector` after each
    call) gives it back to its factory instead of closing its session."""

    def __init__(self, factory: SharedClientFactory, key: tuple[str, ...], endpoint: str, token: str) -> None:
        super().__init__(endpoint=endpoint, token=token)
        self._factory, self._key = factory, key

    async def close(self) -> None:
        await self._factory.release(self._key, self)

    async def shut(self) -> None:
        await super().close()


class _SharedUserTokenClient(UserTokenClient):
    """The same for the user-token client the SDK makes for every turn (jitpass uses no OAuth flow)."""

    def __init__(self, factory: SharedClientFactory, key: tuple[str, ...], endpoint: str, token: str,
                 app_id: str | None) -> None:
        super().__init__(endpoint=endpoint, token=token, app_id=app_id)
        self._factory, self._key = factory, key

    async def close(self) -> None:
        await self._factory.release(self._key, self)

    async def shut(self) -> None:
        await super().close()


class SharedClientFactory(RestChannelServiceClientFactory):
    """The SDK's client factory, handing out one long-lived client per endpoint and token.

    The token is asked of the connection's provider for every client handed out, exactly as the SDK's
    factory does (MSAL answers from its cache until the token is due for renewal); a client whose token
    changed is retired and closed when the last call or turn using it is done, so a renewed token is
    used from the next call on. Agentic and Copilot Studio requests take the SDK's own path."""

    def __init__(self, connections: Connections) -> None:
        super().__init__(connections)
        self.connections = connections
        self._slots: dict[tuple[str, ...], _Slot] = {}
        self._retired: list[_Slot] = []

    async def create_connector_client(self, context: TurnContext | None, claims_identity: ClaimsIdentity,
                                      service_url: str, audience: str, scopes: list[str] | None = None,
                                      use_anonymous: bool = False) -> ConnectorClientBase:
        if context is not None and (context.activity.is_agentic_request() or (
                context.activity.recipient and context.activity.recipient.role == RoleTypes.connector_user)):
            return await super().create_connector_client(context, claims_identity, service_url, audience, scopes,
                                                         use_anonymous)
        if not service_url or not audience:
            raise TypeError("create_connector_client needs a service_url and an audience")
        provider = self._ANONYMOUS_TOKEN_PROVIDER if use_anonymous else \
            self.connections.get_token_provider(claims_identity, service_url)
        token = await provider.get_access_token(audience, scopes or claims_identity.get_token_scope())
        key = ("connector", service_url, audience, claims_identity.get_app_id() or "")
        client = self._take(key, token, lambda: _SharedConnectorClient(self, key, service_url, token))
        assert isinstance(client, _SharedConnectorClient)
        return client

    async def create_user_token_client(self, context: TurnContext, claims_identity: ClaimsIdentity,
                                       use_anonymous: bool = False) -> UserTokenClient:
        if context.activity.is_agentic_request():
            return await super().create_user_token_client(context, claims_identity, use_anonymous)
        app_id = claims_identity.get_app_id()
        endpoint = self._token_service_endpoint
        token = ""
        if not use_anonymous:
            provider = self.connections.get_token_provider(claims_identity, endpoint)
            token = await provider.get_access_token(self._token_service_audience, claims_identity.get_token_scope())
            if not token:
                raise ValueError("Failed to obtain token for user token client")
        key = ("user_token", endpoint, app_id or "")
        client = self._take(key, token, lambda: _SharedUserTokenClient(self, key, endpoint, token, app_id))
        assert isinstance(client, _SharedUserTokenClient)
        return client

    def _take(self, key: tuple[str, ...], token: str,
              make: Callable[[], _SharedConnectorClient | _SharedUserTokenClient]) -> Any:
        """The client for `key` with this token (a new one when the token changed), held once more."""
        slot = self._slots.get(key)
        if slot is None or slot.token != token:
            if slot is not None:
                slot.retired = True
                self._retired.append(slot)
            slot = self._slots[key] = _Slot(token, make())
        slot.users += 1
        return slot.client

    async def release(self, key: tuple[str, ...], client: _SharedConnectorClient | _SharedUserTokenClient) -> None:
        """A call or turn is done with `client`; a retired client is closed once nobody holds it."""
        current = self._slots.get(key)
        slot = current if current is not None and current.client is client else next(
            (s for s in self._retired if s.client is client), None)
        if slot is None:
            return
        slot.users = max(0, slot.users - 1)
        if slot.retired and slot.users == 0:
            self._retired.remove(slot)
            await slot.client.shut()

    async def close(self) -> None:
        """Close every client (the server is stopping)."""
        slots = [*self._slots.values(), *self._retired]
        self._slots, self._retired = {}, []
        for slot in slots:
            with contextlib.suppress(Exception):  # a session already gone: nothing left to release
                await slot.client.shut()


class ServiceUrlBook:
    """The latest service URL seen per tenant, kept in memory and in the store's meta."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.by_tenant: dict[str, str] = {}
        self.latest: str = ""

    async def load(self) -> None:
        raw = await self.store.get_meta(META_KEY)
        if not raw:
            return
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("event=teams_service_urls_unreadable key=%s", META_KEY)
            return
        if isinstance(data, dict):
            tenants = data.get("tenants")
            self.by_tenant = {str(k): str(v) for k, v in tenants.items()} if isinstance(tenants, dict) else {}
            self.latest = str(data.get("latest") or "")

    async def remember(self, tenant_id: str, service_url: str) -> None:
        """Note the service URL of an authenticated inbound activity (written only when it changes)."""
        if not service_url:
            return
        changed = self.latest != service_url or (tenant_id and self.by_tenant.get(tenant_id) != service_url)
        if not changed:
            return
        self.latest = service_url
        if tenant_id:
            self.by_tenant[tenant_id] = service_url
        await self.store.set_meta(META_KEY, json.dumps({"latest": self.latest, "tenants": self.by_tenant},
                                                       sort_keys=True))
        log.info("event=teams_service_url tenant=%s service_url=%s", tenant_id or "-", service_url)

    def for_tenant(self, tenant_id: str) -> str:
        return self.by_tenant.get(tenant_id, "") or self.latest


def card_activity(card: dict[str, Any], *, conversation_id: str = "", activity_id: str = "",
                  text: str = "") -> Activity:
    """A message activity carrying one Adaptive Card, and `text` above it when given (never a secret:
    Teams shows it in notifications)."""
    activity = Activity(type=ActivityTypes.message,
                        attachments=[Attachment(content_type=CARD_CONTENT_TYPE, content=card)])
    if text:  # never `text=None`: the SDK would send `"text": null`, which the connector refuses
        activity.text = text
    if conversation_id:
        activity.conversation = ConversationAccount(id=conversation_id)
    if activity_id:
        activity.id = activity_id
    return activity


def without_nulls(activity: Activity) -> Activity:
    """The activity without the properties that are None.

    The SDK's send and update calls serialise with `exclude_unset` only, so a property set to None
    goes out as `null`; the Bot Connector (and Agents Playground) refuse `null` wherever the schema
    has a string or object: 400 BadArgument "Invalid input". Card content is left as it is.
    """
    return Activity.model_validate(activity.model_dump(by_alias=True, exclude_none=True, mode="json"))


class Connector:
    """Bot Connector REST calls for proactive messages, through the Agents SDK's connector client."""

    def __init__(self, factory: RestChannelServiceClientFactory, validator: ServiceUrlValidator,
                 app_id: str | None, *, retry_delay: float = 0.25) -> None:
        self.factory = factory
        self.validator = validator
        self.app_id = app_id
        self.retry_delay = retry_delay
        self.metrics: ChatMetrics = NoMetrics()  # the adapter sets the server's at start

    @asynccontextmanager
    async def client(self, service_url: str) -> AsyncIterator[ConnectorClientBase]:
        if not self.validator.is_allowed(service_url):
            raise DeliveryError(f"service URL {service_url!r} is not a known Teams / Bot Framework host")
        # The same identity the SDK's continue_conversation uses: our app id, or none at all.
        anonymous = not self.app_id
        identity = ClaimsIdentity() if anonymous else ClaimsIdentity({
            AuthenticationConstants.AUDIENCE_CLAIM: self.app_id,
            AuthenticationConstants.APP_ID_CLAIM: self.app_id,
        })
        client = await self.factory.create_connector_client(
            None, identity, service_url, AuthenticationConstants.AGENTS_SDK_SCOPE, use_anonymous=anonymous)
        try:
            yield client
        finally:
            await client.close()

    async def _retrying[T](self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a connector call, again after a pause when Teams throttles (429) or hiccups (502-504)."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await call()
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                self.metrics.chat_api_error("teams", method, "timeout" if isinstance(exc, TimeoutError) else "network")
                raise
            except aiohttp.ClientResponseError as exc:
                self.metrics.chat_api_error("teams", method, str(exc.status))
                if exc.status not in RETRY_STATUSES or attempt == ATTEMPTS:
                    raise
                delay = self.retry_delay * 2 ** (attempt - 1)
                retry_after = exc.headers.get("Retry-After", "") if exc.headers else ""
                if retry_after.replace(".", "", 1).isdigit():
                    if float(retry_after) > MAX_RETRY_AFTER:
                        # Longer than a call may wait: give it back (with its Retry-After), so the effects
                        # worker retries after it (capped by JITPASS_RETRY_AFTER_MAX) holding no call open.
                        raise
                    delay = float(retry_after)
                log.warning("event=teams_connector_retry status=%s attempt=%s delay=%.2f", exc.status, attempt, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, where: ConversationRef, activity: Activity) -> ConversationRef:
        """Post a new message; returns the reference with the new message's id."""
        activity.conversation = ConversationAccount(id=where.conversation_id)
        if where.tenant_id:
            activity.conversation.tenant_id = where.tenant_id
        outgoing = without_nulls(activity)
        async with self.client(where.service_url) as client:
            response = await self._retrying(
                "send_to_conversation",
                lambda: client.conversations.send_to_conversation(where.conversation_id, outgoing))
        return where.with_activity(response.id or "")

    async def update(self, where: ConversationRef, activity: Activity) -> None:
        """Replace one of our messages in place (PUT …/activities/{id})."""
        if not where.activity_id:
            raise DeliveryError("no message to update")
        activity.id = where.activity_id
        activity.conversation = ConversationAccount(id=where.conversation_id)
        outgoing = without_nulls(activity)
        async with self.client(where.service_url) as client:
            await self._retrying(
                "update_activity",
                lambda: client.conversations.update_activity(where.conversation_id, where.activity_id, outgoing))

    async def member_email(self, service_url: str, conversation_id: str, user_id: str) -> str | None:
        """A conversation member's directory e-mail (TeamsChannelAccount `email`); None for a non-member (404)."""
        async with self.client(service_url) as client:
            try:
                member = await self._retrying(
                    "get_conversation_member",
                    lambda: client.conversations.get_conversation_member(conversation_id, user_id))
            except aiohttp.ClientResponseError as exc:
                if exc.status == 404:  # MemberNotFoundInConversation
                    return None
                raise
        email = (member.model_extra or {}).get("email")
        return email.strip().lower() if isinstance(email, str) and "@" in email else None

    async def open_personal_chat(self, service_url: str, tenant_id: str, user_id: str, bot_id: str) -> ConversationRef:
        """The 1:1 chat between the bot and a user (Teams returns the existing one if there is one)."""
        raw: dict[str, Any] = {"isGroup": False, "members": [{"id": user_id}]}
        if bot_id:
            raw["bot"] = {"id": bot_id}
        if tenant_id:
            raw |= {"tenantId": tenant_id, "channelData": {"tenant": {"id": tenant_id}}}
        parameters = ConversationParameters.model_validate(raw)
        async with self.client(service_url) as client:
            created = await self._retrying("create_conversation",
                                           lambda: client.conversations.create_conversation(parameters))
        if not created.id:
            raise DeliveryError("the connector created no conversation")
        return ConversationRef(created.service_url or service_url, created.id, tenant_id)


class MemberDirectory:
    """Teams people's e-mail addresses from the Bot Connector (`GET v3/conversations/{id}/members/{user}`),
    asked in the conversation an activity came from and kept for `ttl` seconds per person.

    Only the `email` the tenant's directory gives counts (not `userPrincipalName`, which need not be a
    mailbox). A member Teams does not know there (404), no e-mail or a failed call is "": the account is
    then only itself (fail closed).

    The lookup runs before a turn is answered, so it is bounded by `timeout` (no retry waits), and a failed
    or timed-out one is remembered for `retry_after` seconds: a slow or unreachable connector costs each
    person one short wait per `retry_after`, never every message and card press."""

    def __init__(self, connector: Connector, *, ttl: float = 300.0, timeout: float = 2.0,
                 retry_after: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.connector = connector
        self.ttl = ttl
        self.timeout = timeout
        self.retry_after = retry_after
        self.clock = clock
        self._emails: dict[str, tuple[float, str]] = {}
        self._asking: dict[str, asyncio.Future[str]] = {}

    async def email(self, object_id: str, teams_id: str, service_url: str, conversation_id: str) -> str:
        """The person's directory e-mail, lower case, or "" (see the class). Presses that arrive while one
        lookup for the person is in flight wait for that one instead of asking again."""
        cached = self._emails.get(object_id)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        asking = self._asking.get(object_id)
        if asking is None:
            asking = asyncio.ensure_future(self._look_up(object_id, teams_id, service_url, conversation_id))
            self._asking[object_id] = asking
            asking.add_done_callback(lambda _: self._asking.pop(object_id, None))
        return await asyncio.shield(asking)

    async def _look_up(self, object_id: str, teams_id: str, service_url: str, conversation_id: str) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                found = await self.connector.member_email(service_url, conversation_id, teams_id or object_id)
        except (DeliveryError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("event=teams_email_lookup_failed error=%s", type(exc).__name__)
            self._emails[object_id] = (self.clock() + self.retry_after, "")
            return ""
        self._emails[object_id] = (self.clock() + self.ttl, found or "")
        return found or ""
