"""Every figure of the report over the fixed trail (tests/unit/test_reports_trail.py), computed by hand."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.domain.errors import InputError
from bot.domain.report_data import AccessRow, LatencyStats, Report, UserFilter
from bot.reports.build import build_report, next_purge_at, parse_period, working_intervals
from storage.sqlite.store import SqliteStore
from tests.support.app import FakeClock
from tests.unit.test_reports_trail import EVENT_COUNT, NOW, SINCE, UNTIL, Trail, at, opened_trail, policy

AMS = ZoneInfo("Europe/Amsterdam")


@pytest.fixture
async def trail(tmp_path: Path) -> AsyncIterator[Trail]:
    async with opened_trail(tmp_path) as built:
        yield built


@pytest.fixture
async def report(trail: Trail) -> Report:
    return await build_report(trail.source, policy(), NOW, SINCE, UNTIL)


def tamper(path: Path, statement: str) -> None:
    """Edit the store file behind the store's back, as an attacker with file access would."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(statement)
        conn.commit()


def figures(rows: tuple[AccessRow, ...]) -> list[tuple[object, ...]]:
    """(key, label, vault, requests, approved, declined, timed out, cancelled, reveals, codes, granted s)."""
    return [(r.key, r.label, r.vault, r.requests, r.approved, r.declined, r.timed_out, r.cancelled, r.reveals,
             r.code_views, r.granted_seconds) for r in rows]


# -- access summaries ------------------------------------------------------------------------------


async def test_totals_count_each_outcome_once_and_clip_granted_time_to_the_period(report: Report) -> None:
    # R0 2h10m (from Monday 00:00) + R1 1h + R2 30m + R4 1h + R6 1h + R7 20m (until Monday 9th 00:00) = 6h.
    assert figures((report.data.totals,)) == [("all", "", "", 8, 5, 1, 1, 1, 5, 1, 21600.0)]


async def test_access_per_item_and_per_vault(report: Report) -> None:
    assert figures(report.data.by_item) == [
        ("acme-aws", "", "acme", 2, 2, 0, 0, 0, 3, 0, 12600.0),  # R0 2h10m + R6 1h + R7 20m
        ("acme-zendesk", "", "acme", 2, 2, 0, 0, 0, 2, 1, 7200.0),
        ("globex-db", "", "globex", 2, 1, 0, 0, 1, 0, 0, 1800.0),
        ("hooli-mail", "", "hooli", 1, 0, 1, 0, 0, 0, 0, 0.0),
        ("initech-crm", "", "initech", 1, 0, 0, 1, 0, 0, 0, 0.0),
    ]
    assert figures(report.data.by_vault) == [
        ("acme", "", "", 4, 4, 0, 0, 0, 5, 1, 19800.0),
        ("globex", "", "", 2, 1, 0, 0, 1, 0, 0, 1800.0),
        ("hooli", "", "", 1, 0, 1, 0, 0, 0, 0, 0.0),
        ("initech", "", "", 1, 0, 0, 1, 0, 0, 0, 0.0),
    ]


async def test_access_per_requester_and_per_deciding_approver(report: Report) -> None:
    assert figures(report.data.by_requester) == [
        ("slack:UBOB", "Bob", "", 4, 2, 1, 0, 1, 3, 0, 15000.0),  # R0 (granted only), R4, R5, R6, R8
        ("slack:UANN", "Ann", "", 4, 3, 0, 1, 0, 2, 1, 6600.0),  # R1, R2, R3, R7
    ]
    assert figures(report.data.by_approver) == [
        ("slack:ULEE", "Lee", "", 3, 3, 0, 0, 0, 3, 1, 16200.0),  # decided R0, R1, R4, R7
        ("teams:max-oid", "Max", "", 3, 2, 1, 0, 0, 2, 0, 5400.0),  # decided R2, R5, R6
    ]


# -- latency and load -----------------------------------------------------------------------------


