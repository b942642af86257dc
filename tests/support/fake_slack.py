"""A local, stateful stand-in for Slack: the Web API methods jitpass calls, response_urls, Socket Mode,
the external file upload flow (files.getUploadURLExternal, the upload URL, files.completeUploadExternal),
and a client that sends signed slash commands, button presses and form submissions to the app.

Everything is real HTTP on 127.0.0.1 with ephemeral ports. Tests wait with `await fake.wait_for(...)`
(an asyncio.Condition), never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

BOT_TOKEN = "xoxb-test"
APP_TOKEN = "xapp-test"
SIGNING_SECRET = "test-signing-secret"
TEAM_ID = "T0TEST"

# Slack's documented limits, enforced like Slack does: {"ok": false, "error": "invalid_blocks"}.
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_ACTION_ID = 255
MAX_BUTTON_VALUE = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_VIEW_TITLE = 24
MAX_PRIVATE_METADATA = 3000
MAX_MESSAGE_TEXT = 40000
RESPONSE_URL_MAX_USES = 5
RESPONSE_URL_LIFETIME = 30 * 60  # seconds: Slack refuses a response_url older than 30 minutes


@dataclass
class Call:
    """One request Slack received: a Web API method, or `response_url` for response URL posts."""

    method: str
    args: dict[str, Any]
    token: str | None = None
    key: str | None = None  # the response_url's name
    status: int = 200
    error: str | None = None
    at: float = field(default_factory=time.monotonic)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    def dump(self) -> str:
        """Everything the call carried, as text (for secret scans)."""
        return json.dumps(self.args, sort_keys=True, default=str)

    def text(self) -> str:
        """The message text plus every text object in its blocks / view."""
        return " ".join(_texts(self.args))


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [t for k, v in value.items() if k not in {"action_id", "block_id", "type", "style"} for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


class _Invalid(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _text_of(obj: Any) -> str:
    if not isinstance(obj, Mapping) or obj.get("type") not in {"plain_text", "mrkdwn"} or not isinstance(
            obj.get("text"), str):
        raise _Invalid("invalid_blocks")
    return str(obj["text"])


def _check_button(element: Mapping[str, Any]) -> None:
    if len(_text_of(element.get("text"))) > MAX_BUTTON_TEXT:
        raise _Invalid("invalid_blocks")
    if len(str(element.get("action_id", ""))) > MAX_ACTION_ID or len(str(element.get("value", ""))) > MAX_BUTTON_VALUE:
        raise _Invalid("invalid_blocks")


def validate_blocks(blocks: Any, max_blocks: int) -> None:
    """Raise _Invalid("invalid_blocks") where Slack would refuse the blocks."""
    if not isinstance(blocks, list) or len(blocks) > max_blocks:
        raise _Invalid("invalid_blocks")
    for block in blocks:
        if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
            raise _Invalid("invalid_blocks")
        kind = block["type"]
        if len(str(block.get("block_id", ""))) > MAX_ACTION_ID:
            raise _Invalid("invalid_blocks")
        if kind == "section":
            if "text" in block and len(_text_of(block["text"])) > MAX_SECTION_TEXT:
                raise _Invalid("invalid_blocks")
            fields = block.get("fields", [])
            if len(fields) > MAX_FIELDS or any(len(_text_of(f)) > MAX_FIELD_TEXT for f in fields):
                raise _Invalid("invalid_blocks")
            if "text" not in block and not fields:
                raise _Invalid("invalid_blocks")
            accessory = block.get("accessory")
            if isinstance(accessory, Mapping) and accessory.get("type") == "button":
                _check_button(accessory)
        elif kind == "header":
            if len(_text_of(block.get("text"))) > MAX_HEADER_TEXT:
                raise _Invalid("invalid_blocks")
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= MAX_CONTEXT_ELEMENTS:
                raise _Invalid("invalid_blocks")
            for element in elements:
                if not element.get("text", "").strip() and element.get("type") != "image":
                    raise _Invalid("invalid_blocks")
        elif kind == "actions":
            for element in block.get("elements", []):
                if element.get("type") == "button":
                    _check_button(element)
        elif kind == "input":
            _text_of(block.get("label"))
            element = block.get("element", {})
            options = element.get("options", [])
            if len(options) > MAX_OPTIONS or any(
                    len(_text_of(o.get("text"))) > MAX_OPTION_TEXT or len(str(o.get("value", ""))) > MAX_OPTION_VALUE
                    for o in options):
                raise _Invalid("invalid_blocks")


def validate_message(args: Mapping[str, Any]) -> None:
    """A chat message: fallback text length and its blocks."""
    text = args.get("text")
    if text is not None and len(str(text)) > MAX_MESSAGE_TEXT:
        raise _Invalid("msg_too_long")
    if "blocks" in args:
        validate_blocks(args["blocks"], MAX_MESSAGE_BLOCKS)
    elif not text:
        raise _Invalid("no_text")


def validate_metadata(metadata: Any) -> dict[str, Any] | None:
    """Message metadata as Slack requires it: an object (or its JSON text) with a string `event_type` and an
    object `event_payload`; anything else is `invalid_metadata_format`."""
    if metadata is None:
        return None
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            raise _Invalid("invalid_metadata_format") from None
    if (not isinstance(metadata, Mapping) or not isinstance(metadata.get("event_type"), str)
            or not metadata["event_type"] or not isinstance(metadata.get("event_payload"), Mapping)):
        raise _Invalid("invalid_metadata_format")
    return {"event_type": metadata["event_type"], "event_payload": dict(metadata["event_payload"])}


def validate_view(view: Any) -> None:
    """A modal or Home tab view."""
    if not isinstance(view, Mapping) or view.get("type") not in {"modal", "home"}:
        raise _Invalid("invalid_arguments")
    validate_blocks(view.get("blocks"), MAX_VIEW_BLOCKS)
    if view["type"] == "modal":
        for key in ("title", "submit", "close"):
            if key in view and len(_text_of(view[key])) > MAX_VIEW_TITLE:
                raise _Invalid("invalid_arguments")
    if len(str(view.get("private_metadata", ""))) > MAX_PRIVATE_METADATA:
        raise _Invalid("invalid_arguments")


@dataclass
class Hold:
    """A call Slack received and keeps open without answering (a stall, or a crash of the caller mid-call).

    With `after_effect` the call takes effect first (the message is stored, as when Slack accepted it and
    the answer was lost); otherwise nothing happens until `release()`.
    """

    method: str
    when: Callable[[dict[str, Any]], bool]
    after_effect: bool
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    call: Call | None = None

    def release(self) -> None:
        self.released.set()


@dataclass
class SlackFile:
    """A file announced with files.getUploadURLExternal; `data` once uploaded, `channels` once shared."""

    id: str
    filename: str
    length: int
    data: bytes | None = None
    title: str = ""
    channels: list[str] = field(default_factory=list)
    comment: str = ""
    upload_authorization: str | None = None  # what came with the upload POST (should be nothing)

    def text(self) -> str:
        assert self.data is not None, f"{self.id} was never uploaded"
        return self.data.decode("utf-8")


class FakeSlack:
    """The Slack side of the conversation: stateful messages, views, user groups and response URLs."""

    def __init__(self, *, bot_token: str = BOT_TOKEN, app_token: str = APP_TOKEN) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.ephemeral: dict[str, list[dict[str, Any]]] = {}  # response_url name -> messages shown
        self.response_uses: dict[str, int] = {}
        self.response_issued: dict[str, float] = {}  # response_url name -> when Slack issued it (self.now)
        self.now: Callable[[], float] = time.monotonic  # tests may replace it to age response_urls
        self.views: dict[str, dict[str, Any]] = {}
        self.homes: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.emails: dict[str, str] = {}  # user id -> profile e-mail (users.info with users:read.email)
        self.unconfirmed: set[str] = set()  # user ids whose e-mail is not confirmed (is_email_confirmed false)
        # The bot token's scopes as Slack reports them: users.info needs users:read, and carries
        # `profile.email` only with users:read.email as well.
        self.scopes: set[str] = {"users:read", "users:read.email"}
        self.known_users: set[str] | None = None  # None: every U…/W… id is a user of the workspace
        self.files: dict[str, SlackFile] = {}
        self._rate_limited: dict[str, list[int]] = {}
        self._statuses: dict[str, list[tuple[Callable[[dict[str, Any]], bool], int]]] = {}
        self._holds: list[Hold] = []
        self.hold_limit = 60.0  # seconds a held call stays open at most
        self._failing: dict[str, list[tuple[Callable[[dict[str, Any]], bool], str]]] = {}
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.root = ""
        self.sockets: list[web.WebSocketResponse] = []
        self._socket_replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._socket_ready = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{key}", self._response_url)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.root = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for hold in self._holds:
            hold.release()
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        """The Web API base URL (SLACK_API_URL)."""
        return f"{self.root}/api/"

    def response_url(self, name: str) -> str:
        self.response_issued.setdefault(name, self.now())
        return f"{self.root}/response/{name}"

    # -- test controls ---------------------------------------------------------------------------

    def rate_limit_next(self, method: str, retry_after: int = 1) -> None:
        """The next call of `method` gets HTTP 429 with Retry-After."""
        self._rate_limited.setdefault(method, []).append(retry_after)

    def fail_next(self, method: str, error: str, *, when: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """The next call of `method` (whose arguments match `when`, if given) gets {"ok": false, "error": error}."""
        self._failing.setdefault(method, []).append((when or (lambda args: True), error))

    def status_next(self, method: str, status: int, *, when: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """The next call of `method` (matching `when`) gets a bare HTTP `status` (500, 502, 503 ...)."""
        self._statuses.setdefault(method, []).append((when or (lambda args: True), status))

    def hold_next(self, method: str, *, when: Callable[[dict[str, Any]], bool] | None = None,
                  after_effect: bool = False) -> Hold:
        """Keep the next call of `method` (matching `when`) open without an answer until released."""
        hold = Hold(method, when or (lambda args: True), after_effect)
        self._holds.append(hold)
        return hold

    def _hold_for(self, method: str, args: dict[str, Any]) -> Hold | None:
        hold = next((h for h in self._holds if h.method == method and not h.arrived.is_set() and h.when(args)), None)
        if hold is not None:
            hold.arrived.set()
        return hold

    async def _bare_status(self, method: str, args: dict[str, Any], call: Call) -> web.Response | None:
        """The HTTP error `status_next` asked for, if this call matches one."""
        statuses = self._statuses.get(method, [])
        bare = next((f for f in statuses if f[0](args)), None)
        if bare is None:
            return None
        statuses.remove(bare)
        call.status, call.error = bare[1], f"http {bare[1]}"
        await self._record(call)
        return web.Response(status=bare[1], text="upstream trouble")

    async def _stall(self, hold: Hold, call: Call) -> None:
        hold.call = call
        call.status, call.error = 0, "held"
        await self._record(call)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hold.released.wait(), self.hold_limit)

    async def wait_for(self, predicate: Callable[[Call], bool], *, after: int = 0, timeout: float = 5.0) -> Call:
        """The first recorded call (from index `after`) matching `predicate`, waiting up to `timeout`."""

        def found() -> Call | None:
            return next((c for c in self.calls[after:] if predicate(c)), None)

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
            except TimeoutError:
                seen = ", ".join(f"{c.method}({c.key or c.args.get('channel', '')})" for c in self.calls[after:])
                raise AssertionError(f"no matching Slack call within {timeout}s; saw: {seen or 'nothing'}") from None
            call = found()
            assert call is not None
            return call

    def calls_to(self, method: str, *, ok: bool | None = True) -> list[Call]:
        return [c for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    def shown(self, name: str) -> dict[str, Any] | None:
        """The ephemeral message currently shown for a response_url (after replacements)."""
        messages = self.ephemeral.get(name) or []
        return messages[-1] if messages else None

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        return self.messages[(channel, ts)]

    def shared_files(self, channel: str | None = None) -> list[SlackFile]:
        """Files shared by files.completeUploadExternal (in `channel`, if given), in upload order."""
        return [f for f in self.files.values() if f.channels and (channel is None or channel in f.channels)]

    async def _record(self, call: Call) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    # -- the Web API -----------------------------------------------------------------------------

    async def _read_args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            raw = await request.text()
            if request.content_type == "application/json":
                args.update(json.loads(raw) if raw else {})
            else:
                args.update(dict(parse_qsl(raw, keep_blank_values=True)))
        for key in ("blocks", "view", "attachments", "files"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._read_args(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.pop("token", None)
        call = Call(method, args, token)
        retry = self._rate_limited.get(method)
        if retry:
            call.status, call.error = 429, "ratelimited"
            await self._record(call)
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": str(retry.pop(0))})
        bare = await self._bare_status(method, args, call)
        if bare is not None:
            return bare
        hold = self._hold_for(method, args)
        if hold is not None and not hold.after_effect:
            await self._stall(hold, call)
            return web.json_response({"ok": False, "error": "fatal_error"}, status=503)
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        try:
            if token != expected:
                raise _Invalid("invalid_auth" if token else "not_authed")
            failing = self._failing.get(method, [])
            match = next((f for f in failing if f[0](args)), None)
            if match is not None:
                failing.remove(match)
                raise _Invalid(match[1])
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                raise _Invalid("unknown_method")
            data = handler(args)
        except _Invalid as exc:
            call.error = exc.error
            await self._record(call)
            return web.json_response({"ok": False, "error": exc.error})
        if hold is not None:  # it took effect; the answer never comes (or comes late)
            await self._stall(hold, call)
            call.status, call.error = 200, None
        else:
            await self._record(call)
        return web.json_response({"ok": True, **data})

    def _next_ts(self) -> str:
        # Like Slack: the posting time in epoch seconds, made unique by a counter.
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": "https://test.slack.example/", "team": "Test", "user": "jitpass", "team_id": TEAM_ID,
                "user_id": "UBOT", "bot_id": "BBOT"}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            raise _Invalid("channel_not_found")
        validate_message(args)
        metadata = validate_metadata(args.get("metadata"))
        ts = self._next_ts()
        message = {"channel": channel, "ts": ts, "text": args.get("text", ""), "blocks": args.get("blocks", []),
                   "history": [], "metadata": metadata}
        self.messages[(channel, ts)] = message
        return {"channel": channel, "ts": ts, "message": {"ts": ts, "text": message["text"]}}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (str(args.get("channel")), str(args.get("ts")))
        if key not in self.messages:
            raise _Invalid("message_not_found")
        validate_message(args)
        message = self.messages[key]
        message["history"].append({"text": message["text"], "blocks": message["blocks"]})
        message.update(text=args.get("text", ""), blocks=args.get("blocks", []))
        return {"channel": key[0], "ts": key[1], "text": message["text"]}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel") or not args.get("user"):
            raise _Invalid("invalid_arguments")
        validate_message(args)
        return {"message_ts": self._next_ts()}

    def _m_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        """Newest first; `oldest`/`latest` bound the ts; metadata payloads only with include_all_metadata."""
        channel = str(args.get("channel") or "")
        if not channel:
            raise _Invalid("channel_not_found")
        try:
            oldest = float(args.get("oldest") or 0)
            latest = float(args.get("latest") or "inf")
            limit = int(args.get("limit") or 100)
        except ValueError:
            raise _Invalid("invalid_arguments") from None
        if limit < 1:
            raise _Invalid("invalid_limit")
        full = str(args.get("include_all_metadata")).lower() in {"true", "1"}
        found = sorted((m for (c, _), m in self.messages.items()
                        if c == channel and oldest <= float(m["ts"]) <= latest),
                       key=lambda m: float(m["ts"]), reverse=True)
        page = found[:min(limit, 999)]
        messages = [{"type": "message", "ts": m["ts"], "text": m["text"], "blocks": m["blocks"], "bot_id": "BBOT",
                     **({"metadata": m["metadata"]} if full and m.get("metadata") else {})} for m in page]
        return {"messages": messages, "has_more": len(found) > len(page), "pin_count": 0,
                "response_metadata": {"next_cursor": ""}}

    def _m_conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = str(args.get("users") or "")
        if not users:
            raise _Invalid("users_list_not_supplied")
        return {"channel": {"id": "D" + users.split(",")[0]}}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        if "users:read" not in self.scopes:
            raise _Invalid("missing_scope")
        user_id = str(args.get("user") or "")
        if not user_id.startswith(("U", "W")) or (self.known_users is not None and user_id not in self.known_users):
            raise _Invalid("user_not_found")
        profile: dict[str, Any] = {"real_name": user_id.lower(), "display_name": user_id.lower()}
        user: dict[str, Any] = {"id": user_id, "team_id": TEAM_ID, "name": user_id.lower(), "deleted": False,
                                "is_bot": False, "profile": profile}
        # Slack leaves `email` out unless the app has users:read.email.
        if user_id in self.emails and "users:read.email" in self.scopes:
            profile["email"] = self.emails[user_id]
            user["is_email_confirmed"] = user_id not in self.unconfirmed
        return {"user": user}

    def _m_usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = str(args.get("usergroup") or "")
        if group not in self.usergroups:
            raise _Invalid("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("trigger_id"):
            raise _Invalid("invalid_arguments")
        validate_view(args.get("view"))
        view_id = f"V{next(self._ids):06d}"
        self.views[view_id] = {**args["view"], "id": view_id}
        return {"view": self.views[view_id]}

    def _m_views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view_id = str(args.get("view_id") or "")
        if view_id not in self.views:
            raise _Invalid("not_found")
        validate_view(args.get("view"))
        self.views[view_id] = {**args["view"], "id": view_id}
        return {"view": self.views[view_id]}

    def _m_views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        validate_view(view)
        if not isinstance(view, Mapping) or view.get("type") != "home" or not args.get("user_id"):
            raise _Invalid("invalid_arguments")
        self.homes[str(args["user_id"])] = dict(view)
        return {"view": {**view, "id": "VHOME"}}

    def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = str(args.get("filename") or "")
        length = str(args.get("length") or "")
        if not filename or not length.isdigit():
            raise _Invalid("invalid_arguments")
        if int(length) == 0:
            raise _Invalid("missing_argument")  # Slack's answer to length=0
        file_id = f"F{next(self._ids):08d}"
        self.files[file_id] = SlackFile(file_id, filename, int(length))
        return {"upload_url": f"{self.root}/upload/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        files = args.get("files")
        if not isinstance(files, list) or not files or not all(isinstance(f, Mapping) and f.get("id") for f in files):
            raise _Invalid("invalid_arguments")
        found = [self.files.get(str(f["id"])) for f in files]
        if any(f is None or f.data is None for f in found):
            raise _Invalid("file_not_found")  # never announced, or its bytes never arrived
        channel = str(args.get("channel_id") or "")
        if "channels" in args or "thread_ts" in args:
            raise _Invalid("invalid_arguments")  # jitpass shares in exactly one conversation
        shared: list[dict[str, Any]] = []
        for wanted, file in zip(files, found, strict=True):
            assert file is not None
            file.title = str(wanted.get("title") or file.filename)
            file.comment = str(args.get("initial_comment") or "")
            if channel:
                file.channels.append(channel)
            shared.append({"id": file.id, "name": file.filename, "title": file.title, "size": file.length})
        return {"files": shared}

    def _m_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"ws://{self.root.removeprefix('http://')}/socket"}

    # -- response_url ----------------------------------------------------------------------------

    async def _response_url(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        body = await request.json()
        call = Call("response_url", body, key=key)
        retry = self._rate_limited.get("response_url")
        if retry:
            call.status, call.error = 429, "ratelimited"
            await self._record(call)
            return web.Response(status=429, text="rate_limited", headers={"Retry-After": str(retry.pop(0))})
        bare = await self._bare_status("response_url", body, call)
        if bare is not None:
            return bare
        hold = self._hold_for("response_url", body)
        if hold is not None and not hold.after_effect:
            await self._stall(hold, call)
            return web.Response(status=504, text="timeout")
        issued = self.response_issued.get(key)
        if issued is None or self.now() - issued > RESPONSE_URL_LIFETIME:
            call.status, call.error = 404, "expired_url"
            await self._record(call)
            return web.Response(status=404, text="expired_url")
        uses = self.response_uses.get(key, 0)
        if uses >= RESPONSE_URL_MAX_USES:
            call.status, call.error = 404, "used_url"
            await self._record(call)
            return web.Response(status=404, text="used_url")
        try:
            if not body.get("delete_original"):
                validate_message(body)
        except _Invalid as exc:
            call.status, call.error = 400, exc.error
            await self._record(call)
            return web.Response(status=400, text=exc.error)
        self.response_uses[key] = uses + 1
        shown = self.ephemeral.setdefault(key, [])
        message = {"text": body.get("text", ""), "blocks": body.get("blocks", [])}
        if body.get("delete_original"):
            if shown:
                shown.pop()
        elif body.get("replace_original") and shown:
            shown[-1] = message
        else:
            shown.append(message)
        await self._record(call)
        return web.Response(text="ok")

    # -- the upload URL of files.getUploadURLExternal ------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await request.read()
        file = self.files.get(file_id)
        call = Call("upload", {"file_id": file_id, "bytes": len(data)}, key=file_id)
        if file is None or file.data is not None:
            call.status, call.error = 404, "unknown_or_used_upload_url"
        elif len(data) != file.length:
            call.status, call.error = 400, "length_mismatch"  # Slack checks the size it was promised
        else:
            file.data = data
            file.upload_authorization = request.headers.get("Authorization")
        await self._record(call)
        if call.error:
            return web.Response(status=call.status, text=call.error)
        return web.Response(text=f"OK - {len(data)}")

    # -- Socket Mode -----------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "debug_info": {"host": "fake", "approximate_connection_time": 3600}})
        self._socket_ready.set()
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            future = self._socket_replies.pop(str(data.get("envelope_id")), None)
            if future is not None and not future.done():
                future.set_result(data)
        self.sockets.remove(ws)
        return ws

    async def socket_send(self, kind: str, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send an envelope over Socket Mode and return the app's acknowledgement."""
        await asyncio.wait_for(self._socket_ready.wait(), timeout)
        envelope_id = f"env-{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._socket_replies[envelope_id] = future
        await self.sockets[-1].send_json({"envelope_id": envelope_id, "type": kind, "payload": payload,
                                          "accepts_response_payload": kind != "events_api"})
        return await asyncio.wait_for(future, timeout)


