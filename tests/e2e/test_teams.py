"""Teams end to end: the real app on a local port, real activity JSON posted to /api/messages,
and a local Bot Connector stand-in receiving everything the bot sends back."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest

from adapters.teams.agent import ERROR_CONTENT_TYPE
from bot.domain.model import Event
from tests.support.app import CANARY_PASSWORD, CANARY_SEED, FakeClock, RunningApp, running_app, test_settings
from tests.support.fake_connector import (
    LEADS_CHANNEL,
    TENANT,
    ConnectorCall,
    FakeConnector,
    TeamsUser,
    find_element,
    invoke_activity,
    members_added_activity,
    message_activity,
    post_activity,
    validate_cards,
)

REQUESTER = TeamsUser("req-oid-1", "Req One")
LEAD = TeamsUser("lead-oid-1", "Lead One")
LEAD2 = TeamsUser("lead-oid-2", "Lead Two")
OUTSIDER = TeamsUser("outsider-oid", "Out Sider")
TEAM_CHANNEL = "19:general@thread.tacv2"
REQUEST_TEXT = "access acme-zendesk fix broken trigger for 1h"


@dataclass
class Teams:
    """Drives the bot as Teams would: people type messages and press card buttons."""

    running: RunningApp
    connector: FakeConnector
    answers: list[dict[str, Any]] = field(default_factory=list)  # every invoke answer, for card validation

    async def say(self, user: TeamsUser, text: str, *, channel: str | None = None) -> None:
        activity = message_activity(self.connector.url, user, text, conversation_id=channel,
                                    conversation_type="channel" if channel else "personal")
        status, _ = await post_activity(self.running.base_url, activity)
        assert status == 202
        await self.settle()

    async def settle(self) -> None:
        """Wait until every chat effect due now (cards, delivery, messages) was carried out."""
        await self.running.runtime.effects.drain()

    async def press(self, user: TeamsUser, verb: str, request_id: str | None, *, where: str = LEADS_CHANNEL,
                    inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        data = ({"request_id": request_id} if request_id else {}) | (inputs or {})
        activity = invoke_activity(self.connector.url, user, verb, data, conversation_id=where,
                                   conversation_type="personal" if where.startswith("a:") else "channel")
        status, body = await post_activity(self.running.base_url, activity)
        assert status == 200, body
        assert isinstance(body, dict)
        self.answers.append(body)
        await self.settle()
        return body

    async def request(self, user: TeamsUser = REQUESTER, text: str = REQUEST_TEXT) -> str:
        """Ask for access; returns the id on the approval card the leads got."""
        before = len(self.connector.calls)
        await self.say(user, text)
        posted = await self.connector.wait_for(lambda c: c.conversation_id == LEADS_CHANNEL and c.kind == "send",
                                               after=before)
        assert posted.card is not None
        return request_id_on(posted.card)

    def leads_post(self, request_id: str) -> ConnectorCall:
        return next(c for c in self.connector.calls_to(LEADS_CHANNEL)
                    if c.kind == "send" and c.card and request_id_on(c.card) == request_id)

    def leads_card(self, request_id: str) -> dict[str, Any]:
        """The approval card as the leads see it now (after every update)."""
        post = self.leads_post(request_id)
        body = self.connector.message(LEADS_CHANNEL, post.result_id)
        return body["attachments"][0]["content"]  # type: ignore[no-any-return]

    def deliveries(self, user: TeamsUser = REQUESTER) -> list[ConnectorCall]:
        return [c for c in self.connector.calls if c.kind in {"send", "update"} and c.card
                and find_element(c.card, "password")]

    async def events(self, *types: str) -> list[Event]:
        return [e async for e in self.running.runtime.store.events() if not types or e.type in types]

    def all_cards(self) -> dict[str, dict[str, Any]]:
        found = {f"call-{i}-{c.method}-{c.conversation_id}": c.card for i, c in enumerate(self.connector.calls)
                 if c.card}
        found |= {f"answer-{i}": a["value"] for i, a in enumerate(self.answers)
                  if a.get("type") == "application/vnd.microsoft.card.adaptive"}
        return found


def request_id_on(card: dict[str, Any]) -> str:
    facts = [f for e in card["body"] if e["type"] == "FactSet" for f in e["facts"]]
    return str(next(f["value"] for f in facts if f["title"] == "Request"))


def status_of(card: dict[str, Any]) -> str:
    element = find_element(card, "status")
    assert element is not None
    return str(element["text"])


def verbs_of(card: dict[str, Any]) -> list[str]:
    return [a["verb"] for a in card.get("actions", []) if a["type"] == "Action.Execute"]


def assert_no_secret(text: str) -> None:
    assert CANARY_PASSWORD not in text
    assert CANARY_SEED not in text


@pytest.fixture
async def teams(tmp_path: Path, connector: FakeConnector, clock: FakeClock) -> AsyncIterator[Teams]:
    async with running_app(tmp_path, settings=test_settings(tmp_path), clock=clock) as running:
        yield Teams(running, connector)


async def test_lead_approves_and_requester_gets_secret_and_code(
        teams: Teams, connector: FakeConnector, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    request_id = await teams.request()

    posted = teams.leads_post(request_id)
    assert posted.card is not None
    assert verbs_of(posted.card) == ["approve", "decline"]
    assert "waiting for a lead" in status_of(posted.card).lower()
    acknowledged = await connector.wait_for(lambda c: c.conversation_id == REQUESTER.personal_chat)
    assert request_id in acknowledged.text and "waiting for a lead" in acknowledged.text

    answer = await teams.press(LEAD, "approve", request_id)
    assert answer["statusCode"] == 200 and answer["type"] == "application/vnd.microsoft.card.adaptive"
    assert "approved by Lead One" in status_of(answer["value"])
    assert verbs_of(answer["value"]) == []
    assert "approved by Lead One" in status_of(teams.leads_card(request_id)), "the leads' card is updated in place"

    [delivery] = teams.deliveries()
    # Intent first: a placeholder (no secret) is posted and recorded, then the secret is put into it.
    assert delivery.conversation_id == REQUESTER.personal_chat and delivery.kind == "update"
    placeholder = next(c for c in connector.calls if c.kind == "send" and c.result_id == delivery.result_id)
    assert_no_secret(placeholder.dump())
    assert delivery.card is not None
    assert find_element(delivery.card, "password") == {
        "type": "Input.Text", "id": "password", "label": "Password", "value": CANARY_PASSWORD}
    code = find_element(delivery.card, "totp_code")
    assert code is not None and pyotp.TOTP(CANARY_SEED).verify(code["text"], for_time=clock.now())
    assert verbs_of(delivery.card) == ["newCode", "done"]
    told = [c.text for c in connector.calls_to(REQUESTER.personal_chat) if c.text]
    assert any("approved by Lead One" in t for t in told)

    clock.advance(timedelta(seconds=40))
    fresh = await teams.press(REQUESTER, "newCode", request_id, where=REQUESTER.personal_chat)
    code = find_element(fresh["value"], "totp_code")
    assert code is not None and pyotp.TOTP(CANARY_SEED).verify(code["text"], for_time=clock.now())
    assert len(await teams.events("grant.code_shown")) == 1

    ended = await teams.press(REQUESTER, "done", request_id, where=REQUESTER.personal_chat)
    assert "ended" in status_of(ended["value"])
    assert_no_secret(json.dumps(ended))
    wiped = connector.message(REQUESTER.personal_chat, delivery.result_id)
    assert "has ended" in json.dumps(wiped, ensure_ascii=False)
    assert_no_secret(json.dumps(wiped))
    assert "Ended early by Req One" in status_of(teams.leads_card(request_id))

    types = [e.type for e in await teams.events()]
    for expected in ("request.created", "request.approved", "grant.activated", "grant.revealed",
                     "grant.code_shown", "grant.revoked"):
        assert expected in types
    events = await teams.events()
    assert {e.actor.platform for e in events if e.actor and e.type != "item.added"} <= {"teams", "system"}
    assert next(e for e in events if e.type == "request.approved").actor.user_id == "lead-oid-1"  # type: ignore[union-attr]

    stored = await teams.running.runtime.service.get_request(request_id)
    assert stored.refs["teams.leads"] == {"service_url": connector.url, "conversation_id": LEADS_CHANNEL,
                                          "tenant_id": TENANT, "activity_id": posted.result_id}
    assert stored.refs["teams.delivery"]["activity_id"] == delivery.result_id
    assert all(c.authorization is None for c in connector.calls), "anonymous mode sends no token"
    for call in connector.calls_to(LEADS_CHANNEL):
        assert_no_secret(call.dump())
    assert_no_secret(caplog.text)
    assert_no_secret(repr(events))
    assert validate_cards(teams.all_cards()) == {}


async def test_grant_expiry_wipes_the_delivered_card_and_updates_the_leads_card(
        teams: Teams, connector: FakeConnector, clock: FakeClock) -> None:
    request_id = await teams.request()
    await teams.press(LEAD, "approve", request_id)
    [delivery] = teams.deliveries()

    clock.advance(timedelta(hours=1, seconds=1))
    await teams.running.runtime.scheduler.tick()

    wipe = await connector.wait_for(lambda c: c.kind == "update" and c.activity_id == delivery.result_id,
                                    after=connector.calls.index(delivery) + 1)
    await teams.settle()
    assert wipe.conversation_id == REQUESTER.personal_chat
    assert wipe.card is not None and "has expired" in wipe.dump()
    assert_no_secret(wipe.dump())
    assert "Expired" in status_of(teams.leads_card(request_id))
    assert [e.type for e in await teams.events("grant.expired")] == ["grant.expired"]
    assert validate_cards(teams.all_cards()) == {}


async def test_request_nobody_decides_times_out_and_the_leads_card_says_so(
        teams: Teams, connector: FakeConnector, clock: FakeClock) -> None:
    request_id = await teams.request()
    clock.advance(timedelta(minutes=31))
    await teams.running.runtime.scheduler.tick()
    await teams.settle()

    card = teams.leads_card(request_id)
    assert "Timed out" in status_of(card) and verbs_of(card) == []
    told = await connector.wait_for(lambda c: c.conversation_id == REQUESTER.personal_chat and "timed out" in c.text)
    assert request_id in told.text
    assert len(await teams.events("request.timed_out")) == 1
    late = await teams.press(LEAD, "approve", request_id)
    assert late["statusCode"] == 400 and "timed out" in late["value"]["message"]


async def test_restart_mid_grant_expires_the_overdue_grant_and_wipes_its_card(
        tmp_path: Path, connector: FakeConnector) -> None:
    clock = FakeClock()
    settings = test_settings(tmp_path)
    async with running_app(tmp_path, settings=settings, clock=clock) as running:
        first = Teams(running, connector)
        request_id = await first.request()
        await first.press(LEAD, "approve", request_id)
        [delivery] = first.deliveries()

    clock.advance(timedelta(hours=2))
    async with running_app(tmp_path, settings=settings, clock=clock) as running:
        second = Teams(running, connector)
        # Overdue work runs as the app starts (in the background: the port is open meanwhile).
        await running.runtime.scheduler.tick()
        await second.settle()
        after = connector.calls.index(delivery) + 1
        wipe = next(c for c in connector.calls[after:] if c.kind == "update" and c.activity_id == delivery.result_id)
        assert wipe.status == 200 and wipe.card is not None and "has expired" in wipe.dump()
        assert_no_secret(wipe.dump())
        assert "Expired" in status_of(second.leads_card(request_id))
        assert len(await second.events("grant.expired")) == 1


async def test_requester_cannot_approve_their_own_request(teams: Teams, connector: FakeConnector) -> None:
    request_id = await teams.request()
    calls = len(connector.calls)

    answer = await teams.press(REQUESTER, "approve", request_id)

    assert answer == {"statusCode": 400, "type": "application/vnd.microsoft.error",
                      "value": {"code": "NotAllowed", "message": "You cannot approve your own request."}}
    [refused] = await teams.events("access.refused")
    assert refused.actor is not None and refused.actor.user_id == REQUESTER.aad_object_id
    assert refused.reason == "self-approve" and refused.request_id == request_id
    assert len(connector.calls) == calls, "nothing was posted or updated"
    assert not await teams.events("request.approved")


async def test_someone_who_is_not_an_approver_can_neither_approve_nor_decline(
        teams: Teams, connector: FakeConnector) -> None:
    request_id = await teams.request()

    approve = await teams.press(OUTSIDER, "approve", request_id)
    decline = await teams.press(OUTSIDER, "decline", request_id, inputs={"decline_reason": "no"})

    for answer in (approve, decline):
        assert answer["statusCode"] == 400 and answer["value"]["code"] == "NotAllowed"
        assert "not an approver" in answer["value"]["message"]
    refused = await teams.events("access.refused")
    assert [e.reason for e in refused] == ["approve without being an approver", "decline without being an approver"]
    assert "Waiting for a lead" in status_of(teams.leads_card(request_id))


async def test_two_leads_approving_at_once_approve_and_deliver_once(teams: Teams, connector: FakeConnector) -> None:
    request_id = await teams.request()

    answers = await asyncio.gather(teams.press(LEAD, "approve", request_id), teams.press(LEAD2, "approve", request_id))

    assert sorted(a["statusCode"] for a in answers) == [200, 400]
    loser = next(a for a in answers if a["statusCode"] == 400)
    assert loser["value"]["code"] == "Conflict" and "already" in loser["value"]["message"]
    assert len(await teams.events("request.approved")) == 1
    assert len(await teams.events("grant.revealed")) == 1
    assert len(teams.deliveries()) == 1


async def test_lead_declines_with_a_reason_and_the_requester_is_told(teams: Teams, connector: FakeConnector) -> None:
    request_id = await teams.request()

    answer = await teams.press(LEAD, "decline", request_id, inputs={"decline_reason": "use the read-only account"})

    assert "Declined by Lead One at 2026-03-10 09:00 UTC: use the read-only account" in status_of(answer["value"])
    assert "Declined by Lead One" in status_of(teams.leads_card(request_id))
    told = await connector.wait_for(lambda c: c.conversation_id == REQUESTER.personal_chat and "declined" in c.text)
    assert "use the read-only account" in told.text
    [declined] = await teams.events("request.declined")
    assert declined.reason == "use the read-only account"
    assert teams.deliveries() == []


async def test_card_actions_on_unknown_verbs_or_finished_requests_are_refused_and_change_nothing(
        teams: Teams, connector: FakeConnector) -> None:
    request_id = await teams.request()
    await teams.press(LEAD, "decline", request_id)
    calls, events = len(connector.calls), len(await teams.events())

    unknown_verb = await teams.press(LEAD, "launchMissiles", request_id)
    unknown_request = await teams.press(LEAD, "approve", "R-ZZZZZZZZ")
    no_request = await teams.press(LEAD, "approve", None)
    finished = await teams.press(LEAD, "approve", request_id)
    code_for_nothing = await teams.press(REQUESTER, "newCode", request_id, where=REQUESTER.personal_chat)

    assert unknown_verb["value"]["code"] == "UnknownVerb"
    assert unknown_request["value"] == {"code": "NotFound", "message": "There is no request R-ZZZZZZZZ."}
    assert no_request["value"]["code"] == "NotFound"
    assert finished["value"]["code"] == "Conflict" and "already declined" in finished["value"]["message"]
    assert code_for_nothing["value"]["code"] == "Conflict"
    for answer in (unknown_verb, unknown_request, no_request, finished, code_for_nothing):
        assert answer["statusCode"] == 400 and answer["type"] == "application/vnd.microsoft.error"
    assert len(connector.calls) == calls
    # Nothing changed; the one press by the requester for a secret is a refusal, and audited.
    assert [(e.type, e.reason) for e in (await teams.events())[events:]] == [
        ("access.refused", "see the secret of a grant that is declined")]


async def test_an_invoke_jitpass_does_not_handle_gets_an_answer_not_a_bare_501(teams: Teams) -> None:
    activity = invoke_activity(teams.connector.url, LEAD, "x", {}, conversation_id=LEADS_CHANNEL,
                               conversation_type="channel")
    activity["name"] = "composeExtension/query"

    status, body = await post_activity(teams.running.base_url, activity)

    assert status == 200
    assert body["statusCode"] == 501 and body["value"]["code"] == "NotSupported"


async def test_an_unfinished_request_gets_a_form_that_creates_the_request(
        teams: Teams, connector: FakeConnector) -> None:
    await teams.say(REQUESTER, "access acme-zendesk for 1h")
    form_call = await connector.wait_for(lambda c: c.conversation_id == REQUESTER.personal_chat and c.card is not None)
    form = form_call.card
    assert form is not None
    assert status_of(form) == "Say why you need acme-zendesk."
    item = find_element(form, "item")
    assert item is not None and item["value"] == "acme-zendesk"
    assert [c["value"] for c in item["choices"]] == ["acme-zendesk", "globex-aws"]
    assert find_element(form, "window") == {"type": "Input.Text", "id": "window", "label": "When (optional)",
                                            "placeholder": "for 1h · until 17:00 · tomorrow 9am-11am",
                                            "value": "for 1h"}
    assert verbs_of(form) == ["submitRequest"]

    await teams.say(REQUESTER, "access acme-zendesk fix it for 3 fortnights")
    broken = await connector.wait_for(lambda c: c.card is not None and c is not form_call
                                      and c.conversation_id == REQUESTER.personal_chat)
    assert broken.card is not None and "fortnights" in status_of(broken.card)
    assert "/access" not in status_of(broken.card), "Teams has no slash command"

    bad_window = await teams.press(REQUESTER, "submitRequest", None, where=REQUESTER.personal_chat,
                                   inputs={"item": "acme-zendesk", "reason": "fix broken trigger", "window": "soon"})
    assert "can't read “soon” as a time" in status_of(bad_window["value"])
    assert not await teams.events("request.created")

    sent = await teams.press(REQUESTER, "submitRequest", None, where=REQUESTER.personal_chat,
                             inputs={"item": "acme-zendesk", "reason": "fix broken trigger", "window": "for 2h"})

    [created] = await teams.events("request.created")
    assert created.request_id is not None and created.request_id in status_of(sent["value"]) + json.dumps(sent)
    assert created.details["duration"] == "2h" and created.reason == "fix broken trigger"
    assert request_id_on(teams.leads_card(created.request_id)) == created.request_id
    assert validate_cards(teams.all_cards()) == {}


async def test_a_request_in_a_channel_is_delivered_in_a_private_chat(
        teams: Teams, connector: FakeConnector, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jitpass")
    thread = f"{TEAM_CHANNEL};messageid=1700000000000"
    await teams.say(REQUESTER, REQUEST_TEXT, channel=thread)
    posted = await connector.wait_for(lambda c: c.conversation_id == LEADS_CHANNEL and c.kind == "send")
    assert posted.card is not None
    request_id = request_id_on(posted.card)
    reply = await connector.wait_for(lambda c: c.conversation_id == thread)
    assert reply.kind == "reply" and "message you privately" in reply.text
    assert f"conversation_id={TEAM_CHANNEL}" in caplog.text

    await teams.press(LEAD, "approve", request_id)

    [created] = [c for c in connector.calls if c.kind == "create"]
    assert created.body["members"] == [{"id": REQUESTER.user_id}]
    assert created.body["tenantId"] == created.body["channelData"]["tenant"]["id"]
    [delivery] = teams.deliveries()
    assert delivery.conversation_id == created.result_id, "the secret goes to the new 1:1 chat"
    for call in connector.calls_to(TEAM_CHANNEL) + connector.calls_to(thread) + connector.calls_to(LEADS_CHANNEL):
        assert_no_secret(call.dump())
    stored = await teams.running.runtime.service.get_request(request_id)
    assert stored.refs["teams.personal"]["conversation_id"] == created.result_id
    assert stored.refs["teams.requester"]["conversation_type"] == "channel"


async def test_the_leads_channel_id_is_logged_when_installed_and_on_whereami(
        teams: Teams, connector: FakeConnector, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jitpass")
    activity = members_added_activity(connector.url, LEAD, conversation_id=TEAM_CHANNEL)
    status, _ = await post_activity(teams.running.base_url, activity)
    assert status == 202
    assert f"event=teams_installed conversation_id={TEAM_CHANNEL} type=channel" in caplog.text
    welcome = await connector.wait_for(lambda c: c.conversation_id == TEAM_CHANNEL)
    assert f'teams = "{TEAM_CHANNEL}"' in welcome.text

    personal = members_added_activity(connector.url, REQUESTER, conversation_id=REQUESTER.personal_chat,
                                      conversation_type="personal")
    assert (await post_activity(teams.running.base_url, personal))[0] == 202
    greeting = await connector.wait_for(lambda c: c.conversation_id == REQUESTER.personal_chat)
    assert greeting.card is not None and "jitpass: just-in-time access" in json.dumps(greeting.card)

    await teams.say(LEAD, "whereami", channel=f"{TEAM_CHANNEL};messageid=42")
    answer = await connector.wait_for(lambda c: c.conversation_id.endswith(";messageid=42"))
    assert f"`{TEAM_CHANNEL}`" in answer.text and "[leads_channel]" in answer.text
    await teams.say(LEAD, "channel id", channel=f"{TEAM_CHANNEL};messageid=43")
    again = await connector.wait_for(lambda c: c.conversation_id.endswith(";messageid=43"))
    assert f"`{TEAM_CHANNEL}`" in again.text
    assert "event=teams_whereami" in caplog.text


async def test_unknown_commands_get_help(teams: Teams, connector: FakeConnector) -> None:
    await teams.say(REQUESTER, "gimme the passwords")

    help_call = await connector.wait_for(lambda c: c.card is not None)
    assert help_call.card is not None and "I don't know “gimme”" in status_of(help_call.card)
    assert "access <item> <why> <when>" in json.dumps(help_call.card, ensure_ascii=False)
    assert validate_cards(teams.all_cards()) == {}


async def test_reports_are_for_admins_in_a_private_chat(teams: Teams, connector: FakeConnector) -> None:
    admin = TeamsUser("admin-oid", "Ad Min")
    await teams.say(REQUESTER, "report 30d")
    refused = await connector.wait_for(lambda c: bool(c.text))
    assert refused.text == "Only jitpass admins can produce access reports."
    [refusal] = await teams.events("access.refused")
    assert refusal.actor is not None and refusal.actor.user_id == REQUESTER.aad_object_id

    await teams.say(admin, "report 30d", channel=f"{TEAM_CHANNEL};messageid=7")
    in_channel = await connector.wait_for(lambda c: c.conversation_id.endswith(";messageid=7"))
    assert "1:1 chat" in in_channel.text

    await teams.say(admin, "report 30d")
    answer = await connector.wait_for(lambda c: c.conversation_id == admin.personal_chat)
    assert answer.text and "Sorry, something went wrong" not in answer.text


async def test_refusals_use_the_cores_wording(teams: Teams, connector: FakeConnector) -> None:
    await teams.say(REQUESTER, "access acme-zendsk fix broken trigger for 1h")
    unknown = await connector.wait_for(lambda c: bool(c.text))
    assert unknown.text == "There is no item called 'acme-zendsk'.\nDid you mean: acme-zendesk?"

    await teams.say(REQUESTER, "access acme-zendesk fix broken trigger for 9h")
    too_long = await connector.wait_for(lambda c: bool(c.text) and c is not unknown)
    assert too_long.text.startswith("9h is longer than vault 'acme' allows (at most 8h).")
    assert "Example: access acme-zendesk" in too_long.text
    assert not await teams.events("request.created")


async def test_list_status_cancel_and_extend(teams: Teams, connector: FakeConnector) -> None:
    await teams.say(REQUESTER, "list globex")
    listing = await connector.wait_for(lambda c: c.card is not None)
    assert listing.card is not None
    text = json.dumps(listing.card)
    assert "globex-aws" in text and "acme-zendesk" not in text
    assert_no_secret(text)

    pending = await teams.request()
    await teams.say(REQUESTER, "status")
    status = await connector.wait_for(lambda c: c.card is not None and c is not listing
                                      and c.conversation_id == REQUESTER.personal_chat)
    assert status.card is not None and pending in json.dumps(status.card)

    await teams.say(REQUESTER, f"cancel {pending}")
    await connector.wait_for(lambda c: f"Cancelled {pending} for acme-zendesk" in c.text)
    assert "Cancelled" in status_of(teams.leads_card(pending))

    granted = await teams.request()
    await teams.press(LEAD, "approve", granted)
    await teams.say(REQUESTER, f"extend {granted} 30m")
    asked = await connector.wait_for(lambda c: "Extension" in c.text)
    extension = asked.text.split()[2]
    card = teams.leads_card(extension)
    assert f"extend {granted} by 30m" in json.dumps(card, ensure_ascii=False)
    await teams.press(LEAD, "approve", extension)
    [delivery] = teams.deliveries()[:1]
    refreshed = await connector.wait_for(lambda c: c.kind == "update" and c.activity_id == delivery.result_id,
                                         after=connector.calls.index(delivery) + 1)
    assert refreshed.card is not None and "10:30" in status_of(refreshed.card), "the end moved by 30m"
    assert validate_cards(teams.all_cards()) == {}


async def test_malformed_activities_are_400_not_500(teams: Teams) -> None:
    url = teams.running.base_url
    assert (await post_activity(url, None, raw=b"{not json"))[0] == 400
    assert (await post_activity(url, ["a", "list"]))[0] == 400
    assert (await post_activity(url, {"type": "message", "text": "no conversation"}))[0] == 400
    assert (await post_activity(url, {"type": 5, "conversation": {"id": "x"}}))[0] == 400
    assert (await post_activity(url, {"type": "message", "conversation": {"id": "x"}, "from": "nobody"}))[0] == 400
    no_sender = {"type": "message", "channelId": "msteams", "conversation": {"id": "a:x"},
                 "serviceUrl": teams.connector.url, "text": "help"}
    assert (await post_activity(url, no_sender))[0] == 400
    no_channel = message_activity(teams.connector.url, REQUESTER, "help")
    del no_channel["channelId"]
    assert (await post_activity(url, no_channel))[0] == 400
    assert teams.connector.calls == [], "nothing reached the agent"


def _problems_logged(records: list[logging.LogRecord]) -> list[str]:
    """Log lines a person would read as trouble: tracebacks, and anything at WARNING or above."""
    return [f"{r.name}: {r.getMessage()[:200]}" for r in records
            if r.exc_info or r.stack_info or (r.levelno >= logging.WARNING)]


def _with(activity: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return activity | changes


async def test_hostile_activities_are_400_with_one_log_line_each(
        teams: Teams, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url, connector_url = teams.running.base_url, teams.connector.url
    message = message_activity(connector_url, REQUESTER, "help")
    hostile: dict[str, bytes] = {
        "empty channelId": json.dumps(_with(message, channelId="")).encode(),
        "serviceUrl not a URL": json.dumps(_with(message, serviceUrl="not a url")).encode(),
        "serviceUrl not http": json.dumps(_with(message, serviceUrl="ftp://files.example/")).encode(),
        "timestamp not a time": json.dumps(_with(message, timestamp="yesterday")).encode(),
        "entities not a list": json.dumps(_with(message, entities="mention")).encode(),
        "from.id a number": json.dumps(_with(message, **{"from": {"id": 5}})).encode(),
        "100,000 [": b"[" * 100_000,
        "deep object": b'{"a":' * 20_000 + b"1" + b"}" * 20_000,  # under the 256 KiB limit (a bigger one is 413)
        "not UTF-8": b"\xff\xfe{",
        "not JSON": b"{not json",
        "empty": b"",
    }
    for what, raw in hostile.items():
        before = len(caplog.records)
        status, body = await post_activity(url, None, raw=raw)
        records = caplog.records[before:]
        assert status == 400 and isinstance(body, dict) and body["error"], what
        # Refused by the Teams adapter, or before it by the app's guard on both chat endpoints (size, depth).
        refused = [r for r in records if "event=teams_bad_request" in r.getMessage()
                   or "event=chat_request_refused" in r.getMessage()]
        assert len(refused) == 1, (what, [r.getMessage()[:120] for r in records])
        assert _problems_logged(records) == [], what
        assert not [r for r in records if r.levelno >= logging.INFO and "Traceback" in r.getMessage()], what
    assert teams.connector.calls == [], "nothing reached the agent"


async def test_what_agents_playground_sends_is_answered_without_errors(
        teams: Teams, connector: FakeConnector, caplog: pytest.LogCaptureFixture) -> None:
    """Installs, card actions with odd values and channel messages with mentions, shaped as
    Agents Playground 0.2.28 sends them (see the Playground test for the real thing)."""
    caplog.set_level(logging.DEBUG)
    url = teams.running.base_url
    install = _with(members_added_activity(connector.url, REQUESTER, conversation_id=REQUESTER.personal_chat,
                                           conversation_type="personal"),
                    type="installationUpdate", action="add")
    del install["membersAdded"]
    joined = members_added_activity(connector.url, REQUESTER, conversation_id=REQUESTER.personal_chat,
                                    conversation_type="personal")
    mention = message_activity(connector.url, REQUESTER, "list", conversation_id=TEAM_CHANNEL,
                               conversation_type="channel")
    unknown_mention = _with(mention, entities=[{"type": "mention"}])
    card_action = invoke_activity(connector.url, LEAD, "approve", {"request_id": "R-AAAAAAAA"},
                                  conversation_id=LEADS_CHANNEL, conversation_type="channel")
    odd_actions = [_with(card_action, value="approve"), _with(card_action, value=None),
                   _with(card_action, value={"action": {"type": "Action.Execute", "verb": "approve",
                                                        "data": {"request_id": 5}}}),
                   _with(card_action, value={"action": {"type": "Action.Submit"}}),
                   _with(card_action, name="task/fetch")]

    statuses = [(await post_activity(url, activity))[0] for activity in (install, joined, mention, unknown_mention)]
    answers = [await post_activity(url, activity) for activity in odd_actions]

    assert statuses == [202, 202, 202, 202]
    assert [status for status, _ in answers] == [200] * len(odd_actions)
    assert [body["statusCode"] for _, body in answers] == [400, 400, 400, 400, 501]
    assert all(body["type"] == "application/vnd.microsoft.error" for _, body in answers)
    greeting = await connector.wait_for(lambda c: c.card is not None and "just-in-time" in c.dump())
    assert greeting.conversation_id == REQUESTER.personal_chat
    listed = await connector.wait_for(lambda c: c.conversation_id == TEAM_CHANNEL and c.card is not None)
    assert "acme-zendesk" in listed.dump()
    assert all(c.status < 400 for c in connector.calls), [(c.path, c.status, c.body) for c in connector.calls]
    assert _problems_logged(caplog.records) == []


async def test_the_service_url_is_remembered_across_restarts(tmp_path: Path, connector: FakeConnector) -> None:
    settings = test_settings(tmp_path)
    async with running_app(tmp_path, settings=settings) as running:
        await Teams(running, connector).say(REQUESTER, "help")
    async with running_app(tmp_path, settings=settings) as running:
        raw = await running.runtime.store.get_meta("teams.service_url")
        assert raw is not None and json.loads(raw) == {"latest": connector.url, "tenants": {TENANT: connector.url}}
        async with aiohttp.ClientSession() as session, session.get(f"{running.base_url}/healthz") as response:
            health = await response.json()
        assert health["platforms"]["teams"] == {"mode": "anonymous", "app_id": None, "service_url_validation": False,
                                                "started": True, "known_tenants": 1}


async def test_a_second_request_for_the_same_item_is_refused_in_teams_words(
        teams: Teams, connector: FakeConnector) -> None:
    first = await teams.request()
    calls = len(connector.calls)

    await teams.say(REQUESTER, REQUEST_TEXT)

    refusal = await connector.wait_for(lambda c: bool(c.text), after=calls)
    assert refusal.text == (f"You already have request {first} for acme-zendesk (pending).\n"
                            f"Use `cancel {first}` first, or `extend {first} 30m`.")


async def test_without_a_teams_leads_channel_the_requester_is_warned(
        tmp_path: Path, connector: FakeConnector, caplog: pytest.LogCaptureFixture) -> None:
    policy = """
