"""Golden tests of the shared wording: every status line, window and reply, once for both platforms."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from adapters.slack import blocks
from adapters.teams import cards
from bot.domain import wording
from bot.domain.model import (
    AccessRequest,
    Approval,
    CodeView,
    Identity,
    Item,
    RequestKind,
    Reveal,
    Secret,
    Status,
    Window,
)
from bot.domain.syntax import SLACK, TEAMS
from bot.reports.text import _local

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
TZ = ZoneInfo("Europe/Amsterdam")
REQ = Identity("slack", "UREQ", "Req One")
LEAD = Identity("slack", "ULEAD", "Lead One")
PENDING = AccessRequest(
    id="R-ABCDEFGH", item="acme-zendesk", vault="acme", requester=REQ, reason="fix broken trigger",
    window=Window(timedelta(hours=1)), status=Status.PENDING, created_at=NOW, updated_at=NOW,
    timeout_at=NOW + timedelta(minutes=30), platform="slack",
)
DECIDED = {"decided_by": LEAD, "decided_at": NOW + timedelta(minutes=5)}
SPAN = {"starts_at": NOW + timedelta(minutes=5), "ends_at": NOW + timedelta(hours=1, minutes=5)}


@pytest.mark.parametrize(("status", "changes", "line"), [
    (Status.PENDING, {}, "⏳ Waiting for a lead. Times out 2026-03-10 10:30 CET."),
    (Status.APPROVED, {**DECIDED, "starts_at": NOW + timedelta(days=1)},
     "✅ Approved by Lead One at 2026-03-10 10:05 CET; starts 2026-03-11 10:00 CET."),
    (Status.ACTIVE, {**DECIDED, **SPAN},
     "🟢 Active until 2026-03-10 11:05 CET (approved by Lead One at 2026-03-10 10:05 CET)."),
    (Status.EXPIRED, {**DECIDED, **SPAN}, "🔒 Expired at 2026-03-10 11:05 CET (approved by Lead One)."),
    (Status.REVOKED, {**DECIDED, **SPAN, "ended_by": REQ, "ended_at": NOW + timedelta(minutes=25)},
     "🔒 Ended early by Req One at 2026-03-10 10:25 CET (approved by Lead One)."),
    (Status.DECLINED, {**DECIDED, "decline_reason": "use the  read-only login"},
     "❌ Declined by Lead One at 2026-03-10 10:05 CET: use the read-only login"),
    (Status.CANCELLED, {"ended_at": NOW + timedelta(minutes=5)}, "🚫 Cancelled at 2026-03-10 10:05 CET."),
    (Status.TIMED_OUT, {"ended_at": NOW + timedelta(minutes=30)},
     "⌛ Timed out at 2026-03-10 10:30 CET: no lead decided in time."),
])
def test_every_status_has_one_line_and_one_emoji(status: Status, changes: dict[str, object], line: str) -> None:
    request = replace(PENDING, status=status, **changes)  # type: ignore[arg-type]
    assert wording.status_line(request, TZ) == line
    assert line.startswith(wording.EMOJI[status])


def test_slack_and_teams_show_the_same_line_with_their_own_markup() -> None:
    request = replace(PENDING, required_approvals=2, approvals=(Approval(LEAD, NOW),))
    assert wording.status_line(request, TZ, blocks.MARKUP) == (
        "⏳ Waiting for a lead (1 of 2 approvals); approved so far by <@ULEAD>. Times out 2026-03-10 10:30 CET.")
    assert cards.state_line(request, TZ)[0] == (
        "⏳ Waiting for a lead (1 of 2 approvals); approved so far by Lead One. Times out 2026-03-10 10:30 CET.")


def test_what_people_typed_is_made_safe_by_each_platform() -> None:
    request = replace(PENDING, status=Status.DECLINED, decline_reason="[click](https://evil.example) <!channel>",
                      **DECIDED)
    assert wording.status_line(request, TZ, blocks.MARKUP).endswith(
        ": [click](https://evil.example) &lt;!channel&gt;")
    assert cards.state_line(request, TZ)[0].endswith(": [click] (https://evil.example) ‹!channel›")


@pytest.mark.parametrize(("changes", "window"), [
    ({}, "1h, starting when approved"),
    ({"window": Window(timedelta(hours=2), start=NOW + timedelta(days=1))}, "2h from 2026-03-11 10:00 CET"),
    (SPAN, "2026-03-10 10:05 CET – 11:05 (1h)"),
    ({"starts_at": NOW + timedelta(hours=13), "ends_at": NOW + timedelta(hours=15)},
     "2026-03-10 23:00 CET – 2026-03-11 01:00 CET (2h)"),
])
def test_one_window_wording(changes: dict[str, object], window: str) -> None:
    assert wording.window_line(replace(PENDING, **changes), TZ) == window  # type: ignore[arg-type]


def test_a_late_decision_says_who_decided_first() -> None:
    approved = replace(PENDING, status=Status.ACTIVE, **DECIDED)
    declined = replace(PENDING, status=Status.DECLINED, **DECIDED)
    assert wording.already_decided(approved) == "R-ABCDEFGH was already approved by Lead One."
    assert wording.already_decided(declined, blocks.MARKUP) == "R-ABCDEFGH was already declined by <@ULEAD>."
    assert wording.already_decided(replace(PENDING, status=Status.TIMED_OUT)) == "R-ABCDEFGH was already timed out."


def test_replies_to_commands_and_what_the_requester_is_told() -> None:
    cancelled = replace(PENDING, status=Status.CANCELLED)
    revoked = replace(PENDING, status=Status.REVOKED)
    assert wording.cancelled(cancelled) == "🚫 Cancelled R-ABCDEFGH for acme-zendesk."
    assert wording.ended(cancelled) == wording.cancelled(cancelled)
    assert wording.ended(revoked) == "🔒 Your access to acme-zendesk through R-ABCDEFGH has ended."
    assert wording.told_ended(PENDING, Status.EXPIRED) == (
        "🔒 Access to acme-zendesk through R-ABCDEFGH has expired.")
    assert wording.told_timed_out(PENDING) == "⌛ R-ABCDEFGH for acme-zendesk timed out: no lead decided in time."
    assert wording.told_declined(PENDING, LEAD, "") == "❌ R-ABCDEFGH for acme-zendesk was declined by Lead One."
    assert wording.told_extended(PENDING, NOW, TZ) == "⏩ R-ABCDEFGH for acme-zendesk now ends 2026-03-10 10:00 CET."


def test_both_platforms_confirm_a_request_with_the_same_sentence_and_their_own_markup() -> None:
    assert wording.request_sent(PENDING, TZ, blocks.MARKUP, leads_channel="C0LEADS") == (
        "📨 Request R-ABCDEFGH for acme-zendesk (1h, starting when approved) is waiting for a lead in <#C0LEADS>. "
        "I'll message you privately when a lead decides.")
    assert wording.request_sent(PENDING, TZ, cards.MARKUP, leads_channel="19:abc@thread.tacv2") == (
        "📨 Request R-ABCDEFGH for acme-zendesk (1h, starting when approved) is waiting for a lead in the leads' "
        "channel. I'll message you privately when a lead decides.")


def test_a_request_no_lead_can_see_on_this_platform_says_so_and_names_the_platform() -> None:
    for markup, platform in ((blocks.MARKUP, "Slack"), (cards.MARKUP, "Teams")):
        sent = wording.request_sent(PENDING, TZ, markup, leads_channel=None)
        assert sent == (
            "📨 Request R-ABCDEFGH for acme-zendesk (1h, starting when approved) is waiting for a lead. "
            f"⚠️ No {platform} leads channel is set for vault 'acme', so no lead sees it here: ask an admin to set "
            "[leads_channel], and tell a lead.")
        assert sent.endswith(wording.sent_next(PENDING, markup, leads_channel=None))


def test_an_extension_is_confirmed_with_the_time_it_asks_for() -> None:
    extension = replace(PENDING, id="R-EXTENDED", kind=RequestKind.EXTENSION, parent_id="R-ABCDEFGH",
                        window=Window(timedelta(minutes=30)))
    assert extension.is_extension
    assert wording.request_sent(extension, TZ, blocks.MARKUP, leads_channel="C0LEADS") == (
        "⏩ Extension R-EXTENDED asks the leads in <#C0LEADS> for 30m more on R-ABCDEFGH. "
        "I'll message you privately when a lead decides.")


def test_help_is_one_list_spelled_in_each_platforms_syntax() -> None:
    slack = wording.help_entries(SLACK, whereami=False)
    teams = wording.help_entries(TEAMS)
    assert len(slack) == len(teams) - 1  # the same list; Slack shows channel ids itself (no whereami)
    assert ("whereami", "this conversation's id (to set it as a leads channel)") in teams
    assert slack[0] == ("/access <item> <why> <when>",
                        "ask for a credential, e.g. /access acme-zendesk fix broken trigger for 1h")
    assert teams[0] == ("access <item> <why> <when>",
                        "ask for a credential, e.g. access acme-zendesk fix broken trigger for 1h")
    assert ("extend <id> <how long>", "ask the leads for more time, e.g. extend R-ABCD2345 30m") in teams
    assert "• `/access cancel <id>`: withdraw a request that has not started" in blocks.help_text()
    assert ["cancel <id>", "withdraw a request that has not started"] in [
        [fact["title"], fact["value"]] for element in cards.help_card()["body"] if element["type"] == "FactSet"
        for fact in element["facts"]]


def test_a_delivery_and_its_wipe_read_the_same_on_both_platforms() -> None:
    active = replace(PENDING, status=Status.ACTIVE, **DECIDED, **SPAN)
    expired = replace(active, status=Status.EXPIRED)
    for markup in (blocks.MARKUP, cards.MARKUP):
        assert wording.access_ready(active, "acme-zendesk", NOW + timedelta(hours=1), TZ, markup) == (
            "🔓 Your access to acme-zendesk through R-ABCDEFGH is ready until 2026-03-10 11:00 CET.")
        assert wording.access_closed(expired, "acme-zendesk", TZ, markup) == (
            "🔒 Access to acme-zendesk through R-ABCDEFGH has expired (2026-03-10 11:05 CET). "
            "The password and code were removed from this chat.")


# -- card titles: one sentence on the Slack header and the Teams heading ------------------------------

ITEM = Item(name="acme-zendesk", vault="acme", url="https://acme.zendesk.example", has_totp=True)
EXTENSION = replace(PENDING, id="R-EXTENDED", kind=RequestKind.EXTENSION, parent_id="R-ABCDEFGH",
                    window=Window(timedelta(minutes=30)))
SCHEDULED = replace(PENDING, window=Window(timedelta(hours=2), start=NOW + timedelta(days=1)))
TITLES = {
    "access": (PENDING, "🔑 Access request R-ABCDEFGH: Req One asks for acme-zendesk for 1h"),
    "scheduled": (SCHEDULED, "🔑 Access request R-ABCDEFGH: Req One asks for acme-zendesk for 2h from "
                             "2026-03-11 10:00 CET"),
    "extension": (EXTENSION, "⏩ Extension request R-EXTENDED: Req One asks for 30m more on R-ABCDEFGH"),
}


def _slack_title(request: AccessRequest) -> str:
    header = blocks.approval_card(request, ITEM, TZ).blocks[0]
    assert header["type"] == "header"
    return str(header["text"]["text"])


def _teams_title(request: AccessRequest) -> str:
    heading = cards.approval_card(request, ITEM, TZ)["body"][0]
    assert heading["style"] == "heading"
    return str(heading["text"])


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("kind", sorted(TITLES))
def test_both_platforms_title_a_card_with_the_same_words_in_every_state(kind: str, status: Status) -> None:
    request, title = TITLES[kind]
    request = replace(request, status=status)
    assert wording.request_title(request, TZ) == title
    assert _slack_title(request) == title
    assert _teams_title(request) == title


def test_a_title_names_people_by_display_name_and_each_platform_makes_typed_text_safe() -> None:
    odd = replace(PENDING, requester=Identity("slack", "UODD", "Eve [x](https://evil.example)"), item="<acme>")
    # A Slack header is plain text: nothing there is markup, so it shows the name as typed (no mention).
    assert _slack_title(odd) == "🔑 Access request R-ABCDEFGH: Eve [x](https://evil.example) asks for <acme> for 1h"
    # A Teams heading renders markdown: link syntax is broken, as everywhere on Teams.
    assert _teams_title(odd) == "🔑 Access request R-ABCDEFGH: Eve [x] (https://evil.example) asks for ‹acme› for 1h"
    # The notification text is mrkdwn: escaped.
    assert blocks.approval_card(odd, ITEM, TZ).text.startswith(
        "🔑 Access request R-ABCDEFGH: Eve [x](https://evil.example) asks for &lt;acme&gt; for 1h")


# -- the catalogue: one wording, one limit, each platform's command syntax ----------------------------

OTHER = Item(name="globex-aws", vault="globex")


def _teams_lines(card: dict[str, object]) -> list[object]:
    """A card's body as text: headings and lines as strings, a fact set as (title, value) pairs."""
    out: list[object] = []
    for element in card["body"]:  # type: ignore[attr-defined]
        if element["type"] == "FactSet":
            out.append([(fact["title"], fact["value"]) for fact in element["facts"]])
        else:
            out.append(element["text"])
    return out


