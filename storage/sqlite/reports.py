"""Report aggregates on SQLite: GROUP BY and window functions over request_facts and the events table.

The store keeps one request_facts row per request, updated by a trigger in the transaction of every
event append (storage/sqlite/store.py). A report copies the rows of the requests whose events all lie in the
period into a per-request temp table as they stand, and folds the few others (events on both sides of
a period edge) from their events; every figure is then a small GROUP BY over that table or an indexed
scan of one event type. Nothing is read into Python row by row except the (capped) anomaly lists and the
period's grants in start order, streamed once (overlapping grants: a running max, one item at a time).

The report runs on two read connections pinned to the same snapshot (equal max(seq)): one works
through the per-request sections, the other, in a thread of its own, through the sections read
straight from the events (timeline, approver load, off-hours reveals, bursts, refusals, exposure).
In WAL mode the store keeps appending events while a long report runs.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from bot.domain.audit import format_time, parse_time
from bot.domain.errors import StoreError
from bot.domain.report_data import (
    BURST_MIN_VAULTS,
    BURST_WINDOW,
    CLOSING_TYPES,
    EFFECT_FAILURE_TYPES,
    EFFECT_SUCCESS_TYPES,
    GRANT_LOOKBACK,
    LATENCY_BUCKETS,
    LIST_LIMIT,
    AccessRow,
    ApproverLoad,
    DeliveryFailure,
    ExposureReveal,
    FailureCount,
    LatencyBucket,
    LatencyStats,
    OffHoursReveal,
    PendingRequest,
    PersonCount,
    ProgressCallback,
    Refusal,
    ReportData,
    ReportQuery,
    SharedUse,
    TimelinePoint,
    UnrevealedGrant,
    VaultBurst,
)
from storage.common import REQUEST_EVENT_TYPES, display_label, order_access_rows

__all__ = [
    "REPORT_INDEXES",
    "compute_report",
    "count_facts_disagreements",
    "ensure_report_indexes",
    "facts_disagreements",
    "report_data",
]

# The one index reports need: every per-type range scan below is answered from it alone (seq is the
# rowid, so it rides along). Idempotent, so a later schema migration may add the same statement.
REPORT_INDEXES = (
    "CREATE INDEX IF NOT EXISTS events_report "
    "ON events (type, at, request_id, vault, item, actor_platform, actor_user_id)",
)


def _seconds_between(later: str, earlier: str) -> str:
    """SQL for the seconds from `earlier` to `later`, rounded to the millisecond julianday resolves."""
    return f"round((julianday({later}) - julianday({earlier})) * 86400.0, 3)"


def _who(alias: str = "") -> str:
    """The person key `platform:user_id` of an events row."""
    return f"{alias}actor_platform || ':' || {alias}actor_user_id"


# Memory the report's sorter and temp tables may use before spilling to temp files (KiB).
_CACHE_KIB = 8 * 1024


def ensure_report_indexes(conn: sqlite3.Connection) -> None:
    """Create the report index if it is missing (once per store: a one-off scan of the table)."""
    names = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    if "events_report" not in names:
        for statement in REPORT_INDEXES:
            conn.execute(statement)


def _in(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)  # only our own constant type names go through here



def _time(value: Any) -> datetime:
    return parse_time(str(value))


def _maybe_time(value: Any) -> datetime | None:
    return None if value is None else parse_time(str(value))


@dataclass(frozen=True)
class _Sql:
    """The query's filters as SQL fragments plus named parameters."""

    params: dict[str, Any]
    events: str  # extra WHERE terms for events rows (vault / item)
    actor: str  # WHERE term: the event's actor is the filtered user
    user: bool
    linked: int = 0  # accounts linked to persons ([people]): params pa<i> -> pp<i>
    user_linked: int = 0  # persons the user filter names: params up<i>

    @classmethod
    def of(cls, query: ReportQuery, max_seq: int = 0) -> _Sql:
        params: dict[str, Any] = {
            "since": format_time(query.since), "until": format_time(query.until),
            "lo": format_time(query.since - GRANT_LOOKBACK), "open_end": format_time(query.open_end),
            "vault": query.vault, "item": query.item, "limit": LIST_LIMIT, "max_seq": max_seq,
            "user_id": query.user.user_id if query.user else None,
            "platform": query.user.platform if query.user else None,
        }
        events = (" AND vault = :vault" if query.vault else "") + (" AND item = :item" if query.item else "")
        actor = "(actor_user_id = :user_id AND (:platform IS NULL OR actor_platform = :platform))"
        if accounts := query.accounts_of_user():  # one of a person's accounts names all of them
            params |= {f"ua{i}": account for i, account in enumerate(accounts)}
            linked = ", ".join(f":ua{i}" for i in range(len(accounts)))
            actor = f"({actor} OR actor_platform || ':' || actor_user_id IN ({linked}))"
        for i, (account, person) in enumerate(query.people):
            params[f"pa{i}"], params[f"pp{i}"] = account, person
        persons = query.persons_of_user()
        for i, person in enumerate(persons):
            params[f"up{i}"] = person
        return cls(params, events, actor, query.user is not None, len(query.people), len(persons))

    def person(self, key: str) -> str:
        """SQL for the person an account key (SQL `key`) belongs to: its [people] person, else itself."""
        if not self.linked:
            return key
        cases = " ".join(f"WHEN :pa{i} THEN :pp{i}" for i in range(self.linked))
        return f"(CASE {key} {cases} ELSE {key} END)"

    def who(self, alias: str = "") -> str:
        """The person of an events row's actor (alias "e." for a joined row)."""
        return self.person(_who(alias))

    def user_persons(self) -> str:
        """SQL list of the persons the user filter names through a linked account ('' when none)."""
        return ", ".join(f":up{i}" for i in range(self.user_linked))

    def where(self, alias: str) -> str:
        """The vault / item terms for the rows of table `alias`."""
        return self.events.replace(" vault =", f" {alias}.vault =").replace(" item =", f" {alias}.item =")

    def requests_only(self, alias: str = "") -> str:
        """With a user filter: only events of the requests that involve the user."""
        column = f"{alias}request_id" if alias else "request_id"
        return f" AND {column} IN (SELECT request_id FROM rq)" if self.user else ""


