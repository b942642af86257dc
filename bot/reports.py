"""Access reports: the figures the store aggregates, assembled into one `Report`, and pure renderers.

The numbers come from the store (`ReportSource.report_data`: SQL aggregates on SQLite, aggregation
pipelines on MongoDB), never from reading the trail into Python. This module adds what only the core
knows (the policy's working hours and retention, the item catalogue, the chain check), then renders
the result as a terminal table, CSV, JSON or one self-contained HTML file.

Counting rule: every figure counts the audit events of its type whose time lies in the period
(`since` <= at < `until`), attributed to the request they belong to; granted time runs from
`grant.activated` to `grant.expired`/`grant.revoked` of the same request, clipped to the period.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable
from zoneinfo import ZoneInfo

from bot.audit import format_time, verify_chain
from bot.errors import InputError, NotAllowed
from bot.model import Event, EventDraft, Identity, Item
from bot.parse import MAX_LOOKBACK, format_duration, parse_duration
from bot.policy import Policy, WorkingHours
from bot.ports import Checkpoint, Store
from bot.progress import QUIET, Tracker
from bot.safe_text import csv_cell, display_text

if TYPE_CHECKING:
    from bot.runtime import Runtime

__all__ = [
    "AGE_BUCKETS",
    "BURST_MIN_VAULTS",
    "BURST_WINDOW",
    "DEFAULT_PERIOD",
    "FORMATS",
    "GRANT_LOOKBACK",
    "LATENCY_BUCKETS",
    "LIST_LIMIT",
    "REPORT_STEPS",
    "AccessRow",
    "AgeBucket",
    "ApproverLoad",
    "ChainStatus",
    "ChatReport",
    "ExposureReveal",
    "ExposureRow",
    "LatencyBucket",
    "LatencyStats",
    "OffHoursReveal",
    "PersonCount",
    "Refusal",
    "Report",
    "ReportData",
    "ReportQuery",
    "ReportSource",
    "RetentionSummary",
    "SharedUse",
    "TimelinePoint",
    "UnrevealedGrant",
    "UnusedItem",
    "UserFilter",
    "VaultBurst",
    "build_report",
    "chat_report",
    "next_purge_at",
    "parse_chat_args",
    "parse_period",
    "record_report",
    "render",
    "render_csv",
    "render_html",
    "render_json",
    "render_summary",
    "render_table",
    "report_to_dict",
    "working_intervals",
]

# -- thresholds and shapes (stores import these, so both compute the same thing) ----------------

DEFAULT_PERIOD = "30d"
# "The same requester hitting many customers": this many distinct vaults requested within the window.
BURST_MIN_VAULTS = 3
BURST_WINDOW = timedelta(hours=1)
# How far before the period a grant may have started and still count (clipped) towards granted time.
# Grants ending inside the period are always exact; only grants longer than this that span the whole
# period would be missed.
GRANT_LOOKBACK = timedelta(days=30)
# Anomaly lists keep at most this many rows (newest first); their totals are always exact.
LIST_LIMIT = 100
# Age buckets of the retention section: (label, from days, to days).
AGE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("<30d", 0, 30), ("30-90d", 30, 90), ("90-365d", 90, 365), (">365d", 365, None),
)
# Approval-latency histogram: (label, upper bound in seconds, exclusive; None = no bound).
LATENCY_BUCKETS: tuple[tuple[str, float | None], ...] = (
    ("<1m", 60.0), ("1-5m", 300.0), ("5-15m", 900.0), ("15-60m", 3600.0), ("1-4h", 14400.0), (">4h", None),
)
# The steps a store reports, in order, through `progress` while it computes `report_data`.
REPORT_STEPS = ("requests", "summaries", "latency", "timeline", "anomalies", "exposure")
FORMATS = ("table", "csv", "json", "html")

ProgressCallback = Callable[[str], None]


# -- what a report is asked for ----------------------------------------------------------------


@dataclass(frozen=True)
class UserFilter:
    """A person by user id, on one platform or any (`slack:U123` or `U123`)."""

    user_id: str
    platform: str | None = None

    @classmethod
    def parse(cls, text: str) -> UserFilter:
        platform, sep, user_id = text.strip().partition(":")
        if sep and platform in {"slack", "teams", "cli", "system"} and user_id:
            return cls(user_id=user_id, platform=platform)
        return cls(user_id=text.strip())

    def matches(self, key: str) -> bool:
        platform, _, user_id = key.partition(":")
        return user_id == self.user_id and (self.platform is None or platform == self.platform)

    def __str__(self) -> str:
        return f"{self.platform}:{self.user_id}" if self.platform else self.user_id


@dataclass(frozen=True)
class ReportQuery:
    """The period, filters and policy facts a store needs to aggregate the trail."""

    since: datetime
    until: datetime
    now: datetime
    vault: str | None = None
    item: str | None = None
    user: UserFilter | None = None
    timezone: str = "UTC"
    # Working hours, as UTC intervals covering the period (what SQLite compares against) ...
    working_intervals: tuple[tuple[datetime, datetime], ...] = ()
    # ... and as local rules (what MongoDB evaluates with its own time-zone support). Monday = 0.
    work_days: frozenset[int] = frozenset(range(5))
    work_start_seconds: int = 8 * 3600
    work_end_seconds: int = 18 * 3600
    # Requests whose reveals left a password due for rotation: the store says when each was seen.
    exposed_requests: tuple[str, ...] = ()

    @property
    def open_end(self) -> datetime:
        """Where a grant without an end event stops counting: now, or the period's end if earlier."""
        return min(self.now, self.until)


