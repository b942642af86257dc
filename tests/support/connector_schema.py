"""What the Bot Connector refuses in an activity a bot posts or updates, as Microsoft 365 Agents
Playground 0.2.28 checks it (its bundled `connectorApiContract` zod schemas and `ConnectorApiValidator`).

Read from the Playground's own code and checked against the running Playground (see docs/teams.md):
- `POST …/activities[/{id}]` takes a message/typing activity or a trace; every property the schema
  names must have its type when present, so an explicit `null` (`"text": null`,
  `"conversation": {"tenantId": null}`, `"id": null`) is refused with
  `400 {"error": {"code": "BadArgument", "message": "Invalid input"}}` (the union's message);
  properties the schema does not name pass through.
- `PUT …/activities/{id}` takes a message only, with zod's message for the first problem
  (`Expected string, received null`, `Bot Activities of type Typing cannot be edited`).
- A message needs text or at least one attachment (`BadSyntax`); mention entities need
  `<at>…</at>` text that appears in the message text; an update carries one attachment at most.

`refusal(method, body)` returns None when the connector accepts the body, else (status, error body).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["refusal"]

Check = Callable[[Any], str | None]  # None when the value is fine, else zod's message

CARD_ADAPTIVE = "application/vnd.microsoft.card.adaptive"
CARD_HERO = "application/vnd.microsoft.card.hero"
ACTIVITY_KINDS = ("message", "typing")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else f"Expected string, received {_type_name(value)}"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"Expected boolean, received {_type_name(value)}"


def _enum(*options: str) -> Check:
    def check(value: Any) -> str | None:
        if value in options:
            return None
        return f"Invalid enum value. Expected {' | '.join(repr(o) for o in options)}, received {value!r}"
    return check


def _array_of(item: Check) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"Expected array, received {_type_name(value)}"
        return next((problem for problem in map(item, value) if problem), None)
    return check


def _object(fields: Mapping[str, tuple[Check, bool]]) -> Check:
    """A zod object: named fields typed (required when the flag says so), other keys let through."""
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"Expected object, received {_type_name(value)}"
        for name, (field_check, required) in fields.items():
            if name not in value:
                if required:
                    return "Required"
                continue
            problem = field_check(value[name])
            if problem:
                return problem
        return None
    return check


def _attachment(value: Any) -> str | None:
    """A card (adaptive or hero, with an object as content) or any other content type."""
    if not isinstance(value, dict):
        return f"Expected object, received {_type_name(value)}"
    content_type = value.get("contentType")
    if content_type in (CARD_ADAPTIVE, CARD_HERO):
        return None if isinstance(value.get("content"), dict) else "Invalid input"
    return _object({"contentType": (_string, True), "contentUrl": (_string, False), "name": (_string, False),
                    "thumbnailUrl": (_string, False)})(value)


_ENTITY = _object({"type": (_string, True)})
_CONVERSATION = _object({"id": (_string, True), "conversationType": (_enum("personal", "groupChat", "channel"), False),
                         "tenantId": (_string, False)})
_CONTENT: dict[str, tuple[Check, bool]] = {
    "text": (_string, False),
    "textFormat": (_enum("markdown", "plain", "xml"), False),
    "attachmentLayout": (_enum("list", "carousel"), False),
    "attachments": (_array_of(_attachment), False),
    "entities": (_array_of(_ENTITY), False),
    "feedbackLoopEnabled": (_boolean, False),
}
_MESSAGE = _object({"id": (_string, False), "replyToId": (_string, False), "type": (_enum(*ACTIVITY_KINDS), True),
                    "channelId": (_string, False), **_CONTENT, "conversation": (_CONVERSATION, False)})
_TRACE = _object({"id": (_string, False), "replyToId": (_string, False), "type": (_enum("trace"), True),
                  "channelId": (_string, False), "name": (_string, False), "label": (_string, False),
                  "valueType": (_string, False), "conversation": (_CONVERSATION, False)})
_UPDATE = _object(_CONTENT)


def _error(code: str, message: str, status: int = 400) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": code, "message": message}}


def _content_problem(body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """The checks after the schema: mentions, and a message that shows nothing."""
    mentions = [e for e in body.get("entities") or [] if e.get("type") == "mention"]
    for mention in mentions:
        mentioned = mention.get("mentioned")
        if not isinstance(mentioned, dict) or not isinstance(mentioned.get("id"), str):
            return _error("MissingProperty", "Mention entity does not have valid id")
        if not isinstance(mention.get("text"), str):
            return _error("MissingProperty", "Mention entity does not have valid text")
    if body.get("type") == "message" and "text" not in body and not body.get("attachments"):
        return _error("BadSyntax", "Activity must include non empty 'text' field or at least 1 attachment")
    for mention in mentions:
        text = mention["text"]
        if not (text.startswith("<at>") and text.endswith("</at>")):
            return _error("MissingProperty", "Mention entity does not have valid text")
        if body.get("text") and text not in body["text"]:
            return _error("BadArgument", "Mention entity does not match text")
    return None


def refusal(method: str, body: Any) -> tuple[int, dict[str, Any]] | None:
    """None when the connector takes `body` for `method` (POST = new message or reply, PUT = update)."""
    if method == "PUT":
        if not isinstance(body, dict):
            return _error("BadArgument", f"Expected object, received {_type_name(body)}")
        if body.get("type") != "message":
            message = ("Bot Activities of type Typing cannot be edited" if body.get("type") == "typing"
                       else "Unknown activity type")
            return _error("BadArgument", message)
        problem = _UPDATE(body)
        if problem:
            return _error("BadArgument", problem)
        if len(body.get("attachments") or []) > 1:
            return _error("BadSyntax", "Activity resulted into multiple skype activities")
        return _content_problem(body)
    if not isinstance(body, dict) or (_MESSAGE(body) and _TRACE(body)):
        return _error("BadArgument", "Invalid input")  # zod's message when no member of the union fits
    return _content_problem(body) if body.get("type") in ACTIVITY_KINDS else None