def test_the_catalogue_reads_the_same_on_both_platforms_with_each_ones_commands() -> None:
    assert blocks.items_text([ITEM, OTHER], "a") == (
        "*Catalogue matching “a”: 2 items*\n"
        "• `acme-zendesk`: vault acme · https://acme.zendesk.example · TOTP\n"
        "• `globex-aws`: vault globex\n"
        "Ask with `/access <item> <why> <when>`.")
    assert _teams_lines(cards.items_card([ITEM, OTHER], "a")) == [
        "Catalogue matching “a”: 2 items",
        [("acme-zendesk", "vault acme · https://acme.zendesk.example · TOTP"), ("globex-aws", "vault globex")],
        "Ask with `access <item> <why> <when>`.",
    ]


def test_no_match_and_an_empty_catalogue_read_the_same_on_both_platforms() -> None:
    assert blocks.items_text([], "payload") == (
        "No items match “payload”: try other words, or `/access list` for the whole catalogue.")
    assert _teams_lines(cards.items_card([], "payload"))[1] == (
        "No items match “payload”: try other words, or `list` for the whole catalogue.")
    assert blocks.items_text([], "") == wording.CATALOGUE_EMPTY == "The catalogue is empty: ask an admin to add items."
    assert _teams_lines(cards.items_card([], ""))[1] == wording.CATALOGUE_EMPTY
    # What was typed is text, not a template: braces come back as they were.
    assert "“{0} {}”" in blocks.items_text([], "{0} {}")


