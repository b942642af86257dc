"""Every sentence a user reads about a request, written once, from data.

Slack and Teams only assemble these lines into Block Kit / Adaptive Cards. What differs between
them is passed in as a `Markup`: how a person is named (a Slack mention, a Teams display name) and
how text people typed is made safe (mrkdwn escaping, broken link syntax). One emoji per status, one
time format per context: `moment` for an instant on a card or in a message, `clock` for the end of a
span on the same day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Protocol

from bot.domain.model import AccessRequest, Identity, Item, Status
from bot.domain.request_text import format_duration
from bot.domain.syntax import Hint, Syntax, Typed

__all__ = [
    "BUSY",
    "CATALOGUE_EMPTY",
    "CATALOGUE_LIMIT",
    "DELIVERY_NOTE",
    "EMOJI",
    "FORM_NO_ITEM",
    "FORM_NO_REASON",
    "HELP_TITLE",
    "NOT_STARTED",
    "NO_OPEN_REQUESTS",
    "PLAIN",
    "QUEUED",
    "REPORT_EMOJI",
    "REPORT_ONLY_IN_PRIVATE",
    "STATUS_LIMIT",
    "WORKING",
    "Catalogue",
    "Markup",
    "ReportReply",
    "StatusReply",
    "StatusRow",
    "access_closed",
    "access_ready",
    "already_decided",
    "apology",
    "ask_again",
    "cancelled",
    "catalogue",
    "clock",
    "code_valid",
    "ended",
    "form_no_reason",
    "help_entries",
    "moment",
    "report_files_not_sent",
    "report_files_sent",
    "report_links",
    "report_reply",
    "request_sent",
    "request_title",
    "sent_next",
    "status_line",
    "status_reply",
    "told_approved",
    "told_declined",
    "told_ended",
    "told_extended",
    "told_queued",
    "told_timed_out",
    "window_line",
]

EMOJI: dict[Status, str] = {
    Status.PENDING: "⏳",
    Status.APPROVED: "✅",
    Status.ACTIVE: "🟢",
    Status.EXPIRED: "🔒",  # access is closed: expired or ended early
    Status.REVOKED: "🔒",
    Status.DECLINED: "❌",
    Status.CANCELLED: "🚫",
    Status.TIMED_OUT: "⌛",  # time ran out before a lead decided
}

# Admission control (bot/domain/admission.py): what the acknowledgement says when the outcome is not ready.
WORKING = "⏳ Working on it… I'll follow up here."
QUEUED = "⏳ Queued: jitpass is busy right now. Your request will be handled shortly and I'll follow up here."
BUSY = "⚠️ jitpass is busy, nothing was recorded, try again in a minute."
# An acknowledged request its process never created (killed, or restarted): recorded as refused at the next start.
NOT_STARTED = "⚠️ jitpass restarted before it could record your request: nothing was recorded. Please send it again."

REASON_LIMIT = 500  # a decline reason quoted on a card
NO_OPEN_REQUESTS = "You have no waiting or active requests."

# What `help` lists, in the platform's own spelling (`help_entries`).
_HELP: tuple[tuple[Typed, Hint], ...] = (
    (Typed("", "<item> <why> <when>"),
     Hint("ask for a credential, e.g. {}", (Typed("", "acme-zendesk fix broken trigger for 1h"),))),
    (Typed(""), Hint("open a form to pick an item")),
    (Typed("list", "[words]"), Hint("search the catalogue (names, vaults, URLs; never secrets)")),
    (Typed("status"), Hint("your waiting and active requests")),
    (Typed("cancel", "<id>"), Hint("withdraw a request that has not started")),
    (Typed("done", "<id>"), Hint("end your access now")),
    (Typed("extend", "<id> <how long>"),
     Hint("ask the leads for more time, e.g. {}", (Typed("extend", "R-ABCD2345 30m"),))),
    (Typed("whereami"), Hint("this conversation's id (to set it as a leads channel)")),
    (Typed("report", "[30d] [vault:…] [item:…] [user:…]"),
     Hint("admins: the access report; its CSV and HTML files come to you privately")),
    (Typed("help"), Hint("this list")),
)


def help_entries(syntax: Syntax, *, whereami: bool = True) -> list[tuple[str, str]]:
    """(command as typed on this platform, what it does) for `help`; `whereami` where the platform has it."""
    return [(syntax.spell(typed), hint.render(syntax)) for typed, hint in _HELP
            if whereami or typed.verb != "whereami"]


class Markup(Protocol):
    """How a platform names people, its channels and shows what they typed."""

    platform: str  # the platform's name as users know it: "Slack", "Teams"

    def person(self, who: Identity | None) -> str:
        """A person (None: jitpass itself)."""
        ...

    def text(self, value: str, limit: int) -> str:
        """Text a person typed, safe for the platform and at most `limit` characters."""
        ...

    def channel(self, channel_id: str) -> str:
        """A channel the reader can find (a Slack link; Teams ids mean nothing to people)."""
        ...


class _Plain:
    """Display names and text as they are (CLI, logs, tests)."""

    platform = "chat"

    def person(self, who: Identity | None) -> str:
        return who.label if who is not None else "jitpass"

    def text(self, value: str, limit: int) -> str:
        flat = " ".join(value.split())
        return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"

    def channel(self, channel_id: str) -> str:
        return "the leads' channel"


PLAIN: Markup = _Plain()


def moment(at: datetime | None, tz: tzinfo, *, zone: bool = True) -> str:
    """An instant, in the policy's time zone: `2026-03-10 09:30 CET` (or `-`).

    `zone=False` leaves the zone out (`2026-03-10 09:30`), for a report whose heading names it once.
    """
    if at is None:
        return "-"
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z" if zone else "%Y-%m-%d %H:%M")


def clock(at: datetime, tz: tzinfo) -> str:
    """The time of day only, for the end of a span that `moment` started: `11:00`."""
    return at.astimezone(tz).strftime("%H:%M")


def window_line(request: AccessRequest, tz: tzinfo) -> str:
    """How long and when: `2026-03-11 09:00 CET – 11:00 (2h)`, `1h from …`, `1h, starting when approved`."""
    if request.starts_at and request.ends_at:
        start, end = request.starts_at, request.ends_at
        same_day = start.astimezone(tz).date() == end.astimezone(tz).date()
        return f"{moment(start, tz)} – {clock(end, tz) if same_day else moment(end, tz)} " \
               f"({format_duration(end - start)})"
    length = format_duration(request.window.duration)
    begins = request.starts_at or request.window.start
    if begins is not None:
        return f"{length} from {moment(begins, tz)}"
    return f"{length}, starting when approved"


def request_title(request: AccessRequest, tz: tzinfo, markup: Markup = PLAIN) -> str:
    """A card's title: what kind of request, its id, who asks for what and for how long.

    People are named by display name (through `markup.text`), never by mention: Slack headers are plain text.
    """
    who = markup.text(request.requester.label, 80)
    length = format_duration(request.window.duration)
    if request.is_extension:
        return f"⏩ Extension request {request.id}: {who} asks for {length} more on {request.parent_id}"
    begins = f" from {moment(request.window.start, tz)}" if request.window.start is not None else ""
    return f"🔑 Access request {request.id}: {who} asks for {markup.text(request.item, 200)} for {length}{begins}"


def status_line(request: AccessRequest, tz: tzinfo, markup: Markup = PLAIN) -> str:
    """Where the request stands in one line: who decided what, and when."""
    emoji = EMOJI.get(request.status, "")
    by = f" by {markup.person(request.decided_by)}" if request.decided_by else ""
    at = f" at {moment(request.decided_at, tz)}" if request.decided_at else ""
    match request.status:
        case Status.PENDING:
            count = f" ({len(request.approvals)} of {request.required_approvals} approvals)" \
                if request.required_approvals > 1 else ""
            voters = ", ".join(markup.person(a.approver) for a in request.approvals)
            so_far = f"; approved so far by {voters}" if voters else ""
            return f"{emoji} Waiting for a lead{count}{so_far}. Times out {moment(request.timeout_at, tz)}."
        case Status.APPROVED:
            return f"{emoji} Approved{by}{at}; starts {moment(request.starts_at, tz)}."
        case Status.ACTIVE:
            return f"{emoji} Active until {moment(request.ends_at, tz)} (approved{by}{at})."
        case Status.EXPIRED:
            return f"{emoji} Expired at {moment(request.ended_at or request.ends_at, tz)} (approved{by})."
        case Status.REVOKED:
            ender = f" by {markup.person(request.ended_by)}" if request.ended_by else ""
            return f"{emoji} Ended early{ender} at {moment(request.ended_at, tz)} (approved{by})."
        case Status.DECLINED:
            why = f": {markup.text(request.decline_reason, REASON_LIMIT)}" if request.decline_reason else "."
            return f"{emoji} Declined{by}{at}{why}"
        case Status.CANCELLED:
            return f"{emoji} Cancelled at {moment(request.ended_at or request.updated_at, tz)}."
        case Status.TIMED_OUT:
            return f"{emoji} Timed out at {moment(request.ended_at, tz)}: no lead decided in time."
    return markup.text(request.status.value, 40)


def already_decided(request: AccessRequest, markup: Markup = PLAIN) -> str:
    """Why a decision came too late, in the words of the decision that won: `R-… was already approved by …`."""
    who = f" by {markup.person(request.decided_by)}" if request.decided_by else ""
    if request.decided_by is not None and request.status in {Status.APPROVED, Status.ACTIVE, Status.EXPIRED,
                                                              Status.REVOKED}:
        return f"{request.id} was already approved{who}."
    return f"{request.id} was already {request.status.value.replace('_', ' ')}{who}."


def cancelled(request: AccessRequest, markup: Markup = PLAIN) -> str:
    """The answer to `cancel` (and to `done` before a grant started)."""
    return f"{EMOJI[Status.CANCELLED]} Cancelled {request.id} for {markup.text(request.item, 200)}."


def ended(request: AccessRequest, markup: Markup = PLAIN) -> str:
    """The answer to `done`: the requester's access ended (or was withdrawn before it started)."""
    if request.status is Status.CANCELLED:
        return cancelled(request, markup)
    return f"{EMOJI[Status.REVOKED]} Your access to {markup.text(request.item, 200)} through {request.id} has ended."