async def test_approval_latency_is_nearest_rank_median_and_p95_with_a_histogram(report: Report) -> None:
    # R6 2m, R1 4m, R7 10m, R4 15m, R2 30m (R0 was approved before the period).
    assert report.data.latency == LatencyStats(approved=5, median_seconds=600.0, p95_seconds=1800.0)
    assert [(b.label, b.count) for b in report.data.latency_buckets] == [
        ("<1m", 0), ("1-5m", 2), ("5-15m", 1), ("15-60m", 2), ("1-4h", 0), (">4h", 0)]


async def test_approval_load_counts_every_approval_and_decline_per_approver(report: Report) -> None:
    assert [(a.key, a.label, a.approvals, a.declines, a.median_seconds, a.p95_seconds)
            for a in report.data.approver_load] == [
        ("slack:ULEE", "Lee", 4, 0, 600.0, 900.0),  # R1, R4, R7 approved + R2's first approval
        ("teams:max-oid", "Max", 2, 1, 120.0, 1800.0),  # R2, R6 approved, R5 declined
    ]


async def test_timeline_counts_per_utc_day(report: Report) -> None:
    assert [(p.day, p.requests, p.approved, p.reveals, p.code_views) for p in report.data.timeline] == [
        (date(2026, 3, 2), 4, 3, 2, 1), (date(2026, 3, 3), 1, 0, 0, 0), (date(2026, 3, 4), 1, 0, 0, 0),
        (date(2026, 3, 7), 1, 1, 2, 0), (date(2026, 3, 8), 1, 1, 1, 0)]


# -- anomalies --------------------------------------------------------------------------------------


async def test_a_grant_approved_but_never_revealed_is_flagged(report: Report) -> None:
    assert report.data.unrevealed_total == 1
    (grant,) = report.data.unrevealed
    assert (grant.request_id, grant.item, grant.vault, grant.requester, grant.requester_label,
            grant.activated_at, grant.ended_at) == ("R2", "globex-db", "globex", "slack:UANN", "Ann",
                                                    at(2, 9, 50), at(2, 10, 20))


async def test_reveals_outside_working_hours_use_the_policy_time_zone(report: Report) -> None:
    # Saturday 10:03 and 10:33 UTC (R6), and Sunday 23:41 UTC = Monday 00:41 in Amsterdam (R7).
    # Monday 09:05 / 09:46 UTC are 10:05 / 10:46 local: inside working hours.
    assert report.data.off_hours_total == 3
    assert [(p.key, p.label, p.count) for p in report.data.off_hours_by_person] == [
        ("slack:UBOB", "Bob", 2), ("slack:UANN", "Ann", 1)]
    assert [(r.at, r.request_id, r.item, r.requester_label) for r in report.data.off_hours] == [
        (at(8, 23, 41), "R7", "acme-aws", "Ann"), (at(7, 10, 33), "R6", "acme-aws", "Bob"),
        (at(7, 10, 3), "R6", "acme-aws", "Bob")]


async def test_three_vaults_within_an_hour_is_a_burst(report: Report) -> None:
    (burst,) = report.data.bursts
    assert (burst.requester, burst.requester_label, burst.max_vaults, burst.at, burst.vaults,
            burst.flagged_requests) == ("slack:UANN", "Ann", 3, at(2, 9, 40), ("acme", "globex", "initech"), 1)


async def test_refusals_list_self_approval_attempts_first(report: Report) -> None:
    assert [(r.actor, r.actor_label, r.reason, r.count, r.first_at, r.self_approval)
            for r in report.data.refusals] == [
        ("slack:UANN", "Ann", "self-approve", 1, at(2, 9, 21), True),
        ("slack:UANN", "Ann", "report without being an admin", 1, at(5, 8, 0), False),
        ("slack:UBOB", "Bob", "approve without being an approver", 1, at(4, 13, 0), False),
    ]


async def test_items_never_accessed_and_items_with_overlapping_grants(report: Report) -> None:
    assert [(u.item, u.vault) for u in report.unused_items] == [("umbrella-vpn", "umbrella")]
    (shared,) = report.data.shared_use
    assert (shared.item, shared.vault, shared.overlaps, shared.first_at, shared.requesters) == (
        "acme-zendesk", "acme", 1, at(2, 9, 45), ("Ann", "Bob"))


# -- exposure and retention --------------------------------------------------------------------------