def test_both_platforms_list_the_same_number_and_say_how_to_narrow_the_rest() -> None:
    many = [replace(OTHER, name=f"item-{n:02d}") for n in range(wording.CATALOGUE_LIMIT + 5)]
    slack = blocks.items_text(many, "")
    teams = _teams_lines(cards.items_card(many, ""))
    assert slack.count("\n• ") == len(teams[1]) == wording.CATALOGUE_LIMIT  # type: ignore[arg-type]
    assert slack.endswith("\n…and 5 more; narrow with `/access list <words>`.\nAsk with `/access <item> <why> <when>`.")
    assert teams[2:] == ["…and 5 more; narrow with `list <words>`.", "Ask with `access <item> <why> <when>`."]
    # Slack's own slash command name, when the app is installed under another one.
    assert "narrow with `/jit list <words>`" in blocks.items_text(many, "", "/jit")


def test_a_long_slack_listing_is_cut_in_its_entries_and_keeps_how_to_narrow_and_ask() -> None:
    long = [replace(OTHER, name=f"item-{n:02d}-" + "x" * 90, url="https://" + "u" * 200) for n in range(60)]
    slack = blocks.items_text(long, "")
    assert len(slack) <= blocks.MESSAGE_TEXT_MAX
    assert slack.endswith("…and 20 more; narrow with `/access list <words>`.\nAsk with `/access <item> <why> <when>`.")