# Per-request counters are packed into two integer sums (8- or 20-bit fields): one aggregate step per
# row instead of one per counter, which is most of the cost of the per-request pass on a large trail.
_C1 = (("n_created", 8), ("n_approved", 16), ("n_declined", 24), ("n_cancelled", 32), ("n_timed_out", 40))
_C2 = (("n_reveals_any", 0), ("n_reveals", 20), ("n_codes", 40))
_IN_PERIOD = "(at >= :since)"
_PACK_C1 = f"""CASE type
    WHEN 'request.created' THEN 1 + ({_IN_PERIOD} << 8) WHEN 'request.approved' THEN {_IN_PERIOD} << 16
    WHEN 'request.declined' THEN {_IN_PERIOD} << 24 WHEN 'request.cancelled' THEN {_IN_PERIOD} << 32
    WHEN 'request.timed_out' THEN {_IN_PERIOD} << 40 WHEN 'grant.expired' THEN {1 << 48}
    WHEN 'grant.revoked' THEN {1 << 48} ELSE 0 END"""
_PACK_C2 = f"""CASE type
    WHEN 'grant.revealed' THEN 1 + ({_IN_PERIOD} << 20) WHEN 'grant.code_shown' THEN {_IN_PERIOD} << 40 ELSE 0 END"""


def _unpack(column: str, fields: tuple[tuple[str, int], ...], width: int) -> str:
    return ", ".join(f"({column} >> {shift}) & {(1 << width) - 1} AS {name}" for name, shift in fields)


def _fold_from_events(conn: sqlite3.Connection, q: _Sql, source: str) -> None:
    """Add to rq the requests of `source` (events rows), folded from their events in the window.

    A request's events all name the same item and vault, so those are bare columns of the GROUP BY
    (SQLite takes them from any row of the group). Its first event is request.created and its last a
    grant's end, which makes min/max of seq and at enough to place both.
    """
    involves = f", max({q.actor}) AS involves_user" if q.user else ", 0 AS involves_user"
    conn.execute(f"""
        INSERT INTO rq
        SELECT request_id, item, vault,
               CASE WHEN c1 & 255 THEN first_seq END AS created_seq,
               CASE WHEN c1 & 255 THEN first_at END AS created_at,
               requester, approved_at, decider, decided_seq, activated_at,
               CASE WHEN (c1 >> 48) & 255 THEN last_at END AS ended_at,
               last_at >= :since AS in_period, {_unpack("c1", _C1, 8)}, {_unpack("c2", _C2, 20)},
               involves_user, NULL AS granted
        FROM (SELECT request_id, item, vault, min(seq) AS first_seq, min(at) AS first_at, max(at) AS last_at,
                     max(CASE WHEN type = 'request.created' THEN {q.who()} END) AS requester,
                     min(CASE WHEN type = 'request.approved' THEN at END) AS approved_at,
                     max(CASE WHEN type IN ('request.approved', 'request.declined') THEN {q.who()} END) AS decider,
                     max(CASE WHEN type IN ('request.approved', 'request.declined') THEN seq END) AS decided_seq,
                     min(CASE WHEN type = 'grant.activated' THEN at END) AS activated_at,
                     sum({_PACK_C1}) AS c1, sum({_PACK_C2}) AS c2{involves}
              FROM {source}
              WHERE type IN ({_in(REQUEST_EVENT_TYPES)}) AND at >= :lo AND at < :until AND request_id IS NOT NULL
                    AND seq <= :max_seq
              GROUP BY request_id)
""", q.params)



def _granted(activated: str, ended: str) -> str:
    """SQL for a grant's seconds inside the period (0 without a grant)."""
    seconds = _seconds_between(f"min(coalesce({ended}, :open_end), :until)", f"max({activated}, :since)")
    return f"iif({activated} IS NULL, 0.0, max(0.0, {seconds}))"


def _inside(alias: str) -> str:
    """A request_facts row whose events all lie in the period."""
    return f"({alias}.first_at >= :since AND {alias}.last_at < :until)"


