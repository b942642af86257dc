"""Adaptive Cards for Teams: pure functions from core objects to card JSON (schema 1.5).

Two layers, as for Slack's Block Kit: first platform-neutral wording (what a state is called,
how a window reads, escaping and truncation of what users typed), then assembly with
Microsoft's typed card models (`microsoft_teams.cards`), serialised to plain dicts.

Buttons are Universal Actions (`Action.Execute`): Teams sends an `adaptiveCard/action` invoke
with the verb and `{"request_id": ...}` and shows the card we answer with. Only the delivery
card ever holds a secret; it goes to the requester's 1:1 chat and nowhere else. The report
card's buttons are `Action.OpenUrl` links to one-time downloads, sent to an admin's 1:1 chat only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any, Final, Literal

from microsoft_teams.cards import (
    AdaptiveCard,
    CardElement,
    Choice,
    ChoiceSetInput,
    Container,
    ExecuteAction,
    Fact,
    FactSet,
    OpenUrlAction,
    TextBlock,
    TextInput,
)

from bot.domain import wording
from bot.domain.model import AccessRequest, Identity, Item, Reveal, Status
from bot.domain.syntax import TEAMS, Typed

__all__ = [
    "CARD_CONTENT_TYPE",
    "CARD_VERSION",
    "ID_CODE",
    "ID_PASSWORD",
    "ID_STATUS",
    "INPUT_DECLINE_REASON",
    "INPUT_ITEM",
    "INPUT_REASON",
    "INPUT_WINDOW",
    "MAX_CARD_BYTES",
    "MAX_FORM_ITEMS",
    "VERB_APPROVE",
    "VERB_DECLINE",
    "VERB_DONE",
    "VERB_NEW_CODE",
    "VERB_SUBMIT_REQUEST",
    "approval_card",
    "card_bytes",
    "clip",
    "delivery_card",
    "grant_ended_card",
    "help_card",
    "items_card",
    "report_files_card",
    "report_text",
    "request_form_card",
    "request_sent_card",
    "state_line",
    "status_card",
    "user_text",
    "when",
    "window_text",
]

CARD_VERSION: Final = "1.5"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
# Teams refuses a message larger than about 28 KB; cards are kept well below it.
MAX_CARD_BYTES = 28 * 1024
MAX_TEXT = 600  # characters of user-typed text (reasons) shown on a card
MAX_FORM_ITEMS = 150  # items offered in the request form's choice list...
FORM_CHOICES_BYTES = 18 * 1024  # ...as long as they fit in this share of the card

VERB_APPROVE = "approve"
VERB_DECLINE = "decline"
VERB_NEW_CODE = "newCode"
VERB_DONE = "done"
VERB_SUBMIT_REQUEST = "submitRequest"

# Input ids: the values come back merged into the action data of the invoke.
INPUT_DECLINE_REASON = "decline_reason"
INPUT_ITEM = "item"
INPUT_REASON = "reason"
INPUT_WINDOW = "window"
# Element ids the tests (and people reading a card JSON) can find.
ID_STATUS = "status"
ID_PASSWORD = "password"
ID_CODE = "totp_code"

Color = Literal["Default", "Good", "Warning", "Attention", "Accent"]

# -- platform-neutral wording --------------------------------------------------------------------


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """Collapse whitespace and cut at `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def user_text(text: str, limit: int = MAX_TEXT) -> str:
    """What a user typed, made safe to show: clipped, and with link syntax broken so a reason
    cannot put a disguised link (`[Approve](https://…)`) on the leads' card."""
    return clip(text, limit).replace("](", "] (").replace("<", "‹").replace(">", "›")


class TeamsMarkup:
    """wording.Markup for Teams: people by display name, typed text with link syntax broken."""

    platform = "Teams"

    def person(self, who: Identity | None) -> str:
        return user_text(who.label, 80) if who is not None else "jitpass"

    def text(self, value: str, limit: int) -> str:
        return user_text(value, limit)

    def channel(self, channel_id: str) -> str:
        return "the leads' channel"  # a Teams channel id (19:…@thread.tacv2) means nothing to a person


MARKUP = TeamsMarkup()

# One time format and one window wording for both platforms (bot/domain/wording.py).
when = wording.moment
window_text = wording.window_line

_COLORS: dict[Status, Color] = {Status.APPROVED: "Good", Status.ACTIVE: "Good", Status.DECLINED: "Attention",
                                Status.TIMED_OUT: "Warning"}


def state_line(request: AccessRequest, tz: tzinfo) -> tuple[str, Color]:
    """One line saying where the request stands (the shared wording), and the colour it deserves."""
    return wording.status_line(request, tz, MARKUP), _COLORS.get(request.status, "Default")


def title_line(request: AccessRequest, tz: tzinfo) -> str:
    """The card's title: the shared wording, with what people typed made safe for Teams."""
    return wording.request_title(request, tz, MARKUP)


# -- assembly ------------------------------------------------------------------------------------


def _card(body: Sequence[CardElement], actions: Sequence[ExecuteAction | OpenUrlAction] = (), *,
          fallback: str) -> dict[str, Any]:
    card = AdaptiveCard(version=CARD_VERSION, fallback_text=fallback, body=list(body),
                        actions=list(actions) or None)
    data: dict[str, Any] = {"$schema": CARD_SCHEMA, **card.model_dump(mode="json", exclude_none=True)}
    data.pop("schema", None)  # the library spells `$schema` without its dollar sign
    return data


def _heading(text: str) -> TextBlock:
    return TextBlock(text=text, style="heading", weight="Bolder", size="Medium", wrap=True)


def _line(text: str, *, color: Color = "Default", subtle: bool = False, element_id: str | None = None) -> TextBlock:
    return TextBlock(text=text, wrap=True, color=None if color == "Default" else color,
                     is_subtle=subtle or None, id=element_id)


def _facts(pairs: Sequence[tuple[str, str]]) -> FactSet:
    return FactSet(facts=[Fact(title=title, value=value) for title, value in pairs if value])


def _action(title: str, verb: str, request_id: str, *, style: Literal["positive", "destructive"] | None = None,
            with_inputs: bool = False) -> ExecuteAction:
    return ExecuteAction(title=title, verb=verb, data={"request_id": request_id}, style=style,
                         associated_inputs=None if with_inputs else "none")


def card_bytes(card: dict[str, Any]) -> int:
    """Size of the card as Teams receives it (compact UTF-8 JSON)."""
    return len(json.dumps(card, ensure_ascii=False, separators=(",", ":")).encode())


def approval_card(request: AccessRequest, item: Item, tz: tzinfo) -> dict[str, Any]:
    """The leads' card: who wants what, why and when; Approve / Decline while pending. No secret."""
    state, color = state_line(request, tz)
    facts = [
        ("Request", request.id),
        ("Item", f"{item.name} (vault {item.vault})"),
        ("URL", clip(item.url, 200)),
        ("Reason", user_text(request.reason)),
        ("Window", window_text(request, tz)),
        ("Approved by", ", ".join(user_text(a.approver.label, 80) for a in request.approvals)),
        ("Notes", user_text("; ".join(request.notes))),
    ]
    body: list[CardElement] = [_heading(title_line(request, tz)), _line(state, color=color, element_id=ID_STATUS),
                               _facts(facts)]
    actions: list[ExecuteAction] = []
    if request.status is Status.PENDING:
        body.append(TextInput(id=INPUT_DECLINE_REASON, label="Reason, if you decline (optional)",
                              placeholder="e.g. use the read-only account instead", max_length=500))
        actions = [_action("Approve", VERB_APPROVE, request.id, style="positive"),
                   _action("Decline", VERB_DECLINE, request.id, style="destructive", with_inputs=True)]
    return _card(body, actions, fallback=f"{title_line(request, tz)} — {state}")


def delivery_card(request: AccessRequest, reveal: Reveal, tz: tzinfo) -> dict[str, Any]:
    """The requester's private card: username, URL, password and the current code; New code / Done.

    The password sits in a text input so it is shown and copied exactly (a text block would
    render `*` or `_` in it as formatting); the buttons send no inputs back, so it never
    travels back to the bot.
    """
    item = reveal.item
    body: list[CardElement] = [
        _line(wording.access_ready(request, item.name, reveal.ends_at, tz, MARKUP), element_id=ID_STATUS),
        _line(wording.DELIVERY_NOTE, subtle=True),
        _facts([("Request", request.id), ("Username", item.username), ("URL", clip(item.url, 200))]),
    ]
    if reveal.password is not None:
        body.append(TextInput(id=ID_PASSWORD, label="Password", value=reveal.password.reveal()))
    actions: list[ExecuteAction] = []
    if reveal.code is not None:
        seconds = reveal.code.seconds_left
        body.append(Container(style="emphasis", items=[
            TextBlock(text="One-time code", weight="Bolder", spacing="None"),
            TextBlock(id=ID_CODE, text=reveal.code.code, size="ExtraLarge", font_type="Monospace", spacing="None"),
            _line(f"{wording.code_valid(seconds)}; press New code for a fresh one", subtle=True),
        ]))
        actions.append(_action("New code", VERB_NEW_CODE, request.id))
    actions.append(_action("Done", VERB_DONE, request.id, style="destructive"))
    return _card(body, actions, fallback=f"Your access to {item.name} is ready: open the card in Teams to see it.")


def grant_ended_card(request: AccessRequest, item: Item, tz: tzinfo) -> dict[str, Any]:
    """What replaces the delivery card when the grant ends: no secret left in the chat."""
    closed = wording.access_closed(request, item.name, tz, MARKUP)
    body: list[CardElement] = [
        _line(closed, element_id=ID_STATUS),
        _line(wording.ask_again(item.name, TEAMS, MARKUP), subtle=True),
    ]
    return _card(body, fallback=closed)


def request_form_card(items: Sequence[Item], *, error: str = "", item: str = "", reason: str = "",
                      window: str = "") -> dict[str, Any]:
    """A form for a request the chat text did not complete: item, reason and window."""
    body: list[CardElement] = [_heading("Request access")]
    if error:
        body.append(_line(clip(error, 400), color="Attention", element_id=ID_STATUS))
    offered = _fitting(items)
    if not offered:
        body.append(_line(wording.CATALOGUE_EMPTY, color="Warning"))
        return _card(body, fallback="Request access: the catalogue is empty.")
    names = {i.name for i in offered}
    body += [
        ChoiceSetInput(id=INPUT_ITEM, label="Item", style="filtered", is_required=True,
                       error_message=wording.FORM_NO_ITEM, value=item if item in names else None,
                       choices=[Choice(title=f"{i.name} ({i.vault})", value=i.name) for i in offered]),
        TextInput(id=INPUT_REASON, label="Why do you need it?", is_multiline=True, is_required=True,
                  error_message=wording.FORM_NO_REASON, max_length=500, value=clip(reason, 500) or None,
                  placeholder="e.g. fix broken trigger"),
        TextInput(id=INPUT_WINDOW, label="When (optional)", value=clip(window, 80) or None,
                  placeholder="for 1h · until 17:00 · tomorrow 9am-11am"),
    ]
    if len(items) > len(offered):
        search = TEAMS.spell(Typed("list", "<words>"))
        body.append(_line(f"Showing {len(offered)} of {len(items)} items; type `{search}` to search.", subtle=True))
    submit = ExecuteAction(title="Request access", verb=VERB_SUBMIT_REQUEST, style="positive", data={})
    return _card(body, [submit], fallback="Request access: open the card in Teams to fill it in.")


def _fitting(items: Sequence[Item]) -> list[Item]:
    """The first items whose choices fit the form's share of Teams' message size."""
    used = 0
    offered: list[Item] = []
    for item in items[:MAX_FORM_ITEMS]:
        used += len(item.name.encode()) * 2 + len(item.vault.encode()) + 40  # title, value and JSON around them
        if used > FORM_CHOICES_BYTES:
            break
        offered.append(item)
    return offered


def request_sent_card(request: AccessRequest, tz: tzinfo, note: str = "") -> dict[str, Any]:
    """What the form turns into once the request is recorded."""
    body: list[CardElement] = [
        _heading(f"📨 Request {request.id} sent"),
        _line(f"{request.item}: {user_text(request.reason)}", element_id=ID_STATUS),
        _facts([("Window", window_text(request, tz)), ("Decide by", when(request.timeout_at, tz))]),
    ]
    if note:
        body.append(_line(note, subtle=True))
    return _card(body, fallback=f"Request {request.id} for {request.item} sent to the leads.")


def help_card(note: str = "") -> dict[str, Any]:
    """What jitpass understands; in a channel, mention the bot first."""
    body: list[CardElement] = [_heading(wording.HELP_TITLE)]
    if note:
        body.append(_line(clip(note, 300), color="Warning", element_id=ID_STATUS))
    body += [
        _facts(wording.help_entries(TEAMS)),
        _line("In a channel, @mention jitpass first. Secrets are only ever sent to you in a 1:1 chat.",
              subtle=True),
    ]
    return _card(body, fallback="jitpass commands: access, list, status, cancel, done, extend, whereami, report, help")


def items_card(items: Sequence[Item], query: str = "") -> dict[str, Any]:
    """Catalogue entries matching a search: metadata only (the shared wording, as a fact set)."""
    found = wording.catalogue(items, query, TEAMS, MARKUP)
    body: list[CardElement] = [_heading(found.heading)]
    if found.empty:
        body.append(_line(found.empty, element_id=ID_STATUS))
        return _card(body, fallback=found.empty)
    body.append(_facts(found.entries))
    body += [_line(line, subtle=True) for line in (found.more, found.ask) if line]
    return _card(body, fallback=found.heading)


def status_card(requests: Sequence[AccessRequest], tz: tzinfo) -> dict[str, Any]:
    """The requester's open requests and grants (the shared wording, one container each)."""
    reply = wording.status_reply(requests, tz, MARKUP)
    body: list[CardElement] = [_heading(reply.heading)]
    if reply.empty:
        body.append(_line(reply.empty, element_id=ID_STATUS))
        return _card(body, fallback=reply.empty)
    for request, row in zip(requests, reply.rows, strict=False):
        body.append(Container(separator=True, items=[
            TextBlock(text=f"{row.request_id} · {row.item}", weight="Bolder", wrap=True),
            _line(row.state, color=_COLORS.get(request.status, "Default")),
            _line(row.window, subtle=True),
        ]))
    if reply.more:
        body.append(_line(reply.more, subtle=True))
    return _card(body, fallback=reply.heading)


def report_files_card(title: str, csv_url: str, html_url: str, expires_at: datetime, tz: tzinfo) -> dict[str, Any]:
    """Download buttons for an access report's CSV and HTML; the links are one-time and short-lived.

    The URLs carry the download token, so they are on the buttons only, never in the fallback
    text (which Teams shows in notifications).
    """
    body: list[CardElement] = [
        _heading(f"{wording.REPORT_EMOJI} {clip(title, 200)}"),
        _line(wording.report_links(expires_at, tz), subtle=True, element_id=ID_STATUS),
    ]
    actions = [OpenUrlAction(title="Download CSV", url=csv_url),
               OpenUrlAction(title="Download HTML", url=html_url)]
    return _card(body, actions, fallback="Access report: open this card in Teams to download the files.")


def report_text(summary: str) -> str:
    """The message above the report card: the shared summary lines, one paragraph each."""
    reply = wording.report_reply(summary)
    # Teams reads a single line break as none: each line is its own paragraph.
    return "\n\n".join([reply.heading, *reply.bullets])
