"""Pending requests: counted and listed (who, item, vault, since when, reason) in every format."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.domain.report_data import Report
from bot.reports.build import build_report
from bot.reports.html import render_html
from bot.reports.render import render_csv, render_json, render_summary, render_table
from tests.unit.test_reports_trail import NOW, SINCE, UNTIL, Trail, add_pending, at, build_trail, opened_trail, policy


@pytest.fixture
async def trail(tmp_path: Path) -> AsyncIterator[Trail]:
    async with opened_trail(tmp_path, add_pending) as built:
        yield built


@pytest.fixture
async def report(trail: Trail) -> Report:
    return await build_report(trail.source, policy(), NOW, SINCE, UNTIL)


async def test_requests_undecided_at_the_period_end_are_pending_oldest_first(report: Report) -> None:
    assert report.data.pending_total == 2
    assert [(p.request_id, p.item, p.vault, p.requester, p.requester_label, p.created_at, p.reason, p.approvals)
            for p in report.data.pending] == [
        ("R9", "hooli-mail", "hooli", "slack:UANN", "Ann", at(8, 20, 0), "quarterly audit", 1),
        ("R10", "umbrella-vpn", "umbrella", "slack:UBOB", "Bob", at(8, 21, 0), "vpn broken", 0),
    ]


async def test_the_fixed_trail_has_nothing_pending_at_its_end_but_a_short_period_does(tmp_path: Path) -> None:
    trail = await build_trail(tmp_path)
    try:
        whole = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, verify=False)
        # At 10:00 on Monday R3 (created 09:40, timed out 10:10) was still waiting; R2 was approved at 09:50.
        short = await build_report(trail.source, policy(), NOW, at(2, 9, 30), at(2, 10, 0), verify=False)
        # Created before a period that starts later still counts: R3 waited across 10:05.
        later = await build_report(trail.source, policy(), NOW, at(2, 10, 5), at(2, 10, 6), verify=False)
    finally:
        await trail.store.close()
    assert (whole.data.pending_total, whole.data.pending) == (0, ())
    assert [p.request_id for p in short.data.pending] == ["R3"] and short.data.pending_total == 1
    assert [p.request_id for p in later.data.pending] == ["R3"]


async def test_filters_narrow_pending_requests(trail: Trail) -> None:
    hooli = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, vault="hooli", verify=False)
    assert [p.request_id for p in hooli.data.pending] == ["R9"]
    vpn = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, item="umbrella-vpn", verify=False)
    assert [p.request_id for p in vpn.data.pending] == ["R10"]
    bob = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, user="slack:UBOB", verify=False)
    assert [p.request_id for p in bob.data.pending] == ["R10"]
    lee = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, user="ULEE", verify=False)
    assert [p.request_id for p in lee.data.pending] == ["R9"]  # Lee gave R9 its first approval


def test_every_format_counts_and_lists_pending_requests(report: Report) -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert [r["value"] for r in rows if r["section"] == "pending_total"] == ["2"]
    r9 = {r["metric"]: r["value"] for r in rows if (r["section"], r["key"]) == ("pending_requests", "R9")}
    assert r9 == {"item": "hooli-mail", "requester": "slack:UANN", "created_at": "2026-03-08T20:00:00.000000Z",
                  "waiting_seconds": "14400", "approvals": "1", "reason": "quarterly audit"}
    assert {r["label"] for r in rows if r["section"] == "pending_requests"} == {"Ann", "Bob"}

    data = json.loads(render_json(report))["pending_requests"]
    assert data["total"] == 2
    assert data["rows"][1] == {"request_id": "R10", "item": "umbrella-vpn", "vault": "umbrella",
                               "requester": "slack:UBOB", "requester_label": "Bob",
                               "created_at": "2026-03-08T21:00:00.000000Z", "reason": "vpn broken", "approvals": 0,
                               "waiting_seconds": 10800.0}

    out = io.StringIO()
    render_table(report, out, width=160)
    table = out.getvalue()
    assert "Pending requests (2), oldest first" in table
    assert "R9" in table and "quarterly audit" in table and "2026-03-08 21:00" in table  # 20:00 UTC, Amsterdam
    assert "4h" in table and "3h" in table  # waiting at the period's end

    assert "Pending: 2 request(s) waiting for a decision; oldest R9 hooli-mail (Ann), waiting 4h" \
        in render_summary(report)

    page = render_html(report)
    assert "<b>2</b>pending</div>" in page
    assert "Pending requests <span class=muted>(2)</span>" in page
    assert "<td>quarterly audit</td>" in page and "<td>vpn broken</td>" in page
