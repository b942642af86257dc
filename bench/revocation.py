"""Revocation on time at scale: a real `jitpass serve` process on SQLite or MongoDB, the Slack stand-in
answering at once.

    .venv/bin/python bench/revocation.py lateness --grants 10000 --window 120   # the issue's figure
    .venv/bin/python bench/revocation.py lateness --grants 2000 --window 30     # scaled down (shared machine)
    .venv/bin/python bench/revocation.py startup --stored 100000 --overdue 10000
    .venv/bin/python bench/revocation.py lateness --mongoeco --grants 1000 --window 60   # MongoStore on mongoeco
    .venv/bin/python bench/revocation.py startup --mongoeco --stored 10000 --overdue 1000
    .venv/bin/python bench/revocation.py lateness --mongoeco --mongoeco-engine sqlite --grants 500 --window 60
    .venv/bin/python bench/revocation.py lateness --mongodb-uri 'mongodb://h1,h2,h3/?replicaSet=rs0'  # a real one

`lateness`: N active grants (each with a posted card and a delivered DM in the stand-in) end at random
moments within the window. For each, lateness = the time `grant.expired` was recorded (access ended in the
store) and the time `grant.wiped` was recorded (the DM edited), minus the window end. Missed: no
`grant.expired` by the last window end + `--grace` (20 s); doubled: more than one expiry or wipe. Baseline in
the same run, before and after (A/B/A): a plain asyncio loop that sleeps until each end and makes one `chat.update`.
RSS: the server's peak resident set (VmHWM).

`startup`: `stored` grants of which `overdue` ended while the server was down: time from process start to
the first `/healthz` 200 and to all overdue grants expired, and their wipes done.

Grants are bulk-written with the store's own row encoder (SQLite: one transaction; MongoDB: `insert_many`
of the store's documents), so set-up is quick. `--mongoeco` starts the suite's mongoeco server (a
pure-Python MongoDB wire server, `.venv-mongo`) for the run; `--mongodb-uri` uses a given server (each run
writes a fresh database `jitpass_bench_<hex>` there and drops it afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import sqlite3
import sys
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import quantiles
from typing import Any

import aiohttp
from pymongo import AsyncMongoClient, MongoClient, UpdateOne

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.bootstrap import open_runtime
from bot.domain.audit import GENESIS_HASH, event_to_dict, format_time, seal_event
from bot.domain.model import SYSTEM, AccessRequest, EffectDraft, EffectKind, EventDraft, Identity, Status, Window
from bot.ports import SystemClock
from storage.codec import request_to_doc
from storage.common import effect_docs
from storage.mongo.store import MongoStore
from storage.sqlite.store import _INSERT_REQUEST, _request_row
from tests.support.app import TEST_POLICY, canary_items, test_settings
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.support.mongo import new_db_name

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _grant(i: int, ends_at: datetime, fake: FakeSlack) -> AccessRequest:
    user = f"U{i:06d}"
    card_ts, dm_ts = f"1700000000.{2 * i:06d}", f"1700000000.{2 * i + 1:06d}"
    for channel, ts in (("CLEADS", card_ts), (f"D{user}", dm_ts)):
        fake.messages[(channel, ts)] = {"channel": channel, "ts": ts, "text": "x", "blocks": [], "history": []}
    start = ends_at - timedelta(hours=1)
    return AccessRequest(
        id=f"R-B{i:07d}", item="acme-zendesk", vault="acme", requester=Identity("slack", user, user),
        reason="benchmark", window=Window(duration=timedelta(hours=1)), status=Status.ACTIVE, created_at=start,
        updated_at=start, starts_at=start, ends_at=ends_at, platform="slack",
        refs={"card": {"channel": "CLEADS", "ts": card_ts}, "dm_channel": f"D{user}",
              "delivery": {"via": "dm", "channel": f"D{user}", "ts": dm_ts}})


class SqliteBackend:
    """The grants and the trail in the SQLite file the server uses."""

    name = "sqlite"

    def __init__(self, tmp: Path) -> None:
        self.db = tmp / "jitpass.db"
        self.store_url = f"sqlite:///{self.db}"

    def seed(self, grants: list[AccessRequest]) -> None:
        with closing(sqlite3.connect(self.db)) as conn:
            conn.executemany(_INSERT_REQUEST, (_request_row(g, 0) for g in grants))
            conn.commit()

    def trail(self) -> dict[str, list[tuple[str, str]]]:
        with closing(sqlite3.connect(self.db)) as conn:
            rows = conn.execute(
                "SELECT request_id, type, at FROM events WHERE type IN ('grant.expired', 'grant.wiped')")
            found: dict[str, list[tuple[str, str]]] = {}
            for request_id, kind, at in rows:
                found.setdefault(str(request_id), []).append((str(kind), str(at)))
            return found

    def overdue_active(self, now: datetime) -> int:
        with closing(sqlite3.connect(self.db)) as conn:
            return int(conn.execute("SELECT count(*) FROM requests WHERE status = 'active' AND ends_at <= ?",
                                    (format_time(now),)).fetchone()[0])

    def wiped(self) -> int:
        with closing(sqlite3.connect(self.db)) as conn:
            return int(conn.execute("SELECT count(*) FROM events WHERE type = 'grant.wiped'").fetchone()[0])

    def close(self) -> None:
        pass


class MongoBackend:
    """The grants and the trail in a fresh database on a MongoDB server (dropped at the end)."""

    name = "mongodb"

    def __init__(self, uri: str) -> None:
        self.db_name = new_db_name("jitpass_bench")
        base, _, options = uri.partition("?")
        scheme, _, rest = base.partition("://")
        self.store_url = f"{scheme}://{rest.split('/', 1)[0]}/{self.db_name}" + (f"?{options}" if options else "")
        self.uri = uri
        self.client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=10_000)
        self.db = self.client[self.db_name]
        self.server_pid: int | None = None  # the mongoeco process, when this run started it (CPU split)

    def seed(self, grants: list[AccessRequest], db_name: str | None = None) -> None:
        # The store's own documents (its codec), as `create_request` writes them; batches mongoeco takes well.
        db = self.client[db_name or self.db_name]
        docs = [{"_id": g.id, **request_to_doc(g), "created_seq": 0} for g in grants]
        for start in range(0, len(docs), 250):
            db["requests"].insert_many(docs[start:start + 250], ordered=False)

    def trail(self) -> dict[str, list[tuple[str, str]]]:
        found: dict[str, list[tuple[str, str]]] = {}
        for doc in self.db["events"].find({"type": {"$in": ["grant.expired", "grant.wiped"]}},
                                          {"request_id": 1, "type": 1, "at": 1}):
            found.setdefault(str(doc["request_id"]), []).append((str(doc["type"]), str(doc["at"])))
        return found

    def overdue_active(self, now: datetime) -> int:
        return int(self.db["requests"].count_documents({"status": "active", "ends_at": {"$lte": format_time(now)}}))

    def wiped(self) -> int:
        return int(self.db["events"].count_documents({"type": "grant.wiped"}))

    def close(self) -> None:
        self.client.drop_database(self.db_name)
        self.client.close()


Backend = SqliteBackend | MongoBackend


async def _world(tmp: Path, ends: list[datetime], fake: FakeSlack, backend: Backend) -> dict[str, str]:
    settings = test_settings(tmp, store_url=backend.store_url)
    runtime = await open_runtime(settings)
    await runtime.catalog.add(canary_items(), SYSTEM, source="bench")
    await runtime.close()
    backend.seed([_grant(i, end, fake) for i, end in enumerate(ends)])
    policy = tmp / "policy.toml"
    policy.write_text(TEST_POLICY, encoding="utf-8")
    return {"PATH": os.environ.get("PATH", ""), "JITPASS_DOTENV": str(tmp / "no.env"),
            "JITPASS_STORE": settings.store_url, "JITPASS_MASTER_KEY": settings.master_key or "",
            "JITPASS_POLICY": str(policy), "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.url}


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    cuts = quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {"p50": round(cuts[49], 3), "p99": round(cuts[98], 3), "max": round(max(values), 3)}


async def _baseline(fake: FakeSlack, ends: list[datetime]) -> dict[str, float]:
    """One asyncio timer per grant, one chat.update each: the floor any scheduler is compared with."""
    late: list[float] = []
    async with aiohttp.ClientSession() as session:
        async def one(i: int, end: datetime) -> None:
            await asyncio.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))
            user = f"U{i:06d}"
            await session.post(f"{fake.url}chat.update", headers={"Authorization": f"Bearer {BOT_TOKEN}"},
                               json={"channel": f"D{user}", "ts": f"1700000000.{2 * i + 1:06d}", "text": "ended"})
            late.append((datetime.now(UTC) - end).total_seconds())

        await asyncio.gather(*(one(i, e) for i, e in enumerate(ends)))
    return _pct(late)


FLOOR_BATCH = 25  # grants per floor transaction: jitpass's TRANSITION_BATCH


async def _floor(fake: FakeSlack, backend: MongoBackend, ends: list[datetime],
                 batch: int = FLOOR_BATCH, *, due_only: bool = False) -> dict[str, Any]:
    """The store floor: only the irreducible store work of each expiry, on the same server, in a database
    the MongoStore opened (the same collections and indexes) holding the same grants.

    One loop, as a scheduler: sleep until the next end, then take every grant ended by now (at most `batch`)
    and in ONE transaction move them (one guarded `UpdateOne` each: `_id` + status + version, in a
    `bulk_write`), insert their `grant.expired` events (chained in memory, seq as `_id`, as jitpass stores
    them) and one wipe effect each (`insert_many`). Then, concurrently with the next batch, the wipe floor:
    one `chat.update` per grant to the stand-in, then one transaction settling those effects
    (`bulk_write`) with their `grant.wiped` events. Lateness = commit time - window end. No effect claim,
    no lease, no re-read, no App Home, no card: what any design must at least do per expiry.
    `due_only`: only the grants already ended when it starts (start-up with a backlog); the rest stay stored.
    """
    db_name = new_db_name("jitpass_floor")
    base, _, options = backend.uri.partition("?")
    scheme, _, rest = base.partition("://")
    url = f"{scheme}://{rest.split('/', 1)[0]}/{db_name}" + (f"?{options}" if options else "")
    store = MongoStore(url, SystemClock())
    await store.open()
    await store.close()
    began = datetime.now(UTC)
    order = sorted(range(len(ends)), key=lambda i: ends[i])
    backend.seed([_grant(i, ends[i], fake) for i in order], db_name)
    cpu0 = _cpu_s(backend.server_pid)  # the store server's CPU for the floor's work, its seeding left out
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(backend.uri, serverSelectionTimeoutMS=10_000)
    db = client[db_name]
    expired: list[float] = []
    wiped: list[float] = []
    conflicts = [0]
    chain: list[Any] = [0, GENESIS_HASH]  # the tail (seq, hash), kept in memory as the only writer
    wipes: list[asyncio.Task[None]] = []

    def sealed(kind: str, request_id: str) -> dict[str, Any]:
        draft = EventDraft(type=kind, actor=SYSTEM, request_id=request_id, item="acme-zendesk", vault="acme",
                           details={"ended_at": format_time(datetime.now(UTC))})
        event = seal_event(draft, seq=int(chain[0]) + 1, prev_hash=str(chain[1]), at=datetime.now(UTC))
        chain[0], chain[1] = event.seq, event.hash
        return {"_id": event.seq, **event_to_dict(event)}

    one_writer = asyncio.Lock()  # the floor's transactions one at a time: the chain tail stays in memory

    async def transaction(work: Any) -> None:
        async with one_writer, client.start_session() as session:
            while True:
                seq, tail = chain[0], chain[1]
                try:
                    await session.with_transaction(work)
                    return
                except Exception:  # a conflict with the other floor transaction: redo, as jitpass does
                    chain[0], chain[1] = seq, tail
                    conflicts[0] += 1
                    await asyncio.sleep(0.001)

    async def wipe(group: list[tuple[int, str]], ids: list[str]) -> None:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(http.post(f"{fake.url}chat.update",
                                             headers={"Authorization": f"Bearer {BOT_TOKEN}"},
                                             json={"channel": f"DU{i:06d}", "ts": f"1700000000.{2 * i + 1:06d}",
                                                   "text": "ended"}) for i, _ in group))

        async def settle(session: Any) -> None:
            at = format_time(datetime.now(UTC))
            await db["effects"].bulk_write([UpdateOne({"_id": e, "status": "pending"},
                                                      {"$set": {"status": "done", "updated_at": at}}) for e in ids],
                                           ordered=True, session=session)
            await db["events"].insert_many([sealed("grant.wiped", r) for _, r in group], session=session)

        await transaction(settle)
        now = datetime.now(UTC)
        wiped.extend((now - ends[i]).total_seconds() for i, _ in group)

    if due_only:
        order = [i for i in order if ends[i] <= began]
    started = time.monotonic()
    try:
        position = 0
        while position < len(order):
            await asyncio.sleep(max(0.0, (ends[order[position]] - datetime.now(UTC)).total_seconds()))
            now = datetime.now(UTC)
            group: list[tuple[int, str]] = []
            while position < len(order) and ends[order[position]] <= now and len(group) < batch:
                group.append((order[position], f"R-B{order[position]:07d}"))
                position += 1
            ids = [f"floor-{request_id}" for _, request_id in group]

            async def expire(session: Any, group: list[tuple[int, str]] = group, ids: list[str] = ids) -> None:
                at = format_time(datetime.now(UTC))
                moved = await db["requests"].bulk_write(
                    [UpdateOne({"_id": r, "status": "active", "version": 0},
                               {"$set": {"status": "expired", "updated_at": at}, "$inc": {"version": 1}})
                     for _, r in group], ordered=True, session=session)
                if moved.matched_count != len(group):
                    raise RuntimeError("a floor grant moved twice")
                await db["events"].insert_many([sealed("grant.expired", r) for _, r in group], session=session)
                docs = effect_docs("-", "slack", [EffectDraft(EffectKind.WIPE)], datetime.now(UTC))[0]
                await db["effects"].insert_many([{**docs, "_id": e, "request_id": r}
                                                 for e, (_, r) in zip(ids, group, strict=True)], session=session)

            await transaction(expire)
            now = datetime.now(UTC)
            expired.extend((now - ends[i]).total_seconds() for i, _ in group)
            wipes.append(asyncio.get_running_loop().create_task(wipe(group, ids)))
        all_expired = time.monotonic() - started
        await asyncio.gather(*wipes)
        all_wiped = time.monotonic() - started
        cpu = _cpu_s(backend.server_pid) - cpu0
    finally:
        for task in wipes:
            task.cancel()
        await client.drop_database(db_name)
        await client.close()
    return {"batch": batch, "expired_lateness_s": _pct(expired), "wipe_lateness_s": _pct(wiped),
            "conflicts_redone": conflicts[0], "all_expired_s": round(all_expired, 2),
            "all_wiped_s": round(all_wiped, 2), "store_server_cpu_s": round(cpu, 2)}


def _cpu_s(pid: int | None) -> float:
    """utime + stime of a process (all its threads), in seconds; nan when it is not ours to read."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mongoeco_pid() -> int | None:
    """The mongoeco server this process started (a child running tests/support/mongoeco_server.py)."""
    me = str(os.getpid())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == me and b"mongoeco_server.py" in cmdline:
            return int(proc.name)
    return None


