"""Admission control under a flood: real signed Slack slash commands against a real server whose SQLite
store is held locked by a second connection (a real slowdown at the store's boundary, nothing patched).

The contract checked: every acknowledgement within Slack's 3 s (the budget is a parameter, small here),
every admitted request told its outcome through its response_url, every refused one never created.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.teams import TeamsAdapter
from adapters.teams.agent import ERROR_CONTENT_TYPE, MESSAGE_CONTENT_TYPE
from adapters.teams.cards import INPUT_ITEM, INPUT_REASON, INPUT_WINDOW, VERB_SUBMIT_REQUEST
from bot.domain import wording
from bot.domain.admission import SLACK_ACK_SECONDS, Admission, deadline
from bot.domain.model import Identity
from tests.support.app import running_app, test_settings
from tests.support.fake_connector import FakeConnector, TeamsUser, invoke_activity, message_activity, post_activity
from tests.support.fake_slack import RESPONSE_URL_LIFETIME, RESPONSE_URL_MAX_USES, fake_slack, slack_harness

REQUEST = "acme-zendesk fix broken trigger for 1h"
ID = re.compile(r"R-[0-9A-Z]{8}")


@asynccontextmanager
async def store_locked(db: Path) -> AsyncIterator[None]:
    """A second connection holds SQLite's write lock: every write of the server waits behind it. Taken in a
    thread, so a write the server is finishing (on this event loop) can commit first."""
    blocker = sqlite3.connect(db, timeout=10, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")
        yield
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()


async def test_a_flood_against_a_locked_store_is_acked_in_budget_and_told_or_refused_with_nothing_created(
        tmp_path: Path) -> None:
    async with slack_harness(tmp_path, max_running=2, max_queued=3, ack_budget=0.3) as slack:
        users = [f"UFLOOD{n:02d}" for n in range(10)]
        async with store_locked(tmp_path / "jitpass.db"):
            replies = await asyncio.gather(*(slack.users.command(REQUEST, user) for user in users))
        await slack.settle()

        assert all(r.status == 200 and r.elapsed < SLACK_ACK_SECONDS for r in replies), replies
        texts = [r.json()["text"] for r in replies]
        # Two ran until the budget ended, three waited for a turn (told "queued" after the short turn wait),
        # five were refused.
        assert sorted(texts) == sorted([wording.WORKING] * 2 + [wording.QUEUED] * 3 + [wording.BUSY] * 5)
        for user, reply in zip(users, replies, strict=True):
            created = await slack.runtime.service.my_requests(Identity("slack", user))
            shown = slack.fake.ephemeral.get(reply.response_url, [])
            if reply.json()["text"] == wording.BUSY:
                assert created == [] and shown == [], user  # refused: nothing recorded, nothing followed
                continue
            (request,) = created
            (follow_up,) = shown  # the outcome, once, through the command's response_url
            assert ID.findall(follow_up["text"]) == [request.id]
        assert slack.adapter.admission.describe() | {"refused": 5, "admitted": 0} == \
            slack.adapter.admission.describe()


async def test_help_is_answered_at_once_even_when_the_queue_is_full(tmp_path: Path) -> None:
    async with slack_harness(tmp_path, max_running=1, max_queued=0, ack_budget=0.2) as slack:
        async with store_locked(tmp_path / "jitpass.db"):
            one, two, helped = await asyncio.gather(slack.users.command(REQUEST, "UONE"),
                                                    slack.users.command(REQUEST, "UTWO"),
                                                    slack.users.command("help", "UTHREE"))
        await slack.settle()
        # One turn, no queue: whichever came first ran, the other was refused; help needs no turn.
        assert {one.json()["text"], two.json()["text"]} == {wording.WORKING, wording.BUSY}
        assert "/access" in helped.json()["text"] and helped.json()["text"] not in (wording.BUSY, wording.QUEUED)


def test_the_deadline_counts_from_arrival_and_from_the_senders_timestamp() -> None:
    assert deadline(100.0, 2.0) == 102.0
    # Slack stamped it 1.5 s before now (whole seconds: up to 1 s early): 0.5 s was spent before arrival.
    assert deadline(100.0, 2.0, sent_at=1000, now_wall=1001.5) == 101.5
    assert deadline(100.0, 2.0, sent_at=1000, now_wall=1010.0) == 100.0  # already late: acknowledge at once


async def test_admission_refuses_beyond_running_plus_queued_and_gives_places_back() -> None:
    admission = Admission(1, 1)
    first, second = admission.admit(), admission.admit()
    assert first is not None and not first.queued and second is not None and second.queued
    assert admission.admit() is None
    assert await first.run(asyncio.sleep(0, "done"), dropped="dropped") == "done"
    assert admission.admit() is not None and admission.describe()["refused"] == 1


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait (bounded) until `condition` holds, looking every 5 ms."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not condition():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.005)


async def test_a_request_that_gets_its_turn_within_the_turn_wait_is_answered_in_the_ack_not_queued(
        tmp_path: Path) -> None:
    # One turn. The first request holds it, waiting on a locked store; the second finds no turn free. The
    # lock goes as soon as both are admitted: the first commits, the second gets its turn well within the
    # turn wait (a share of the 2 s budget) and is answered with its outcome, no "queued", no follow-up.
    async with slack_harness(tmp_path, max_running=1, max_queued=4, ack_budget=2.0) as slack:
        admission = slack.adapter.admission
        async with store_locked(tmp_path / "jitpass.db"):
            first = asyncio.ensure_future(slack.users.command(REQUEST, "UFIRST"))
            await until(lambda: admission.admitted == 1)
            second = asyncio.ensure_future(slack.users.command("globex-aws check billing for 1h", "USECOND"))
            await until(lambda: admission.admitted == 2)
        replies = await asyncio.gather(first, second)
        await slack.settle()
        for user, reply in zip(("UFIRST", "USECOND"), replies, strict=True):
            (request,) = await slack.runtime.service.my_requests(Identity("slack", user))
            assert reply.status == 200 and ID.findall(reply.json()["text"]) == [request.id], reply
            assert slack.fake.ephemeral.get(reply.response_url, []) == [], user  # nothing followed up
        assert not (tmp_path / "slack-queued-0.jsonl").exists()  # opened at its first line: no promise made
        assert admission.describe()["admitted"] == 0


async def test_a_ticket_dropped_before_its_turn_never_runs_its_work_and_gives_its_place_back() -> None:
    admission = Admission(1, 1)
    first, second = admission.admit(), admission.admit()
    assert first is not None and second is not None
    gate, ran = asyncio.Event(), []

    async def work(name: str) -> str:
        if name == "first":
            await gate.wait()
        ran.append(name)
        return name

    loop = asyncio.get_running_loop()
    holding = asyncio.ensure_future(first.run(work("first"), dropped="-"))
    waiting = asyncio.ensure_future(second.run(work("second"), dropped="dropped"))
    assert not await second.wait(waiting, deadline=loop.time() + 1.0, budget=0.08)  # a turn wait of 10 ms
    assert second.told_queued and not second.started
    second.drop()
    gate.set()
    assert (await holding, await waiting) == ("first", "dropped")
    assert ran == ["first"] and admission.describe()["admitted"] == 0
    with pytest.raises(RuntimeError):
        first.drop()  # it ran: too late to drop


async def test_the_slack_stand_in_refuses_a_response_url_used_5_times_or_older_than_30_minutes() -> None:
    async with fake_slack() as fake, aiohttp.ClientSession() as session:
        now = [0.0]
        fake.now = lambda: now[0]
        fresh, old = fake.response_url("fresh"), fake.response_url("old")
        statuses = []
        for _ in range(RESPONSE_URL_MAX_USES + 1):
            async with session.post(fresh, json={"text": "hi"}) as response:
                statuses.append(response.status)
        assert statuses == [200] * RESPONSE_URL_MAX_USES + [404]
        now[0] = RESPONSE_URL_LIFETIME + 1
        async with session.post(old, json={"text": "hi"}) as response:
            assert (response.status, await response.text()) == (404, "expired_url")
        async with session.post(fake.response_url("never-issued").replace("never-issued", "made-up"),
                                json={"text": "hi"}) as response:
            assert response.status == 404


# -- Teams: Action.Execute invokes answered within the budget, messages told "queued" or "busy" ------------------


async def test_a_flood_of_teams_requests_against_a_locked_store_is_answered_in_budget_or_refused(
        tmp_path: Path, connector: FakeConnector) -> None:
    settings = test_settings(tmp_path, max_running=2, max_queued=3, ack_budget=0.3)
    async with running_app(tmp_path, settings=settings) as running:
        people = [TeamsUser(f"flood-oid-{n:02d}", f"Flood {n}") for n in range(10)]
        data = {INPUT_ITEM: "acme-zendesk", INPUT_REASON: "fix broken trigger", INPUT_WINDOW: "1h"}

        async def press(person: TeamsUser) -> tuple[float, int, Any]:
            started = time.monotonic()
            activity = invoke_activity(connector.url, person, VERB_SUBMIT_REQUEST, data,
                                       conversation_id=person.personal_chat)
            status, body = await post_activity(running.base_url, activity)
            return time.monotonic() - started, status, body

        async with store_locked(tmp_path / "jitpass.db"):
            answers = await asyncio.gather(*(press(person) for person in people))
        assert all(elapsed < SLACK_ACK_SECONDS and status == 200 for elapsed, status, _ in answers), answers
        kinds = sorted(body["value"] if body["type"] == MESSAGE_CONTENT_TYPE else body["value"]["code"]
                       for _, _, body in answers)
        assert kinds == sorted([wording.WORKING] * 2 + [wording.QUEUED] * 3 + ["Busy"] * 5)
        for person, (_, _, body) in zip(people, answers, strict=True):
            identity = Identity("teams", person.aad_object_id)
            for _ in range(200):  # bounded: the admitted ones finish once the lock is gone
                created = await running.runtime.service.my_requests(identity)
                if created or body["type"] != MESSAGE_CONTENT_TYPE:
                    break
                await asyncio.sleep(0.05)
            assert len(created) == (0 if body["type"] == ERROR_CONTENT_TYPE else 1), person


async def test_a_teams_card_action_that_gets_its_turn_within_the_turn_wait_is_answered_with_its_outcome(
        tmp_path: Path, connector: FakeConnector) -> None:
    # As for Slack: one turn, held by the first submission on a locked store; the lock goes once the second is
    # admitted; both invoke responses carry the request itself, neither says "queued".
    settings = test_settings(tmp_path, max_running=1, max_queued=4, ack_budget=2.0)
    teams = TeamsAdapter(settings)
    async with running_app(tmp_path, settings=settings, adapters=[teams]) as running:
        data = {INPUT_ITEM: "acme-zendesk", INPUT_REASON: "fix broken trigger", INPUT_WINDOW: "1h"}
        people = [TeamsUser(f"turn-oid-{n}", f"Turn {n}") for n in range(2)]

        def submit(person: TeamsUser) -> asyncio.Future[tuple[int, Any]]:
            return asyncio.ensure_future(post_activity(running.base_url, invoke_activity(
                connector.url, person, VERB_SUBMIT_REQUEST, data, conversation_id=person.personal_chat)))

        async with store_locked(tmp_path / "jitpass.db"):
            first = submit(people[0])
            await until(lambda: teams.admission.admitted == 1)
            second = submit(people[1])
            await until(lambda: teams.admission.admitted == 2)
        for person, (status, body) in zip(people, await asyncio.gather(first, second), strict=True):
            (request,) = await running.runtime.service.my_requests(Identity("teams", person.aad_object_id))
            assert status == 200 and body["type"] != ERROR_CONTENT_TYPE, body
            assert wording.QUEUED not in str(body) and wording.WORKING not in str(body), body
            assert request.id in str(body), body


async def test_teams_messages_beyond_the_bound_are_told_busy_and_create_nothing(
        tmp_path: Path, connector: FakeConnector) -> None:
    settings = test_settings(tmp_path, max_running=1, max_queued=1, ack_budget=0.3)
    async with running_app(tmp_path, settings=settings) as running:
        people = [TeamsUser(f"msg-oid-{n}", f"Msg {n}") for n in range(4)]
        async with store_locked(tmp_path / "jitpass.db"):
            sends = [asyncio.ensure_future(post_activity(running.base_url, message_activity(
                connector.url, person, "access acme-zendesk fix broken trigger for 1h"))) for person in people]
            # One runs, one is told "queued", two are told "busy", all before the store takes a write.
            said = await connector.wait_for(lambda c: wording.QUEUED in c.text)
            await connector.wait_for(lambda c: sum(wording.BUSY in k.text for k in connector.calls) == 2)
        assert all(status == 202 for status, _ in await asyncio.gather(*sends))
        await running.runtime.effects.drain()
        told_busy = {c.conversation_id for c in connector.calls if wording.BUSY in c.text}
        assert len(told_busy) == 2 and said.conversation_id not in told_busy
        for person in people:
            created = await running.runtime.service.my_requests(Identity("teams", person.aad_object_id))
            assert len(created) == (0 if person.personal_chat in told_busy else 1), person


async def test_a_queued_promise_that_cannot_be_journaled_is_refused_busy_and_never_created(tmp_path: Path) -> None:
    async with slack_harness(tmp_path, max_running=1, max_queued=2, ack_budget=0.3) as slack:
        # The journal (opened at its first line) finds a directory at its path: every write fails with a
        # real OSError from the file system.
        (tmp_path / "slack-queued-0.jsonl").mkdir()
        admission = slack.adapter.admission
        async with store_locked(tmp_path / "jitpass.db"):
            first = asyncio.ensure_future(slack.users.command(REQUEST, "UFIRST"))
            await until(lambda: admission.admitted == 1)
            second = await slack.users.command("globex-aws check billing for 1h", "USECOND")
            # The running one says "working" whatever the journal does; the queued one cannot promise.
            assert second.json()["text"] == wording.BUSY
            assert (await first).json()["text"] == wording.WORKING
        await slack.settle()
        await until(lambda: admission.describe()["admitted"] == 0)
        assert await slack.runtime.service.my_requests(Identity("slack", "USECOND")) == []
        assert slack.fake.ephemeral.get(second.response_url, []) == []
        (request,) = await slack.runtime.service.my_requests(Identity("slack", "UFIRST"))
        (follow_up,) = slack.fake.ephemeral[(await first).response_url]
        assert ID.findall(follow_up["text"]) == [request.id]
