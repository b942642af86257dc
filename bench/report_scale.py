"""Reports at scale: a realistic 2-year trail on SQLite, the full report, a purge, time and memory.

    .venv/bin/python bench/report_scale.py                 # 1,000,000 events in /tmp/jitpass-bench.db
    .venv/bin/python bench/report_scale.py --events 200000 --db /tmp/small.db
    .venv/bin/python bench/report_scale.py --reuse         # measure an existing file again
    .venv/bin/python bench/report_scale.py --mongoeco --events 1500 --items 60   # + MongoStore on mongoeco
    .venv/bin/python bench/report_scale.py --mongodb-uri URI --events 1000000    # + a real replica set

With `--mongoeco` / `--mongodb-uri` the same trail goes into SQLite and into MongoDB; both are measured
against their own baseline in the same run, the two reports' aggregates are compared, and the
"Reports on MongoDB" section of docs/benchmarks.md is rewritten.

`generate` writes the trail straight into a SqliteStore file: 500 items through the store, then every
event sealed with bot.domain.audit.seal_event in seq order (a valid hash chain) and bulk-inserted with
executemany, one transaction per batch. `measure` runs in a fresh process (so ru_maxrss is its own):
baselines first (`SELECT count(*)`, one GROUP BY scan), then the report, each timed; then the same
with tracemalloc for the Python heap peak; then a purge of everything older than 365 days on a copy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
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
from bot.domain.model import SYSTEM, Event, EventDraft, Identity, Item, RotationDue, SealedItem
from bot.domain.report_data import ReportData
from bot.ports import Store
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
_ITEM_WEIGHTS = {ITEMS: _cumulative(ITEMS, 20)}


def _item_weights(count: int) -> list[float]:
    if count not in _ITEM_WEIGHTS:
        _ITEM_WEIGHTS[count] = _cumulative(count, 20)
    return _ITEM_WEIGHTS[count]


def _people() -> tuple[list[Identity], list[Identity]]:
    users = [Identity("teams" if i % 5 == 0 else "slack", f"U{i:04d}", f"User {i:03d}") for i in range(USERS)]
    return users, users[:APPROVERS]


def _catalogue(rng: random.Random, count: int = ITEMS) -> list[Item]:
    start = NOW - SPAN - timedelta(days=1)
    return [Item(name=f"item-{i:03d}", vault=f"vault-{i % VAULTS:02d}", created_at=start, updated_at=start,
                 password_rotated_at=start) for i in range(count)]


def _request_events(rng: random.Random, n: int, at: datetime, users: list[Identity], approvers: list[Identity],
                    items: list[Item]) -> list[tuple[datetime, EventDraft]]:
    """One request's life: mostly approved and used, sometimes declined, timed out or cancelled."""
    rid = f"R-{n:08d}"
    # Mildly skewed, as in a real team: the busiest person makes a few percent of all requests.
    who = rng.choices(users, cum_weights=_USER_WEIGHTS)[0]
    item = rng.choices(items, cum_weights=_item_weights(len(items)))[0]
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


def _sealed_trail(rng: random.Random, count: int, seq: int, prev: str, items: list[Item],
                  revealed: dict[str, tuple[str, Identity, datetime]]) -> Iterator[Event]:
    """`count` sealed events after (seq, prev), in time order; notes each item's last reveal in `revealed`."""
    users, approvers = _people()
    requests_made = 0
    pending: list[tuple[datetime, int, EventDraft]] = []  # a heap: a request's events keep their order
    order = itertools.count()
    times = _request_times(rng, int(count / 5.5 * 1.1))
    next_request = next(times)
    last = seq + count
    while seq < last:
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
        if draft.type == "grant.revealed" and draft.item and draft.request_id and draft.actor:
            revealed[draft.item] = (draft.request_id, draft.actor, at)
        yield event


async def _mark_rotation_due(store: Store, revealed: dict[str, tuple[str, Identity, datetime]]) -> None:
    """Some items are still due for rotation after their last reveal (the exposure section)."""
    for name, (rid, who, at) in list(revealed.items())[:60]:
        sealed = await store.get_item(name)
        assert sealed is not None
        due = RotationDue(since=at, seen_by=(who,), request_ids=(rid,))
        await store.replace_item(replace(sealed, item=replace(sealed.item, rotation_due=due)), None)


async def _add_catalogue(store: Store, items: list[Item]) -> Event:
    admin = Identity("cli", "ops", "ops")
    await store.add_items([SealedItem(i, "k1", b"w", b"n", b"c") for i in items],
                          [EventDraft("item.added", admin, None, i.name, i.vault, "", {"source": "bench"})
                           for i in items])
    last = await store.last_event()
    assert last is not None
    return last


