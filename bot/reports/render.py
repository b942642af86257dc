"""Pure renderers of a `Report`: JSON, CSV, a terminal table and a chat summary."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import fields, is_dataclass, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

from bot.domain.audit import format_time
from bot.domain.errors import InputError
from bot.domain.report_data import BURST_MIN_VAULTS, BURST_WINDOW, FORMATS, AccessRow, Report
from bot.domain.request_text import format_duration
from bot.domain.safe_text import csv_cell, display_text
from bot.reports.html import render_html
from bot.reports.text import _chain_line, _latency, _local, _period_line, _purge_line, _span, _waiting

if TYPE_CHECKING:
    pass


# -- plain values for CSV / JSON -----------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, frozenset | set):
        return sorted(_plain(v) for v in value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value


def report_to_dict(report: Report) -> dict[str, Any]:
    """The report as JSON-ready values; times in the trail's own UTC spelling, durations in seconds."""
    data = report.data
    refusals = [{**_plain(r), "self_approval": r.self_approval} for r in data.refusals]
    exposure = [{**_plain(r), "days": r.days(report.generated_at)} for r in report.exposure]
    return {
        "report": {
            "generated_at": format_time(report.generated_at), "since": format_time(report.since),
            "until": format_time(report.until), "timezone": report.timezone, "store": report.store,
            "filters": report.filters,
        },
        "access": {
            "total": _plain(data.totals), "by_item": _plain(data.by_item), "by_vault": _plain(data.by_vault),
            "by_requester": _plain(data.by_requester), "by_approver": _plain(data.by_approver),
        },
        "latency": {**_plain(data.latency), "buckets": _plain(data.latency_buckets)},
        "approver_load": _plain(data.approver_load),
        "timeline": _plain(data.timeline),
        "pending_requests": {"total": data.pending_total, "rows": [
            {**_plain(p), "waiting_seconds": _waiting_seconds(report, p.created_at)} for p in data.pending]},
        "delivery_failures": {"total": data.delivery_failures_total,
                              "counts": _plain(data.delivery_failure_counts),
                              "rows": _plain(data.delivery_failures)},
        "anomalies": {
            "unrevealed_grants": {"total": data.unrevealed_total, "rows": _plain(data.unrevealed)},
            "off_hours_reveals": {"total": data.off_hours_total, "by_person": _plain(data.off_hours_by_person),
                                  "rows": _plain(data.off_hours)},
            "vault_bursts": _plain(data.bursts),
            "refusals": refusals,
            "unused_items": _plain(report.unused_items),
            "shared_use": _plain(data.shared_use),
            "shadow_access": _plain(report.shadow_access),
        },
        "exposure": exposure,
        "retention": _plain(report.retention),
    }


def _waiting_seconds(report: Report, since: datetime) -> float:
    return round(max(0.0, (min(report.generated_at, report.until) - since).total_seconds()), 3)


def render_json(report: Report) -> str:
    """The report as one JSON document (stable keys; see docs/reports.md)."""
    return json.dumps(report_to_dict(report), indent=2, ensure_ascii=False) + "\n"


CSV_COLUMNS = ("section", "key", "label", "vault", "metric", "value")
_COUNT_FIELDS = ("requests", "approved", "declined", "timed_out", "cancelled", "reveals", "code_views",
                 "granted_seconds")


