"""Slack: who may do what, signed requests only, malformed input, races, and secrets that never leak."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.slack.blocks import Actions
from tests.support.app import CANARY_PASSWORD, CANARY_SEED
from tests.support.fake_slack import SlackHarness, sign, slack_harness, user


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    async with slack_harness(tmp_path) as harness:
        yield harness


def _command_body(text: str = "acme-zendesk+fix+broken+trigger+for+1h") -> bytes:
    return f"command=%2Faccess&text={text}&user_id=UREQ&channel_id=CGENERAL".encode()


# -- signatures -----------------------------------------------------------------------------------------


async def test_bad_signature_is_refused_with_401(slack: SlackHarness) -> None:
    reply = await slack.users.post(_command_body(), "application/x-www-form-urlencoded", signature="v0=" + "0" * 64)

    assert reply.status == 401
    assert reply.json()["error"] == "bad X-Slack-Signature"
    assert "request.created" not in await slack.event_types()


async def test_signature_from_another_secret_is_refused(slack: SlackHarness) -> None:
    body = _command_body()
    now = int(time.time())
    reply = await slack.users.post(body, "application/x-www-form-urlencoded", signature=sign(body, now, "other"),
                                   timestamp=now)

    assert reply.status == 401


async def test_stale_timestamp_is_refused_with_401(slack: SlackHarness) -> None:
    reply = await slack.users.post(_command_body(), "application/x-www-form-urlencoded",
                                   timestamp=int(time.time()) - 6 * 60)

    assert reply.status == 401
    assert "stale" in reply.json()["error"]


async def test_missing_signature_headers_are_refused(slack: SlackHarness) -> None:
    reply = await slack.users.post(_command_body(), "application/x-www-form-urlencoded", signature="")

    assert reply.status == 401


async def test_url_verification_challenge_is_answered(slack: SlackHarness) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "token": "x"}).encode()
    reply = await slack.users.post(body, "application/json")

    assert reply.status == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in reply.text


# -- malformed input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "content_type", "words"), [
    (b"payload=not-json", "application/x-www-form-urlencoded", "not valid JSON"),
    (b"payload=%5B1%2C2%5D", "application/x-www-form-urlencoded", "not a JSON object"),
    (b"hello=world", "application/x-www-form-urlencoded", "expected"),
    (b"", "application/x-www-form-urlencoded", "expected"),
    (b"{not json", "application/json", "not valid JSON"),
    (b'{"no": "type"}', "application/json", "type"),
    (b'{"type": "event_callback"}', "application/json", "event"),
    (b"command=access&user_id=U1", "application/x-www-form-urlencoded", "command"),
    (b"command=%2Faccess&text=help", "application/x-www-form-urlencoded", "user_id"),
    (b"\xff\xfe\xfd", "application/x-www-form-urlencoded", "UTF-8"),
])
async def test_malformed_bodies_get_400_with_a_reason(slack: SlackHarness, body: bytes, content_type: str,
                                                      words: str) -> None:
    reply = await slack.users.post(body, content_type)

    assert reply.status == 400, reply.text
    assert words in reply.json()["error"]


@pytest.mark.parametrize("payload", [
    {"type": "block_actions", "user": {"id": "ULEAD1"}},
    {"type": "block_actions", "user": {"id": "ULEAD1"}, "actions": []},
    {"type": "block_actions", "user": {"id": "ULEAD1"}, "actions": [{"value": "x"}]},
    {"type": "block_actions", "actions": [{"action_id": Actions.APPROVE, "value": "R-22222222"}]},
    {"type": "view_submission", "user": {"id": "UREQ"}},
    {"type": "view_submission", "user": {"id": "UREQ"}, "view": {"callback_id": Actions.REQUEST_VIEW}},
    {"user": {"id": "UREQ"}},
])
async def test_malformed_interactions_get_400(slack: SlackHarness, payload: dict[str, object]) -> None:
    reply = await slack.users.interaction(payload)

    assert reply.status == 400, reply.text
    assert reply.json()["error"].startswith("malformed Slack request")


async def test_button_for_an_unknown_request_answers_clearly(slack: SlackHarness) -> None:
    press = await slack.users.press(Actions.APPROVE, "R-ZZZZZZZZ", "ULEAD1")
    answer = await slack.fake.wait_for(lambda c: c.key == press.response_url)

    assert press.status == 200
    assert "There is no request R-ZZZZZZZZ" in answer.text()
    assert answer.args["response_type"] == "ephemeral" and answer.args["replace_original"] is False


async def test_form_submission_with_garbage_values_gets_errors_not_500(slack: SlackHarness) -> None:
    view = {"id": "V1", "callback_id": Actions.REQUEST_VIEW, "private_metadata": "{not json"}
    values = {"item": {"item": {"type": "static_select", "selected_option": 5}}, "duration": "nope"}
    reply = await slack.users.submit(view, "UREQ", values)

    assert reply.status == 200
    assert reply.json()["response_action"] == "errors"
    assert set(reply.json()["errors"]) >= {"item", "reason"}


async def test_slash_command_text_containing_payload_is_understood(slack: SlackHarness) -> None:
    # bolt's own form parser turns such a body into {}; ours does not.
    reply = await slack.users.command("list payload", "UREQ")

    assert reply.status == 200
    assert "No items match “payload”" in reply.json()["text"]


# -- who may decide ---------------------------------------------------------------------------------------


async def test_requester_cannot_approve_their_own_request(slack: SlackHarness) -> None:
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h", user_id="ULEAD1")

    press = await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    answer = await slack.fake.wait_for(lambda c: c.key == press.response_url)
    await slack.settle()

    assert "cannot approve your own request" in answer.text()
    assert (await slack.runtime.service.get_request(request_id)).status.value == "pending"
    refused = [e for e in await slack.events(request_id) if e.type == "access.refused"]
    assert refused and refused[0].actor.user_id == "ULEAD1"


async def test_non_approver_press_is_refused_and_audited(slack: SlackHarness) -> None:
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h")
    card_before = slack.fake.calls_to("chat.update")

    press = await slack.users.press(Actions.APPROVE, request_id, "UOTHER")
    answer = await slack.fake.wait_for(lambda c: c.key == press.response_url)
    await slack.settle()

    assert "not an approver for vault 'acme'" in answer.text()
    assert answer.args["response_type"] == "ephemeral"
    assert (await slack.runtime.service.get_request(request_id)).status.value == "pending"
    assert slack.fake.calls_to("chat.update") == card_before
    assert "access.refused" in await slack.event_types(request_id)


async def test_two_leads_approving_at_once_approve_exactly_once(tmp_path: Path) -> None:
    async with slack_harness(tmp_path) as slack:
        _, request_id = await slack.request("acme-zendesk fix broken trigger for 20m")

        first, second = await asyncio.gather(slack.users.press(Actions.APPROVE, request_id, "ULEAD1"),
                                             slack.users.press(Actions.APPROVE, request_id, "ULEAD2"))
        await slack.settle()

        assert first.status == second.status == 200
        types = await slack.event_types(request_id)
        assert types.count("request.approved") == 1
        assert types.count("grant.revealed") == 1
        deliveries = [c for c in slack.fake.calls if CANARY_PASSWORD in c.dump()]
        assert len(deliveries) == 1
        loser = [c for c in slack.fake.calls if c.key in {first.response_url, second.response_url}]
        assert len(loser) == 1
        winner = (await slack.runtime.service.get_request(request_id)).decided_by
        assert winner is not None
        assert f"already approved by <@{winner.user_id}>" in loser[0].text()


async def test_acting_on_someone_elses_grant_is_refused_and_changes_nothing(slack: SlackHarness) -> None:
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 20m")
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()
    before = len(slack.fake.calls)

    press = await slack.users.press(Actions.NEW_CODE, request_id, "UOTHER", channel_id="CGENERAL")
    answer = await slack.fake.wait_for(lambda c: c.key == press.response_url)
    done = await slack.users.command(f"done {request_id}", "UOTHER")
    await slack.settle()

    assert "is not your grant" in answer.text() and CANARY_PASSWORD not in answer.dump()
    assert "is not your grant" in done.json()["text"]
    assert (await slack.runtime.service.get_request(request_id)).status.value == "active"
    assert all(CANARY_PASSWORD not in c.dump() for c in slack.fake.calls[before:])
    assert (await slack.event_types(request_id)).count("access.refused") == 2


async def test_buttons_on_a_decided_request_answer_already_decided(slack: SlackHarness) -> None:
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h")
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()

    press = await slack.users.press(Actions.DECLINE, request_id, "ULEAD2")
    answer = await slack.fake.wait_for(lambda c: c.key == press.response_url)
    await slack.settle()

    assert "already approved by <@ULEAD1>" in answer.text()
    assert not slack.fake.calls_to("views.open")


# -- secrets ----------------------------------------------------------------------------------------------


async def test_secret_never_reaches_leads_channel_logs_or_audit(slack: SlackHarness,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 20m")
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()
    await slack.users.press(Actions.NEW_CODE, request_id, "UREQ", channel_id="CGENERAL")
    await slack.settle()
    slack.running.clock.advance(timedelta(minutes=21))
    await slack.runtime.scheduler.tick()
    await slack.settle()

    codes = set()
    for call in slack.fake.calls:
        codes |= set(re.findall(r"\*Code\*\\n`(\d{6})`", call.dump()))
    assert codes  # the flow did show codes to the requester…
    leads = [c for c in slack.fake.calls if c.args.get("channel") == "CLEADS"]
    assert len(leads) >= 3
    for call in leads:  # …but never to the leads
        assert CANARY_PASSWORD not in call.dump() and CANARY_SEED not in call.dump()
        assert not codes & set(re.findall(r"\d{6}", call.dump()))
    for call in slack.fake.calls:
        if CANARY_PASSWORD in call.dump():
            assert call.method == "response_url" and CANARY_PASSWORD not in call.args["text"]
    assert CANARY_PASSWORD not in caplog.text and CANARY_SEED not in caplog.text
    async for event in slack.runtime.store.events():
        dumped = json.dumps([event.reason, event.details, event.actor and event.actor.to_dict()], default=str)
        assert CANARY_PASSWORD not in dumped and CANARY_SEED not in dumped
        assert not any(code in dumped for code in codes)


async def test_unexpected_failure_gets_an_apology_with_an_error_id(slack: SlackHarness,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    slack.fake.fail_next("views.open", "expired_trigger_id")

    reply = await slack.users.command("", "UREQ")
    answer = await slack.fake.wait_for(lambda c: c.key == reply.response_url)

    match = re.search(r"\(error (E-[0-9A-F]{6})\)", answer.text())
    assert match, answer.text()
    assert f"error_id={match.group(1)}" in caplog.text


async def test_http_mode_without_signing_secret_answers_501(tmp_path: Path) -> None:
    async with slack_harness(tmp_path, slack_signing_secret=None) as slack:
        reply = await slack.users.command("help", "UREQ")

        assert reply.status == 501
        assert "SLACK_SIGNING_SECRET" in reply.json()["error"]


async def test_unknown_payload_type_is_not_a_server_error(slack: SlackHarness) -> None:
    reply = await slack.users.interaction({"type": "shortcut", "user": user("UREQ"), "callback_id": "nope",
                                           "trigger_id": "t"})

    assert reply.status < 500


async def test_a_store_outage_reaches_the_user_as_an_apology_not_its_detail(slack: SlackHarness,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    await slack.runtime.store.close()  # the store is gone (as in a shutdown or a lost database server)
    try:
        reply = await slack.users.command("list", "UREQ")
    finally:
        await slack.runtime.store.open()

    text = reply.json()["text"]
    match = re.fullmatch(r"jitpass is temporarily unavailable; nothing was changed \(error (E-[0-9A-F]{6})\)\.", text)
    assert match, text
    assert "SQLite" not in text
    logged = [r.getMessage() for r in caplog.records if match.group(1) in r.getMessage()]
    assert logged and "event=infrastructure_error" in logged[0] and "the SQLite store is not open" in logged[0]
