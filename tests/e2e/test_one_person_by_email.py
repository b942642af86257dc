"""One person, one vote, across Slack and Teams without a [people] entry: two accounts whose platforms' own
directories give the same e-mail (Slack `users.info` confirmed profile e-mail, with users:read.email; the Bot
Connector's conversation member) are one person. An e-mail that cannot be looked up never joins two accounts.

A real server with both adapters, signed Slack requests, Agents SDK activities, the Slack Web API and Bot
Connector stand-ins (the connector answers 404 MemberNotFoundInConversation for someone not in a chat)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from adapters.slack import SlackAdapter
from adapters.slack.blocks import Actions
from bot.app import chat_adapters
from tests.e2e.test_teams import LEAD, LEAD2, Teams
from tests.support.app import TEST_POLICY, FakeClock, running_app, test_settings
from tests.support.fake_connector import FakeConnector
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, SlackHarness, SlackUsers, fake_slack

REQUEST = "acme-zendesk fix broken trigger for 1h"
ONE = "lead.one@acme.example"


@asynccontextmanager
async def both(tmp_path: Path, connector: FakeConnector, clock: FakeClock,
               policy_text: str = TEST_POLICY) -> AsyncIterator[tuple[SlackHarness, Teams]]:
    async with fake_slack() as fake:
        settings = test_settings(tmp_path, slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                                 slack_api_url=fake.url)
        adapters = chat_adapters(settings)
        slack_adapter = next(a for a in adapters if isinstance(a, SlackAdapter))
        async with running_app(tmp_path, settings=settings, clock=clock, adapters=adapters,
                               policy_text=policy_text) as running:
            try:
                yield (SlackHarness(fake, running, slack_adapter, SlackUsers(fake, running.base_url)),
                       Teams(running, connector))
            finally:
                await slack_adapter.drain()


async def test_a_slack_requester_cannot_approve_their_own_request_from_teams_with_the_same_email(
        tmp_path: Path, connector: FakeConnector, clock: FakeClock) -> None:
    async with both(tmp_path, connector, clock) as (slack, teams):
        slack.fake.emails["UREQ"] = ONE
        connector.directory[LEAD.aad_object_id] = "Lead.One@ACME.example"  # the case does not matter
        _, request_id = await slack.request(REQUEST, user_id="UREQ")

        answer = await teams.press(LEAD, "approve", request_id)
        assert answer["value"]["code"] == "NotAllowed", answer
        assert answer["value"]["message"] == "You cannot approve your own request."
        request = await slack.runtime.service.get_request(request_id)
        assert request.status.value == "pending" and request.approvals == ()
        [refused] = [e for e in await slack.events(request_id) if e.type == "access.refused"]
        assert refused.reason == "self-approve" and refused.actor.key == "teams:lead-oid-1"
        assert refused.details["person"] == f"email:{ONE}"  # the person, next to the Teams account
        assert request.person == f"email:{ONE}"  # the requester's person, recorded with the request

        # A lead the connector does not know (404): an unknown e-mail joins nobody, so they may approve.
        approved = await teams.press(LEAD2, "approve", request_id)
        assert approved["statusCode"] == 200, approved
        assert (await slack.runtime.service.get_request(request_id)).status.value in {"approved", "active"}
        assert ("19:leads@thread.tacv2", "29:lead-oid-2", 404) in connector.member_lookups


async def test_two_accounts_with_one_email_count_once_towards_two_approvals(
        tmp_path: Path, connector: FakeConnector, clock: FakeClock) -> None:
    policy = TEST_POLICY.replace("[vaults.acme]\ndescription = \"Acme Corp\"\napprovals_required = 1",
                                 "[vaults.acme]\ndescription = \"Acme Corp\"\napprovals_required = 2")
    assert policy != TEST_POLICY
    async with both(tmp_path, connector, clock, policy) as (slack, teams):
        slack.fake.emails["ULEAD1"] = ONE
        connector.directory[LEAD.aad_object_id] = ONE
        connector.directory[LEAD2.aad_object_id] = "lead.two@acme.example"
        _, request_id = await slack.request(REQUEST, user_id="UREQ")

        await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
        again = await teams.press(LEAD, "approve", request_id)  # the same person, on the other platform
        assert again["value"]["code"] == "Conflict" and "You already approved" in again["value"]["message"]
        request = await slack.runtime.service.get_request(request_id)
        assert request.status.value == "pending" and len(request.approvals) == 1

        await teams.press(LEAD2, "approve", request_id)
        request = await slack.runtime.service.get_request(request_id)
        assert request.status.value in {"approved", "active"}
        assert [a.approver.key for a in request.approvals] == ["slack:ULEAD1", "teams:lead-oid-2"]


async def test_without_users_read_email_slack_gives_no_email_and_nothing_is_joined(
        tmp_path: Path, connector: FakeConnector, clock: FakeClock) -> None:
    """Slack leaves `profile.email` out without users:read.email: the accounts stay two people."""
    async with both(tmp_path, connector, clock) as (slack, teams):
        slack.fake.scopes = {"users:read"}
        slack.fake.emails["UREQ"] = ONE
        connector.directory[LEAD.aad_object_id] = ONE  # Teams knows; Slack does not say
        _, request_id = await slack.request(REQUEST, user_id="UREQ")
        answer = await teams.press(LEAD, "approve", request_id)
        assert answer["statusCode"] == 200, answer
        assert not [e for e in await slack.events(request_id) if e.type == "access.refused"]
        assert [c for c in slack.fake.calls if c.method == "users.info" and c.args.get("user") == "UREQ"]


async def test_a_slow_connector_delays_a_teams_press_once_and_only_briefly(
        tmp_path: Path, connector: FakeConnector, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """The e-mail lookup runs before the turn is answered: bounded (2 s), and a failure is remembered, so the
    next presses do not wait again. The e-mail stays unknown, so it joins no one."""
    async with both(tmp_path, connector, clock) as (slack, teams):
        slack.fake.emails["UREQ"] = ONE
        connector.directory[LEAD.aad_object_id] = ONE
        connector.member_delay = 10.0
        _, first = await slack.request(REQUEST, user_id="UREQ")
        _, second = await slack.request(REQUEST, user_id="UREQ2")
        started = asyncio.get_running_loop().time()
        answer = await teams.press(LEAD, "approve", first)
        assert asyncio.get_running_loop().time() - started < 5  # not the connector's 10 s
        assert answer["statusCode"] == 200, answer  # unknown e-mail: a separate person, so the approval stands
        assert (await teams.press(LEAD, "approve", second))["statusCode"] == 200
        # The failed lookup is remembered: the second press does not ask (and wait) again.
        assert caplog.text.count("event=teams_email_lookup_failed") == 1
