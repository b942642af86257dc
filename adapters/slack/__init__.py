"""Slack adapter: `/access`, the approval card, private delivery and the App Home, over HTTP or Socket Mode.

Modules: `api` (Web API client, scopes), `blocks` (pure Block Kit builders), `notifier` (the
core's Notifier), `app` (bolt listeners), `http` (the `/slack/events` endpoint), `groups`
(user-group membership), `home` (App Home with live codes), `background` (work after the 3-second ack), `reports`
(`/access report`: summary plus CSV/HTML files in the admin's DM).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

from adapters.slack.api import SlackApi, normalise_api_url, quiet_logger
from adapters.slack.app import SlackInteractions, build_bolt_app
from adapters.slack.background import Background
from adapters.slack.groups import GroupDirectory
from adapters.slack.home import HomeTab, OpenedTabs
from adapters.slack.http import SlackEventsEndpoint
from adapters.slack.notifier import SlackNotifier
from adapters.slack.queued import QueuedCommand, QueuedJournal
from bot.domain.admission import Admission
from bot.domain.config import Settings
from bot.ports import ChatCore

__all__ = ["SlackAdapter"]

log = logging.getLogger("jitpass.slack")

# In jitpass's home, one per worker process (`jitpass serve --workers N`).
QUEUED_JOURNAL = "slack-queued-{worker}.jsonl"

class SlackAdapter:
    """The Slack platform: HTTP mode by default, Socket Mode when SLACK_APP_TOKEN is set."""

    platform = "slack"

    def __init__(self, settings: Settings, *, ack_budget: float | None = None) -> None:
        self.settings = settings
        self.ack_budget = settings.ack_budget if ack_budget is None else ack_budget
        # JITPASS_MAX_RUNNING / JITPASS_MAX_QUEUED: the bound on core work started from Slack.
        self.admission = Admission(settings.max_running, settings.max_queued)
        self.mode = "socket" if settings.slack_app_token else "http"
        # In Socket Mode Slack sends nothing over HTTP, so no signing secret is needed there.
        self.endpoint = SlackEventsEndpoint(settings.slack_signing_secret, ack_budget=self.ack_budget)
        self.background = Background()
        # Queued slash commands, journaled so that a restart finds those a killed process never finished.
        self.journal = QueuedJournal(settings.home / QUEUED_JOURNAL.format(worker=settings.worker))
        self._adopted: list[QueuedJournal] = []
        self.api: SlackApi | None = None
        self.notifier: SlackNotifier | None = None
        self.home: HomeTab | None = None
        self._session: aiohttp.ClientSession | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._socket_connected = False

    def add_routes(self, app: web.Application) -> None:
        """Mount `POST /slack/events` (events, interactivity and the slash command share it)."""
        app.router.add_post("/slack/events", self.endpoint.handle)

    async def start(self, core: ChatCore) -> None:
        """Register the notifier and listeners; in Socket Mode, connect in the background."""
        if not self.settings.slack_bot_token:
            self.endpoint.unavailable = "SLACK_BOT_TOKEN is not set: the Slack adapter cannot call Slack"
            log.warning("event=slack_not_configured reason=no_bot_token")
            return
        # slack_sdk sets no timeout on a session it is given: the session's own default bounds every call.
        timeout = self.settings.call_timeout
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        self.api = SlackApi(self.settings.slack_bot_token, self.settings.slack_api_url, self._session,
                            timeout=timeout, metrics=core.metrics)
        home = self.home = HomeTab(self.api, core.access, core.policy.timezone, self.background,
                                   OpenedTabs(core.store, core.clock))
        self.notifier = SlackNotifier(self.api, core.policy, core.clock)
        # One App Home publish per change of a user's request, to people who have the tab (HomeTab coalesces
        # bursts per user; a grant that ends is published to everyone, so no code stays on a tab).
        core.access.on_change.append(home.changed)
        # Who has the tab, read now so that the first requests need no read of their own.
        self.background.spawn(home.tabs.sync(force=True), name="home-markers")
        directory = GroupDirectory(self.api, core.policy.approver_group_ids("slack"))
        core.access.register_notifier(self.notifier)
        bolt = build_bolt_app(self.api.client, self.settings.slack_signing_secret or "")
        left = self.journal.open()
        interactions = SlackInteractions(core, self.api, directory, self.notifier, home, self.background,
                                         ack_budget=self.ack_budget, admission=self.admission, journal=self.journal)
        interactions.register(bolt)  # Socket Mode and every other kind of request still go through bolt
        self.endpoint.commands = interactions.on_command
        for journal, entries in [(self.journal, left), *self._orphans()]:
            if entries:
                log.warning("event=queued_left_by_previous_process journal=%s count=%d", journal.path, len(entries))
                self.background.spawn(interactions.recover_queued(entries, journal), name="queued-recovery")
        self.endpoint.bolt = bolt
        if self.mode == "socket":
            self._socket = AsyncSocketModeHandler(bolt, self.settings.slack_app_token,
                                                  logger=quiet_logger("jitpass.slack.socket"))
            self.background.spawn(self._connect_socket(), name="socket-connect")
        log.info("event=slack_started mode=%s api_url=%s", self.mode,
                 normalise_api_url(self.settings.slack_api_url))

    def _orphans(self) -> list[tuple[QueuedJournal, list[QueuedCommand]]]:
        """Worker 0 adopts the journals of worker numbers this run does not have (an earlier run had more)."""
        if self.settings.worker != 0:
            return []
        found = []
        for path in sorted(self.settings.home.glob(QUEUED_JOURNAL.format(worker="*"))):
            number = path.name.removeprefix("slack-queued-").removesuffix(".jsonl")
            if number.isdigit() and int(number) >= self.settings.workers:
                journal = QueuedJournal(path)
                found.append((journal, journal.open()))
                self._adopted.append(journal)
        return found

    async def _connect_socket(self) -> None:
        assert self._socket is not None
        try:
            # slack_sdk keeps retrying until it is connected (and reconnects later by itself).
            await self._socket.connect_async()  # type: ignore[no-untyped-call]
        except Exception as exc:
            log.error("event=socket_mode_connect_failed error=%s", type(exc).__name__)
            return
        self._socket_connected = True
        log.info("event=socket_mode_connected")

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for work started after acknowledgements (tests; graceful shutdown)."""
        await self.background.drain(timeout)

    async def stop(self) -> None:
        """Disconnect Socket Mode, finish or cancel pending work, close HTTP sessions."""
        if self._socket is not None:
            try:
                await self._socket.close_async()  # type: ignore[no-untyped-call]
            except Exception as exc:
                log.warning("event=socket_mode_close_failed error=%s", type(exc).__name__)
            self._socket = None
            self._socket_connected = False
        try:
            await self.background.drain(timeout=5.0)
        except TimeoutError:
            log.warning("event=slack_stop_cancelled_tasks count=%d", self.background.busy)
        await self.background.close()
        for journal in (self.journal, *self._adopted):
            journal.close()
        self.endpoint.bolt = None
        self.endpoint.commands = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def describe(self) -> dict[str, Any]:
        """Mode and state for /healthz; never a token."""
        state: dict[str, Any] = {"mode": self.mode, "started": self.endpoint.bolt is not None,
                                 "api_url": normalise_api_url(self.settings.slack_api_url),
                                 "admission": self.admission.describe()}
        if self.mode == "http":
            state["signing_secret_set"] = bool(self.settings.slack_signing_secret)
        else:
            state["connected"] = self._socket_connected
        return state
