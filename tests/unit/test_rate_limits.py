"""Rate limits per person: requests (approval cards), New code, reports; the first refusal of a burst audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.bootstrap import Runtime, open_runtime
from bot.domain.config import parse_policy
from bot.domain.errors import NotAllowed, PolicyError
from bot.domain.model import SYSTEM, Identity
from bot.domain.policy import RateLimit, RateLimits
from bot.reports.chat import chat_report
from tests.support.app import TEST_POLICY, FakeClock, canary_items, test_settings

LIMITS = """
[rate_limits]
requests = "3/1h"
codes = "5/10m"
reports = "2/1h"

[people.alice]
slack = "UALICE"
teams = "alice-oid"
"""
ALICE = Identity("slack", "UALICE", "alice")
ALICE_TEAMS = Identity("teams", "alice-oid", "alice")
LEAD = Identity("slack", "ULEAD1", "lead")
ADMIN = Identity("slack", "UADMIN", "admin")


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    clock = FakeClock()
    rt = await open_runtime(test_settings(tmp_path), clock=clock, policy=parse_policy(TEST_POLICY + LIMITS))
    await rt.catalog.add(canary_items(), SYSTEM, source="test")
    try:
        yield rt
    finally:
        await rt.store.close()


async def refusals(runtime: Runtime) -> list[str]:
    return [e.reason async for e in runtime.store.events() if e.type == "access.refused"]


async def burst_summaries(runtime: Runtime) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.actor.key if e.actor else "", e.reason, e.details) async for e in runtime.store.events()
            if e.type == "access.refused_burst"]


async def test_a_burst_of_requests_posts_at_most_the_limit_of_cards(runtime: Runtime) -> None:
    for _ in range(3):  # request, cancel, request again: each one is a card for the leads
        request = await runtime.service.request_access(ALICE, "acme-zendesk fix broken trigger for 1h")
        await runtime.service.cancel(request.id, ALICE)
    for who in (ALICE, ALICE_TEAMS, ALICE):  # the person's other account shares the budget
        with pytest.raises(NotAllowed, match=r"Too many requests \(3 per 1h allowed\)"):
            await runtime.service.request_access(who, "acme-zendesk fix broken trigger for 1h")
    created = [e async for e in runtime.store.events() if e.type == "request.created"]
    assert len(created) == 3
    assert await refusals(runtime) == ["rate limit: requests (3 per 1h)"]  # audited once per burst
    # Someone else is not affected; and after the window the person may ask again.
    await runtime.service.request_access(Identity("slack", "UBOB", "bob"), "acme-zendesk fix broken trigger for 1h")
    assert await burst_summaries(runtime) == [], "the burst has not ended yet"
    runtime.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    await runtime.service.request_access(ALICE, "acme-zendesk fix broken trigger for 1h")
    # The burst ended with the next allowed request: its volume is in the trail, once, by the first account.
    [(actor, reason, details)] = await burst_summaries(runtime)
    assert (actor, reason, details["refused"], details["not_audited_one_by_one"]) == (
        "slack:UALICE", "rate limit: requests (3 per 1h)", 3, 2)


async def test_new_code_presses_are_limited_and_the_refusal_audited(runtime: Runtime) -> None:
    request = await runtime.service.request_access(ALICE, "acme-zendesk fix broken trigger for 1h")
    await runtime.service.approve(request.id, LEAD)
    for _ in range(5):
        await runtime.service.new_code(request.id, ALICE)
    for _ in range(20):
        with pytest.raises(NotAllowed, match="Too many codes"):
            await runtime.service.new_code(request.id, ALICE)
    shown = [e async for e in runtime.store.events() if e.type == "grant.code_shown"]
    assert len(shown) == 5
    assert await refusals(runtime) == ["rate limit: codes (5 per 10m)"]


async def test_chat_reports_are_limited(runtime: Runtime) -> None:
    for _ in range(2):
        await chat_report(runtime.service, ADMIN, "7d")
    with pytest.raises(NotAllowed, match="Too many reports"):
        await chat_report(runtime.service, ADMIN, "7d")
    assert await refusals(runtime) == ["rate limit: reports (2 per 1h)"]


def test_rate_limits_have_defaults_and_are_checked_in_the_policy() -> None:
    assert parse_policy(TEST_POLICY).rate_limits == RateLimits()
    assert RateLimits().requests == RateLimit(10, timedelta(hours=1))
    for bad in ('requests = "lots"', 'codes = "0/1m"', "reports = 5", 'pages = "1/1h"'):
        with pytest.raises(PolicyError, match="rate_limits"):
            parse_policy(TEST_POLICY + f"\n[rate_limits]\n{bad}\n")


async def test_a_flood_of_refused_presses_is_two_events_the_first_refusal_and_a_count_when_it_ends(
        runtime: Runtime) -> None:
    request = await runtime.service.request_access(ALICE, "acme-zendesk fix broken trigger for 1h")
    await runtime.service.approve(request.id, LEAD)
    for _ in range(5):
        await runtime.service.new_code(request.id, ALICE)
    clock: FakeClock = runtime.clock  # type: ignore[assignment]
    for _ in range(200):
        clock.advance(timedelta(seconds=1))
        with pytest.raises(NotAllowed, match="Too many codes"):
            await runtime.service.new_code(request.id, ALICE)
    await runtime.scheduler.tick()
    assert await refusals(runtime) == ["rate limit: codes (5 per 10m)"]
    assert await burst_summaries(runtime) == [], "still refused: the burst goes on"

    clock.advance(timedelta(minutes=10))  # the window reopens; nobody presses again
    await runtime.scheduler.tick()  # the minute tick ends the burst all the same
    [(actor, reason, details)] = await burst_summaries(runtime)
    assert (actor, reason) == ("slack:UALICE", "rate limit: codes (5 per 10m)")
    assert details["refused"] == 200 and details["not_audited_one_by_one"] == 199
    assert details["first_at"] < details["last_at"]
    await runtime.scheduler.tick()
    await runtime.service.new_code(request.id, ALICE)
    assert len(await burst_summaries(runtime)) == 1, "each burst is summarised once"


async def test_a_single_refusal_needs_no_summary(runtime: Runtime) -> None:
    for _ in range(2):
        await chat_report(runtime.service, ADMIN, "7d")
    with pytest.raises(NotAllowed):
        await chat_report(runtime.service, ADMIN, "7d")
    runtime.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    await runtime.scheduler.tick()
    assert await refusals(runtime) == ["rate limit: reports (2 per 1h)"]
    assert await burst_summaries(runtime) == []


async def test_two_replicas_on_one_store_share_one_budget_and_audit_one_refusal(tmp_path: Path) -> None:
    """Each replica used to count in its own memory (twice the budget with two); the store counts now."""
    clock = FakeClock()
    settings = test_settings(tmp_path)
    replicas = [await open_runtime(settings, clock=clock, policy=parse_policy(TEST_POLICY + LIMITS))
                for _ in range(2)]
    try:
        await replicas[0].catalog.add(canary_items(), SYSTEM, source="test")
        granted = 0
        for i in range(8):  # alternating replicas
            try:
                await chat_report(replicas[i % 2].service, ADMIN, "7d")
                granted += 1
            except NotAllowed:
                pass
        assert granted == 2, "reports = 2/1h for the person, whichever replica answers"
        for i in range(6):  # alternating replicas and the person's two accounts
            who = (ALICE, ALICE_TEAMS)[i % 2]
            try:
                request = await replicas[i % 2].service.request_access(who, "acme-zendesk fix broken trigger for 1h")
                await replicas[(i + 1) % 2].service.cancel(request.id, who)
                granted += 1
            except NotAllowed:
                pass
        assert granted == 2 + 3, "requests = 3/1h for alice's two accounts across both replicas"
        assert sorted(await refusals(replicas[1])) == ["rate limit: reports (2 per 1h)",
                                                       "rate limit: requests (3 per 1h)"]
        clock.advance(timedelta(hours=1))
        for replica in replicas:  # both replicas' minute ticks ask the store for ended bursts
            await replica.scheduler.tick()
        summaries = await burst_summaries(replicas[0])
        assert sorted((reason, details["refused"]) for _, reason, details in summaries) == [
            ("rate limit: reports (2 per 1h)", 6), ("rate limit: requests (3 per 1h)", 3)], \
            "each burst summarised once, by one of the replicas"
    finally:
        for replica in replicas:
            await replica.store.close()
