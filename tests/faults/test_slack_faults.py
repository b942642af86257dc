"""Delivery and revocation survive kill -9, failing Slack calls, two replicas and a store outage.

Real `jitpass serve` processes on a real SQLite file; faults come from the Slack stand-in (held calls,
HTTP 429/500, stalls past the call timeout) and from SIGKILL. A 1-hour grant is delivered by DM (a
response_url would not outlive it) and ended early with `/access done`; short grants end by the clock.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import aiohttp

from adapters.slack.blocks import Actions
from tests.faults.world import World, is_delivery, world
from tests.support.app import CANARY_PASSWORD
from tests.support.fake_slack import Call

LONG = "acme-zendesk fault drill for 1h"


async def _approved_and_delivered(w: World, server: object) -> str:
    request_id = await w.request(server, LONG)  # type: ignore[arg-type]
    await w.users(server).press(Actions.APPROVE, request_id, "ULEAD1")  # type: ignore[arg-type]
    await w.fake.wait_for(lambda c: is_delivery(c) and c.ok, timeout=15)
    return request_id


def _wiped(w: World) -> bool:
    return not w.secret_messages() and any(c.method == "chat.update" and c.ok and c.args.get("channel") == "DUREQ"
                                           for c in w.fake.calls)


async def test_kill_9_after_slack_took_the_delivery_but_before_its_ts_was_saved(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        # Slack stores the DM, then the answer never comes: jitpass dies not knowing the message's ts.
        held = w.fake.hold_next("chat.postMessage", when=lambda a: a.get("channel") == "DUREQ" and "metadata" in a,
                                after_effect=True)
        async with w.server() as first:
            request_id = await w.request(first, LONG)
            await w.users(first).press(Actions.APPROVE, request_id, "ULEAD1")
            await asyncio.wait_for(held.arrived.wait(), 15)
            first.kill9()
        assert len(w.secret_messages()) == 1  # it reached chat
        async with w.server() as second:
            # The retry finds that message by its metadata and edits it: still exactly one copy.
            await w.until(lambda: "grant.revealed" in w.types(request_id), "delivery recorded after restart")
            assert len(w.secret_messages()) == 1
            assert [c for c in w.fake.calls if c.method == "conversations.history" and c.ok]
            assert len([c for c in w.fake.calls if is_delivery(c)]) == 1, "never posted twice"
            reply = await w.users(second).command(f"done {request_id}", "UREQ")
            assert reply.status == 200
            await w.until(lambda: "grant.wiped" in w.types(request_id), "wipe after done")
        assert _wiped(w)
        assert "ended" in str(w.card()["blocks"]).lower()
        types = w.types(request_id)
        assert types.count("grant.delivery_started") == 2 and types.count("grant.revealed") == 1


async def test_kill_9_after_slack_took_the_card_but_before_its_ts_was_saved_posts_no_second_card(
        tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        held = w.fake.hold_next("chat.postMessage", when=lambda a: a.get("channel") == "CLEADS", after_effect=True)
        async with w.server() as first:
            request_id = await w.request(first, LONG)
            await asyncio.wait_for(held.arrived.wait(), 15)
            first.kill9()
        assert len([m for (c, _), m in w.fake.messages.items() if c == "CLEADS"]) == 1  # it reached chat
        async with w.server() as second:
            # The retry finds the card by its metadata and edits it: still one card, and it works.
            await w.fake.wait_for(lambda c: c.method == "conversations.history" and c.ok
                                  and c.args.get("channel") == "CLEADS", timeout=15)
            await w.fake.wait_for(lambda c: c.method == "chat.update" and c.ok and c.args.get("channel") == "CLEADS",
                                  timeout=15)
            await w.users(second).press(Actions.APPROVE, request_id, "ULEAD1")
            await w.until(lambda: "grant.revealed" in w.types(request_id), "delivered")
            await w.users(second).command(f"done {request_id}", "UREQ")
            await w.until(lambda: "ended" in str(w.card()["blocks"]).lower(), "the one card shows the end")
        posts = [c for c in w.fake.calls if c.method == "chat.postMessage" and c.args.get("channel") == "CLEADS"]
        assert len(posts) == 1, "never posted twice"
        assert w.card()["metadata"] == {"event_type": "jitpass_card", "event_payload": {"request_id": request_id}}


async def test_kill_9_while_the_wipe_is_in_flight_then_the_restart_wipes(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        async with w.server() as first:
            request_id = await _approved_and_delivered(w, first)
            await w.until(lambda: "grant.revealed" in w.types(request_id), "delivered")
            held = w.fake.hold_next("chat.update", when=lambda a: a.get("channel") == "DUREQ")
            await w.users(first).command(f"done {request_id}", "UREQ")
            await asyncio.wait_for(held.arrived.wait(), 15)
            assert w.status(request_id) == "revoked"  # access ended in the store before any chat call
            first.kill9()
        assert len(w.secret_messages()) == 1  # the wipe never happened
        async with w.server():
            await w.until(lambda: "grant.wiped" in w.types(request_id), "wipe after restart")
        assert _wiped(w)
        assert "ended" in str(w.card()["blocks"]).lower()
        assert w.types(request_id).count("grant.revoked") == 1


async def test_429_500_and_timeouts_on_every_kind_of_call_are_retried_and_audited(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        cards = w.fake.hold_next("chat.update", when=lambda a: a.get("channel") == "CLEADS")  # stalls past 1 s
        w.fake.rate_limit_next("chat.postMessage", retry_after=1)  # the card post
        w.fake.status_next("chat.postMessage", 500, when=lambda a: a.get("channel") == "DUREQ")  # the delivery
        w.fake.status_next("conversations.open", 502)  # the first DM channel lookup
        async with w.server() as server:
            request_id = await w.request(server, LONG)
            await w.fake.wait_for(lambda c: c.method == "chat.postMessage" and c.ok and c.args["channel"] == "CLEADS",
                                  timeout=15)
            await w.users(server).press(Actions.APPROVE, request_id, "ULEAD1")
            await w.until(lambda: "grant.revealed" in w.types(request_id), "delivered despite failures")
            assert cards.arrived.is_set()
            w.fake.status_next("chat.update", 500, when=lambda a: a.get("channel") == "DUREQ")  # the wipe
            await w.users(server).command(f"done {request_id}", "UREQ")
            await w.until(lambda: "grant.wiped" in w.types(request_id), "wiped despite a 500")
            await w.until(lambda: "ended" in str(w.card()["blocks"]).lower(), "card shows the end")
        assert _wiped(w) and len([c for c in w.fake.calls if is_delivery(c) and c.ok]) == 1
        events = w.events(request_id)
        failed = [d for t, d in events if t == "grant.delivery_failed"]
        assert failed and failed[0]["attempt"] == 1 and "retry_at" in failed[0]
        wipe_failed = [d for t, d in events if t == "grant.wipe_failed"]
        assert wipe_failed and wipe_failed[0]["error"].startswith("chat.update")
        assert [d["attempt"] for t, d in events if t == "grant.wiped"] == [2]
        posts = [c.status for c in w.fake.calls if c.method == "chat.postMessage" and c.args["channel"] == "CLEADS"]
        assert posts[:2] == [429, 200]
        cards.release()


async def test_two_replicas_on_one_store_carry_out_each_effect_once(tmp_path: Path) -> None:
    async with world(tmp_path) as w, w.server() as one, w.server() as two:
        request_id = await w.request(one, LONG)
        await w.users(two).press(Actions.APPROVE, request_id, "ULEAD1")
        await w.until(lambda: "grant.revealed" in w.types(request_id), "delivered")
        await w.users(two).command(f"done {request_id}", "UREQ")
        await w.until(lambda: "grant.wiped" in w.types(request_id), "wiped")
        await asyncio.sleep(1.0)  # room for a duplicate to show up, were there one
        calls: list[Call] = list(w.fake.calls)
        assert len([c for c in calls if c.method == "chat.postMessage" and c.args["channel"] == "CLEADS"]) == 1
        assert len([c for c in calls if is_delivery(c)]) == 1
        assert len([c for c in calls if c.method == "chat.update" and c.args.get("channel") == "DUREQ"]) == 1
        types = w.types(request_id)
        assert types.count("grant.revealed") == 1 and types.count("grant.wiped") == 1


async def test_a_store_outage_across_the_window_end_shows_nothing_after_it_and_catches_up(tmp_path: Path) -> None:
    async with world(tmp_path) as w, w.server() as server:
        request_id = await w.request(server, "acme-zendesk outage drill for 3s")
        await w.users(server).press(Actions.APPROVE, request_id, "ULEAD1")
        await w.until(lambda: "grant.revealed" in w.types(request_id), "delivered")
        # The store refuses writes (another writer holds the lock) from before the end until after it.
        with closing(sqlite3.connect(w.db, timeout=1, isolation_level=None)) as blocker:
            blocker.execute("BEGIN EXCLUSIVE")
            await asyncio.sleep(4)  # the window ends meanwhile
            press = await w.users(server).press(Actions.NEW_CODE, request_id, "UREQ", channel_id="DUREQ")
            assert press.status == 200
            blocker.execute("ROLLBACK")
        await w.until(lambda: w.status(request_id) == "expired", "expired once the store is back")
        await w.until(lambda: not _ephemeral_secrets(w), "wiped once the store is back")
        events = w.events(request_id)
        expired = next(d for t, d in events if t == "grant.expired")
        assert expired["late_seconds"] > 0  # the lateness is recorded, the end is the window end
        after_end = events[[t for t, _ in events].index("grant.expired"):]
        assert not [t for t, _ in after_end if t in {"grant.revealed", "grant.code_shown"}], "nothing after the end"
        assert CANARY_PASSWORD not in w.log.read_text()


def _ephemeral_secrets(w: World) -> list[str]:
    """response_urls whose message on screen now shows the password."""
    return [name for name, shown in w.fake.ephemeral.items() if shown and CANARY_PASSWORD in json.dumps(shown[-1])]


async def test_permanent_refusals_of_the_card_and_the_delivery_are_final_at_once_and_audited(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.fake.status_next("chat.postMessage", 400, when=lambda a: a.get("channel") == "CLEADS")  # bare HTTP 400
        w.fake.fail_next("chat.postMessage", "channel_not_found",
                         when=lambda a: a.get("channel") == "DUREQ" and "metadata" in a)  # the delivery
        async with w.server() as server:
            request_id = await w.request(server, LONG)
            await w.until(lambda: "chat.effect_failed" in w.types(request_id), "card post failed for good")
            await w.users(server).press(Actions.APPROVE, request_id, "ULEAD1")
            await w.until(lambda: "grant.delivery_failed" in w.types(request_id), "delivery failed for good")
            await w.fake.wait_for(lambda c: c.method == "chat.postMessage" and c.ok and c.args.get("channel") == "DUREQ"
                                  and "could not deliver" in str(c.args.get("text")), timeout=15)
            async with aiohttp.ClientSession() as session, session.get(f"{server.url}/healthz") as reply:
                health = await reply.json()
            assert reply.status == 200 and health["effects"]["failed_deliveries"] == 1
            assert any("could not be delivered" in alert for alert in health.get("alerts", []))
        # Final in the store: no worker will claim them again (a retry is only ever a pending row).
        assert _effect_states(w, request_id)["post_card"] == ["failed"]
        assert _effect_states(w, request_id)["deliver"] == ["failed"]
        events = w.events(request_id)
        card = next(d for t, d in events if t == "chat.effect_failed")
        assert card["kind"] == "post_card" and card["permanent"] and card["final"] and card["attempt"] == 1
        assert card["error"] == "chat.postMessage:http 400"
        delivery = [d for t, d in events if t == "grant.delivery_failed"]
        assert len(delivery) == 1 and delivery[0]["permanent"] and delivery[0]["final"]
        assert delivery[0]["error"] == "chat.postMessage:channel_not_found" and delivery[0]["attempt"] == 1
        assert "grant.revealed" not in w.types(request_id)
        assert len([c for c in w.fake.calls if c.method == "chat.postMessage" and c.args["channel"] == "CLEADS"]) == 1
        assert len([c for c in w.fake.calls if is_delivery(c)]) == 1


async def test_a_wipe_refused_for_good_is_not_retried_and_raises_an_alert_in_healthz(tmp_path: Path) -> None:
    async with world(tmp_path) as w, w.server() as server:
        request_id = await _approved_and_delivered(w, server)
        await w.until(lambda: "grant.revealed" in w.types(request_id), "delivered")
        w.fake.fail_next("chat.update", "invalid_blocks", when=lambda a: a.get("channel") == "DUREQ")
        await w.users(server).command(f"done {request_id}", "UREQ")
        await w.until(lambda: "alert.wipe_exhausted" in w.types(request_id), "the alert")
        assert w.status(request_id) == "revoked"  # access ended regardless
        async with aiohttp.ClientSession() as session, session.get(f"{server.url}/healthz") as reply:
            health = await reply.json()
        assert "could not be wiped" in " ".join(health.get("alerts", []))
        assert _effect_states(w, request_id)["wipe"] == ["failed"]  # final: never claimed again
        events = w.events(request_id)
        failed = [d for t, d in events if t == "grant.wipe_failed"]
        assert len(failed) == 1 and failed[0]["permanent"] and failed[0]["final"] and failed[0]["attempt"] == 1
        assert failed[0]["error"] == "chat.update:invalid_blocks"
        alert = next(d for t, d in events if t == "alert.wipe_exhausted")
        assert alert["error"] == "chat.update:invalid_blocks"
        assert "grant.wiped" not in w.types(request_id)
        assert len([c for c in w.fake.calls if c.method == "chat.update" and c.args.get("channel") == "DUREQ"]) == 1


def _effect_states(w: World, request_id: str) -> dict[str, list[str]]:
    with closing(sqlite3.connect(w.db)) as conn:
        rows = conn.execute("SELECT kind, status FROM effects WHERE request_id = ? ORDER BY seq", (request_id,))
        states: dict[str, list[str]] = {}
        for kind, status in rows:
            states.setdefault(str(kind), []).append(str(status))
        return states
