"""Rate limits on MongoDB: a sliding window per key, checked and counted by one atomic update.

One document per key: `until`, when each attempt granted in the window leaves it (oldest first, at
most the limit's count); `expires_at`, when the last one does; and the open burst of refusals
(`refused` in a row, `first_refused_at`, `last_refused_at`, the first refused `actor`, and `retry_at`,
when the key may act again). `take` is a single `find_one_and_update` with an update pipeline (and
upsert): the server drops what left the window, compares the count and appends the attempt in one
document write, so processes racing for one key can never both see room for the last token. No
transaction is needed, with or without a replica set.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from bot.domain.audit import format_time, parse_time
from bot.domain.model import Identity
from bot.ports import RateTake, RefusalBurst
from storage.codec import identity_from_doc, identity_to_doc

__all__ = ["COLLECTION", "RATE_INDEXES", "end_bursts", "take"]

COLLECTION = "rate_limits"
RATE_INDEXES = [
    IndexModel([("refused", ASCENDING), ("retry_at", ASCENDING)], name="bursts"),
    IndexModel([("expires_at", ASCENDING)], name="expires"),
]
# Two first attempts for a new key may both try to insert it; the loser's retry finds the document.
_UPSERT_ATTEMPTS = 5
# Bursts claimed per call; the rest wait for the next scheduler tick.
_BURSTS_PER_CALL = 1_000
_NO_BURST = {"refused": 0, "first_refused_at": None, "last_refused_at": None, "retry_at": None, "actor": None}

Doc = dict[str, Any]


def _pipeline(count: int, at: str, leaves_at: str, actor: Doc) -> list[Doc]:
    """The update: keep what is still in the window, then grant (append) or refuse (count the burst)."""
    granted, kept, before = "$_granted", "$_kept", "$_refused"
    first = {"$eq": [before, 0]}
    return [
        {"$set": {
            "_kept": {"$filter": {"input": {"$ifNull": ["$until", []]}, "as": "t", "cond": {"$gt": ["$$t", at]}}},
            "_refused": {"$ifNull": ["$refused", 0]},
        }},
        {"$set": {"_granted": {"$lt": [{"$size": kept}, count]}}},
        {"$set": {
            "until": {"$cond": [granted, {"$concatArrays": [kept, [leaves_at]]}, kept]},
            "expires_at": {"$cond": [granted, leaves_at, "$expires_at"]},
            "granted": granted,
            "refused": {"$cond": [granted, 0, {"$add": [before, 1]}]},
            "first_refused_at": {"$cond": [granted, None, {"$cond": [first, at, "$first_refused_at"]}]},
            "last_refused_at": {"$cond": [granted, None, at]},
            "actor": {"$cond": [granted, None, {"$cond": [first, {"$literal": actor}, "$actor"]}]},
            "retry_at": {"$cond": [granted, None,
                                   {"$arrayElemAt": [kept, {"$subtract": [{"$size": kept}, count]}]}]},
            # The burst this grant ended, read back by the caller (the fields above are its old values here).
            "ended": {"$cond": [{"$and": [granted, {"$gt": [before, 0]}]},
                                {"refused": before, "first_at": "$first_refused_at", "last_at": "$last_refused_at",
                                 "actor": "$actor"}, None]},
        }},
        {"$unset": ["_kept", "_refused", "_granted"]},
    ]


def _burst(key: str, doc: Doc) -> RefusalBurst:
    return RefusalBurst(key, identity_from_doc(doc["actor"]), int(doc["refused"]),
                        parse_time(doc["first_at"]), parse_time(doc["last_at"]))


async def take(collection: AsyncCollection[Doc], key: str, count: int, per: timedelta, now: datetime,
               actor: Identity) -> RateTake:
    """Count one attempt for `key`: one atomic document update."""
    pipeline = _pipeline(count, format_time(now), format_time(now + per), identity_to_doc(actor))
    doc: Doc | None = None
    for attempt in range(_UPSERT_ATTEMPTS):
        try:
            doc = await collection.find_one_and_update({"_id": key}, pipeline, upsert=True,
                                                       return_document=ReturnDocument.AFTER)
            break
        except DuplicateKeyError:
            if attempt == _UPSERT_ATTEMPTS - 1:
                raise
    if doc is None:  # an upsert returning the document after always finds one
        raise RuntimeError(f"the rate-limit window {key!r} was not written")
    if doc["granted"]:
        ended = doc.get("ended")
        return RateTake(True, ended=_burst(key, ended) if ended else None)
    return RateTake(False, retry_at=parse_time(doc["retry_at"]), refused=int(doc["refused"]))


async def end_bursts(collection: AsyncCollection[Doc], now: datetime) -> list[RefusalBurst]:
    """Claim the bursts whose key may act again (each document update hands it to one caller), then
    delete the windows with nothing left in them."""
    at = format_time(now)
    ended: list[RefusalBurst] = []
    for _ in range(_BURSTS_PER_CALL):
        doc = await collection.find_one_and_update({"refused": {"$gt": 0}, "retry_at": {"$lte": at}},
                                                   {"$set": _NO_BURST}, return_document=ReturnDocument.BEFORE)
        if doc is None:
            break
        ended.append(_burst(str(doc["_id"]), {"refused": doc["refused"], "first_at": doc["first_refused_at"],
                                              "last_at": doc["last_refused_at"], "actor": doc["actor"]}))
    await collection.delete_many({"refused": 0, "expires_at": {"$lte": at}})
    return ended
