"""Block Kit builders stay within Slack's limits, escape what users typed, and keep secrets where they belong;
manifest.json asks for exactly the scopes the code needs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from adapters.slack import blocks
from adapters.slack.api import METHOD_SCOPES, bot_scopes, normalise_api_url
from adapters.slack.blocks import Actions
from bot.domain.model import AccessRequest, Approval, CodeView, Identity, Item, Reveal, Secret, Status, Window
from tests.support.fake_slack import validate_message, validate_view

ROOT = Path(__file__).resolve().parents[2]
UTC_ZONE = ZoneInfo("UTC")
NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
REQUESTER = Identity("slack", "UREQ", "ureq")
LEAD = Identity("slack", "ULEAD1", "ulead1")
ITEM = Item(name="acme-zendesk", vault="acme", username="support@acme.example", url="https://acme.zendesk.example")


def _request(**changes: Any) -> AccessRequest:
    values: dict[str, Any] = {
        "id": "R-ABCDEFGH", "item": "acme-zendesk", "vault": "acme", "requester": REQUESTER,
        "reason": "fix broken trigger", "window": Window(timedelta(hours=1)), "status": Status.PENDING,
        "created_at": NOW, "updated_at": NOW, "timeout_at": NOW + timedelta(minutes=30), "platform": "slack",
    }
    values.update(changes)
    return AccessRequest(**values)


def _reveal(password: str = "hunter2-canary", code: str = "123456") -> Reveal:
    return Reveal(request_id="R-ABCDEFGH", item=ITEM, password=Secret(password), code=CodeView(code, 17),
                  ends_at=NOW + timedelta(hours=1))


def _all_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# -- golden: the pending card -----------------------------------------------------------------------------


def test_pending_card_golden() -> None:
    card = blocks.approval_card(_request(), ITEM, UTC_ZONE)

    assert card.text == "🔑 Access request R-ABCDEFGH: ureq asks for acme-zendesk for 1h (pending)"
    assert card.blocks == [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": "🔑 Access request R-ABCDEFGH: ureq asks for acme-zendesk for 1h"}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": "*Requester*\n<@UREQ>"},
            {"type": "mrkdwn", "text": "*Item*\n`acme-zendesk` (vault acme)"},
            {"type": "mrkdwn", "text": "*Window*\n1h, starting when approved"},
            {"type": "mrkdwn", "text": "*Requested*\n2026-03-10 09:00 UTC"},
        ]},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Reason*\nfix broken trigger"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "https://acme.zendesk.example"},
                                         {"type": "mrkdwn", "text": "user support@acme.example"}]},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": "⏳ Waiting for a lead. Times out 2026-03-10 09:30 UTC."}},
        {"type": "actions", "block_id": "decide:R-ABCDEFGH", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Approve", "emoji": True},
             "action_id": Actions.APPROVE, "value": "R-ABCDEFGH", "style": "primary"},
            {"type": "button", "text": {"type": "plain_text", "text": "Decline", "emoji": True},
             "action_id": Actions.DECLINE, "value": "R-ABCDEFGH", "style": "danger"},
        ]},
    ]


@pytest.mark.parametrize(("changes", "words"), [
    ({"status": Status.ACTIVE, "decided_by": LEAD, "decided_at": NOW, "starts_at": NOW,
      "ends_at": NOW + timedelta(hours=1)},
     "🟢 Active until 2026-03-10 10:00 UTC (approved by <@ULEAD1> at 2026-03-10 09:00 UTC)."),
    ({"status": Status.EXPIRED, "decided_by": LEAD, "ended_at": NOW + timedelta(hours=1)},
     "🔒 Expired at 2026-03-10 10:00 UTC (approved by <@ULEAD1>)."),
    ({"status": Status.REVOKED, "decided_by": LEAD, "ended_at": NOW}, "🔒 Ended early at 2026-03-10 09:00 UTC"),
    ({"status": Status.REVOKED, "decided_by": LEAD, "ended_by": LEAD, "ended_at": NOW}, "🔒 Ended early by <@ULEAD1>"),
    ({"status": Status.DECLINED, "decided_by": LEAD, "decided_at": NOW, "decline_reason": "not <today>"},
     "❌ Declined by <@ULEAD1> at 2026-03-10 09:00 UTC: not &lt;today&gt;"),
    ({"status": Status.TIMED_OUT, "ended_at": NOW}, "⌛ Timed out at 2026-03-10 09:00 UTC"),
    ({"status": Status.CANCELLED, "ended_at": NOW}, "🚫 Cancelled at 2026-03-10 09:00 UTC."),
    ({"required_approvals": 2, "approvals": (Approval(LEAD, NOW),)},
     "(1 of 2 approvals); approved so far by <@ULEAD1>"),
])
def test_card_states(changes: dict[str, Any], words: str) -> None:
    card = blocks.approval_card(_request(**changes), ITEM, UTC_ZONE)

    assert words in _all_text(card.blocks)
    has_buttons = any(b["type"] == "actions" for b in card.blocks)
    assert has_buttons == (changes.get("status", Status.PENDING) is Status.PENDING)


# -- limits -------------------------------------------------------------------------------------------------


def test_card_with_huge_reason_notes_and_names_stays_within_limits() -> None:
    item = Item(name="x" * 500, vault="v" * 500, username="u" * 5000, url="https://" + "h" * 5000, notes="n" * 9000)
    request = _request(item=item.name, reason="<!channel> & " * 1000, notes=tuple("note " * 2000 for _ in range(30)),
                       requester=Identity("teams", "oid", "d" * 500))

    card = blocks.approval_card(request, item, UTC_ZONE)

    validate_message(card.payload())  # the fake Slack's checks: what Slack itself would refuse
    assert len(card.blocks) <= blocks.MESSAGE_BLOCKS_MAX
    for block in card.blocks:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= blocks.SECTION_TEXT_MAX
        if block["type"] == "context":
            assert len(block["elements"]) <= blocks.CONTEXT_ELEMENTS_MAX
    reason = next(b for b in card.blocks if b["type"] == "section" and "*Reason*" in b.get("text", {}).get("text", ""))
    assert "<!channel>" not in reason["text"]["text"] and "&lt;!channel&gt; &amp;" in reason["text"]["text"]
    assert reason["text"]["text"].endswith("…")
    assert not re.search(r"&[a-z]{0,3}…$", reason["text"]["text"])  # no entity cut in half


def test_fit_and_cut_never_split_an_entity() -> None:
    assert blocks.fit("a<b", 10) == "a&lt;b"
    assert blocks.fit("<<<<", 6) == "&lt;…"
    assert blocks.cut_mrkdwn("abc &amp; def", 7) == "abc…"
    assert blocks.cut_mrkdwn("hi <@U123> there", 8) == "hi…"
    assert blocks.truncate("abcdef", 4) == "abc…"
    assert blocks.truncate("abc", 4) == "abc"


def test_request_modal_lists_at_most_100_items_then_falls_back_to_typing() -> None:
    many = [Item(name=f"item-{n:03d}-" + "z" * 200, vault="acme") for n in range(150)]

    few = blocks.request_modal(many[:100], item=many[3].name, duration=timedelta(hours=1), metadata={"channel": "C"})
    typed = blocks.request_modal(many, item="item-001", duration=timedelta(hours=1), metadata={"channel": "C"})

    validate_view(few)
    validate_view(typed)
    picker = next(b for b in few["blocks"] if b.get("block_id") == "item")["element"]
    assert picker["type"] == "static_select" and len(picker["options"]) == 100
    assert all(len(o["text"]["text"]) <= blocks.OPTION_TEXT_MAX and len(o["value"]) <= blocks.OPTION_VALUE_MAX
               for o in picker["options"])
    assert picker["initial_option"]["value"] == many[3].name[: blocks.OPTION_VALUE_MAX]
    assert next(b for b in typed["blocks"] if b.get("block_id") == "item")["element"]["type"] == "plain_text_input"
    assert len(few["title"]["text"]) <= blocks.VIEW_TITLE_MAX


def test_home_view_with_many_requests_stays_within_100_blocks() -> None:
    requests = [_request(id=f"R-{n:08d}", status=status) for n in range(120)
                for status in (Status.ACTIVE, Status.PENDING, Status.EXPIRED)]
    codes = {r.id: CodeView("123456", 17) for r in requests if r.status is Status.ACTIVE}

    home = blocks.home_view(requests, UTC_ZONE, codes=codes)

    validate_view(home)
    assert len(home["blocks"]) <= blocks.VIEW_BLOCKS_MAX


def test_home_view_active_grant_golden_shows_the_live_code_and_its_buttons() -> None:
    active = _request(status=Status.ACTIVE, starts_at=NOW, ends_at=NOW + timedelta(hours=1))

    home = blocks.home_view([active], UTC_ZONE, codes={active.id: CodeView("123456", 17)})

    validate_view(home)
    grant = home["blocks"][5:7]
    assert grant[0] == {"type": "section", "fields": [
        {"type": "mrkdwn", "text": "*acme-zendesk* (R-ABCDEFGH)\nuntil 2026-03-10 10:00 UTC"},
        {"type": "mrkdwn", "text": "*Code*\n`123456` (valid for 17 more seconds)"},
    ]}
    assert [(b["action_id"], b["value"]) for b in grant[1]["elements"]] == [
        (Actions.NEW_CODE, "R-ABCDEFGH"), (Actions.SHOW_PASSWORD, "R-ABCDEFGH"), (Actions.DONE, "R-ABCDEFGH")]
    assert "audit trail" in _all_text(home["blocks"][7])


def test_home_view_without_a_code_shows_neither_a_code_nor_new_code() -> None:
    active = _request(status=Status.ACTIVE, starts_at=NOW, ends_at=NOW + timedelta(hours=1))
    ended = _request(id="R-ENDED000", status=Status.EXPIRED, ended_at=NOW)

    home = blocks.home_view([active, ended], UTC_ZONE, codes={"R-ENDED000": CodeView("654321", 5)})

    validate_view(home)
    text = _all_text(home)
    assert not re.search(r"`\d{6}`", text) and Actions.NEW_CODE not in text
    assert Actions.SHOW_PASSWORD in text and Actions.DONE in text


def test_decline_modal_and_notice_modal_are_valid_views() -> None:
    validate_view(blocks.decline_modal(_request(reason="r" * 5000), {"request_id": "R-ABCDEFGH"}))
    validate_view(blocks.notice_modal("A title that is far too long for Slack", "t" * 10000))


# -- secrets: where they may and may not be ----------------------------------------------------------------


def test_secret_message_shows_secret_in_blocks_but_never_in_notification_text() -> None:
    message = blocks.secret_message(_request(status=Status.ACTIVE), _reveal(), UTC_ZONE)

    validate_message(message.payload())
    assert "hunter2-canary" in _all_text(message.blocks) and "`123456`" in _all_text(message.blocks)
    assert "hunter2-canary" not in message.text and "123456" not in message.text
    assert {b["action_id"] for b in message.blocks[2]["elements"]} == {Actions.NEW_CODE, Actions.DONE}


def test_password_with_a_backtick_is_shown_as_plain_text() -> None:
    message = blocks.secret_message(_request(status=Status.ACTIVE), _reveal(password="a`b<c"), UTC_ZONE)

    field = next(f for f in message.blocks[1]["fields"] if "Password" in f["text"])
    assert field == {"type": "plain_text", "text": "Password:\na`b<c", "emoji": True}


def test_card_never_contains_a_secret_even_from_catalogue_notes() -> None:
    card = blocks.approval_card(_request(), ITEM, UTC_ZONE)
    ended = blocks.ended_message(_request(status=Status.EXPIRED, ended_at=NOW), ITEM, UTC_ZONE)

    assert "hunter2" not in _all_text(card.payload()) and "hunter2" not in _all_text(ended.payload())
    assert "expired" in ended.text


def test_code_modal_offers_a_new_code() -> None:
    view = blocks.code_modal(_request(status=Status.ACTIVE), _reveal(), UTC_ZONE)

    validate_view(view)
    assert Actions.MODAL_NEW_CODE in _all_text(view)
    assert json.loads(view["private_metadata"]) == {"request_id": "R-ABCDEFGH"}


def test_plain_replies_escape_and_stay_short() -> None:
    items = [Item(name=f"<item{n}>", vault="acme", url="https://x.example") for n in range(100)]

    listing = blocks.items_text(items, "")
    status = blocks.status_text([_request()], UTC_ZONE)

    assert "&lt;item0&gt;" in listing and "<item0>" not in listing
    assert "…and 60 more" in listing and len(listing) <= blocks.MESSAGE_TEXT_MAX
    assert "R-ABCDEFGH" in status and "Waiting for a lead" in status
    assert "/access list" in blocks.help_text()


# -- manifest and scopes ---------------------------------------------------------------------------------


def test_manifest_scopes_equal_the_scopes_of_the_methods_the_code_calls() -> None:
    manifest = json.loads((ROOT / "manifest.json").read_text(encoding="utf-8"))

    assert set(manifest["oauth_config"]["scopes"]["bot"]) == bot_scopes()
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "adapters" / "slack").glob("*.py"))
    called = set(re.findall(r'\.call\(\s*"([a-zA-Z.]+)"', source))
    assert called <= set(METHOD_SCOPES)
    assert set(METHOD_SCOPES) - called == {"auth.test"}  # called by bolt itself, once


def test_manifest_routes_everything_to_slack_events() -> None:
    manifest = json.loads((ROOT / "manifest.json").read_text(encoding="utf-8"))
    features, settings = manifest["features"], manifest["settings"]

    assert features["app_home"]["home_tab_enabled"] is True and features["app_home"]["messages_tab_enabled"] is True
    assert features["bot_user"]["display_name"]
    (command,) = features["slash_commands"]
    assert command["command"] == "/access" and command["usage_hint"]
    urls = {command["url"], settings["event_subscriptions"]["request_url"], settings["interactivity"]["request_url"]}
    assert urls == {"https://YOUR-HOST/slack/events"}
    assert settings["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is False and settings["org_deploy_enabled"] is False


@pytest.mark.parametrize(("given", "expected"), [
    (None, "https://slack.com/api/"),
    ("http://127.0.0.1:9999/api", "http://127.0.0.1:9999/api/"),
    ("https://slack.example/api/", "https://slack.example/api/"),
])
def test_api_url_always_ends_with_a_slash(given: str | None, expected: str) -> None:
    assert normalise_api_url(given) == expected
