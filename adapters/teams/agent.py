"""Agents SDK handlers: Teams messages, card actions and installs, turned into AccessService calls.

Messages are commands (`access …`, `list`, `status`, `cancel`, `done`, `extend`, `whereami`,
`report`, `help`), typed in a 1:1 chat or after an @mention in a channel. Card buttons are Universal
Actions: an `adaptiveCard/action` invoke whose answer is the updated card, or an error the
Teams client shows under the card. The core decides and audits; this module only translates.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from microsoft_agents.activity import Activity, ActivityTypes, InvokeResponse
from microsoft_agents.hosting.core import AgentApplication, MemoryStorage, RouteRank, TurnContext, TurnState
from microsoft_agents.hosting.core.app.app_options import ApplicationOptions
from microsoft_agents.hosting.core.authorization import Connections

from adapters.downloads import CSV_TYPE, HTML_TYPE, ReportLinks
from adapters.teams import cards
from adapters.teams.connector import MemberDirectory, ServiceUrlBook, card_activity
from adapters.teams.refs import DELIVERY, PERSONAL, REQUESTER, VERSION, ConversationRef, RequesterRef
from bot.domain import commands as cmd
from bot.domain import wording
from bot.domain.admission import ACK_BUDGET_SECONDS, Admission, arrived
from bot.domain.errors import InfrastructureError, InputError, JitpassError, NotAllowed, NotFound, log_incident
from bot.domain.model import AccessRequest, Identity
from bot.domain.request_text import RequestDraft, parse_window
from bot.domain.syntax import TEAMS
from bot.ports import ChatCore

__all__ = ["Inbound", "TeamsAgent", "clean_text", "identity_of", "report_unexpected"]

log = logging.getLogger("jitpass.teams")

ADAPTIVE_CARD_ACTION = "adaptiveCard/action"
ERROR_CONTENT_TYPE = "application/vnd.microsoft.error"
MESSAGE_CONTENT_TYPE = "application/vnd.microsoft.activity.message"
_MENTION = re.compile(r"<at\b[^>]*>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")

def report_unexpected(what: str, exc: BaseException) -> str:
    """Log an infrastructure or unexpected failure under an error id (bot.domain.errors); return the id."""
    return log_incident(log, what, exc)


def apology(error_id: str, exc: BaseException | None = None) -> str:
    return wording.apology(error_id, infrastructure=isinstance(exc, InfrastructureError))


def _sorry(what: str, exc: BaseException) -> str:
    return apology(report_unexpected(what, exc), exc)


def clean_text(text: str) -> str:
    """The command in a Teams message: mentions (`<at>jitpass</at>`) and markup removed."""
    text = _MENTION.sub(" ", text)
    text = _TAG.sub(" ", text)
    return " ".join(html.unescape(text).replace("\u00a0", " ").split())


def tenant_of(activity: Activity) -> str:
    if activity.conversation and activity.conversation.tenant_id:
        return activity.conversation.tenant_id
    data = activity.channel_data if isinstance(activity.channel_data, Mapping) else {}
    tenant = data.get("tenant")
    return str(tenant.get("id") or "") if isinstance(tenant, Mapping) else ""


def identity_of(activity: Activity) -> Identity:
    """Who acts: the Entra object id when Teams sends it (it does for real users), else the Teams id."""
    user = activity.from_property
    if user is None or not (user.aad_object_id or user.id):
        raise InputError("This message does not say who sent it.")
    tenant = tenant_of(activity)
    return Identity("teams", user.aad_object_id or user.id or "", user.name or "",
                    frozenset({tenant}) if tenant else frozenset())


@dataclass(frozen=True)
class Inbound:
    """Who acts, and where: enough to answer and to reach them privately later."""

    identity: Identity
    requester: RequesterRef
    conversation_id: str  # top-level id: a channel's id without the `;messageid=` of its thread

    @property
    def in_personal_chat(self) -> bool:
        return self.requester.is_personal

    @classmethod
    def of(cls, activity: Activity) -> Inbound:
        identity = identity_of(activity)
        conversation = activity.conversation
        data = activity.channel_data if isinstance(activity.channel_data, Mapping) else {}
        channel = data.get("channel")
        conversation_id = (conversation.id if conversation else "") or ""
        if isinstance(channel, Mapping) and channel.get("id"):
            conversation_id = str(channel["id"])
        conversation_id = conversation_id.split(";", 1)[0]
        kind = (conversation.conversation_type if conversation else None) or (
            "channel" if isinstance(channel, Mapping) else "personal")
        user = activity.from_property
        requester = RequesterRef(
            service_url=activity.service_url or "", conversation_id=conversation_id, conversation_type=kind,
            user_id=(user.id if user else "") or "", aad_object_id=(user.aad_object_id if user else "") or "",
            tenant_id=tenant_of(activity), bot_id=(activity.recipient.id if activity.recipient else "") or "",
        )
        return cls(identity, requester, conversation_id)

    def refs(self) -> dict[str, Any]:
        return {VERSION: 1, REQUESTER: self.requester.to_dict()}


def own_personal_chat(inbound: Inbound, request: AccessRequest) -> bool:
    """Whether an invoke comes from the 1:1 chat the request's secrets go to (when jitpass knows it:
    the delivery's chat, else the chat the request was typed in if that was 1:1), or at least a 1:1 chat."""
    if not inbound.in_personal_chat:
        return False
    known = ConversationRef.from_refs(request.refs, PERSONAL) or ConversationRef.from_refs(request.refs, DELIVERY)
    typed_in = RequesterRef.from_refs(request.refs)
    if known is None and typed_in is not None and typed_in.is_personal:
        known = typed_in.personal()
    return known is None or known.conversation_id.split(";", 1)[0] == inbound.conversation_id