def _at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


# The checkout whose `jitpass serve` runs (`--code`): `python -m bot` imports bot/ and storage/ from its cwd.
CODE = ROOT


async def _serve(env: dict[str, str], log: Path) -> tuple[asyncio.subprocess.Process, str, float]:
    port = _port()
    started = time.monotonic()
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "--port", str(port), cwd=CODE, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=out)
    return process, f"http://127.0.0.1:{port}", started


async def _healthy(url: str, started: float, timeout: float = 120) -> float:
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < timeout:
            try:
                async with session.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as reply:
                    if reply.status == 200:
                        return time.monotonic() - started
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError("no /healthz")


async def _spy(out: Path, pids: dict[str, int | None], seconds: float) -> list[asyncio.subprocess.Process]:
    """py-spy (50 Hz, raw collapsed stacks) on each process for `seconds`: `<out>.<name>.txt`."""
    spies = []
    for name, pid in pids.items():
        if pid is not None:
            spies.append(await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--duration",
                str(max(1, int(seconds))), "--rate", "50", "--format", "raw", "--output",
                f"{out}.{name}.txt", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))
    return spies


async def _floor_run(fake: FakeSlack, backend: MongoBackend, grants: int, window: float,
                     batch: int) -> dict[str, Any]:
    """The store floor over the same number of grants and window, with the store server's CPU it took."""
    ends = [datetime.now(UTC) + timedelta(seconds=2 + random.uniform(0, window)) for _ in range(grants)]
    for i in range(grants):
        fake.messages.setdefault((f"DU{i:06d}", f"1700000000.{2 * i + 1:06d}"), {
            "channel": f"DU{i:06d}", "ts": "x", "text": "", "blocks": [], "history": []})
    return await _floor(fake, backend, ends, batch)