@asynccontextmanager
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A started FakeSlack, stopped afterwards."""
    fake = FakeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


# -- the user's side: signed requests to the app ----------------------------------------------------------


def sign(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    """Slack's v0 request signature (what slack_sdk.signature.SignatureVerifier checks)."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class Reply:
    """The app's HTTP answer to one signed request."""

    status: int
    text: str
    elapsed: float
    response_url: str = ""  # the response_url name sent with the request

    def json(self) -> Any:
        return json.loads(self.text) if self.text else None


def user(user_id: str) -> dict[str, str]:
    name = user_id.lower()
    return {"id": user_id, "username": name, "name": name, "team_id": TEAM_ID}


def state_values(**inputs: tuple[str, Any]) -> dict[str, Any]:
    """view.state.values for a submitted form: block_id=(element type, value)."""
    values: dict[str, Any] = {}
    for block_id, (kind, value) in inputs.items():
        element: dict[str, Any] = {"type": kind}
        if kind == "static_select":
            element["selected_option"] = {"value": value, "text": {"type": "plain_text", "text": value}} \
                if value else None
        elif kind == "datetimepicker":
            element["selected_date_time"] = value
        else:
            element["value"] = value
        values[block_id] = {block_id: element}
    return values


class SlackUsers:
    """Sends what Slack would send to the app when people type commands and press buttons."""

    def __init__(self, fake: FakeSlack, app_url: str, *, secret: str = SIGNING_SECRET) -> None:
        self.fake = fake
        self.endpoint = f"{app_url}/slack/events"
        self.secret = secret
        self._ids = itertools.count(1)

    async def post(self, body: bytes, content_type: str, *, timestamp: int | None = None,
                   signature: str | None = None, response_url: str = "") -> Reply:
        """POST a body, signed unless `signature` is given."""
        timestamp = int(time.time()) if timestamp is None else timestamp
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": str(timestamp),
                   "X-Slack-Signature": signature if signature is not None else sign(body, timestamp, self.secret)}
        started = time.monotonic()
        async with aiohttp.ClientSession() as session, session.post(self.endpoint, data=body,
                                                                     headers=headers) as response:
            text = await response.text()
            return Reply(response.status, text, time.monotonic() - started, response_url)

    async def form(self, fields: Mapping[str, str], **kwargs: Any) -> Reply:
        return await self.post(urlencode(fields).encode(), "application/x-www-form-urlencoded", **kwargs)

    async def command(self, text: str, user_id: str, *, channel_id: str = "CGENERAL", command: str = "/access",
                      response_url: str | None = None) -> Reply:
        """`/access text` typed by `user_id` in `channel_id`."""
        n = next(self._ids)
        name = response_url or f"cmd-{n}"
        fields = {"token": "ignored", "team_id": TEAM_ID, "channel_id": channel_id, "channel_name": "general",
                  "user_id": user_id, "user_name": user_id.lower(), "command": command, "text": text,
                  "api_app_id": "A0TEST", "response_url": self.fake.response_url(name),
                  "trigger_id": f"trigger-{n}"}
        return await self.form(fields, response_url=name)

    async def interaction(self, payload: Mapping[str, Any], response_url: str = "") -> Reply:
        return await self.form({"payload": json.dumps(payload)}, response_url=response_url)

    async def press(self, action_id: str, value: str, user_id: str, *, channel_id: str = "CLEADS",
                    view_id: str | None = None, home: bool = False) -> Reply:
        """Press a button: in a channel message (with a fresh response_url), a modal, or the Home tab."""
        n = next(self._ids)
        payload: dict[str, Any] = {
            "type": "block_actions", "user": user(user_id), "api_app_id": "A0TEST", "team": {"id": TEAM_ID},
            "trigger_id": f"trigger-{n}",
            "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": value,
                         "action_ts": str(time.time())}],
        }
        name = ""
        if view_id is not None:
            payload["container"] = {"type": "view", "view_id": view_id}
            payload["view"] = {"id": view_id, "type": "modal", "callback_id": "", "state": {"values": {}}}
        elif home:
            payload["container"] = {"type": "view", "view_id": "VHOME"}
            payload["view"] = {"id": "VHOME", "type": "home", "callback_id": "", "state": {"values": {}}}
        else:
            name = f"press-{n}"
            payload["container"] = {"type": "message", "channel_id": channel_id, "message_ts": "1.0"}
            payload["channel"] = {"id": channel_id}
            payload["response_url"] = self.fake.response_url(name)
        return await self.interaction(payload, response_url=name)

    async def submit(self, view: Mapping[str, Any], user_id: str, values: dict[str, Any]) -> Reply:
        """Submit a modal the app opened (`view` as the fake stored it) with `values`."""
        payload = {
            "type": "view_submission", "user": user(user_id), "team": {"id": TEAM_ID}, "api_app_id": "A0TEST",
            "trigger_id": f"trigger-{next(self._ids)}",
            "view": {"id": view["id"], "type": "modal", "callback_id": view.get("callback_id", ""),
                     "private_metadata": view.get("private_metadata", ""), "state": {"values": values}},
        }
        return await self.interaction(payload)

    async def event(self, event: dict[str, Any]) -> Reply:
        """An Events API callback."""
        body = {"type": "event_callback", "team_id": TEAM_ID, "api_app_id": "A0TEST", "event": event,
                "event_id": f"Ev{next(self._ids)}", "event_time": int(time.time())}
        return await self.post(json.dumps(body).encode(), "application/json")


