"""The canary sweep in Teams: a known password and TOTP seed go through every Teams flow (request,
approve, New code, extension, status, report and its downloads, done, expiry) through real Agents SDK
activities posted to /api/messages, with hostile and edge activities between the flows (forged presses,
another person with the requester's display name, malformed action data, oversized and control-character
text, broken envelopes). Then: no answer was a 5xx, no hostile activity changed anything (only refusals
were audited), and the canary is nowhere but the requester's own private chat: not in any other
connector call, any other invoke answer, the log at DEBUG, the database files, the exports, the reports
or the downloaded report files."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.e2e.test_canary_sweep import CANARIES, assert_stored_and_reported_clean
from tests.e2e.test_teams import LEAD, LEAD2, OUTSIDER, REQUESTER, TEAM_CHANNEL, Teams
from tests.support.app import CANARY_SEED, FakeClock, running_app, test_settings
from tests.support.fake_connector import (
    LEADS_CHANNEL,
    FakeConnector,
    TeamsUser,
    card_elements,
    invoke_activity,
    message_activity,
    post_activity,
)

ADMIN = TeamsUser("admin-oid", "Ad Min")
IMPOSTOR = TeamsUser("impostor-oid", REQUESTER.name)  # the requester's display name, another account
PUBLIC_URL = "https://jitpass.example.com"


@pytest.fixture
async def teams(tmp_path: Path, connector: FakeConnector, clock: FakeClock) -> AsyncIterator[Teams]:
    async with running_app(tmp_path, settings=test_settings(tmp_path, public_url=PUBLIC_URL), clock=clock) as app:
        yield Teams(app, connector)


def _clean(text: str, where: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"a canary reached {where}"


class Sweep:
    """Posts activities, keeping every answer and who it went to."""

    def __init__(self, teams: Teams) -> None:
        self.teams = teams
        self.answers: list[tuple[TeamsUser, str, Any]] = []  # (who pressed, where, the HTTP answer)
        self.statuses: list[tuple[str, int]] = []

    async def post(self, what: str, user: TeamsUser, where: str, activity: Any = None, *,
                   raw: bytes | None = None) -> Any:
        status, body = await post_activity(self.teams.running.base_url, activity, raw=raw)
        self.statuses.append((what, status))
        self.answers.append((user, where, body))
        await self.teams.settle()
        return body

    async def press(self, user: TeamsUser, verb: str, data: dict[str, Any], *, where: str) -> Any:
        personal = where.startswith("a:")
        activity = invoke_activity(self.teams.connector.url, user, verb, data, conversation_id=where,
                                   conversation_type="personal" if personal else "channel")
        return await self.post(f"{user.name} {verb} {str(data)[:40]} in {where}", user, where, activity)

    async def say(self, user: TeamsUser, text: str, *, where: str | None = None) -> None:
        activity = message_activity(self.teams.connector.url, user, text, conversation_id=where,
                                    conversation_type="channel" if where else "personal")
        await self.post(f"{user.name} says {text[:40]!r}", user, where or user.personal_chat, activity)

    async def snapshot(self) -> tuple[list[tuple[str, str, int]], int]:
        """Every request's (id, status, version) and how many events that are not refusals."""
        store = self.teams.running.runtime.store
        requests = await store.find_requests()
        events = [e async for e in store.events() if e.type != "access.refused"]
        return sorted((r.id, r.status.value, r.version) for r in requests), len(events)

    async def hostile(self, grant: str) -> None:
        """Hostile and edge activities against the live grant `grant`: each must change nothing."""
        before = await self.snapshot()
        refusals = len([e async for e in self.teams.running.runtime.store.events() if e.type == "access.refused"])
        # Presses for someone else's secret: a stranger, an approver, another account with the same name.
        for user in (OUTSIDER, LEAD, IMPOSTOR):
            await self.press(user, "newCode", {"request_id": grant}, where=user.personal_chat)
            await self.press(user, "done", {"request_id": grant}, where=user.personal_chat)
        # Malformed action data and unknown verbs.
        for data in ({}, {"request_id": ["R-1", grant]}, {"request_id": "R-" + "Z" * 5000},
                     {"request_id": {"$ne": None}}, {"request_id": grant + "\x00"}):
            await self.press(REQUESTER, "newCode", data, where=REQUESTER.personal_chat)
        await self.press(REQUESTER, "showPassword", {"request_id": grant}, where=REQUESTER.personal_chat)
        # Text: oversized, control characters and terminal escapes, zero-width and bidi characters.
        # (a stranger may ask for access: these name no item, so none of them is a request)
        await self.say(OUTSIDER, "access no-such-item " + "A" * 20_000)
        await self.say(OUTSIDER, "access ac\u200bme-zendisk \x1b[31mfix\x00 it\u202e for 1h")
        await self.say(OUTSIDER, f"done {grant}")
        await self.say(OUTSIDER, f"extend {grant} 8h")
        await self.say(OUTSIDER, "report 30d", where=f"{TEAM_CHANNEL};messageid=9")
        # Broken envelopes.
        base = message_activity(self.teams.connector.url, REQUESTER, "status")
        for what, raw in (("empty channelId", json.dumps(base | {"channelId": ""}).encode()),
                          ("serviceUrl not a URL", json.dumps(base | {"serviceUrl": "not a url"}).encode()),
                          ("from a number", json.dumps(base | {"from": {"id": 7}}).encode()),
                          ("not JSON", b"{\"type\": \"invoke\", "),
                          ("deep", b"[" * 40 + b"]" * 40)):
            await self.post(what, REQUESTER, "-", raw=raw)
        events = [(e.type, e.reason) async for e in self.teams.running.runtime.store.events()]
        assert await self.snapshot() == before, f"a hostile activity changed something: {events[-12:]}"
        # The holder's own press, forged into the leads' channel: a code for the holder's eyes (Teams shows
        # an invoke's answer card to the one who pressed), audited as a code view.
        await self.press(REQUESTER, "newCode", {"request_id": grant}, where=LEADS_CHANNEL)
        after = len([e async for e in self.teams.running.runtime.store.events() if e.type == "access.refused"])
        assert after > refusals, "the forged presses were audited as refusals"