def sent_next(request: AccessRequest, markup: Markup = PLAIN, *, leads_channel: str | None) -> str:
    """What happens after a request or extension is recorded (a card's note; the end of `request_sent`)."""
    if not leads_channel:
        # The card cannot be posted on this platform: say so now rather than let it time out unseen.
        return (f"⚠️ No {markup.platform} leads channel is set for vault '{markup.text(request.vault, 100)}', so no "
                "lead sees it here: ask an admin to set [leads_channel], and tell a lead.")
    return "I'll message you privately when a lead decides."


def request_sent(request: AccessRequest, tz: tzinfo, markup: Markup = PLAIN, *, leads_channel: str | None) -> str:
    """The answer to a request or an extension once it is recorded: what was asked, where it went, what next."""
    after = sent_next(request, markup, leads_channel=leads_channel)
    where = f" in {markup.channel(leads_channel)}" if leads_channel else ""
    if request.is_extension:
        return (f"⏩ Extension {request.id} asks the leads{where} for {format_duration(request.window.duration)} "
                f"more on {request.parent_id}. {after}")
    return (f"📨 Request {request.id} for {markup.text(request.item, 200)} ({window_line(request, tz)}) is waiting "
            f"for a lead{where}. {after}")


def access_ready(request: AccessRequest, item_name: str, ends_at: datetime, tz: tzinfo, markup: Markup = PLAIN) -> str:
    """The first line of a private delivery (and its notification text): never the secret itself."""
    return f"🔓 Your access to {markup.text(item_name, 200)} through {request.id} is ready until {moment(ends_at, tz)}."


