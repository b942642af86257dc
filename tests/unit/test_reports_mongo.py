"""MongoDB's aggregation pipelines give exactly the figures SQLite's SQL gives, on the same trail.

Runs on the suite's MongoDB server (mongoeco started by the run, or JITPASS_TEST_MONGODB_URI).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.reports.build import build_report
from tests.support.mongo import new_db_name
from tests.unit.test_reports_trail import (
    NOW,
    SINCE,
    UNTIL,
    Trail,
    add_delivery_failures,
    add_pending,
    add_teams_bob,
    build_trail,
    policy,
)

pytestmark = [pytest.mark.mongodb]


@pytest.mark.parametrize(("filters", "more"), [
    ({}, None), ({"vault": "acme"}, None), ({"user": "UBOB"}, None), ({"user": "slack:ULEE"}, None),
    ({}, add_pending), ({"user": "ULEE"}, add_pending), ({"vault": "umbrella"}, add_pending),
    ({}, add_delivery_failures), ({"vault": "acme"}, add_delivery_failures),
    ({"user": "slack:UANN"}, add_delivery_failures),
    ({}, add_teams_bob), ({"user": "teams:bob-oid"}, add_teams_bob), ({"user": "slack:ULEE"}, add_teams_bob)])
async def test_mongodb_reports_equal_sqlite_reports(tmp_path: Path, mongodb_uri: str, filters: dict[str, str],
                                                    more: Callable[[Trail], Awaitable[None]] | None) -> None:
    from pymongo import AsyncMongoClient

    from storage.mongo.store import MongoStore

    db_name = new_db_name("jitpass_report")
    (tmp_path / "m").mkdir()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    closers: list[Any] = []
    try:
        sqlite_trail = await build_trail(tmp_path)
        closers.append(sqlite_trail.store)
        mongo_trail = await build_trail(tmp_path / "m", lambda clock: MongoStore(mongodb_uri, clock, db_name=db_name))
        closers.append(mongo_trail.store)
        if more is not None:  # the same extra events on both stores
            await more(sqlite_trail)
            await more(mongo_trail)
        rules = policy(people=more is add_teams_bob)  # [people] links Lee/Max and Bob's two accounts
        expected = await build_report(sqlite_trail.source, rules, NOW, SINCE, UNTIL, **filters)
        found = await build_report(mongo_trail.source, rules, NOW, SINCE, UNTIL, **filters)
        assert found.data == expected.data
        assert replace(found, store="sqlite") == expected
        if more is not None:
            assert found.data.pending_total > 0 or found.data.delivery_failures_total > 0 or any(
                r.key.startswith("person:") for r in found.data.by_requester)
    finally:
        for store in closers:
            await store.close()
        await client.drop_database(db_name)
        await client.close()