async def lateness(grants: int, window: float, tmp: Path, backend: Backend, lead: float = 15.0,
                   grace: float = 20.0, floor_batch: int = FLOOR_BATCH, floor_after: bool = True,
                   profile: Path | None = None) -> dict[str, Any]:
    """`lead`: seconds from now to the first end, room for set-up and start-up; `grace`: how long after the
    last end a grant may still be recorded before it counts as missed. On MongoDB the store floor
    (`_floor`) runs before and after jitpass (A/B/A); the asyncio-timer baseline before only. `profile`:
    py-spy on the jitpass server and the store server (mongoeco) while the grants end."""
    fake = FakeSlack()
    await fake.start()
    results: dict[str, Any] = {"store": backend.name, "grants": grants, "window_s": window}
    try:
        base_ends = [datetime.now(UTC) + timedelta(seconds=1 + random.uniform(0, window)) for _ in range(grants)]
        for i in range(grants):
            fake.messages[(f"DU{i:06d}", f"1700000000.{2 * i + 1:06d}")] = {
                "channel": f"DU{i:06d}", "ts": "x", "text": "", "blocks": [], "history": []}
        results["baseline_before"] = await _baseline(fake, base_ends)
        mongo = backend if isinstance(backend, MongoBackend) else None
        if mongo is not None:
            results["floor_before"] = await _floor_run(fake, mongo, grants, window, floor_batch)
        t0 = datetime.now(UTC) + timedelta(seconds=lead)
        ends = [t0 + timedelta(seconds=random.uniform(0, window)) for _ in range(grants)]
        env = await _world(tmp, ends, fake, backend)
        results["seeded_before_first_end_s"] = round((t0 - datetime.now(UTC)).total_seconds(), 2)
        store_pid = mongo.server_pid if mongo is not None else None
        store_cpu0 = _cpu_s(store_pid)
        process, url, started = await _serve(env, tmp / "server.log")
        try:
            results["healthz_s"] = round(await _healthy(url, started), 2)
            spies = await _spy(profile, {"serve": process.pid, "store": store_pid},
                               (max(ends) - datetime.now(UTC)).total_seconds() + grace / 2) if profile else []
            await asyncio.sleep(max(0.0, (max(ends) - datetime.now(UTC)).total_seconds()) + grace)
            for spy in spies:
                await spy.wait()
            results["server_rss_peak_mb"] = _vm_hwm_mb(process.pid)
            # CPU from process start to the end of the grace: jitpass's server vs the store server.
            results["cpu_s"] = {"jitpass": round(_cpu_s(process.pid), 2),
                                "store_server": round(_cpu_s(store_pid) - store_cpu0, 2)}
        finally:
            process.kill()
            await process.wait()
        trail = backend.trail()
        expired: list[float] = []
        wiped: list[float] = []
        missed = doubled = 0
        for i, end in enumerate(ends):
            kinds = trail.get(f"R-B{i:07d}", [])
            e = [_at(at) for k, at in kinds if k == "grant.expired"]
            w = [_at(at) for k, at in kinds if k == "grant.wiped"]
            missed += not e
            doubled += len(e) > 1 or len(w) > 1
            expired += [(x - end).total_seconds() for x in e[:1]]
            wiped += [(x - end).total_seconds() for x in w[:1]]
        results |= {"expired_lateness_s": _pct(expired), "wipe_lateness_s": _pct(wiped), "missed": missed,
                    "doubled": doubled, "wiped": len(wiped)}
        if mongo is not None:
            if floor_after:
                results["floor_after"] = await _floor_run(fake, mongo, grants, window, floor_batch)
        else:
            results["baseline_after"] = await _baseline(fake, [datetime.now(UTC) + timedelta(
                seconds=1 + random.uniform(0, window)) for _ in range(grants)])
        floors = [results[k]["expired_lateness_s"]["p99"] for k in ("floor_before", "floor_after") if k in results]
        if floors:
            results["expired_p99_over_floor_p99"] = round(results["expired_lateness_s"]["p99"] / max(floors), 1)
    finally:
        await fake.stop()
    return results


