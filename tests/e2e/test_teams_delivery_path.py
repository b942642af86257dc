"""The work an approval causes in Teams: nothing made anew per call that can be kept (issue #14, point 3).

Counted at the Bot Connector stand-in, never timed (the latency target lives in bench/request_path.py):
the bot's calls come over kept-alive connections of long-lived connector clients, not one new HTTP
session and TCP connection per call and per inbound activity; a person's 1:1 chat is created once and
then known for later deliveries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.test_teams import LEAD, REQUESTER, TEAM_CHANNEL, Teams, request_id_on
from tests.support.app import CANARY_PASSWORD, FakeClock, running_app, test_settings
from tests.support.fake_connector import LEADS_CHANNEL, FakeConnector, TeamsUser, find_element

PEOPLE = [TeamsUser(f"path-oid-{i}", f"Path {i}") for i in range(4)]


@pytest.fixture
async def teams(tmp_path: Path, connector: FakeConnector, clock: FakeClock) -> AsyncIterator[Teams]:
    async with running_app(tmp_path, settings=test_settings(tmp_path), clock=clock) as running:
        yield Teams(running, connector)


async def test_approvals_reuse_the_connectors_connections_instead_of_one_per_call(
        teams: Teams, connector: FakeConnector) -> None:
    mark = len(connector.calls)
    for person in PEOPLE:  # one after the other: each request and approval done before the next
        request_id = await teams.request(person, "access acme-zendesk fix broken trigger for 1h")
        await teams.press(LEAD, "approve", request_id)

    calls = connector.calls[mark:]
    delivered = {c.conversation_id for c in calls if c.card and find_element(c.card, "password")}
    assert delivered == {p.personal_chat for p in PEOPLE}
    # Per person: the reply to the message, the leads' card, its update, "approved", the placeholder and the
    # password put into it; and member look-ups for their e-mail.
    assert len(calls) >= 6 * len(PEOPLE)
    connections = {c.connection for c in calls}
    assert "" not in connections
    # A new client per call (the SDK factory's way) came over a new connection each time: one per call. Kept
    # clients open no more connections than calls are in flight at once (an approval's effects run side by side).
    assert len(connections) <= 4, f"{len(connections)} connections for {len(calls)} calls"
    assert all(CANARY_PASSWORD not in c.dump() for c in calls if c.conversation_id == LEADS_CHANNEL)


async def test_a_persons_1_1_chat_is_created_once_then_known_for_their_later_deliveries(
        teams: Teams, connector: FakeConnector) -> None:
    chats: list[str] = []
    for text in ("access acme-zendesk fix broken trigger for 1h", "access acme-zendesk check the fix for 1h"):
        before = len(connector.calls)
        await teams.say(REQUESTER, text, channel=TEAM_CHANNEL)  # typed in a channel: the 1:1 chat is not known
        posted = await connector.wait_for(lambda c: c.conversation_id == LEADS_CHANNEL and c.kind == "send",
                                          after=before)
        assert posted.card is not None
        request_id = request_id_on(posted.card)
        await teams.press(LEAD, "approve", request_id)
        [delivery] = [c for c in connector.calls[before:] if c.card and find_element(c.card, "password")]
        chats.append(delivery.conversation_id)
        await teams.press(REQUESTER, "done", request_id, where=delivery.conversation_id)

    created = [c for c in connector.calls if c.kind == "create"]
    assert [c.body["members"] for c in created] == [[{"id": REQUESTER.user_id}]], "created for the first only"
    assert chats == [created[0].result_id] * 2
