"""Pure Block Kit builders: core objects in, Slack JSON out. No I/O, no clock, no Slack client.

Two layers: platform-neutral wording (bot/domain/wording.py, given Slack `MARKUP`) and Block Kit
assembly, which escapes and truncates every user-supplied string to Slack's limits, named
below. Passwords appear only in `secret_message` and `code_modal`; a live TOTP code also in
`home_view`, which is given codes alone. Never in fallback `text` (which Slack shows in
notifications) and never in an approval card.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta, tzinfo
from typing import Any

from bot.domain import wording
from bot.domain.model import AccessRequest, CodeView, Identity, Item, Reveal, Status
from bot.domain.request_text import format_duration
from bot.domain.syntax import SLACK

__all__ = [
    "ACTION_ID_MAX",
    "BUTTON_TEXT_MAX",
    "BUTTON_VALUE_MAX",
    "CONTEXT_ELEMENTS_MAX",
    "FIELDS_MAX",
    "FIELD_TEXT_MAX",
    "HEADER_TEXT_MAX",
    "MARKUP",
    "MESSAGE_BLOCKS_MAX",
    "MESSAGE_TEXT_MAX",
    "OPTIONS_MAX",
    "OPTION_TEXT_MAX",
    "OPTION_VALUE_MAX",
    "PLAIN_LABEL_MAX",
    "PRIVATE_METADATA_MAX",
    "SECTION_TEXT_MAX",
    "VIEW_BLOCKS_MAX",
    "VIEW_TITLE_MAX",
    "Actions",
    "Message",
    "approval_card",
    "code_modal",
    "cut_mrkdwn",
    "decline_modal",
    "ended_message",
    "ended_modal",
    "escape",
    "fit",
    "help_text",
    "home_view",
    "items_text",
    "mention",
    "notice_modal",
    "report_text",
    "request_modal",
    "secret_message",
    "status_text",
    "truncate",
]

# -- Slack's limits (https://docs.slack.dev/reference/block-kit) ----------------------------------
SECTION_TEXT_MAX = 3000  # section block text
FIELD_TEXT_MAX = 2000  # each section field
FIELDS_MAX = 10  # fields per section
HEADER_TEXT_MAX = 150  # header block plain_text
BUTTON_TEXT_MAX = 75  # button label
BUTTON_VALUE_MAX = 2000
PLAIN_LABEL_MAX = 75  # our cap for short plain_text labels (input labels, placeholders)
OPTION_TEXT_MAX = 75  # select option text
OPTION_VALUE_MAX = 150  # select option value
OPTIONS_MAX = 100  # options in a static_select
ACTION_ID_MAX = 255  # action_id and block_id
CONTEXT_ELEMENTS_MAX = 10  # elements in a context block
CONTEXT_TEXT_MAX = 2000  # our cap per context element (Slack's own limit is larger)
MESSAGE_BLOCKS_MAX = 50  # blocks per message
VIEW_BLOCKS_MAX = 100  # blocks per modal or Home tab
VIEW_TITLE_MAX = 24  # modal title, submit and close labels
PRIVATE_METADATA_MAX = 3000
MESSAGE_TEXT_MAX = 4000  # our cap for plain replies; Slack truncates `text` at 40,000
REASON_INPUT_MAX = 500  # the core keeps at most 500 characters of a decline reason

ELLIPSIS = "…"


class Actions:
    """action_id / callback_id values: the contract between these builders and the listeners."""

    APPROVE = "jitpass_approve"
    DECLINE = "jitpass_decline"
    NEW_CODE = "jitpass_new_code"
    DONE = "jitpass_done"
    CANCEL = "jitpass_cancel"
    SHOW_PASSWORD = "jitpass_show_code"  # the value predates the live code on the Home tab; kept for old tabs
    MODAL_NEW_CODE = "jitpass_modal_new_code"
    OPEN_REQUEST = "jitpass_open_request"
    REQUEST_VIEW = "jitpass_request"
    DECLINE_VIEW = "jitpass_decline_reason"


# Block ids of the request modal, named so validation errors can point at the right input.
ITEM_BLOCK, REASON_BLOCK, DURATION_BLOCK, START_BLOCK = "item", "reason", "duration", "start"


@dataclass(frozen=True)
class Message:
    """A chat message: notification `text` (never secret) and its blocks."""

    text: str
    blocks: list[dict[str, Any]]

    def payload(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks}


# -- text helpers -------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as markup (`<@U…>`, `<!channel>`, links)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending in an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + ELLIPSIS


def fit(text: str, limit: int) -> str:
    """Escape `text` for mrkdwn and cut it to `limit` characters without splitting an entity."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    out: list[str] = []
    size = 0
    for char in text:
        piece = escape(char)
        if size + len(piece) > limit - 1:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out).rstrip() + ELLIPSIS


