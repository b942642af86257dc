"""`jitpass serve --workers 2`: two real server processes on one port (SO_REUSEPORT) and one SQLite file.

50 real signed slash commands from 50 people at once: each acknowledged within Slack's 3 s, each person with
exactly one request, each request with exactly one approval card, each answer (in the ack or followed up)
given once, and the kernel spread the requests over both workers (their /healthz says how many each took).
A worker killed -9 is started again under its number; workers stop when their supervisor is killed -9.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import aiohttp

from bot.domain import wording
from bot.domain.admission import SLACK_ACK_SECONDS
from tests.faults.world import ROOT, World, free_port, world
from tests.support.fake_slack import SlackUsers

REQUEST = "acme-zendesk fix broken trigger for 1h"
ID = re.compile(r"R-[0-9A-Z]{8}")
PEOPLE = 50


@asynccontextmanager
async def serving(w: World, *args: str) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """`jitpass serve ARGS` until it says it is listening; stopped with SIGTERM (killed if it lingers)."""
    port = free_port()
    with w.log.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "--port", str(port), *args, cwd=ROOT, env=w.env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log_file)
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
            assert b"listening" in line, (line, w.log.read_text()[-3000:])
            yield f"http://127.0.0.1:{port}", process
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def _health_of_each_worker(url: str, workers: int, tries: int = 200) -> dict[int, dict[str, Any]]:
    """/healthz on fresh connections until every worker has answered once (at most `tries` asks)."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(tries):
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
            body = await response.json()
        seen[body["worker"]["index"]] = body
        if len(seen) == workers:
            break
    return seen


def _ids_in(messages: list[dict[str, Any]]) -> list[str]:
    return [found for m in messages for found in ID.findall(json.dumps([m.get("text"), m.get("blocks")]))]


async def test_two_workers_answer_50_people_at_once_in_budget_with_one_request_card_and_answer_each(
        tmp_path: Path) -> None:
    async with world(tmp_path) as w, serving(w, "--workers", "2") as (url, supervisor):
        users = SlackUsers(w.fake, url)
        people = [f"UW{n:03d}" for n in range(PEOPLE)]
        replies = await asyncio.gather(*(users.command(REQUEST, person) for person in people))
        assert all(r.status == 200 and r.elapsed < SLACK_ACK_SECONDS for r in replies), \
            sorted(r.elapsed for r in replies)[-5:]

        def told(reply: Any) -> list[str]:
            return ID.findall(reply.json()["text"]) + _ids_in(w.fake.ephemeral.get(reply.response_url, []))

        waiting = [r for r in replies if r.json()["text"] in (wording.QUEUED, wording.WORKING)]
        await w.until(lambda: all(told(r) for r in waiting), "every queued or working request answered")
        def cards() -> list[dict[str, Any]]:
            return [m for (channel, _), m in w.fake.messages.items() if channel == "CLEADS"]

        await w.until(lambda: len(cards()) >= PEOPLE, "every card posted")

        requests = {person: _requests_of(w, person) for person in people}
        assert all(len(ids) == 1 for ids in requests.values()), requests  # exactly one request each
        for person, reply in zip(people, replies, strict=True):
            assert told(reply) == requests[person], person  # the answer, once, naming that request
        card_ids = Counter(found for card in cards() for found in set(_ids_in([card])))
        assert card_ids == Counter(ids[0] for ids in requests.values())  # one card per request, none twice

        health = await _health_of_each_worker(url, 2)
        assert sorted(health) == [0, 1] and len({h["worker"]["pid"] for h in health.values()}) == 2
        taken = {index: h["platforms"]["slack"]["admission"]["total"] for index, h in health.items()}
        assert sum(taken.values()) == PEOPLE and all(taken.values()), taken  # both workers served some
        assert supervisor.returncode is None


def _requests_of(w: World, user_id: str) -> list[str]:
    with closing(sqlite3.connect(w.db)) as conn:
        rows = conn.execute("SELECT id FROM requests WHERE requester_key = ?", (f"slack:{user_id}",))
        return [str(rid) for (rid,) in rows]


def _stopped(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet (it ran its last instruction either way)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


async def test_a_killed_worker_is_started_again_and_workers_stop_when_the_supervisor_is_killed(
        tmp_path: Path) -> None:
    metrics_port = free_port()  # one listener of its own: worker 0's (worker 1 would find the port taken)
    async with world(tmp_path, env={"JITPASS_METRICS_PORT": str(metrics_port)}) as w, \
            serving(w, "--workers", "2") as (url, supervisor):
        before = {index: h["worker"]["pid"] for index, h in (await _health_of_each_worker(url, 2)).items()}
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{metrics_port}/metrics") as scrape:
            assert scrape.status == 200 and "jitpass_" in await scrape.text()
        os.kill(before[1], signal.SIGKILL)
        await w.until(lambda: _stopped(before[1]), "worker 1 killed")
        after: dict[int, int] = {}

        async def restarted() -> None:
            for _ in range(100):  # bounded: the supervisor waits 1 s, then the worker starts (a few seconds)
                found = await _health_of_each_worker(url, 2, tries=10)
                after.update({i: h["worker"]["pid"] for i, h in found.items()})
                if after.get(1) not in (None, before[1]):
                    return
                await asyncio.sleep(0.2)

        await restarted()
        assert after[0] == before[0] and after[1] != before[1], (before, after)
        assert "event=worker_died worker=1" in w.log.read_text()
        reply = await SlackUsers(w.fake, url).command(REQUEST, "UAFTER")
        assert reply.status == 200 and (ID.search(reply.text) or wording.WORKING in reply.text)

        supervisor.kill()  # SIGKILL: no clean-up; its workers see their stdin pipe close and stop
        await supervisor.wait()
        await w.until(lambda: all(_stopped(pid) for pid in after.values()), "workers stopped after the supervisor")
