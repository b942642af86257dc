"""Two `jitpass serve` replicas on one MongoDB database: the scale-out story of docs/deploy.md, end to end.

Real processes, a real MongoDB wire server (the suite's mongoeco, or JITPASS_TEST_MONGODB_URI), the Slack
stand-in in this process. Requests come in on one replica and are approved on the other; the grants end
by the clock, so both replicas plan the same expiries and both effects workers see the same effect rows.
Each expiry, each delivery and each wipe must happen once, and the one trail both wrote must verify.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from pathlib import Path

import pytest

from adapters.slack.blocks import Actions
from bot.domain.audit import verify_chain
from storage.mongo.store import MongoStore
from tests.faults.world import World, world
from tests.support.app import CANARY_PASSWORD, FakeClock
from tests.support.mongo import new_db_name

pytestmark = pytest.mark.mongodb

REQUESTERS = ("UREQA", "UREQB", "UREQC")


def with_database(uri: str, name: str) -> str:
    """`uri` naming database `name` (its options kept)."""
    base, _, options = uri.partition("?")
    scheme, _, rest = base.partition("://")
    hosts = rest.split("/", 1)[0]
    return f"{scheme}://{hosts}/{name}" + (f"?{options}" if options else "")


def _is_expired(w: World, request_id: str) -> bool:
    return w.status(request_id) == "expired"


def _is_wiped(w: World, request_id: str) -> bool:
    return "grant.wiped" in w.types(request_id)


def _secret_posts(w: World) -> int:
    """Slack calls that carried the password (deliveries: by DM or to a response_url)."""
    return sum(1 for c in w.fake.calls if c.ok and CANARY_PASSWORD in json.dumps(c.args, default=str))


def _is_revealed(w: World, request_id: str) -> bool:
    return "grant.revealed" in w.types(request_id)


@pytest.mark.parametrize("crash", [False, True], ids=["both-live", "one-killed-mid-grant"])
async def test_two_replicas_on_one_mongodb_expire_deliver_and_wipe_each_grant_once(
        tmp_path: Path, mongodb_uri: str, crash: bool) -> None:
    """`one-killed-mid-grant`: after the deliveries, the replica that took the requests is killed -9; the
    other plans the expiries from the store and takes over any effect the dead one had claimed (after its
    lease), so the ends and wipes still happen, once."""
    db_name = new_db_name()
    url = with_database(mongodb_uri, db_name)
    window = "10s" if crash else "4s"  # crash: room for the deliveries before any end, even on a busy machine
    try:
        async with world(tmp_path, store_url=url) as w, w.server() as one, w.server() as two:
            request_ids = []
            for user in REQUESTERS:
                request_ids.append(await w.request(one, f"acme-zendesk replica drill for {window}", user_id=user))
            for request_id in request_ids:
                press = await w.users(two).press(Actions.APPROVE, request_id, "ULEAD1")
                assert press.status == 200, press.text
            if crash:
                for request_id in request_ids:
                    await w.until(functools.partial(_is_revealed, w, request_id), f"{request_id} delivered")
                one.kill9()
                assert not any(_is_expired(w, r) for r in request_ids), "the kill must come before the ends"
            for request_id in request_ids:
                await w.until(functools.partial(_is_expired, w, request_id), f"{request_id} expired", timeout=40)
                await w.until(functools.partial(_is_wiped, w, request_id), f"{request_id} wiped", timeout=40)
            await asyncio.sleep(1.5)  # room for a duplicate (a second replica's expiry or effect) to show up
            for request_id in request_ids:
                counts = Counter(w.types(request_id))
                for once in ("request.created", "request.approved", "grant.activated", "grant.delivery_started",
                             "grant.revealed", "grant.expired", "grant.wiped"):
                    assert counts[once] == 1, (request_id, once, counts)
            assert _secret_posts(w) == len(request_ids)
            assert len([c for c in w.fake.calls
                        if c.ok and c.method == "chat.postMessage" and c.args.get("channel") == "CLEADS"]) == 3
            assert "Traceback" not in w.log.read_text()
        # Both processes are gone: read the one trail they wrote and check it.
        store = MongoStore(url, FakeClock())
        await store.open()
        try:
            events = [event async for event in store.events()]
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert len({e.id for e in events}) == len(events)
            report = await verify_chain(store.events())
            assert report.ok and report.checked == len(events), report
        finally:
            await store.close()
    finally:
        from pymongo import AsyncMongoClient

        admin: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
        await admin.drop_database(db_name)
        await admin.close()