def _csv_rows(report: Report) -> Iterable[tuple[str, str, str, str, str, Any]]:
    value: Any
    data = report.data
    meta = report_to_dict(report)["report"]
    for key in ("generated_at", "since", "until", "timezone", "store"):
        yield "report", "", "", "", key, meta[key]
    for key, value in report.filters.items():
        yield "report", "", "", "", f"filter_{key}", value
    for section, rows in (("access_total", (data.totals,)), ("access_by_item", data.by_item),
                          ("access_by_vault", data.by_vault), ("access_by_requester", data.by_requester),
                          ("access_by_approver", data.by_approver)):
        for row in rows:
            for metric in _COUNT_FIELDS:
                yield section, row.key, row.label, row.vault, metric, getattr(row, metric)
    for metric in ("approved", "median_seconds", "p95_seconds"):
        yield "latency", "", "", "", metric, getattr(data.latency, metric)
    for bucket in data.latency_buckets:
        yield "latency_buckets", bucket.label, "", "", "count", bucket.count
    for load in data.approver_load:
        for metric in ("approvals", "declines", "median_seconds", "p95_seconds"):
            yield "approver_load", load.key, load.label, "", metric, getattr(load, metric)
    for point in data.timeline:
        for metric in ("requests", "approved", "reveals", "code_views"):
            yield "timeline", point.day.isoformat(), "", "", metric, getattr(point, metric)
    yield "pending_total", "", "", "", "total", data.pending_total
    for w in data.pending:
        for metric, value in (("item", w.item), ("requester", w.requester), ("created_at", w.created_at),
                              ("waiting_seconds", _waiting_seconds(report, w.created_at)),
                              ("approvals", w.approvals), ("reason", w.reason)):
            yield "pending_requests", w.request_id, w.requester_label, w.vault, metric, value
    for c in data.delivery_failure_counts:
        yield "delivery_failure_totals", f"{c.effect} {c.state}", "", "", "count", c.count
    for d in data.delivery_failures:
        for metric, value in (("item", d.item), ("requester", d.requester), ("effect", d.effect), ("state", d.state),
                              ("attempts", d.attempts), ("error", d.error), ("failures", d.failures),
                              ("first_at", d.first_at), ("last_at", d.last_at)):
            yield "delivery_failures", f"{d.request_id} {d.effect}", d.requester_label, d.vault, metric, value
    for name, total in (("unrevealed_grants", data.unrevealed_total), ("off_hours_reveals", data.off_hours_total),
                        ("vault_bursts", len(data.bursts)), ("refusals", sum(r.count for r in data.refusals)),
                        ("unused_items", len(report.unused_items)), ("shared_use", len(data.shared_use)),
                        ("exposure", len(report.exposure)), ("shadow_access", len(report.shadow_access))):
        yield "anomaly_totals", name, "", "", "total", total
    for g in data.unrevealed:
        for metric, value in (("item", g.item), ("requester", g.requester), ("activated_at", g.activated_at),
                              ("ended_at", g.ended_at)):
            yield "unrevealed_grants", g.request_id, g.requester_label, g.vault, metric, value
    for p in data.off_hours_by_person:
        yield "off_hours_by_person", p.key, p.label, "", "count", p.count
    for r in data.off_hours:
        for metric, value in (("at", r.at), ("item", r.item), ("requester", r.requester)):
            yield "off_hours_reveals", r.request_id, r.requester_label, r.vault, metric, value
    for b in data.bursts:
        for metric, value in (("max_vaults", b.max_vaults), ("at", b.at), ("vaults", " ".join(b.vaults)),
                              ("flagged_requests", b.flagged_requests)):
            yield "vault_bursts", b.requester, b.requester_label, "", metric, value
    for f in data.refusals:
        key = f"{f.actor} {f.reason}"
        for metric, value in (("reason", f.reason), ("count", f.count), ("first_at", f.first_at),
                              ("last_at", f.last_at), ("self_approval", f.self_approval)):
            yield "refusals", key, f.actor_label, "", metric, value
    for u in report.unused_items:
        yield "unused_items", u.item, "", u.vault, "unused", True
    for s in data.shared_use:
        for metric, value in (("overlaps", s.overlaps), ("first_at", s.first_at),
                              ("requesters", " ".join(s.requesters))):
            yield "shared_use", s.item, "", s.vault, metric, value
    for use in report.shadow_access:
        for metric, value in (("at", use.at), ("email", use.email), ("action", use.action)):
            yield "shadow_access", use.item, use.name, use.vault, metric, value
    for e in report.exposure:
        seen = "; ".join(f"{s.label} {format_time(s.first_at)}" for s in e.sightings) or ", ".join(e.seen_by)
        for metric, value in (("since", e.since), ("days", e.days(report.generated_at)),
                              ("seen_by", ", ".join(e.seen_by)), ("seen", seen),
                              ("requests", " ".join(e.request_ids))):
            yield "exposure", e.item, "", e.vault, metric, value
    ret = report.retention
    for age in ret.buckets:
        yield "retention_age", age.label, "", "", "events", age.count
    chain = ret.chain
    for metric, value in (("total_events", ret.total_events), ("oldest_at", ret.oldest_at),
                          ("keep_days", ret.keep_days), ("legal_hold", ret.legal_hold),
                          ("next_purge_at", ret.next_purge_at), ("purge_cutoff", ret.purge_cutoff),
                          ("would_purge", ret.would_purge), ("checkpoint_seq", ret.checkpoint_seq),
                          ("chain_verified", chain.verified), ("chain_ok", chain.ok),
                          ("chain_checked", chain.checked), ("chain_first_broken_seq", chain.first_broken_seq),
                          ("chain_problem", chain.problem)):
        yield "retention", "", "", "", metric, value


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, float):
        return f"{round(value, 3):g}" if abs(value) < 1e15 else str(value)
    if isinstance(value, str):  # names and reasons from chat: never a spreadsheet formula (OWASP)
        return csv_cell(display_text(value))
    return str(value)


