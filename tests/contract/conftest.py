"""The store contract suite runs every test against every store.

SQLite always runs on a fresh file. MongoDB runs when JITPASS_TEST_MONGODB_URI names a server;
each test gets its own database, dropped afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.ports import Store
from storage.sqlite.store import SqliteStore
from tests.support.stores import FakeClock

MONGODB_URI_VAR = "JITPASS_TEST_MONGODB_URI"
MONGODB_SKIP = f"set {MONGODB_URI_VAR} to run the MongoDB contract suite"


@dataclass
class Harness:
    """A store under test plus the few ways a test reaches around it."""

    kind: str
    store: Store
    clock: FakeClock
    # Makes every later audit insert fail inside the real database engine.
    break_audit: Callable[[], Awaitable[None]]
    path: Path | None = None  # the SQLite file, for tests that edit it directly


def _reject_audit_inserts(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON events "
            "BEGIN SELECT RAISE(ABORT, 'audit volume is full'); END"
        )
        conn.commit()


async def _sqlite_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    clock = FakeClock()
    path = tmp_path / "jitpass.db"
    store = SqliteStore(path, clock)
    await store.open()

    async def break_audit() -> None:
        _reject_audit_inserts(path)

    try:
        yield Harness("sqlite", store, clock, break_audit, path)
    finally:
        await store.close()


async def _mongo_harness() -> AsyncIterator[Harness]:
    uri = os.environ.get(MONGODB_URI_VAR)
    if not uri:
        pytest.skip(MONGODB_SKIP)
    from pymongo import AsyncMongoClient

    from storage.mongo.store import MongoStore

    clock = FakeClock()
    db_name = f"jitpass_test_{uuid.uuid4().hex[:12]}"
    store = MongoStore(uri, clock, db_name=db_name)
    await store.open()
    admin: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)

    async def break_audit() -> None:
        await admin[db_name].command("collMod", "events", validator={"$expr": {"$eq": [1, 0]}})

    try:
        yield Harness("mongodb", store, clock, break_audit)
    finally:
        await store.close()
        await admin.drop_database(db_name)
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("mongodb", marks=pytest.mark.mongodb)])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    factory = _sqlite_harness(tmp_path) if request.param == "sqlite" else _mongo_harness()
    async for ready in factory:
        yield ready


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.store


@pytest.fixture
def clock(harness: Harness) -> FakeClock:
    return harness.clock
