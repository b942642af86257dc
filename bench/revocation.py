"""Revocation on time at scale: a real `jitpass serve` process on SQLite, the Slack stand-in answering at once.

    .venv/bin/python bench/revocation.py lateness --grants 10000 --window 120   # the issue's figure
    .venv/bin/python bench/revocation.py lateness --grants 2000 --window 30     # scaled down (shared machine)
    .venv/bin/python bench/revocation.py startup --stored 100000 --overdue 10000

`lateness`: N active grants (each with a posted card and a delivered DM in the stand-in) end at random
moments within the window. For each, lateness = the time `grant.expired` was recorded (access ended in the
store) and the time `grant.wiped` was recorded (the DM edited), minus the window end. Missed: no
`grant.expired` by the window end + 20 s; doubled: more than one expiry or wipe. Baseline in the same run,
before and after (A/B/A): a plain asyncio loop that sleeps until each end and makes one `chat.update`.
RSS: the server's peak resident set (VmHWM).

`startup`: `stored` grants of which `overdue` ended while the server was down: time from process start to
the first `/healthz` 200 and to all overdue grants expired, and their wipes done.

Grants are bulk-written with the store's own row encoder (one transaction), so set-up is quick.
"""

from __future__ import annotations

import argparse
import asyncio
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.bootstrap import open_runtime
from bot.domain.model import SYSTEM, AccessRequest, Identity, Status, Window
from storage.sqlite.store import _INSERT_REQUEST, _request_row
from tests.support.app import TEST_POLICY, canary_items, test_settings
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack

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


async def _world(tmp: Path, ends: list[datetime], fake: FakeSlack) -> dict[str, str]:
    settings = test_settings(tmp)
    runtime = await open_runtime(settings)
    await runtime.catalog.add(canary_items(), SYSTEM, source="bench")
    await runtime.close()
    with closing(sqlite3.connect(tmp / "jitpass.db")) as conn:
        conn.executemany(_INSERT_REQUEST, (_request_row(_grant(i, end, fake), 0) for i, end in enumerate(ends)))
        conn.commit()
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


def _trail(db: Path) -> dict[str, list[tuple[str, str]]]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT request_id, type, at FROM events WHERE type IN ('grant.expired', 'grant.wiped')")
        found: dict[str, list[tuple[str, str]]] = {}
        for request_id, kind, at in rows:
            found.setdefault(str(request_id), []).append((str(kind), str(at)))
        return found


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


async def lateness(grants: int, window: float, tmp: Path) -> dict[str, Any]:
    fake = FakeSlack()
    await fake.start()
    lead = 15.0  # set-up and start-up happen before the first end
    results: dict[str, Any] = {"grants": grants, "window_s": window}
    try:
        base_ends = [datetime.now(UTC) + timedelta(seconds=1 + random.uniform(0, window)) for _ in range(grants)]
        for i in range(grants):
            fake.messages[(f"DU{i:06d}", f"1700000000.{2 * i + 1:06d}")] = {
                "channel": f"DU{i:06d}", "ts": "x", "text": "", "blocks": [], "history": []}
        results["baseline_before"] = await _baseline(fake, base_ends)
        t0 = datetime.now(UTC) + timedelta(seconds=lead)
        ends = [t0 + timedelta(seconds=random.uniform(0, window)) for _ in range(grants)]
        env = await _world(tmp, ends, fake)
        process, url, started = await _serve(env, tmp / "server.log")
        try:
            results["healthz_s"] = round(await _healthy(url, started), 2)
            await asyncio.sleep(max(0.0, (max(ends) - datetime.now(UTC)).total_seconds()) + 20)
            results["server_rss_peak_mb"] = _vm_hwm_mb(process.pid)
        finally:
            process.kill()
            await process.wait()
        trail = _trail(tmp / "jitpass.db")
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


async def startup(stored: int, overdue: int, tmp: Path) -> dict[str, Any]:
    fake = FakeSlack()
    await fake.start()
    now = datetime.now(UTC)
    ends = [now - timedelta(seconds=random.uniform(1, 600)) if i < overdue else now + timedelta(days=1, seconds=i)
            for i in range(stored)]
    try:
        env = await _world(tmp, ends, fake)
        process, url, started = await _serve(env, tmp / "server.log")
        try:
            health = await _healthy(url, started)
            db = tmp / "jitpass.db"
            while True:
                with closing(sqlite3.connect(db)) as conn:
                    left = conn.execute("SELECT count(*) FROM requests WHERE status = 'active' AND ends_at <= ?",
                                        (now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),)).fetchone()[0]
                if not left:
                    break
                if time.monotonic() - started > 300:
                    raise TimeoutError(f"{left} overdue grants still active")
                await asyncio.sleep(0.1)
            revoked = time.monotonic() - started
            while True:
                with closing(sqlite3.connect(db)) as conn:
                    wiped = conn.execute("SELECT count(*) FROM events WHERE type = 'grant.wiped'").fetchone()[0]
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
    return {"stored": stored, "overdue": overdue, "healthz_s": round(health, 2), "all_overdue_expired_s":
            round(revoked, 2), "all_wiped_s": round(done, 2), "wiped": wiped, "server_rss_peak_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("lateness")
    one.add_argument("--grants", type=int, default=10_000)
    one.add_argument("--window", type=float, default=120.0)
    two = sub.add_parser("startup")
    two.add_argument("--stored", type=int, default=100_000)
    two.add_argument("--overdue", type=int, default=10_000)
    for p in (one, two):
        p.add_argument("--dir", type=Path, default=Path("/tmp") / f"jitpass-bench-{os.getpid()}")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.what == "lateness":
        result = asyncio.run(lateness(args.grants, args.window, args.dir))
    else:
        result = asyncio.run(startup(args.stored, args.overdue, args.dir))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