def _build_requests(conn: sqlite3.Connection, q: _Sql, *, facts: bool = True) -> None:
    """rq: one row per request with activity in the period (or a grant overlapping it).

    A request whose events all lie inside the period is one request_facts row as it stands (the
    store keeps those rows in step with every append). The few others (events on both sides of
    `since` or `until`, or in the look-back window only) are folded from their events in the window,
    found through the request index. `facts=False` folds every request from its events (the reference
    the tests hold the shortcut to).
    """
    inside = _inside("f") if facts else "0"
    involves = (f"request_id IN (SELECT request_id FROM events INDEXED BY events_report WHERE type IN "
                f"({_in(REQUEST_EVENT_TYPES)}) AND at >= :lo AND at < :until AND {q.actor})") if q.user else "0"
    conn.execute(f"""
        CREATE TEMP TABLE rq AS
        SELECT request_id, item, vault, iif(n_created, first_seq, NULL) AS created_seq,
               iif(n_created, first_at, NULL) AS created_at, {q.person("requester")} AS requester, approved_at,
               {q.person("decider")} AS decider, decided_seq,
               activated_at, iif(n_ended, last_at, NULL) AS ended_at, 1 AS in_period, n_created, n_approved,
               n_declined, n_cancelled, n_timed_out, n_reveals AS n_reveals_any, n_reveals, n_codes,
               {involves} AS involves_user, {_granted("activated_at", "iif(n_ended, last_at, NULL)")} AS granted
        FROM request_facts f WHERE {inside}{q.where("f")}""", q.params)
    _fold_from_events(conn, q, f"""
        (SELECT e.* FROM request_facts f CROSS JOIN events e INDEXED BY events_request ON e.request_id = f.request_id
         WHERE NOT {inside} AND f.last_at >= :lo AND f.first_at < :until{q.where("f")})""")
    # Requests created (or grants started) before the scanned window: their start, from their facts.
    conn.execute(f"""
        UPDATE rq SET (created_seq, created_at, requester) = (
            SELECT f.created_seq, f.created_at, {q.person("f.requester")} FROM request_facts f
            WHERE f.request_id = rq.request_id)
        WHERE created_seq IS NULL""", q.params)
    conn.execute("""
        UPDATE rq SET activated_at = (
            SELECT f.activated_at FROM request_facts f WHERE f.request_id = rq.request_id)
        WHERE activated_at IS NULL AND ended_at IS NOT NULL""")
    conn.execute(f"UPDATE rq SET granted = {_granted('activated_at', 'ended_at')} WHERE granted IS NULL", q.params)
    if q.user:
        linked = f" OR requester IN ({q.user_persons()})" if q.user_linked else ""
        conn.execute(f"""
            DELETE FROM rq WHERE NOT (involves_user OR (requester IS NOT NULL
                AND substr(requester, instr(requester, ':') + 1) = :user_id
                AND (:platform IS NULL OR substr(requester, 1, instr(requester, ':') - 1) = :platform)){linked})""",
                     q.params)
    conn.execute("DELETE FROM rq WHERE NOT in_period AND granted <= 0")
    if q.user:  # the event sections narrow to rq's requests
        conn.execute("CREATE UNIQUE INDEX rq_id ON rq (request_id)")


_SUMS = ("sum(n_created), sum(n_approved), sum(n_declined), sum(n_timed_out), sum(n_cancelled), "
         "sum(n_reveals), sum(n_codes), sum(granted)")


def _row(dimension: str, key: str, label: str, vault: str, sums: Sequence[Any]) -> AccessRow:
    n = [int(v or 0) for v in sums[:7]]
    return AccessRow(dimension, key, label, vault, requests=n[0], approved=n[1], declined=n[2], timed_out=n[3],
                     cancelled=n[4], reveals=n[5], code_views=n[6], granted_seconds=round(float(sums[7] or 0.0), 3))



def _summaries(conn: sqlite3.Connection) -> dict[str, Any]:
    # Two passes over rq (per item and vault, per requester and decider); every breakdown is a sum of
    # one of those small tables.
    sums = ", ".join(f"{term} AS c{i}" for i, term in enumerate(_SUMS.split(", ")))
    again = ", ".join(f"sum(c{i})" for i in range(len(_SUMS.split(", "))))
    conn.execute(f"CREATE TEMP TABLE by_iv AS SELECT item, vault, {sums} FROM rq GROUP BY item, vault")
    conn.execute(f"""CREATE TEMP TABLE by_rd AS SELECT requester, decider, {sums}, max(created_seq) AS created_seq,
                     max(decided_seq) AS decided_seq FROM rq GROUP BY requester, decider""")
    # Display names: each person's most recent request / decision carries their current label.
    conn.execute("""
        CREATE TEMP TABLE people AS
        SELECT p.k AS k, json_extract(e.actor, '$.display') AS display
        FROM (SELECT k, max(s) AS s FROM (
                  SELECT requester AS k, max(created_seq) AS s FROM by_rd WHERE requester IS NOT NULL GROUP BY 1
                  UNION ALL
                  SELECT decider, max(decided_seq) FROM by_rd WHERE decider IS NOT NULL GROUP BY 1)
              GROUP BY k) p
        JOIN events e ON e.seq = p.s""")
    conn.execute("CREATE UNIQUE INDEX people_k ON people (k)")
    totals = conn.execute(f"SELECT {again} FROM by_iv").fetchone()
    by_item = [_row("item", r[0], "", r[1] or "", r[2:]) for r in conn.execute(
        f"SELECT item, max(vault), {again} FROM by_iv WHERE item IS NOT NULL GROUP BY item")]
    by_vault = [_row("vault", r[0], "", "", r[1:]) for r in conn.execute(
        f"SELECT vault, {again} FROM by_iv WHERE vault IS NOT NULL GROUP BY vault")]
    people: dict[str, list[AccessRow]] = {}
    for dimension, column in (("requester", "requester"), ("approver", "decider")):
        rows = conn.execute(f"""
            SELECT g.*, p.display FROM (SELECT {column} AS k, {again} FROM by_rd WHERE {column} IS NOT NULL
                                        GROUP BY {column}) g
            LEFT JOIN people p ON p.k = g.k""").fetchall()
        people[dimension] = [_row(dimension, r[0], display_label(r[-1], r[0]), "", r[1:-1]) for r in rows]
    return {
        "totals": _row("total", "all", "", "", totals),
        "by_item": order_access_rows(by_item), "by_vault": order_access_rows(by_vault),
        "by_requester": order_access_rows(people["requester"]), "by_approver": order_access_rows(people["approver"]),
    }