DELIVERY_NOTE = ("Only you can see this. It is wiped when your access ends; each new code is recorded in the "
                 "audit trail.")


def code_valid(seconds: int) -> str:
    """How long a one-time code shown with a delivery still works: `valid for 17 more seconds`."""
    return f"valid for {seconds} more second{'' if seconds == 1 else 's'}"


def ask_again(item_name: str, syntax: Syntax, markup: Markup = PLAIN) -> str:
    """Under a wiped delivery: the command that asks for the same item again, in the platform's syntax."""
    return Hint("Need it again? Send `{}`.", (Typed("", f"{markup.text(item_name, 100)} <why> <when>"),)).render(syntax)


def access_closed(request: AccessRequest, item_name: str, tz: tzinfo, markup: Markup = PLAIN) -> str:
    """What replaces a delivered secret once the grant is over."""
    verb = "expired" if request.status is Status.EXPIRED else "ended"
    return (f"{EMOJI[Status.REVOKED]} Access to {markup.text(item_name, 200)} through {request.id} has {verb} "
            f"({moment(request.ended_at or request.ends_at, tz)}). The password and code were removed from this chat.")


# -- help and the request form ------------------------------------------------------------------------

HELP_TITLE = "jitpass: just-in-time access to shared credentials"
FORM_NO_ITEM = "Choose an item."
FORM_NO_REASON = "Say why you need it."