def render_csv(report: Report) -> str:
    """One CSV in long form: `section,key,label,vault,metric,value`, one figure per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in _csv_rows(report):
        writer.writerow([_csv_value(v) for v in row])
    return out.getvalue()


def render_summary(report: Report) -> str:
    """A few lines for a chat reply."""
    tz = ZoneInfo(report.timezone)
    data, total = report.data, report.data.totals
    anomalies = (f"{data.unrevealed_total} unrevealed grant(s), {data.off_hours_total} off-hours reveal(s), "
                 f"{len(data.bursts)} multi-vault burst(s), {sum(r.count for r in data.refusals)} refusal(s), "
                 f"{len(data.shared_use)} shared item(s), {len(report.unused_items)} unused item(s), "
                 f"{len(report.shadow_access)} use(s) in 1Password without a grant")
    return "\n".join([
        f"Access report {_period_line(report, tz)}",
        f"Requests {total.requests}: {total.approved} approved, {total.declined} declined, "
        f"{total.timed_out} timed out, {total.cancelled} cancelled; {total.reveals} reveal(s), "
        f"{total.code_views} code view(s), {_span(total.granted_seconds)} granted",
        f"Approval latency: median {_latency(data.latency.median_seconds)}, "
        f"p95 {_latency(data.latency.p95_seconds)} ({data.latency.approved} approved)",
        _pending_line(report),
        _failures_line(report),
        f"Anomalies: {anomalies}",
        f"Rotation due: {len(report.exposure)} item(s) revealed and not rotated since",
        f"Retention: {_purge_line(report.retention, tz)}; chain {_chain_line(report.retention.chain)}",
        *_trust_lines(report),
    ]) + "\n"


def _pending_line(report: Report) -> str:
    """How many requests wait for a decision at the end of the period, and the oldest."""
    data = report.data
    if not data.pending_total:
        return "Pending: no request waiting for a decision"
    oldest = data.pending[0]
    return (f"Pending: {data.pending_total} request(s) waiting for a decision; oldest {oldest.request_id} "
            f"{oldest.item} ({oldest.requester_label}), waiting {_waiting(report, oldest.created_at)}")


def _failures_line(report: Report) -> str:
    """Chat effects that failed: deliveries that never arrived, wipes failed or still retrying."""
    data = report.data
    if not data.delivery_failures_total:
        return "Delivery failures: none"
    other = data.delivery_failures_total - data.failures("delivery") - data.failures("wipe")
    return (f"Delivery failures: {data.failures('delivery', 'failed')} delivery(ies) never reached the requester, "
            f"{data.failures('wipe', 'failed')} wipe(s) failed, {data.failures('wipe', 'retrying')} wipe(s) still "
            f"retrying, {other} other chat effect(s) failed")


def _trust_lines(report: Report) -> list[str]:
    """The signed checkpoint and the witness verdict (when the report carries them)."""
    trust = report.trust
    if trust is None:
        return []
    return [f"Signed checkpoint: {trust.checkpoint}", f"Witness: {trust.witness}"]


def _add_row(table: Any, *cells: str) -> None:
    """A table row of plain text: names from chat are neither rich markup nor terminal escapes."""
    from rich.text import Text

    table.add_row(*(Text(display_text(cell)) for cell in cells))


def render_table(report: Report, out: TextIO, *, width: int | None = None) -> None:
    """The report as rich tables on a terminal (plain text when `out` is not one)."""
    from rich.console import Console
    from rich.table import Table

    tz = ZoneInfo(report.timezone)
    console = Console(file=out, width=width or 120, highlight=False)
    data = report.data
    console.print(f"[bold]jitpass access report[/bold]  {_period_line(report, tz)}")

    def access_table(title: str, first: str, rows: Sequence[AccessRow], *, vault_col: bool = False) -> None:
        table = Table(title=title, title_justify="left", title_style="bold")
        table.add_column(first)
        if vault_col:
            table.add_column("vault")
        for name in ("requests", "approved", "declined", "timed out", "cancelled", "reveals", "codes", "granted"):
            table.add_column(name, justify="right")
        for row in rows:
            name = f"{row.label} ({row.key})" if row.label and row.label != row.key else row.key
            cells = [str(x) for x in (row.requests, row.approved, row.declined, row.timed_out, row.cancelled,
                                      row.reveals, row.code_views)]
            _add_row(table, name, *([row.vault] if vault_col else []), *cells, _span(row.granted_seconds))
        console.print(table)

    access_table("Access per vault", "vault", [*data.by_vault, replace(data.totals, key="all vaults")])
    access_table("Access per item", "item", data.by_item, vault_col=True)
    access_table("Access per requester", "requester", data.by_requester)
    access_table("Access per approver (requests they decided)", "approver", data.by_approver)

    lat = data.latency
    console.print(f"[bold]Approval latency: median {_latency(lat.median_seconds)}, p95 {_latency(lat.p95_seconds)} "
                  f"over {lat.approved} approval(s)[/bold]; distribution: "
                  + "  ".join(f"{b.label} {b.count}" for b in data.latency_buckets))
    load = Table(title="Approval load", title_justify="left", title_style="bold")
    for name in ("approver", "approvals", "declines", "median", "p95"):
        load.add_column(name, justify="left" if name == "approver" else "right")
    for a in data.approver_load:
        _add_row(load, a.label or a.key, str(a.approvals), str(a.declines), _latency(a.median_seconds),
                     _latency(a.p95_seconds))
    console.print(load)

    pending = Table(title=f"Pending requests ({data.pending_total}), oldest first", title_justify="left",
                    title_style="bold")
    for name in ("request", "item", "vault", "requester", "since", "waiting", "approvals", "reason"):
        pending.add_column(name, justify="right" if name in {"waiting", "approvals"} else "left")
    for p in data.pending:
        _add_row(pending, p.request_id, p.item, p.vault, p.requester_label, _local(p.created_at, tz),
                 _waiting(report, p.created_at), str(p.approvals), p.reason)
    console.print(pending)

    failures = Table(title=f"Delivery failures ({data.delivery_failures_total}): chat effects that failed, newest "
                     "first", title_justify="left", title_style="bold")
    for name in ("request", "effect", "state", "item", "vault", "requester", "attempts", "error", "last failure"):
        failures.add_column(name, justify="right" if name == "attempts" else "left")
    for d in data.delivery_failures:
        _add_row(failures, d.request_id, d.effect, d.state, d.item, d.vault, d.requester_label, str(d.attempts),
                 d.error, _local(d.last_at, tz))
    console.print(failures)

    anomalies = Table(title="Anomalies", title_justify="left", title_style="bold")
    anomalies.add_column("kind")
    anomalies.add_column("count", justify="right")
    anomalies.add_column("details")
    _add_row(anomalies, "approved, never revealed", str(data.unrevealed_total), ", ".join(
        f"{g.request_id} {g.item} ({g.requester_label})" for g in data.unrevealed[:5]))
    _add_row(anomalies, "reveals outside working hours", str(data.off_hours_total), ", ".join(
        f"{p.label} {p.count}" for p in data.off_hours_by_person[:5]))
    _add_row(anomalies, f">= {BURST_MIN_VAULTS} vaults within {format_duration(BURST_WINDOW)}", str(len(data.bursts)),
                      ", ".join(f"{b.requester_label}: {' '.join(b.vaults)} at {_local(b.at, tz)}"
                                for b in data.bursts[:5]))
    for refusal in data.refusals:
        kind = "self-approval attempt" if refusal.self_approval else "refused"
        _add_row(anomalies, kind, str(refusal.count), f"{refusal.actor_label}: {refusal.reason} "
                                                    f"(last {_local(refusal.last_at, tz)})")
    _add_row(anomalies, "items never accessed", str(len(report.unused_items)),
                      ", ".join(u.item for u in report.unused_items[:8])
                      + (" …" if len(report.unused_items) > 8 else ""))
    _add_row(anomalies, "overlapping grants (shared use)", str(len(data.shared_use)), ", ".join(
        f"{s.item} ×{s.overlaps} ({', '.join(s.requesters)})" for s in data.shared_use[:5]))
    _add_row(anomalies, "used in 1Password without a grant (shadow access)", str(len(report.shadow_access)),
             ", ".join(f"{u.item} by {u.email} ({u.action}, {_local(u.at, tz)})" for u in report.shadow_access[:5]))
    console.print(anomalies)

    exposure = Table(title="Exposure: revealed and not rotated since (oldest first per vault)",
                     title_justify="left", title_style="bold")
    for name in ("vault", "item", "since", "days", "seen by"):
        exposure.add_column(name, justify="right" if name == "days" else "left")
    for e in report.exposure:
        seen = ", ".join(f"{s.label} {_local(s.first_at, tz)}" for s in e.sightings) or ", ".join(e.seen_by)
        _add_row(exposure, e.vault, e.item, _local(e.since, tz), f"{e.days(report.generated_at):g}", seen)
    console.print(exposure)

    ret = report.retention
    retention = Table(title="Retention", title_justify="left", title_style="bold", show_header=False)
    retention.add_column("what")
    retention.add_column("value")
    _add_row(retention, "events by age", "  ".join(f"{b.label}: {b.count}" for b in ret.buckets)
                      + f"  (total {ret.total_events})")
    _add_row(retention, "oldest event", _local(ret.oldest_at, tz))
    _add_row(retention, "policy", _purge_line(ret, tz))
    _add_row(retention, "legal hold", "on" if ret.legal_hold else "off")
    if ret.checkpoint_seq is not None:
        _add_row(retention, "last purge",
                          f"checkpoint after event {ret.checkpoint_seq} ({_local(ret.checkpoint_at, tz)})")
    _add_row(retention, "hash chain", _chain_line(ret.chain))
    if report.trust is not None:
        _add_row(retention, "signed checkpoint", report.trust.checkpoint)
        _add_row(retention, "witness", report.trust.witness)
        for line in report.trust.siem:
            _add_row(retention, "SIEM", line)
    console.print(retention)


def render(report: Report, fmt: str, out: TextIO) -> None:
    """Write the report in one of FORMATS."""
    if fmt == "table":
        render_table(report, out)
    elif fmt == "csv":
        out.write(render_csv(report))
    elif fmt == "json":
        out.write(render_json(report))
    elif fmt == "html":
        out.write(render_html(report))
    else:
        raise InputError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
