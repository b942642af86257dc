"""Reports at scale: a realistic 2-year trail on SQLite, the full report, a purge, time and memory.

    .venv/bin/python bench/report_scale.py                 # 1,000,000 events in /tmp/jitpass-bench.db
    .venv/bin/python bench/report_scale.py --events 200000 --db /tmp/small.db
    .venv/bin/python bench/report_scale.py --reuse         # measure an existing file again

`generate` writes the trail straight into a SqliteStore file: 500 items through the store, then every
event sealed with bot.domain.audit.seal_event in seq order (a valid hash chain) and bulk-inserted with
executemany, one transaction per batch. `measure` runs in a fresh process (so ru_maxrss is its own):
baselines first (`SELECT count(*)`, one GROUP BY scan), then the report, each timed; then the same
with tracemalloc for the Python heap peak; then a purge of everything older than 365 days on a copy.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.domain.audit import seal_event
from bot.domain.config import parse_policy
from bot.domain.model import SYSTEM, EventDraft, Identity, Item, RotationDue, SealedItem
from bot.reports.build import build_report
from bot.services.retention import purge
from storage.sqlite.reports import ensure_report_indexes
from storage.sqlite.store import EVENT_COLUMNS, SqliteStore, event_row

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SPAN = timedelta(days=730)
USERS, APPROVERS, ITEMS, VAULTS = 200, 20, 500, 20
BATCH = 20_000
POLICY = """
timezone = "Europe/Amsterdam"
[retention]
keep_days = 365
"""
_INSERT = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def _cumulative(n: int, offset: int) -> list[float]:
    total, out = 0.0, []
    for rank in range(n):
        total += 1 / (rank + offset)
        out.append(total)
    return out


_USER_WEIGHTS = _cumulative(USERS, 10)
_ITEM_WEIGHTS = _cumulative(ITEMS, 20)


def _people() -> tuple[list[Identity], list[Identity]]:
    users = [Identity("teams" if i % 5 == 0 else "slack", f"U{i:04d}", f"User {i:03d}") for i in range(USERS)]
    return users, users[:APPROVERS]


def _catalogue(rng: random.Random) -> list[Item]:
    start = NOW - SPAN - timedelta(days=1)
    return [Item(name=f"item-{i:03d}", vault=f"vault-{i % VAULTS:02d}", created_at=start, updated_at=start,
                 password_rotated_at=start) for i in range(ITEMS)]


def _request_events(rng: random.Random, n: int, at: datetime, users: list[Identity], approvers: list[Identity],
                    items: list[Item]) -> list[tuple[datetime, EventDraft]]:
    """One request's life: mostly approved and used, sometimes declined, timed out or cancelled."""
    rid = f"R-{n:08d}"
    # Mildly skewed, as in a real team: the busiest person makes a few percent of all requests.
    who = rng.choices(users, cum_weights=_USER_WEIGHTS)[0]
    item = rng.choices(items, cum_weights=_ITEM_WEIGHTS)[0]
    lead = rng.choice([a for a in approvers if a != who] or approvers)

    def ev(t: datetime, kind: str, actor: Identity | None, reason: str = "", **details: Any) -> tuple[datetime,
                                                                                                       EventDraft]:
        return t, EventDraft(kind, actor, rid, item.name, item.vault, reason, details)

    out = [ev(at, "request.created", who, "fix the nightly export job", duration="1h", start=None, notes=[])]
    if rng.random() < 0.01:
        out.append(ev(at + timedelta(seconds=30), "access.refused", who, "self-approve"))
    fate = rng.random()
    decided = at + timedelta(seconds=rng.lognormvariate(5.5, 1.1))
    if fate < 0.07:
        return [*out, ev(at + timedelta(minutes=30), "request.timed_out", SYSTEM, "no decision in time")]
    if fate < 0.15:
        return [*out, ev(decided, "request.declined", lead, "not now")]
    if fate < 0.20:
        return [*out, ev(decided, "request.cancelled", who)]
    if rng.random() < 0.1:
        second = rng.choice([a for a in approvers if a not in (who, lead)])
        out.append(ev(decided, "request.approval_added", second, approvals=1, required=2))
        decided += timedelta(seconds=rng.lognormvariate(4.5, 1.0))
    out.append(ev(decided, "request.approved", lead, approvals=1, required=1))
    length = timedelta(minutes=rng.choice((30, 60, 60, 120, 240)))
    out.append(ev(decided, "grant.activated", SYSTEM, ends_at=(decided + length).isoformat()))
    reveals = 0 if rng.random() < 0.05 else 1 + int(rng.expovariate(1.2))
    for _ in range(reveals):
        out.append(ev(decided + length * rng.random() / 2, "grant.revealed", who, password=True, code=True))
    for _ in range(int(rng.expovariate(1.3))):
        out.append(ev(decided + length * rng.random() / 2, "grant.code_shown", who, password=True, code=True))
    if rng.random() < 0.15:
        out.append(ev(decided + length * rng.uniform(0.5, 1), "grant.revoked", who, "ended by the holder",
                      revealed=True))
    else:
        out.append(ev(decided + length, "grant.expired", SYSTEM, "window ended", revealed=bool(reveals)))
    return out


