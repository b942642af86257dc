"""The renderers: CSV and JSON read back to the same figures; the table and the chat summary say them."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli.progress import QUIET, RichTracker, progress
from bot.domain.report_data import Report
from bot.reports.build import build_report
from bot.reports.html import render_html
from bot.reports.render import CSV_COLUMNS, render_csv, render_json, render_summary, render_table
from tests.unit.test_reports_trail import EVENT_COUNT, NOW, SINCE, UNTIL, build_trail, policy


@pytest.fixture
async def report(tmp_path: Path) -> AsyncIterator[Report]:
    trail = await build_trail(tmp_path)
    try:
        yield await build_report(trail.source, policy(), NOW, SINCE, UNTIL)
    finally:
        await trail.store.close()


def test_csv_has_one_stable_header_and_reads_back_every_figure(report: Report) -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert tuple(rows[0]) == CSV_COLUMNS

    def value(section: str, key: str, metric: str) -> str:
        (found,) = [r["value"] for r in rows if (r["section"], r["key"], r["metric"]) == (section, key, metric)]
        return found

    assert value("report", "", "since") == "2026-03-02T00:00:00.000000Z"
    assert value("report", "", "timezone") == "Europe/Amsterdam"
    assert [value("access_total", "all", m) for m in ("requests", "approved", "declined", "timed_out", "cancelled",
                                                       "reveals", "code_views", "granted_seconds")] == \
        ["8", "5", "1", "1", "1", "5", "1", "21600"]
    item_rows = [r for r in rows if r["section"] == "access_by_item" and r["metric"] == "reveals"]
    assert [(r["key"], r["vault"], r["value"]) for r in item_rows] == [
        ("acme-aws", "acme", "3"), ("acme-zendesk", "acme", "2"), ("globex-db", "globex", "0"),
        ("hooli-mail", "hooli", "0"), ("initech-crm", "initech", "0")]
    assert [(r["label"], r["value"]) for r in rows
            if r["section"] == "access_by_requester" and r["metric"] == "granted_seconds"] == [
        ("Bob", "15000"), ("Ann", "6600")]
    assert value("latency", "", "median_seconds") == "600" and value("latency", "", "p95_seconds") == "1800"
    assert value("latency_buckets", "15-60m", "count") == "2"
    assert value("approver_load", "slack:ULEE", "approvals") == "4"
    assert value("timeline", "2026-03-07", "reveals") == "2"
    assert [(r["key"], r["value"]) for r in rows if r["section"] == "anomaly_totals"] == [
        ("unrevealed_grants", "1"), ("off_hours_reveals", "3"), ("vault_bursts", "1"), ("refusals", "3"),
        ("unused_items", "1"), ("shared_use", "1"), ("exposure", "2"), ("shadow_access", "0")]
    assert value("unrevealed_grants", "R2", "activated_at") == "2026-03-02T09:50:00.000000Z"
    assert value("vault_bursts", "slack:UANN", "vaults") == "acme globex initech"
    assert value("refusals", "slack:UANN self-approve", "self_approval") == "true"
    assert value("unused_items", "umbrella-vpn", "unused") == "true"
    assert value("shared_use", "acme-zendesk", "requesters") == "Ann Bob"
    assert value("exposure", "acme-aws", "days") == "3"
    assert value("retention_age", ">365d", "events") == "2"
    assert value("retention", "", "would_purge") == "2"
    assert value("retention", "", "chain_ok") == "true"
    assert value("retention", "", "chain_checked") == str(EVENT_COUNT)


def test_json_reads_back_with_the_same_figures(report: Report) -> None:
    data = json.loads(render_json(report))
    assert set(data) == {"report", "access", "latency", "approver_load", "timeline", "pending_requests",
                         "delivery_failures", "anomalies", "exposure", "retention"}
    assert data["report"]["filters"] == {} and data["report"]["store"] == "sqlite"
    assert data["access"]["total"] == {"dimension": "total", "key": "all", "label": "", "vault": "", "requests": 8,
                                       "approved": 5, "declined": 1, "timed_out": 1, "cancelled": 1, "reveals": 5,
                                       "code_views": 1, "granted_seconds": 21600.0}
    assert [v["key"] for v in data["access"]["by_vault"]] == ["acme", "globex", "hooli", "initech"]
    assert data["latency"]["median_seconds"] == 600.0 and data["latency"]["p95_seconds"] == 1800.0
    assert [b["count"] for b in data["latency"]["buckets"]] == [0, 2, 1, 2, 0, 0]
    assert data["timeline"][0] == {"day": "2026-03-02", "requests": 4, "approved": 3, "reveals": 2, "code_views": 1}
    anomalies = data["anomalies"]
    assert anomalies["unrevealed_grants"]["total"] == 1
    assert anomalies["off_hours_reveals"]["rows"][0]["at"] == "2026-03-08T23:41:00.000000Z"
    assert anomalies["vault_bursts"][0]["vaults"] == ["acme", "globex", "initech"]
    assert [r["self_approval"] for r in anomalies["refusals"]] == [True, False, False]
    assert anomalies["unused_items"] == [{"item": "umbrella-vpn", "vault": "umbrella"}]
    assert anomalies["shared_use"][0]["requesters"] == ["Ann", "Bob"]
    assert [(e["item"], e["days"], e["seen_by"]) for e in data["exposure"]] == [
        ("acme-zendesk", 8.1, ["Ann", "Bob"]), ("acme-aws", 3.0, ["Bob", "Ann"])]
    assert data["retention"]["buckets"] == [{"label": "<30d", "count": 42}, {"label": "30-90d", "count": 1},
                                            {"label": "90-365d", "count": 2}, {"label": ">365d", "count": 2}]
    assert data["retention"]["next_purge_at"] == "2026-03-11T02:30:00.000000Z"
    assert data["retention"]["chain"]["ok"] is True


def test_the_table_shows_every_section_in_local_time(report: Report) -> None:
    out = io.StringIO()
    render_table(report, out, width=130)
    text = out.getvalue()
    for heading in ("Access per vault", "Access per item", "Access per requester", "Access per approver",
                    "Approval latency: median 10m, p95 30m over 5", "Anomalies", "Exposure", "Retention"):
        assert heading in text
    assert re.search(r"all vaults\s*│\s*8 │\s*5 │\s*1 │\s*1 │\s*1 │\s*5 │\s*1 │\s*6\.0h", text)
    assert "Ann: acme globex initech at 2026-03-02 10:40" in text  # 09:40 UTC in Amsterdam
    assert "intact: 47 event(s) verified" in text
    assert "\x1b[" not in text  # not a terminal: no colour codes


def test_the_chat_summary_has_the_headline_figures(report: Report) -> None:
    text = render_summary(report)
    assert "Requests 8: 5 approved, 1 declined, 1 timed out, 1 cancelled; 5 reveal(s), 1 code view(s), 6.0h granted" \
        in text
    assert "median 10m, p95 30m (5 approved)" in text
    assert "1 unrevealed grant(s), 3 off-hours reveal(s), 1 multi-vault burst(s), 3 refusal(s)" in text
    assert "Rotation due: 2 item(s)" in text
    assert "next purge 2026-03-11 03:30 removes 2 event(s)" in text


def test_html_escapes_what_people_typed(report: Report) -> None:
    from dataclasses import replace

    hostile = replace(report, data=replace(report.data, refusals=(
        replace(report.data.refusals[0], reason="<script>alert(1)</script>"),)))
    page = render_html(hostile)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "default-src 'none'" in page
    assert page.count("<svg") == 3


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_only() -> None:
    quiet = io.StringIO()
    with progress(quiet) as tracker:
        tracker.start("work", total=3)
        tracker.advance(3)
    assert tracker is QUIET and quiet.getvalue() == ""
    screen = Terminal()
    with progress(screen) as tracker:
        assert isinstance(tracker, RichTracker)
        tracker.start("verifying the hash chain", total=10)
        tracker.advance(10)
        tracker.start("purging", total=None)
    assert "verifying the hash chain" in screen.getvalue()


def _hostile_refusal(report: Report, reason: str) -> Report:
    from dataclasses import replace

    return replace(report, data=replace(report.data, refusals=(replace(report.data.refusals[0], reason=reason),)))


def test_csv_report_cells_are_never_formulas(report: Report) -> None:
    hostile = _hostile_refusal(report, "=HYPERLINK(\"http://evil.example\",\"x\")")
    text = render_csv(hostile)
    assert "'=HYPERLINK(" in text
    rows = list(csv.reader(io.StringIO(text)))
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row)


def test_table_shows_typed_text_without_escapes_or_markup(report: Report) -> None:
    out = Terminal()
    render_table(_hostile_refusal(report, "[blink]x[/blink]\x1b]0;owned\x07\x1b[2J"), out, width=200)
    text = out.getvalue()
    assert "[blink]x[/blink]" in text  # shown as typed, not as rich markup
    assert "owned" not in text and "\x1b[2J" not in text and "\x1b]" not in text