_MEDIAN = "({n} + 1) / 2 - 1"  # nearest rank, ceil(p * n), as an OFFSET
_P95 = "(95 * {n} + 99) / 100 - 1"


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _latency(conn: sqlite3.Connection, q: _Sql) -> dict[str, Any]:
    """Approval latency over rq: percentiles by nearest rank, read off an index with OFFSET."""
    conn.execute(f"""
        CREATE TEMP TABLE lat AS
        SELECT decider, {_seconds_between("approved_at", "created_at")} AS s
        FROM rq WHERE n_approved > 0 AND created_at IS NOT NULL ORDER BY s""")
    conn.execute("CREATE INDEX lat_ds ON lat (decider, s)")
    n = int(conn.execute("SELECT count(*) FROM lat").fetchone()[0])
    # Inserted in order of s, so a row's rowid is its rank.
    overall = conn.execute(f"""
        SELECT (SELECT s FROM lat WHERE rowid = 1 + {_MEDIAN.format(n=":n")}),
               (SELECT s FROM lat WHERE rowid = 1 + {_P95.format(n=":n")})""", {"n": n}).fetchone() if n else None
    # LIMIT / OFFSET take no correlated values: one indexed read per approver (a few dozen at most).
    per_approver = {d: (d, k, *conn.execute(f"""
        SELECT (SELECT s FROM lat WHERE decider IS :d ORDER BY s LIMIT 1 OFFSET {_MEDIAN.format(n=":n")}),
               (SELECT s FROM lat WHERE decider IS :d ORDER BY s LIMIT 1 OFFSET {_P95.format(n=":n")})""",
        {"d": d, "n": k}).fetchone()) for d, k in conn.execute("SELECT decider, count(*) FROM lat GROUP BY decider")}
    bounds: list[str] = []
    lower: float | None = None
    for _, upper in LATENCY_BUCKETS:
        terms = ([f"s >= {lower!r}"] if lower is not None else []) + ([f"s < {upper!r}"] if upper is not None else [])
        bounds.append(f"sum({' AND '.join(terms) or '1'})")
        lower = upper
    counts = conn.execute(f"SELECT {', '.join(bounds)} FROM lat").fetchone()
    buckets = tuple(LatencyBucket(label, int(counts[i] or 0)) for i, (label, _) in enumerate(LATENCY_BUCKETS))
    stats = LatencyStats(approved=n, median_seconds=_seconds(overall[0]),
                         p95_seconds=_seconds(overall[1])) if overall else LatencyStats()
    return {"latency": stats, "latency_buckets": buckets, "per_approver": per_approver}


def _approver_loads(conn: sqlite3.Connection, q: _Sql) -> list[tuple[Any, ...]]:
    """(person, approvals, declines, display) of everyone who decided in the period."""
    return conn.execute(f"""
        SELECT g.k, g.approvals, g.declines, json_extract(e.actor, '$.display')
        FROM (SELECT {q.who()} AS k, sum(type IN ('request.approval_added', 'request.approved')) AS approvals,
                     sum(type = 'request.declined') AS declines, max(seq) AS s
              FROM events INDEXED BY events_report
              WHERE type IN ('request.approval_added', 'request.approved', 'request.declined')
                AND at >= :since AND at < :until AND seq <= :max_seq{q.events}{q.requests_only()}
              GROUP BY k) g
        JOIN events e ON e.seq = g.s""", q.params).fetchall()


def _approver_load(loads: Sequence[tuple[Any, ...]], per_approver: dict[Any, Any]) -> tuple[ApproverLoad, ...]:
    return tuple(sorted((ApproverLoad(
        key=k, label=display_label(display, k), approvals=int(approvals), declines=int(declines),
        median_seconds=_seconds(per_approver[k][2]) if k in per_approver else None,
        p95_seconds=_seconds(per_approver[k][3]) if k in per_approver else None,
    ) for k, approvals, declines, display in loads), key=lambda a: (-(a.approvals + a.declines), a.key)))


