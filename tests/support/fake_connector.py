"""A local stand-in for Teams: the Bot Connector REST service the bot calls, and the activities Teams sends.

`FakeConnector` is an aiohttp server on 127.0.0.1:0 answering the calls the Agents SDK's
connector client makes (create conversation, send, reply, update), stateful like the real
one: it assigns conversation and activity ids, refuses to update a message it never saw
(404), refuses cards over Teams' size limit (413), and refuses with 400 every activity the
Microsoft 365 Agents Playground's connector refuses (explicit nulls, missing fields, empty
messages, broken mentions: see `tests/support/connector_schema.py`). Every call is recorded with its body
and the TCP connection it came over (so tests can count new connections);
tests wait for calls with `wait_for` (an asyncio.Condition, no sleeping).

`TeamsUser` and the `*_activity` builders produce the JSON Teams posts to /api/messages, with
this connector's URL as `serviceUrl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.connector_schema import refusal

__all__ = [
    "BOT_ID",
    "LEADS_CHANNEL",
    "TENANT",
    "ConnectorCall",
    "ConnectorHold",
    "FakeConnector",
    "TeamsUser",
    "card_elements",
    "find_element",
    "invoke_activity",
    "members_added_activity",
    "message_activity",
    "post_activity",
    "validate_cards",
]

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
MAX_MESSAGE_BYTES = 28 * 1024
TENANT = "11111111-2222-3333-4444-555555555555"
BOT_ID = "28:00000000-0000-0000-0000-0000000000b0"
LEADS_CHANNEL = "19:leads@thread.tacv2"


@dataclass
class ConnectorCall:
    """One request the bot made to the connector."""

    method: str
    path: str
    conversation_id: str
    activity_id: str  # the activity addressed (reply / update), or "" for a new one
    body: Any
    authorization: str | None
    status: int = 0
    result_id: str = ""  # the id the connector assigned (conversation or activity)
    connection: str = ""  # the client's end of the TCP connection it came over ("host:port")

    @property
    def kind(self) -> str:
        if self.conversation_id == "" and self.method == "POST":
            return "create"
        if self.method == "PUT":
            return "update"
        return "reply" if self.activity_id else "send"

    @property
    def cards(self) -> list[dict[str, Any]]:
        if not isinstance(self.body, dict):
            return []
        return [a["content"] for a in self.body.get("attachments") or [] if a.get("contentType") == CARD_TYPE]

    @property
    def card(self) -> dict[str, Any] | None:
        found = self.cards
        return found[0] if found else None

    @property
    def text(self) -> str:
        return str(self.body.get("text") or "") if isinstance(self.body, dict) else ""

    def dump(self) -> str:
        return json.dumps(self.body, ensure_ascii=False)


@dataclass
class ConnectorHold:
    """An update held open by `FakeConnector.hold_next_update`; `arrived` is set when it comes in."""

    conversation_id: str
    after_effect: bool
    when: Callable[[Any], bool]
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    limit: float = 30.0  # never longer than this: a test that forgets to release still ends


@dataclass
class _Fault:
    """One refusal waiting for the call it matches."""

    method: str  # POST (send / reply) or PUT (update)
    conversation_id: str
    status: int
    retry_after: float | None
    when: Callable[[Any], bool]


@dataclass
class FakeConnector:
    """The Bot Connector service, on an ephemeral local port."""

    calls: list[ConnectorCall] = field(default_factory=list)
    url: str = ""
    _messages: dict[tuple[str, str], Any] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _faults: list[_Fault] = field(default_factory=list)
    _holds: list[ConnectorHold] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    # The tenant's directory: Entra object id -> e-mail. A user not in it is in no conversation (404).
    directory: dict[str, str] = field(default_factory=dict)
    member_lookups: list[tuple[str, str, int]] = field(default_factory=list)  # (conversation, member, status)
    member_delay: float = 0.0  # seconds before the members endpoint answers (a slow connector)

    def create_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/conversations", self._create_conversation)
        app.router.add_post("/v3/conversations/{conversation_id}/activities", self._send)
        app.router.add_post("/v3/conversations/{conversation_id}/activities/{activity_id}", self._reply)
        app.router.add_put("/v3/conversations/{conversation_id}/activities/{activity_id}", self._update)
        app.router.add_get("/v3/conversations/{conversation_id}/members/{member_id}", self._member)
        return app

    async def start(self) -> FakeConnector:
        self._runner = web.AppRunner(self.create_app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def refuse(self, conversation_id: str, *statuses: int, retry_after: float | None = None,
               when: Callable[[Any], bool] | None = None) -> None:
        """Answer the next posts to `conversation_id` (whose body matches `when`) with these error statuses
        (e.g. 429, 503), with a Retry-After header (seconds) when given, as Teams throttles."""
        self._faults.extend(_Fault("POST", conversation_id, s, retry_after, when or (lambda body: True))
                            for s in statuses)

    def hold_next_update(self, conversation_id: str, *, after_effect: bool = False,
                         when: Callable[[Any], bool] | None = None) -> ConnectorHold:
        """Keep the next update (PUT) of an activity in `conversation_id` (whose body matches `when`) open
        without an answer until released (`after_effect`: the message is changed first, as when the
        connector took the call and the answer was lost)."""
        hold = ConnectorHold(conversation_id, after_effect, when or (lambda body: True))
        self._holds.append(hold)
        return hold

    def refuse_updates(self, conversation_id: str, *statuses: int, retry_after: float | None = None,
                       when: Callable[[Any], bool] | None = None) -> None:
        """Answer the next updates (PUT) of activities in `conversation_id` (whose body matches `when`) with
        these statuses (400, 404, 429, 503), with a Retry-After header (seconds) when given."""
        self._faults.extend(_Fault("PUT", conversation_id, s, retry_after, when or (lambda body: True))
                            for s in statuses)

    # -- what tests look at --------------------------------------------------------------------

    def calls_to(self, conversation_id: str) -> list[ConnectorCall]:
        return [c for c in self.calls if c.conversation_id == conversation_id]

    def message(self, conversation_id: str, activity_id: str) -> Any:
        """The current content of a message (after every update)."""
        return self._messages.get((conversation_id, activity_id))

    async def wait_for(self, predicate: Callable[[ConnectorCall], bool], *, after: int = 0,
                       timeout: float = 5.0) -> ConnectorCall:
        """The first call (from index `after`) matching `predicate`, waiting for it if need be."""
        def found() -> ConnectorCall | None:
            return next((c for c in self.calls[after:] if predicate(c)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
        call = found()
        assert call is not None
        return call

    # -- the REST API --------------------------------------------------------------------------

    async def _member(self, request: web.Request) -> web.Response:
        """GET v3/conversations/{id}/members/{member}: a TeamsChannelAccount, or 404 as Teams answers for
        someone who is not in that conversation (a channel or group has every directory user; a 1:1 chat
        only its user). The member may be named by Teams id (`29:…`) or Entra object id, as Teams allows."""
        conversation_id, member_id = request.match_info["conversation_id"], request.match_info["member_id"]
        object_id = member_id.removeprefix("29:")
        if self.member_delay:
            await asyncio.sleep(self.member_delay)
        email = self.directory.get(object_id)
        in_it = conversation_id.startswith("19:") or conversation_id == f"a:chat-{object_id}"
        status = 200 if email is not None and in_it else 404
        self.member_lookups.append((conversation_id, member_id, status))
        if status == 404:
            return web.json_response({"error": {"code": "MemberNotFoundInConversation",
                                                "message": "The member could not be found in the conversation."}},
                                     status=404)
        return web.json_response({"id": f"29:{object_id}", "name": email.split("@")[0], "aadObjectId": object_id,
                                  "email": email, "userPrincipalName": email, "tenantId": TENANT,
                                  "userRole": "user"})

    async def _record(self, request: web.Request, conversation_id: str, activity_id: str) -> ConnectorCall:
        body = await request.json()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        call = ConnectorCall(request.method, request.path, conversation_id, activity_id, body,
                             request.headers.get("Authorization"),
                             connection=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "")
        self.calls.append(call)
        return call

    async def _finish(self, call: ConnectorCall, status: int, payload: dict[str, Any],
                      retry_after: float | None = None) -> web.Response:
        call.status = status
        call.result_id = str(payload.get("id", ""))
        async with self._changed:
            self._changed.notify_all()
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        return web.json_response(payload, status=status, headers=headers)

    async def _refused(self, call: ConnectorCall) -> web.Response | None:
        """The first queued fault this call matches, answered (and used up); None if there is none."""
        fault = next((f for f in self._faults if f.method == call.method and f.conversation_id == call.conversation_id
                      and f.when(call.body)), None)
        if fault is None:
            return None
        self._faults.remove(fault)
        code = {400: "BadArgument", 403: "Forbidden", 404: "NotFound", 429: "TooManyRequests"}.get(
            fault.status, "ServiceError")
        return await self._finish(call, fault.status, {"error": {"code": code, "message": "refused"}},
                                  fault.retry_after)

    def _too_big(self, body: Any) -> bool:
        return len(json.dumps(body, separators=(",", ":")).encode()) > MAX_MESSAGE_BYTES

    async def _create_conversation(self, request: web.Request) -> web.Response:
        call = await self._record(request, "", "")
        members = call.body.get("members") or []
        if not members or not call.body.get("tenantId"):
            return await self._finish(call, 400, {"error": {"code": "BadArgument", "message": "members and tenant"}})
        conversation_id = f"a:personal-{members[0].get('id')}"
        return await self._finish(call, 201, {"id": conversation_id})

    async def _send(self, request: web.Request) -> web.Response:
        conversation_id = request.match_info["conversation_id"]
        call = await self._record(request, conversation_id, "")
        return await self._store_new(call, conversation_id)

    async def _reply(self, request: web.Request) -> web.Response:
        conversation_id = request.match_info["conversation_id"]
        call = await self._record(request, conversation_id, request.match_info["activity_id"])
        return await self._store_new(call, conversation_id)

    async def _store_new(self, call: ConnectorCall, conversation_id: str) -> web.Response:
        answered = await self._refused(call)
        if answered is not None:
            return answered
        refused = refusal("POST", call.body)
        if refused:
            return await self._finish(call, *refused)
        if self._too_big(call.body):
            return await self._finish(call, 413, {"error": {"code": "MessageSizeTooBig", "message": "too big"}})
        activity_id = f"activity-{next(self._ids)}"
        self._messages[(conversation_id, activity_id)] = call.body
        return await self._finish(call, 201, {"id": activity_id})

    async def _update(self, request: web.Request) -> web.Response:
        conversation_id, activity_id = request.match_info["conversation_id"], request.match_info["activity_id"]
        call = await self._record(request, conversation_id, activity_id)
        answered = await self._refused(call)
        if answered is not None:
            return answered
        hold = next((h for h in self._holds if h.conversation_id == conversation_id and not h.arrived.is_set()
                     and h.when(call.body)), None)
        if hold is not None and not hold.after_effect:
            await self._stall(hold)
        if (conversation_id, activity_id) not in self._messages:
            return await self._finish(call, 404, {"error": {"code": "NotFound", "message": "no such activity"}})
        refused = refusal("PUT", call.body)
        if refused:
            return await self._finish(call, *refused)
        if self._too_big(call.body):
            return await self._finish(call, 413, {"error": {"code": "MessageSizeTooBig", "message": "too big"}})
        self._messages[(conversation_id, activity_id)] = call.body
        if hold is not None and hold.after_effect:
            await self._stall(hold)
        return await self._finish(call, 200, {"id": activity_id})

    async def _stall(self, hold: ConnectorHold) -> None:
        hold.arrived.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hold.released.wait(), hold.limit)


# -- what Teams sends ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TeamsUser:
    """A person in the test tenant: Teams id, Entra object id and display name."""

    aad_object_id: str
    name: str

    @property
    def user_id(self) -> str:
        return f"29:{self.aad_object_id}"

    @property
    def personal_chat(self) -> str:
        return f"a:chat-{self.aad_object_id}"

    def account(self) -> dict[str, str]:
        return {"id": self.user_id, "name": self.name, "aadObjectId": self.aad_object_id}


_activity_ids = itertools.count(1000)


def _base(service_url: str, user: TeamsUser, conversation_id: str, conversation_type: str,
          tenant: str) -> dict[str, Any]:
    activity: dict[str, Any] = {
        "id": f"in-{next(_activity_ids)}",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "timestamp": "2026-03-10T09:00:00.000Z",
        "from": user.account(),
        "recipient": {"id": BOT_ID, "name": "jitpass"},
        "conversation": {"id": conversation_id, "conversationType": conversation_type, "tenantId": tenant},
        "channelData": {"tenant": {"id": tenant}},
        "locale": "en-US",
    }
    if conversation_type == "channel":
        activity["conversation"]["isGroup"] = True
        activity["channelData"] |= {"channel": {"id": conversation_id.split(";")[0]}, "team": {"id": "19:team"}}
    return activity


def message_activity(service_url: str, user: TeamsUser, text: str, *, conversation_id: str | None = None,
                     conversation_type: str = "personal", tenant: str = TENANT) -> dict[str, Any]:
    """A chat message; in a channel it starts with the bot's @mention, as Teams sends it."""
    conversation_id = conversation_id or user.personal_chat
    activity = _base(service_url, user, conversation_id, conversation_type, tenant)
    activity |= {"type": "message", "textFormat": "plain", "text": text}
    if conversation_type != "personal":
        activity["text"] = f"<at>jitpass</at> {text}"
        activity["entities"] = [{"type": "mention", "text": "<at>jitpass</at>",
                                 "mentioned": {"id": BOT_ID, "name": "jitpass"}}]
    return activity


