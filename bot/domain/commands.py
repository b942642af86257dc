"""One command vocabulary for every chat platform: `parse_command(text)` reads what a person typed, once.

Slack's `/access …` and a Teams message are two spellings (bot.domain.syntax) of the same commands:
`help`, `list [query]`, `status`, `cancel ID`, `done ID`, `extend ID 30m`, `report …`, `whereami`, and a
request `<item> <why> <when>` (after the platform's request verb: none in Slack, `access` in Teams).
A request that is not complete yet (no text, no reason, an unreadable time) is a `Form` to fill in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from bot.domain.errors import InputError, ParseError
from bot.domain.model import Window
from bot.domain.request_text import RequestDraft, parse_duration, parse_request
from bot.domain.syntax import SLACK, Hint, Syntax, Typed, example

__all__ = [
    "REQUEST_ID", "VERBS", "Cancel", "Command", "Done", "Extend", "Form", "Help", "ListItems", "Report", "Request",
    "Status", "Unknown", "WhereAmI", "parse_command", "parse_request_id",
]

# Request ids are `R-` and 8 characters of Crockford base 32 (model.new_request_id), any case.
REQUEST_ID = re.compile(r"^R-[0-9A-Z]{8}$", re.IGNORECASE)
_EXAMPLE_ID = "R-ABCD2345"


@dataclass(frozen=True)
class Help:
    note: str = ""  # shown above the help ("I don't know …")


@dataclass(frozen=True)
class ListItems:
    query: str = ""


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class Cancel:
    request_id: str


@dataclass(frozen=True)
class Done:
    request_id: str


@dataclass(frozen=True)
class Extend:
    request_id: str
    duration: timedelta


@dataclass(frozen=True)
class Report:
    args: str = ""  # `30d vault:acme …`, read by bot.reports.chat.parse_chat_args


@dataclass(frozen=True)
class WhereAmI:
    pass


@dataclass(frozen=True)
class Request:
    """A complete request: item, reason and (optionally) a window."""

    draft: RequestDraft


@dataclass(frozen=True)
class Form:
    """A request to finish in the platform's form: what was typed so far, and what is wrong with it."""

    item: str = ""
    window: Window | None = None  # read from the text when it could be
    window_text: str = ""  # the text after the item, for a form's free-text window field
    problem: ParseError | None = None  # the text could not be read
    missing_reason: bool = False  # the text named an item (and a time) but no reason


@dataclass(frozen=True)
class Unknown:
    word: str  # not a verb, in a platform where requests need their verb (Teams' `access`)


Command = Help | ListItems | Status | Cancel | Done | Extend | Report | WhereAmI | Request | Form | Unknown

VERBS = ("help", "list", "status", "cancel", "done", "extend", "report", "whereami")


def parse_request_id(text: str, verb: str, extra: str = "") -> str:
    """The request id that starts `text` (upper-cased), or an InputError saying how `verb` is typed."""
    words = text.split()
    request_id = words[0] if words else ""
    if not REQUEST_ID.match(request_id):
        raise InputError(f"Say which request: {verb} needs a request id like {_EXAMPLE_ID}.",
                         hint=Hint("Usage: {}", (Typed(verb, f"{_EXAMPLE_ID}{' ' + extra if extra else ''}"),)))
    return request_id.upper()


def parse_command(text: str, *, now: datetime, tz: tzinfo, syntax: Syntax = SLACK) -> Command:
    """What `text` (after the platform's prefix, mentions removed) asks for; raises InputError on a bad id/duration."""
    text = " ".join(text.split())
    word, _, rest = text.partition(" ")
    verb = word.lower().lstrip("/")
    if verb == "channel" and rest.lower() in {"id", "id?"}:
        verb, rest = "whereami", ""
    if verb in VERBS:
        return _verb(verb, rest, syntax)
    if syntax.request_verb:
        if verb != syntax.request_verb:
            return Unknown(word)
        text = rest
    return _request(text, now=now, tz=tz)


def _verb(verb: str, rest: str, syntax: Syntax) -> Command:
    match verb:
        case "help":
            return Help(rest)
        case "list":
            return ListItems(rest)
        case "status":
            return Status()
        case "cancel":
            return Cancel(parse_request_id(rest, "cancel"))
        case "done":
            return Done(parse_request_id(rest, "done"))
        case "extend":
            request_id = parse_request_id(rest, "extend", "30m")
            return Extend(request_id, _extra_time(request_id, rest.partition(" ")[2]))
        case "report":
            return Report(rest)
        case _:
            return WhereAmI()


def _extra_time(request_id: str, text: str) -> timedelta:
    hint = example("extend", f"{request_id} 30m")
    if not text.strip():
        raise InputError("For how much longer?", hint=hint)
    try:
        return parse_duration(text)
    except InputError as exc:
        raise InputError(exc.message, hint=hint) from None


def _request(text: str, *, now: datetime, tz: tzinfo) -> Command:
    if not text:
        return Form()
    first = text.split()[0]
    try:
        draft = parse_request(text, now=now, tz=tz, default_duration=timedelta(0))
    except ParseError as exc:
        return Form(item=first.strip("`:,").lower(), window_text=text[len(first):].strip(), problem=exc)
    if not draft.reason:
        return Form(item=draft.item, window=draft.window, window_text=text[len(first):].strip(), missing_reason=True)
    return Request(draft)
