"""Round trips and time of the MongoDB store's revocation path, counted by the driver, no chat involved.

    .venv/bin/python bench/mongo_round_trips.py --grants 200            # this tree's code, on mongoeco
    (cd /tmp/main-tree && /work/.../.venv/bin/python /path/to/bench/mongo_round_trips.py --code .)  # A/B

For one batch of `grants` overdue grants on a fresh database (mongoeco, started for the run): the
commands the driver sends (PyMongo command monitoring, so the figure does not depend on how busy the
machine is) and the wall time of `AccessService.expire_many` (the expiries: transitions, events, effects),
then of `claim_effects` (64 of the wipes/updates that made) and of `settle_effects` (those 64 done, each
with its `grant.wiped` event). `--code DIR` imports bot/ and storage/ from another checkout (e.g. main's),
so both sides run the same script in the same session.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import MongoClient, monitoring

ROOT = Path(__file__).resolve().parents[1]


class _Commands(monitoring.CommandListener):
    """Counts the commands every client in this process sends."""

    def __init__(self) -> None:
        self.names: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _cpu(pid: int | None) -> tuple[float, float]:
    """(this process's CPU seconds, the mongoeco server's), from /proc (nan when not ours)."""
    mine = time.process_time()
    if pid is None:
        return mine, float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return mine, float("nan")
    return mine, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_split(pid: int | None, before: tuple[float, float]) -> dict[str, float]:
    """CPU seconds since `before`: jitpass's code (this process) and the store server's."""
    now = _cpu(pid)
    return {"cpu_jitpass_s": round(now[0] - before[0], 3), "cpu_store_server_s": round(now[1] - before[1], 3)}


def _server_pid() -> int | None:
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


async def _run(grants: int, tmp: Path, counter: _Commands, background: float) -> dict[str, Any]:
    from bot.bootstrap import open_runtime
    from bot.domain.model import (
        SYSTEM,
        AccessRequest,
        EffectOutcome,
        EffectStatus,
        EventDraft,
        Identity,
        Status,
        Window,
    )
    from storage.codec import request_to_doc
    from tests.support.app import canary_items, test_settings
    from tests.support.mongo import mongoeco_server, new_db_name

    with mongoeco_server() as server:
        db_name = new_db_name("jitpass_trips")
        uri = server.uri.replace("/?", f"/{db_name}?", 1)
        runtime = await open_runtime(test_settings(tmp, store_url=uri))
        try:
            await runtime.catalog.add(canary_items(), SYSTEM, source="bench")
            now = datetime.now(UTC)
            start, end = now - timedelta(hours=1), now - timedelta(seconds=1)
            batch = [AccessRequest(
                id=f"R-T{i:07d}", item="acme-zendesk", vault="acme",
                requester=Identity("slack", f"U{i:06d}", f"U{i:06d}"), reason="benchmark",
                window=Window(duration=timedelta(hours=1)), status=Status.ACTIVE, created_at=start, updated_at=start,
                starts_at=start, ends_at=end, platform="slack",
                refs={"card": {"channel": "CLEADS", "ts": f"1700000000.{2 * i:06d}"}, "dm_channel": f"DU{i:06d}",
                      "delivery": {"via": "dm", "channel": f"DU{i:06d}", "ts": f"1700000000.{2 * i + 1:06d}"}})
                for i in range(grants)]
            with MongoClient(server.uri, serverSelectionTimeoutMS=10_000) as client:
                client[db_name]["requests"].insert_many(
                    [{"_id": g.id, **request_to_doc(g), "created_seq": 0} for g in batch])
            result: dict[str, Any] = {"grants": grants}

            store = runtime.store
            writes = [0]

            async def other_writer() -> None:
                # Another writer on the same database (a replica's lease renewals, settles): mongoeco aborts
                # a transaction that any commit overtook, so this measures how a long batch fares beside it.
                while True:
                    await asyncio.sleep(1 / background)
                    await store.check_write(5)
                    writes[0] += 1

            writer = asyncio.get_running_loop().create_task(other_writer()) if background > 0 else None
            server_pid = _server_pid()
            counter.names.clear()
            began, cpu = time.perf_counter(), _cpu(server_pid)
            ended = await runtime.service.expire_many(batch)
            result["expire_many"] = {"ended": len(ended), "seconds": round(time.perf_counter() - began, 3),
                                     **_cpu_split(server_pid, cpu),
                                     "commands": sum(counter.names.values()) - writes[0],
                                     "by_command": dict(counter.names), "other_writes": writes[0]}
            if writer is not None:
                writer.cancel()

            counter.names.clear()
            began, cpu = time.perf_counter(), _cpu(server_pid)
            at = datetime.now(UTC)
            claimed = await store.claim_effects(at, "bench", at + timedelta(seconds=60), platforms={"slack"}, limit=64)
            result["claim_effects"] = {"claimed": len(claimed), "seconds": round(time.perf_counter() - began, 3),
                                       **_cpu_split(server_pid, cpu),
                                       "commands": sum(counter.names.values()), "by_command": dict(counter.names)}

            outcomes = [(e, EffectOutcome(EffectStatus.DONE, event=EventDraft(
                type="grant.wiped", actor=SYSTEM, request_id=e.request_id, item="acme-zendesk", vault="acme",
                details={"attempt": 1}))) for e in claimed]
            counter.names.clear()
            began, cpu = time.perf_counter(), _cpu(server_pid)
            kept = await store.settle_effects(outcomes, "bench")
            result["settle_effects"] = {"settled": sum(kept), "seconds": round(time.perf_counter() - began, 3),
                                        **_cpu_split(server_pid, cpu),
                                        "commands": sum(counter.names.values()), "by_command": dict(counter.names)}
            events = [e async for e in store.events()]
            result["events"] = len(events)
            pairs = itertools.pairwise(events)
            result["chain_ok"] = all(b.prev_hash == a.hash and b.seq == a.seq + 1 for a, b in pairs)
            return result
        finally:
            await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=200, help="overdue grants in the one batch (EXPIRY_BATCH is 200)")
    parser.add_argument("--other-writes", type=float, default=0.0,
                        help="writes per second by another writer during the expiries (0: none)")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose bot/ and storage/ to import")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    counter = _Commands()
    monitoring.register(counter)
    with tempfile.TemporaryDirectory(prefix="jitpass-trips-") as tmp:
        result = asyncio.run(_run(args.grants, Path(tmp), counter, args.other_writes))
    import storage.mongo.store as code

    result["code"] = str(Path(code.__file__).resolve().parents[2])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
