"""A MongoDB outage across a window end: the store's port is closed (every connection reset, new ones
refused) while a grant is live and an effect is in flight, and opened again after the window ended.

Real `jitpass serve` on the MongoStore, the suite's MongoDB server behind a TCP pass-through in this process
(tests/support/tcp_proxy.py: mongoeco keeps its data in memory, so the outage is of the port, not of the
process), the Slack stand-in in this process. While the store is down `/healthz` says degraded (503) and
nothing is revealed (a reveal needs its audit event first); once it is back the grant is recorded as
expired at its window end (with the lateness), the effect that was in flight is carried out again and the
wipe happens.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.slack.blocks import Actions
from storage.codec import time_from_doc
from tests.faults.world import World, world
from tests.support.app import CANARY_PASSWORD
from tests.support.mongo import new_db_name
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.mongodb


LONG = "acme-zendesk fault drill for 1h"


def _one_host(uri: str) -> tuple[str, int]:
    """The single host:port of a MongoDB URI (a replica set's several cannot sit behind one port)."""
    hosts = uri.split("://", 1)[1].split("/", 1)[0].split("@")[-1]
    if "," in hosts:
        pytest.fail("the outage test needs a single-host MongoDB URI (mongoeco, or one mongod)", pytrace=False)
    host, _, port = hosts.rpartition(":")
    return host, int(port or 27017)


async def _health(url: str) -> tuple[int, dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(f"{url}/healthz") as reply:
        return reply.status, await reply.json()


def _ephemeral_secrets(w: World) -> list[str]:
    """response_urls whose message on screen now shows the password."""
    return [name for name, shown in w.fake.ephemeral.items() if shown and CANARY_PASSWORD in json.dumps(shown[-1])]


def _secret_calls(w: World) -> int:
    """Slack calls that carried the password and that Slack took."""
    return sum(1 for c in w.fake.calls if c.ok and CANARY_PASSWORD in json.dumps(c.args, default=str))


def _effect_states(w: World, request_id: str) -> list[tuple[str, str]]:
    with w._mongo() as db:
        return [(str(d["kind"]), str(d["status"])) for d in db["effects"].find({"request_id": request_id}).sort("_id")]


def _card_of(w: World, request_id: str) -> dict[str, Any]:
    (card,) = [m for (c, _), m in w.fake.messages.items() if c == "CLEADS" and request_id in json.dumps(m)]
    return card


def _ends_at(w: World, request_id: str) -> datetime:
    with w._mongo() as db:
        found = db["requests"].find_one({"_id": request_id}, {"ends_at": 1})
    assert found is not None
    ends = time_from_doc(found["ends_at"])
    assert ends is not None
    return ends


async def test_a_mongodb_outage_across_the_window_end_reveals_nothing_unaudited_and_catches_up(
        tmp_path: Path, mongodb_uri: str) -> None:
    proxy = await TcpProxy(*_one_host(mongodb_uri)).start()
    db_name = new_db_name("jitpass_outage")
    direct = mongodb_uri.replace("/?", f"/{db_name}?", 1) if "/?" in mongodb_uri else f"{mongodb_uri}/{db_name}"
    try:
        async with world(tmp_path, store_url=f"mongodb://127.0.0.1:{proxy.port}/{db_name}?directConnection=true") \
                as w, w.server() as server:
            w.mongodb_url = direct  # the test reads the store around the cut port
            # Grant A (1 h) is ended early with its wipe held at Slack: in flight when the store goes.
            # Grant B (10 s) ends by the clock while the store is down.
            ended_early = await w.request(server, LONG, "UREQ2")
            await w.users(server).press(Actions.APPROVE, ended_early, "ULEAD1")
            request_id = await w.request(server, "acme-zendesk outage drill for 10s")
            await w.users(server).press(Actions.APPROVE, request_id, "ULEAD1")
            await w.until(lambda: "grant.revealed" in w.types(request_id), "B delivered")
            await w.until(lambda: "grant.revealed" in w.types(ended_early), "A delivered")
            assert len(w.secret_messages("DUREQ2")) == 1
            wipe = w.fake.hold_next("chat.update", when=lambda a: a.get("channel") == "DUREQ2")
            assert (await w.users(server).command(f"done {ended_early}", "UREQ2")).status == 200
            await asyncio.wait_for(wipe.arrived.wait(), 15)
            ends_at = _ends_at(w, request_id)
            await proxy.cut()
            assert datetime.now(UTC) < ends_at, "the outage must begin before the window ends"
            wipe.release()  # Slack wipes A's DM and answers; the worker cannot record it

            status, health = await _health(server.url)
            assert status == 503 and health["status"] == "degraded" and health["store"]["writable"] is False
            assert "mongodb://" not in health["store"]["error"]
            while datetime.now(UTC) < ends_at:  # the real clock: the server runs in its own process
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)
            # A new code asked for after the end, the store down: an apology, nothing shown.
            press = await w.users(server).press(Actions.NEW_CODE, request_id, "UREQ", channel_id="DUREQ")
            assert press.status == 200
            assert CANARY_PASSWORD not in press.text
            assert _secret_calls(w) == 2
            await asyncio.sleep(1.0)  # the outage lasts past the end by a margin
            restored = time.monotonic()

            await proxy.restore()  # the same port: the store is back
            await w.until(lambda: w.status(request_id) == "expired", "expired once the store is back", timeout=40)
            await w.until(lambda: "grant.wiped" in w.types(request_id), "wiped once the store is back", timeout=40)
            await w.until(lambda: "grant.wiped" in w.types(ended_early), "A's wipe carried out again", timeout=40)
            await w.until(lambda: all(s != "pending" for r in (request_id, ended_early)
                                      for _, s in _effect_states(w, r)), "every effect carried out", timeout=40)
            status, health = await _health(server.url)
            assert status == 200 and health["status"] == "ok"
            assert time.monotonic() - restored < 60
    finally:
        await proxy.stop()

    events = w.events(request_id)
    types = [t for t, _ in events]
    expired = next(d for t, d in events if t == "grant.expired")
    assert expired["late_seconds"] > 0  # recorded late, against the window end
    after_end = types[types.index("grant.expired"):]
    assert not {"grant.revealed", "grant.code_shown"} & set(after_end), "nothing revealed after the end"
    # Every time the password left for Slack there is its audit event: one delivery, one reveal each.
    assert types.count("grant.revealed") == 1 and w.types(ended_early).count("grant.revealed") == 1
    assert _secret_calls(w) == 2
    assert types.count("grant.expired") == 1 and types.count("grant.wiped") == 1
    assert not _ephemeral_secrets(w) and not w.secret_messages("DUREQ2")
    assert "expired" in str(_card_of(w, request_id)["blocks"]).lower()
    # A's wipe, in flight at the outage, was carried out again after it (its lease ran out): recorded once,
    # on a later attempt, the first attempt's outcome lost with the store. (How many claims fall around the
    # cut is timing: the effects loop may claim once more before the store goes away.)
    a_events = w.events(ended_early)
    wiped = [d["attempt"] for t, d in a_events if t == "grant.wiped"]
    assert len(wiped) == 1 and wiped[0] >= 2, wiped
    assert ("wipe", "done") in _effect_states(w, ended_early)
    assert CANARY_PASSWORD not in w.log.read_text()