def form_no_reason(item: str, markup: Markup = PLAIN) -> str:
    """A request that names its item but not why: `Say why you need acme-zendesk.`"""
    return f"Say why you need {markup.text(item, 100)}."


# -- the catalogue (`list [words]`) ------------------------------------------------------------------

CATALOGUE_LIMIT = 40  # entries in one `list` reply, on every platform; more are counted, not shown
CATALOGUE_EMPTY = "The catalogue is empty: ask an admin to add items."
_REQUEST = Typed("", "<item> <why> <when>")
_SEARCH = Typed("list", "<words>")


@dataclass(frozen=True)
class Catalogue:
    """The answer to `list [words]`, line by line; the platform lays it out (a list, a fact set)."""

    heading: str  # "Catalogue matching “acme”: 2 items"
    entries: tuple[tuple[str, str], ...]  # (item name, "vault acme · https://… · TOTP"), at most the limit
    empty: str  # instead of entries: nothing matched, or nothing is there ("" when there are entries)
    more: str  # "…and 12 more; narrow with `list <words>`." ("" when all are shown)
    ask: str  # how to ask for one of them, in the platform's syntax ("" when there are none)


def catalogue(items: Sequence[Item], query: str, syntax: Syntax, markup: Markup = PLAIN, *,
              limit: int = CATALOGUE_LIMIT) -> Catalogue:
    """Catalogue metadata (never a secret) for `list`: names, vaults, URLs, which have a TOTP code."""
    words = markup.text(query, 60) if query.strip() else ""
    count = f"{len(items)} item{'' if len(items) == 1 else 's'}"
    heading = f"Catalogue matching “{words}”: {count}" if words else f"Catalogue: {count}"
    if not items:
        # What was typed stays out of the template: a `{` in it must not be read as a slot.
        empty = (f"No items match “{words}”: "
                 + Hint("try other words, or `{}` for the whole catalogue.", (Typed("list"),)).render(syntax)
                 if words else CATALOGUE_EMPTY)
        return Catalogue(heading, (), empty, "", "")
    entries = tuple((markup.text(i.name, 100), " · ".join(part for part in (
        f"vault {markup.text(i.vault, 100)}", markup.text(i.url, 120) if i.url else "",
        "TOTP" if i.has_totp else "") if part)) for i in items[:limit])
    hidden = len(items) - len(entries)
    more = Hint(f"…and {hidden} more; narrow with `{{}}`.", (_SEARCH,)).render(syntax) if hidden else ""
    return Catalogue(heading, entries, "", more, Hint("Ask with `{}`.", (_REQUEST,)).render(syntax))


# -- the requester's open requests (`status`) ----------------------------------------------------------

STATUS_LIMIT = 20  # requests in one `status` reply, on every platform; more are counted, not shown


@dataclass(frozen=True)
class StatusRow:
    """One open request in `status`: which, for what, where it stands, when."""

    request_id: str
    item: str  # made safe by the platform's markup
    state: str  # `status_line`
    window: str  # `window_line`


@dataclass(frozen=True)
class StatusReply:
    """The answer to `status`; the platform lays it out (a list, containers)."""

    heading: str  # "Your open requests: 2"
    rows: tuple[StatusRow, ...]  # at most the limit
    empty: str  # instead of rows: NO_OPEN_REQUESTS ("" when there are rows)
    more: str  # "…and 3 more." ("" when all are shown)


