"""Bolt listeners: `/access`, buttons, modals and the App Home, translated into AccessService calls.

Slack wants every request acknowledged within 3 seconds. Listeners run with
`process_before_response=True` (so the HTTP response is exactly what the listener acks), do the
core call in a referenced background task, and wait for it until the request's deadline (the ack budget
counted from its arrival in the app): a quick answer goes into the ack itself, a slow one follows through
the `response_url` or `views.update`. Admission control (bot/domain/admission.py) bounds that work: with
no turn free the ack says "queued" at once, and beyond the queue it says "busy, nothing was recorded"
without starting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, Protocol

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import blocks
from adapters.slack.api import SlackApi, SlackCallError, quiet_logger
from adapters.slack.background import Background
from adapters.slack.blocks import DURATION_BLOCK, ITEM_BLOCK, REASON_BLOCK, START_BLOCK, Actions
from adapters.slack.groups import GroupDirectory
from adapters.slack.home import HomeTab
from adapters.slack.inputs import (
    ActionInput,
    CommandInput,
    block_for,
    form_values,
    mapping,
    metadata_of,
    parse_time,
    start_time,
)
from adapters.slack.notifier import ResponseUrl, SlackNotifier
from adapters.slack.queued import QueuedCommand, QueuedJournal
from adapters.slack.reports import handle_report
from bot.domain import commands as cmd
from bot.domain import wording
from bot.domain.admission import ACK_BUDGET_SECONDS, Admission, Ticket, arrived
from bot.domain.errors import Conflict, InfrastructureError, JitpassError, NotFound, ParseError, log_incident
from bot.domain.model import AccessRequest, Identity, Status, Window, new_request_id
from bot.domain.request_text import RequestDraft, parse_duration
from bot.ports import ChatCore

__all__ = ["ACK_BUDGET_SECONDS", "DEADLINE", "Ack", "SlackInteractions", "build_bolt_app"]

log = logging.getLogger("jitpass.slack")

# The bolt context key carrying the request's ack deadline (event-loop time), set by adapters/slack/http.py.
DEADLINE = "jitpass_deadline"


def apology(where: str, exc: BaseException, request_id: str | None = None) -> str:
    """Log an infrastructure or unexpected error under an error id; return what the user sees."""
    error_id = log_incident(log, where, exc, request_id=request_id)
    return wording.apology(error_id, infrastructure=isinstance(exc, InfrastructureError))


class Ack(Protocol):
    """How `on_command` acknowledges: bolt's `ack`, or the HTTP endpoint's own (adapters/slack/http.py)."""

    async def __call__(self, text: str = "", *, response_type: str | None = None) -> object: ...


@dataclass(frozen=True)
class Started[T]:
    """Admitted work: its task, whether it finished before the deadline, whether it is waiting for a turn."""

    task: asyncio.Task[Outcome[T]]
    finished: bool
    queued: bool

    @property
    def waiting(self) -> str:
        """What the acknowledgement says while the outcome is not ready."""
        return wording.QUEUED if self.queued else wording.WORKING


@dataclass(frozen=True)
class Outcome[T]:
    """A core call's result, or the reply that explains why there is none."""

    value: T | None = None
    error: JitpassError | None = None
    apology: str = ""