async def test_exposure_lists_unrotated_items_per_vault_oldest_first_with_who_saw_them_when(report: Report) -> None:
    rows = [(e.vault, e.item, e.since, e.days(NOW), e.seen_by, [(s.label, s.request_id, s.first_at, s.last_at)
                                                               for s in e.sightings]) for e in report.exposure]
    assert rows == [
        ("acme", "acme-zendesk", at(2, 10, 4), 8.1, ("Ann", "Bob"),
         [("Ann", "R1", at(2, 9, 5), at(2, 9, 5)), ("Bob", "R4", at(2, 9, 46), at(2, 9, 46))]),
        ("acme", "acme-aws", at(7, 11, 2), 3.0, ("Bob", "Ann"),
         [("Bob", "R6", at(7, 10, 3), at(7, 10, 33)), ("Ann", "R7", at(8, 23, 41), at(8, 23, 41))]),
    ]


async def test_retention_section_ages_events_and_says_what_the_next_purge_removes(report: Report) -> None:
    ret = report.retention
    assert [(b.label, b.count) for b in ret.buckets] == [("<30d", 42), ("30-90d", 1), ("90-365d", 2), (">365d", 2)]
    assert ret.total_events == EVENT_COUNT
    assert ret.oldest_at == datetime(2025, 1, 1, 10, 0, tzinfo=UTC)
    assert (ret.keep_days, ret.legal_hold) == (365, False)
    # Next 03:30 in Amsterdam after Tuesday 13:00 local is Wednesday 11 March 02:30 UTC.
    assert ret.next_purge_at == datetime(2026, 3, 11, 2, 30, tzinfo=UTC)
    assert ret.purge_cutoff == datetime(2025, 3, 11, 2, 30, tzinfo=UTC)
    assert ret.would_purge == 2
    assert (ret.checkpoint_seq, ret.checkpoint_at) == (None, None)
    assert ret.chain.verified and ret.chain.ok
    assert (ret.chain.checked, ret.chain.last_seq, ret.chain.from_checkpoint) == (EVENT_COUNT, EVENT_COUNT, None)


async def test_legal_hold_shows_no_next_purge(trail: Trail) -> None:
    report = await build_report(trail.source, policy("legal_hold = true"), NOW, SINCE, UNTIL, verify=False)
    ret = report.retention
    assert (ret.legal_hold, ret.next_purge_at, ret.purge_cutoff, ret.would_purge) == (True, None, None, 0)
    assert not ret.chain.verified


async def test_a_tampered_event_shows_as_a_broken_chain(trail: Trail) -> None:
    tamper(trail.path, "UPDATE events SET reason = 'nothing to see' WHERE seq = 20")
    report = await build_report(trail.source, policy(), NOW, SINCE, UNTIL)
    assert (report.retention.chain.ok, report.retention.chain.first_broken_seq) == (False, 20)


# -- filters --------------------------------------------------------------------------------------------


async def test_a_vault_filter_keeps_only_that_vault(trail: Trail) -> None:
    report = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, vault="acme", verify=False)
    assert figures((report.data.totals,)) == [("all", "", "", 4, 4, 0, 0, 0, 5, 1, 19800.0)]
    assert [r.key for r in report.data.by_vault] == ["acme"]
    assert report.data.unrevealed_total == 0 and report.data.off_hours_total == 3
    assert [b.requester for b in report.data.bursts] == ["slack:UANN"]  # the burst touched acme
    assert [r.reason for r in report.data.refusals] == ["approve without being an approver"]
    assert report.unused_items == () and [e.item for e in report.exposure] == ["acme-zendesk", "acme-aws"]
    assert report.filters == {"vault": "acme"}


async def test_a_user_filter_keeps_requests_they_made_or_decided(trail: Trail) -> None:
    bob = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, user="UBOB", verify=False)
    assert figures((bob.data.totals,)) == [("all", "", "", 4, 2, 1, 0, 1, 3, 0, 15000.0)]
    assert [r.reason for r in bob.data.refusals] == ["approve without being an approver"]
    assert bob.data.bursts == () and bob.data.off_hours_total == 2
    max_ = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, user="teams:max-oid", verify=False)
    assert figures((max_.data.totals,)) == [("all", "", "", 3, 2, 1, 0, 0, 2, 0, 5400.0)]  # R2, R5, R6
    # R2 counts because Max approved it; Lee gave it a first approval, so Lee's filter also has R2.
    lee = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, user="slack:ULEE", verify=False)
    assert lee.data.totals.requests == 4 and [a.key for a in lee.data.approver_load] == ["slack:ULEE", "teams:max-oid"]