def _timeline(conn: sqlite3.Connection, q: _Sql) -> tuple[TimelinePoint, ...]:
    rows = conn.execute(f"""
        SELECT substr(at, 1, 10) AS day, sum(type = 'request.created'), sum(type = 'request.approved'),
               sum(type = 'grant.revealed'), sum(type = 'grant.code_shown')
        FROM events INDEXED BY events_report
        WHERE type IN ('request.created', 'request.approved', 'grant.revealed', 'grant.code_shown')
          AND at >= :since AND at < :until{q.events}{q.requests_only()}
        GROUP BY day ORDER BY day""", q.params)
    return tuple(TimelinePoint(date.fromisoformat(d), int(a), int(b), int(c), int(e)) for d, a, b, c, e in rows)


def _unrevealed(conn: sqlite3.Connection, q: _Sql) -> dict[str, Any]:
    rows = conn.execute("""
        SELECT rq.request_id, rq.item, rq.vault, rq.requester, p.display, rq.activated_at, rq.ended_at,
               count(*) OVER () AS total
        FROM rq LEFT JOIN people p ON p.k = rq.requester
        WHERE rq.activated_at >= :since AND rq.activated_at < :until AND rq.n_reveals_any = 0
        ORDER BY rq.activated_at DESC, rq.request_id LIMIT :limit""", q.params).fetchall()
    return {
        "unrevealed_total": int(rows[0][7]) if rows else 0,
        "unrevealed": tuple(UnrevealedGrant(r[0], r[1] or "", r[2] or "", r[3] or "", display_label(r[4], r[3]),
                                            _time(r[5]), _maybe_time(r[6])) for r in rows),
    }


def _pending(conn: sqlite3.Connection, q: _Sql) -> dict[str, Any]:
    """Requests created before the period's end (within the look-back) and not decided by then.

    With a user filter: requests the user made or gave an approval to."""
    involves = f", max({q.actor}) AS involves" if q.user else ""
    rows = conn.execute(f"""
        SELECT g.request_id, e.item, e.vault, {q.who("e.")}, json_extract(e.actor, '$.display'), e.at, e.reason,
               g.approvals, count(*) OVER () AS total
        FROM (SELECT request_id, max(CASE WHEN type = 'request.created' THEN seq END) AS created_seq,
                     sum(type = 'request.approval_added') AS approvals,
                     sum(type IN ({_in(CLOSING_TYPES)})) AS closed{involves}
              FROM events INDEXED BY events_report
              WHERE type IN ('request.created', 'request.approval_added', {_in(CLOSING_TYPES)})
                AND at >= :lo AND at < :until AND seq <= :max_seq AND request_id IS NOT NULL{q.events}
              GROUP BY request_id) g
        JOIN events e ON e.seq = g.created_seq
        WHERE g.closed = 0{" AND g.involves" if q.user else ""}
        ORDER BY e.at, e.seq LIMIT :limit""", q.params).fetchall()
    return {
        "pending_total": int(rows[0][8]) if rows else 0,
        "pending": tuple(PendingRequest(r[0], r[1] or "", r[2] or "", r[3] or "", display_label(r[4], r[3]),
                                        _time(r[5]), r[6] or "", int(r[7])) for r in rows),
    }


def _delivery_failures(conn: sqlite3.Connection, q: _Sql) -> dict[str, Any]:
    """Per request and effect: the last outcome in the period, when it is a failure (final or still retrying)."""
    failed = _in(EFFECT_FAILURE_TYPES)
    conn.execute(f"""
        CREATE TEMP TABLE eff AS
        SELECT g.request_id AS request_id, g.effect AS effect, g.failures AS failures, g.first_at AS first_at,
               e.at AS last_at, e.item AS item, e.vault AS vault,
               iif(coalesce(json_extract(e.details, '$.final'), 0), 'failed', 'retrying') AS state,
               coalesce(json_extract(e.details, '$.attempt'), 0) AS attempts,
               coalesce(json_extract(e.details, '$.error'), '') AS error
        FROM (SELECT request_id, effect, max(seq) AS last_seq, sum(type IN ({failed})) AS failures,
                     min(iif(type IN ({failed}), at, NULL)) AS first_at
              FROM (SELECT seq, at, type, request_id,
                           CASE type WHEN 'grant.delivery_failed' THEN 'delivery' WHEN 'grant.revealed' THEN 'delivery'
                                     WHEN 'grant.wipe_failed' THEN 'wipe' WHEN 'grant.wiped' THEN 'wipe'
                                     ELSE coalesce(json_extract(details, '$.kind'), 'chat') END AS effect
                    FROM events
                    WHERE type IN ({failed}, {_in(EFFECT_SUCCESS_TYPES)}) AND at >= :since AND at < :until
                      AND seq <= :max_seq AND request_id IS NOT NULL{q.events}{q.requests_only()})
              GROUP BY request_id, effect) g
        JOIN events e ON e.seq = g.last_seq
        WHERE e.type IN ({failed})""", q.params)
    counts = conn.execute("SELECT effect, state, count(*) FROM eff GROUP BY effect, state ORDER BY effect, state")
    rows = conn.execute(f"""
        SELECT eff.*, {q.person("f.requester")}, json_extract(c.actor, '$.display')
        FROM eff LEFT JOIN request_facts f ON f.request_id = eff.request_id LEFT JOIN events c ON c.seq = f.created_seq
        ORDER BY eff.last_at DESC, eff.request_id, eff.effect LIMIT :limit""", q.params).fetchall()
    return {
        "delivery_failure_counts": tuple(FailureCount(e, s, int(n)) for e, s, n in counts),
        "delivery_failures": tuple(DeliveryFailure(
            r[0], r[5] or "", r[6] or "", r[10] or "", display_label(r[11], r[10]), r[1], r[7], int(r[8]), str(r[9]),
            int(r[2]), _time(r[3]), _time(r[4])) for r in rows),
    }


