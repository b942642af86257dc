"""`POST /slack/events`: check Slack's signature on the raw bytes, refuse malformed bodies, hand the rest to bolt.

Signatures are verified here rather than by bolt so that a bad or stale signature is a 401 before
any parsing, and a body that is signed but malformed is a 400 with a reason (bolt would answer
500). Bolt then receives the parsed body re-encoded as JSON: its own form parser reads a slash
command whose text contains the word "payload" as an empty body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from adapters.slack.app import DEADLINE, Ack, apology
from bot.domain.admission import ACK_BUDGET_SECONDS, arrived, deadline
from bot.domain.limits import TooDeep, loads_bounded

__all__ = [
    "MAX_TIMESTAMP_SKEW_SECONDS", "CommandAck", "CommandHandler", "MalformedRequest", "SlackEventsEndpoint",
    "expected_signature", "parse_slack_body",
]

log = logging.getLogger("jitpass.slack.http")

MAX_TIMESTAMP_SKEW_SECONDS = 300  # Slack's own rule: older requests may be replays
_USER_PAYLOADS = {"block_actions", "view_submission", "view_closed", "shortcut", "message_action",
                  "block_suggestion"}
_FORWARDED_HEADERS = ("x-slack-request-timestamp", "x-slack-signature", "x-slack-retry-num",
                      "x-slack-retry-reason")


class MalformedRequest(ValueError):
    """A signed request whose body is not something Slack sends; the message says what is wrong."""


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        data = loads_bounded(text)
    except TooDeep as exc:
        raise MalformedRequest(f"{what} is {exc}") from None
    except ValueError:
        raise MalformedRequest(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedRequest(f"{what} is not a JSON object")
    return data


def parse_slack_body(raw: str, content_type: str) -> dict[str, Any]:
    """The body as Slack means it: an Events API JSON object, an interaction payload, or a slash command."""
    if content_type == "application/json" or raw.lstrip().startswith("{"):
        body = _json_object(raw, "the body")
        _check_event(body)
        return body
    try:
        form = dict(parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw), max_num_fields=100))
    except ValueError:
        raise MalformedRequest("the body is neither JSON nor form-encoded") from None
    if "payload" in form:
        body = _json_object(form["payload"], "the payload field")
        _check_interaction(body)
        return body
    if "command" in form:
        if not form["command"].startswith("/") or not form.get("user_id"):
            raise MalformedRequest("a slash command needs `command` (starting with /) and `user_id`")
        return form
    if form.get("ssl_check") == "1":
        return form
    raise MalformedRequest("expected an Events API JSON body, an interaction `payload` or a slash command")


# Top-level fields bolt reads as objects whenever they are present (a null or a string there crashes it).
_OBJECT_FIELDS = ("user", "team", "channel", "view", "message", "container", "enterprise", "event", "state")


# Top-level fields bolt's listener matchers run a regular expression over whenever they are present.
_STRING_FIELDS = ("command", "callback_id")


def _check_objects(body: Mapping[str, Any]) -> None:
    for name in _OBJECT_FIELDS:
        if name in body and not isinstance(body[name], Mapping):
            raise MalformedRequest(f"`{name}` must be an object")
    for name in _STRING_FIELDS:
        if name in body and not isinstance(body[name], str):
            raise MalformedRequest(f"`{name}` must be a string")


def _check_event(body: Mapping[str, Any]) -> None:
    _check_objects(body)
    kind = body.get("type")
    if not isinstance(kind, str):
        raise MalformedRequest("an Events API body needs a string `type`")
    if kind == "url_verification" and not isinstance(body.get("challenge"), str):
        raise MalformedRequest("url_verification needs a string `challenge`")
    if kind == "event_callback" or "event" in body:
        # bolt reads `event.type` of any body that has an `event` (and fails on a string there).
        event = body.get("event")
        if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
            raise MalformedRequest("`event` must be an object with a string `type`")


def _check_interaction(body: Mapping[str, Any]) -> None:
    _check_objects(body)
    kind = body.get("type")
    if not isinstance(kind, str):
        raise MalformedRequest("the payload needs a string `type`")
    user = body.get("user")
    if kind in _USER_PAYLOADS and not (isinstance(user, Mapping) and isinstance(user.get("id"), str) and user["id"]):
        raise MalformedRequest(f"a {kind} payload needs `user.id`")
    if kind == "block_actions":
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions or not all(
                isinstance(a, Mapping) and isinstance(a.get("action_id"), str)
                and isinstance(a.get("block_id", ""), str) for a in actions):
            raise MalformedRequest("block_actions needs a non-empty `actions` list, each with an `action_id` "
                                   "(and a `block_id`, when there is one, that is a string)")
    if kind in {"view_submission", "view_closed"}:
        view = body.get("view")
        if not isinstance(view, Mapping) or not isinstance(view.get("callback_id"), str):
            raise MalformedRequest(f"a {kind} payload needs a `view` with a `callback_id`")
        if kind == "view_submission" and not isinstance(view.get("state"), Mapping):
            raise MalformedRequest("view_submission needs `view.state`")


def expected_signature(secret: str, timestamp: str, raw: bytes) -> str:
    """Slack's v0 signature over the raw bytes (slack_sdk's SignatureVerifier insists on UTF-8 text)."""
    base = b"v0:" + timestamp.encode() + b":" + raw
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


# `SlackInteractions.on_command`: the slash command listener, called here without bolt's dispatch.
CommandHandler = Callable[[Ack, dict[str, Any], dict[str, Any]], Awaitable[None]]


class CommandAck:
    """A slash command's acknowledgement, answered as bolt answers it: JSON `{text, response_type}` when a
    response type is given, else the bare text (an empty body for `ack()`)."""

    def __init__(self) -> None:
        self.response = web.Response(text="")

    async def __call__(self, text: str = "", *, response_type: str | None = None) -> None:
        """Set the HTTP response to the command."""
        if response_type:
            self.response = web.json_response({"text": text, "response_type": response_type})
        else:
            self.response = web.Response(text=text)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


class SlackEventsEndpoint:
    """The aiohttp handler; `bolt` is set once the adapter has started."""

    def __init__(self, signing_secret: str | None, *, now: Callable[[], float] = time.time,
                 ack_budget: float = ACK_BUDGET_SECONDS) -> None:
        self.signing_secret = signing_secret
        self.now = now
        self.ack_budget = ack_budget
        self.bolt: AsyncApp | None = None
        # Slash commands go straight to their listener once verified and parsed: bolt's dispatch (middleware
        # chain, listener matching, the body re-encoded and parsed again) was a third of a `help`'s CPU.
        self.commands: CommandHandler | None = None
        self.unavailable = "the Slack adapter is starting"

    def _unauthorised(self, raw: bytes, headers: Mapping[str, str]) -> str | None:
        assert self.signing_secret
        timestamp, signature = headers.get("X-Slack-Request-Timestamp", ""), headers.get("X-Slack-Signature", "")
        if not timestamp.isdigit() or not signature:
            return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
        if abs(self.now() - int(timestamp)) > MAX_TIMESTAMP_SKEW_SECONDS:
            return "stale X-Slack-Request-Timestamp (more than 5 minutes off)"
        if not hmac.compare_digest(expected_signature(self.signing_secret, timestamp, raw), signature):
            return "bad X-Slack-Signature"
        return None

    async def handle(self, request: web.Request) -> web.Response:
        """The aiohttp handler of `POST /slack/events`."""
        if not self.signing_secret:
            return _error(501, "SLACK_SIGNING_SECRET is not set: HTTP mode cannot verify Slack's requests "
                               "(set it, or use Socket Mode with SLACK_APP_TOKEN)")
        came = arrived()
        raw = await request.read()
        problem = self._unauthorised(raw, request.headers)
        if problem:
            log.warning("event=slack_request_refused reason=%r", problem)
            return _error(401, problem)
        if self.bolt is None:
            return _error(503, self.unavailable)
        try:
            body = parse_slack_body(raw.decode("utf-8"), request.content_type)
        except UnicodeDecodeError:
            return _error(400, "malformed Slack request: the body is not UTF-8")
        except MalformedRequest as exc:
            log.warning("event=slack_request_malformed reason=%r", str(exc))
            return _error(400, f"malformed Slack request: {exc}")
        # The ack budget counts from arrival, and from Slack's own timestamp when that says it waited before.
        due = deadline(came, self.ack_budget, sent_at=int(request.headers["X-Slack-Request-Timestamp"]),
                       now_wall=self.now())
        if self.commands is not None and "command" in body and "type" not in body:
            ack = CommandAck()
            try:
                await self.commands(ack, body, {DEADLINE: due})
            except Exception as exc:
                return web.json_response({"response_type": "ephemeral", "text": apology("dispatch", exc)})
            return ack.response
        headers: dict[str, str | Sequence[str]] = {"content-type": "application/json"}
        for name in _FORWARDED_HEADERS:
            if name in request.headers:
                headers[name] = request.headers[name]
        try:
            response = await self.bolt.async_dispatch(AsyncBoltRequest(
                body=json.dumps(body), headers=headers, query=request.query_string, context={DEADLINE: due}))
        except Exception as exc:
            return web.json_response({"response_type": "ephemeral", "text": apology("dispatch", exc)})
        out_headers = {name: values[0] for name, values in response.headers.items()
                       if values and name.lower() not in {"content-length", "content-type"}}
        content_type = next((v[0] for k, v in response.headers.items() if k.lower() == "content-type" and v),
                            "text/plain;charset=utf-8")
        return web.Response(status=response.status, body=(response.body or "").encode(),
                            headers={**out_headers, "Content-Type": content_type})