[approvers]
teams = ["lead-oid-1"]
[leads_channel]
slack = "CLEADS"
"""
    async with running_app(tmp_path, policy_text=policy) as running:
        assert "event=teams_no_leads_channel vault=*" in caplog.text
        await Teams(running, connector).say(REQUESTER, REQUEST_TEXT)
        reply = await connector.wait_for(lambda c: bool(c.text))
        assert "No Teams leads channel is set for vault 'acme'" in reply.text
        assert connector.calls_to(LEADS_CHANNEL) == []
        assert len([e async for e in running.runtime.store.events(types={"request.created"})]) == 1


async def test_activities_jitpass_has_no_use_for_are_accepted_quietly(teams: Teams, connector: FakeConnector) -> None:
    reaction = message_activity(connector.url, LEAD, "")
    reaction |= {"type": "messageReaction", "reactionsAdded": [{"type": "like"}]}
    del reaction["text"]

    status, _ = await post_activity(teams.running.base_url, reaction)

    assert status == 202
    assert connector.calls == []


async def test_when_teams_refuses_the_delivery_the_approval_stands_and_the_failure_is_audited(
        teams: Teams, connector: FakeConnector, caplog: pytest.LogCaptureFixture) -> None:
    request_id = await teams.request()
    connector.refuse(REQUESTER.personal_chat, 403, 403)  # e.g. the app was removed for this user

    answer = await teams.press(LEAD, "approve", request_id)

    assert answer["statusCode"] == 200 and "approved by Lead One" in status_of(answer["value"])
    assert len(await teams.events("request.approved")) == 1
    [failed] = await teams.events("grant.delivery_failed")
    assert failed.request_id == request_id and failed.details["final"] is True
    assert f"kind=deliver request_id={request_id}" in caplog.text
    # Refused at the placeholder, before the secret left: nothing secret was sent, and not retried.
    assert teams.deliveries() == []
    placeholders = [c for c in connector.calls_to(REQUESTER.personal_chat) if c.kind == "send" and c.card]
    assert [c.status for c in placeholders] == [403], "not retried: Teams said no"
    assert "grant.revealed" not in [e.type for e in await teams.events()]
    assert_no_secret(caplog.text)


async def test_a_bad_argument_from_teams_on_the_delivery_is_final_at_once_and_audited(
        teams: Teams, connector: FakeConnector) -> None:
    request_id = await teams.request()
    connector.refuse(REQUESTER.personal_chat, 400, 400)  # BadArgument, to the "approved" message and the placeholder

    await teams.press(LEAD, "approve", request_id)

    [failed] = await teams.events("grant.delivery_failed")
    assert failed.details["permanent"] is True and failed.details["final"] is True
    assert failed.details["attempt"] == 1 and failed.details["error"] == "delivery_target:http_400"
    placeholders = [c for c in connector.calls_to(REQUESTER.personal_chat) if c.kind == "send" and c.card]
    assert [c.status for c in placeholders] == [400], "not retried"
    assert [e.details["kind"] for e in await teams.events("chat.effect_failed")] == ["tell"]
    assert teams.deliveries() == [] and "grant.revealed" not in [e.type for e in await teams.events()]


async def test_a_wipe_teams_refuses_for_good_is_not_retried_and_raises_an_alert(
        teams: Teams, connector: FakeConnector) -> None:
    request_id = await teams.request()
    await teams.press(LEAD, "approve", request_id)
    assert len(await teams.events("grant.revealed")) == 1
    puts = len([c for c in connector.calls_to(REQUESTER.personal_chat) if c.kind == "update"])
    connector.refuse_updates(REQUESTER.personal_chat, 404)  # 404 NotFound: the activity is gone

    await teams.say(REQUESTER, f"done {request_id}")

    [failed] = await teams.events("grant.wipe_failed")
    assert failed.details["permanent"] is True and failed.details["final"] is True
    assert failed.details["error"] == "secret_revoked:http_404" and failed.details["attempt"] == 1
    [alert] = await teams.events("alert.wipe_exhausted")
    assert alert.request_id == request_id
    assert await teams.running.runtime.store.effect_counts() == {
        "pending": 0, "failed": 1, "failed_wipes": 1, "failed_deliveries": 0, "retrying_wipes": 0}
    updates = [c for c in connector.calls_to(REQUESTER.personal_chat) if c.kind == "update"][puts:]
    assert [c.status for c in updates] == [404], "not retried"
    assert not await teams.events("grant.wiped")


async def test_approvers_can_be_named_by_tenant(tmp_path: Path, connector: FakeConnector) -> None:
    policy = f"""
