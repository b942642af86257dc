"""Limits on what a chat platform may send: hostile bodies are refused before any parser recurses.

Slack's and Teams' own payloads are a few KiB and nest a dozen levels at most; the limits leave
room for that many times over. Both endpoints enforce them (bot/app.py `guard_chat_bodies`), and
Slack's payload field, which arrives form-encoded, goes through `loads_bounded` too."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_BODY_BYTES", "MAX_JSON_DEPTH", "TooDeep", "json_depth", "loads_bounded"]

MAX_BODY_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


class TooDeep(ValueError):
    """JSON nested deeper than MAX_JSON_DEPTH: refused without parsing it."""


def json_depth(text: str | bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, counted outside strings, without parsing."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub(b"", data)):
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(depth - 1, 0)
    return deepest


def loads_bounded(text: str) -> Any:
    """`json.loads`, but a text nested deeper than MAX_JSON_DEPTH is a TooDeep (a ValueError), never a
    RecursionError."""
    if json_depth(text) > MAX_JSON_DEPTH:
        raise TooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text)
