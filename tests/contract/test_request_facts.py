"""request_facts (SQLite): the per-request table reports read stays what the events say.

Real files throughout: appends through the store and from two other processes at once, a purge
that cuts through requests, and a store created at the schema before the table existed.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.domain.audit import format_time
from bot.domain.model import Event, EventDraft, Identity
from bot.domain.report_data import ReportData
from bot.reports.build import build_report
from storage.sqlite.reports import compute_report
from storage.sqlite.store import MIGRATIONS, SqliteStore
from tests.support.stores import FakeClock
from tests.unit.test_reports_trail import NOW, SINCE, UNTIL, build_trail, policy

ROOT = Path(__file__).resolve().parents[2]
_REQUEST_TYPES = {
    "request.created", "request.approval_added", "request.approved", "request.declined", "request.cancelled",
    "request.timed_out", "grant.activated", "grant.revealed", "grant.code_shown", "grant.expired", "grant.revoked",
}
_COLUMNS = (
    "request_id", "item", "vault", "first_seq", "last_seq", "first_at", "last_at", "created_seq", "created_at",
    "requester", "approved_at", "decider", "decided_seq", "activated_at", "n_created", "n_approved", "n_declined",
    "n_cancelled", "n_timed_out", "n_ended", "n_reveals", "n_codes",
)


def _who(event: Event) -> str | None:
    return f"{event.actor.platform}:{event.actor.user_id}" if event.actor else None


def expected_facts(events: Iterable[Event]) -> dict[str, tuple[Any, ...]]:
    """request_facts recomputed in plain Python from the events (the oracle)."""
    rows: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: e.seq):
        if e.request_id is None or e.type not in _REQUEST_TYPES:
            continue
        at = format_time(e.at)
        r = rows.setdefault(e.request_id, {
            "request_id": e.request_id, "item": e.item, "vault": e.vault, "first_seq": e.seq, "first_at": at,
            "last_at": at, **dict.fromkeys(("created_seq", "created_at", "requester", "approved_at", "decider",
                                            "decided_seq", "activated_at")),
            **dict.fromkeys(_COLUMNS[14:], 0)})
        r["last_seq"] = e.seq
        r["first_at"], r["last_at"] = min(r["first_at"], at), max(r["last_at"], at)
        if e.type == "request.created":
            r["n_created"] += 1
            if r["created_seq"] is None:
                r["created_seq"], r["created_at"], r["requester"] = e.seq, at, _who(e)
        if e.type == "request.approved":
            r["n_approved"] += 1
            r["approved_at"] = min(filter(None, (r["approved_at"], at)))
        if e.type in ("request.approved", "request.declined"):
            r["decider"] = max(filter(None, (r["decider"], _who(e))), default=None)
            r["decided_seq"] = e.seq
        if e.type == "grant.activated":
            r["activated_at"] = min(filter(None, (r["activated_at"], at)))
        for kind, counter in (("request.declined", "n_declined"), ("request.cancelled", "n_cancelled"),
                              ("request.timed_out", "n_timed_out"), ("grant.expired", "n_ended"),
                              ("grant.revoked", "n_ended"), ("grant.revealed", "n_reveals"),
                              ("grant.code_shown", "n_codes")):
            r[counter] += e.type == kind
    return {rid: tuple(r[c] for c in _COLUMNS) for rid, r in rows.items()}


def stored_facts(path: Path) -> dict[str, tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return {row[0]: tuple(row) for row in conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM request_facts")}


async def _events(store: SqliteStore) -> list[Event]:
    return [e async for e in store.events()]


def _report(path: Path, since: datetime, until: datetime, *, facts: bool, **filters: Any) -> ReportData:
    from bot.reports.build import _query

    query = _query(policy(), NOW, since, until, vault=filters.get("vault"), item=filters.get("item"),
                   user=filters.get("user"))
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        return compute_report(conn, query, lambda step: None, facts=facts)


_PERIODS = [(SINCE, UNTIL), (SINCE - timedelta(days=400), NOW), (datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
                                                                  datetime(2026, 3, 2, 10, 0, tzinfo=UTC)),
            (datetime(2026, 3, 7, 10, 30, tzinfo=UTC), NOW)]


async def test_facts_follow_every_append_and_the_report_shortcut_matches_the_events(tmp_path: Path) -> None:
    trail = await build_trail(tmp_path)
    try:
        assert stored_facts(trail.path) == expected_facts(await _events(trail.store))
    finally:
        await trail.store.close()
    for since, until in _PERIODS:
        for filters in ({}, {"vault": "acme"}, {"item": "acme-zendesk"}, {"user": "UBOB"}, {"user": "slack:ULEE"}):
            assert _report(trail.path, since, until, facts=True, **filters) == _report(
                trail.path, since, until, facts=False, **filters), (since, until, filters)


_WORKER = """
import asyncio, sys
from datetime import UTC, datetime
from pathlib import Path
from bot.domain.model import EventDraft, Identity
from storage.sqlite.store import SqliteStore