def invoke_activity(service_url: str, user: TeamsUser, verb: str, data: dict[str, Any], *, conversation_id: str,
                    reply_to_id: str = "", conversation_type: str = "personal",
                    tenant: str = TENANT) -> dict[str, Any]:
    """A Universal Action button press (`adaptiveCard/action`)."""
    activity = _base(service_url, user, conversation_id, conversation_type, tenant)
    activity |= {"type": "invoke", "name": "adaptiveCard/action",
                 "value": {"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"}}
    if reply_to_id:
        activity["replyToId"] = reply_to_id
    return activity


def members_added_activity(service_url: str, user: TeamsUser, *, conversation_id: str,
                           conversation_type: str = "channel", tenant: str = TENANT) -> dict[str, Any]:
    """The bot was added to a team (or a personal chat)."""
    activity = _base(service_url, user, conversation_id, conversation_type, tenant)
    activity |= {"type": "conversationUpdate", "membersAdded": [{"id": BOT_ID}]}
    return activity


async def post_activity(base_url: str, activity: Any, *, token: str | None = None,
                        raw: bytes | None = None) -> tuple[int, Any]:
    """POST to the bot's /api/messages; returns the status and the JSON answer (or None)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    data = raw if raw is not None else json.dumps(activity).encode()
    async with aiohttp.ClientSession() as session, \
            session.post(f"{base_url}/api/messages", data=data, headers=headers) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text) if text else None
        except ValueError:  # e.g. aiohttp's own plain-text 500 page
            return response.status, text


def card_elements(card: dict[str, Any]) -> list[dict[str, Any]]:
    """Every element and action of a card, depth first."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "type" in node:
                found.append(node)
            for key in ("body", "items", "actions", "columns"):
                walk(node.get(key))
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(card)
    return found


def find_element(card: dict[str, Any], element_id: str) -> dict[str, Any] | None:
    return next((e for e in card_elements(card) if e.get("id") == element_id), None)


VALIDATOR = Path(__file__).with_name("validate_card.js")


def validate_cards(cards: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Check cards as Teams would, with Microsoft's Adaptive Cards parser (schema 1.5), in one
    Node process for the whole batch; returns the problems of the cards that have any."""
    node = shutil.which("node")
    assert node, "node is needed to validate Adaptive Cards (./dev test installs the parser)"
    assert VALIDATOR.with_name("node").joinpath("node_modules", "adaptivecards").is_dir(), \
        "run `cd tests/support/node && npm install` (./dev test does it)"
    done = subprocess.run([node, str(VALIDATOR)], input=json.dumps(cards), capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    problems: dict[str, list[str]] = json.loads(done.stdout)
    return problems
