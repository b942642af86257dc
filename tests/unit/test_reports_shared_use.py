"""Overlapping grants (shared use): the streamed pass equals the window-function SQL it replaced."""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta

from bot.domain.audit import format_time
from bot.domain.report_data import ReportQuery
from storage.sqlite.reports import _shared_use, _Sql

# The previous implementation: a running max and a lead() over the grants of each item, in SQL.
_REFERENCE = """
    WITH g AS (
        SELECT request_id, item, vault, requester, max(activated_at, :since) AS s,
               min(coalesce(ended_at, :open_end), :until) AS e
        FROM rq WHERE activated_at IS NOT NULL AND activated_at < :until
                  AND coalesce(ended_at, :open_end) > :since),
    x AS (
        SELECT item, vault, requester, s, e, coalesce(s < max(e) OVER (win ROWS BETWEEN UNBOUNDED PRECEDING
                                                                       AND 1 PRECEDING), 0) AS flagged,
               lead(s) OVER win AS next_s
        FROM g WINDOW win AS (PARTITION BY item ORDER BY s, request_id))
    SELECT item, max(vault), sum(flagged), min(CASE WHEN flagged THEN s END),
           group_concat(DISTINCT CASE WHEN flagged OR coalesce(next_s < e, 0) THEN requester END)
    FROM x GROUP BY item HAVING sum(flagged) > 0
    ORDER BY sum(flagged) DESC, item"""

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _reference(conn: sqlite3.Connection, q: _Sql) -> list[tuple[object, ...]]:
    labels = dict(conn.execute("SELECT k, display FROM people").fetchall())
    return [(item, vault or "", int(n), first,
             tuple(sorted({labels.get(k) or k.partition(":")[2] or k for k in str(who or "").split(",") if k})))
            for item, vault, n, first, who in conn.execute(_REFERENCE, q.params)]


def test_the_streamed_overlap_pass_equals_the_window_sql() -> None:
    rng = random.Random(11)
    since, until = T0 + timedelta(days=10), T0 + timedelta(days=40)
    q = _Sql.of(ReportQuery(since=since, until=until, now=until + timedelta(days=1)))
    people = [f"slack:u{i}" for i in range(6)] + [None, "slack:a,b", "slack:"]
    for trial in range(40):
        with closing(sqlite3.connect(":memory:")) as conn:
            conn.execute("CREATE TEMP TABLE rq (request_id, item, vault, requester, activated_at, ended_at)")
            conn.execute("CREATE TEMP TABLE people (k TEXT PRIMARY KEY, display)")
            conn.executemany("INSERT INTO people VALUES (?, ?)",
                             [(p, f"P{i}" if i % 2 else None) for i, p in enumerate(people) if p])
            rows = []
            for n in range(rng.randrange(0, 120)):
                # Hour steps: many equal starts, grants clipped at both edges, open and zero-length grants.
                start = T0 + timedelta(hours=rng.randrange(8 * 24, 42 * 24, rng.choice((1, 6, 24))))
                end = start + timedelta(hours=rng.randrange(0, 72)) if rng.random() < 0.9 else None
                activated = format_time(start) if rng.random() < 0.9 else None
                rows.append((f"R{rng.randrange(10 ** 6):06d}-{n}", rng.choice(("a", "b", "c", None, "ab")),
                             rng.choice(("v1", "v2", None)), rng.choice(people), activated,
                             format_time(end) if end else None))
            conn.executemany("INSERT INTO rq VALUES (?, ?, ?, ?, ?, ?)", rows)
            expected = _reference(conn, q)
            got = [(s.item, s.vault, s.overlaps, format_time(s.first_at), s.requesters) for s in _shared_use(conn, q)]
            assert got == expected, trial
            if trial == 0:
                assert expected  # the data does overlap