# -- what the store returns --------------------------------------------------------------------


@dataclass(frozen=True)
class AccessRow:
    """Access figures for one item, vault, requester or approver (or the whole period: `total`)."""

    dimension: str  # total | item | vault | requester | approver
    key: str  # item name, vault name, or person key "platform:user_id"
    label: str = ""  # a person's display name
    vault: str = ""  # for item rows
    requests: int = 0
    approved: int = 0
    declined: int = 0
    timed_out: int = 0
    cancelled: int = 0
    reveals: int = 0
    code_views: int = 0
    granted_seconds: float = 0.0


@dataclass(frozen=True)
class LatencyStats:
    """request.created -> request.approved, over requests approved in the period (nearest-rank)."""

    approved: int = 0
    median_seconds: float | None = None
    p95_seconds: float | None = None


@dataclass(frozen=True)
class LatencyBucket:
    label: str
    count: int


@dataclass(frozen=True)
class ApproverLoad:
    """How much deciding one approver did, and how fast their final approvals came."""

    key: str
    label: str
    approvals: int  # request.approval_added + request.approved by them
    declines: int
    median_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True)
class TimelinePoint:
    day: date  # UTC
    requests: int
    approved: int
    reveals: int
    code_views: int


@dataclass(frozen=True)
class UnrevealedGrant:
    request_id: str
    item: str
    vault: str
    requester: str
    requester_label: str
    activated_at: datetime
    ended_at: datetime | None  # None: still active at the end of the period


@dataclass(frozen=True)
class OffHoursReveal:
    at: datetime
    request_id: str
    item: str
    vault: str
    requester: str
    requester_label: str


@dataclass(frozen=True)
class PersonCount:
    key: str
    label: str
    count: int


@dataclass(frozen=True)
class VaultBurst:
    """A requester who asked for items in BURST_MIN_VAULTS or more vaults within BURST_WINDOW."""

    requester: str
    requester_label: str
    max_vaults: int  # most distinct vaults in any one window
    at: datetime  # the request that first reached max_vaults
    vaults: tuple[str, ...]  # the vaults of that window, sorted
    flagged_requests: int  # requests that completed a window of >= BURST_MIN_VAULTS vaults


@dataclass(frozen=True)
class Refusal:
    """access.refused events of one actor for one reason."""

    actor: str
    actor_label: str
    reason: str
    count: int
    first_at: datetime
    last_at: datetime

    @property
    def self_approval(self) -> bool:
        return self.reason.startswith("self-")


@dataclass(frozen=True)
class SharedUse:
    """An item whose grants overlapped in time: more than one holder at once."""

    item: str
    vault: str
    overlaps: int  # grants that started while an earlier grant of the item was still running
    first_at: datetime  # start of the first overlapping grant
    requesters: tuple[str, ...]  # labels of everyone in an overlapping grant, sorted


