"""Audit append throughput: how many events per second a store chains and commits, one at a time.

    .venv/bin/python bench/audit_append.py [--events 100000] [--mongodb-uri URI] [--no-doc]

Each store gets a fresh database (SQLite in a temporary directory; MongoDB in a throwaway database
that is dropped afterwards). Baselines are measured in the same run, on the same machine, so the
ratio is meaningful even on a noisy one:
  * raw insert: the same rows, one autocommit INSERT each (no hashing, no chain read, no store logic);
  * hashing alone: `seal_event` with no I/O at all.
The "Audit append" section of docs/benchmarks.md is rewritten with the figures (other sections kept).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiosqlite  # noqa: E402

from bot.domain.audit import GENESIS_HASH, seal_event, verify_chain  # noqa: E402
from bot.domain.model import EventDraft, Identity  # noqa: E402
from bot.ports import Store, SystemClock  # noqa: E402
from storage.sqlite.store import EVENT_COLUMNS, MIGRATIONS, SqliteStore, event_row  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Audit append"
ACTOR = Identity("slack", "U0BENCH", "Bench")


@dataclass(frozen=True)
class Result:
    name: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def _draft(i: int) -> EventDraft:
    # A realistic event: request id, item, reason and a few details, like `grant.revealed`.
    return EventDraft("grant.revealed", ACTOR, request_id=f"R{i:06d}", item="db-admin", vault="prod",
                      reason="", details={"password": True, "code": True, "n": i})


async def _timed(name: str, n: int, run: Callable[[int], Awaitable[None]]) -> Result:
    started = time.perf_counter()
    await run(n)
    return Result(name, n, time.perf_counter() - started)


async def bench_store(name: str, store: Store, n: int) -> tuple[Result, Result]:
    """Append n events one by one, then verify the whole chain."""
    await store.open()
    try:
        async def append(count: int) -> None:
            for i in range(count):
                await store.append_event(_draft(i))

        appended = await _timed(name, n, append)

        async def verify(count: int) -> None:
            report = await verify_chain(store.events())
            assert report.ok and report.checked == count, report

        verified = await _timed(f"{type(store).__name__}.events() + verify_chain (read and re-hash)", n, verify)
        return appended, verified
    finally:
        await store.close()


def _event_rows(n: int) -> list[tuple[object, ...]]:
    rows = []
    for i in range(n):
        event = seal_event(_draft(i), seq=i + 1, prev_hash=GENESIS_HASH, at=datetime.now(UTC))
        rows.append(event_row(event))
    return rows


async def bench_sqlite_raw(path: Path, n: int) -> Result:
    """Same schema and pragmas, pre-built rows, one autocommit INSERT per event: the engine's floor."""
    rows = _event_rows(n)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        for statement in MIGRATIONS[0]:
            await conn.execute(statement)
        sql = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"

        async def insert(count: int) -> None:
            for row in rows[:count]:
                await conn.execute(sql, row)

        return await _timed("SQLite raw INSERT baseline (aiosqlite, autocommit)", n, insert)
    finally:
        await conn.close()


async def bench_hashing(n: int) -> Result:
    """seal_event alone: canonical JSON + SHA-256, no I/O."""
    async def seal(count: int) -> None:
        prev = GENESIS_HASH
        for i in range(count):
            prev = seal_event(_draft(i), seq=i + 1, prev_hash=prev, at=datetime.now(UTC)).hash

    return await _timed("hashing alone (seal_event, no I/O)", n, seal)


async def bench_mongo(uri: str, n: int) -> list[Result]:
    from pymongo import AsyncMongoClient

    from storage.mongo.store import MongoStore

    db_name = f"jitpass_bench_{uuid.uuid4().hex[:8]}"
    admin: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        appended, verified = await bench_store("MongoStore.append_event", MongoStore(uri, SystemClock(), db_name), n)
        raw_db = admin[f"{db_name}_raw"]
        docs = [{"_id": r[0], "row": list(r)} for r in _event_rows(n)]

        async def insert(count: int) -> None:
            for doc in docs[:count]:
                await raw_db.events.insert_one(doc)

        raw = await _timed("MongoDB raw insert_one baseline", n, insert)
        return [appended, verified, raw]
    finally:
        await admin.drop_database(db_name)
        await admin.drop_database(f"{db_name}_raw")
        await admin.close()


def _machine() -> str:
    return (f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}")


def render(results: list[Result], n: int, ratios: list[str]) -> str:
    lines = [
        SECTION,
        "",
        f"`bench/audit_append.py --events {n}` on {datetime.now(UTC):%Y-%m-%d}: {_machine()}. "
        "The machine is shared and noisy (2 cores); baselines come from the same run.",
        "",
        "Each `append_event` is its own write transaction. The store seals the event (canonical JSON + "
        "SHA-256) against the tail this process last wrote and inserts it as one statement, which SQLite "
        "runs as a transaction of its own; if another process appended meanwhile, the seq primary key "
        "refuses it and the append is redone under `BEGIN IMMEDIATE` with the tail read afresh. SQLite "
        "runs in WAL mode with `synchronous=NORMAL`; the events table carries its 6 indexes, in the "
        "baseline too, and both make one round trip per event to aiosqlite's worker thread.",
        "",
        "| what | events | seconds | events/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {r.name} | {r.events:,} | {r.seconds:.2f} | {r.rate:,.0f} |" for r in results]
    lines += ["", *ratios, ""]
    return "\n".join(lines)


def write_section(text: str, doc: Path = DOC) -> None:
    """Replace (or add) the Audit append section, keeping every other section as it was."""
    current = doc.read_text() if doc.exists() else "# jitpass benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(updated.rstrip("\n") + "\n")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--mongodb-uri", default=os.environ.get("JITPASS_TEST_MONGODB_URI"))
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    n: int = args.events

    with tempfile.TemporaryDirectory() as tmp:
        store_result, verify_result = await bench_store(
            "SqliteStore.append_event", SqliteStore(Path(tmp) / "bench.db", SystemClock()), n
        )
        raw = await bench_sqlite_raw(Path(tmp) / "raw.db", n)
    hashing = await bench_hashing(n)
    results = [store_result, raw, hashing, verify_result]
    ratios = [
        f"SqliteStore reaches {store_result.rate / raw.rate:.0%} of the raw INSERT rate "
        f"(target: at least 2,000 events/s). Hashing alone would allow {hashing.rate:,.0f} events/s: the "
        "gap to the baseline is the store's own Python work per event (sealing, encoding, locking), "
        "which also competes with the SQLite thread for the 2 cores.",
    ]
    if args.mongodb_uri:
        mongo_store, mongo_verify, mongo_raw = await bench_mongo(args.mongodb_uri, n)
        results += [mongo_store, mongo_raw, mongo_verify]
        ratios.append(f"MongoStore reaches {mongo_store.rate / mongo_raw.rate:.0%} of raw insert_one.")
    else:
        ratios.append("MongoDB: not measured in this run (no JITPASS_TEST_MONGODB_URI / --mongodb-uri).")

    text = render(results, n, ratios)
    print(text)
    if not args.no_doc:
        write_section(text)
        print(f"updated {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
