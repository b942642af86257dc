"""Teams delivery and revocation survive kill -9: real `jitpass serve` processes on a real SQLite file,
real activity JSON posted to /api/messages, the Bot Connector stand-in holding a call open at the
moment of the crash (after it changed the message: the answer was lost; or before: the call never landed).

The Teams rule is intent first: a placeholder card is posted and its activity id saved before the secret
is put into that activity, so a retry (or the wipe) always addresses the same message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.faults.world import Server, World, world
from tests.support.app import CANARY_PASSWORD
from tests.support.fake_connector import (
    LEADS_CHANNEL,
    FakeConnector,
    TeamsUser,
    invoke_activity,
    message_activity,
    post_activity,
)

REQUESTER = TeamsUser("req-oid-1", "Req One")
LEAD = TeamsUser("lead-oid-1", "Lead One")
LONG = "access acme-zendesk fault drill for 1h"


@asynccontextmanager
async def teams_world(tmp_path: Path) -> AsyncIterator[tuple[World, FakeConnector]]:
    connector = await FakeConnector().start()
    try:
        async with world(tmp_path) as w:
            yield w, connector
    finally:
        await connector.stop()


async def _say(server: Server, connector: FakeConnector, user: TeamsUser, text: str) -> None:
    status, _ = await post_activity(server.url, message_activity(connector.url, user, text))
    assert status == 202


async def _approve(server: Server, connector: FakeConnector, request_id: str) -> None:
    activity = invoke_activity(connector.url, LEAD, "approve", {"request_id": request_id},
                               conversation_id=LEADS_CHANNEL, conversation_type="channel")
    status, body = await post_activity(server.url, activity)
    assert status == 200, body


async def _request(server: Server, connector: FakeConnector) -> tuple[str, str]:
    """Ask for access; the request id and the activity id of the leads' card."""
    await _say(server, connector, REQUESTER, LONG)
    posted = await connector.wait_for(lambda c: c.conversation_id == LEADS_CHANNEL and c.kind == "send"
                                      and c.status == 201, timeout=15)
    assert posted.card is not None
    facts = [f for e in posted.card["body"] if e["type"] == "FactSet" for f in e["facts"]]
    return str(next(f["value"] for f in facts if f["title"] == "Request")), posted.result_id


def _secret_messages(connector: FakeConnector) -> list[str]:
    """Activities in the requester's chat whose current content shows the password."""
    return [activity for (conversation, activity), body in connector._messages.items()
            if conversation == REQUESTER.personal_chat and CANARY_PASSWORD in json.dumps(body)]


def _card_ended(connector: FakeConnector, card_id: str) -> bool:
    return "ended early by req one" in json.dumps(connector.message(LEADS_CHANNEL, card_id), ensure_ascii=False).lower()


def _shows_secret(body: object) -> bool:
    return CANARY_PASSWORD in json.dumps(body)


async def test_kill_9_after_teams_took_the_secret_but_before_it_was_recorded(tmp_path: Path) -> None:
    async with teams_world(tmp_path) as (w, connector):
        held = connector.hold_next_update(REQUESTER.personal_chat, after_effect=True, when=_shows_secret)
        async with w.server() as first:
            request_id, card_id = await _request(first, connector)
            await _approve(first, connector, request_id)
            await asyncio.wait_for(held.arrived.wait(), 15)
            first.kill9()
        held.released.set()
        assert len(_secret_messages(connector)) == 1  # it reached Teams; jitpass never heard back
        assert "grant.revealed" not in w.types(request_id)
        async with w.server() as second:
            # The retry puts the secret into the same placeholder activity again: still one message.
            await w.until(lambda: "grant.revealed" in w.types(request_id), "delivery recorded after restart")
            assert len(_secret_messages(connector)) == 1
            await _say(second, connector, REQUESTER, f"done {request_id}")
            await w.until(lambda: "grant.wiped" in w.types(request_id), "wipe after done")
            await w.until(lambda: _card_ended(connector, card_id), "the card shows the end")
        assert _secret_messages(connector) == []
        placeholders = [c for c in connector.calls_to(REQUESTER.personal_chat) if c.kind == "send" and c.card]
        assert len(placeholders) == 1, "one placeholder, never a second delivery"
        types = w.types(request_id)
        assert types.count("grant.delivery_started") == 2 and types.count("grant.revealed") == 1


async def test_kill_9_while_the_teams_wipe_is_in_flight_then_the_restart_wipes(tmp_path: Path) -> None:
    async with teams_world(tmp_path) as (w, connector):
        async with w.server() as first:
            request_id, card_id = await _request(first, connector)
            await _approve(first, connector, request_id)
            await w.until(lambda: "grant.revealed" in w.types(request_id), "delivered")
            held = connector.hold_next_update(REQUESTER.personal_chat, when=lambda body: not _shows_secret(body))
            await _say(first, connector, REQUESTER, f"done {request_id}")
            await asyncio.wait_for(held.arrived.wait(), 15)
            assert w.status(request_id) == "revoked"  # access ended in the store before any Teams call
            first.kill9()
        assert len(_secret_messages(connector)) == 1  # the held wipe never landed
        async with w.server():
            await w.until(lambda: "grant.wiped" in w.types(request_id), "wipe after restart")
            await w.until(lambda: _card_ended(connector, card_id), "the card shows the end")
        assert _secret_messages(connector) == []
        held.released.set()
        assert w.types(request_id).count("grant.revoked") == 1