@dataclass(frozen=True)
class ExposureReveal:
    """When one exposed request's holder saw the password (from the trail)."""

    request_id: str
    person: str
    label: str
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class ReportData:
    """Everything a store aggregates for one `ReportQuery`."""

    totals: AccessRow = field(default_factory=lambda: AccessRow("total", "all"))
    by_item: tuple[AccessRow, ...] = ()
    by_vault: tuple[AccessRow, ...] = ()
    by_requester: tuple[AccessRow, ...] = ()
    by_approver: tuple[AccessRow, ...] = ()
    latency: LatencyStats = field(default_factory=LatencyStats)
    latency_buckets: tuple[LatencyBucket, ...] = ()
    approver_load: tuple[ApproverLoad, ...] = ()
    timeline: tuple[TimelinePoint, ...] = ()
    unrevealed_total: int = 0
    unrevealed: tuple[UnrevealedGrant, ...] = ()
    off_hours_total: int = 0
    off_hours_by_person: tuple[PersonCount, ...] = ()
    off_hours: tuple[OffHoursReveal, ...] = ()
    bursts: tuple[VaultBurst, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    shared_use: tuple[SharedUse, ...] = ()
    accessed_items: frozenset[str] = frozenset()
    exposure_reveals: tuple[ExposureReveal, ...] = ()


@runtime_checkable
class ReportSource(Protocol):
    """What a report reads: the store's aggregates plus four plain Store methods.

    Both stores satisfy it once they delegate `report_data` to storage/sqlite_reports.py or
    storage/mongo_reports.py.
    """

    kind: str

    async def report_data(self, query: ReportQuery, progress: ProgressCallback | None = None) -> ReportData:
        """Aggregate the trail for `query`; call `progress(step)` after each of REPORT_STEPS."""
        ...

    async def list_items(self) -> list[Item]: ...

    async def count_events(self, *, before: datetime | None = None) -> int: ...

    async def checkpoint(self) -> Checkpoint | None: ...

    def events(
        self,
        *,
        after_seq: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[Event]: ...


# -- sections assembled here -------------------------------------------------------------------


@dataclass(frozen=True)
class UnusedItem:
    item: str
    vault: str


@dataclass(frozen=True)
class ExposureRow:
    """An item revealed and not rotated since: who saw it, and when."""

    item: str
    vault: str
    since: datetime
    seen_by: tuple[str, ...]
    request_ids: tuple[str, ...]
    sightings: tuple[ExposureReveal, ...]

    def days(self, now: datetime) -> float:
        return round((now - self.since).total_seconds() / 86400, 1)


@dataclass(frozen=True)
class AgeBucket:
    label: str
    count: int


@dataclass(frozen=True)
class ChainStatus:
    verified: bool  # False: not checked (--no-verify)
    ok: bool | None = None
    checked: int = 0
    last_seq: int = 0
    from_checkpoint: int | None = None  # the chain was verified from this purge checkpoint
    first_broken_seq: int | None = None
    problem: str = ""


@dataclass(frozen=True)
class RetentionSummary:
    total_events: int
    buckets: tuple[AgeBucket, ...]
    oldest_at: datetime | None
    keep_days: int | None
    legal_hold: bool
    next_purge_at: datetime | None  # None: nothing is ever purged (keep forever or legal hold)
    purge_cutoff: datetime | None  # the next purge deletes events older than this
    would_purge: int
    checkpoint_seq: int | None
    checkpoint_at: datetime | None
    chain: ChainStatus


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    since: datetime
    until: datetime
    timezone: str
    store: str
    vault: str | None
    item: str | None
    user: str | None
    data: ReportData
    unused_items: tuple[UnusedItem, ...]
    exposure: tuple[ExposureRow, ...]
    retention: RetentionSummary

    @property
    def filters(self) -> dict[str, str]:
        return {k: v for k, v in (("vault", self.vault), ("item", self.item), ("user", self.user)) if v}


# -- period and working hours ------------------------------------------------------------------

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _parse_day_or_time(text: str, tz: ZoneInfo, what: str) -> tuple[datetime, bool]:
    """A date (local midnight; True) or an ISO date-time (naive = policy time zone; False)."""
    value = text.strip()
    try:
        if _DATE.match(value):
            return datetime.combine(date.fromisoformat(value), time(0), tz), True
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--{what} {text!r} is not a date.", hint=f"Example: --{what} 2026-01-31") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)), False


def parse_period(now: datetime, tz: ZoneInfo, *, since: str | None = None, start: str | None = None,
                 end: str | None = None) -> tuple[datetime, datetime]:
    """`--since 90d`, or `--from DATE [--to DATE]` (local dates, `--to` inclusive); default 30 days."""
    if since and (start or end):
        raise InputError("Give either --since or --from/--to, not both.", hint="Example: --since 90d")
    if start or end:
        if not start:
            raise InputError("--to needs --from.", hint="Example: --from 2026-01-01 --to 2026-01-31")
        lo, _ = _parse_day_or_time(start, tz, "from")
        hi, whole_day = _parse_day_or_time(end, tz, "to") if end else (now, False)
        if whole_day:
            hi += timedelta(days=1)
        lo, hi = lo.astimezone(UTC), hi.astimezone(UTC)
        if hi <= lo:
            raise InputError("--to must be after --from.", hint="Example: --from 2026-01-01 --to 2026-01-31")
        return lo, hi
    span = parse_duration(since or DEFAULT_PERIOD, maximum=MAX_LOOKBACK)
    if span <= timedelta(0):
        raise InputError("The period must be longer than zero.", hint="Example: --since 30d")
    return now - span, now


def working_intervals(hours: WorkingHours, tz: ZoneInfo, since: datetime,
                      until: datetime) -> tuple[tuple[datetime, datetime], ...]:
    """Working hours that touch [since, until), as sorted UTC [start, end) intervals."""
    day = since.astimezone(tz).date() - timedelta(days=1)
    last = until.astimezone(tz).date() + timedelta(days=1)
    intervals: list[tuple[datetime, datetime]] = []
    while day <= last:
        if day.weekday() in hours.days:
            start = datetime.combine(day, hours.start, tz).astimezone(UTC)
            end = datetime.combine(day, hours.end, tz).astimezone(UTC)
            if end > since and start < until:
                intervals.append((start, end))
        day += timedelta(days=1)
    return tuple(intervals)


def next_purge_at(policy: Policy, now: datetime) -> datetime | None:
    """When the daily purge next runs (policy time zone), or None if nothing is ever purged."""
    retention = policy.retention
    if retention.keep_days is None or retention.legal_hold:
        return None
    local = now.astimezone(policy.timezone)
    candidate = datetime.combine(local.date(), retention.purge_at, policy.timezone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), retention.purge_at, policy.timezone)
    return candidate.astimezone(UTC)


def _query(policy: Policy, now: datetime, since: datetime, until: datetime, *, vault: str | None,
           item: str | None, user: str | None) -> ReportQuery:
    hours = policy.working_hours
    return ReportQuery(
        since=since, until=until, now=now, vault=vault or None, item=item or None,
        user=UserFilter.parse(user) if user else None, timezone=policy.timezone.key,
        working_intervals=working_intervals(hours, policy.timezone, since, until), work_days=hours.days,
        work_start_seconds=hours.start.hour * 3600 + hours.start.minute * 60 + hours.start.second,
        work_end_seconds=hours.end.hour * 3600 + hours.end.minute * 60 + hours.end.second,
    )


# -- assembling ---------------------------------------------------------------------------------


def _exposed(items: Sequence[Item], query: ReportQuery) -> list[Item]:
    rows = [i for i in items if i.rotation_due is not None
            and (query.vault is None or i.vault == query.vault) and (query.item is None or i.name == query.item)]
    if query.user is not None:
        user = query.user
        rows = [i for i in rows if i.rotation_due is not None
                and any(user.matches(p.key) for p in i.rotation_due.seen_by)]
    return rows


def _exposure(items: Sequence[Item], reveals: Sequence[ExposureReveal]) -> tuple[ExposureRow, ...]:
    by_request: dict[str, list[ExposureReveal]] = {}
    for reveal in reveals:
        by_request.setdefault(reveal.request_id, []).append(reveal)
    rows = []
    for item in items:
        due = item.rotation_due
        assert due is not None
        sightings = tuple(sorted((s for r in due.request_ids for s in by_request.get(r, ())),
                                 key=lambda s: (s.first_at, s.request_id)))
        rows.append(ExposureRow(item=item.name, vault=item.vault, since=due.since,
                                seen_by=tuple(p.label for p in due.seen_by), request_ids=due.request_ids,
                                sightings=sightings))
    return tuple(sorted(rows, key=lambda r: (r.vault, r.since, r.item)))


async def _retention(source: ReportSource, policy: Policy, now: datetime, *, verify: bool,
                     tracker: Tracker) -> RetentionSummary:
    total = await source.count_events()
    older = [await source.count_events(before=now - timedelta(days=lo)) for _, lo, _ in AGE_BUCKETS[1:]]
    edges = [total, *older, 0]
    buckets = tuple(AgeBucket(label, edges[i] - edges[i + 1]) for i, (label, _, _) in enumerate(AGE_BUCKETS))
    oldest = None
    async for first in source.events():
        oldest = first.at
        break
    run_at = next_purge_at(policy, now)
    keep_days = policy.retention.keep_days
    cutoff = run_at - timedelta(days=keep_days) if run_at is not None and keep_days is not None else None
    would_purge = await source.count_events(before=cutoff) if cutoff is not None else 0
    checkpoint = await source.checkpoint()
    chain = ChainStatus(verified=False)
    if verify:
        chain = await _verify(source, checkpoint, total, tracker)
    return RetentionSummary(
        total_events=total, buckets=buckets, oldest_at=oldest, keep_days=keep_days,
        legal_hold=policy.retention.legal_hold, next_purge_at=run_at, purge_cutoff=cutoff,
        would_purge=would_purge, checkpoint_seq=checkpoint.seq if checkpoint else None,
        checkpoint_at=checkpoint.at if checkpoint else None, chain=chain,
    )


async def _verify(source: ReportSource, checkpoint: Checkpoint | None, total: int, tracker: Tracker) -> ChainStatus:
    tracker.start("verifying the hash chain", total=total)

    async def counted() -> AsyncIterator[Event]:
        pending = 0
        async for event in source.events():
            yield event
            pending += 1
            if pending == 1000:
                tracker.advance(pending)
                pending = 0
        tracker.advance(pending)

    if checkpoint is None:
        result = await verify_chain(counted())
    else:
        result = await verify_chain(counted(), start_seq=checkpoint.seq, start_hash=checkpoint.hash)
    ok, problem = result.ok, result.problem
    # A store that keeps summary tables for reports (SQLite's request_facts) checks them against the
    # events the chain just vouched for: the report's numbers come from those tables.
    check = getattr(source, "check_report_tables", None)
    if ok and check is not None:
        problem = await check()
        ok = not problem
    return ChainStatus(verified=True, ok=ok, checked=result.checked, last_seq=result.last_seq,
                       from_checkpoint=checkpoint.seq if checkpoint else None,
                       first_broken_seq=result.first_broken_seq, problem=problem)


async def build_report(source: ReportSource, policy: Policy, now: datetime, since: datetime, until: datetime, *,
                       vault: str | None = None, item: str | None = None, user: str | None = None,
                       verify: bool = True, tracker: Tracker = QUIET) -> Report:
    """Ask the store for its aggregates and add the catalogue, retention and chain sections."""
    query = _query(policy, now, since, until, vault=vault, item=item, user=user)
    items = await source.list_items()
    exposed = _exposed(items, query)
    query = replace(query, exposed_requests=tuple(sorted({r for i in exposed if i.rotation_due
                                                           for r in i.rotation_due.request_ids})))
    tracker.start("aggregating the audit trail", total=len(REPORT_STEPS))
    data = await source.report_data(query, lambda step: tracker.advance(1))
    catalogue = [i for i in items if (vault is None or i.vault == vault) and (item is None or i.name == item)
                 and (i.created_at is None or i.created_at < until)]
    unused = tuple(UnusedItem(i.name, i.vault) for i in sorted(catalogue, key=lambda i: (i.vault, i.name))
                   if i.name not in data.accessed_items)
    retention = await _retention(source, policy, now, verify=verify, tracker=tracker)
    return Report(generated_at=now, since=since, until=until, timezone=policy.timezone.key, store=source.kind,
                  vault=query.vault, item=query.item, user=str(query.user) if query.user else None, data=data,
                  unused_items=unused, exposure=_exposure(exposed, data.exposure_reveals), retention=retention)


def report_event(actor: Identity, report: Report, fmt: str) -> EventDraft:
    """The `report.generated` audit event: who produced which report, in which format."""
    return EventDraft("report.generated", actor, None, report.item, report.vault, "", {
        "format": fmt, "filters": report.filters, "since": format_time(report.since),
        "until": format_time(report.until),
    })


async def record_report(store: Store, actor: Identity, report: Report, fmt: str) -> None:
    """Append `report.generated` (before the report leaves the process: fail closed)."""
    await store.append_event(report_event(actor, report, fmt))


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
        "anomalies": {
            "unrevealed_grants": {"total": data.unrevealed_total, "rows": _plain(data.unrevealed)},
            "off_hours_reveals": {"total": data.off_hours_total, "by_person": _plain(data.off_hours_by_person),
                                  "rows": _plain(data.off_hours)},
            "vault_bursts": _plain(data.bursts),
            "refusals": refusals,
            "unused_items": _plain(report.unused_items),
            "shared_use": _plain(data.shared_use),
        },
        "exposure": exposure,
        "retention": _plain(report.retention),
    }


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
    for name, total in (("unrevealed_grants", data.unrevealed_total), ("off_hours_reveals", data.off_hours_total),
                        ("vault_bursts", len(data.bursts)), ("refusals", sum(r.count for r in data.refusals)),
                        ("unused_items", len(report.unused_items)), ("shared_use", len(data.shared_use)),
                        ("exposure", len(report.exposure))):
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


