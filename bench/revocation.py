"""Revocation on time at scale: a real `jitpass serve` process on SQLite or MongoDB, the Slack stand-in
answering at once.

    .venv/bin/python bench/revocation.py lateness --grants 10000 --window 120   # the issue's figure
    .venv/bin/python bench/revocation.py lateness --grants 2000 --window 30     # scaled down (shared machine)
    .venv/bin/python bench/revocation.py startup --stored 100000 --overdue 10000
    .venv/bin/python bench/revocation.py lateness --mongoeco --grants 1000 --window 60   # MongoStore on mongoeco
    .venv/bin/python bench/revocation.py startup --mongoeco --stored 10000 --overdue 1000
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
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.bootstrap import open_runtime
from bot.domain.audit import format_time
from bot.domain.model import SYSTEM, AccessRequest, Identity, Status, Window
from storage.codec import request_to_doc
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
        self.client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=10_000)
        self.db = self.client[self.db_name]

    def seed(self, grants: list[AccessRequest]) -> None:
        # The store's own documents (its codec), as `create_request` writes them; batches mongoeco takes well.
        docs = [{"_id": g.id, **request_to_doc(g), "created_seq": 0} for g in grants]
        for start in range(0, len(docs), 250):
            self.db["requests"].insert_many(docs[start:start + 250], ordered=False)

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


def _at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


async def _serve(env: dict[str, str], log: Path) -> tuple[asyncio.subprocess.Process, str, float]:
    port = _port()
    started = time.monotonic()
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "--port", str(port), cwd=ROOT, env=env,
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


async def lateness(grants: int, window: float, tmp: Path, backend: Backend, lead: float = 15.0,
                   grace: float = 20.0) -> dict[str, Any]:
    """`lead`: seconds from now to the first end, room for set-up and start-up; `grace`: how long after the
    last end a grant may still be recorded before it counts as missed."""
    fake = FakeSlack()
    await fake.start()
    results: dict[str, Any] = {"store": backend.name, "grants": grants, "window_s": window}
    try:
        base_ends = [datetime.now(UTC) + timedelta(seconds=1 + random.uniform(0, window)) for _ in range(grants)]
        for i in range(grants):
            fake.messages[(f"DU{i:06d}", f"1700000000.{2 * i + 1:06d}")] = {
                "channel": f"DU{i:06d}", "ts": "x", "text": "", "blocks": [], "history": []}
        results["baseline_before"] = await _baseline(fake, base_ends)
        t0 = datetime.now(UTC) + timedelta(seconds=lead)
        ends = [t0 + timedelta(seconds=random.uniform(0, window)) for _ in range(grants)]
        env = await _world(tmp, ends, fake, backend)
        results["seeded_before_first_end_s"] = round((t0 - datetime.now(UTC)).total_seconds(), 2)
        process, url, started = await _serve(env, tmp / "server.log")
        try:
            results["healthz_s"] = round(await _healthy(url, started), 2)
            await asyncio.sleep(max(0.0, (max(ends) - datetime.now(UTC)).total_seconds()) + grace)
            results["server_rss_peak_mb"] = _vm_hwm_mb(process.pid)
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
        results["baseline_after"] = await _baseline(fake, [datetime.now(UTC) + timedelta(seconds=1 + random.uniform(
            0, window)) for _ in range(grants)])
    finally:
        await fake.stop()
    return results


async def startup(stored: int, overdue: int, tmp: Path, backend: Backend) -> dict[str, Any]:
    fake = FakeSlack()
    await fake.start()
    now = datetime.now(UTC)
    ends = [now - timedelta(seconds=random.uniform(1, 600)) if i < overdue else now + timedelta(days=1, seconds=i)
            for i in range(stored)]
    try:
        env = await _world(tmp, ends, fake, backend)
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
        finally:
            process.kill()
            await process.wait()
    finally:
        await fake.stop()
    return {"store": backend.name, "stored": stored, "overdue": overdue, "healthz_s": round(health, 2),
            "all_overdue_expired_s": round(revoked, 2), "all_wiped_s": round(done, 2), "wiped": wiped,
            "server_rss_peak_mb": rss}


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
        p.add_argument("--mongodb-uri", help="MongoStore on this server (a replica set, Atlas)")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        backend: Backend = SqliteBackend(args.dir)
        if args.mongoeco or args.mongodb_uri:
            uri = args.mongodb_uri
            if args.mongoeco:
                from tests.support.mongo import mongoeco_server

                uri = stack.enter_context(mongoeco_server()).uri
            backend = MongoBackend(uri)
            stack.callback(backend.close)
        if args.what == "lateness":
            result = asyncio.run(lateness(args.grants, args.window, args.dir, backend, args.lead, args.grace))
        else:
            result = asyncio.run(startup(args.stored, args.overdue, args.dir, backend))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
