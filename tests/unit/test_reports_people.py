"""Reports group by person: the policy's [people] links accounts, so a person with a Slack and a Teams
account is one row (requester, approver, load, off-hours, refusals), counted in the store."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.domain.report_data import Report
from bot.reports.build import build_report
from bot.reports.render import render_table
from tests.unit.test_reports import figures
from tests.unit.test_reports_trail import NOW, SINCE, UNTIL, Trail, add_teams_bob, opened_trail, policy


@pytest.fixture
async def trail(tmp_path: Path) -> AsyncIterator[Trail]:
    async with opened_trail(tmp_path, add_teams_bob) as built:
        yield built


@pytest.fixture
async def by_person(trail: Trail) -> Report:
    return await build_report(trail.source, policy(people=True), NOW, SINCE, UNTIL, verify=False)


async def test_without_people_each_account_is_its_own_row(trail: Trail) -> None:
    report = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, verify=False)
    assert [r.key for r in report.data.by_requester] == ["slack:UBOB", "slack:UANN", "teams:bob-oid"]
    assert [r.key for r in report.data.by_approver] == ["slack:ULEE", "teams:max-oid"]


async def test_a_person_with_slack_and_teams_accounts_is_one_requester_row(by_person: Report) -> None:
    # Bob: R0, R4, R5, R6, R8 on Slack (4 requests in the period, 15000 s) + B1 on Teams (30 min).
    assert figures(by_person.data.by_requester) == [
        ("person:bob", "bob", "", 5, 3, 1, 0, 1, 4, 0, 16800.0),
        ("slack:UANN", "Ann", "", 4, 3, 0, 1, 0, 2, 1, 6600.0),
    ]


async def test_a_lead_deciding_from_both_platforms_is_one_approver_with_one_latency(by_person: Report) -> None:
    # Lee decided R0, R1, R4, R7, B1 on Slack and R2, R5, R6 as max-oid on Teams.
    assert figures(by_person.data.by_approver) == [("person:lee", "lee", "", 7, 6, 1, 0, 0, 6, 1, 23400.0)]
    (load,) = by_person.data.approver_load
    # Approvals: R1, R2's first, R4, R7, B1 (Slack) + R2, R6 (Teams); latencies 2m 4m 5m 10m 15m 30m.
    assert (load.key, load.label, load.approvals, load.declines, load.median_seconds, load.p95_seconds) == (
        "person:lee", "lee", 7, 1, 300.0, 1800.0)


async def test_off_hours_refusals_and_bursts_count_the_person(by_person: Report) -> None:
    assert [(p.key, p.count) for p in by_person.data.off_hours_by_person] == [("person:bob", 2), ("slack:UANN", 1)]
    refused = [(r.actor, r.actor_label, r.reason, r.count) for r in by_person.data.refusals
               if r.reason == "approve without being an approver"]
    assert refused == [("person:bob", "bob", "approve without being an approver", 2)]
    assert {s.requesters for s in by_person.data.shared_use} == {("Ann", "bob")}


async def test_a_user_filter_naming_one_account_covers_the_whole_person(trail: Trail) -> None:
    teams = await build_report(trail.source, policy(people=True), NOW, SINCE, UNTIL, user="teams:bob-oid",
                               verify=False)
    slack = await build_report(trail.source, policy(people=True), NOW, SINCE, UNTIL, user="UBOB", verify=False)
    assert teams.data == slack.data
    assert figures(teams.data.by_requester) == [("person:bob", "bob", "", 5, 3, 1, 0, 1, 4, 0, 16800.0)]
    assert [(r.actor, r.count) for r in teams.data.refusals] == [("person:bob", 2)]  # Slack's and Teams' refusal
    alone = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, user="teams:bob-oid", verify=False)
    assert [(r.key, r.requests) for r in alone.data.by_requester] == [("teams:bob-oid", 1)]  # unlinked: B1 only


def test_the_table_names_the_person(by_person: Report) -> None:
    out = io.StringIO()
    render_table(by_person, out, width=150)
    assert "bob (person:bob)" in out.getvalue() and "lee (person:lee)" in out.getvalue()
