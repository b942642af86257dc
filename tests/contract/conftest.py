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


async def refuse_inserts_mongo(db: Any, name: str) -> None:
    """Recreate collection `name` (same documents, same indexes) with a validator no document passes.

    Works on every server (`create` with a validator, inserts that bypass it), where `collMod`
    is missing from some (mongoeco); the store's next insert there fails inside the server.
    """
    collection = db[name]
    docs = [d async for d in collection.find({})]
    indexes = [i async for i in await collection.list_indexes() if i["name"] != "_id_"]
    await collection.drop()
    await db.create_collection(name, validator={"$expr": {"$eq": [1, 0]}})
    if docs:
        await collection.insert_many(docs, bypass_document_validation=True)
    for index in indexes:
        options = {k: v for k, v in index.items() if k not in ("key", "v", "ns")}
        await collection.create_index(list(index["key"].items()), **options)


async def _mongo_harness(uri: str, *, kind: str = "mongodb") -> AsyncIterator[Harness]:
    from pymongo import AsyncMongoClient

    from storage.mongo.store import MongoStore

    clock = FakeClock()
    db_name = new_db_name()
    store = MongoStore(uri, clock, db_name=db_name, allow_standalone=kind == "mongodb-standalone")
    await store.open()
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)

    async def break_audit() -> None:
        await refuse_inserts_mongo(admin[db_name], "events")

    try:
        yield Harness(kind, store, clock, break_audit, url=uri, db_name=db_name)
    finally:
        await store.close()
        await admin.drop_database(db_name)
        await admin.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every contract test on every store: sqlite, mongodb (transactions: a replica set; mongoeco has
    them) and mongodb-standalone (no transactions: the development-only path that undoes a change whose
    event failed), except a test marked `same_without_transactions`, whose store calls never use one."""
    if "harness" not in metafunc.fixturenames:
        return
    kinds = ["sqlite", pytest.param("mongodb", marks=pytest.mark.mongodb)]
    if metafunc.definition.get_closest_marker("same_without_transactions") is None:
        kinds.append(pytest.param("mongodb-standalone", marks=pytest.mark.mongodb))
    metafunc.parametrize("harness", kinds, indirect=True)


@pytest.fixture
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "sqlite":
        factory = _sqlite_harness(tmp_path)
    elif request.param == "mongodb":
        factory = _mongo_harness(request.getfixturevalue("mongodb_uri"))
    else:
        factory = _mongo_harness(request.getfixturevalue("mongodb_standalone_uri"), kind="mongodb-standalone")
    async for ready in factory:
        yield ready


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.store


@pytest.fixture
def clock(harness: Harness) -> FakeClock:
    return harness.clock