class Clock:
    def now(self):
        return datetime.now(UTC)

async def main(path, who):
    store = SqliteStore(Path(path), Clock())
    await store.open()
    me = Identity("slack", who, who)
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(60):
        rid = f"R{i % 6}"
        kind = ("request.created", "grant.revealed", "request.approved", "grant.code_shown")[i % 4]
        await store.append_event(EventDraft(kind, me, rid, f"item-{i % 6}", "v", "", {"i": i}))
    await store.close()
    print("done", flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_two_processes_appending_to_the_same_requests_keep_the_facts_exact(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "shared.db", FakeClock())
    await store.open()
    try:
        procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(store.path), who], cwd=ROOT, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for who in ("UALPHA", "UBETA")]
        try:
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            outcomes = [proc.communicate(timeout=60) for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        assert [out.strip() for out, _ in outcomes] == ["done", "done"], outcomes
        events = await _events(store)
        assert len(events) == 120
        facts = stored_facts(store.path)
        assert facts == expected_facts(events)
        assert sum(row[_COLUMNS.index("n_reveals")] for row in facts.values()) == 30
    finally:
        await store.close()


async def test_a_purge_drops_the_facts_of_purged_requests_and_recomputes_the_ones_it_cut(tmp_path: Path) -> None:
    trail = await build_trail(tmp_path)
    store = trail.store
    try:
        # Cut through the week: R0 and R1 lose their start, the rest keep every event.
        cut = datetime(2026, 3, 2, 9, 3, tzinfo=UTC)
        before = stored_facts(trail.path)
        await store.purge_events(cut, EventDraft("retention.purged", Identity("cli", "ops", "ops")))
        remaining = await _events(store)
        facts = stored_facts(trail.path)
        assert facts == expected_facts(remaining)
        assert facts["R1"][_COLUMNS.index("created_seq")] is None  # its request.created is gone
        assert set(facts) < set(before) or facts != before
        for since, until in _PERIODS:
            assert _report(trail.path, since, until, facts=True) == _report(trail.path, since, until, facts=False)
        # The report over the purged week counts only what the remaining events say.
        report = await build_report(store, policy(), NOW, SINCE, UNTIL, verify=False)
        assert report.data.totals.requests == sum(
            1 for e in remaining if e.type == "request.created" and SINCE <= e.at < UNTIL)
    finally:
        await store.close()


async def test_a_store_from_the_previous_schema_is_backfilled_on_open(tmp_path: Path) -> None:
    trail = await build_trail(tmp_path)
    await trail.store.close()
    facts_then = stored_facts(trail.path)
    # The same trail at schema version 2: the facts table and its trigger did not exist yet.
    with closing(sqlite3.connect(trail.path)) as conn:
        conn.execute("DROP TRIGGER request_facts_append")
        conn.execute("DROP TABLE request_facts")
        for column in ("source", "category", "external"):  # added by step 4 (items from 1Password)
            conn.execute(f"ALTER TABLE items DROP COLUMN {column}")
        conn.execute("DROP TABLE effects")  # migration 5
        for claim in ("open_claim", "hold_claim"):  # added by migration 6 (invariants held by the store)
            conn.execute(f"DROP INDEX requests_{claim}")
            conn.execute(f"ALTER TABLE requests DROP COLUMN {claim}")
        conn.execute("DROP TABLE rate_windows")  # migration 7 (rate limits held by the store)
        conn.execute("DROP TABLE home_tabs")  # migration 8 (home tabs opened)
        conn.execute("DELETE FROM schema_version WHERE version > 2")
        conn.commit()
    assert len(MIGRATIONS) >= 3
    store = SqliteStore(trail.path, FakeClock(NOW))
    await store.open()
    try:
        assert stored_facts(trail.path) == facts_then == expected_facts(await _events(store))
        # ... and the trigger is back: a new event lands in the facts in its own transaction.
        await store.append_event(EventDraft("grant.revealed", Identity("slack", "UANN", "Ann"), "R1",
                                            "acme-zendesk", "acme", "", {}))
        assert stored_facts(trail.path) == expected_facts(await _events(store))
    finally:
        await store.close()


async def test_an_edited_summary_row_fails_the_verified_report_though_the_chain_is_intact(tmp_path: Path) -> None:
    trail = await build_trail(tmp_path)
    try:
        assert await trail.store.check_report_tables() == ""
        with closing(sqlite3.connect(trail.path)) as conn:  # hide one reveal from the reports
            conn.execute("UPDATE request_facts SET n_reveals = n_reveals - 1 WHERE request_id = 'R6'")
            conn.commit()
        report = await build_report(trail.store, policy(), NOW, SINCE, UNTIL)
        chain = report.retention.chain
        assert (chain.verified, chain.ok, chain.first_broken_seq) == (True, False, None)
        assert chain.problem == ("the report summary table (request_facts) disagrees with the events for 2 "
                                 "request row(s)")
    finally:
        await trail.store.close()