# -- the access report in chat: one summary wording ------------------------------------------------------

SUMMARY = ("Access report 2026-02-08 10:00 → 2026-03-10 10:00 (Europe/Amsterdam)\n"
           "Requests 1: 1 approved, 0 declined, 0 timed out, 0 cancelled; 1 reveal(s)\n\n"
           "Approval latency: median 3m, p95 3m (1 approved)\n")
REPORT_LINES = ["📊 Access report 2026-02-08 10:00 → 2026-03-10 10:00 (Europe/Amsterdam)",
                "• Requests 1: 1 approved, 0 declined, 0 timed out, 0 cancelled; 1 reveal(s)",
                "• Approval latency: median 3m, p95 3m (1 approved)"]


def test_both_platforms_answer_report_with_the_same_summary_lines() -> None:
    reply = wording.report_reply(SUMMARY)
    assert [reply.heading, *reply.bullets] == REPORT_LINES
    slack = blocks.report_text(SUMMARY, shared=True).split("\n")
    assert slack == [REPORT_LINES[0].replace("📊 ", "📊 *") + "*", *REPORT_LINES[1:],
                     "📎 The CSV and HTML files are in your direct messages with jitpass (only you can see them)."]
    assert cards.report_text(SUMMARY).split("\n\n") == REPORT_LINES
    card = cards.report_files_card(reply.title, "https://x.example/a.csv", "https://x.example/a.html", NOW, TZ)
    assert _teams_lines(card) == [REPORT_LINES[0], "📎 Each link works once, until 2026-03-10 10:00 CET. The files "
                                                   "name people and credentials: keep them private."]


