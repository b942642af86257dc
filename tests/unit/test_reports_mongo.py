"""MongoDB's aggregation pipelines give exactly the figures SQLite's SQL gives, on the same trail.

Runs when JITPASS_TEST_MONGODB_URI names a server (as the store contract suite does).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.domain.report_data import ProgressCallback, ReportData, ReportQuery
from bot.reports.build import build_report
from tests.unit.test_reports_trail import NOW, SINCE, UNTIL, build_trail, policy

URI = os.environ.get("JITPASS_TEST_MONGODB_URI")
pytestmark = [pytest.mark.mongodb,
              pytest.mark.skipif(not URI, reason="set JITPASS_TEST_MONGODB_URI to run the MongoDB report tests")]


class MongoSource:
    """A MongoStore plus the report pipelines, as the store will be once it delegates report_data."""

    kind = "mongodb"

    def __init__(self, store: Any, db: Any) -> None:
        self.store, self.db = store, db

    async def report_data(self, query: ReportQuery, progress: ProgressCallback | None = None) -> ReportData:
        from storage.mongo.reports import report_data

        return await report_data(self.db, query, progress)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.mark.parametrize("filters", [{}, {"vault": "acme"}, {"user": "UBOB"}, {"user": "slack:ULEE"}])
async def test_mongodb_reports_equal_sqlite_reports(tmp_path: Path, filters: dict[str, str]) -> None:
    from pymongo import AsyncMongoClient

    from storage.mongo.store import MongoStore

    assert URI
    db_name = f"jitpass_report_{uuid.uuid4().hex[:10]}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(URI)
    sqlite_trail = await build_trail(tmp_path)
    mongo_trail = await build_trail(tmp_path / "m", lambda clock: MongoStore(URI, clock, db_name=db_name)) \
        if (tmp_path / "m").mkdir() is None else None
    assert mongo_trail is not None
    try:
        expected = await build_report(sqlite_trail.source, policy(), NOW, SINCE, UNTIL, **filters)
        found = await build_report(MongoSource(mongo_trail.store, client[db_name]), policy(), NOW, SINCE, UNTIL,
                                   **filters)
        assert found.data == expected.data
        assert replace(found, store="sqlite") == expected
    finally:
        await sqlite_trail.store.close()
        await mongo_trail.store.close()
        await client.drop_database(db_name)
        await client.close()