def _request_times(rng: random.Random, count: int) -> Iterator[datetime]:
    """`count` request times over SPAN, 80% within Amsterdam working hours on weekdays, in order."""
    start = NOW - SPAN
    step = SPAN / count
    for i in range(count):
        at = start + step * i
        if rng.random() < 0.8:
            local = at.astimezone(_AMS)
            if local.weekday() < 5 and not 8 <= local.hour < 18:
                at += timedelta(hours=(10 - local.hour) % 24)
        yield at


_AMS = parse_policy(POLICY).timezone


async def generate(path: Path, events: int, seed: int) -> dict[str, Any]:
    """Write the trail; returns its shape."""
    rng = random.Random(seed)
    path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    clock = Clock(NOW - SPAN - timedelta(days=1))
    store = SqliteStore(path, clock)
    await store.open()
    items = _catalogue(rng)
    admin = Identity("cli", "ops", "ops")
    await store.add_items([SealedItem(i, "k1", b"w", b"n", b"c") for i in items],
                          [EventDraft("item.added", admin, None, i.name, i.vault, "", {"source": "bench"})
                           for i in items])
    last = await store.last_event()
    await store.close()
    assert last is not None
    users, approvers = _people()
    started = time.perf_counter()
    seq, prev = last.seq, last.hash
    requests_made, pending = 0, []  # heap of (at, push order, draft): a request's events keep their order
    order = itertools.count()
    expected = (events - ITEMS) / 5.5
    batch: list[tuple[Any, ...]] = []
    revealed: dict[str, tuple[str, Identity, datetime]] = {}
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")

        def flush() -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, batch)
            conn.execute("COMMIT")
            batch.clear()

        times = _request_times(rng, int(expected * 1.1))
        next_request = next(times)
        while seq - last.seq < events - ITEMS:
            while not pending or next_request <= pending[0][0]:
                for at, draft in _request_events(rng, requests_made, next_request, users, approvers, items):
                    heapq.heappush(pending, (at, next(order), draft))
                requests_made += 1
                next_request = next(times, NOW + timedelta(days=365))
            at, _, draft = heapq.heappop(pending)
            at = min(at, NOW - timedelta(minutes=1))
            seq += 1
            event = seal_event(draft, seq=seq, prev_hash=prev, at=at, event_id=f"{seq:032x}")
            prev = event.hash
            batch.append(event_row(event))
            if draft.type == "grant.revealed" and draft.item and draft.request_id and draft.actor:
                revealed[draft.item] = (draft.request_id, draft.actor, at)
            if len(batch) >= BATCH:
                flush()
        if batch:
            flush()
    # Some items are still due for rotation after their last reveal (the exposure section).
    store = SqliteStore(path, Clock(NOW))
    await store.open()
    for name, (rid, who, at) in list(revealed.items())[:60]:
        sealed = await store.get_item(name)
        assert sealed is not None
        due = RotationDue(since=at, seen_by=(who,), request_ids=(rid,))
        await store.replace_item(replace(sealed, item=replace(sealed.item, rotation_due=due)), None)
    await store.close()
    return {"events": seq, "requests": requests_made, "seconds": round(time.perf_counter() - started, 1),
            "file_mb": round(path.stat().st_size / 1e6, 1)}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


