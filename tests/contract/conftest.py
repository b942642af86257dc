"""The store contract suite runs every test against every store.

SQLite always runs on a fresh file. MongoDB runs on the suite's server (tests/support/mongo.py:
mongoeco started by the run, or JITPASS_TEST_MONGODB_URI); each test gets its own database, dropped
afterwards.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.ports import Store
from storage.sqlite.store import SqliteStore
from tests.support.mongo import new_db_name
from tests.support.stores import FakeClock


@dataclass
class Harness:
    """A store under test plus the few ways a test reaches around it."""

    kind: str
    store: Store
    clock: FakeClock
    # Makes every later audit insert fail inside the real database engine.
    break_audit: Callable[[], Awaitable[None]]
    path: Path | None = None  # the SQLite file, for tests that edit it directly
    url: str = ""  # where a second process finds the store: the SQLite file or the MongoDB URI
    db_name: str | None = None  # the MongoDB database


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
        yield Harness("sqlite", store, clock, break_audit, path, url=str(path))
    finally:
        await store.close()


async def _refuse_audit_inserts_mongo(db: Any) -> None:
    """Recreate `events` (same documents, same indexes) with a validator no event passes.

    Works on every server (`create` with a validator, inserts that bypass it), where `collMod`
    is missing from some (mongoeco); the store's next event insert fails inside the server.
    """
    events = db["events"]
    docs = [d async for d in events.find({})]
    indexes = [i async for i in await events.list_indexes() if i["name"] != "_id_"]
    await events.drop()
    await db.create_collection("events", validator={"$expr": {"$eq": [1, 0]}})
    if docs:
        await events.insert_many(docs, bypass_document_validation=True)
    for index in indexes:
        options = {k: v for k, v in index.items() if k not in ("key", "v", "ns")}
        await events.create_index(list(index["key"].items()), **options)


async def _mongo_harness(uri: str) -> AsyncIterator[Harness]:
    from pymongo import AsyncMongoClient

    from storage.mongo.store import MongoStore

    clock = FakeClock()
    db_name = new_db_name()
    store = MongoStore(uri, clock, db_name=db_name)
    await store.open()
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)

    async def break_audit() -> None:
        await _refuse_audit_inserts_mongo(admin[db_name])

    try:
        yield Harness("mongodb", store, clock, break_audit, url=uri, db_name=db_name)
    finally:
        await store.close()
        await admin.drop_database(db_name)
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("mongodb", marks=pytest.mark.mongodb)])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "sqlite":
        factory = _sqlite_harness(tmp_path)
    else:
        factory = _mongo_harness(request.getfixturevalue("mongodb_uri"))
    async for ready in factory:
        yield ready


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.store


@pytest.fixture
def clock(harness: Harness) -> FakeClock:
    return harness.clock