def card_response(card: dict[str, Any]) -> dict[str, Any]:
    """The body of an `adaptiveCard/action` answer that shows `card` in place of the clicked one."""
    return {"statusCode": 200, "type": cards.CARD_CONTENT_TYPE, "value": card}


def message_response(text: str) -> dict[str, Any]:
    """The body of an `adaptiveCard/action` answer that Teams shows as a message (the card stays)."""
    return {"statusCode": 200, "type": MESSAGE_CONTENT_TYPE, "value": text}


def error_response(code: str, message: str, status: int = 400) -> dict[str, Any]:
    """The body of an `adaptiveCard/action` answer that Teams shows as an error under the card."""
    return {"statusCode": status, "type": ERROR_CONTENT_TYPE, "value": {"code": code, "message": message}}


class TeamsAgent:
    """The AgentApplication and its handlers."""

    def __init__(self, core: ChatCore, service_urls: ServiceUrlBook, connection_manager: Connections, *,
                 report_links: ReportLinks, public_url: str, admission: Admission | None = None,
                 ack_budget: float = ACK_BUDGET_SECONDS, members: MemberDirectory | None = None) -> None:
        self.members = members
        # Admission control (bot/domain/admission.py): core work from Teams is bounded like Slack's.
        self.admission = admission or Admission(16, 256)
        self.ack_budget = ack_budget
        # Card actions answered before they finished, and messages told "queued" that still wait for a turn.
        self._late: set[asyncio.Task[Any]] = set()
        self._saving: set[asyncio.Task[None]] = set()
        self.report_links = report_links
        self.public_url = public_url
        self.service = core.access
        self.reports = core.reports
        self.policy = core.policy
        self.clock = core.clock
        self.service_urls = service_urls
        # jitpass keeps no conversation state in the SDK; the storage only satisfies its turn state.
        options = ApplicationOptions(storage=MemoryStorage(), start_typing_timer=False,
                                     remove_recipient_mention=False)
        self.app: AgentApplication[TurnState] = AgentApplication[TurnState](
            options, connection_manager=connection_manager)
        self.app.before_turn(self._remember_service_url)
        self.app.activity(ActivityTypes.message)(self.on_message)
        self.app.conversation_update("membersAdded")(self.on_members_added)
        self.app.invoke(ADAPTIVE_CARD_ACTION)(self.on_card_action)
        self.app.invoke()(self.on_other_invoke)
        self.app.add_route(lambda context: context.activity.type != ActivityTypes.invoke, self.on_other_activity,
                           rank=RouteRank.LAST)
        self.verbs: dict[str, Callable[[TurnContext, Inbound, Mapping[str, Any]], Awaitable[dict[str, Any]]]] = {
            cards.VERB_APPROVE: self.act_approve, cards.VERB_DECLINE: self.act_decline,
            cards.VERB_NEW_CODE: self.act_new_code, cards.VERB_DONE: self.act_done,
            cards.VERB_SUBMIT_REQUEST: self.act_submit_request,
        }

    # -- every turn --------------------------------------------------------------------------

    async def _remember_service_url(self, context: TurnContext, state: TurnState) -> bool:
        activity = context.activity
        if activity.service_url:
            # Kept in memory at once; saved in the background, so no turn waits for a store write before
            # admission control has answered (a failed save is logged; the next change saves again).
            saving = asyncio.get_running_loop().create_task(
                self.service_urls.remember(tenant_of(activity), activity.service_url), name="jitpass-teams-service-url")
            self._saving.add(saving)
            saving.add_done_callback(self._saved)
        return True

    def _saved(self, task: asyncio.Task[None]) -> None:
        self._saving.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("event=teams_service_url_save_failed error=%s", type(task.exception()).__name__)

    async def _inbound(self, activity: Activity) -> Inbound:
        """Who acts and where, with the sender's directory e-mail when the connector gives it (one person
        across platforms: policy `person_of`); "" when it cannot say."""
        inbound = Inbound.of(activity)
        user = activity.from_property
        if self.members is None or user is None or not activity.service_url:
            return inbound
        email = await self.members.email(inbound.identity.user_id, user.id or "", activity.service_url,
                                         inbound.conversation_id)
        return replace(inbound, identity=replace(inbound.identity, email=email)) if email else inbound

    # -- messages ----------------------------------------------------------------------------

    async def on_message(self, context: TurnContext, state: TurnState) -> None:
        activity = context.activity
        try:
            inbound = await self._inbound(activity)
            text = clean_text(activity.text or "")
            if not inbound.in_personal_chat:
                log.info("event=teams_mention conversation_id=%s type=%s tenant=%s", inbound.conversation_id,
                         inbound.requester.conversation_type, inbound.requester.tenant_id or "-")
            parsed = cmd.parse_command(text, now=self.clock.now(), tz=self.policy.timezone, syntax=TEAMS)
            if isinstance(parsed, cmd.Help | cmd.Unknown | cmd.WhereAmI):  # no core work: never queued nor refused
                await self._run(context, inbound, parsed)
                return
            ticket = self.admission.admit()
            if ticket is None:
                log.info("event=chat_request_busy platform=teams where=message")
                await self._say(context, wording.BUSY)
                return
            work = ticket.run(self._run(context, inbound, parsed), dropped=None)
            if not ticket.queued:
                await work
                return
            # No turn was free: a short wait for one; past it, told "queued" and the outcome follows in this chat.
            loop = asyncio.get_running_loop()
            task = loop.create_task(work, name="jitpass-teams-message")
            self._late.add(task)
            task.add_done_callback(self._late.discard)
            await ticket.wait(task, deadline=arrived() + self.ack_budget, budget=self.ack_budget)
            if ticket.told_queued:
                try:
                    await self._say(context, wording.QUEUED)
                except BaseException:
                    if not ticket.started:
                        ticket.drop()  # not told, so never started
                    raise
            await task
        except InfrastructureError as exc:  # the store or the key ring: an apology, never their detail
            await self._say(context, _sorry("message", exc))
        except JitpassError as exc:
            await self._say(context, exc.user_message(TEAMS))
        except Exception as exc:  # answered with an apology and an error id
            await self._say(context, _sorry("message", exc))

    async def _run(self, context: TurnContext, inbound: Inbound, parsed: cmd.Command) -> None:
        match parsed:
            case cmd.Unknown(word=word):
                note = f"I don't know “{cards.clip(word, 40)}”. Here is what I understand:" if word else ""
                await self.cmd_help(context, inbound, note)
            case cmd.Help(note=note):
                await self.cmd_help(context, inbound, note)
            case cmd.Form(item=item, window_text=window, problem=problem, missing_reason=missing_reason):
                error = problem.user_message(TEAMS) if problem else ""
                if missing_reason:
                    error = wording.form_no_reason(item, cards.MARKUP)
                await self._show(context, await self._form(error=error, item=item,
                                                           window=window if missing_reason else ""))
            case cmd.Request(draft=draft):
                request = await self.service.request_access(inbound.identity, draft, refs=inbound.refs())
                await self._say(context, self._sent_text(request))
            case cmd.ListItems(query=query):
                await self._show(context, cards.items_card(await self.service.list_items(query), query))
            case cmd.Status():
                mine = await self.service.my_requests(inbound.identity)
                await self._show(context, cards.status_card(mine, self.policy.timezone))
            case cmd.Cancel(request_id=request_id):
                request = await self.service.cancel(request_id, inbound.identity)
                await self._say(context, wording.cancelled(request, cards.MARKUP))
            case cmd.Done(request_id=request_id):
                request = await self.service.done(request_id, inbound.identity)
                await self._say(context, wording.ended(request, cards.MARKUP))
            case cmd.Extend(request_id=request_id, duration=duration):
                extension = await self.service.request_extension(request_id, inbound.identity, duration,
                                                                 refs=inbound.refs())
                await self._say(context, self._sent_text(extension))
            case cmd.Report(args=args):
                await self.cmd_report(context, inbound, args)
            case cmd.WhereAmI():
                await self.cmd_whereami(context, inbound, "")

    async def cmd_help(self, context: TurnContext, inbound: Inbound, rest: str) -> None:
        await self._show(context, cards.help_card(rest))

    async def cmd_report(self, context: TurnContext, inbound: Inbound, rest: str) -> None:
        """Admins' access report: the summary, and one-time download links for the CSV and HTML.

        Only in a 1:1 chat: the report names people and credentials. Teams cannot take a file from
        a bot without a file-consent step, so the files wait on this server behind one-time links.
        """
        if not inbound.in_personal_chat:
            await self._say(context, wording.REPORT_ONLY_IN_PRIVATE)
            return
        report = await self.reports(inbound.identity, rest)
        csv_url, expires_at = self.report_links.link(self.public_url, report.csv_filename, report.csv, CSV_TYPE)
        html_url, _ = self.report_links.link(self.public_url, report.html_filename, report.html, HTML_TYPE)
        card = cards.report_files_card(wording.report_reply(report.summary).title, csv_url, html_url, expires_at,
                                       self.policy.timezone)
        log.info("event=teams_report_links user=%s files=2", inbound.identity.user_id)
        await context.send_activity(card_activity(card, text=cards.report_text(report.summary)))

    async def cmd_whereami(self, context: TurnContext, inbound: Inbound, rest: str) -> None:
        where = inbound.requester
        log.info("event=teams_whereami conversation_id=%s type=%s tenant=%s", where.conversation_id,
                 where.conversation_type, where.tenant_id or "-")
        tip = "" if inbound.in_personal_chat else (
            f"\n\nTo post approval cards here, put this in the policy file:\n\n"
            f"[leads_channel]\nteams = \"{where.conversation_id}\"")
        await self._say(context, f"This {where.conversation_type} conversation is `{where.conversation_id}` "
                                 f"(tenant `{where.tenant_id or '-'}`).{tip}")

    # -- installs ----------------------------------------------------------------------------

    async def on_members_added(self, context: TurnContext, state: TurnState) -> None:
        activity = context.activity
        bot_id = activity.recipient.id if activity.recipient else None
        if not any(member.id == bot_id for member in activity.members_added or []):
            return
        try:
            inbound = Inbound.of(activity)
        except JitpassError:
            return
        where = inbound.requester
        log.info("event=teams_installed conversation_id=%s type=%s tenant=%s service_url=%s",
                 where.conversation_id, where.conversation_type, where.tenant_id or "-", where.service_url)
        if inbound.in_personal_chat:
            await self._show(context, cards.help_card())
        else:
            await self.cmd_whereami(context, inbound, "")

    # -- card buttons ------------------------------------------------------------------------

    async def on_card_action(self, context: TurnContext, state: TurnState) -> None:
        """Answered within the ack budget (from arrival): the outcome, or "queued"/"working" while it runs on
        (its effects, e.g. the leads' card update, are durable work), or "busy" with nothing started."""
        deadline = arrived() + self.ack_budget
        ticket = self.admission.admit()
        if ticket is None:
            log.info("event=chat_request_busy platform=teams where=card_action")
            await self._answer(context, error_response("Busy", wording.BUSY, 503))
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(ticket.run(self._card_outcome(context), dropped={}), name="jitpass-teams-card-action")
        self._late.add(task)
        task.add_done_callback(self._late.discard)
        if await ticket.wait(task, deadline=deadline, budget=self.ack_budget):
            await self._answer(context, task.result())
        else:
            await self._answer(context, message_response(wording.QUEUED if ticket.told_queued else wording.WORKING))

    async def _card_outcome(self, context: TurnContext) -> dict[str, Any]:
        try:
            return await self._card_action(context)
        except InfrastructureError as exc:
            return error_response("Unavailable", _sorry("card action", exc), 503)
        except JitpassError as exc:
            return error_response(type(exc).__name__, exc.user_message(TEAMS))
        except Exception as exc:  # answered with an error id
            return error_response("InternalError", _sorry("card action", exc), 500)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for card actions still running after their answer (tests; shutdown)."""
        if self._late or self._saving:
            await asyncio.wait({*self._late, *self._saving}, timeout=timeout)

    async def _card_action(self, context: TurnContext) -> dict[str, Any]:
        value = context.activity.value
        action = value.get("action") if isinstance(value, Mapping) else None
        if not isinstance(action, Mapping) or action.get("type", "Action.Execute") != "Action.Execute":
            return error_response("BadRequest", "This is not an Action.Execute card action.")
        verb = action.get("verb")
        raw_data = action.get("data")
        data: Mapping[str, Any] = raw_data if isinstance(raw_data, Mapping) else {}
        handler = self.verbs.get(verb) if isinstance(verb, str) else None
        if handler is None:
            return error_response("UnknownVerb", f"jitpass does not know the card action “{verb}”.")
        return await handler(context, await self._inbound(context.activity), data)

    async def act_approve(self, context: TurnContext, inbound: Inbound, data: Mapping[str, Any]) -> dict[str, Any]:
        request = await self.service.approve(self._card_request_id(data), inbound.identity)
        return card_response(cards.approval_card(request, await self.service.item_of(request), self.policy.timezone))

    async def act_decline(self, context: TurnContext, inbound: Inbound, data: Mapping[str, Any]) -> dict[str, Any]:
        reason = data.get(cards.INPUT_DECLINE_REASON)
        request = await self.service.decline(self._card_request_id(data), inbound.identity,
                                             reason if isinstance(reason, str) else "")
        return card_response(cards.approval_card(request, await self.service.item_of(request), self.policy.timezone))

    async def act_new_code(self, context: TurnContext, inbound: Inbound, data: Mapping[str, Any]) -> dict[str, Any]:
        request_id = self._card_request_id(data)
        asked = await self.service.get_request(request_id)
        if not own_personal_chat(inbound, asked):
            # The answer to this invoke carries the password and code: it may only go back into the 1:1 chat
            # the grant was delivered to, never into a group chat or channel (a forged invoke can claim
            # anyone's aadObjectId there, and everyone in it could read the answer).
            await self.service.record_refusal(inbound.identity, "new code outside the holder's 1:1 chat",
                                              request_id=asked.id, vault=asked.vault)
            log.info("event=teams_new_code_refused request_id=%s conversation_type=%s", asked.id,
                     inbound.requester.conversation_type or "-")
            raise NotAllowed("Press New code in your own 1:1 chat with jitpass.")
        reveal = await self.service.new_code(request_id, inbound.identity)
        request = await self.service.get_request(request_id)
        return card_response(cards.delivery_card(request, reveal, self.policy.timezone))

    async def act_done(self, context: TurnContext, inbound: Inbound, data: Mapping[str, Any]) -> dict[str, Any]:
        request = await self.service.done(self._card_request_id(data), inbound.identity)
        return card_response(cards.grant_ended_card(request, await self.service.item_of(request),
                                                    self.policy.timezone))

    async def act_submit_request(self, context: TurnContext, inbound: Inbound,
                                 data: Mapping[str, Any]) -> dict[str, Any]:
        item, reason, window = (str(data.get(key) or "").strip()
                                for key in (cards.INPUT_ITEM, cards.INPUT_REASON, cards.INPUT_WINDOW))
        try:
            if not item or not reason:
                raise InputError(f"{wording.FORM_NO_ITEM} {wording.FORM_NO_REASON}")
            draft = RequestDraft(item, reason, parse_window(window, now=self.clock.now(),
                                                                tz=self.policy.timezone, item=item))
            request = await self.service.request_access(inbound.identity, draft, refs=inbound.refs())
        except InfrastructureError:
            raise  # on_card_action apologises
        except JitpassError as exc:
            return card_response(await self._form(error=exc.user_message(TEAMS), item=item,
                                                  reason=reason, window=window))
        return card_response(cards.request_sent_card(request, self.policy.timezone, self._sent_note(request)))

    async def on_other_invoke(self, context: TurnContext, state: TurnState) -> None:
        name = context.activity.name or ""
        log.info("event=teams_invoke_unsupported name=%s", name)
        await self._answer(context, error_response("NotSupported", f"jitpass does not handle “{name}”.", 501))

    async def on_other_activity(self, context: TurnContext, state: TurnState) -> None:
        """Reactions, typing, renames, uninstalls …: nothing for jitpass to do."""
        log.debug("event=teams_activity_ignored type=%s", context.activity.type)

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _card_request_id(data: Mapping[str, Any]) -> str:
        request_id = data.get("request_id")
        if not isinstance(request_id, str) or not cmd.REQUEST_ID.match(request_id):
            raise NotFound("This card names no request.")
        return request_id

    async def _form(self, *, error: str = "", item: str = "", reason: str = "", window: str = "") -> dict[str, Any]:
        return cards.request_form_card(await self.service.list_items(), error=error, item=item, reason=reason,
                                       window=window)

    def _sent_note(self, request: AccessRequest) -> str:
        return wording.sent_next(request, cards.MARKUP, leads_channel=self.policy.leads_channel(request.vault, "teams"))

    def _sent_text(self, request: AccessRequest) -> str:
        return wording.request_sent(request, self.policy.timezone, cards.MARKUP,
                                    leads_channel=self.policy.leads_channel(request.vault, "teams"))

    @staticmethod
    async def _say(context: TurnContext, text: str) -> None:
        await context.send_activity(Activity(type=ActivityTypes.message, text=text))

    @staticmethod
    async def _show(context: TurnContext, card: dict[str, Any]) -> None:
        await context.send_activity(card_activity(card))

    @staticmethod
    async def _answer(context: TurnContext, body: dict[str, Any]) -> None:
        await context.send_activity(Activity(type=ActivityTypes.invoke_response,
                                             value=InvokeResponse(status=200, body=body)))

