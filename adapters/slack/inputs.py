"""What Slack sends, read defensively: slash command and button fields, submitted form values."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adapters.slack.blocks import DURATION_BLOCK, ITEM_BLOCK, REASON_BLOCK, START_BLOCK
from bot.domain.errors import (
    FIELD_DURATION,
    FIELD_ITEM,
    FIELD_REASON,
    FIELD_START,
    Conflict,
    JitpassError,
    NotAllowed,
    NotFound,
)

__all__ = [
    "ActionInput", "CommandInput", "block_for", "form_values", "mapping", "metadata_of", "parse_time", "start_time",
]


@dataclass(frozen=True)
class CommandInput:
    """The fields of a slash command jitpass uses."""

    command: str
    text: str
    user_id: str
    user_name: str
    channel_id: str
    response_url: str
    trigger_id: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CommandInput:
        """Read a slash command body; missing or odd fields become empty strings."""
        def field(name: str) -> str:
            value = body.get(name)
            return value.strip() if isinstance(value, str) else ""

        return cls(field("command") or "/access", " ".join(field("text").split()), field("user_id"),
                   field("user_name"), field("channel_id"), field("response_url"), field("trigger_id"))


@dataclass(frozen=True)
class ActionInput:
    """The fields of a button press jitpass uses."""

    user_id: str
    user_name: str
    value: str
    response_url: str
    trigger_id: str
    view_id: str
    view_type: str = ""  # "home" for a press on the Home tab, "modal" in a modal, "" in a message

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ActionInput:
        """Read a block_actions payload (first action); missing or odd fields become empty strings."""
        user, view = mapping(body.get("user")), mapping(body.get("view"))
        actions = body.get("actions")
        action = mapping(actions[0]) if isinstance(actions, list) and actions else {}

        def text(data: Mapping[str, Any], name: str) -> str:
            value = data.get(name)
            return value if isinstance(value, str) else ""

        return cls(text(user, "id"), text(user, "username") or text(user, "name"), text(action, "value").strip(),
                   text(body, "response_url"), text(body, "trigger_id"), text(view, "id"), text(view, "type"))


def mapping(value: Any) -> Mapping[str, Any]:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def form_values(view: Mapping[str, Any]) -> dict[str, str]:
    """block_id -> the submitted value as text (selected option value, typed text, epoch seconds)."""
    state = view.get("state")
    values = state.get("values") if isinstance(state, Mapping) else None
    result: dict[str, str] = {}
    if not isinstance(values, Mapping):
        return result
    for block_id, elements in values.items():
        if not isinstance(elements, Mapping):
            continue
        for element in elements.values():
            if not isinstance(element, Mapping):
                continue
            option = element.get("selected_option")
            if isinstance(option, Mapping) and isinstance(option.get("value"), str):
                result[str(block_id)] = option["value"]
            elif isinstance(element.get("value"), str):
                result[str(block_id)] = element["value"]
            elif isinstance(element.get("selected_date_time"), int):
                result[str(block_id)] = str(element["selected_date_time"])
    return result


def metadata_of(view: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object we stored in the view's private_metadata (empty if unreadable)."""
    try:
        data = json.loads(str(view.get("private_metadata") or "{}"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def start_time(text: str) -> datetime | None:
    """A datetimepicker's epoch seconds as an aware UTC time."""
    if not text.strip().isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(text), UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_time(value: Any) -> datetime | None:
    """An ISO time we wrote into metadata; None unless it is a readable, timezone-aware time."""
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


_BLOCKS = {FIELD_ITEM: ITEM_BLOCK, FIELD_REASON: REASON_BLOCK, FIELD_DURATION: DURATION_BLOCK,
           FIELD_START: START_BLOCK}


def block_for(error: JitpassError) -> str:
    """Which input of the request form an error is about: the field it names, else the item for
    refusals (unknown item, not allowed, already requested) and the duration for other input errors."""
    if error.field in _BLOCKS:
        return _BLOCKS[error.field]
    if isinstance(error, NotFound | Conflict | NotAllowed):
        return ITEM_BLOCK
    return DURATION_BLOCK
