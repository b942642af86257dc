"""One self-contained HTML file for a `Report` (inline CSS and SVG charts, no scripts)."""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bot.domain.report_data import BURST_MIN_VAULTS, BURST_WINDOW, AccessRow, LatencyBucket, Report, TimelinePoint
from bot.domain.request_text import format_duration
from bot.reports.text import _chain_line, _latency, _local, _period_line, _purge_line, _span, _waiting

if TYPE_CHECKING:
    pass


# -- HTML ------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1100px;
color:#1d2330;padding:0 16px;overflow-wrap:anywhere}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dde6;
padding-bottom:4px}.muted{color:#5d6778}.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;
margin:6px 0 12px;overflow-wrap:normal}
th,td{padding:4px 8px;border-bottom:1px solid #eceff4;text-align:left;vertical-align:top}
th{background:#f4f6fa;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(84px,1fr));gap:8px}.card{border:1px solid
#d8dde6;border-radius:6px;padding:8px 10px;min-width:0;font-size:13px;line-height:1.3}.card b{display:block;
font-size:19px;line-height:1.3;overflow-wrap:anywhere}.bad{color:#b3261e;font-weight:600}.ok{color:#1b7f3b;
font-weight:600}svg{display:block;max-width:100%;height:auto}.charts{display:grid;
grid-template-columns:repeat(auto-fit,minmax(min(100%,520px),1fr));gap:16px}.wide{grid-column:1/-1}
@media (max-width:900px){th,td{padding:4px 5px}}
"""
_BLUE, _ORANGE, _GREY = "#3b6fd4", "#e07b24", "#8a94a6"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return float(step * exp)
    return float(10 * exp)


def _every_day(points: Sequence[TimelinePoint], since: datetime, until: datetime) -> list[TimelinePoint]:
    """One point per UTC day of the period, zero where the trail has nothing: the chart spans the period."""
    found = {p.day: p for p in points}
    first, last = since.astimezone(UTC).date(), (until.astimezone(UTC) - timedelta(microseconds=1)).date()
    days = [first + timedelta(days=i) for i in range(max((last - first).days + 1, 0))]
    return [found.get(d) or TimelinePoint(d, 0, 0, 0, 0) for d in days]


def _buckets_for_chart(points: Sequence[TimelinePoint]) -> list[tuple[str, int, int]]:
    """Days, or ISO weeks (Monday) when the period is long: (label, requests, reveals)."""
    if len(points) <= 120:
        return [(p.day.isoformat(), p.requests, p.reveals) for p in points]
    weeks: dict[date, list[int]] = {}
    for p in points:
        monday = p.day - timedelta(days=p.day.weekday())
        acc = weeks.setdefault(monday, [0, 0])
        acc[0] += p.requests
        acc[1] += p.reveals
    return [(f"week of {d.isoformat()}", v[0], v[1]) for d, v in sorted(weeks.items())]


def _svg_timeline(points: Sequence[TimelinePoint], since: datetime, until: datetime) -> str:
    bars = _buckets_for_chart(_every_day(points, since, until))
    w, h, left, bottom, top = 720, 240, 44, 28, 12
    if not any(r or v for _, r, v in bars):
        return (f'<svg id="chart-timeline" role="img" aria-label="access over time" width="{w}" viewBox="0 0 {w} 60" '
                f'xmlns="http://www.w3.org/2000/svg"><text x="10" y="30" font-size="13">no access in this period'
                f'</text></svg>')
    peak = _nice_max(max(max(r, v) for _, r, v in bars))
    plot_w, plot_h = w - left - 10, h - top - bottom
    step = plot_w / len(bars)
    parts = [f'<svg id="chart-timeline" role="img" aria-label="access over time" width="{w}" viewBox="0 0 {w} {h}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>Requests (bars) and reveals (line) over time</title>']
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{w - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e7ee"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="{_GREY}">'
                     f'{peak * frac:g}</text>')
    line = []
    for i, (label, requests, reveals) in enumerate(bars):
        x = left + i * step
        bh = plot_h * requests / peak
        parts.append(f'<rect x="{x + step * 0.1:.2f}" y="{top + plot_h - bh:.2f}" width="{max(step * 0.8, 0.5):.2f}" '
                     f'height="{bh:.2f}" fill="{_BLUE}"><title>{_e(label)}: {requests} request(s), '
                     f'{reveals} reveal(s)</title></rect>')
        line.append(f"{x + step / 2:.2f},{top + plot_h - plot_h * reveals / peak:.2f}")
    parts.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="{_ORANGE}" stroke-width="2"/>')
    parts.append(f'<text x="{left}" y="{h - 8}" font-size="11" fill="{_GREY}">{_e(bars[0][0])}</text>'
                 f'<text x="{w - 10}" y="{h - 8}" font-size="11" text-anchor="end" fill="{_GREY}">'
                 f'{_e(bars[-1][0])}</text>')
    parts.append(f'<rect x="{w - 190}" y="2" width="10" height="10" fill="{_BLUE}"/><text x="{w - 176}" y="11" '
                 f'font-size="11">requests</text><rect x="{w - 110}" y="6" width="14" height="2" fill="{_ORANGE}"/>'
                 f'<text x="{w - 92}" y="11" font-size="11">reveals</text></svg>')
    return "".join(parts)


_LABEL_CHARS = 19  # what fits left of the bars at 11 px; the whole name is in the bar's tooltip


def _fit(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[:_LABEL_CHARS - 1] + "…"


def _svg_hbars(chart_id: str, title: str, rows: Sequence[tuple[str, int, int]], legend: tuple[str, str]) -> str:
    w, bar, gap, left = 520, 10, 8, 130
    h = max(len(rows), 1) * (2 * bar + gap) + 30
    peak = _nice_max(max((max(a, b) for _, a, b in rows), default=0))
    parts = [f'<svg id="{chart_id}" role="img" aria-label="{_e(title)}" width="{w}" viewBox="0 0 {w} {h}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>']
    for i, (label, a, b) in enumerate(rows):
        y = 24 + i * (2 * bar + gap)
        wa, wb = (w - left - 50) * a / peak, (w - left - 50) * b / peak
        parts.append(f'<text x="{left - 6}" y="{y + bar + 4}" font-size="11" text-anchor="end">{_e(_fit(label))}'
                     f'<title>{_e(label)}</title></text>'
                     f'<rect x="{left}" y="{y}" width="{wa:.2f}" height="{bar}" fill="{_BLUE}"><title>{_e(label)}: '
                     f'{a} {legend[0]}</title></rect><text x="{left + wa + 4:.2f}" y="{y + bar - 1}" font-size="11">'
                     f'{a}</text><rect x="{left}" y="{y + bar}" width="{wb:.2f}" height="{bar}" fill="{_ORANGE}">'
                     f'<title>{_e(label)}: {b} {legend[1]}</title></rect><text x="{left + wb + 4:.2f}" '
                     f'y="{y + 2 * bar - 1}" font-size="11">{b}</text>')
    parts.append(f'<rect x="{left}" y="4" width="10" height="10" fill="{_BLUE}"/><text x="{left + 14}" y="13" '
                 f'font-size="11">{_e(legend[0])}</text><rect x="{left + 90}" y="4" width="10" height="10" '
                 f'fill="{_ORANGE}"/><text x="{left + 104}" y="13" font-size="11">{_e(legend[1])}</text></svg>')
    return "".join(parts)


def _svg_latency(buckets: Sequence[LatencyBucket]) -> str:
    w, h, top, bottom = 420, 220, 14, 30
    peak = _nice_max(max((b.count for b in buckets), default=0))
    step = (w - 20) / max(len(buckets), 1)
    parts = [f'<svg id="chart-latency" role="img" aria-label="approval latency distribution" '
             f'width="{w}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">'
             f'<title>Approval latency distribution</title>']
    for i, b in enumerate(buckets):
        bh = (h - top - bottom) * b.count / peak
        x = 10 + i * step
        parts.append(f'<rect x="{x + 6:.2f}" y="{h - bottom - bh:.2f}" width="{step - 12:.2f}" height="{bh:.2f}" '
                     f'fill="{_BLUE}"><title>{_e(b.label)}: {b.count}</title></rect><text x="{x + step / 2:.2f}" '
                     f'y="{h - bottom - bh - 4:.2f}" font-size="11" text-anchor="middle">{b.count}</text>'
                     f'<text x="{x + step / 2:.2f}" y="{h - 10}" font-size="11" text-anchor="middle">'
                     f'{_e(b.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Collection[int] = ()) -> str:
    head = "".join(f'<th{" class=n" if i in numeric else ""}>{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{_e(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>'
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _access_rows(rows: Sequence[AccessRow], *, vault_col: bool = False) -> list[list[Any]]:
    return [[f"{r.label} ({r.key})" if r.label and r.label != r.key else r.key, *([r.vault] if vault_col else []),
             r.requests, r.approved, r.declined, r.timed_out, r.cancelled, r.reveals, r.code_views,
             _span(r.granted_seconds)] for r in rows]


_ACCESS_HEAD = ("requests", "approved", "declined", "timed out", "cancelled", "reveals", "codes", "granted")


def _trust_html(report: Report) -> str:
    """The chain section's signed checkpoint, witness verdict and SIEM sinks (when the CLI looked)."""
    trust = report.trust
    if trust is None:
        return ""
    witness_class = "muted" if trust.witness_ok is None else ("ok" if trust.witness_ok else "bad")
    siem = "".join(f"<li>{_e(line)}</li>" for line in trust.siem)
    return (f'<p>Latest signed checkpoint: {_e(trust.checkpoint)}</p>'
            f'<p>Witness: <span class="{witness_class}">{_e(trust.witness)}</span></p>'
            + (f"<p>SIEM streaming:</p><ul>{siem}</ul>" if siem else ""))


def render_html(report: Report) -> str:
    """One self-contained HTML file: inline CSS and SVG, no script, no external request (CSP enforced)."""
    tz = ZoneInfo(report.timezone)
    data, total, ret = report.data, report.data.totals, report.retention
    chain_class = "ok" if ret.chain.ok else ("bad" if ret.chain.verified else "muted")
    cards = "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in (
        ("requests", total.requests), ("approved", total.approved), ("declined", total.declined),
        ("timed out", total.timed_out), ("pending", data.pending_total),
        ("failed deliveries", data.failures("delivery")), ("wipes failing", data.failures("wipe")),
        ("reveals", total.reveals), ("granted", _span(total.granted_seconds)),
        ("median approval", _latency(data.latency.median_seconds)),
        ("p95 approval", _latency(data.latency.p95_seconds))))
    vault_bars = [(r.key, r.requests, r.reveals) for r in data.by_vault[:20]]
    n = set(range(1, 9))
    anomalies = [
        ("Grants approved but never revealed", data.unrevealed_total, _html_table(
            ("request", "item", "vault", "requester", "activated", "ended"),
            [(g.request_id, g.item, g.vault, g.requester_label, _local(g.activated_at, tz),
              _local(g.ended_at, tz) if g.ended_at else "still active") for g in data.unrevealed])),
        ("Reveals outside working hours", data.off_hours_total, _html_table(
            ("person", "reveals"), [(p.label, p.count) for p in data.off_hours_by_person], {1}) + _html_table(
            ("when", "request", "item", "vault", "requester"),
            [(_local(r.at, tz), r.request_id, r.item, r.vault, r.requester_label) for r in data.off_hours])),
        (f"Requests in {BURST_MIN_VAULTS}+ vaults within {format_duration(BURST_WINDOW)}", len(data.bursts),
         _html_table(("requester", "most vaults", "first at", "vaults", "flagged requests"),
                     [(b.requester_label, b.max_vaults, _local(b.at, tz), " ".join(b.vaults), b.flagged_requests)
                      for b in data.bursts], {1, 4})),
        ("Refusals (self-approval attempts first)", sum(r.count for r in data.refusals), _html_table(
            ("actor", "what", "count", "first", "last"),
            [(r.actor_label, r.reason, r.count, _local(r.first_at, tz), _local(r.last_at, tz))
             for r in sorted(data.refusals, key=lambda r: (not r.self_approval, -r.count))], {2})),
        ("Items never accessed", len(report.unused_items), _html_table(
            ("item", "vault"), [(u.item, u.vault) for u in report.unused_items])),
        ("Overlapping grants (shared use)", len(data.shared_use), _html_table(
            ("item", "vault", "overlaps", "first overlap", "holders"),
            [(s.item, s.vault, s.overlaps, _local(s.first_at, tz), ", ".join(s.requesters))
             for s in data.shared_use], {2})),
        ("Used in 1Password without a grant (shadow access)", len(report.shadow_access), _html_table(
            ("when", "item", "vault", "person", "e-mail", "action"),
            [(_local(u.at, tz), u.item, u.vault, u.name, u.email, u.action) for u in report.shadow_access])),
    ]
    anomaly_html = "".join(f"<h3>{_e(title)} <span class=muted>({count})</span></h3>{table}"
                           for title, count, table in anomalies)
    exposure = _html_table(("vault", "item", "since", "days", "seen by"), [
        (e.vault, e.item, _local(e.since, tz), f"{e.days(report.generated_at):g}",
         ", ".join(f"{s.label} {_local(s.first_at, tz)}" for s in e.sightings) or ", ".join(e.seen_by))
        for e in report.exposure], {3})
    retention = _html_table(("", ""), [
        ("events by age", "  ".join(f"{b.label}: {b.count}" for b in ret.buckets) + f" (total {ret.total_events})"),
        ("oldest event", _local(ret.oldest_at, tz)), ("policy", _purge_line(ret, tz)),
        ("legal hold", "on" if ret.legal_hold else "off"),
        ("last purge", f"checkpoint after event {ret.checkpoint_seq}" if ret.checkpoint_seq else "never"),
    ])
    return "".join([
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        # No script, no fetch of any kind: the file must open offline and cannot leak what it shows.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:\">",
        "<meta name=viewport content=\"width=device-width,initial-scale=1\">",
        f"<title>jitpass access report {_e(report.since.date())} – {_e(report.until.date())}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>jitpass access report</h1><p class=muted>{_e(_period_line(report, tz))} · store {_e(report.store)}"
        f" · generated {_e(_local(report.generated_at, tz))}</p>",
        f'<div class="cards">{cards}</div>',
        '<h2>Charts</h2><div class="charts"><div class="wide"><h3>Access over time</h3>',
        _svg_timeline(data.timeline, report.since, report.until),
        "</div><div><h3>Per vault</h3>",
        _svg_hbars("chart-vaults", "requests and reveals per vault", vault_bars, ("requests", "reveals")),
        "</div><div><h3>Approval latency</h3>", _svg_latency(data.latency_buckets), "</div></div>",
        "<h2>Access per vault</h2>", _html_table(("vault", *_ACCESS_HEAD), _access_rows(data.by_vault), n),
        "<h2>Access per item</h2>",
        _html_table(("item", "vault", *_ACCESS_HEAD), _access_rows(data.by_item, vault_col=True), set(range(2, 10))),
        "<h2>Access per requester</h2>", _html_table(("requester", *_ACCESS_HEAD), _access_rows(data.by_requester), n),
        "<h2>Access per approver</h2>", _html_table(("approver", *_ACCESS_HEAD), _access_rows(data.by_approver), n),
        "<h2>Approval load</h2>", _html_table(("approver", "approvals", "declines", "median", "p95"), [
            (a.label or a.key, a.approvals, a.declines, _latency(a.median_seconds), _latency(a.p95_seconds))
            for a in data.approver_load], {1, 2, 3, 4}),
        f"<h2>Pending requests <span class=muted>({data.pending_total})</span></h2>",
        _html_table(("request", "item", "vault", "requester", "since", "waiting", "approvals", "reason"), [
            (p.request_id, p.item, p.vault, p.requester_label, _local(p.created_at, tz), _waiting(report, p.created_at),
             p.approvals, p.reason) for p in data.pending], {5, 6}),
        f"<h2>Delivery failures <span class=muted>({data.delivery_failures_total})</span></h2>",
        "<p class=muted>Chat effects that failed and had not succeeded by the period's end: deliveries that never "
        "reached the requester, wipes that failed (the password may still be on screen) or are still retrying, "
        "card posts and messages.</p>",
        _html_table(("request", "effect", "state", "item", "vault", "requester", "attempts", "error", "last failure"), [
            (d.request_id, d.effect, d.state, d.item, d.vault, d.requester_label, d.attempts, d.error,
             _local(d.last_at, tz)) for d in data.delivery_failures], {6}),
        "<h2>Anomalies</h2>", anomaly_html,
        "<h2>Exposure: revealed and not rotated since</h2>", exposure,
        "<h2>Retention</h2>", retention,
        f'<p>Hash chain: <span class="{chain_class}">{_e(_chain_line(ret.chain))}</span></p>',
        _trust_html(report),
        "</body></html>\n",
    ])
