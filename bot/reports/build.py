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

import difflib
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from bot.domain.audit import format_time, verify_chain
from bot.domain.errors import InputError, NotFound
from bot.domain.model import Event, EventDraft, Identity, Item
from bot.domain.policy import Policy, WorkingHours
from bot.domain.report_data import (
    AGE_BUCKETS,
    DEFAULT_PERIOD,
    REPORT_STEPS,
    AgeBucket,
    ChainStatus,
    ExposureReveal,
    ExposureRow,
    Report,
    ReportData,
    ReportQuery,
    RetentionSummary,
    ShadowUse,
    UnusedItem,
    UserFilter,
)
from bot.domain.request_text import MAX_LOOKBACK, parse_duration
from bot.ports import QUIET, Checkpoint, ReportSource, Store, Tracker

if TYPE_CHECKING:
    pass


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
        people=tuple(sorted((account, f"person:{name}") for account, name in policy.people.items())),
    )


# -- filters -----------------------------------------------------------------------------------


def _policy_accounts(policy: Policy) -> set[str]:
    """Every "platform:user_id" the policy names: approvers (defaults and per vault), admins, [people]."""
    accounts = set(policy.people)
    for members in (policy.defaults.approvers, policy.admins, *(v.approvers for v in policy.vaults.values())):
        accounts |= {f"{platform}:{user_id}" for platform, ids in members.users.items() for user_id in ids}
    return accounts


def _close(name: str, pool: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(name, sorted(set(pool)), n=3, cutoff=0.5)


def unknown_filter(policy: Policy, items: Sequence[Item], data: ReportData, *, vault: str | None,
                   item: str | None, user: UserFilter | None) -> NotFound | None:
    """The refusal for a filter that names nothing jitpass knows (not in the catalogue or the policy, and
    nothing in the period's trail), with close names; None when every filter names something real.

    A name that only the trail knows (a removed item, a person no longer in the policy) is accepted when the
    period holds their requests, decisions or refusals."""
    seen_items = {row.key for row in data.by_item}
    if vault is not None:
        known = set(policy.vaults) | {i.vault for i in items} | {row.key for row in data.by_vault}
        if vault not in known:
            return NotFound(f"No vault named {vault!r}: the report filter --vault names no vault in the policy "
                            "or the catalogue, and nothing in the period.", _close(vault, known))
    if item is not None:
        known = {i.name for i in items} | seen_items
        if item not in known:
            return NotFound(f"No item named {item!r}: the report filter --item names no item in the catalogue, "
                            "and nothing in the period.", _close(item, known))
    if user is not None:
        accounts = _policy_accounts(policy) | {row.key for row in (*data.by_requester, *data.by_approver)} \
            | {r.actor for r in data.refusals}
        if not any(user.matches(account) for account in accounts):
            pool = accounts | {a.partition(":")[2] for a in accounts}
            return NotFound(f"No user {str(user)!r}: the report filter --user names nobody in the policy, and "
                            "nobody by that id requested, decided or was refused in the period.",
                            _close(str(user), pool))
    return None


# -- assembling ---------------------------------------------------------------------------------


def _exposed(items: Sequence[Item], query: ReportQuery) -> list[Item]:
    rows = [i for i in items if i.rotation_due is not None
            and (query.vault is None or i.vault == query.vault) and (query.item is None or i.name == query.item)]
    if query.user is not None:
        rows = [i for i in rows if i.rotation_due is not None
                and any(query.names_account(p.key) for p in i.rotation_due.seen_by)]
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
    if ok:
        problem = await source.check_report_tables()
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
    if (unknown := unknown_filter(policy, items, data, vault=query.vault, item=query.item, user=query.user)):
        raise unknown  # before anything is recorded: a typo is not a report of "no access"
    catalogue = [i for i in items if (vault is None or i.vault == vault) and (item is None or i.name == item)
                 and (i.created_at is None or i.created_at < until)]
    unused = tuple(UnusedItem(i.name, i.vault) for i in sorted(catalogue, key=lambda i: (i.vault, i.name))
                   if i.name not in data.accessed_items)
    retention = await _retention(source, policy, now, verify=verify, tracker=tracker)
    shadow = await _shadow_access(source, query)
    return Report(generated_at=now, since=since, until=until, timezone=policy.timezone.key, store=source.kind,
                  vault=query.vault, item=query.item, user=str(query.user) if query.user else None, data=data,
                  unused_items=unused, exposure=_exposure(exposed, data.exposure_reveals), retention=retention,
                  shadow_access=shadow)


async def _shadow_access(source: ReportSource, query: ReportQuery) -> tuple[ShadowUse, ...]:
    """Direct uses of served 1Password items without a grant (`access.shadow`), in the period and filters."""
    rows = []
    async for event in source.events(since=query.since, until=query.until, types={"access.shadow"}):
        actor = event.actor
        if (query.vault and event.vault != query.vault) or (query.item and event.item != query.item):
            continue
        if query.user is not None and (actor is None or not query.names_account(f"{actor.platform}:{actor.user_id}")):
            continue
        rows.append(ShadowUse(at=event.at, item=event.item or "", vault=event.vault or "",
                              email=str(event.details.get("email") or (actor.user_id if actor else "")),
                              name=actor.display if actor else "", action=str(event.details.get("action") or "")))
    return tuple(rows)


def report_event(actor: Identity, report: Report, fmt: str) -> EventDraft:
    """The `report.generated` audit event: who produced which report, in which format."""
    return EventDraft("report.generated", actor, None, report.item, report.vault, "", {
        "format": fmt, "filters": report.filters, "since": format_time(report.since),
        "until": format_time(report.until),
    })


async def record_report(store: Store, actor: Identity, report: Report, fmt: str) -> None:
    """Append `report.generated` (before the report leaves the process: fail closed)."""
    await store.append_event(report_event(actor, report, fmt))