# -- human renderings -----------------------------------------------------------------------------


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h"


def _latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    return format_duration(timedelta(seconds=round(seconds)))


def _local(at: datetime | None, tz: ZoneInfo) -> str:
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M") if at else "-"


def _chain_line(chain: ChainStatus) -> str:
    if not chain.verified:
        return "not verified (--no-verify)"
    start = f" from the checkpoint after event {chain.from_checkpoint}" if chain.from_checkpoint else ""
    if chain.ok:
        return f"intact: {chain.checked} event(s) verified{start}, last seq {chain.last_seq}"
    if chain.first_broken_seq is None:
        return f"BROKEN: {chain.problem}"
    return f"BROKEN at seq {chain.first_broken_seq}: {chain.problem}"


def _purge_line(ret: RetentionSummary, tz: ZoneInfo) -> str:
    if ret.legal_hold:
        return "legal hold: purging is suspended"
    if ret.keep_days is None:
        return "events are kept forever (no retention.keep_days)"
    return (f"keep {ret.keep_days} days; next purge {_local(ret.next_purge_at, tz)} removes {ret.would_purge} "
            f"event(s) older than {_local(ret.purge_cutoff, tz)}")


def _period_line(report: Report, tz: ZoneInfo) -> str:
    filters = " ".join(f"{k}={v}" for k, v in report.filters.items())
    return (f"{_local(report.since, tz)} → {_local(report.until, tz)} ({report.timezone})"
            + (f"  filters: {filters}" if filters else ""))


