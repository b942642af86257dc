"""Delivery failures: durable chat effects that failed in the period, in every format, on the store's figures."""

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
from tests.unit.test_reports_trail import (
    NOW,
    SINCE,
    UNTIL,
    Trail,
    add_delivery_failures,
    at,
    build_trail,
    opened_trail,
    policy,
)


@pytest.fixture
async def trail(tmp_path: Path) -> AsyncIterator[Trail]:
    async with opened_trail(tmp_path, add_delivery_failures) as built:
        yield built


@pytest.fixture
async def report(trail: Trail) -> Report:
    return await build_report(trail.source, policy(), NOW, SINCE, UNTIL)


async def test_failed_deliveries_and_wipes_failed_or_retrying_are_listed_newest_first(report: Report) -> None:
    data = report.data
    assert [(c.effect, c.state, c.count) for c in data.delivery_failure_counts] == [
        ("delivery", "failed", 1), ("post_card", "failed", 1), ("wipe", "failed", 1), ("wipe", "retrying", 1)]
    assert data.delivery_failures_total == 4
    assert [(d.request_id, d.effect, d.state, d.item, d.vault, d.requester, d.requester_label, d.attempts, d.error,
             d.failures, d.first_at, d.last_at) for d in data.delivery_failures] == [
        ("F4", "post_card", "failed", "hooli-mail", "hooli", "slack:UANN", "Ann", 5, "not_in_channel", 1,
         at(6, 16, 5), at(6, 16, 5)),
        ("F3", "wipe", "failed", "globex-db", "globex", "slack:UBOB", "Bob", 8, "internal_error", 1,
         at(6, 15, 30), at(6, 15, 30)),
        ("F2", "wipe", "retrying", "acme-aws", "acme", "slack:UBOB", "Bob", 2, "timeout", 2, at(6, 13, 0),
         at(6, 13, 1)),
        ("F1", "delivery", "failed", "acme-zendesk", "acme", "slack:UANN", "Ann", 2, "channel_not_found", 2,
         at(6, 10, 1), at(6, 10, 2)),
    ]


async def test_a_later_success_clears_a_failure_and_the_period_end_decides(trail: Trail) -> None:
    # Until Monday 01:30 F2's wipe succeeded (01:00); F5 recovered on its own within the hour.
    longer = await build_report(trail.source, policy(), NOW, SINCE, at(9, 1, 30), verify=False)
    assert [(d.request_id, d.effect) for d in longer.data.delivery_failures] == [
        ("F4", "post_card"), ("F3", "wipe"), ("F1", "delivery")]
    # At 18:01:30 F5's first delivery attempt had failed and it was still being retried.
    early = await build_report(trail.source, policy(), NOW, at(6, 18, 0), at(6, 18, 1, second=30), verify=False)
    assert [(d.request_id, d.effect, d.state) for d in early.data.delivery_failures] == [
        ("F5", "delivery", "retrying")]
    acme = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, vault="acme", verify=False)
    assert [d.request_id for d in acme.data.delivery_failures] == ["F2", "F1"]
    ann = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, user="slack:UANN", verify=False)
    assert [d.request_id for d in ann.data.delivery_failures] == ["F4", "F1"]


def test_every_format_has_the_delivery_failures_section(report: Report) -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert [(r["key"], r["value"]) for r in rows if r["section"] == "delivery_failure_totals"] == [
        ("delivery failed", "1"), ("post_card failed", "1"), ("wipe failed", "1"), ("wipe retrying", "1")]
    f1 = {r["metric"]: r["value"] for r in rows if (r["section"], r["key"]) == ("delivery_failures", "F1 delivery")}
    assert f1 == {"item": "acme-zendesk", "requester": "slack:UANN", "effect": "delivery", "state": "failed",
                  "attempts": "2", "error": "channel_not_found", "failures": "2",
                  "first_at": "2026-03-06T10:01:00.000000Z", "last_at": "2026-03-06T10:02:00.000000Z"}

    data = json.loads(render_json(report))["delivery_failures"]
    assert data["total"] == 4 and data["counts"][3] == {"effect": "wipe", "state": "retrying", "count": 1}
    assert [(r["request_id"], r["state"]) for r in data["rows"]] == [
        ("F4", "failed"), ("F3", "failed"), ("F2", "retrying"), ("F1", "failed")]

    out = io.StringIO()
    render_table(report, out, width=170)
    table = out.getvalue()
    assert "Delivery failures (4)" in table and "channel_not_found" in table and "retrying" in table

    assert ("Delivery failures: 1 delivery(ies) never reached the requester, 1 wipe(s) failed, 1 wipe(s) still "
            "retrying, 1 other chat effect(s) failed") in render_summary(report)

    page = render_html(report)
    assert "<b>1</b>failed deliveries</div>" in page and "<b>2</b>wipes failing</div>" in page
    assert "Delivery failures <span class=muted>(4)</span>" in page
    assert "<td>internal_error</td>" in page and "<td>not_in_channel</td>" in page


async def test_the_fixed_trail_has_no_delivery_failures(tmp_path: Path) -> None:
    trail = await build_trail(tmp_path)
    try:
        report = await build_report(trail.source, policy(), NOW, SINCE, UNTIL, verify=False)
    finally:
        await trail.store.close()
    assert (report.data.delivery_failures_total, report.data.delivery_failures) == (0, ())
    assert "Delivery failures: none" in render_summary(report)
