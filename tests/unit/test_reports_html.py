"""The HTML report's charts span the period asked for, their text is drawn at 11 px or more, and short
grants read in minutes in every format."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from bot.domain.model import SYSTEM
from bot.domain.report_data import AccessRow, Report
from bot.reports.build import build_report
from bot.reports.html import render_html
from bot.reports.render import render_csv, render_summary, render_table
from tests.unit.test_reports_trail import ANN, LEE, NOW, SINCE, UNTIL, Trail, at, build_trail, opened_trail, policy


@pytest.fixture
async def trail(tmp_path: Path) -> AsyncIterator[Trail]:
    async with opened_trail(tmp_path) as built:
        yield built


@pytest.fixture
async def report(trail: Trail) -> Report:
    return await build_report(trail.source, policy(), NOW, SINCE, UNTIL, verify=False)


def _chart(page: str, chart_id: str) -> str:
    match = re.search(rf'<svg id="{chart_id}".*?</svg>', page, re.S)
    assert match, chart_id
    return match.group(0)


def _bar_titles(page: str) -> list[str]:
    return re.findall(r"<rect [^>]*><title>([^<]*)</title></rect>", _chart(page, "chart-timeline"))


def test_the_timeline_has_a_bar_for_every_day_of_the_period_zero_on_quiet_days(report: Report) -> None:
    titles = _bar_titles(render_html(report))
    assert [t.split(":")[0] for t in titles] == [(date(2026, 3, 2) + timedelta(days=i)).isoformat() for i in range(7)]
    assert titles[3] == "2026-03-05: 0 request(s), 0 reveal(s)"  # Thursday: nothing but a refusal
    assert titles[5] == "2026-03-07: 1 request(s), 2 reveal(s)"
    assert ">2026-03-02</text>" in _chart(render_html(report), "chart-timeline")
    assert ">2026-03-08</text>" in _chart(render_html(report), "chart-timeline")


async def test_a_long_period_is_drawn_in_weeks_from_its_first_to_its_last(trail: Trail) -> None:
    since = datetime(2025, 10, 1, tzinfo=UTC)
    report = await build_report(trail.source, policy(), NOW, since, UNTIL, verify=False)
    titles = _bar_titles(render_html(report))
    # 1 Oct 2025 (a Wednesday) is in the week of Monday 29 Sep; 8 Mar 2026 (a Sunday) in the week of 2 Mar.
    assert titles[0].startswith("week of 2025-09-29: 0 request(s)") and len(titles) == 23
    assert titles[-1] == "week of 2026-03-02: 8 request(s), 5 reveal(s)"


async def test_a_period_without_activity_says_so(trail: Trail) -> None:
    report = await build_report(trail.source, policy(), NOW, at(10, 0), at(10, 6), verify=False)
    assert "no access in this period" in _chart(render_html(report), "chart-timeline")


def test_every_chart_is_drawn_at_its_own_size_with_text_of_11px_or_more(report: Report) -> None:
    page = render_html(report)
    for chart_id in ("chart-timeline", "chart-vaults", "chart-latency"):
        svg = _chart(page, chart_id)
        size = re.search(r'<svg [^>]*width="(\d+)" viewBox="0 0 (\d+) ', svg)
        # One unit is one CSS pixel: the chart only shrinks where the page is narrower than the chart.
        assert size and size.group(1) == size.group(2)
        sizes = [float(s) for s in re.findall(r'<text [^>]*font-size="([\d.]+)"', svg)]
        assert sizes and min(sizes) >= 11, chart_id
        assert svg.count("<text ") == len(sizes), f"{chart_id}: every label has its size"


def test_a_long_vault_name_is_shortened_in_the_chart_and_whole_in_its_tooltip(report: Report) -> None:
    long = "customer-with-a-very-long-vault-name"
    rows = (AccessRow("vault", long, requests=2, reveals=1), *report.data.by_vault)
    page = render_html(replace(report, data=replace(report.data, by_vault=rows)))
    svg = _chart(page, "chart-vaults")
    assert ">customer-with-a-ve…<title>customer-with-a-very-long-vault-name</title></text>" in svg


def test_tiles_are_one_grid_row_of_equal_columns(report: Report) -> None:
    page = render_html(report)
    tiles = re.findall(r'<div class="card"><b>([^<]*)</b>([^<]*)</div>', page)
    assert [label for _, label in tiles] == ["requests", "approved", "declined", "timed out", "pending",
                                             "failed deliveries", "wipes failing", "reveals", "granted",
                                             "median approval", "p95 approval"]
    assert "grid-template-columns:repeat(auto-fit,minmax(84px,1fr))" in page  # 11 x 84 px + gaps < 1,100 px


async def test_a_grant_of_five_minutes_reads_5m_in_every_format(tmp_path: Path) -> None:
    trail = await build_trail(tmp_path)
    try:
        for when, kind, who in ((at(10, 9, 0), "request.created", ANN), (at(10, 9, 1), "request.approved", LEE),
                                (at(10, 9, 1), "grant.activated", SYSTEM), (at(10, 9, 6), "grant.expired", SYSTEM)):
            await trail.event(when, kind, who, "S1", "umbrella-vpn")
        report = await build_report(trail.source, policy(), NOW, at(10, 0), at(10, 12), verify=False)
    finally:
        await trail.store.close()
    assert report.data.totals.granted_seconds == 300.0
    out = io.StringIO()
    render_table(report, out, width=140)
    assert re.search(r"umbrella-vpn\s*│ umbrella │.*│\s*5m\s*│", out.getvalue())
    assert "5m granted" in render_summary(report)
    assert '<div class="card"><b>5m</b>granted</div>' in render_html(report)
    assert "0.0h" not in out.getvalue() + render_summary(report) + render_html(report)
    assert "access_total,all,,,granted_seconds,300" in render_csv(report)  # machines read seconds