async def measure(path: Path) -> dict[str, Any]:
    """Baselines, the report (aggregates; then with the chain check), memory, and a purge on a copy."""
    policy = parse_policy(POLICY)
    out: dict[str, Any] = {}
    with closing(sqlite3.connect(path)) as conn:
        _, out["index_build_s"] = _timed(lambda: ensure_report_indexes(conn))
        conn.execute("SELECT count(*), max(at) FROM events").fetchone()  # warm the OS page cache first
        (count,), out["baseline_count_s"] = _timed(lambda: conn.execute("SELECT count(*) FROM events").fetchone())
        _, out["baseline_group_by_s"] = _timed(
            lambda: conn.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())
        _, out["baseline_group_by_item_s"] = _timed(
            lambda: conn.execute("SELECT item, count(*), max(at) FROM events GROUP BY item").fetchall())
    out["events"] = count
    out["rss_baseline_mb"] = round(_rss_mb(), 1)
    store = SqliteStore(path, Clock(NOW))
    await store.open()
    source = store
    oldest = NOW - SPAN - timedelta(days=2)

    async def report(since: datetime, verify: bool) -> float:
        start = time.perf_counter()
        await build_report(source, policy, NOW, since, NOW, verify=verify)
        return time.perf_counter() - start

    await report(NOW - timedelta(days=7), False)  # warm the OS page cache like a second run would
    out["report_full_2y_s"] = min([await report(oldest, False) for _ in range(3)])
    out["report_90d_s"] = min([await report(NOW - timedelta(days=90), False) for _ in range(3)])
    out["report_full_vault_filter_s"] = await _filtered(source, policy, oldest)
    out["rss_after_reports_mb"] = round(_rss_mb(), 1)
    out["report_full_with_chain_check_s"] = round(await report(oldest, True), 2)
    out["rss_after_chain_check_mb"] = round(_rss_mb(), 1)
    tracemalloc.start()
    await report(oldest, False)
    out["tracemalloc_peak_report_mb"] = round(tracemalloc.get_traced_memory()[1] / 1e6, 1)
    tracemalloc.reset_peak()
    await report(oldest, True)
    out["tracemalloc_peak_with_chain_check_mb"] = round(tracemalloc.get_traced_memory()[1] / 1e6, 1)
    tracemalloc.stop()
    await store.close()
    copy = path.with_name(path.stem + "-purge.db")
    shutil.copyfile(path, copy)
    store = SqliteStore(copy, Clock(NOW))
    await store.open()
    start = time.perf_counter()
    outcome = await purge(store, policy, NOW, Identity("cli", "ops", "ops"))
    out["purge_s"] = round(time.perf_counter() - start, 2)
    out["purged"] = outcome.purged
    await store.close()
    copy.unlink()
    out["rss_peak_mb"] = round(_rss_mb(), 1)
    for key, value in list(out.items()):
        if key.endswith("_s") and isinstance(value, float):
            out[key] = round(value, 3)
    out["ratio_full_report_to_group_by"] = round(out["report_full_2y_s"] / out["baseline_group_by_s"], 1)
    out["ratio_rss_report_to_baseline"] = round(out["rss_after_reports_mb"] / out["rss_baseline_mb"], 2)
    return out


async def _filtered(source: SqliteStore, policy: Any, oldest: datetime) -> float:
    start = time.perf_counter()
    await build_report(source, policy, NOW, oldest, NOW, vault="vault-03", verify=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", nargs="?", choices=["all", "generate", "measure"], default="all")
    parser.add_argument("--db", type=Path, default=Path("/tmp/jitpass-bench.db"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="keep an existing --db file")
    args = parser.parse_args()
    if args.step in ("all", "generate") and not (args.reuse and args.db.exists()):
        shape = asyncio.run(generate(args.db, args.events, args.seed))
        print(json.dumps({"generated": shape}), flush=True)
    if args.step == "all":
        # A fresh process: its ru_maxrss is the report's, not the generator's.
        subprocess.run([sys.executable, __file__, "measure", "--db", str(args.db)], check=True)
    elif args.step == "measure":
        print(json.dumps({"measured": asyncio.run(measure(args.db))}, indent=2), flush=True)


if __name__ == "__main__":
    main()