[approvers]
teams_groups = ["{TENANT}"]
[leads_channel]
teams = "{LEADS_CHANNEL}"
"""
    async with running_app(tmp_path, policy_text=policy) as running:
        teams = Teams(running, connector)
        request_id = await teams.request()
        stranger = await post_activity(running.base_url, invoke_activity(
            connector.url, OUTSIDER, "approve", {"request_id": request_id}, conversation_id=LEADS_CHANNEL,
            conversation_type="channel", tenant="99999999-0000-0000-0000-000000000000"))
        colleague = await teams.press(OUTSIDER, "approve", request_id)

    assert stranger[1]["value"]["code"] == "NotAllowed", "another tenant is not an approver"
    assert colleague["statusCode"] == 200


async def test_when_teams_throttles_the_bot_retries(teams: Teams, connector: FakeConnector,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    connector.refuse(LEADS_CHANNEL, 429)
    request_id = await teams.request()
    connector.refuse(REQUESTER.personal_chat, 503)

    await teams.press(LEAD, "approve", request_id)

    assert [c.status for c in connector.calls_to(LEADS_CHANNEL) if c.kind == "send"] == [429, 201]
    assert [c.status for c in connector.calls_to(REQUESTER.personal_chat) if c.kind == "send"][:2] == [503, 201]
    assert len([c for c in teams.deliveries() if c.status == 200]) == 1
    assert "event=teams_connector_retry status=429" in caplog.text


async def test_a_store_outage_reaches_the_teams_user_as_an_apology_not_its_detail(
        teams: Teams, connector: FakeConnector, caplog: pytest.LogCaptureFixture) -> None:
    calls = len(connector.calls)
    await teams.running.runtime.store.close()
    try:
        status, _ = await post_activity(teams.running.base_url, message_activity(connector.url, REQUESTER, "list"))
        answer = await connector.wait_for(lambda c: bool(c.text), after=calls)
    finally:
        await teams.running.runtime.store.open()

    assert status == 202
    assert answer.text.startswith("jitpass is temporarily unavailable; nothing was changed (error E-")
    assert "SQLite" not in answer.text
    error_id = answer.text.rsplit("error ", 1)[1].rstrip(").")
    assert any(error_id in r.getMessage() and "the SQLite store is not open" in r.getMessage() for r in caplog.records)


async def test_a_new_code_press_outside_the_holders_own_1_1_chat_is_refused_and_reveals_nothing(
        teams: Teams, connector: FakeConnector) -> None:
    request_id = await teams.request()
    await teams.press(LEAD, "approve", request_id)
    assert teams.deliveries(), "the grant was delivered to the requester's 1:1 chat"
    before = len(await teams.events("grant.code_shown"))
    data = {"request_id": request_id}
    # Forged presses claiming the requester's aadObjectId: in a group chat, in a channel, and in a 1:1
    # chat that is not the one the grant was delivered to.
    for where, kind in (("19:group-chat@thread.v2", "groupChat"), (TEAM_CHANNEL, "channel"),
                        ("a:personal-someone-else", "personal")):
        activity = invoke_activity(connector.url, REQUESTER, "newCode", data, conversation_id=where,
                                   conversation_type=kind)
        status, body = await post_activity(teams.running.base_url, activity)
        assert status == 200, body
        assert body["type"] == ERROR_CONTENT_TYPE and body["value"]["code"] == "NotAllowed", body
        assert "1:1 chat" in body["value"]["message"]
        assert_no_secret(json.dumps(body))
    assert len(await teams.events("grant.code_shown")) == before, "no code shown"
    refused = await teams.events("access.refused")
    assert [(e.actor.key if e.actor else None, e.request_id, e.reason) for e in refused] == [
        ("teams:req-oid-1", request_id, "new code outside the holder's 1:1 chat")] * 3
    # The requester's own 1:1 chat still works.
    fresh = await teams.press(REQUESTER, "newCode", request_id, where=REQUESTER.personal_chat)
    assert find_element(fresh["value"], "totp_code") is not None
