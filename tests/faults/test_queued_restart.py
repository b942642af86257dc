"""A request acknowledged "⏳ Queued" or "⏳ Working on it…" keeps its promise across kill -9: real
`jitpass serve` processes on a real SQLite file, real signed slash commands, the store held locked by a
second connection so requests wait.

Killed before it was created (waiting for a turn, or running but not committed; acknowledged "queued" or
"working"): the next process records it as refused (`access.refused`, `why=restarted_before_it_ran`) and tells
the user once to send it again; nothing is created. Killed after it was created but before its answer reached
Slack: the next process answers once (a queued one through its durable TELL effect, a working one from the
journal). An answer that was sent is not sent again.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from contextlib import closing
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from adapters.slack.queued import QueuedCommand
from bot.domain import wording
from bot.domain.model import new_request_id
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


def _tells(w: World) -> list[str]:
    with closing(sqlite3.connect(w.db)) as conn:
        return [str(status) for (status,) in conn.execute("SELECT status FROM effects WHERE kind = 'tell'")]


def _requests_of(w: World, user_id: str) -> list[str]:
    with closing(sqlite3.connect(w.db)) as conn:
        rows = conn.execute("SELECT id FROM requests WHERE requester_key = ?", (f"slack:{user_id}",))
        return [str(rid) for (rid,) in rows]


async def test_kill_9_while_requests_wait_for_the_store_records_them_refused_and_tells_each_user_once(
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
        replies = [running, *queued]
        assert (tmp_path / "slack-queued-0.jsonl").stat().st_mode & 0o777 == 0o600
        assert all(w.fake.ephemeral.get(r.response_url, []) == [] for r in replies)  # nobody told yet

        async with w.server():
            await w.until(lambda: len(_refused_not_started(w)) == 3, "every acknowledged request recorded as refused")
            for reply in replies:
                await w.fake.wait_for(lambda c, key=reply.response_url: c.method == "response_url" and c.key == key
                                      and c.ok, timeout=15)
        assert sorted(user for _, user in _refused_not_started(w)) == ["UONE", "UTHREE", "UTWO"]
        for reply in replies:
            assert [m["text"] for m in w.fake.ephemeral[reply.response_url]] == [wording.NOT_STARTED]
        assert _requests_of(w, "UONE") == _requests_of(w, "UTWO") == _requests_of(w, "UTHREE") == []
        assert (tmp_path / "slack-queued-0.jsonl").read_text() == ""  # every promise settled


async def test_kill_9_after_requests_were_created_but_before_their_answers_were_sent_answers_each_once(
        tmp_path: Path) -> None:
    async with world(tmp_path, env=QUEUEING) as w:
        async with w.server() as first:
            users = w.users(first)
            # Both answers (each names its item) reach Slack only after the restart.
            held = [w.fake.hold_next("response_url", when=lambda body, item=item: item in str(body.get("text", "")))
                    for item in ("acme-zendesk", "globex-aws")]
            async with store_locked(w.db):
                running = await users.command(ONE, "UONE")
                queued = await users.command(TWO, "UTWO")
            assert (running.json()["text"], queued.json()["text"]) == (wording.WORKING, wording.QUEUED)
            await asyncio.wait_for(asyncio.gather(*(h.arrived.wait() for h in held)), 15)  # created, answers sent
            first.kill9()
        (working_id,), (queued_id,) = _requests_of(w, "UONE"), _requests_of(w, "UTWO")
        assert w.fake.ephemeral.get(running.response_url, []) == w.fake.ephemeral.get(queued.response_url, []) == []

        async with w.server():
            # The working one is answered at start from the journal; the queued one by its TELL effect once the
            # dead process's lease runs out (JITPASS_EFFECT_LEASE=2).
            for reply in (running, queued):
                await w.fake.wait_for(lambda c, key=reply.response_url: c.method == "response_url" and c.key == key
                                      and c.ok, timeout=20)
        for reply, request_id, item in ((running, working_id, "acme-zendesk"), (queued, queued_id, "globex-aws")):
            (answer,) = w.fake.ephemeral[reply.response_url]
            assert ID.findall(answer["text"]) == [request_id] and item in answer["text"]
        assert _requests_of(w, "UONE") == [working_id] and _requests_of(w, "UTWO") == [queued_id]
        assert _refused_not_started(w) == []


async def test_an_answer_sent_before_the_kill_is_not_sent_again(tmp_path: Path) -> None:
    async with world(tmp_path, env=QUEUEING) as w:
        async with w.server() as first:
            users = w.users(first)
            async with store_locked(w.db):
                running = await users.command(ONE, "UONE")
                queued = await users.command(TWO, "UTWO")
            # Both created and answered, and the answers recorded: the TELL effect done, the journal settled.
            # (Killed between Slack taking an answer and that record, the answer is sent again: at least once.)
            await w.until(lambda: _tells(w) == ["done"] and not (tmp_path / "slack-queued-0.jsonl").read_text(),
                          "both answers sent and recorded")
            first.kill9()
        async with w.server() as second:
            await w.request(second, "globex-aws one more for the road for 1h", "UTHREE")  # the new one serves
        assert [len(w.fake.ephemeral[r.response_url]) for r in (running, queued)] == [1, 1]
        assert _refused_not_started(w) == []


async def test_a_journal_of_a_worker_number_this_run_lacks_is_adopted_by_worker_0(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        # An earlier `serve --workers 4` left worker 3's promise unfinished; this run has one process.
        lost = QueuedCommand(new_request_id(), "UOLD", w.fake.response_url("old-cmd"), "CGENERAL",
                             datetime.now(UTC).isoformat())
        journal = tmp_path / "slack-queued-3.jsonl"
        journal.write_text(json.dumps({"queued": asdict(lost)}) + "\n", encoding="utf-8")
        async with w.server():
            await w.until(lambda: _refused_not_started(w) == [(lost.request_id, "UOLD")], "the adopted one refused")
            await w.fake.wait_for(lambda c: c.method == "response_url" and c.key == "old-cmd" and c.ok, timeout=15)
        assert [m["text"] for m in w.fake.ephemeral["old-cmd"]] == [wording.NOT_STARTED]
        assert journal.read_text() == ""