def _off_hours(conn: sqlite3.Connection, q: _Sql, query: ReportQuery) -> dict[str, Any]:
    conn.execute("CREATE TEMP TABLE work (start_at TEXT PRIMARY KEY, end_at TEXT NOT NULL) WITHOUT ROWID")
    conn.executemany("INSERT OR REPLACE INTO work VALUES (?, ?)",
                     [(format_time(a), format_time(b)) for a, b in query.working_intervals])
    conn.execute(f"""
        CREATE TEMP TABLE offh AS
        SELECT e.seq AS seq, e.at AS at, e.request_id AS request_id, e.item AS item, e.vault AS vault,
               {q.who("e.")} AS who
        FROM events e INDEXED BY events_report
        WHERE e.type = 'grant.revealed' AND e.at >= :since AND e.at < :until{q.events}{q.requests_only("e.")}
          AND NOT coalesce((SELECT w.end_at > e.at FROM work w WHERE w.start_at <= e.at
                            ORDER BY w.start_at DESC LIMIT 1), 0)""", q.params)
    total = int(conn.execute("SELECT count(*) FROM offh").fetchone()[0])
    by_person = conn.execute("""
        SELECT g.who, g.n, json_extract(e.actor, '$.display')
        FROM (SELECT who, count(*) AS n, max(seq) AS s FROM offh GROUP BY who) g JOIN events e ON e.seq = g.s
        ORDER BY g.n DESC, g.who""").fetchall()
    labels = {who: display_label(display, who) for who, _, display in by_person}
    rows = conn.execute("SELECT at, request_id, item, vault, who FROM offh ORDER BY at DESC, seq DESC LIMIT :limit",
                        q.params).fetchall()
    return {
        "off_hours_total": total,
        "off_hours_by_person": tuple(PersonCount(who, labels[who], int(n)) for who, n, _ in by_person),
        "off_hours": tuple(OffHoursReveal(_time(at), rid or "", item or "", vault or "", who, labels.get(who, who))
                           for at, rid, item, vault, who in rows),
    }


def _bursts(conn: sqlite3.Connection, q: _Sql, query: ReportQuery) -> tuple[VaultBurst, ...]:
    # Vault and item filters do not apply: a burst is about one person across vaults.
    user = f" AND {q.actor}" if q.user else ""
    window = int(BURST_WINDOW.total_seconds())
    conn.execute(f"""
        CREATE TEMP TABLE cr AS SELECT seq, {q.who()} AS who, at, vault, julianday(at) AS t
        FROM events INDEXED BY events_report
        WHERE type = 'request.created' AND at >= :since AND at < :until AND vault IS NOT NULL
              AND seq <= :max_seq{user}""", q.params)
    conn.execute("CREATE INDEX cr_who ON cr (who, at, vault)")
    # Cheap necessary condition first: at least BURST_MIN_VAULTS requests within the window. The
    # candidates carry their own person and time, so the exact check is one index range per candidate.
    conn.execute(f"""
        CREATE TEMP TABLE cand AS
        SELECT seq, who, at FROM (SELECT seq, who, at, count(*) OVER (PARTITION BY who ORDER BY t
                                  RANGE BETWEEN {window / 86400!r} PRECEDING AND CURRENT ROW) AS n FROM cr)
        WHERE n >= {BURST_MIN_VAULTS}""")
    rows = conn.execute(f"""
        WITH hits AS (
            SELECT a.seq AS seq, a.who AS who, a.at AS at, count(DISTINCT b.vault) AS n,
                   group_concat(DISTINCT b.vault) AS vaults
            FROM cand a JOIN cr b ON b.who = a.who AND b.at <= a.at
                 AND b.at > strftime('%Y-%m-%dT%H:%M:%S', a.at, '-{window} seconds') || substr(a.at, 20)
            GROUP BY a.seq HAVING n >= {BURST_MIN_VAULTS}),
        ranked AS (
            SELECT *, row_number() OVER (PARTITION BY who ORDER BY n DESC, at, seq) AS rk,
                   count(*) OVER (PARTITION BY who) AS flagged FROM hits)
        SELECT r.who, r.n, r.at, r.vaults, r.flagged, json_extract(e.actor, '$.display')
        FROM ranked r JOIN events e ON e.seq = r.seq WHERE r.rk = 1
        ORDER BY r.n DESC, r.flagged DESC, r.who""").fetchall()
    bursts = (VaultBurst(who, display_label(display, who), int(n), _time(at), tuple(sorted(str(vaults).split(","))),
                         int(flagged)) for who, n, at, vaults, flagged, display in rows)
    return tuple(b for b in bursts if query.vault is None or query.vault in b.vaults)