# -- the whole setup: fake Slack + the real app with the Slack adapter ------------------------------------


@dataclass
class SlackHarness:
    """A running jitpass with its Slack adapter pointed at a FakeSlack."""

    fake: FakeSlack
    running: Any  # tests.support.app.RunningApp
    adapter: Any  # adapters.slack.SlackAdapter
    users: SlackUsers

    @property
    def runtime(self) -> Any:
        return self.running.runtime

    async def settle(self) -> None:
        """Wait until the adapter finished the work it started after acknowledging, and every chat effect
        due now was carried out (then the Home tab publishes those changes caused)."""
        await self.adapter.drain()
        await self.runtime.effects.drain()
        await self.adapter.drain()

    async def request(self, text: str, user_id: str = "UREQ", **kwargs: Any) -> tuple[Reply, str]:
        """Type `/access text`; return the reply and the new request id."""
        import re

        reply = await self.users.command(text, user_id, **kwargs)
        assert reply.status == 200, reply.text
        match = re.search(r"R-[0-9A-Z]{8}", reply.json()["text"])
        assert match, reply.text
        await self.settle()
        return reply, match.group()

    async def events(self, request_id: str | None = None) -> list[Any]:
        return [e async for e in self.runtime.store.events() if request_id is None or e.request_id == request_id]

    async def event_types(self, request_id: str | None = None) -> list[str]:
        return [e.type for e in await self.events(request_id)]

    async def codes_shown(self, request_id: str | None = None) -> list[str]:
        """Each grant.code_shown event's `via`: "app_home" for the Home tab, "message" when it names none
        (New code on the delivered message, the Show password modal)."""
        return [str(e.details.get("via", "message")) for e in await self.events(request_id)
                if e.type == "grant.code_shown"]


@asynccontextmanager
async def slack_harness(tmp_path: Any, *, clock: Any = None, policy_text: str | None = None,
                        adapter_options: Mapping[str, Any] | None = None,
                        **settings: Any) -> AsyncIterator[SlackHarness]:
    """FakeSlack + `running_app` with only the Slack adapter, signed requests ready to send."""
    from adapters.slack import SlackAdapter
    from tests.support.app import TEST_POLICY, FakeClock, running_app, test_settings

    async with fake_slack() as fake:
        values = {"slack_bot_token": BOT_TOKEN, "slack_signing_secret": SIGNING_SECRET, "slack_api_url": fake.url,
                  **settings}
        app_settings = test_settings(tmp_path, **values)
        adapter = SlackAdapter(app_settings, **dict(adapter_options or {}))
        async with running_app(tmp_path, settings=app_settings, clock=clock or FakeClock(), adapters=[adapter],
                               policy_text=policy_text or TEST_POLICY) as running:
            harness = SlackHarness(fake, running, adapter, SlackUsers(fake, running.base_url))
            try:
                yield harness
            finally:
                await adapter.drain()