async def test_an_item_filter_and_a_shorter_period(trail: Trail) -> None:
    report = await build_report(trail.source, policy(), NOW, at(2, 9, 30), at(2, 10, 0), item="acme-zendesk",
                                verify=False)
    # R1 09:30-10:00 (30m, its code view) and R4 09:45-10:00 (15m, created, approved, revealed).
    assert figures((report.data.totals,)) == [("all", "", "", 1, 1, 0, 0, 0, 1, 1, 2700.0)]
    assert report.data.shared_use[0].overlaps == 1


async def test_an_empty_store_gives_an_empty_report(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "empty.db", FakeClock(NOW))
    await store.open()
    try:
        report = await build_report(store, policy(), NOW, SINCE, UNTIL)
    finally:
        await store.close()
    assert figures((report.data.totals,)) == [("all", "", "", 0, 0, 0, 0, 0, 0, 0, 0.0)]
    assert report.data.latency == LatencyStats(approved=0)
    assert report.retention.total_events == 0 and report.retention.oldest_at is None
    assert report.retention.chain.ok


# -- period, working hours, purge time -------------------------------------------------------------------


def test_periods_from_since_or_from_to_in_the_policy_time_zone() -> None:
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert parse_period(now, AMS, since="90d") == (now - timedelta(days=90), now)
    assert parse_period(now, AMS) == (now - timedelta(days=30), now)
    # 1 Feb 00:00 Amsterdam through the end of 28 Feb Amsterdam.
    assert parse_period(now, AMS, start="2026-02-01", end="2026-02-28") == (
        datetime(2026, 1, 31, 23, tzinfo=UTC), datetime(2026, 2, 28, 23, tzinfo=UTC))
    assert parse_period(now, AMS, start="2026-03-01")[1] == now
    for bad in ({"since": "30d", "start": "2026-01-01"}, {"end": "2026-01-01"},
                {"start": "2026-02-02", "end": "2026-02-01"}, {"start": "yesterday"}, {"since": "soon"}):
        with pytest.raises(InputError):
            parse_period(now, AMS, **bad)


def test_working_intervals_agree_with_the_policy_at_every_instant() -> None:
    pol = policy()
    rng = random.Random(5)
    since, until = datetime(2026, 3, 20, tzinfo=UTC), datetime(2026, 4, 10, tzinfo=UTC)  # across DST
    intervals = working_intervals(pol.working_hours, pol.timezone, since, until)
    for _ in range(2000):
        moment = since + timedelta(seconds=rng.randrange(int((until - since).total_seconds())))
        inside = any(a <= moment < b for a, b in intervals)
        assert inside == pol.in_working_hours(moment), moment


def test_the_next_purge_is_the_next_purge_at_in_the_policy_time_zone() -> None:
    assert next_purge_at(policy(), datetime(2026, 3, 11, 2, 29, tzinfo=UTC)) == datetime(2026, 3, 11, 2, 30,
                                                                                           tzinfo=UTC)
    assert next_purge_at(policy(), datetime(2026, 3, 11, 2, 30, tzinfo=UTC)) == datetime(2026, 3, 12, 2, 30,
                                                                                           tzinfo=UTC)
    assert next_purge_at(policy("legal_hold = true"), NOW) is None
    assert next_purge_at(policy().__class__(), NOW) is None  # no keep_days: keep forever


def test_a_user_filter_reads_platform_and_id() -> None:
    assert UserFilter.parse("slack:U1") == UserFilter("U1", "slack")
    assert UserFilter.parse("U1") == UserFilter("U1")
    assert UserFilter.parse("29:abc") == UserFilter("29:abc")  # a Teams id with a colon, any platform
    assert UserFilter("U1").matches("teams:U1") and not UserFilter("U1", "slack").matches("teams:U1")
