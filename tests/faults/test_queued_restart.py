"""A request acknowledged "⏳ Queued" keeps its promise across kill -9: real `jitpass serve` processes on a real
SQLite file, real signed slash commands, the store held locked by a second connection so requests wait.

Killed while it waited for a turn: the next process records it as refused (`access.refused`,
`why=restarted_before_it_ran`) and tells the user once to send it again; nothing is created.
Killed after it was created but before its answer reached Slack: the answer is a durable TELL effect, sent once
by the next process.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path

from bot.domain import wording
from tests.e2e.test_admission import store_locked
from tests.faults.world import World, world

ONE = "acme-zendesk fix broken trigger for 1h"
TWO = "globex-aws rotate the billing alarm for 1h"
# One request at a time, the rest queued; a short budget so the running one says "working" quickly.
QUEUEING = {"JITPASS_MAX_RUNNING": "1", "JITPASS_MAX_QUEUED": "4", "JITPASS_ACK_BUDGET": "0.3"}
ID = re.compile(r"R-[0-9A-Z]{8}")


def _refused_not_started(w: World) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(w.db)) as conn:
        rows = conn.execute("SELECT request_id, actor, details FROM events WHERE type = 'access.refused' ORDER BY seq")
        return [(str(rid), json.loads(actor)["user_id"]) for rid, actor, details in rows
                if json.loads(details).get("why") == "restarted_before_it_ran"]


def _requests_of(w: World, user_id: str) -> list[str]:
    with closing(sqlite3.connect(w.db)) as conn:
        rows = conn.execute("SELECT id FROM requests WHERE requester_key = ?", (f"slack:{user_id}",))
        return [str(rid) for (rid,) in rows]


async def test_kill_9_while_requests_wait_in_the_queue_records_them_refused_and_tells_each_user_once(
        tmp_path: Path) -> None:
    async with world(tmp_path, env=QUEUEING) as w:
        async with w.server() as first:
            users = w.users(first)
            async with store_locked(w.db):
                running = await users.command(ONE, "UONE")  # has the turn, waits for the store
                queued = await asyncio.gather(*(users.command(ONE, user) for user in ("UTWO", "UTHREE")))
                assert running.json()["text"] == wording.WORKING
                assert [r.json()["text"] for r in queued] == [wording.QUEUED] * 2
                first.kill9()
                await first.process.wait()
        assert (tmp_path / "slack-queued-0.jsonl").stat().st_mode & 0o777 == 0o600
        assert all(w.fake.ephemeral.get(r.response_url, []) == [] for r in queued)  # nobody told yet

        async with w.server():
            await w.until(lambda: len(_refused_not_started(w)) == 2, "both queued requests recorded as refused")
            for reply in queued:
                await w.fake.wait_for(lambda c, key=reply.response_url: c.method == "response_url" and c.key == key
                                      and c.ok, timeout=15)
        assert sorted(user for _, user in _refused_not_started(w)) == ["UTHREE", "UTWO"]
        for reply in queued:
            assert [m["text"] for m in w.fake.ephemeral[reply.response_url]] == [wording.NOT_STARTED]
        assert _requests_of(w, "UTWO") == _requests_of(w, "UTHREE") == []  # nothing was created
        assert (tmp_path / "slack-queued-0.jsonl").read_text() == ""  # every promise settled


async def test_kill_9_after_a_queued_request_was_created_but_before_its_answer_was_sent_answers_once(
        tmp_path: Path) -> None:
    async with world(tmp_path, env=QUEUEING) as w:
        async with w.server() as first:
            users = w.users(first)
            # The answer to the queued request (it names its item) reaches Slack only after the restart.
            held = w.fake.hold_next("response_url", when=lambda body: "globex-aws" in str(body.get("text", "")))
            async with store_locked(w.db):
                running = await users.command(ONE, "UONE")
                queued = await users.command(TWO, "UTWO")
            assert (running.json()["text"], queued.json()["text"]) == (wording.WORKING, wording.QUEUED)
            await asyncio.wait_for(held.arrived.wait(), 15)  # created, its answer on the way
            first.kill9()
        (request_id,) = _requests_of(w, "UTWO")
        assert w.fake.ephemeral.get(queued.response_url, []) == []

        async with w.server():
            # The TELL effect's lease runs out (JITPASS_EFFECT_LEASE=2) and the new process sends it.
            await w.fake.wait_for(lambda c: c.method == "response_url" and c.key == queued.response_url and c.ok,
                                  timeout=20)
        (answer,) = w.fake.ephemeral[queued.response_url]
        assert ID.findall(answer["text"]) == [request_id] and "globex-aws" in answer["text"]
        assert _requests_of(w, "UTWO") == [request_id] and _refused_not_started(w) == []
