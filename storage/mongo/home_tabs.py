"""Home-tab markers on MongoDB: who has opened the app's home tab, per platform.

One document per person (`_id` "<platform>:<user_id>"), inserted the first time (`$setOnInsert` with
upsert) and never changed after, so opening the tab again changes nothing. `opened_at` is the first
opening (the stored time text, which sorts as time), indexed per platform, so a process can ask for the
markers written since it last looked (`since`). One document write: no transaction needed.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from bot.domain.audit import format_time

__all__ = ["COLLECTION", "HOME_TAB_INDEXES", "mark", "openers"]

COLLECTION = "home_tabs"
HOME_TAB_INDEXES = [IndexModel([("platform", ASCENDING), ("opened_at", ASCENDING)], name="platform_opened")]

Doc = dict[str, Any]


async def mark(collection: AsyncCollection[Doc], platform: str, user_id: str, at: datetime) -> None:
    """Insert the marker unless it exists (the first opening is kept)."""
    # Two processes inserting it at once: one upsert loses with a duplicate key, and the other's marker stands.
    with suppress(DuplicateKeyError):
        await collection.update_one(
            {"_id": f"{platform}:{user_id}"},
            {"$setOnInsert": {"platform": platform, "user_id": user_id, "opened_at": format_time(at)}},
            upsert=True)


async def openers(collection: AsyncCollection[Doc], platform: str, since: datetime | None) -> set[str]:
    """The user ids with a marker on `platform` (first recorded at or after `since`, when given)."""
    query: Doc = {"platform": platform}
    if since is not None:
        query["opened_at"] = {"$gte": format_time(since)}
    return {str(doc["user_id"]) async for doc in collection.find(query, {"user_id": 1, "_id": 0})}