def render_summary(report: Report) -> str:
    """A few lines for a chat reply."""
    tz = ZoneInfo(report.timezone)
    data, total = report.data, report.data.totals
    anomalies = (f"{data.unrevealed_total} unrevealed grant(s), {data.off_hours_total} off-hours reveal(s), "
                 f"{len(data.bursts)} multi-vault burst(s), {sum(r.count for r in data.refusals)} refusal(s), "
                 f"{len(data.shared_use)} shared item(s), {len(report.unused_items)} unused item(s)")
    return "\n".join([
        f"Access report {_period_line(report, tz)}",
        f"Requests {total.requests}: {total.approved} approved, {total.declined} declined, "
        f"{total.timed_out} timed out, {total.cancelled} cancelled; {total.reveals} reveal(s), "
        f"{total.code_views} code view(s), {_hours(total.granted_seconds)} granted",
        f"Approval latency: median {_latency(data.latency.median_seconds)}, "
        f"p95 {_latency(data.latency.p95_seconds)} ({data.latency.approved} approved)",
        f"Anomalies: {anomalies}",
        f"Rotation due: {len(report.exposure)} item(s) revealed and not rotated since",
        f"Retention: {_purge_line(report.retention, tz)}; chain {_chain_line(report.retention.chain)}",
    ]) + "\n"


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
            _add_row(table, name, *([row.vault] if vault_col else []), *cells, _hours(row.granted_seconds))
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
    console.print(retention)