def test_a_report_whose_files_could_not_be_sent_says_why_in_the_platforms_name() -> None:
    assert blocks.report_text(SUMMARY, shared=False, problem="missing_scope").endswith(
        "\n⚠️ I could not send you the CSV and HTML files (missing_scope); `jitpass report` on the server "
        "produces them too.")
    assert wording.report_files_not_sent("", blocks.MARKUP).startswith(
        "⚠️ I could not send you the CSV and HTML files (Slack refused)")
    assert wording.report_reply("").heading == "📊 Access report"


def test_report_tables_use_the_core_time_formatter_without_repeating_the_zone() -> None:
    assert _local(NOW, TZ) == wording.moment(NOW, TZ, zone=False) == "2026-03-10 10:00"
    assert wording.moment(NOW, TZ) == "2026-03-10 10:00 CET"
    assert _local(None, TZ) == wording.moment(None, TZ) == "-"


# -- the rest both platforms show: delivery notes, the code's validity, asking again, help, the form ------


def _texts(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def test_a_delivery_carries_the_same_note_and_code_validity_on_both_platforms() -> None:
    active = replace(PENDING, status=Status.ACTIVE, **DECIDED, **SPAN)
    reveal = Reveal(request_id=active.id, item=ITEM, password=Secret("pw"), code=CodeView("123456", 17),
                    ends_at=NOW + timedelta(hours=1))
    slack = _texts(blocks.secret_message(active, reveal, TZ).blocks)
    for shown in (slack, _texts(cards.delivery_card(active, reveal, TZ))):
        assert wording.DELIVERY_NOTE in shown and "valid for 17 more seconds" in shown
    assert wording.code_valid(1) == "valid for 1 more second"


def test_a_wiped_delivery_says_how_to_ask_again_in_each_platforms_syntax() -> None:
    expired = replace(PENDING, status=Status.EXPIRED, **DECIDED, **SPAN)
    assert "Need it again? Send `/access acme-zendesk <why> <when>`." in _texts(
        blocks.ended_message(expired, ITEM, TZ).blocks)
    assert "Need it again? Send `access acme-zendesk <why> <when>`." in _texts(
        cards.grant_ended_card(expired, ITEM, TZ))


def test_help_and_the_form_use_the_same_words_on_both_platforms() -> None:
    assert blocks.help_text().startswith(f"*{wording.HELP_TITLE}*")
    assert _teams_lines(cards.help_card())[0] == wording.HELP_TITLE
    form = _texts(cards.request_form_card([ITEM]))
    assert f'"errorMessage": "{wording.FORM_NO_ITEM}"' in form and f'"errorMessage": "{wording.FORM_NO_REASON}"' in form
    assert wording.form_no_reason("acme-zendesk") == "Say why you need acme-zendesk."


# -- status: one list of open requests ----------------------------------------------------------------


def test_status_lists_the_same_rows_on_both_platforms_and_counts_the_rest() -> None:
    active = replace(PENDING, id="R-ACTIVE22", status=Status.ACTIVE, **DECIDED, **SPAN)
    assert blocks.status_text([PENDING, active], TZ) == (
        "*Your open requests: 2*\n"
        "• *R-ABCDEFGH* `acme-zendesk` (1h, starting when approved): ⏳ Waiting for a lead. Times out "
        "2026-03-10 10:30 CET.\n"
        "• *R-ACTIVE22* `acme-zendesk` (2026-03-10 10:05 CET – 11:05 (1h)): 🟢 Active until 2026-03-10 11:05 CET "
        "(approved by <@ULEAD> at 2026-03-10 10:05 CET).")
    teams = _texts(cards.status_card([PENDING, active], TZ))
    for shown in ("Your open requests: 2", "R-ABCDEFGH · acme-zendesk",
                  "⏳ Waiting for a lead. Times out 2026-03-10 10:30 CET.", "1h, starting when approved",
                  "(approved by Lead One at 2026-03-10 10:05 CET)"):
        assert shown in teams
    many = [replace(PENDING, id=f"R-{n:08d}") for n in range(wording.STATUS_LIMIT + 3)]
    slack = blocks.status_text(many, TZ)
    assert slack.count("\n• ") == wording.STATUS_LIMIT and slack.endswith("\n…and 3 more.")
    assert _texts(cards.status_card(many, TZ)).count("R-000") == wording.STATUS_LIMIT
    assert "…and 3 more." in _texts(cards.status_card(many, TZ))
    assert blocks.status_text([], TZ) == wording.NO_OPEN_REQUESTS
    assert wording.NO_OPEN_REQUESTS in _texts(cards.status_card([], TZ))