def mention(who: Identity | None) -> str:
    """A Slack mention for Slack users; the escaped display name for anyone else."""
    if who is None:
        return "jitpass"
    if who.platform == "slack":
        return f"<@{who.user_id}>"
    return escape(who.label)


class SlackMarkup:
    """wording.Markup for Slack: people as mentions, channels as links, typed text escaped for mrkdwn."""

    platform = "Slack"

    def person(self, who: Identity | None) -> str:
        return mention(who)

    def text(self, value: str, limit: int) -> str:
        return fit(value, limit)

    def channel(self, channel_id: str) -> str:
        return f"<#{channel_id}>"


MARKUP = SlackMarkup()


def _status(request: AccessRequest, tz: tzinfo) -> str:
    return wording.status_line(request, tz, MARKUP)


def _plain(text: str, limit: int = PLAIN_LABEL_MAX) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(text, limit) or " ", "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def cut_mrkdwn(text: str, limit: int) -> str:
    """Cut already-escaped mrkdwn to `limit` characters without ending inside `&amp;` or `<...>`."""
    if len(text) <= limit:
        return text
    head = text[: max(limit - 1, 0)]
    amp, semi = head.rfind("&"), head.rfind(";")
    if amp > semi and len(head) - amp <= 6:
        head = head[:amp]
    opening, closing = head.rfind("<"), head.rfind(">")
    if opening > closing:
        head = head[:opening]
    return head.rstrip() + ELLIPSIS


def _section(text: str) -> dict[str, Any]:
    # Callers pass escaped mrkdwn; the final cut keeps any composition within the limit.
    return {"type": "section", "text": _mrkdwn(cut_mrkdwn(text, SECTION_TEXT_MAX))}


def _fields(fields: Sequence[str | dict[str, Any]]) -> dict[str, Any]:
    objects = [f if isinstance(f, dict) else _mrkdwn(cut_mrkdwn(f, FIELD_TEXT_MAX)) for f in fields[:FIELDS_MAX]]
    return {"type": "section", "fields": objects}


def _context(texts: Iterable[str]) -> dict[str, Any]:
    elements = [_mrkdwn(cut_mrkdwn(t, CONTEXT_TEXT_MAX)) for t in texts if t]
    return {"type": "context", "elements": elements[:CONTEXT_ELEMENTS_MAX] or [_mrkdwn(" ")]}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": _plain(text, HEADER_TEXT_MAX)}


def _button(text: str, action_id: str, value: str, style: str | None = None,
            confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button", "text": _plain(text, BUTTON_TEXT_MAX), "action_id": action_id[:ACTION_ID_MAX],
        "value": value[:BUTTON_VALUE_MAX],
    }
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = confirm
    return button


def _actions(block_id: str, *buttons: dict[str, Any]) -> dict[str, Any]:
    return {"type": "actions", "block_id": block_id[:ACTION_ID_MAX], "elements": list(buttons)}


