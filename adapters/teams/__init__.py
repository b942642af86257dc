"""Teams adapter: `POST /api/messages` through the Microsoft 365 Agents SDK, and the one-time report
downloads (`GET /reports/{token}/{filename}`) its `report` command links to.

`TeamsAdapter(settings)` is a `bot.ports.ChatAdapter`. With app credentials
(`CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID` / `CLIENTSECRET` / `TENANTID`) every
request must carry a Bot Framework JWT; without them the endpoint is anonymous, for local
development with Microsoft 365 Agents Playground only, and says so loudly at start.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from microsoft_agents.activity import Activity
from microsoft_agents.authentication.msal import MsalConnectionManager
from microsoft_agents.hosting.aiohttp import CloudAdapter
from microsoft_agents.hosting.core import TurnContext
from pydantic import ValidationError

from adapters.downloads import ROUTE as DOWNLOAD_ROUTE
from adapters.downloads import ReportLinks, redact_access_log
from adapters.teams.agent import TeamsAgent, apology, report_unexpected
from adapters.teams.auth import CONNECTION, InboundAuth, auth_configuration
from adapters.teams.connector import (
    Connector,
    MemberDirectory,
    ServiceUrlBook,
    ServiceUrlValidator,
    SharedClientFactory,
)
from adapters.teams.notifier import TeamsNotifier
from bot.domain.admission import Admission
from bot.domain.config import Settings
from bot.ports import ChatCore

__all__ = ["TeamsAdapter"]

log = logging.getLogger("jitpass.teams")

ROUTE = "/api/messages"


class _AnonymousNoise(logging.Filter):
    """In anonymous mode the SDK warns on every turn that its user-token client has no app id:
    true, expected, and noise that hides the one warning that matters (the mode itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("App ID is not provided")


_ANONYMOUS_NOISE = _AnonymousNoise()
_USER_TOKEN_LOG = logging.getLogger("microsoft_agents.hosting.core.connector.client.user_token_client")


class _OneLine(logging.Filter):
    """The SDK logs some failures with their whole traceback, and pydantic's multi-line report of a
    refused activity (with the values it was sent). jitpass logs its own line for each of those
    (`teams_bad_request`, `teams_error` with an error id), so the SDK's record becomes one line at
    DEBUG, its traceback a second DEBUG line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or record.levelno >= logging.WARNING:
            if record.exc_info:
                log.debug("event=teams_sdk_trace logger=%s trace=%r", record.name,
                          "".join(traceback.format_exception(*record.exc_info))[-4000:])
            first_line = record.getMessage().splitlines()[0] if record.getMessage() else ""
            record.msg, record.args = first_line[:300], None
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_ONE_LINE = _OneLine()


class _MemberNotFound(logging.Filter):
    """The SDK logs an ERROR for every non-200 answer; a 404 for a conversation member is how Teams says
    "not in this conversation" (the e-mail lookup then gives none): expected, so DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno >= logging.WARNING and "/members/" in message and message.rstrip().endswith("404"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_MEMBER_NOT_FOUND = _MemberNotFound()
_CONNECTOR_LOG = logging.getLogger("microsoft_agents.hosting.core.connector.client.connector_client")
# The SDK loggers that log a refused activity or a failed turn with a traceback.
_SDK_TRACEBACK_LOGS = ("microsoft_agents.activity.activity", "microsoft_agents.hosting.core.app.agent_application")


class TeamsAdapter:
    """Mounts /api/messages; at start registers the Teams notifier with the core."""

    platform = "teams"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # JITPASS_MAX_RUNNING / JITPASS_MAX_QUEUED: the bound on core work started from Teams.
        self.admission = Admission(settings.max_running, settings.max_queued)
        self.auth_config = auth_configuration(settings)
        self.app_id = settings.teams_app_id or None
        self.inbound_auth = InboundAuth(self.auth_config) if self.app_id else None
        self.validator = ServiceUrlValidator(enabled=settings.teams_service_url_validation,
                                             allow_loopback=self.app_id is None)
        self.connections = MsalConnectionManager(connections_configurations={CONNECTION: self.auth_config})
        # One long-lived connector client per service URL and token, for inbound turns and outbound calls alike.
        self.client_factory = SharedClientFactory(self.connections)
        self.cloud = CloudAdapter(channel_service_client_factory=self.client_factory, host_validator=self.validator)
        self.cloud.on_turn_error = self._on_turn_error
        self.connector = Connector(self.client_factory, self.validator, self.app_id)
        self.agent: TeamsAgent | None = None
        self.service_urls: ServiceUrlBook | None = None
        self.report_links: ReportLinks | None = None
        # Report links must open in the admin's browser: the public address, not the bind address.
        self.public_url = (settings.public_url or f"http://localhost:{settings.port}").rstrip("/")
        redact_access_log()
        if self.app_id is None and _ANONYMOUS_NOISE not in _USER_TOKEN_LOG.filters:
            _USER_TOKEN_LOG.addFilter(_ANONYMOUS_NOISE)
        if _MEMBER_NOT_FOUND not in _CONNECTOR_LOG.filters:
            _CONNECTOR_LOG.addFilter(_MEMBER_NOT_FOUND)
        for name in _SDK_TRACEBACK_LOGS:
            if _ONE_LINE not in logging.getLogger(name).filters:
                logging.getLogger(name).addFilter(_ONE_LINE)

    # -- ChatAdapter -----------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(ROUTE, self.messages)
        # GET only: a HEAD (link checkers, previews) must not use up a one-time link.
        app.router.add_get(DOWNLOAD_ROUTE, self.download, allow_head=False)

    async def start(self, core: ChatCore) -> None:
        self.connector.metrics = core.metrics
        self.service_urls = ServiceUrlBook(core.store)
        await self.service_urls.load()
        notifier = TeamsNotifier(core.policy, self.connector, self.service_urls, core.access.get_request,
                                 core.access.save_refs, timeout=self.settings.call_timeout)
        core.access.register_notifier(notifier)
        self.report_links = ReportLinks(core.clock)
        self.agent = TeamsAgent(core, self.service_urls, self.connections, report_links=self.report_links,
                                members=MemberDirectory(self.connector),
                                public_url=self.public_url, admission=self.admission,
                                ack_budget=self.settings.ack_budget)
        validation = "on" if self.validator.enabled else "OFF"
        if self.app_id:
            log.info("event=teams_mode mode=jwt note=\"Teams: JWT validation on for app id %s\" "
                     "service_url_validation=%s", self.app_id, validation)
        else:
            log.warning("event=teams_mode mode=anonymous note=\"Teams: ANONYMOUS mode (local development only) — "
                        "set CLIENTID/CLIENTSECRET/TENANTID for production\" service_url_validation=%s%s",
                        validation, " (loopback allowed)" if self.validator.enabled else "")
        if not self.validator.enabled:
            log.warning("event=teams_service_url_validation_off note=\"JITPASS_TEAMS_VALIDATE_SERVICE_URL=false: "
                        "the bot will post to any serviceUrl an activity names\"")
        for vault in ("*", *core.policy.vaults):
            if not core.policy.leads_channel(vault, self.platform):
                log.warning("event=teams_no_leads_channel vault=%s note=\"approval cards for this vault cannot be "
                            "posted in Teams: set [leads_channel] teams\"", vault)

    async def stop(self) -> None:
        if self.agent is not None:
            await self.agent.drain(timeout=5.0)  # card actions answered early, service URLs being saved
        await self.client_factory.close()
        self.agent = None
        self.report_links = None  # the files live in memory only: a restart forgets every link

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "jwt" if self.app_id else "anonymous",
            "app_id": self.app_id,
            "service_url_validation": self.validator.enabled,
            "started": self.agent is not None,
            "known_tenants": len(self.service_urls.by_tenant) if self.service_urls else 0,
        }

    # -- the endpoint ----------------------------------------------------------------------

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Authenticate, check the activity's shape, then let the SDK run the turn."""
        if self.inbound_auth is not None:
            claims = await self.inbound_auth.authenticate(request.headers.get("Authorization"))
            if claims is None:
                return web.json_response({"error": "Invalid token or authentication failed."}, status=401)
            request["claims_identity"] = claims
        problem = await self._malformed(request)
        if problem:
            log.info("event=teams_bad_request why=\"%s\"", problem)
            return web.json_response({"error": problem}, status=400)
        if self.agent is None:
            return web.json_response({"error": "jitpass is starting"}, status=503)
        try:
            response = await self.cloud.process(request, self.agent.app)
        except Exception as exc:  # never a stack trace to the caller
            error_id = report_unexpected("process", exc)
            return web.json_response({"error": "internal error", "error_id": error_id}, status=500)
        return response if response is not None else web.Response(status=202)

    async def download(self, request: web.Request) -> web.Response:
        """A report file behind a one-time link (see adapters/downloads.py)."""
        if self.report_links is None:
            return web.Response(status=404, text="Not found.\n", headers={"Cache-Control": "no-store"})
        return await self.report_links.handle(request)

    @staticmethod
    async def _malformed(request: web.Request) -> str:
        """Why the request is not an activity jitpass will run a turn for ("" when it is one)."""
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's depth
            return "the body is not JSON"
        if not isinstance(body, dict):
            return "the body is not an activity object"
        try:
            activity = Activity.model_validate(body)
        except Exception as exc:  # pydantic's errors, and the SDK's own (an empty channelId is a TypeError)
            count = exc.error_count() if isinstance(exc, ValidationError) else 1
            return f"not a valid activity ({count} problem(s))"
        if not activity.type or not activity.conversation or not activity.conversation.id:
            return "an activity needs a type and conversation.id"
        if not activity.channel_id or not activity.service_url:
            return "an activity needs a channelId and a serviceUrl"
        if not activity.from_property or not activity.from_property.id:
            return "an activity needs from.id"
        service_url = urlsplit(activity.service_url)
        if service_url.scheme not in ("http", "https") or not service_url.hostname:
            return "the serviceUrl is not an http(s) URL"
        return ""  # an untrusted host is the SDK's to refuse (401), with validation on

    async def _on_turn_error(self, context: TurnContext, error: Exception) -> None:
        """Replaces the SDK's default, which would post the exception text into the chat."""
        error_id = report_unexpected("turn", error)
        if context.activity.type == "message":
            try:
                await context.send_activity(apology(error_id, error))
            except Exception as exc:  # the apology is a courtesy; the error is logged already
                report_unexpected("apology", exc)