class SlackInteractions:
    """The listeners; each one acknowledges fast and does the work in `background`."""

    def __init__(self, core: ChatCore, api: SlackApi, directory: GroupDirectory, notifier: SlackNotifier,
                 home: HomeTab, background: Background, *, ack_budget: float = ACK_BUDGET_SECONDS,
                 admission: Admission | None = None, journal: QueuedJournal | None = None) -> None:
        self.ack_budget = ack_budget
        self.admission = admission or Admission(16, 256)
        self.journal = journal or QueuedJournal(None)
        self.service = core.access
        self.reports = core.reports
        self.policy = core.policy
        self.clock = core.clock
        self.api = api
        self.directory = directory
        self.notifier = notifier
        self.home = home
        self.background = background
        self._helps: dict[str, str] = {}

    def register(self, app: AsyncApp) -> None:
        """Attach every listener to the bolt app."""
        app.command(re.compile(r"^/"))(self.on_command)
        app.action(Actions.APPROVE)(self.on_approve)
        app.action(Actions.DECLINE)(self.on_decline)
        app.action(Actions.NEW_CODE)(self.on_new_code)
        app.action(Actions.DONE)(self.on_done)
        app.action(Actions.CANCEL)(self.on_cancel)
        app.action(Actions.SHOW_PASSWORD)(self.on_show_password)
        app.action(Actions.MODAL_NEW_CODE)(self.on_modal_new_code)
        app.action(Actions.OPEN_REQUEST)(self.on_open_request)
        app.view(Actions.REQUEST_VIEW)(self.on_request_submitted)
        app.view(Actions.DECLINE_VIEW)(self.on_decline_submitted)
        app.event("app_home_opened")(self.on_home_opened)

    # -- helpers ---------------------------------------------------------------------------------

    def _help_text(self, command: str) -> str:
        # The same text for every `help` of one command name: built once (a few names at most are kept).
        text = self._helps.get(command)
        if text is None:
            text = blocks.help_text(command)
            if len(self._helps) < 8:
                self._helps[command] = text
        return text

    @property
    def tz(self) -> tzinfo:
        return self.policy.timezone

    async def _capture[T](self, work: Coroutine[Any, Any, T], where: str,
                          request_id: str | None = None) -> Outcome[T]:
        try:
            return Outcome(value=await work)
        except InfrastructureError as exc:  # the store or the key ring: an apology, never their detail
            return Outcome(apology=apology(where, exc, request_id))
        except JitpassError as exc:
            return Outcome(error=exc)
        except Exception as exc:
            return Outcome(apology=apology(where, exc, request_id))

    def _deadline(self, context: Mapping[str, Any] | None) -> float:
        value = context.get(DEADLINE) if context is not None else None
        return value if isinstance(value, float) else arrived() + self.ack_budget

    def _busy(self, work: Coroutine[Any, Any, Any], where: str) -> None:
        work.close()  # never started: nothing was recorded
        log.info("event=chat_request_busy platform=slack where=%s admitted=%d", where, self.admission.admitted)

    async def _within_budget[T](self, work: Coroutine[Any, Any, T], where: str, request_id: str | None = None, *,
                                deadline: float) -> Started[T] | None:
        """Admit and start the work, and wait for it until the deadline (not at all when it must wait for a
        turn); None: refused, nothing started."""
        ticket = self.admission.admit()
        if ticket is None:
            self._busy(work, where)
            return None
        return await self._start(ticket, work, where, request_id, deadline=deadline)

    async def _start[T](self, ticket: Ticket, work: Coroutine[Any, Any, T], where: str, request_id: str | None = None,
                        *, deadline: float) -> Started[T]:
        task = self.background.spawn(ticket.run(self._capture(work, where, request_id), dropped=Outcome()),
                                     name=where)
        finished = await ticket.wait(task, deadline=deadline, budget=self.ack_budget)
        return Started(task, finished, ticket.told_queued)

    async def _reply(self, text: str, *, response_url: str, user_id: str) -> None:
        """An ephemeral reply through the interaction's response_url, or a DM when there is none."""
        try:
            if response_url:
                await self.api.respond(response_url, {"response_type": "ephemeral", "replace_original": False,
                                                      "text": text})
            elif user_id:
                channel = await self.notifier.dm_channel(user_id)
                await self.api.call("chat.postMessage", channel=channel, text=text)
        except SlackCallError as exc:
            log.warning("event=reply_failed user=%s error=%s", user_id, exc.error)

    def _words(self, outcome: Outcome[Any]) -> str:
        if outcome.error is not None:
            return blocks.escape(outcome.error.user_message())
        return outcome.apology

    async def _identity(self, user_id: str, display: str, *, groups: bool = False) -> Identity:
        # Only deciding (approve, decline) and admin commands depend on user groups: spare Slack the rest.
        # The verified e-mail (cached) is always looked up: it makes the requester one person with their
        # other platform's account, for self-approval and one-open-request alike.
        return await self.directory.identity(user_id, display, groups=groups)

    async def _already(self, request_id: str, exc: Conflict) -> str:
        """Say "already approved by …" in Slack words, from the request's current state."""
        try:
            request = await self.service.get_request(request_id)
        except JitpassError:
            return blocks.escape(exc.user_message())
        if request.decided_by is None:
            return blocks.escape(exc.user_message())
        return wording.already_decided(request, blocks.MARKUP)

    # -- /access ---------------------------------------------------------------------------------

    async def on_command(self, ack: Ack, body: dict[str, Any], context: dict[str, Any]) -> None:
        """`/access …`: subcommands, a request, or the request form."""
        command = CommandInput.from_body(body)
        if not command.user_id:
            await ack(text="That command came without a user; please try again.", response_type="ephemeral")
            return
        try:
            parsed = cmd.parse_command(command.text, now=self.clock.now(), tz=self.tz)
        except JitpassError as exc:
            await ack(text=self._words(Outcome(error=exc)), response_type="ephemeral")
            return
        deadline = self._deadline(context)
        match parsed:
            case cmd.Help() | cmd.Unknown() | cmd.WhereAmI():  # no core work: never queued nor refused
                await ack(text=self._help_text(command.command), response_type="ephemeral")
            case cmd.Form(item=item, window=window, problem=problem):
                # The form lets them fix it; a problem is shown at its top.
                duration = window.duration if window and window.duration and problem is None else None
                modal = self._open_request_modal(command, item=item, duration=duration,
                                                 problem=problem.user_message() if problem else "")
                ticket = self.admission.admit()
                if ticket is None:
                    self._busy(modal, "command.form")
                    await ack(text=wording.BUSY, response_type="ephemeral")
                    return
                await ack()
                self.background.spawn(ticket.run(modal, dropped=None), name="modal")
            case cmd.Request(draft=draft):
                await self._answer_request(ack, command, draft, deadline=deadline)
            case _:
                where = f"command.{type(parsed).__name__.lower()}"
                await self._answer(ack, command, self._run(command, parsed), where=where, deadline=deadline)

    async def _run(self, command: CommandInput, parsed: cmd.Command) -> str:
        """The answer to every command but a request and the form."""
        match parsed:
            case cmd.Help() | cmd.Unknown() | cmd.WhereAmI():
                return blocks.help_text(command.command)
            case cmd.ListItems(query=query):
                return blocks.items_text(await self.service.list_items(query), query, command.command)
            case cmd.Status():
                who = await self._identity(command.user_id, command.user_name)
                return blocks.status_text(await self.service.my_requests(who), self.tz)
            case cmd.Cancel(request_id=request_id):
                who = await self._identity(command.user_id, command.user_name)
                request = await self.service.cancel(request_id, who)
                return wording.cancelled(request, blocks.MARKUP)
            case cmd.Done(request_id=request_id):
                who = await self._identity(command.user_id, command.user_name)
                return wording.ended(await self.service.done(request_id, who), blocks.MARKUP)
            case cmd.Extend(request_id=request_id, duration=duration):
                who = await self._identity(command.user_id, command.user_name)
                return self._sent_text(await self.service.request_extension(request_id, who, duration))
            case cmd.Report(args=args):
                # Admins may be named by user group, so this one needs the groups resolved.
                who = await self._identity(command.user_id, command.user_name, groups=True)
                return await handle_report(self.reports, self.api, self.notifier.dm_channel, who, args)
        raise AssertionError(f"unhandled command {parsed!r}")

    async def _answer(self, ack: Ack, command: CommandInput, work: Coroutine[Any, Any, str],
                      where: str, *, deadline: float) -> None:
        started = await self._within_budget(work, where, deadline=deadline)
        if started is None:
            await ack(text=wording.BUSY, response_type="ephemeral")
            return
        if started.finished:
            await ack(text=self._text_of(started.task.result()), response_type="ephemeral")
            return
        await ack(text=started.waiting, response_type="ephemeral")
        self.background.spawn(self._follow_up(started.task, command), name=f"{where}.follow-up")

    def _text_of(self, outcome: Outcome[str]) -> str:
        return outcome.value if outcome.value is not None else self._words(outcome)

    async def _follow_up(self, task: asyncio.Task[Outcome[str]], command: CommandInput,
                         journaled: str | None = None) -> None:
        text = self._text_of(await task)
        if text:  # "": the answer is a durable effect recorded with the request
            await self._reply(text, response_url=command.response_url, user_id=command.user_id)
        if journaled is not None:
            self.journal.finished(journaled)

    async def recover_queued(self, left: Sequence[QueuedCommand], journal: QueuedJournal | None = None) -> None:
        """At start: requests a dead predecessor acknowledged ("queued", "working") and never answered. A created
        queued one is answered by its TELL effect, a created working one here; the others are recorded as
        refused and the user is told once."""
        for entry in left:
            try:
                request = None if entry.durable_answer else await self._created(entry.request_id)
                if request is not None:
                    await self._reply(self._sent_text(request), response_url=entry.response_url,
                                      user_id=entry.user_id)
                elif await self.service.not_started(Identity("slack", entry.user_id), entry.request_id,
                                                    "restarted_before_it_ran"):
                    await self._reply(wording.NOT_STARTED, response_url=entry.response_url, user_id=entry.user_id)
            except Exception as exc:  # the store is down: keep it for the next start
                log.warning("event=queued_recovery_failed request_id=%s error=%s", entry.request_id,
                            type(exc).__name__)
                continue
            log.info("event=queued_recovered request_id=%s", entry.request_id)
            (journal or self.journal).finished(entry.request_id)

    async def _created(self, request_id: str) -> AccessRequest | None:
        try:
            return await self.service.get_request(request_id)
        except NotFound:
            return None

    def _origin_refs(self, channel_id: str, response_url: str, issued_at: datetime | None = None) -> dict[str, Any]:
        refs: dict[str, Any] = {}
        if channel_id:
            refs["origin_channel"] = channel_id
        if response_url:
            refs["command"] = ResponseUrl(response_url, issued_at or self.clock.now()).to_refs()
        return refs

    def _sent_text(self, request: AccessRequest) -> str:
        # The card is durable work (retried until Slack takes it; the requester hears if it never does).
        return wording.request_sent(request, self.tz, blocks.MARKUP,
                                    leads_channel=self.policy.leads_channel(request.vault, "slack"))

    async def _answer_request(self, ack: Ack, command: CommandInput, draft: RequestDraft, *,
                              deadline: float) -> None:
        """`/access <item> <why> <when>`. Whatever the acknowledgement promises ("queued", "working") is
        journaled before it leaves, and a queued request's answer is recorded with it as a durable TELL
        effect: a kill -9 anywhere after that acknowledgement still ends in a follow-up (adapters/slack/queued.py)."""
        where = "command.request"
        ticket = self.admission.admit()
        if ticket is None:
            log.info("event=chat_request_busy platform=slack where=%s admitted=%d", where, self.admission.admitted)
            await ack(text=wording.BUSY, response_type="ephemeral")
            return
        request_id = new_request_id()
        work = self._request(command, draft, ticket, request_id=request_id)
        started = await self._start(ticket, work, where, deadline=deadline)
        if started.finished:
            await ack(text=self._text_of(started.task.result()), response_type="ephemeral")
            return
        # Still waiting for its turn ("queued": its answer will be a durable TELL effect) or running ("working").
        promise = QueuedCommand(request_id, command.user_id, command.response_url, command.channel_id,
                                self.clock.now().isoformat(), durable_answer=started.queued)
        journaled: str | None = request_id
        try:
            self.journal.queued(promise)
        except OSError as exc:
            log.error("event=queued_journal_write_failed error=%s", exc.strerror)
            if started.queued:  # the promise could not be kept after a crash: do not make it
                ticket.drop()
                work.close()  # never to be started
                await ack(text=wording.BUSY, response_type="ephemeral")
                return
            journaled = None  # it runs already: "working" is said either way
        await ack(text=started.waiting, response_type="ephemeral")
        self.background.spawn(self._follow_up(started.task, command, journaled), name=f"{where}.follow-up")

    async def _request(self, command: CommandInput, draft: RequestDraft, ticket: Ticket, *,
                       request_id: str | None = None) -> str:
        """Create the request. When the acknowledgement said "queued" before this got its turn, its answer
        is a TELL effect recorded with it and "" is returned."""
        durable = ticket.told_queued  # settled before the work starts (Ticket.wait)
        who = await self._identity(command.user_id, command.user_name)
        request = await self.service.request_access(
            who, draft, refs=self._origin_refs(command.channel_id, command.response_url), request_id=request_id,
            answer=self._sent_text if durable else None)
        return "" if durable else self._sent_text(request)

    # -- the request form ------------------------------------------------------------------------

    async def _open_request_modal(self, command: CommandInput, *, item: str = "", problem: str = "",
                                  duration: timedelta | None = None) -> None:
        metadata: dict[str, Any] = {"channel": command.channel_id}
        if command.response_url:
            metadata["response_url"] = command.response_url
            metadata["issued_at"] = self.clock.now().isoformat()
        await self._open_form(command.trigger_id, command.user_id, command.response_url, metadata,
                              item=item, problem=problem, duration=duration)

    async def _open_form(self, trigger_id: str, user_id: str, response_url: str, metadata: Mapping[str, Any], *,
                         item: str = "", problem: str = "", duration: timedelta | None = None) -> None:
        try:
            items = await self.service.list_items()
            chosen = next((i for i in items if i.name == item.lower()), None)
            limits = self.policy.for_vault(chosen.vault).limits if chosen else self.policy.defaults.limits
            view = blocks.request_modal(items, item=chosen.name if chosen else item, duration=duration or
                                        limits.default_duration, metadata=metadata, problem=problem)
            await self.api.call("views.open", trigger_id=trigger_id, view=view)
        except Exception as exc:
            await self._reply(apology("views.open", exc), response_url=response_url, user_id=user_id)

    async def on_request_submitted(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                                   context: dict[str, Any]) -> None:
        """The request form was sent: validate, then request_access; errors point at their input."""
        user = mapping(body.get("user"))
        user_id, display = str(user.get("id") or ""), str(user.get("username") or user.get("name") or "")
        form = form_values(view)
        metadata = metadata_of(view)
        errors: dict[str, str] = {}
        item, reason = form.get(ITEM_BLOCK, "").strip().lower(), " ".join(form.get(REASON_BLOCK, "").split())
        if not item:
            errors[ITEM_BLOCK] = wording.FORM_NO_ITEM
        if not reason:
            errors[REASON_BLOCK] = wording.FORM_NO_REASON
        duration: timedelta | None = None
        try:
            duration = parse_duration(form.get(DURATION_BLOCK, ""))
        except ParseError as exc:
            errors[DURATION_BLOCK] = exc.message
        start = start_time(form.get(START_BLOCK, ""))
        if form.get(START_BLOCK) and start is None:
            errors[START_BLOCK] = "That start time cannot be read."
        if errors or duration is None:
            await ack(response_action="errors", errors=errors)
            return
        draft = RequestDraft(item=item, reason=reason, window=Window(duration=duration, start=start))
        issued = parse_time(metadata.get("issued_at"))
        refs = self._origin_refs(str(metadata.get("channel") or ""), str(metadata.get("response_url") or ""), issued)

        async def submit() -> AccessRequest:
            who = await self._identity(user_id, display)
            return await self.service.request_access(who, draft, refs=refs)

        started = await self._within_budget(submit(), "view.request", deadline=self._deadline(context))
        if started is None:
            await ack(response_action="update", view=blocks.notice_modal("Request access", wording.BUSY))
            return
        if not started.finished:
            await ack(response_action="update", view=blocks.notice_modal("Request access", started.waiting))
            self.background.spawn(self._finish_form(started.task, str(view.get("id") or "")),
                                  name="view.request.follow-up")
            return
        outcome = started.task.result()
        if outcome.error is not None:
            await ack(response_action="errors",
                      errors={block_for(outcome.error): blocks.truncate(outcome.error.user_message(), 500)})
        elif outcome.value is not None:
            sent = self._sent_text(outcome.value)
            await ack(response_action="update", view=blocks.notice_modal("Request sent", sent))
        else:
            await ack(response_action="update", view=blocks.notice_modal("Request access", outcome.apology))

    async def _finish_form(self, task: asyncio.Task[Outcome[AccessRequest]], view_id: str) -> None:
        outcome = await task
        text = self._sent_text(outcome.value) if outcome.value is not None else self._words(outcome)
        try:
            await self.api.call("views.update", view_id=view_id, view=blocks.notice_modal("Request access", text))
        except SlackCallError as exc:
            log.warning("event=form_follow_up_failed error=%s", exc.error)

    async def on_open_request(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """The Home tab's "Request access" button."""
        await ack()
        action = ActionInput.from_body(body)
        self.background.spawn(self._open_form(action.trigger_id, action.user_id, "", {}), name="modal")

    # -- the approval card -----------------------------------------------------------------------

    def _act(self, action: ActionInput, work: Coroutine[Any, Any, str | None], where: str) -> None:
        if action.view_type == "home" and action.user_id:
            self.home.pressed(action.user_id)  # before the work: the change it makes is published to that tab

        async def run() -> None:
            outcome = await self._capture(work, where, action.value)
            text = outcome.value if outcome.error is None and not outcome.apology else self._words(outcome)
            if text:
                await self._reply(text, response_url=action.response_url, user_id=action.user_id)

        ticket = self.admission.admit()
        if ticket is None:  # the press was acknowledged; say at once that nothing was done
            self._busy(work, where)
            self.background.spawn(self._reply(wording.BUSY, response_url=action.response_url,
                                              user_id=action.user_id), name=f"{where}.busy")
            return
        self.background.spawn(ticket.run(run(), dropped=None), name=where)

    async def on_approve(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """Approve on the card; the card itself shows the result."""
        await ack()
        action = ActionInput.from_body(body)

        async def approve() -> str | None:
            who = await self._identity(action.user_id, action.user_name, groups=True)
            try:
                await self.service.approve(action.value, who)
            except Conflict as exc:
                return await self._already(action.value, exc)
            return None

        self._act(action, approve(), "action.approve")

    async def on_decline(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """Decline on the card: ask for an optional reason first."""
        await ack()
        action = ActionInput.from_body(body)

        async def open_modal() -> str | None:
            request = await self.service.get_request(action.value)
            if request.status is not Status.PENDING:
                return await self._already(request.id, Conflict(f"{request.id} is {request.status.value}."))
            view = blocks.decline_modal(request, {"request_id": request.id, "response_url": action.response_url})
            await self.api.call("views.open", trigger_id=action.trigger_id, view=view)
            return None

        self._act(action, open_modal(), "action.decline")

    async def on_decline_submitted(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                                   context: dict[str, Any]) -> None:
        """The decline form was sent: decline, or show why not on the form."""
        user = mapping(body.get("user"))
        user_id, display = str(user.get("id") or ""), str(user.get("username") or user.get("name") or "")
        metadata = metadata_of(view)
        request_id = str(metadata.get("request_id") or "")
        reason = form_values(view).get(REASON_BLOCK, "")

        async def decline() -> AccessRequest:
            who = await self._identity(user_id, display, groups=True)
            return await self.service.decline(request_id, who, reason)

        started = await self._within_budget(decline(), "view.decline", request_id, deadline=self._deadline(context))
        if started is None:
            await ack(response_action="errors", errors={REASON_BLOCK: wording.BUSY})
            return
        task = started.task
        if not started.finished:
            await ack()
            response_url = str(metadata.get("response_url") or "")

            async def follow_up() -> None:
                outcome = await task
                if outcome.value is None:
                    await self._reply(await self._declined_words(outcome, request_id), response_url=response_url,
                                      user_id=user_id)

            self.background.spawn(follow_up(), name="view.decline.follow-up")
            return
        outcome = task.result()
        if outcome.value is not None:
            await ack()
        else:
            await ack(response_action="errors", errors={REASON_BLOCK: blocks.truncate(
                await self._declined_words(outcome, request_id), 500)})

    async def _declined_words(self, outcome: Outcome[AccessRequest], request_id: str) -> str:
        if isinstance(outcome.error, Conflict):
            return await self._already(request_id, outcome.error)
        return self._words(outcome)

    # -- the delivered secret --------------------------------------------------------------------

    async def on_new_code(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """"New code" on the delivered message or the Home tab: audited, then that message or tab is redone."""
        await ack()
        action = ActionInput.from_body(body)

        async def new_code() -> str | None:
            who = await self._identity(action.user_id, action.user_name)
            if action.view_type == "home":
                # The tab gets the code alone (live_code), never the password new_code() would return.
                await self.home.show_new_code(who, action.value)
                return None
            try:
                reveal = await self.service.new_code(action.value, who)
            except Conflict as exc:  # the grant is over: say so in place of the old secret
                if action.response_url:
                    await self.api.respond(action.response_url, {"replace_original": True,
                                                                 "text": blocks.escape(exc.user_message())})
                    return None
                raise
            request = await self.service.get_request(action.value)
            message = blocks.secret_message(request, reveal, self.tz)
            if not action.response_url:
                return "That message can no longer be updated; use the App Home tab."
            await self.api.respond(action.response_url, {"replace_original": True, **message.payload()})
            await self._remember_delivery_url(request, action.response_url)
            await self._wipe_if_ended(request.id, action.response_url)
            return None

        self._act(action, new_code(), "action.new_code")

    async def _remember_delivery_url(self, request: AccessRequest, response_url: str) -> None:
        """A press gives a fresh response_url for the very message pressed: wipe with that one later."""
        delivery = request.refs.get("delivery")
        if isinstance(delivery, Mapping) and delivery.get("via") == "response_url" and not delivery.get("ended"):
            fresh = ResponseUrl(response_url, self.clock.now(), uses=1)
            await self.service.save_refs(request.id, {"delivery": {**delivery, **fresh.to_refs()}})

    async def _wipe_if_ended(self, request_id: str, response_url: str) -> None:
        # The grant may have ended while the new code was on its way: do not leave it on screen.
        request = await self.service.get_request(request_id)
        if request.status is not Status.ACTIVE:
            item = await self.service.item_of(request)
            ended = blocks.ended_message(request, item, self.tz)
            await self.api.respond(response_url, {"replace_original": True, **ended.payload()})

    async def on_done(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """"Done": end the grant now; the notifier wipes the delivered secret."""
        await ack()
        action = ActionInput.from_body(body)

        async def done() -> str | None:
            who = await self._identity(action.user_id, action.user_name)
            if action.response_url:
                with contextlib.suppress(JitpassError):  # done() below reports the real problem
                    await self._remember_delivery_url(await self.service.get_request(action.value),
                                                      action.response_url)
            await self.service.done(action.value, who)
            return None

        self._act(action, done(), "action.done")

    async def on_cancel(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """The Home tab's "Cancel" on a waiting request."""
        await ack()
        action = ActionInput.from_body(body)

        async def cancel() -> str | None:
            await self.service.cancel(action.value, await self._identity(action.user_id, action.user_name))
            return None

        self._act(action, cancel(), "action.cancel")

    # -- App Home --------------------------------------------------------------------------------

    async def on_home_opened(self, event: dict[str, Any]) -> None:
        """Publish the Home tab when the user opens it; the codes then shown are audited (they are looking)."""
        user = event.get("user")
        if event.get("tab", "home") == "home" and isinstance(user, str) and user:
            self.home.refresh(Identity("slack", user), opened=True)

    async def on_show_password(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """The Home tab's "Show password": a modal with the secret, audited as grant.code_shown.

        The tab itself shows the live code but never the password; an ephemeral delivery vanishes
        on reload, so this is how the holder sees the password again. The modal is replaced with
        "access ended" when the grant ends (notifier.secret_revoked).
        """
        await ack()
        action = ActionInput.from_body(body)

        async def show() -> str | None:
            who = await self._identity(action.user_id, action.user_name)
            reveal = await self.service.new_code(action.value, who)
            request = await self.service.get_request(action.value)
            data = await self.api.call("views.open", trigger_id=action.trigger_id,
                                       view=blocks.code_modal(request, reveal, self.tz))
            opened = data.get("view")
            if isinstance(opened, Mapping) and isinstance(opened.get("id"), str):
                await self.service.save_refs(request.id, {"code_view": opened["id"]})
            return None

        self._act(action, show(), "action.show_password")

    async def on_modal_new_code(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """"New code" inside the code modal: audited, then the modal is updated."""
        await ack()
        action = ActionInput.from_body(body)

        async def refresh() -> str | None:
            who = await self._identity(action.user_id, action.user_name)
            try:
                reveal = await self.service.new_code(action.value, who)
            except Conflict as exc:
                await self.api.call("views.update", view_id=action.view_id,
                                    view=blocks.notice_modal("Access ended", exc.user_message()))
                return None
            request = await self.service.get_request(action.value)
            await self.api.call("views.update", view_id=action.view_id,
                                view=blocks.code_modal(request, reveal, self.tz))
            return None

        self._act(action, refresh(), "action.modal_new_code")


def build_bolt_app(client: AsyncWebClient, signing_secret: str) -> AsyncApp:
    """The bolt app: listeners ack themselves; our HTTP handler verifies signatures before bolt sees a body."""
    return AsyncApp(
        client=client,
        signing_secret=signing_secret,
        logger=quiet_logger("jitpass.slack.bolt"),
        name="jitpass",
        process_before_response=True,
        # Verified once, on the raw bytes, in adapters/slack/http.py (bolt then gets a re-encoded body);
        # Socket Mode needs no signature at all.
        request_verification_enabled=False,
    )