async def startup(stored: int, overdue: int, tmp: Path, backend: Backend,
                  floor_after: bool = True) -> dict[str, Any]:
    """On MongoDB the store floor clears the same backlog (same stored set) before and after jitpass."""
    fake = FakeSlack()
    await fake.start()
    now = datetime.now(UTC)
    ends = [now - timedelta(seconds=random.uniform(1, 600)) if i < overdue else now + timedelta(days=1, seconds=i)
            for i in range(stored)]
    mongo = backend if isinstance(backend, MongoBackend) else None
    floors: dict[str, Any] = {}

    async def floor() -> dict[str, Any]:
        assert mongo is not None
        # The same stored set, ended as long ago as in the jitpass run.
        moment = datetime.now(UTC)
        return await _floor(fake, mongo, [moment - (now - e) for e in ends], due_only=True)

    try:
        if mongo is not None:
            floors["floor_before"] = await floor()
        env = await _world(tmp, ends, fake, backend)
        now = datetime.now(UTC)  # the overdue count below is of grants ended before this moment
        store_cpu0 = _cpu_s(mongo.server_pid if mongo else None)
        process, url, started = await _serve(env, tmp / "server.log")
        try:
            health = await _healthy(url, started)
            while True:
                left = backend.overdue_active(now)
                if not left:
                    break
                if time.monotonic() - started > 300:
                    raise TimeoutError(f"{left} overdue grants still active")
                await asyncio.sleep(0.1)
            revoked = time.monotonic() - started
            while True:
                wiped = backend.wiped()
                if wiped >= overdue or time.monotonic() - started > 300:
                    break
                await asyncio.sleep(0.2)
            done = time.monotonic() - started
            rss = _vm_hwm_mb(process.pid)
            cpu = {"jitpass": round(_cpu_s(process.pid), 2),
                   "store_server": round(_cpu_s(mongo.server_pid if mongo else None) - store_cpu0, 2)}
        finally:
            process.kill()
            await process.wait()
        if mongo is not None and floor_after:
            floors["floor_after"] = await floor()
    finally:
        await fake.stop()
    return {"store": backend.name, "stored": stored, "overdue": overdue, "healthz_s": round(health, 2),
            "all_overdue_expired_s": round(revoked, 2), "all_wiped_s": round(done, 2), "wiped": wiped,
            "server_rss_peak_mb": rss, "cpu_s": cpu, **floors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("lateness")
    one.add_argument("--grants", type=int, default=10_000)
    one.add_argument("--window", type=float, default=120.0)
    two = sub.add_parser("startup")
    two.add_argument("--stored", type=int, default=100_000)
    two.add_argument("--overdue", type=int, default=10_000)
    one.add_argument("--lead", type=float, default=15.0,
                     help="seconds to the first end (set-up and start-up; mongoeco needs more)")
    one.add_argument("--grace", type=float, default=20.0,
                     help="seconds after the last end before a grant without grant.expired counts as missed")
    for p in (one, two):
        p.add_argument("--dir", type=Path, default=Path("/tmp") / f"jitpass-bench-{os.getpid()}")
        p.add_argument("--mongoeco", action="store_true",
                       help="MongoStore on a local mongoeco server started for the run (.venv-mongo)")
        p.add_argument("--mongoeco-engine", choices=["memory", "sqlite"], default="memory",
                       help="mongoeco's storage engine (sqlite: a file in --dir; one transaction at a time)")
        p.add_argument("--mongodb-uri", help="MongoStore on this server (a replica set, Atlas)")
        p.add_argument("--code", type=Path, default=ROOT,
                       help="the checkout whose `jitpass serve` runs (e.g. main's, for an A/B); the bench, "
                            "its seeding and its floor stay this tree's")
        p.add_argument("--floor-batch", type=int, default=FLOOR_BATCH,
                       help="grants per transaction of the MongoDB store floor (default 25)")
        p.add_argument("--no-floor-after", action="store_true",
                       help="MongoDB: run the store floor only before jitpass (shorter; no A/B/A)")
    one.add_argument("--profile", type=Path,
                     help="py-spy (50 Hz) on jitpass serve and the mongoeco server while the grants end: "
                          "collapsed stacks to PROFILE.serve.txt and PROFILE.store.txt")
    args = parser.parse_args()
    global CODE
    CODE = args.code.resolve()
    args.dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        backend: Backend = SqliteBackend(args.dir)
        if args.mongoeco or args.mongodb_uri:
            uri = args.mongodb_uri
            if args.mongoeco:
                from tests.support.mongo import mongoeco_server

                store_file = args.dir / "mongoeco.db"
                store_file.unlink(missing_ok=True)
                uri = stack.enter_context(mongoeco_server(engine=args.mongoeco_engine, path=store_file)).uri
            backend = MongoBackend(uri)
            backend.server_pid = _mongoeco_pid() if args.mongoeco else None
            stack.callback(backend.close)
        if args.what == "lateness":
            result = asyncio.run(lateness(args.grants, args.window, args.dir, backend, args.lead, args.grace,
                                          args.floor_batch, not args.no_floor_after, args.profile))
        else:
            result = asyncio.run(startup(args.stored, args.overdue, args.dir, backend, not args.no_floor_after))
    result["code"] = str(CODE)
    if args.mongoeco:
        result["mongoeco_engine"] = args.mongoeco_engine
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
