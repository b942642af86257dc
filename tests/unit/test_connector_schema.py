"""The connector stand-in refuses what Microsoft 365 Agents Playground 0.2.28's connector refuses.

Every row is an answer recorded from the real Playground (POST/PUT on
`/_connector/v3/conversations/channel-announcements-id/activities[/{id}]`, see docs/teams.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.connector_schema import refusal

CARD = {"contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"type": "AdaptiveCard", "version": "1.5", "body": []}}

RECORDED: list[tuple[str, dict[str, Any], tuple[int, str, str] | None]] = [
    ("POST", {"type": "message", "text": None, "attachments": [CARD]}, (400, "BadArgument", "Invalid input")),
    ("POST", {"type": "message", "attachments": [CARD]}, None),
    ("POST", {"type": "message", "attachments": [CARD], "conversation": {"id": "c", "tenantId": None}},
     (400, "BadArgument", "Invalid input")),
    ("POST", {"type": "message"},
     (400, "BadSyntax", "Activity must include non empty 'text' field or at least 1 attachment")),
    ("POST", {"type": "event", "text": "x"}, (400, "BadArgument", "Invalid input")),
    ("POST", {"type": "message", "text": "hi", "locale": None, "id": None}, (400, "BadArgument", "Invalid input")),
    ("POST", {"type": "message", "text": "hi", "textFormat": "html"}, (400, "BadArgument", "Invalid input")),
    ("POST", {"type": "message", "text": "hi",
              "entities": [{"type": "mention", "text": "x", "mentioned": {"id": "u"}}]},
     (400, "MissingProperty", "Mention entity does not have valid text")),
    ("POST", {"type": "message", "text": "hi",
              "entities": [{"type": "mention", "text": "<at>x</at>", "mentioned": {"id": "u"}}]},
     (400, "BadArgument", "Mention entity does not match text")),
    ("POST", {"type": "typing"}, None),
    ("POST", {"type": "message", "text": "hi"}, None),
    ("PUT", {"type": "message", "text": None}, (400, "BadArgument", "Expected string, received null")),
    ("PUT", {"type": "typing"}, (400, "BadArgument", "Bot Activities of type Typing cannot be edited")),
    ("PUT", {"type": "message"},
     (400, "BadSyntax", "Activity must include non empty 'text' field or at least 1 attachment")),
    ("PUT", {"type": "message", "text": "b", "conversation": {"id": "x"}, "id": "1796229823134"}, None),
]


@pytest.mark.parametrize(("method", "body", "expected"), RECORDED)
def test_the_stand_in_answers_as_the_playground_did(
        method: str, body: dict[str, Any], expected: tuple[int, str, str] | None) -> None:
    answer = refusal(method, body)
    if expected is None:
        assert answer is None
        return
    status, code, message = expected
    assert answer == (status, {"error": {"code": code, "message": message}})
