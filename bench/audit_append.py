"""Audit append throughput: how many events per second a store chains and commits, one at a time.

    .venv/bin/python bench/audit_append.py [--events 100000] [--no-doc]              # SQLite
    .venv/bin/python bench/audit_append.py --mongoeco --events 3000 [--no-doc]        # MongoStore on mongoeco
    .venv/bin/python bench/audit_append.py --mongodb-uri URI [--events N] [--no-doc]  # ... on a real server

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
import contextlib
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
MONGOECO_PIN = ROOT / "tests" / "support" / "mongoeco-requirements.txt"
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


async def bench_mongo(uri: str, n: int, rounds: int = 4) -> list[Result]:
    """MongoStore.append_event against two same-server baselines, A/B alternated in `rounds` rounds.

    Baselines, one round trip per step as the store makes them, with pre-sealed documents:
      * insert_one per event (the server's floor for one acknowledged write);
      * find_one of the tail + insert_one: the same two round trips the store's append makes, without
        any jitpass code (sealing, encoding, error mapping).
    Each round runs the three in a rotated order on a slice of n / rounds events, so a neighbour's load
    on this shared machine falls on all three alike.
    """
    from pymongo import DESCENDING, AsyncMongoClient

    from bot.domain.audit import event_to_dict
    from storage.mongo.store import MongoStore

    db_name = f"jitpass_bench_{uuid.uuid4().hex[:8]}"
    admin: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
    store = MongoStore(uri, SystemClock(), db_name)
    await store.open()
    try:
        raw, tail = admin[f"{db_name}_raw"]["events"], admin[f"{db_name}_tail"]["events"]
        docs = []
        prev = GENESIS_HASH
        for i in range(n):
            event = seal_event(_draft(i), seq=i + 1, prev_hash=prev, at=datetime.now(UTC))
            prev = event.hash
            docs.append({"_id": event.seq, **event_to_dict(event)})
        seconds = {"store": 0.0, "raw": 0.0, "tail": 0.0}
        per = n // rounds

        async def run(what: str, chunk: range) -> None:
            for i in chunk:
                if what == "store":
                    await store.append_event(_draft(i))
                elif what == "raw":
                    await raw.insert_one(docs[i])
                else:
                    await tail.find_one({}, sort=[("_id", DESCENDING)])
                    await tail.insert_one(docs[i])

        kinds = ["store", "raw", "tail"]
        for r in range(rounds):
            chunk = range(r * per, n if r == rounds - 1 else (r + 1) * per)
            for what in kinds[r % 3:] + kinds[:r % 3]:
                started = time.perf_counter()
                await run(what, chunk)
                seconds[what] += time.perf_counter() - started

        async def verify(count: int) -> None:
            report = await verify_chain(store.events())
            assert report.ok and report.checked == count, report

        verified = await _timed("MongoStore.events() + verify_chain (read and re-hash)", n, verify)
        return [Result("MongoStore.append_event", n, seconds["store"]),
                Result("baseline: find_one(tail) + insert_one, pre-sealed", n, seconds["tail"]),
                Result("baseline: insert_one, pre-sealed", n, seconds["raw"]),
                verified]
    finally:
        await store.close()
        for suffix in ("", "_raw", "_tail"):
            await admin.drop_database(f"{db_name}{suffix}")
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


def write_section(text: str, doc: Path = DOC, *, section: str = SECTION) -> None:
    """Replace (or add) one section, keeping every other section as it was."""
    current = doc.read_text() if doc.exists() else "# jitpass benchmarks\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(updated.rstrip("\n") + "\n")


MONGO_SECTION = "## Audit append on MongoDB"


def server_label(uri: str, started_mongoeco: bool) -> str:
    """What the MongoDB figures were measured on, said plainly."""
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        info = client.admin.command("buildInfo")
    finally:
        client.close()
    if started_mongoeco:
        pin = next((line for line in MONGOECO_PIN.read_text().splitlines() if line.startswith("mongoeco")), "mongoeco")
        return (f"{pin.split('[')[0]} {pin.split('==')[-1]} (`tests/support/mongoeco_server.py`, memory engine; it "
                f"reports MongoDB {info.get('version')}), a pure-Python MongoDB wire server on the same 2 cores "
                "as the benchmark, not mongod")
    return f"the server at JITPASS_TEST_MONGODB_URI / --mongodb-uri (MongoDB {info.get('version')})"


def render_mongo(results: list[Result], n: int, label: str) -> str:
    store, tail, raw, verified = results
    lines = [
        MONGO_SECTION,
        "",
        f"`bench/audit_append.py --mongoeco --events {n}` on {datetime.now(UTC):%Y-%m-%d}: {_machine()}. "
        f"Server: {label}.",
        "",
        "`MongoStore.append_event` outside a transition is two round trips: read the tail (`find_one`, "
        "newest `_id`), insert the sealed event with `_id` = seq (a lost race is a duplicate key and is "
        "redone on the new tail). The baselines make the same calls on the same server with documents "
        "sealed beforehand; the three alternate in 4 rounds (A/B/C, rotated), so the ratios hold on a "
        "noisy machine even where the absolute rates do not. mongoeco's writes slow down as a collection "
        "grows (its memory engine keeps indexes in Python: bare insert_one fell from ~400/s at 400 events to "
        "~200/s at 1,000 in trial runs), for the store and the baselines alike, so a run is kept to a few "
        "thousand events and only the ratios carry over.",
        "",
        "| what | events | seconds | events/s | vs find_one + insert_one |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in (store, tail, raw):
        lines.append(f"| {r.name} | {r.events:,} | {r.seconds:.2f} | {r.rate:,.0f} | {tail.seconds / r.seconds:.2f}× |")
    lines.append(f"| {verified.name} | {verified.events:,} | {verified.seconds:.2f} | {verified.rate:,.0f} | |")
    lines += [
        "",
        f"MongoStore appends at {store.rate / tail.rate:.0%} of the rate of the same two calls without jitpass's "
        f"code, and at {store.rate / raw.rate:.0%} of one bare insert_one per event.",
        "",
        "What these figures show: what jitpass's own code (sealing, encoding, error mapping) adds to the "
        "two server calls an append must make, and that the chain read back from MongoDB verifies. What "
        "they do not show: mongod's speed. mongoeco executes every command in Python, "
        "on the same two cores as the client, with no journal and no replication, so its absolute rates say "
        "nothing about a replica set, where each append waits for `w=majority` (a network round trip to a "
        "second member) and the write path is the primary's journal. Run the same command against a real "
        "replica set with `--mongodb-uri` for figures that do.",
        "",
    ]
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--mongodb-uri", default=os.environ.get("JITPASS_TEST_MONGODB_URI"),
                        help="measure MongoStore on this server (a replica set, Atlas) instead of SQLite")
    parser.add_argument("--mongoeco", action="store_true",
                        help="measure MongoStore on a local mongoeco server started for the run (.venv-mongo)")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    n: int = args.events

    if args.mongoeco or args.mongodb_uri:
        with contextlib.ExitStack() as stack:
            uri = args.mongodb_uri
            if args.mongoeco:
                from tests.support.mongo import mongoeco_server

                uri = stack.enter_context(mongoeco_server()).uri
            label = server_label(uri, args.mongoeco)
            text = render_mongo(await bench_mongo(uri, n), n, label)
        section = MONGO_SECTION
    else:
        text = await bench_sqlite(n)
        section = SECTION
    print(text)
    if not args.no_doc:
        write_section(text, section=section)
        print(f"updated {DOC.relative_to(ROOT)}")


async def bench_sqlite(n: int) -> str:
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
        "MongoDB: see the next section (`--mongoeco`, or `--mongodb-uri` for a real server).",
    ]
    return render(results, n, ratios)


if __name__ == "__main__":
    asyncio.run(main())
