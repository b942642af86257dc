"""Every Teams card, in every state, checked by Microsoft's Adaptive Cards parser and Teams' size limit."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from adapters.teams import cards
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
from tests.support.fake_connector import card_elements, find_element, validate_cards

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
TZ = ZoneInfo("Europe/Amsterdam")
PASSWORD = "p*ss_w0rd[1](x)<b>"  # markdown and markup characters that must survive exactly
REQUESTER = Identity("teams", "req-oid", "Req One")
LEAD = Identity("teams", "lead-oid", "Lead One")
LEAD2 = Identity("teams", "lead-oid-2", "Lead Two")
ITEM = Item(name="acme-zendesk", vault="acme", username="support@acme.example", url="https://acme.zendesk.example",
            has_totp=True)
PENDING = AccessRequest(
    id="R-ABCDEFGH", item=ITEM.name, vault=ITEM.vault, requester=REQUESTER, reason="fix broken trigger",
    window=Window(timedelta(hours=1)), status=Status.PENDING, created_at=NOW, updated_at=NOW,
    timeout_at=NOW + timedelta(minutes=30), platform="teams",
)
STARTED = NOW + timedelta(minutes=5)
TOKEN = "x3Jd9-token_urlsafe-of-32-bytes-0123456789a"


def request_in(status: Status, **changes: Any) -> AccessRequest:
    decided = {"decided_by": LEAD, "decided_at": STARTED, "approvals": (Approval(LEAD, STARTED),), "timeout_at": None}
    active = decided | {"starts_at": STARTED, "ends_at": STARTED + timedelta(hours=1)}
    by_status: dict[Status, dict[str, Any]] = {
        Status.PENDING: {},
        Status.APPROVED: decided | {"starts_at": NOW + timedelta(days=1)},
        Status.ACTIVE: active,
        Status.EXPIRED: active | {"ended_at": STARTED + timedelta(hours=1)},
        Status.REVOKED: active | {"ended_at": STARTED + timedelta(minutes=20), "ended_by": LEAD},
        Status.DECLINED: {"decided_by": LEAD, "decided_at": STARTED, "decline_reason": "use the read-only login"},
        Status.CANCELLED: {"ended_at": STARTED},
        Status.TIMED_OUT: {"ended_at": NOW + timedelta(minutes=30), "timeout_at": None},
    }
    return replace(PENDING, status=status, **(by_status[status] | changes))


def reveal(password: str | None = PASSWORD, code: bool = True) -> Reveal:
    return Reveal(request_id=PENDING.id, item=ITEM, password=Secret(password) if password is not None else None,
                  code=CodeView("123456", 17) if code else None, ends_at=STARTED + timedelta(hours=1))


def every_card() -> dict[str, dict[str, Any]]:
    """One of each card the bot sends, in each state it can be in."""
    found: dict[str, dict[str, Any]] = {
        f"approval-{status.value}": cards.approval_card(request_in(status), ITEM, TZ) for status in Status
    }
    found["approval-one-of-two"] = cards.approval_card(
        request_in(Status.PENDING, required_approvals=2, approvals=(Approval(LEAD2, NOW),),
                   notes=("2 approvals needed", "outside working hours")), ITEM, TZ)
    found["approval-extension"] = cards.approval_card(
        request_in(Status.PENDING, kind=RequestKind.EXTENSION, parent_id="R-PARENT22", id="R-EXTENDED",
                   window=Window(timedelta(minutes=30))), ITEM, TZ)
    found["approval-scheduled"] = cards.approval_card(
        request_in(Status.PENDING, window=Window(timedelta(hours=2), NOW + timedelta(days=1)),
                   starts_at=NOW + timedelta(days=1)), ITEM, TZ)
    active = request_in(Status.ACTIVE)
    found["delivery"] = cards.delivery_card(active, reveal(), TZ)
    found["delivery-password-only"] = cards.delivery_card(active, reveal(code=False), TZ)
    found["delivery-code-only"] = cards.delivery_card(active, reveal(password=None), TZ)
    found["ended-expired"] = cards.grant_ended_card(request_in(Status.EXPIRED), ITEM, TZ)
    found["ended-revoked"] = cards.grant_ended_card(request_in(Status.REVOKED), ITEM, TZ)
    other = replace(ITEM, name="globex-aws", vault="globex", has_totp=False)
    found["form"] = cards.request_form_card([ITEM, other])
    found["form-prefilled-with-error"] = cards.request_form_card(
        [ITEM, other], error="Say why you need acme-zendesk.", item="acme-zendesk", reason="x", window="for 1h")
    found["form-empty-catalogue"] = cards.request_form_card([])
    found["sent"] = cards.request_sent_card(PENDING, TZ, "I'll tell you here when a lead decides.")
    found["help"] = cards.help_card()
    found["help-with-note"] = cards.help_card("I don't know “gimme”.")
    found["items"] = cards.items_card([ITEM, other], "acme")
    found["items-none"] = cards.items_card([], "nothing")
    found["status"] = cards.status_card([request_in(s) for s in Status], TZ)
    found["status-none"] = cards.status_card([], TZ)
    found["report-files"] = cards.report_files_card(
        "Access report 2026-02-08 09:00 → 2026-03-10 09:00 (UTC)", f"https://jitpass.example.com/reports/{TOKEN}/"
        "jitpass-report-20260208-20260310.csv", f"https://jitpass.example.com/reports/{TOKEN}2/"
        "jitpass-report-20260208-20260310.html", NOW + timedelta(minutes=15), TZ)
    return found


def huge_cards() -> dict[str, dict[str, Any]]:
    """Cards fed the most a user or a catalogue can put in them."""
    long_text = "why " * 5000
    many = [replace(ITEM, name=f"item-{n:04d}-{'x' * 54}", vault="v" * 64, url="https://" + "u" * 200 + ".example")
            for n in range(900)]
    big = request_in(Status.DECLINED, reason=long_text, decline_reason=long_text, notes=(long_text,) * 5,
                     requester=Identity("teams", "x", "N" * 5000))
    return {
        "approval-huge": cards.approval_card(big, replace(ITEM, url="https://" + "u" * 5000), TZ),
        "form-huge": cards.request_form_card(many, error=long_text, item="item-0001", reason=long_text,
                                             window=long_text),
        "items-huge": cards.items_card(many, long_text),
        "status-huge": cards.status_card([big] * 200, TZ),
        "delivery-huge": cards.delivery_card(request_in(Status.ACTIVE), reveal(password="p" * 4000), TZ),
    }


def test_every_card_passes_the_official_adaptive_cards_parser() -> None:
    assert validate_cards(every_card() | huge_cards()) == {}


@pytest.mark.parametrize(("name", "card"), sorted((every_card() | huge_cards()).items()))
def test_every_card_fits_in_a_teams_message(name: str, card: dict[str, Any]) -> None:
    assert card["version"] == "1.5" and card["type"] == "AdaptiveCard"
    assert cards.card_bytes(card) < cards.MAX_CARD_BYTES


def test_the_validator_reports_what_teams_would_refuse() -> None:
    good = cards.help_card()
    broken = {
        "unknown-element": good | {"body": [{"type": "Carousel"}]},
        "duplicate-ids": good | {"body": [{"type": "Input.Text", "id": "a"}, {"type": "Input.Text", "id": "a"}]},
        "bad-value": good | {"body": [{"type": "TextBlock", "text": "x", "weight": "Heaviest"}]},
        "unknown-property": good | {"body": [{"type": "TextBlock", "text": "x", "colour": "Good"}]},
        "old-version": good | {"version": "1.2"},
        "empty-choices": good | {"body": [{"type": "Input.ChoiceSet", "id": "c", "choices": []}]},
    }
    problems = validate_cards(broken)
    assert sorted(problems) == sorted(broken)


def test_only_the_delivery_card_holds_the_password_and_it_is_exact() -> None:
    for name, card in every_card().items():
        text = json.dumps(card, ensure_ascii=False)
        if name in {"delivery", "delivery-password-only"}:
            password = find_element(card, "password")
            assert password is not None and password["value"] == PASSWORD
            assert text.count(PASSWORD) == 1, "once, in the input, not in the fallback text"
            assert PASSWORD not in card["fallbackText"]
        else:
            assert PASSWORD not in text and "p*ss" not in text, name


def test_the_delivery_buttons_send_nothing_back() -> None:
    card = cards.delivery_card(request_in(Status.ACTIVE), reveal(), TZ)
    actions = [e for e in card_elements(card) if e["type"] == "Action.Execute"]
    assert [(a["verb"], a["data"], a["associatedInputs"]) for a in actions] == [
        ("newCode", {"request_id": PENDING.id}, "none"), ("done", {"request_id": PENDING.id}, "none")]
    code = find_element(card, "totp_code")
    assert code is not None and code["text"] == "123456"


def test_a_pending_approval_card_offers_approve_and_decline_with_a_reason() -> None:
    card = cards.approval_card(PENDING, ITEM, TZ)
    approve, decline = card["actions"]
    assert (approve["verb"], approve["data"], approve["associatedInputs"], approve["style"]) == (
        "approve", {"request_id": PENDING.id}, "none", "positive")
    assert (decline["verb"], decline["data"], decline["style"]) == ("decline", {"request_id": PENDING.id},
                                                                   "destructive")
    assert "associatedInputs" not in decline, "the decline reason input travels with Decline"
    assert find_element(card, "decline_reason") is not None
    status = find_element(card, "status")
    assert status is not None and status["text"] == "⏳ Waiting for a lead. Times out 2026-03-10 10:30 CET."


@pytest.mark.parametrize(("status", "expected"), [
    (Status.APPROVED, "✅ Approved by Lead One at 2026-03-10 10:05 CET; starts 2026-03-11 10:00 CET."),
    (Status.ACTIVE, "🟢 Active until 2026-03-10 11:05 CET (approved by Lead One at 2026-03-10 10:05 CET)."),
    (Status.EXPIRED, "🔒 Expired at 2026-03-10 11:05 CET (approved by Lead One)."),
    (Status.REVOKED, "🔒 Ended early by Lead One at 2026-03-10 10:25 CET (approved by Lead One)."),
    (Status.DECLINED, "❌ Declined by Lead One at 2026-03-10 10:05 CET: use the read-only login"),
    (Status.CANCELLED, "🚫 Cancelled at 2026-03-10 10:05 CET."),
    (Status.TIMED_OUT, "⌛ Timed out at 2026-03-10 10:30 CET: no lead decided in time."),
])
def test_a_decided_approval_card_says_what_happened_and_has_no_buttons(status: Status, expected: str) -> None:
    card = cards.approval_card(request_in(status), ITEM, TZ)
    element = find_element(card, "status")
    assert element is not None and element["text"] == expected
    assert "actions" not in card and find_element(card, "decline_reason") is None


def test_what_users_type_cannot_smuggle_links_onto_the_leads_card() -> None:
    sneaky = request_in(Status.PENDING, reason="[Approve here](https://evil.example) <at>Lead</at>")
    text = json.dumps(cards.approval_card(sneaky, ITEM, TZ), ensure_ascii=False)
    assert "](https://evil" not in text and "<at>" not in text
    assert "[Approve here] (https://evil.example) ‹at›Lead‹/at›" in text


def test_the_form_offers_the_catalogue_and_keeps_what_was_typed() -> None:
    other = replace(ITEM, name="globex-aws", vault="globex")
    card = cards.request_form_card([ITEM, other], error="Say why.", item="globex-aws", reason="r", window="for 2h")
    item = find_element(card, "item")
    assert item is not None and item["value"] == "globex-aws" and item["isRequired"] is True
    assert [(c["title"], c["value"]) for c in item["choices"]] == [("acme-zendesk (acme)", "acme-zendesk"),
                                                                  ("globex-aws (globex)", "globex-aws")]
    assert [find_element(card, i)["value"] for i in ("reason", "window")] == ["r", "for 2h"]  # type: ignore[index]
    assert card["actions"] == [{"type": "Action.Execute", "title": "Request access", "style": "positive", "data": {},
                                "verb": "submitRequest"}]


def test_the_report_card_links_both_files_and_keeps_the_links_out_of_the_fallback() -> None:
    card = every_card()["report-files"]
    links = [(a["title"], a["url"]) for a in card_elements(card) if a["type"] == "Action.OpenUrl"]
    assert [title for title, _ in links] == ["Download CSV", "Download HTML"]
    assert links[0][1].endswith(".csv") and links[1][1].endswith(".html")
    assert TOKEN not in card["fallbackText"]
    assert "works once" in card["body"][1]["text"]