def _refusals(conn: sqlite3.Connection, q: _Sql) -> tuple[Refusal, ...]:
    user = f" AND {q.actor}" if q.user else ""
    rows = conn.execute(f"""
        SELECT g.k, g.reason, g.n, g.first_at, g.last_at, json_extract(e.actor, '$.display')
        FROM (SELECT {q.who()} AS k, reason, count(*) AS n, min(at) AS first_at, max(at) AS last_at, max(seq) AS s
              FROM events WHERE type = 'access.refused' AND at >= :since AND at < :until{q.events}{user}
              GROUP BY k, reason) g
        JOIN events e ON e.seq = g.s
        ORDER BY g.reason NOT LIKE 'self-%', g.n DESC, g.k, g.reason""", q.params).fetchall()
    return tuple(Refusal(k, display_label(display, k), reason, int(n), _time(a), _time(b))
                 for k, reason, n, a, b, display in rows)


_NO_ITEM = object()  # the "previous item" before the first grant (item may be NULL)


def _shared_use(conn: sqlite3.Connection, q: _Sql) -> tuple[SharedUse, ...]:
    # Grants of one item in start order: one overlaps an earlier one when it starts before the latest end
    # of all earlier grants (a running max over the rows before it); an earlier one is involved when the
    # next start falls before its own end. SQLite sorts the grants once; the running max and the
    # look-back at the previous grant are one streamed pass here (a window pass with a lead() over the
    # same rows cost SQLite 2.5x as much). Only one item's tallies are held at a time.
    # Each item's requesters become their sorted labels as soon as its grants are counted.
    labels = {str(k): display_label(display, str(k)) for k, display in conn.execute("SELECT k, display FROM people")}

    def named(who: set[Any]) -> tuple[str, ...]:
        keys = {k for w in who if w is not None for k in str(w).split(",") if k}
        return tuple(sorted({labels.get(k, display_label(None, k)) for k in keys}))

    rows = conn.execute("""
        SELECT item, vault, requester, max(activated_at, :since) AS s, min(coalesce(ended_at, :open_end), :until) AS e
        FROM rq WHERE activated_at IS NOT NULL AND activated_at < :until AND coalesce(ended_at, :open_end) > :since
        ORDER BY item, s, request_id""", q.params)
    found: list[tuple[Any, Any, int, Any, tuple[str, ...]]] = []
    item: Any = _NO_ITEM
    vault: Any = None
    flagged = 0
    first: Any = None
    who: set[Any] = set()
    latest: Any = None  # the latest end of the item's grants so far
    previous: tuple[Any, Any] = (None, None)  # the previous grant's (requester, end)
    for row_item, row_vault, requester, s, e in rows:
        if row_item != item:
            if flagged:
                found.append((item, vault, flagged, first, named(who)))
            item, vault, flagged, first, who, latest, previous = row_item, None, 0, None, set(), None, (None, None)
        if row_vault is not None and (vault is None or row_vault > vault):
            vault = row_vault  # max(vault)
        if previous[1] is not None and s < previous[1]:
            who.add(previous[0])  # the previous grant was still running when this one started
        if latest is not None and s < latest:
            flagged += 1
            first = s if first is None else first  # in start order: the first flagged start is the earliest
            who.add(requester)
        latest = e if latest is None or e > latest else latest
        previous = (requester, e)
    if flagged:
        found.append((item, vault, flagged, first, named(who)))
    found.sort(key=lambda r: (-r[2], r[0] is not None, r[0] or ""))  # sum(flagged) DESC, item (NULL first)
    return tuple(SharedUse(item, vault or "", int(n), _time(first), names) for item, vault, n, first, names in found)


def _exposure(conn: sqlite3.Connection, q: _Sql, query: ReportQuery) -> tuple[ExposureReveal, ...]:
    found: list[ExposureReveal] = []
    ids = list(query.exposed_requests)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ", ".join(f":r{i}" for i in range(len(chunk)))
        rows = conn.execute(f"""
            SELECT g.request_id, g.k, g.first_at, g.last_at, json_extract(e.actor, '$.display')
            FROM (SELECT request_id, {q.who()} AS k, min(at) AS first_at, max(at) AS last_at, max(seq) AS s
                  FROM events WHERE type = 'grant.revealed' AND request_id IN ({marks})
                  GROUP BY request_id, k) g
            JOIN events e ON e.seq = g.s""", {**q.params, **{f"r{i}": r for i, r in enumerate(chunk)}}).fetchall()
        found += [ExposureReveal(rid, k, display_label(display, k), _time(a), _time(b))
                  for rid, k, a, b, display in rows]
    return tuple(sorted(found, key=lambda r: (r.first_at, r.request_id)))


def _begin(conn: sqlite3.Connection) -> int:
    """Open a read transaction (its snapshot starts with the first read) and return max(seq) in it."""
    conn.execute("BEGIN")
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])