# -- HTML ------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1100px;
color:#1d2330;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dde6;
padding-bottom:4px}.muted{color:#5d6778}table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{padding:4px 8px;border-bottom:1px solid #eceff4;text-align:left;vertical-align:top}
th{background:#f4f6fa;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #d8dde6;border-radius:6px;padding:8px 12px;
min-width:120px}.card b{display:block;font-size:20px}.bad{color:#b3261e;font-weight:600}.ok{color:#1b7f3b;
font-weight:600}svg{display:block;width:100%;height:auto}#chart-timeline{max-height:320px}.charts{display:grid;
grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:16px}.wide{grid-column:1/-1}
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


def _svg_timeline(points: Sequence[TimelinePoint]) -> str:
    bars = _buckets_for_chart(points)
    w, h, left, bottom, top = 720, 240, 44, 28, 12
    if not bars:
        return (f'<svg id="chart-timeline" role="img" aria-label="access over time" viewBox="0 0 {w} 60" '
                f'xmlns="http://www.w3.org/2000/svg"><text x="10" y="30">no access in this period</text></svg>')
    peak = _nice_max(max(max(r, v) for _, r, v in bars))
    plot_w, plot_h = w - left - 10, h - top - bottom
    step = plot_w / len(bars)
    parts = [f'<svg id="chart-timeline" role="img" aria-label="access over time" viewBox="0 0 {w} {h}" '
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


def _svg_hbars(chart_id: str, title: str, rows: Sequence[tuple[str, int, int]], legend: tuple[str, str]) -> str:
    w, bar, gap, left = 520, 9, 8, 130
    h = max(len(rows), 1) * (2 * bar + gap) + 30
    peak = _nice_max(max((max(a, b) for _, a, b in rows), default=0))
    parts = [f'<svg id="{chart_id}" role="img" aria-label="{_e(title)}" viewBox="0 0 {w} {h}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>']
    for i, (label, a, b) in enumerate(rows):
        y = 24 + i * (2 * bar + gap)
        wa, wb = (w - left - 50) * a / peak, (w - left - 50) * b / peak
        parts.append(f'<text x="{left - 6}" y="{y + bar + 3}" font-size="11" text-anchor="end">{_e(label)}</text>'
                     f'<rect x="{left}" y="{y}" width="{wa:.2f}" height="{bar}" fill="{_BLUE}"><title>{_e(label)}: '
                     f'{a} {legend[0]}</title></rect><text x="{left + wa + 4:.2f}" y="{y + bar - 1}" font-size="10">'
                     f'{a}</text><rect x="{left}" y="{y + bar}" width="{wb:.2f}" height="{bar}" fill="{_ORANGE}">'
                     f'<title>{_e(label)}: {b} {legend[1]}</title></rect><text x="{left + wb + 4:.2f}" '
                     f'y="{y + 2 * bar - 1}" font-size="10">{b}</text>')
    parts.append(f'<rect x="{left}" y="4" width="10" height="10" fill="{_BLUE}"/><text x="{left + 14}" y="13" '
                 f'font-size="11">{_e(legend[0])}</text><rect x="{left + 90}" y="4" width="10" height="10" '
                 f'fill="{_ORANGE}"/><text x="{left + 104}" y="13" font-size="11">{_e(legend[1])}</text></svg>')
    return "".join(parts)


def _svg_latency(buckets: Sequence[LatencyBucket]) -> str:
    w, h, top, bottom = 420, 220, 14, 30
    peak = _nice_max(max((b.count for b in buckets), default=0))
    step = (w - 20) / max(len(buckets), 1)
    parts = [f'<svg id="chart-latency" role="img" aria-label="approval latency distribution" '
             f'viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg"><title>Approval latency distribution'
             f'</title>']
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
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _access_rows(rows: Sequence[AccessRow], *, vault_col: bool = False) -> list[list[Any]]:
    return [[f"{r.label} ({r.key})" if r.label and r.label != r.key else r.key, *([r.vault] if vault_col else []),
             r.requests, r.approved, r.declined, r.timed_out, r.cancelled, r.reveals, r.code_views,
             _hours(r.granted_seconds)] for r in rows]


_ACCESS_HEAD = ("requests", "approved", "declined", "timed out", "cancelled", "reveals", "codes", "granted")


def render_html(report: Report) -> str:
    """One self-contained HTML file: inline CSS and SVG, no script, no external request (CSP enforced)."""
    tz = ZoneInfo(report.timezone)
    data, total, ret = report.data, report.data.totals, report.retention
    chain_class = "ok" if ret.chain.ok else ("bad" if ret.chain.verified else "muted")
    cards = "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in (
        ("requests", total.requests), ("approved", total.approved), ("declined", total.declined),
        ("timed out", total.timed_out), ("reveals", total.reveals), ("granted", _hours(total.granted_seconds)),
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
        '<h2>Charts</h2><div class="charts"><div class="wide"><h3>Access over time</h3>', _svg_timeline(data.timeline),
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
        "<h2>Anomalies</h2>", anomaly_html,
        "<h2>Exposure: revealed and not rotated since</h2>", exposure,
        "<h2>Retention</h2>", retention,
        f'<p>Hash chain: <span class="{chain_class}">{_e(_chain_line(ret.chain))}</span></p>',
        "</body></html>\n",
    ])


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