def _cap(blocks: list[dict[str, Any]], limit: int, note: str) -> list[dict[str, Any]]:
    """Keep within a block budget, saying what was left out rather than failing the whole post."""
    if len(blocks) <= limit:
        return blocks
    return [*blocks[: limit - 1], _context([note])]


def _metadata(data: Mapping[str, Any]) -> str:
    text = json.dumps(dict(data), separators=(",", ":"))
    if len(text) > PRIVATE_METADATA_MAX:
        raise ValueError("private_metadata too long")
    return text


# -- the approval card (leads channel) ------------------------------------------------------------------


def approval_card(request: AccessRequest, item: Item, tz: tzinfo) -> Message:
    """The card in the leads channel: who, what, why, when; buttons while pending. Never a secret."""
    title = wording.request_title(request, tz)
    blocks: list[dict[str, Any]] = [
        # A header is plain text: the shared title with display names, not mentions, and nothing escaped.
        _header(title),
        _fields([
            f"*Requester*\n{mention(request.requester)}",
            f"*Item*\n`{fit(item.name, 200)}` (vault {fit(item.vault, 200)})",
            f"*Window*\n{wording.window_line(request, tz)}",
            f"*Requested*\n{wording.moment(request.created_at, tz)}",
        ]),
        _section(f"*Reason*\n{fit(request.reason, SECTION_TEXT_MAX - 20)}"),
    ]
    about = [fit(item.url, 300), f"user {fit(item.username, 200)}" if item.username else "",
             fit(item.notes, 500) if item.notes else ""]
    if any(about):
        blocks.append(_context(about))
    if request.notes:
        blocks.append(_context(f"⚠️ {fit(note, 300)}" for note in request.notes))
    blocks.append(_section(_status(request, tz)))
    if request.status is Status.PENDING:
        blocks.append(_actions(
            f"decide:{request.id}",
            _button("Approve", Actions.APPROVE, request.id, "primary"),
            _button("Decline", Actions.DECLINE, request.id, "danger"),
        ))
    text = truncate(f"{title} ({request.status.value.replace('_', ' ')})", MESSAGE_TEXT_MAX)
    return Message(text=escape(text), blocks=_cap(blocks, MESSAGE_BLOCKS_MAX, "(more details left out)"))


# -- the delivered secret (requester only) ---------------------------------------------------------------


def _copyable(label: str, value: str, limit: int) -> str | dict[str, Any]:
    """A field to copy from: code-formatted, or plain text when the value itself holds a backtick."""
    if "`" in value:
        return _plain(f"{label}:\n{value}", limit)
    return f"*{label}*\n`{fit(value, limit - len(label) - 6)}`"


def _secret_fields(reveal: Reveal) -> list[str | dict[str, Any]]:
    item = reveal.item
    fields: list[str | dict[str, Any]] = []
    if item.username:
        fields.append(_copyable("Username", item.username, 300))
    if item.url:
        fields.append(f"*URL*\n{fit(item.url, 500)}")
    if reveal.password is not None:
        fields.append(_copyable("Password", reveal.password.reveal(), FIELD_TEXT_MAX))
    if reveal.code is not None:
        fields.append(_live_code_words(reveal.code))
    return fields


def secret_message(request: AccessRequest, reveal: Reveal, tz: tzinfo) -> Message:
    """What only the requester sees: username, URL, password, current code; New code and Done."""
    blocks: list[dict[str, Any]] = [
        _section(wording.access_ready(request, reveal.item.name, reveal.ends_at, tz, MARKUP)),
    ]
    fields = _secret_fields(reveal)
    if fields:
        blocks.append(_fields(fields))
    buttons = [_button("Done", Actions.DONE, request.id, "danger", confirm={
        "title": _plain("End access now?", VIEW_TITLE_MAX),
        "text": _plain("The password and code disappear and the grant ends.", 300),
        "confirm": _plain("End access", VIEW_TITLE_MAX), "deny": _plain("Keep it", VIEW_TITLE_MAX),
    })]
    if reveal.code is not None:
        buttons.insert(0, _button("New code", Actions.NEW_CODE, request.id, "primary"))
    blocks.append(_actions(f"grant:{request.id}", *buttons))
    blocks.append(_context([wording.DELIVERY_NOTE]))
    # Notification text must not carry the secret: it shows on lock screens and in previews.
    return Message(text=wording.access_ready(request, reveal.item.name, reveal.ends_at, tz, MARKUP), blocks=blocks)