def _pinned(conn: sqlite3.Connection, side: sqlite3.Connection | None) -> tuple[int, bool]:
    """Begin on both connections until they see the same snapshot; (max seq, whether `side` joined).

    Appends and purges change max(seq), and request_facts changes only along with an event, so equal
    max(seq) means equal snapshots. A writer racing every attempt leaves the whole report on `conn`.
    """
    for _ in range(5 if side is not None else 0):
        assert side is not None
        max_seq = _begin(conn)
        if _begin(side) == max_seq:
            return max_seq, True
        conn.execute("ROLLBACK")
        side.execute("ROLLBACK")
    return _begin(conn), False


def _event_sections(conn: sqlite3.Connection, q: _Sql, query: ReportQuery) -> dict[str, Any]:
    """The sections read straight from the events table (no rq): one thread's share of the report."""
    return {
        "loads": _approver_loads(conn, q), "timeline": _timeline(conn, q), **_off_hours(conn, q, query),
        **_pending(conn, q), **_delivery_failures(conn, q),
        "bursts": _bursts(conn, q, query), "refusals": _refusals(conn, q),
        "exposure_reveals": _exposure(conn, q, query),
    }


def _request_sections(conn: sqlite3.Connection, q: _Sql, step: Callable[[str], None], *,
                      facts: bool) -> dict[str, Any]:
    """The sections over the per-request table rq, built first."""
    _build_requests(conn, q, facts=facts)
    step("requests")
    summaries = _summaries(conn)
    step("summaries")
    latency = _latency(conn, q)
    step("latency")
    return {
        **summaries, **latency, **_unrevealed(conn, q), "shared_use": _shared_use(conn, q),
        "accessed_items": frozenset(str(r[0]) for r in conn.execute(
            "SELECT DISTINCT item FROM by_iv WHERE item IS NOT NULL")),
    }


def compute_report(conn: sqlite3.Connection, query: ReportQuery, step: Callable[[str], None], *,
                   side: sqlite3.Connection | None = None, facts: bool = True) -> ReportData:
    """Every figure of the report, from one read snapshot on `conn` (an autocommit connection).

    With `side` (a second connection to the same file), the event-table sections run on it in a
    thread of their own, on the same snapshot, while `conn` works through the per-request sections:
    two cores, about half the time. A user filter narrows the event sections to rq's requests, so
    that report runs on `conn` alone.
    """
    ensure_report_indexes(conn)
    q = _Sql.of(query)
    parallel = side is not None and not q.user
    q.params["max_seq"], parallel = _pinned(conn, side if parallel else None)
    joined = [conn, side] if parallel and side is not None else [conn]
    try:
        if parallel and side is not None:
            with ThreadPoolExecutor(1) as pool:
                events_part = pool.submit(_event_sections, side, _Sql.of(query, q.params["max_seq"]), query)
                requests_part = _request_sections(conn, q, step, facts=facts)
                found = events_part.result()
        else:
            requests_part = _request_sections(conn, q, step, facts=facts)
            found = _event_sections(conn, q, query)
        step("timeline")
        step("anomalies")
        step("exposure")
    finally:
        for one in joined:
            one.execute("ROLLBACK")  # read-only: the temp tables go with it
    per_approver = requests_part.pop("per_approver")
    return ReportData(**requests_part, approver_load=_approver_load(found.pop("loads"), per_approver), **found)


def _open(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise StoreError(f"the database file {path} does not exist")
    conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
    except BaseException:  # a file that is not a database: close it, never leave it to the collector
        conn.close()
        raise
    return conn


async def report_data(path: Path, query: ReportQuery, progress: ProgressCallback | None = None) -> ReportData:
    """Aggregate the store file at `path` for `query`, in a worker thread (the event loop stays free)."""
    loop = asyncio.get_running_loop()

    def step(name: str) -> None:
        if progress is not None:
            loop.call_soon_threadsafe(progress, name)

    def run() -> ReportData:
        with closing(_open(path)) as conn, closing(_open(path)) as side:
            return compute_report(conn, query, step, side=side)

    return await asyncio.to_thread(run)


def count_facts_disagreements(conn: sqlite3.Connection, recompute: str) -> int:
    """Requests whose request_facts row differs from `recompute` (the same row folded from the events)."""
    columns = ", ".join(f"c{i}" for i in range(22))
    row = conn.execute(f"""
        WITH r({columns}) AS ({recompute}),
        folded AS (
            SELECT c0, c1, c2, c3, c4, c5, c6, c7, e.at, e.actor_platform || ':' || e.actor_user_id,
                   c10, c11, c12, c13, c14, c15, c16, c17, c18, c19, c20, c21
            FROM r LEFT JOIN events e ON e.seq = r.c7)
        SELECT (SELECT count(*) FROM (SELECT * FROM request_facts EXCEPT SELECT * FROM folded))
             + (SELECT count(*) FROM (SELECT * FROM folded EXCEPT SELECT * FROM request_facts))""").fetchone()
    return int(row[0])


async def facts_disagreements(path: Path, recompute: str) -> int:
    """count_facts_disagreements on a read connection of its own, in a worker thread."""
    def run() -> int:
        with closing(_open(path)) as conn:
            conn.execute("BEGIN")
            try:
                return count_facts_disagreements(conn, recompute)
            finally:
                conn.execute("ROLLBACK")

    return await asyncio.to_thread(run)