async def generate(path: Path, events: int, seed: int, items_count: int = ITEMS) -> dict[str, Any]:
    """Write the trail; returns its shape."""
    rng = random.Random(seed)
    path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    clock = Clock(NOW - SPAN - timedelta(days=1))
    store = SqliteStore(path, clock)
    await store.open()
    items = _catalogue(rng, items_count)
    last = await _add_catalogue(store, items)
    await store.close()
    started = time.perf_counter()
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

        for event in _sealed_trail(rng, events - items_count, last.seq, last.hash, items, revealed):
            batch.append(event_row(event))
            if len(batch) >= BATCH:
                flush()
        if batch:
            flush()
    store = SqliteStore(path, Clock(NOW))
    await store.open()
    await _mark_rotation_due(store, revealed)
    final = await store.last_event()
    await store.close()
    assert final is not None
    return {"events": final.seq, "last_hash": final.hash, "seconds": round(time.perf_counter() - started, 1),
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
    out["report_full_with_chain_check_s"] = await report(oldest, True)
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
    out["purge_s"] = time.perf_counter() - start
    out["purged"] = outcome.purged
    await store.close()
    copy.unlink()
    out["rss_peak_mb"] = round(_rss_mb(), 1)
    for key, value in list(out.items()):
        if key.endswith("_s") and isinstance(value, float):
            out[key] = round(value, 6)
    out["ratio_full_report_to_group_by"] = round(out["report_full_2y_s"] / out["baseline_group_by_s"], 1)
    out["ratio_rss_report_to_baseline"] = round(out["rss_after_reports_mb"] / out["rss_baseline_mb"], 2)
    return out


async def _filtered(source: SqliteStore, policy: Any, oldest: datetime) -> float:
    start = time.perf_counter()
    await build_report(source, policy, NOW, oldest, NOW, vault="vault-03", verify=False)
    return time.perf_counter() - start


# -- the same trail on MongoDB -------------------------------------------------------------------

MONGO_SECTION = "## Reports on MongoDB"
MONGO_BATCH = 250  # documents per insert_many (mongoeco slows down with large batches)


async def generate_mongo(uri: str, db_name: str, events: int, seed: int, items_count: int) -> dict[str, Any]:
    """The trail `generate` writes, event for event (same seed: same seqs and hashes), into a MongoDB database:
    the catalogue through MongoStore, then the sealed events as the store stores them (`_id` = seq)."""
    from pymongo import AsyncMongoClient

    from bot.domain.audit import event_to_dict
    from storage.mongo.store import MongoStore

    rng = random.Random(seed)
    store = MongoStore(uri, Clock(NOW - SPAN - timedelta(days=1)), db_name)
    await store.open()
    items = _catalogue(rng, items_count)
    last = await _add_catalogue(store, items)
    await store.close()
    started = time.perf_counter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
    revealed: dict[str, tuple[str, Identity, datetime]] = {}
    try:
        batch: list[dict[str, Any]] = []
        for event in _sealed_trail(rng, events - items_count, last.seq, last.hash, items, revealed):
            batch.append({"_id": event.seq, **event_to_dict(event)})
            if len(batch) >= MONGO_BATCH:
                await client[db_name]["events"].insert_many(batch, ordered=True)
                batch.clear()
        if batch:
            await client[db_name]["events"].insert_many(batch, ordered=True)
    finally:
        await client.close()
    store = MongoStore(uri, Clock(NOW), db_name)
    await store.open()
    await _mark_rotation_due(store, revealed)
    final = await store.last_event()
    await store.close()
    assert final is not None
    return {"events": final.seq, "last_hash": final.hash, "seconds": round(time.perf_counter() - started, 1)}


async def _best(times: int, run: Any) -> float:
    best = float("inf")
    for _ in range(times):
        start = time.perf_counter()
        await run()
        best = min(best, time.perf_counter() - start)
    return best


async def measure_mongo(uri: str, db_name: str) -> dict[str, Any]:
    """The Mongo counterparts of `measure`'s baselines, then the report and a purge, each timed."""
    from pymongo import AsyncMongoClient

    from storage.mongo.store import MongoStore

    policy = parse_policy(POLICY)
    out: dict[str, Any] = {}
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
    events = client[db_name]["events"]
    try:
        out["events"] = await events.count_documents({})
        out["baseline_count_s"] = await _best(3, lambda: events.count_documents({}))

        async def group(key: str) -> None:
            await (await events.aggregate([{"$group": {"_id": f"${key}", "n": {"$sum": 1},
                                                       "last": {"$max": "$at"}}}])).to_list()

        out["baseline_group_by_s"] = await _best(3, lambda: group("type"))
        out["baseline_group_by_item_s"] = await _best(3, lambda: group("item"))
    finally:
        await client.close()
    store = MongoStore(uri, Clock(NOW), db_name)
    await store.open()
    oldest = NOW - SPAN - timedelta(days=2)
    try:
        out["report_full_2y_s"] = await _best(3, lambda: build_report(store, policy, NOW, oldest, NOW, verify=False))
        out["report_90d_s"] = await _best(3, lambda: build_report(store, policy, NOW, NOW - timedelta(days=90), NOW,
                                                                  verify=False))
        out["report_full_with_chain_check_s"] = await _best(
            1, lambda: build_report(store, policy, NOW, oldest, NOW, verify=True))
        start = time.perf_counter()
        outcome = await purge(store, policy, NOW, Identity("cli", "ops", "ops"))
        out["purge_s"] = time.perf_counter() - start
        out["purged"] = outcome.purged
    finally:
        await store.close()
    return out


def render_mongo(n: int, label: str, shape: dict[str, Any], lite: dict[str, Any], mongo: dict[str, Any]) -> str:
    from bench.audit_append import _machine

    def row(what: str, key: str, base: str = "baseline_group_by_item_s") -> str:
        return (f"| {what} | {lite[key] * 1000:,.1f} | {lite[key] / lite[base]:.1f}× | {mongo[key] * 1000:,.0f} | "
                f"{mongo[key] / mongo[base]:.1f}× |")

    lines = [
        MONGO_SECTION,
        "",
        f"`bench/report_scale.py --mongoeco --events {n}` on {datetime.now(UTC):%Y-%m-%d}: {_machine()}. "
        f"Server: {label}.",
        "",
        f"The same generator, seed and shape as above, scaled down to {n:,} events ({shape['items']} items, "
        f"200 people, 2 years): written once into SQLite and once into MongoDB (the catalogue through the "
        f"store, the sealed events with `insert_many`), the two trails the same event for event (seq, "
        f"type, time, request, item, details; fingerprint `{shape['fingerprint'][:12]}…`). Each store's figures "
        "are timed against its own baseline in the same run, the one-pass aggregation every report section "
        "needs at least once (SQLite: `GROUP BY item`; MongoDB: `$group` by item); best of 3, the chain check "
        "and the purge once. The size is what mongoeco can take in a short run: its inserts and scans run in "
        "Python and slow down as a collection grows "
        f"(writing these {n:,} events took {shape['mongo_seconds']:.0f} s, SQLite {shape['sqlite_seconds']:.1f} s).",
        "",
        ("The whole-trail report's aggregates agree on the two stores (every field of `ReportData`: access "
         "per item, vault, requester and approver, latency, load, timeline, anomalies, exposure): every count "
         f"equal, durations within {shape['max_gap'] * 1000:.0f} ms (SQLite rounds each duration to the "
         "millisecond from `julianday`, MongoDB truncates both times to milliseconds; a sum over many grants "
         "adds up the difference)."
         if not shape["differ"] else
         f"The whole-trail report's aggregates DIFFER between the stores in: {', '.join(shape['differ'])}."),
        "",
        "| what | SQLite ms | vs its baseline | MongoDB (mongoeco) ms | vs its baseline |",
        "| --- | ---: | ---: | ---: | ---: |",
        row("baseline: count", "baseline_count_s"),
        row("baseline: group by type", "baseline_group_by_s"),
        row("baseline: group by item (1.0×)", "baseline_group_by_item_s"),
        row("report, last 90 days (`--no-verify`)", "report_90d_s"),
        row("**report, whole 2 years** (`--no-verify`)", "report_full_2y_s"),
        row("report, whole 2 years, with the chain check", "report_full_with_chain_check_s"),
        row(f"purge (keep 365 days): SQLite {lite['purged']:,}, MongoDB {mongo['purged']:,} events", "purge_s"),
        "",
        "What this shows: every report section runs on MongoDB as aggregation pipelines over the events (no "
        "summary collection), gives a report on a real trail, and the retention purge (checkpoint first, then "
        "bounded delete batches) completes. The ratios say how many one-pass scans a report costs on each "
        "store at this size. What it does not show: how MongoDB scales to the 1,000,000-event trail above, or "
        "mongod's speed at all; mongoeco evaluates pipelines in Python on the same 2 cores (no query planner, "
        "no index-backed `$group`), and a trail this small fits in any cache. For those figures run "
        "`bench/report_scale.py --mongodb-uri URI --events 1000000` against a replica set.",
        "",
    ]
    return "\n".join(lines)


async def _fingerprint(store: Store) -> str:
    """SHA-256 over every event's seq, type, time, request, item and details: equal trails, equal prints
    (event ids and so hashes differ: the catalogue's item.added events get random ids)."""
    import hashlib

    digest = hashlib.sha256()
    await store.open()
    try:
        async for e in store.events():
            digest.update(json.dumps([e.seq, e.type, e.at.isoformat(), e.request_id, e.item, e.details],
                                     sort_keys=True, default=str).encode())
    finally:
        await store.close()
    return digest.hexdigest()


def _gap(a: Any, b: Any) -> float | None:
    """The largest difference between two report values' floats (seconds), or None when anything else differs."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b)
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        pairs = [(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)]
    elif isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        pairs = list(zip(a, b, strict=True))
    else:
        return 0.0 if a == b else None
    gaps = [_gap(x, y) for x, y in pairs]
    return None if None in gaps else max((g for g in gaps if g is not None), default=0.0)


async def _report_data(store: Store) -> ReportData:
    """The whole-trail report's aggregates (what the two stores must agree on)."""
    await store.open()
    try:
        report = await build_report(store, parse_policy(POLICY), NOW, NOW - SPAN - timedelta(days=2), NOW,
                                    verify=False)
        return report.data
    finally:
        await store.close()


async def mongo_run(uri: str, label: str, events: int, seed: int, items_count: int) -> str:
    """The trail into SQLite and MongoDB, both measured; the docs section as text."""
    import tempfile
    import uuid

    from pymongo import AsyncMongoClient

    from storage.mongo.store import MongoStore

    db_name = f"jitpass_bench_{uuid.uuid4().hex[:8]}"
    try:
        mongo_shape = await generate_mongo(uri, db_name, events, seed, items_count)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "small.db"
            lite_shape = await generate(path, events, seed, items_count)
            lite = await measure(path)
            lite_print = await _fingerprint(SqliteStore(path, Clock(NOW)))
            lite_data = await _report_data(SqliteStore(path, Clock(NOW)))
        mongo_print = await _fingerprint(MongoStore(uri, Clock(NOW), db_name))
        mongo_data = await _report_data(MongoStore(uri, Clock(NOW), db_name))
        mongo = await measure_mongo(uri, db_name)  # purges: last
    finally:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
        await client.drop_database(db_name)
        await client.close()
    assert lite["events"] == mongo["events"] == mongo_shape["events"], (lite, mongo, mongo_shape)
    assert lite_print == mongo_print, "the two trails differ"
    gaps = {f.name: _gap(getattr(lite_data, f.name), getattr(mongo_data, f.name))
            for f in dataclasses.fields(lite_data)}
    shape = {"items": items_count, "fingerprint": mongo_print, "mongo_seconds": mongo_shape["seconds"],
             "sqlite_seconds": lite_shape["seconds"], "differ": [name for name, gap in gaps.items() if gap is None],
             "max_gap": max((gap for gap in gaps.values() if gap is not None), default=0.0)}
    print(json.dumps({"sqlite": lite, "mongodb": mongo}, indent=2), flush=True)
    return render_mongo(events, label, shape, lite, mongo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", nargs="?", choices=["all", "generate", "measure"], default="all")
    parser.add_argument("--db", type=Path, default=Path("/tmp/jitpass-bench.db"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="keep an existing --db file")
    parser.add_argument("--items", type=int, default=ITEMS, help="catalogue size")
    parser.add_argument("--mongodb-uri", help="also write the trail to this MongoDB server and measure both")
    parser.add_argument("--mongoeco", action="store_true",
                        help="the same on a local mongoeco server started for the run (.venv-mongo)")
    parser.add_argument("--no-doc", action="store_true", help="MongoDB runs: print only, leave docs/benchmarks.md")
    args = parser.parse_args()
    if args.mongoeco or args.mongodb_uri:
        from bench.audit_append import DOC, server_label, write_section

        with contextlib.ExitStack() as stack:
            uri = args.mongodb_uri
            if args.mongoeco:
                from tests.support.mongo import mongoeco_server

                uri = stack.enter_context(mongoeco_server()).uri
            text = asyncio.run(mongo_run(uri, server_label(uri, args.mongoeco), args.events, args.seed, args.items))
        print(text)
        if not args.no_doc:
            write_section(text, section=MONGO_SECTION)
            print(f"updated {DOC}")
        return
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