def ended_message(request: AccessRequest, item: Item, tz: tzinfo) -> Message:
    """What replaces the delivered secret once the grant is over."""
    text = wording.access_closed(request, item.name, tz, MARKUP)
    return Message(text=text, blocks=[_section(cut_mrkdwn(text, SECTION_TEXT_MAX)),
                                      _context([wording.ask_again(item.name, SLACK, MARKUP)])])


# -- modals ----------------------------------------------------------------------------------------------


def _modal(title: str, blocks: list[dict[str, Any]], *, callback_id: str = "", submit: str | None = None,
           close: str = "Close", metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": "modal", "title": _plain(title, VIEW_TITLE_MAX), "close": _plain(close, VIEW_TITLE_MAX),
        "blocks": _cap(blocks, VIEW_BLOCKS_MAX, "(more left out)"),
    }
    if callback_id:
        view["callback_id"] = callback_id
    if submit:
        view["submit"] = _plain(submit, VIEW_TITLE_MAX)
    if metadata:
        view["private_metadata"] = _metadata(metadata)
    return view


def _option(item: Item) -> dict[str, Any]:
    return {"text": _plain(f"{item.name} ({item.vault})", OPTION_TEXT_MAX), "value": item.name[:OPTION_VALUE_MAX]}


def request_modal(items: Sequence[Item], *, item: str = "", reason: str = "", duration: timedelta,
                  metadata: Mapping[str, Any], problem: str = "") -> dict[str, Any]:
    """The request form: item picker, reason, optional start, duration."""
    blocks: list[dict[str, Any]] = []
    if problem:
        blocks.append(_section(f"⚠️ {fit(problem, 1000)}"))
    if len(items) <= OPTIONS_MAX and items:
        picker: dict[str, Any] = {"type": "static_select", "action_id": ITEM_BLOCK,
                                  "placeholder": _plain("Choose an item"), "options": [_option(i) for i in items]}
        chosen = next((i for i in items if i.name == item), None)
        if chosen is not None:
            picker["initial_option"] = _option(chosen)
    else:
        # Beyond 100 options a static select cannot list them all: type the name instead.
        picker = {"type": "plain_text_input", "action_id": ITEM_BLOCK, "placeholder": _plain("e.g. acme-zendesk")}
        if item:
            picker["initial_value"] = item[:OPTION_VALUE_MAX]
    blocks.append({"type": "input", "block_id": ITEM_BLOCK, "label": _plain("Item"), "element": picker})
    reason_input: dict[str, Any] = {"type": "plain_text_input", "action_id": REASON_BLOCK, "multiline": True,
                                    "max_length": REASON_INPUT_MAX,
                                    "placeholder": _plain("Why do you need it? e.g. fix broken trigger")}
    if reason:
        reason_input["initial_value"] = reason[:REASON_INPUT_MAX]
    blocks.append({"type": "input", "block_id": REASON_BLOCK, "label": _plain("Reason"), "element": reason_input})
    blocks.append({"type": "input", "block_id": START_BLOCK, "optional": True,
                   "label": _plain("Start (leave empty for: as soon as approved)"),
                   "element": {"type": "datetimepicker", "action_id": START_BLOCK}})
    blocks.append({"type": "input", "block_id": DURATION_BLOCK, "label": _plain("For how long"),
                   "hint": _plain("e.g. 30m, 1h, 1h30m"),
                   "element": {"type": "plain_text_input", "action_id": DURATION_BLOCK, "max_length": 40,
                               "initial_value": format_duration(duration)}})
    return _modal("Request access", blocks, callback_id=Actions.REQUEST_VIEW, submit="Send request",
                  close="Cancel", metadata=metadata)