# -- chat ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatReport:
    """What a chat adapter posts: a short summary plus two files to attach."""

    summary: str
    csv: bytes
    html: bytes
    csv_filename: str
    html_filename: str


CHAT_EXAMPLE = "Example: report 30d vault:acme"


def parse_chat_args(text: str) -> dict[str, str]:
    """`30d vault:acme item:acme-zendesk user:U123 from:2026-01-01 to:2026-01-31` (all optional)."""
    found: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition(":")
        key = key.lower().lstrip("-")
        if sep and key in {"vault", "item", "user", "from", "to"} and value:
            found[key] = value
        elif not sep and "since" not in found:
            found["since"] = word
        else:
            raise InputError(f"I don't understand {word!r} in a report request.", hint=CHAT_EXAMPLE)
    if "since" in found:
        try:
            parse_duration(found["since"], maximum=MAX_LOOKBACK)
        except InputError:
            raise InputError(f"{found['since']!r} is not a period such as 30d.", hint=CHAT_EXAMPLE) from None
    return found


async def chat_report(runtime: Runtime, actor: Identity, args_text: str, *,
                      source: ReportSource | None = None) -> ChatReport:
    """`/access report 30d`: admins only; refusals are audited. Records `report.generated`."""
    if not runtime.policy.is_admin(actor):
        await runtime.service.record_refusal(actor, "report without being an admin")
        raise NotAllowed("Only jitpass admins can produce access reports.")
    args = parse_chat_args(args_text)
    now = runtime.clock.now()
    since, until = parse_period(now, runtime.policy.timezone, since=args.get("since"), start=args.get("from"),
                                end=args.get("to"))
    report = await build_report(source or runtime.store, runtime.policy, now, since, until,
                                vault=args.get("vault"), item=args.get("item"), user=args.get("user"))
    await record_report(runtime.store, actor, report, "chat")
    stem = f"jitpass-report-{report.since:%Y%m%d}-{report.until:%Y%m%d}"
    return ChatReport(summary=render_summary(report), csv=render_csv(report).encode(),
                      html=render_html(report).encode(), csv_filename=f"{stem}.csv", html_filename=f"{stem}.html")

