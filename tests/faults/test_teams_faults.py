"""Teams delivery and revocation survive kill -9: real `jitpass serve` processes on a real SQLite file,
real activity JSON posted to /api/messages, the Bot Connector stand-in holding a call open at the
moment of the crash (after it changed the message: the answer was lost; or before: the call never landed).

The Teams rule is intent first: a placeholder card is posted and its activity id saved before the secret
is put into that activity, so a retry (or the wipe) always addresses the same message.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from datetime import datetime
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


def _effects(w: World, request_id: str) -> dict[str, list[tuple[str, int]]]:
    """Each kind of effect of a request: (status, attempts), oldest first (read from the SQLite file)."""
    with closing(sqlite3.connect(w.db)) as conn:
        rows = conn.execute("SELECT kind, status, attempts FROM effects WHERE request_id = ? ORDER BY seq",
                            (request_id,))
        found: dict[str, list[tuple[str, int]]] = {}
        for kind, status, attempts in rows:
            found.setdefault(str(kind), []).append((str(status), int(attempts)))
        return found


def _card_approved(body: object) -> bool:
    return "approved" in json.dumps(body).lower() and "ended" not in json.dumps(body).lower()


async def test_teams_429_500_and_a_timeout_on_delivery_card_update_and_wipe_are_retried_and_done_once(
        tmp_path: Path) -> None:
    async with teams_world(tmp_path) as (w, connector):
        async with w.server() as server:
            request_id, card_id = await _request(server, connector)
            # The delivery (the PUT that puts the secret in) answers 500; the leads' card update 429 with a
            # Retry-After the connector honours in the call; then the wipe stalls past the 1 s call timeout.
            connector.refuse_updates(REQUESTER.personal_chat, 500, when=_shows_secret)
            connector.refuse_updates(LEADS_CHANNEL, 429, 429, 429, retry_after=0.1)
            await _approve(server, connector, request_id)
            await w.until(lambda: "grant.revealed" in w.types(request_id), "delivered despite a 500")
            assert len(_secret_messages(connector)) == 1
            held = connector.hold_next_update(REQUESTER.personal_chat, when=lambda body: not _shows_secret(body))
            await _say(server, connector, REQUESTER, f"done {request_id}")
            await asyncio.wait_for(held.arrived.wait(), 15)
            assert w.status(request_id) == "revoked"  # access ended in the store, whatever Teams does
            await w.until(lambda: "grant.wiped" in w.types(request_id), "wiped after a timed-out attempt")
            await w.until(lambda: _card_ended(connector, card_id), "the card shows the end")
            held.released.set()
        assert _secret_messages(connector) == []
        events = w.events(request_id)
        failed = [d for t, d in events if t == "grant.delivery_failed"]
        assert len(failed) == 1 and failed[0]["attempt"] == 1 and failed[0]["error"] == "deliver_secret:http_500"
        assert "retry_at" in failed[0] and "final" not in failed[0]
        assert [d["attempt"] for t, d in events if t == "grant.revealed"] == [2]
        wipe_failed = [d for t, d in events if t == "grant.wipe_failed"]
        assert len(wipe_failed) == 1 and wipe_failed[0]["error"] in {"secret_revoked:timeout", "timeout"}
        assert [d["attempt"] for t, d in events if t == "grant.wiped"] == [2]
        effects = _effects(w, request_id)
        assert effects["deliver"] == [("done", 2)] and effects["wipe"] == [("done", 2)]
        # The card update refused three times in its first call (the connector's own retries) stays durable
        # work: retried (done on a later attempt) or, if a later card update came first, dropped as
        # superseded; the last one is done and nothing is left pending.
        assert all(status in {"done", "dropped"} for status, _ in effects["update_card"])
        assert effects["update_card"][-1][0] == "done"
        assert any((status == "dropped" and attempts >= 1) or (status == "done" and attempts >= 2)
                   for status, attempts in effects["update_card"])
        refused = [c for c in connector.calls_to(LEADS_CHANNEL) if c.kind == "update" and c.status == 429]
        assert len(refused) == 3
        # Exactly one secret put in, one placeholder, one successful wipe.
        personal = connector.calls_to(REQUESTER.personal_chat)
        assert len([c for c in personal if c.kind == "update" and _shows_secret(c.body) and c.status == 200]) == 1
        assert len([c for c in personal if c.kind == "send" and c.card and c.status == 201]) == 1
        types = w.types(request_id)
        assert types.count("grant.revoked") == 1 and types.count("grant.wiped") == 1


async def test_a_teams_retry_after_longer_than_the_cap_waits_only_the_cap(tmp_path: Path) -> None:
    async with teams_world(tmp_path) as (w, connector):
        w.env["JITPASS_RETRY_AFTER_MAX"] = "2"
        async with w.server() as server:
            request_id, _ = await _request(server, connector)
            # An hour's Retry-After on the delivery: longer than a call may wait (the connector gives it back
            # at once), and longer than the cap: the retry comes after 2 s, not an hour.
            connector.refuse_updates(REQUESTER.personal_chat, 429, retry_after=3600, when=_shows_secret)
            await _approve(server, connector, request_id)
            await w.until(lambda: "grant.revealed" in w.types(request_id), "delivered after the capped wait")
        with closing(sqlite3.connect(w.db)) as conn:
            rows = conn.execute("SELECT type, at, details FROM events WHERE request_id = ? ORDER BY seq",
                                (request_id,)).fetchall()
        failed = [(at, json.loads(d)) for t, at, d in rows if t == "grant.delivery_failed"]
        assert len(failed) == 1 and failed[0][1]["error"] == "deliver_secret:http_429"
        at = datetime.fromisoformat(failed[0][0].replace("Z", "+00:00"))
        retry_at = datetime.fromisoformat(failed[0][1]["retry_at"])
        assert abs((retry_at - at).total_seconds() - 2.0) < 0.05  # the cap, not 3600 s (nor the 0.5-1 s backoff)
        revealed_at = next(datetime.fromisoformat(at.replace("Z", "+00:00")) for t, at, _ in rows
                           if t == "grant.revealed")
        assert 1.9 < (revealed_at - at).total_seconds() < 15
        throttled = [c for c in connector.calls_to(REQUESTER.personal_chat) if c.status == 429]
        assert len(throttled) == 1, "an over-long Retry-After is not waited out inside the call"