def _request_id_in(text: str) -> str:
    found = re.search(r"R-[0-9A-Z]{8}", text)
    assert found, text
    return found.group()


async def _download(teams: Teams, url: str) -> str:
    async with aiohttp.ClientSession() as session, \
            session.get(teams.running.base_url + urlsplit(url).path) as response:
        assert response.status == 200, url
        return await response.text()


async def test_the_canary_appears_nowhere_but_the_requesters_private_chat_in_teams(
        teams: Teams, connector: FakeConnector, clock: FakeClock, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sweep = Sweep(teams)
    first = await teams.request(REQUESTER, "access acme-zendesk fix broken trigger for 20m")
    await sweep.press(REQUESTER, "approve", {"request_id": first}, where=LEADS_CHANNEL)  # self-approval: refused
    await sweep.press(OUTSIDER, "approve", {"request_id": first}, where=LEADS_CHANNEL)
    await sweep.press(LEAD, "approve", {"request_id": first}, where=LEADS_CHANNEL)
    clock.advance(timedelta(seconds=40))
    await sweep.press(REQUESTER, "newCode", {"request_id": first}, where=REQUESTER.personal_chat)
    await sweep.hostile(first)

    before = len(connector.calls)
    await sweep.say(REQUESTER, f"extend {first} 5m")
    asked = await connector.wait_for(lambda c: "Extension" in c.text, after=before)
    extension = _request_id_in(asked.text.replace(first, ""))
    await sweep.press(REQUESTER, "approve", {"request_id": extension}, where=LEADS_CHANNEL)
    await sweep.press(LEAD2, "approve", {"request_id": extension}, where=LEADS_CHANNEL)
    await sweep.say(REQUESTER, "status")
    await sweep.say(REQUESTER, "list acme")

    clock.advance(timedelta(minutes=1))
    before = len(connector.calls)
    await sweep.say(ADMIN, "report 30d")
    report = await connector.wait_for(lambda c: c.conversation_id == ADMIN.personal_chat and c.card is not None,
                                      after=before)
    assert report.card is not None
    links = [a["url"] for a in card_elements(report.card) if a["type"] == "Action.OpenUrl"]
    assert len(links) == 2, "the CSV and HTML downloads"
    downloaded = [await _download(teams, url) for url in links]

    await sweep.press(REQUESTER, "done", {"request_id": first}, where=REQUESTER.personal_chat)
    second = await teams.request(REQUESTER, "access acme-zendesk look at ticket 42 for 10m")
    await sweep.press(LEAD, "approve", {"request_id": second}, where=LEADS_CHANNEL)
    clock.advance(timedelta(minutes=11))
    await teams.running.runtime.scheduler.tick()
    await teams.settle()
    await sweep.hostile(second)  # after the end: still nothing, and no code
    await sweep.press(REQUESTER, "newCode", {"request_id": second}, where=REQUESTER.personal_chat)

    assert [what for what, status in sweep.statuses if status >= 500] == [], "no activity is answered with a 5xx"
    delivered = 0
    for call in connector.calls:
        if any(canary in call.dump() for canary in CANARIES):
            assert call.conversation_id == REQUESTER.personal_chat, f"the password went to {call.conversation_id}"
            assert CANARY_SEED not in call.dump(), "the seed never leaves the vault, not even to the holder"
            delivered += 1
    assert delivered >= 2, "both grants were delivered"
    shown = 0
    for user, where, answer in sweep.answers:
        if any(canary in json.dumps(answer) for canary in CANARIES):
            # An invoke's answer goes only to the one who pressed (Teams shows it to them alone).
            assert user == REQUESTER, f"the password was in an answer to {user.name} in {where}"
            assert CANARY_SEED not in json.dumps(answer)
            shown += 1

    assert shown >= 1, "the requester's own New code answers carried the code card"
    _clean(caplog.text, "the log")
    await assert_stored_and_reported_clean(teams.running.runtime, tmp_path)
    assert {"grant.revoked", "access.refused"} <= {e.type for e in await teams.events()}
    for text in downloaded:
        assert "acme-zendesk" in text
        _clean(text, "a downloaded report file")
