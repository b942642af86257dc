"""The Slack flow end to end: real HTTP into the app (signed like Slack) and out to a local fake Slack."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest

from adapters.slack.blocks import Actions
from tests.support.app import CANARY_PASSWORD, CANARY_SEED
from tests.support.fake_slack import Call, SlackHarness, slack_harness


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    async with slack_harness(tmp_path) as harness:
        yield harness


def _buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for block in blocks:
        if block.get("type") == "actions":
            found += block["elements"]
        if isinstance(block.get("accessory"), dict) and block["accessory"].get("type") == "button":
            found.append(block["accessory"])
    return found


def _code_in(call: Call) -> str:
    match = re.search(r"\*Code\*\\n`(\d{6})`|\*Code\*\n`(\d{6})`", call.text())
    assert match, call.text()
    return match.group(1) or match.group(2)


def _delivered(call: Call) -> bool:
    return CANARY_PASSWORD in call.dump()


async def test_request_posts_card_to_leads_channel_with_buttons_and_no_secret(slack: SlackHarness) -> None:
    reply, request_id = await slack.request("acme-zendesk fix broken trigger for 1h")

    assert reply.elapsed < 3
    assert reply.json()["text"].startswith(f"📨 Request {request_id} for acme-zendesk (1h, starting when approved)")
    assert "<#CLEADS>" in reply.json()["text"]
    card = await slack.fake.wait_for(lambda c: c.method == "chat.postMessage" and c.args["channel"] == "CLEADS")
    text = card.text()
    assert request_id in text and "<@UREQ>" in text and "fix broken trigger" in text and "acme-zendesk" in text
    buttons = {b["action_id"]: b["value"] for b in _buttons(card.args["blocks"])}
    assert buttons == {Actions.APPROVE: request_id, Actions.DECLINE: request_id}
    assert CANARY_PASSWORD not in card.dump() and CANARY_SEED not in card.dump()
    request = await slack.runtime.service.get_request(request_id)
    assert request.refs["card"]["channel"] == "CLEADS"
    assert slack.fake.message("CLEADS", request.refs["card"]["ts"])["blocks"] == card.args["blocks"]
    assert request.refs["origin_channel"] == "CGENERAL"


async def test_healthz_shows_slack_mode_without_tokens(slack: SlackHarness) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{slack.running.base_url}/healthz") as response:
        body = await response.text()

    assert response.status == 200
    assert json.loads(body)["platforms"]["slack"] == {"mode": "http", "started": True, "api_url": slack.fake.url,
                                                      "signing_secret_set": True, "admission": {
                                                          "max_running": 16, "max_queued": 256, "admitted": 0,
                                                          "waiting": 0, "refused": 0, "total": 0}}
    assert "xoxb-test" not in body and "test-signing-secret" not in body


async def test_lead_approves_and_requester_gets_secret_and_code(slack: SlackHarness) -> None:
    reply, request_id = await slack.request("acme-zendesk fix broken trigger for 20m")

    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    delivered = await slack.fake.wait_for(lambda c: c.method == "response_url" and _delivered(c))
    await slack.settle()

    assert delivered.key == reply.response_url  # the slash command's response_url: an ephemeral message
    assert delivered.args["response_type"] == "ephemeral"
    assert "support@acme.example" in delivered.text() and "https://acme.zendesk.example" in delivered.text()
    assert pyotp.TOTP(CANARY_SEED).verify(_code_in(delivered), for_time=slack.running.clock.now())
    assert CANARY_PASSWORD not in delivered.args["text"]  # notification text carries no secret
    assert {b["action_id"] for b in _buttons(delivered.args["blocks"])} == {Actions.NEW_CODE, Actions.DONE}
    card = slack.fake.message("CLEADS", (await slack.runtime.service.get_request(request_id)).refs["card"]["ts"])
    assert "Active until" in card["text"] + str(card["blocks"]) and not _buttons(card["blocks"])
    told = await slack.fake.wait_for(lambda c: c.method == "chat.postMessage" and c.args["channel"] == "DUREQ")
    assert "approved" in told.args["text"]
    assert "request.approved" in await slack.event_types(request_id)
    assert "grant.revealed" in await slack.event_types(request_id)


async def test_new_code_is_audited_and_replaces_the_message(slack: SlackHarness) -> None:
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 20m")
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()
    slack.running.clock.advance(timedelta(seconds=65))

    press = await slack.users.press(Actions.NEW_CODE, request_id, "UREQ", channel_id="CGENERAL")
    fresh = await slack.fake.wait_for(lambda c: c.key == press.response_url)
    await slack.settle()

    assert fresh.args["replace_original"] is True
    assert pyotp.TOTP(CANARY_SEED).verify(_code_in(fresh), for_time=slack.running.clock.now())
    # The Home tab's own audited code view (when the grant first appeared there) is not this press.
    assert (await slack.codes_shown(request_id)).count("message") == 1
    # Wiping later uses the fresher URL of the pressed message.
    request = await slack.runtime.service.get_request(request_id)
    assert request.refs["delivery"]["response_url"].endswith(press.response_url)


async def test_done_ends_the_grant_and_wipes_the_secret(slack: SlackHarness) -> None:
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 20m")
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()

    press = await slack.users.press(Actions.DONE, request_id, "UREQ", channel_id="CGENERAL")
    wiped = await slack.fake.wait_for(lambda c: c.key == press.response_url)
    await slack.settle()

    assert wiped.args["replace_original"] is True and "ended" in wiped.text()
    assert CANARY_PASSWORD not in wiped.dump()
    assert (await slack.runtime.service.get_request(request_id)).status.value == "revoked"
    assert "grant.revoked" in await slack.event_types(request_id)


async def test_expiry_replaces_delivered_message_and_card_and_new_code_says_expired(slack: SlackHarness) -> None:
    reply, request_id = await slack.request("acme-zendesk fix broken trigger for 20m")
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()

    slack.running.clock.advance(timedelta(minutes=20, seconds=1))
    await slack.runtime.scheduler.tick()
    await slack.settle()

    shown = slack.fake.shown(reply.response_url)
    assert shown is not None and "expired" in shown["text"] and CANARY_PASSWORD not in str(shown)
    request = await slack.runtime.service.get_request(request_id)
    card = slack.fake.message("CLEADS", request.refs["card"]["ts"])
    assert "Expired" in str(card["blocks"])
    assert "grant.expired" in await slack.event_types(request_id)
    home = slack.fake.homes["UREQ"]
    assert request_id in str(home) and CANARY_PASSWORD not in str(home)

    press = await slack.users.press(Actions.NEW_CODE, request_id, "UREQ", channel_id="CGENERAL")
    answer = await slack.fake.wait_for(lambda c: c.key == press.response_url)
    assert "expired" in answer.text() and not re.search(r"\b\d{6}\b", answer.text())
    assert CANARY_PASSWORD not in answer.dump()
    # None: the tab was never opened, so the activation put no code on it; the expiry republished it without one.
    assert await slack.codes_shown(request_id) == []