def decline_modal(request: AccessRequest, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Ask the lead for an optional reason before declining."""
    blocks = [
        _section(f"Decline *{request.id}*: {mention(request.requester)} asks for `{fit(request.item, 200)}`."),
        {"type": "input", "block_id": REASON_BLOCK, "optional": True, "label": _plain("Reason (told to the requester)"),
         "element": {"type": "plain_text_input", "action_id": REASON_BLOCK, "multiline": True,
                     "max_length": REASON_INPUT_MAX}},
    ]
    return _modal(f"Decline {request.id}", blocks, callback_id=Actions.DECLINE_VIEW, submit="Decline",
                  close="Cancel", metadata=metadata)


def code_modal(request: AccessRequest, reveal: Reveal, tz: tzinfo) -> dict[str, Any]:
    """The App Home's "Show password" modal: the secret fields and a New code button."""
    until = wording.moment(reveal.ends_at, tz)
    blocks: list[dict[str, Any]] = [_section(f"🔓 *{fit(reveal.item.name, 200)}* until {until}")]
    fields = _secret_fields(reveal)
    if fields:
        blocks.append(_fields(fields))
    if reveal.code is not None:
        blocks.append(_actions(f"modal:{request.id}", _button("New code", Actions.MODAL_NEW_CODE, request.id)))
    blocks.append(_context(["Close this window when you are done; every code shown is audited."]))
    return _modal(truncate(reveal.item.name, VIEW_TITLE_MAX), blocks,
                  metadata={"request_id": request.id})


def ended_modal(request: AccessRequest, item: Item, tz: tzinfo) -> dict[str, Any]:
    """Replaces an open code modal when the grant ends."""
    return _modal("Access ended", ended_message(request, item, tz).blocks)


def notice_modal(title: str, text: str) -> dict[str, Any]:
    """A modal that only says something (confirmation, "working on it", an error)."""
    return _modal(title, [_section(fit(text, SECTION_TEXT_MAX))])


# -- App Home -------------------------------------------------------------------------------------------


def _live_code_words(code: CodeView) -> str:
    """A code field (delivered message, code modal, Home tab): the shared wording."""
    return f"*Code*\n`{escape(code.code)}` ({wording.code_valid(code.seconds_left)})"


def _active_grant(request: AccessRequest, code: CodeView | None, tz: tzinfo) -> list[dict[str, Any]]:
    """One active grant on the Home tab: what and until when, its live code, its buttons."""
    about = f"*{fit(request.item, 200)}* ({request.id})\nuntil {wording.moment(request.ends_at, tz)}"
    buttons = [_button("Show password", Actions.SHOW_PASSWORD, request.id),
               _button("Done", Actions.DONE, request.id, "danger")]
    if code is None:
        return [_section(about), _actions(f"home:{request.id}", *buttons)]
    buttons.insert(0, _button("New code", Actions.NEW_CODE, request.id, "primary"))
    return [_fields([about, _live_code_words(code)]), _actions(f"home:{request.id}", *buttons)]


def home_view(requests: Sequence[AccessRequest], tz: tzinfo, *, codes: Mapping[str, CodeView] | None = None,
              history: int = 10) -> dict[str, Any]:
    """The Home tab: active grants with their live code (`codes` by request id; never a password), waiting
    requests (Cancel), recent history."""
    codes = codes or {}
    active = [r for r in requests if r.status is Status.ACTIVE]
    waiting = [r for r in requests if r.status in {Status.PENDING, Status.APPROVED}]
    done = [r for r in requests if not r.is_open][:history]
    blocks: list[dict[str, Any]] = [
        _header(wording.HELP_TITLE),
        _section("Ask for a shared credential with `/access <item> <why> for <how long>`, or:"),
        _actions("home:request", _button("Request access", Actions.OPEN_REQUEST, "open", "primary")),
        {"type": "divider"},
        _header("Active access"),
    ]
    if not active:
        blocks.append(_context(["Nothing active."]))
    for request in active:
        blocks.extend(_active_grant(request, codes.get(request.id), tz))
    if codes:
        blocks.append(_context(["Codes here follow the clock while your access lasts and disappear when it ends. "
                                "Opening this tab, New code and Show password are recorded in the audit trail."]))
    blocks.append(_header("Waiting"))
    if not waiting:
        blocks.append(_context(["Nothing waiting."]))
    for request in waiting:
        blocks.append({**_section(f"*{fit(request.item, 200)}* ({request.id}): {_status(request, tz)}"),
                       "accessory": _button("Cancel", Actions.CANCEL, request.id)})
    blocks.append(_header("History"))
    if not done:
        blocks.append(_context(["No past requests."]))
    for request in done:
        blocks.append(_context([f"*{fit(request.item, 200)}* ({request.id}): {_status(request, tz)}"]))
    return {"type": "home", "blocks": _cap(blocks, VIEW_BLOCKS_MAX, "(older entries left out)")}


# -- plain replies to /access ------------------------------------------------------------------------------


def help_text(command: str = "/access") -> str:
    """What `/access help` answers (the shared help list; Slack shows channel ids itself, so no whereami)."""
    entries = wording.help_entries(replace(SLACK, prefix=command), whereami=False)
    return "\n".join([f"*{wording.HELP_TITLE}*: ask for one for a while; a lead approves it here in Slack.",
                      *(f"• `{typed}`: {meaning}" for typed, meaning in entries)])


def items_text(items: Sequence[Item], query: str, command: str = "/access",
               limit: int = wording.CATALOGUE_LIMIT) -> str:
    """Catalogue metadata for `/access list` (the shared wording, as a bulleted list)."""
    found = wording.catalogue(items, query, replace(SLACK, prefix=command), MARKUP, limit=limit)
    if found.empty:
        return cut_mrkdwn(found.empty, MESSAGE_TEXT_MAX)
    tail = "\n".join(line for line in (found.more, found.ask) if line)
    # The entries give way to the closing lines: how many more there are and how to ask stay readable.
    entries = [f"*{found.heading}*", *(f"• `{name}`: {details}" for name, details in found.entries)]
    lines = cut_mrkdwn("\n".join(entries), MESSAGE_TEXT_MAX - len(tail) - 1)
    return f"{lines}\n{tail}"


def status_text(requests: Sequence[AccessRequest], tz: tzinfo) -> str:
    """The requester's open requests for `/access status` (the shared wording, as a bulleted list)."""
    reply = wording.status_reply(requests, tz, MARKUP)
    if reply.empty:
        return reply.empty
    lines = [f"*{reply.heading}*", *(f"• *{row.request_id}* `{row.item}` ({row.window}): {row.state}"
                                     for row in reply.rows)]
    # The rows give way to the closing line: how many more there are stays readable.
    body = cut_mrkdwn("\n".join(lines), MESSAGE_TEXT_MAX - len(reply.more) - 1)
    return f"{body}\n{reply.more}" if reply.more else body


def report_text(summary: str, *, shared: bool, problem: str = "") -> str:
    """The ephemeral answer to `/access report`: the summary, and where the CSV and HTML files went."""
    reply = wording.report_reply(summary)
    files = wording.report_files_sent() if shared else wording.report_files_not_sent(problem, MARKUP)
    lines = [f"{wording.REPORT_EMOJI} *{escape(reply.title)}*", *(escape(line) for line in reply.bullets), files]
    return cut_mrkdwn("\n".join(lines), MESSAGE_TEXT_MAX)