def status_reply(requests: Sequence[AccessRequest], tz: tzinfo, markup: Markup = PLAIN, *,
                 limit: int = STATUS_LIMIT) -> StatusReply:
    """The requester's waiting and active requests, each with its status line and window."""
    heading = f"Your open requests: {len(requests)}"
    if not requests:
        return StatusReply(heading, (), NO_OPEN_REQUESTS, "")
    rows = tuple(StatusRow(r.id, markup.text(r.item, 100), status_line(r, tz, markup), window_line(r, tz))
                 for r in requests[:limit])
    hidden = len(requests) - len(rows)
    return StatusReply(heading, rows, "", f"…and {hidden} more." if hidden else "")


# -- the access report in chat (`report …`) -----------------------------------------------------------

REPORT_EMOJI = "📊"
REPORT_ONLY_IN_PRIVATE = "Ask for reports in a 1:1 chat with me: they name people and credentials."


@dataclass(frozen=True)
class ReportReply:
    """The chat summary of an access report: its title line and the lines under it."""

    title: str  # "Access report 2026-02-08 09:00 → 2026-03-10 09:00 (UTC)"
    details: tuple[str, ...]  # "Requests 3: …", "Approval latency: …", …

    @property
    def heading(self) -> str:
        """The title as a chat line: `📊 Access report …`."""
        return f"{REPORT_EMOJI} {self.title}"

    @property
    def bullets(self) -> tuple[str, ...]:
        """The details as list lines: `• Requests 3: …`."""
        return tuple(f"• {line}" for line in self.details)


def report_reply(summary: str) -> ReportReply:
    """The summary the report renderer wrote, split into a title and its details (blank lines dropped)."""
    lines = [line.strip() for line in summary.splitlines() if line.strip()]
    return ReportReply(lines[0] if lines else "Access report", tuple(lines[1:]))


def report_files_sent() -> str:
    """Where the report's files went, when they could be sent as files (Slack)."""
    return "📎 The CSV and HTML files are in your direct messages with jitpass (only you can see them)."


def report_files_not_sent(problem: str, markup: Markup = PLAIN) -> str:
    """The files could not be sent: the summary still stands, and the CLI makes them too."""
    why = markup.text(problem, 100) if problem.strip() else f"{markup.platform} refused"
    return f"⚠️ I could not send you the CSV and HTML files ({why}); `jitpass report` on the server produces them too."


def report_links(expires_at: datetime, tz: tzinfo) -> str:
    """Under one-time download links (Teams): how long they work and why they are private."""
    return (f"📎 Each link works once, until {moment(expires_at, tz)}. The files name people and credentials: "
            "keep them private.")


# -- what the requester is told when their request moves on ------------------------------------------


def told_approved(request: AccessRequest, approver: Identity, markup: Markup = PLAIN) -> str:
    return f"{EMOJI[Status.APPROVED]} {request.id} for {request.item} was approved by {markup.person(approver)}."


def told_declined(request: AccessRequest, approver: Identity, reason: str, markup: Markup = PLAIN) -> str:
    why = f": {markup.text(reason, REASON_LIMIT)}" if reason else "."
    return f"{EMOJI[Status.DECLINED]} {request.id} for {request.item} was declined by {markup.person(approver)}{why}"


def told_queued(request: AccessRequest, holder: AccessRequest, tz: tzinfo, markup: Markup = PLAIN) -> str:
    return (f"{EMOJI[Status.PENDING]} {request.item} is in use by {markup.person(holder.requester)} until "
            f"{moment(holder.ends_at, tz)}; your access starts then.")


def told_timed_out(request: AccessRequest) -> str:
    return f"{EMOJI[Status.TIMED_OUT]} {request.id} for {request.item} timed out: no lead decided in time."


def told_ended(request: AccessRequest, to: Status) -> str:
    verb = "expired" if to is Status.EXPIRED else "ended"
    return f"{EMOJI[Status.REVOKED]} Access to {request.item} through {request.id} has {verb}."


def told_extended(grant: AccessRequest, new_end: datetime, tz: tzinfo) -> str:
    return f"⏩ {grant.id} for {grant.item} now ends {moment(new_end, tz)}."


# -- when it is not the user's fault ----------------------------------------------------------------


def apology(error_id: str, *, infrastructure: bool) -> str:
    """What a chat user sees for an infrastructure or unexpected error: never its detail, always its id."""
    if infrastructure:
        return f"jitpass is temporarily unavailable; nothing was changed (error {error_id})."
    return (f"Sorry, something went wrong on jitpass's side (error {error_id}). Try again; if it keeps "
            "happening, give the error id to an admin.")
