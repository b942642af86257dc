"""A 1Password-backed item through the whole flow, in Slack and in Teams: request -> approve -> reveal ->
New code -> expiry, with the password and code read from the Connect stand-in at the moment of use.

The stand-in's canary password appears nowhere but the private delivery; its seed appears nowhere at all
(not in chat, not in the store file, not in the audit trail, not in the log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pyotp
import pytest

from adapters.slack.blocks import Actions
from bot.domain.errors import SecretSourceError
from tests.e2e.test_teams import LEAD, REQUESTER, Teams, status_of
from tests.support.app import FakeClock, running_app, test_settings
from tests.support.fake_connector import LEADS_CHANNEL, FakeConnector, find_element, validate_cards
from tests.support.fake_onepassword import CONNECT_TOKEN, EVENTS_TOKEN, FakeOnePassword, running
from tests.support.fake_slack import SlackHarness, slack_harness
from tests.support.onepassword import (
    OP_CANARY_PASSWORD,
    OP_CANARY_SEED,
    OP_POLICY,
    OnePasswordAccount,
    op_settings,
    seed_account,
)

ITEM = "initech-portal-admin"


@pytest.fixture
async def account(clock: FakeClock) -> AsyncIterator[OnePasswordAccount]:
    async with running(FakeOnePassword(clock=clock.now)) as fake:
        yield seed_account(fake)


def _stored_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("jitpass.db*"))


def _code_in(text: str) -> str:
    match = re.search(r"\*Code\*\s*`(\d{6})`", text)
    assert match, text
    return match.group(1)


async def test_slack_flow_on_a_1password_item_reads_connect_at_each_use_and_shows_the_secret_only_privately(
        tmp_path: Path, account: OnePasswordAccount, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with slack_harness(tmp_path, clock=clock, policy_text=OP_POLICY, **op_settings(account.fake)) as slack:
        await _slack_flow(slack, account, clock, tmp_path)
    assert OP_CANARY_PASSWORD not in caplog.text and OP_CANARY_SEED not in caplog.text


async def _slack_flow(slack: SlackHarness, account: OnePasswordAccount, clock: FakeClock, tmp_path: Path) -> None:
    runtime = slack.runtime
    await runtime.onepassword_sync.run()
    reads = lambda: len([s for s in account.fake.seen if s.path.endswith(account.portal)])  # noqa: E731
    before = reads()

    reply, request_id = await slack.request(f"{ITEM} fix the invoice export for 20m")
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    delivered = await slack.fake.wait_for(lambda c: c.method == "response_url" and OP_CANARY_PASSWORD in c.dump())
    await slack.settle()

    assert delivered.key == reply.response_url and delivered.args["response_type"] == "ephemeral"
    assert "admin@initech.example" in delivered.text()
    assert pyotp.TOTP(OP_CANARY_SEED).verify(_code_in(delivered.text()), for_time=clock.now())
    assert reads() > before, "the item was fetched from Connect at delivery"

    clock.advance(timedelta(seconds=65))
    at_press = reads()
    press = await slack.users.press(Actions.NEW_CODE, request_id, "UREQ", channel_id="CGENERAL")
    fresh = await slack.fake.wait_for(lambda c: c.key == press.response_url)
    await slack.settle()
    assert pyotp.TOTP(OP_CANARY_SEED).verify(_code_in(fresh.text()), for_time=clock.now())
    assert reads() > at_press, "New code fetched the item again"

    clock.advance(timedelta(minutes=20))
    await runtime.scheduler.tick()
    await slack.settle()
    shown = slack.fake.shown(press.response_url)  # the wipe goes to the freshest message (New code's)
    assert shown is not None and "expired" in shown["text"] and OP_CANARY_PASSWORD not in str(shown)
    types = [e.type async for e in runtime.store.events() if e.request_id == request_id]
    assert types[-2:] == ["grant.expired", "grant.wiped"] and "grant.revealed" in types and "grant.code_shown" in types

    # The secret went only to the requester's private messages; the seed went nowhere.
    for call in slack.fake.calls:
        dumped = call.dump()
        assert OP_CANARY_SEED not in dumped
        if OP_CANARY_PASSWORD in dumped:
            assert call.method == "response_url" and call.key in {reply.response_url, press.response_url}
    for call in slack.fake.calls:
        if call.method == "chat.postMessage" and call.args.get("channel") == "CLEADS":
            assert OP_CANARY_PASSWORD not in call.dump()
    trail = [e async for e in runtime.store.events()]
    assert OP_CANARY_PASSWORD not in repr(trail) and OP_CANARY_SEED not in repr(trail)
    assert OP_CANARY_PASSWORD.encode() not in _stored_bytes(tmp_path)
    assert [i.name for i in await runtime.catalog.rotation_due()] == [ITEM]


async def test_slack_requester_is_told_when_1password_is_unreachable_and_nothing_is_shown(
        tmp_path: Path, account: OnePasswordAccount, clock: FakeClock) -> None:
    async with slack_harness(tmp_path, clock=clock, policy_text=OP_POLICY, **op_settings(account.fake)) as slack:
        await slack.runtime.onepassword_sync.run()
        account.fake.fail("/items/", 503, times=100)
        _, request_id = await slack.request(f"{ITEM} fix the invoice export for 20m")
        await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
        told = await slack.fake.wait_for(lambda c: c.method == "chat.postMessage" and c.args["channel"] == "DUREQ"
                                         and "not reachable" in c.args["text"])
        await slack.settle()

        assert "1Password is not reachable right now; nothing was shown" in told.args["text"]
        assert not any(OP_CANARY_PASSWORD in c.dump() for c in slack.fake.calls)
        types = [e.type async for e in slack.runtime.store.events() if e.request_id == request_id]
        assert "grant.revealed" not in types and "grant.reveal_failed" in types


async def test_teams_flow_on_a_1password_item(tmp_path: Path, account: OnePasswordAccount, connector: FakeConnector,
                                              clock: FakeClock) -> None:
    settings = test_settings(tmp_path, **op_settings(account.fake))
    async with running_app(tmp_path, settings=settings, clock=clock, policy_text=OP_POLICY) as app:
        teams = Teams(app, connector)
        await app.runtime.onepassword_sync.run()
        request_id = await teams.request(text=f"access {ITEM} fix the invoice export for 1h")
        await teams.press(LEAD, "approve", request_id)

        [delivery] = teams.deliveries()
        assert delivery.conversation_id == REQUESTER.personal_chat and delivery.card is not None
        assert find_element(delivery.card, "password")["value"] == OP_CANARY_PASSWORD  # type: ignore[index]
        code = find_element(delivery.card, "totp_code")
        assert code is not None and pyotp.TOTP(OP_CANARY_SEED).verify(code["text"], for_time=clock.now())

        clock.advance(timedelta(seconds=40))
        fresh = await teams.press(REQUESTER, "newCode", request_id, where=REQUESTER.personal_chat)
        code = find_element(fresh["value"], "totp_code")
        assert code is not None and pyotp.TOTP(OP_CANARY_SEED).verify(code["text"], for_time=clock.now())

        clock.advance(timedelta(hours=1))
        await app.runtime.scheduler.tick()
        wipe = await connector.wait_for(lambda c: c.kind == "update" and c.activity_id == delivery.result_id,
                                        after=connector.calls.index(delivery) + 1)
        await teams.settle()
        assert "has expired" in wipe.dump() and OP_CANARY_PASSWORD not in wipe.dump()
        assert "Expired" in status_of(teams.leads_card(request_id))

        for call in connector.calls:
            assert OP_CANARY_SEED not in call.dump()
            if OP_CANARY_PASSWORD in call.dump():
                assert call.conversation_id == REQUESTER.personal_chat
        assert OP_CANARY_PASSWORD not in json.dumps([a for a in teams.answers if a is not fresh])
        events = [e async for e in app.runtime.store.events()]
        assert OP_CANARY_PASSWORD not in repr(events) and OP_CANARY_SEED not in repr(events)
        assert validate_cards(teams.all_cards()) == {}
    assert OP_CANARY_PASSWORD.encode() not in _stored_bytes(tmp_path)


async def test_direct_use_without_a_grant_is_told_to_the_leads_in_slack(
        tmp_path: Path, account: OnePasswordAccount, clock: FakeClock) -> None:
    async with slack_harness(tmp_path, clock=clock, policy_text=OP_POLICY, **op_settings(account.fake)) as slack:
        runtime = slack.runtime
        await runtime.onepassword_sync.run()
        await runtime.shadow.run(runtime.service)
        # UHOLDER is in no [onepassword.people] entry: Slack's profile e-mail (users.info) says who it is.
        slack.fake.emails["UHOLDER"] = "Holder@Initech.example"
        _, request_id = await slack.request(f"{ITEM} fix the invoice export for 20m", "UHOLDER")
        await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
        await slack.settle()
        clock.advance(timedelta(minutes=1))
        account.fake.used(account.initech, account.portal, "holder@initech.example", action="fill")
        account.fake.used(account.initech, account.portal, "mallory@initech.example", name="Mallory", action="copy")

        result = await runtime.shadow.run(runtime.service)

        assert result.read == 2 and result.flagged == [f"{ITEM} by mallory@initech.example"]
        assert any(c.method == "users.info" and c.args["user"] == "UHOLDER" for c in slack.fake.calls)

        told = await slack.fake.wait_for(lambda c: c.method == "chat.postMessage" and c.args["channel"] == "CLEADS"
                                         and "directly in 1Password" in c.args["text"])
        assert "Mallory (mallory@initech.example) used initech-portal-admin directly in 1Password (copy)" in \
            told.args["text"]
        assert OP_CANARY_PASSWORD not in told.dump()
        [event] = [e async for e in runtime.store.events(types={"access.shadow"})]
        assert event.item == ITEM and event.actor is not None and event.actor.platform == "1password"


async def test_direct_use_without_a_grant_is_told_to_the_leads_in_teams(
        tmp_path: Path, account: OnePasswordAccount, connector: FakeConnector, clock: FakeClock) -> None:
    settings = test_settings(tmp_path, **op_settings(account.fake))
    async with running_app(tmp_path, settings=settings, clock=clock, policy_text=OP_POLICY) as app:
        teams = Teams(app, connector)
        await teams.say(REQUESTER, "help")  # the bot learns the Teams service URL
        await app.runtime.onepassword_sync.run()
        await app.runtime.shadow.run(app.runtime.service)
        clock.advance(timedelta(minutes=1))
        account.fake.used(account.initech, account.portal, "mallory@initech.example", name="Mallory")

        await app.runtime.shadow.run(app.runtime.service)

        told = await connector.wait_for(lambda c: c.conversation_id == LEADS_CHANNEL and "1Password" in c.text)
        assert "mallory@initech.example" in told.text and ITEM in told.text


async def test_serve_syncs_the_1password_catalogue_at_start_on_its_own(
        tmp_path: Path, account: OnePasswordAccount, clock: FakeClock) -> None:
    settings = test_settings(tmp_path, **op_settings(account.fake, events=False))
    async with running_app(tmp_path, settings=settings, clock=clock, policy_text=OP_POLICY, items=[]) as app:
        names: set[str] = set()
        for _ in range(200):  # the scheduler's first run is due at start; bounded wait, no fixed sleep
            names = {i.name for i in await app.runtime.store.list_items()}
            if ITEM in names:
                break
            await asyncio.sleep(0.02)
        assert names == {ITEM, "acme-op-billing"}
        added = [e async for e in app.runtime.store.events(types={"item.added"})]
        assert {e.actor.user_id for e in added if e.actor} == {"jitpass"}  # the system, not a person


async def test_healthz_says_when_1password_was_last_read_and_never_shows_a_token(
        tmp_path: Path, account: OnePasswordAccount, clock: FakeClock) -> None:
    settings = test_settings(tmp_path, **op_settings(account.fake))
    async with running_app(tmp_path, settings=settings, clock=clock, policy_text=OP_POLICY) as app:
        await app.runtime.onepassword_sync.run()
        account.fake.connect_token = "rotated-elsewhere"
        with pytest.raises(SecretSourceError):
            await app.runtime.onepassword_sync.run()
        async with aiohttp.ClientSession() as session, session.get(f"{app.base_url}/healthz") as response:
            body = await response.text()

    health = json.loads(body)["onepassword"]
    assert health["connect"] == account.fake.connect_url and health["events"] is True
    assert health["last_error"] == "unauthorized" and health["last_ok"] == clock.now().isoformat()
    assert CONNECT_TOKEN not in body and EVENTS_TOKEN not in body
