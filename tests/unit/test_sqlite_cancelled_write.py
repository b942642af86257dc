"""A write cancelled at any point (shutdown, a timeout) never leaves SQLite's write lock held: another
connection to the file can always write afterwards. (Cancelled while BEGIN IMMEDIATE ran on aiosqlite's
thread, the transaction used to stay open, and the shutdown checkpoint failed with "database is locked".)"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from storage.sqlite.store import SqliteStore
from tests.support.stores import FakeClock


async def test_a_write_cancelled_at_every_point_leaves_no_lock(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "jitpass.db", FakeClock())
    await store.open()
    try:
        for ticks in range(40):  # cancel after 0, 1, 2, ... turns of the event loop: before, during, after BEGIN
            task = asyncio.create_task(store.set_meta("probe", str(ticks)))
            for _ in range(ticks):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            other = sqlite3.connect(tmp_path / "jitpass.db", timeout=0.2, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # sqlite3.OperationalError "database is locked" if held
                other.execute("ROLLBACK")
            finally:
                other.close()
        await store.set_meta("probe", "after")  # the store itself still writes
        assert await store.get_meta("probe") == "after"
    finally:
        await store.close()
