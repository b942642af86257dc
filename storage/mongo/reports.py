"""Report aggregates on MongoDB: aggregation pipelines over the events collection.

Mirrors storage/sqlite/reports.py step for step. Event documents are `{"_id": seq, **event_to_dict}`:
`at` is sortable UTC text, `actor` a subdocument. The per-request pass is `$group`ed into a scratch
collection (`$merge` into a fresh name, dropped afterwards; `$merge` rather than `$out` because both
MongoDB and the test suite's mongoeco server have it) that the later pipelines read; working hours use
MongoDB's own time-zone support (`$isoDayOfWeek`/`$hour` with the policy's zone).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from bot.domain.audit import format_time, parse_time
from bot.domain.report_data import (
    BURST_MIN_VAULTS,
    BURST_WINDOW,
    CLOSING_TYPES,
    EFFECT_FAILURE_TYPES,
    EFFECT_SUCCESS_TYPES,
    GRANT_LOOKBACK,
    LATENCY_BUCKETS,
    LIST_LIMIT,
    AccessRow,
    ApproverLoad,
    DeliveryFailure,
    ExposureReveal,
    FailureCount,
    LatencyBucket,
    LatencyStats,
    OffHoursReveal,
    PendingRequest,
    PersonCount,
    ProgressCallback,
    Refusal,
    ReportData,
    ReportQuery,
    SharedUse,
    TimelinePoint,
    UnrevealedGrant,
    VaultBurst,
)
from storage.common import REQUEST_EVENT_TYPES, display_label, order_access_rows

__all__ = ["REPORT_INDEXES", "ensure_report_indexes", "report_data"]

Doc = dict[str, Any]

# What reports add to the events collection (idempotent: create_indexes skips existing ones).
REPORT_INDEXES = (IndexModel([("type", ASCENDING), ("at", ASCENDING)], name="type_at"),)
# Requests looked up per aggregation when the scanned window misses their first event.
LOOKUP_BATCH = 1_000

_WHO: Doc = {"$concat": ["$actor.platform", ":", "$actor.user_id"]}


async def ensure_report_indexes(db: AsyncDatabase[Doc]) -> None:
    """Create the report index on events if it is missing (the store does at open)."""
    await db["events"].create_indexes(list(REPORT_INDEXES))


def _is(kind: str | Sequence[str]) -> Doc:
    return {"$in": ["$type", [kind] if isinstance(kind, str) else list(kind)]}


def _when(condition: Any, value: Any) -> Doc:
    return {"$cond": [condition, value, None]}


def _count(condition: Any) -> Doc:
    return {"$sum": {"$cond": [condition, 1, 0]}}


def _date(field: Any) -> Doc:
    """Sortable UTC text -> a BSON date (millisecond precision)."""
    return {"$dateFromString": {"dateString": {"$concat": [{"$substrBytes": [field, 0, 23]}, "Z"]}}}


def _seconds_between(later: Any, earlier: Any) -> Doc:
    return {"$divide": [{"$subtract": [{"$toLong": _date(later)}, {"$toLong": _date(earlier)}]}, 1000]}



class _Filters:
    def __init__(self, query: ReportQuery, max_seq: int) -> None:
        self.q = query
        self.since, self.until = format_time(query.since), format_time(query.until)
        self.open_end = format_time(query.open_end)
        self.lo = format_time(query.since - GRANT_LOOKBACK)
        self.max_seq = max_seq
        self.linked = dict(query.people)
        # The person of an event's actor: its [people] person, else the account key itself.
        self.who: Doc = _WHO if not self.linked else {"$switch": {"branches": [
            {"case": {"$eq": [_WHO, account]}, "then": person} for account, person in query.people],
            "default": _WHO}}

    def person(self, key: str) -> str:
        """The person an account key belongs to (in Python, for keys read back from the database)."""
        return self.linked.get(key, key)

    def events(self, types: Sequence[str], *, lo: str | None = None, vault_item: bool = True) -> Doc:
        match: Doc = {"type": {"$in": list(types)}, "at": {"$gte": lo or self.since, "$lt": self.until},
                      "_id": {"$lte": self.max_seq}}
        if vault_item and self.q.vault:
            match["vault"] = self.q.vault
        if vault_item and self.q.item:
            match["item"] = self.q.item
        return match

    def actor(self) -> Doc:
        user = self.q.user
        assert user is not None
        match: Doc = {"actor.user_id": user.user_id}
        if user.platform:
            match["actor.platform"] = user.platform
        if accounts := self.q.accounts_of_user():  # one of a person's accounts names all of them
            linked = [{"actor.platform": a.partition(":")[0], "actor.user_id": a.partition(":")[2]} for a in accounts]
            return {"$or": [match, *linked]}
        return match

    def actor_expr(self) -> Doc:
        user = self.q.user
        assert user is not None
        terms: list[Doc] = [{"$eq": ["$actor.user_id", user.user_id]}]
        if user.platform:
            terms.append({"$eq": ["$actor.platform", user.platform]})
        if accounts := self.q.accounts_of_user():
            return {"$or": [{"$and": terms}, *({"$eq": [_WHO, account]} for account in accounts)]}
        return {"$and": terms}


async def _aggregate(collection: Any, pipeline: list[Doc]) -> list[Doc]:
    cursor = await collection.aggregate(pipeline, allowDiskUse=True)
    return [doc async for doc in cursor]


async def _build_requests(db: AsyncDatabase[Doc], f: _Filters, scratch: str) -> None:
    since = f.since

    def in_period(kind: str) -> Doc:
        return _count({"$and": [_is(kind), {"$gte": ["$at", since]}]})

    group: Doc = {
        "_id": "$request_id", "item": {"$first": "$item"}, "vault": {"$first": "$vault"},
        "created_seq": {"$min": _when(_is("request.created"), "$_id")},
        "created_at": {"$min": _when(_is("request.created"), "$at")},
        "requester": {"$max": _when(_is("request.created"), f.who)},
        "requester_display": {"$max": _when(_is("request.created"), "$actor.display")},
        "approved_at": {"$min": _when(_is("request.approved"), "$at")},
        "decider": {"$max": _when(_is(["request.approved", "request.declined"]), f.who)},
        "decider_display": {"$max": _when(_is(["request.approved", "request.declined"]), "$actor.display")},
        "activated_at": {"$min": _when(_is("grant.activated"), "$at")},
        "ended_at": {"$min": _when(_is(["grant.expired", "grant.revoked"]), "$at")},
        "last_at": {"$max": "$at"},
        "n_created": in_period("request.created"), "n_approved": in_period("request.approved"),
        "n_declined": in_period("request.declined"), "n_timed_out": in_period("request.timed_out"),
        "n_cancelled": in_period("request.cancelled"), "n_reveals": in_period("grant.revealed"),
        "n_codes": in_period("grant.code_shown"), "n_reveals_any": _count(_is("grant.revealed")),
        "involves_user": {"$max": {"$cond": [f.actor_expr(), 1, 0]}} if f.q.user else {"$max": 0},
    }
    match = f.events(REQUEST_EVENT_TYPES, lo=f.lo)
    match["request_id"] = {"$ne": None}
    into = {"$merge": {"into": scratch, "whenMatched": "fail"}}  # a fresh name: a match would be a bug
    await _aggregate(db["events"], [{"$match": match}, {"$group": group}, into])
    rq = db[scratch]
    # Requests created, or grants started, before the scanned window: look their start up.
    await _fill_from_first(db, rq, {"created_seq": None}, "request.created", lambda first: _created_fields(f, first))
    await _fill_from_first(db, rq, {"activated_at": None, "ended_at": {"$ne": None}}, "grant.activated",
                           lambda first: {"activated_at": first["at"]})
    end = {"$min": [{"$ifNull": ["$ended_at", f.open_end]}, f.until]}
    start = {"$max": ["$activated_at", f.since]}
    await rq.update_many({}, [{"$set": {"granted": {"$cond": [
        {"$eq": [{"$ifNull": ["$activated_at", None]}, None]}, 0.0,
        {"$max": [0.0, {"$round": [_seconds_between(end, start), 3]}]}]}}}])
    if f.q.user:
        user = f.q.user
        key_match: Doc = ({"requester": f"{user.platform}:{user.user_id}"} if user.platform
                          else {"requester": {"$regex": f":{_escape(user.user_id)}$"}})
        if persons := f.q.persons_of_user():
            key_match = {"$or": [key_match, {"requester": {"$in": list(persons)}}]}
        await rq.delete_many({"involves_user": 0, "$nor": [key_match]})
    await rq.delete_many({"last_at": {"$lt": since}, "granted": {"$lte": 0}})


def _escape(text: str) -> str:
    import re

    return re.escape(text)


_SUMS: Doc = {name: {"$sum": f"${name}"} for name in (
    "n_created", "n_approved", "n_declined", "n_timed_out", "n_cancelled", "n_reveals", "n_codes", "granted")}


def _row(dimension: str, doc: Doc, key: str, label: str = "", vault: str = "") -> AccessRow:
    return AccessRow(dimension, key, label, vault, requests=int(doc["n_created"]), approved=int(doc["n_approved"]),
                     declined=int(doc["n_declined"]), timed_out=int(doc["n_timed_out"]),
                     cancelled=int(doc["n_cancelled"]), reveals=int(doc["n_reveals"]), code_views=int(doc["n_codes"]),
                     granted_seconds=round(float(doc["granted"]), 3))



async def _summaries(rq: Any) -> Doc:
    totals = await _aggregate(rq, [{"$group": {"_id": None, **_SUMS}}])
    zero = {name: 0 for name in _SUMS}
    by_item = await _aggregate(rq, [{"$match": {"item": {"$ne": None}}},
                                    {"$group": {"_id": "$item", "vault": {"$max": "$vault"}, **_SUMS}}])
    by_vault = await _aggregate(rq, [{"$match": {"vault": {"$ne": None}}}, {"$group": {"_id": "$vault", **_SUMS}}])
    people = {}
    for dimension, column in (("requester", "requester"), ("approver", "decider")):
        docs = await _aggregate(rq, [{"$match": {column: {"$ne": None}}}, {"$sort": {f"{column}_display": 1}},
                                     {"$group": {"_id": f"${column}", "display": {"$last": f"${column}_display"},
                                                 **_SUMS}}])
        people[dimension] = [_row(dimension, d, d["_id"], display_label(d.get("display"), d["_id"])) for d in docs]
    return {
        "totals": _row("total", totals[0] if totals else zero, "all"),
        "by_item": order_access_rows([_row("item", d, d["_id"], vault=d.get("vault") or "") for d in by_item]),
        "by_vault": order_access_rows([_row("vault", d, d["_id"]) for d in by_vault]),
        "by_requester": order_access_rows(people["requester"]), "by_approver": order_access_rows(people["approver"]),
    }


def _percentile_stages(group: Any) -> list[Doc]:
    """Nearest-rank p50 / p95 of `s` per `group` (rank = ceil(p * n))."""
    return [
        {"$setWindowFields": {"partitionBy": group, "sortBy": {"s": 1}, "output": {
            "rn": {"$documentNumber": {}}, "n": {"$count": {}, "window": {"documents": ["unbounded", "unbounded"]}}}}},
        {"$group": {"_id": group, "n": {"$max": "$n"},
                    "p50": {"$max": _when({"$eq": ["$rn", {"$floor": {"$divide": [{"$add": ["$n", 1]}, 2]}}]}, "$s")},
                    "p95": {"$max": _when({"$eq": ["$rn", {"$floor": {"$divide": [
                        {"$add": [{"$multiply": ["$n", 95]}, 99]}, 100]}}]}, "$s")}}},
    ]


async def _latency(db: AsyncDatabase[Doc], rq: Any, f: _Filters) -> Doc:
    latency = {"$round": [_seconds_between("$approved_at", "$created_at"), 3]}
    lat: list[Doc] = [{"$match": {"n_approved": {"$gt": 0}, "created_at": {"$ne": None}}},
                      {"$project": {"decider": 1, "s": latency}}]
    overall = await _aggregate(rq, [*lat, *_percentile_stages(None)])
    per = {d["_id"]: d for d in await _aggregate(rq, [*lat, *_percentile_stages("$decider")])}
    bounds: dict[str, Doc] = {}
    lower: float | None = None
    for i, (_, upper) in enumerate(LATENCY_BUCKETS):
        terms = ([{"$gte": ["$s", lower]}] if lower is not None else []) + (
            [{"$lt": ["$s", upper]}] if upper is not None else [])
        bounds[f"b{i}"] = _count({"$and": terms} if terms else {"$literal": True})
        lower = upper
    counts = await _aggregate(rq, [*lat, {"$group": {"_id": None, **bounds}}])
    buckets = tuple(LatencyBucket(label, int(counts[0][f"b{i}"]) if counts else 0)
                    for i, (label, _) in enumerate(LATENCY_BUCKETS))
    match = f.events(["request.approval_added", "request.approved", "request.declined"])
    stages: list[Doc] = [{"$match": match}]
    if f.q.user:
        stages += [{"$lookup": {"from": rq.name, "localField": "request_id", "foreignField": "_id", "as": "_rq"}},
                   {"$match": {"_rq": {"$ne": []}}}]
    loads = await _aggregate(db["events"], [*stages, {"$sort": {"_id": 1}}, {"$group": {
        "_id": f.who, "approvals": _count(_is(["request.approval_added", "request.approved"])),
        "declines": _count(_is("request.declined")), "display": {"$last": "$actor.display"}}}])
    approver_load = tuple(sorted((ApproverLoad(
        key=d["_id"], label=display_label(d.get("display"), d["_id"]), approvals=int(d["approvals"]),
        declines=int(d["declines"]), median_seconds=_maybe(per.get(d["_id"], {}).get("p50")),
        p95_seconds=_maybe(per.get(d["_id"], {}).get("p95"))) for d in loads),
        key=lambda a: (-(a.approvals + a.declines), a.key)))
    stats = (LatencyStats(int(overall[0]["n"]), _maybe(overall[0]["p50"]), _maybe(overall[0]["p95"]))
             if overall else LatencyStats())
    return {"latency": stats, "latency_buckets": buckets, "approver_load": approver_load}


def _maybe(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


async def _requests_only(f: _Filters, rq: Any) -> list[Doc]:
    if not f.q.user:
        return []
    return [{"$lookup": {"from": rq.name, "localField": "request_id", "foreignField": "_id", "as": "_rq"}},
            {"$match": {"_rq": {"$ne": []}}}]


async def _timeline(db: AsyncDatabase[Doc], rq: Any, f: _Filters) -> tuple[TimelinePoint, ...]:
    types = ["request.created", "request.approved", "grant.revealed", "grant.code_shown"]
    docs = await _aggregate(db["events"], [{"$match": f.events(types)}, *await _requests_only(f, rq), {"$group": {
        "_id": {"$substrBytes": ["$at", 0, 10]}, "requests": _count(_is(types[0])), "approved": _count(_is(types[1])),
        "reveals": _count(_is(types[2])), "codes": _count(_is(types[3]))}}, {"$sort": {"_id": 1}}])
    return tuple(TimelinePoint(date.fromisoformat(d["_id"]), int(d["requests"]), int(d["approved"]),
                               int(d["reveals"]), int(d["codes"])) for d in docs)


def _created_fields(f: _Filters, first: Doc) -> Doc:
    actor = first.get("actor") or {}
    return {"created_seq": first["seq"], "created_at": first["at"],
            "requester": f.person(f"{actor.get('platform')}:{actor.get('user_id')}"),
            "requester_display": actor.get("display")}


async def _fill_from_first(db: AsyncDatabase[Doc], rq: Any, missing: Doc, kind: str,
                           fields: Callable[[Doc], Doc]) -> None:
    """Set `fields(first event of kind)` on the scratch rows matching `missing`: per batch of requests, one
    aggregation and one bulk write (not a query and an update per request)."""
    ids = [d["_id"] async for d in rq.find(missing, {"_id": 1})]
    for start in range(0, len(ids), LOOKUP_BATCH):
        firsts = await _aggregate(db["events"], [
            {"$match": {"request_id": {"$in": ids[start:start + LOOKUP_BATCH]}, "type": kind}},
            {"$sort": {"_id": 1}},
            {"$group": {"_id": "$request_id", "seq": {"$first": "$_id"}, "at": {"$first": "$at"},
                        "actor": {"$first": "$actor"}}},
        ])
        if firsts:
            await rq.bulk_write([UpdateOne({"_id": f["_id"]}, {"$set": fields(f)}) for f in firsts], ordered=False)


async def _unrevealed(rq: Any, f: _Filters) -> Doc:
    match = {"activated_at": {"$gte": f.since, "$lt": f.until}, "n_reveals_any": 0}
    total = await rq.count_documents(match)
    docs = [d async for d in rq.find(match).sort([("activated_at", -1), ("_id", 1)]).limit(LIST_LIMIT)]
    return {"unrevealed_total": total, "unrevealed": tuple(UnrevealedGrant(
        d["_id"], d.get("item") or "", d.get("vault") or "", d.get("requester") or "",
        display_label(d.get("requester_display"), d.get("requester")), parse_time(d["activated_at"]),
        parse_time(d["ended_at"]) if d.get("ended_at") else None) for d in docs)}


async def _pending(db: AsyncDatabase[Doc], f: _Filters) -> Doc:
    """Requests created before the period's end (within the look-back) and not decided by then."""
    created = _is("request.created")
    match = f.events(["request.created", "request.approval_added", *CLOSING_TYPES], lo=f.lo)
    match["request_id"] = {"$ne": None}
    group: Doc = {
        "_id": "$request_id", "seq": {"$max": _when(created, "$_id")}, "at": {"$max": _when(created, "$at")},
        "item": {"$max": _when(created, "$item")}, "vault": {"$max": _when(created, "$vault")},
        "who": {"$max": _when(created, f.who)}, "display": {"$max": _when(created, "$actor.display")},
        "reason": {"$max": _when(created, "$reason")}, "approvals": _count(_is("request.approval_added")),
        "closed": _count(_is(list(CLOSING_TYPES))),
        "involves": {"$max": {"$cond": [f.actor_expr(), 1, 0]}} if f.q.user else {"$max": 1},
    }
    facets = await _aggregate(db["events"], [
        {"$match": match}, {"$group": group},
        {"$match": {"closed": 0, "seq": {"$ne": None}, "involves": 1}},
        {"$facet": {"total": [{"$count": "n"}],
                    "rows": [{"$sort": {"at": 1, "seq": 1}}, {"$limit": LIST_LIMIT}]}}])
    found = facets[0] if facets else {"total": [], "rows": []}
    return {
        "pending_total": int(found["total"][0]["n"]) if found["total"] else 0,
        "pending": tuple(PendingRequest(d["_id"], d.get("item") or "", d.get("vault") or "", d.get("who") or "",
                                        display_label(d.get("display"), d.get("who")), parse_time(d["at"]),
                                        d.get("reason") or "", int(d["approvals"])) for d in found["rows"]),
    }


async def _delivery_failures(db: AsyncDatabase[Doc], rq: Any, f: _Filters) -> Doc:
    """Per request and effect: the last outcome in the period, when it is a failure (final or still retrying)."""
    failed = _is(list(EFFECT_FAILURE_TYPES))
    match = f.events([*EFFECT_FAILURE_TYPES, *EFFECT_SUCCESS_TYPES])
    match["request_id"] = {"$ne": None}
    effect = {"$switch": {"branches": [
        {"case": _is(["grant.delivery_failed", "grant.revealed"]), "then": "delivery"},
        {"case": _is(["grant.wipe_failed", "grant.wiped"]), "then": "wipe"}],
        "default": {"$ifNull": ["$details.kind", "chat"]}}}
    groups: list[Doc] = [
        {"$match": match}, *await _requests_only(f, rq), {"$set": {"effect": effect}}, {"$sort": {"_id": 1}},
        {"$group": {"_id": {"request_id": "$request_id", "effect": "$effect"}, "type": {"$last": "$type"},
                    "final": {"$last": "$details.final"}, "attempts": {"$last": "$details.attempt"},
                    "error": {"$last": "$details.error"}, "last_at": {"$last": "$at"}, "item": {"$last": "$item"},
                    "vault": {"$last": "$vault"}, "failures": _count(failed),
                    "first_at": {"$min": _when(failed, "$at")}}},
        {"$match": {"type": {"$in": list(EFFECT_FAILURE_TYPES)}}},
        {"$set": {"state": {"$cond": [{"$eq": [{"$ifNull": ["$final", False]}, False]}, "retrying", "failed"]}}},
    ]
    facets = await _aggregate(db["events"], [*groups, {"$facet": {
        "counts": [{"$group": {"_id": {"effect": "$_id.effect", "state": "$state"}, "n": {"$sum": 1}}}],
        "rows": [{"$sort": {"last_at": -1, "_id.request_id": 1, "_id.effect": 1}}, {"$limit": LIST_LIMIT}]}}])
    found = facets[0] if facets else {"counts": [], "rows": []}
    ids = sorted({d["_id"]["request_id"] for d in found["rows"]})
    created = {d["_id"]: d for d in await _aggregate(db["events"], [
        {"$match": {"type": "request.created", "request_id": {"$in": ids}}}, {"$sort": {"_id": 1}},
        {"$group": {"_id": "$request_id", "who": {"$first": f.who}, "display": {"$first": "$actor.display"}}}])}
    counts = sorted((d["_id"]["effect"], d["_id"]["state"], int(d["n"])) for d in found["counts"])
    rows = []
    for d in found["rows"]:
        who = created.get(d["_id"]["request_id"], {})
        rows.append(DeliveryFailure(
            d["_id"]["request_id"], d.get("item") or "", d.get("vault") or "", who.get("who") or "",
            display_label(who.get("display"), who.get("who")), d["_id"]["effect"], d["state"],
            int(d.get("attempts") or 0), str(d.get("error") or ""), int(d["failures"]), parse_time(d["first_at"]),
            parse_time(d["last_at"])))
    return {"delivery_failure_counts": tuple(FailureCount(e, s, n) for e, s, n in counts),
            "delivery_failures": tuple(rows)}


async def _off_hours(db: AsyncDatabase[Doc], rq: Any, f: _Filters) -> Doc:
    q = f.q
    tz = q.timezone
    when = _date("$at")
    seconds = {"$add": [{"$multiply": [{"$hour": {"date": when, "timezone": tz}}, 3600]},
                        {"$multiply": [{"$minute": {"date": when, "timezone": tz}}, 60]},
                        {"$second": {"date": when, "timezone": tz}}]}
    iso_days = [d + 1 for d in sorted(q.work_days)]  # Monday = 1
    inside = {"$and": [{"$in": [{"$isoDayOfWeek": {"date": when, "timezone": tz}}, iso_days]},
                       {"$gte": [seconds, q.work_start_seconds]}, {"$lt": [seconds, q.work_end_seconds]}]}
    base = [{"$match": f.events(["grant.revealed"])}, *await _requests_only(f, rq),
            {"$match": {"$expr": {"$eq": [inside, False]}}}]
    facets = await _aggregate(db["events"], [*base, {"$facet": {
        "total": [{"$count": "n"}],
        "people": [{"$sort": {"_id": 1}}, {"$group": {"_id": f.who, "n": {"$sum": 1},
                                                      "display": {"$last": "$actor.display"}}},
                   {"$sort": {"n": -1, "_id": 1}}],
        "rows": [{"$sort": {"at": -1, "_id": -1}}, {"$limit": LIST_LIMIT},
                 {"$project": {"at": 1, "request_id": 1, "item": 1, "vault": 1, "who": f.who}}]}}])
    found = facets[0] if facets else {"total": [], "people": [], "rows": []}
    labels = {p["_id"]: display_label(p.get("display"), p["_id"]) for p in found["people"]}
    return {
        "off_hours_total": int(found["total"][0]["n"]) if found["total"] else 0,
        "off_hours_by_person": tuple(PersonCount(p["_id"], labels[p["_id"]], int(p["n"])) for p in found["people"]),
        "off_hours": tuple(OffHoursReveal(parse_time(r["at"]), r.get("request_id") or "", r.get("item") or "",
                                          r.get("vault") or "", r["who"], labels.get(r["who"], r["who"]))
                           for r in found["rows"]),
    }


async def _bursts(db: AsyncDatabase[Doc], f: _Filters) -> tuple[VaultBurst, ...]:
    match = f.events(["request.created"], vault_item=False)
    match["vault"] = {"$ne": None}
    if f.q.user:
        match.update(f.actor())
    window_ms = int(BURST_WINDOW.total_seconds() * 1000)
    docs = await _aggregate(db["events"], [
        {"$match": match},
        # Milliseconds since the epoch as a number: a numeric range window is the same on MongoDB and on
        # mongoeco (which has no time-unit ranges), and no slower.
        {"$set": {"who": f.who, "ms": {"$toLong": _date("$at")}}},
        {"$setWindowFields": {"partitionBy": "$who", "sortBy": {"ms": 1}, "output": {
            "vaults": {"$addToSet": "$vault", "window": {"range": [-(window_ms - 1), 0]}}}}},
        {"$set": {"n": {"$size": "$vaults"}}},
        {"$match": {"n": {"$gte": BURST_MIN_VAULTS}}},
        {"$sort": {"n": -1, "at": 1, "_id": 1}},
        {"$group": {"_id": "$who", "n": {"$first": "$n"}, "at": {"$first": "$at"}, "vaults": {"$first": "$vaults"},
                    "flagged": {"$sum": 1}, "display": {"$first": "$actor.display"}}},
        {"$sort": {"n": -1, "flagged": -1, "_id": 1}},
    ])
    bursts = (VaultBurst(d["_id"], display_label(d.get("display"), d["_id"]), int(d["n"]), parse_time(d["at"]),
                         tuple(sorted(d["vaults"])), int(d["flagged"])) for d in docs)
    return tuple(b for b in bursts if f.q.vault is None or f.q.vault in b.vaults)


async def _refusals(db: AsyncDatabase[Doc], f: _Filters) -> tuple[Refusal, ...]:
    match = f.events(["access.refused"])
    if f.q.user:
        match.update(f.actor())
    docs = await _aggregate(db["events"], [{"$match": match}, {"$sort": {"_id": 1}}, {"$group": {
        "_id": {"who": f.who, "reason": "$reason"}, "n": {"$sum": 1}, "first": {"$min": "$at"},
        "last": {"$max": "$at"}, "display": {"$last": "$actor.display"}}}])
    rows = [Refusal(d["_id"]["who"], display_label(d.get("display"), d["_id"]["who"]), d["_id"]["reason"], int(d["n"]),
                    parse_time(d["first"]), parse_time(d["last"])) for d in docs]
    return tuple(sorted(rows, key=lambda r: (not r.self_approval, -r.count, r.actor, r.reason)))


async def _shared_use(rq: Any, f: _Filters) -> tuple[SharedUse, ...]:
    start = {"$max": ["$activated_at", f.since]}
    end = {"$min": [{"$ifNull": ["$ended_at", f.open_end]}, f.until]}
    docs = await _aggregate(rq, [
        {"$match": {"activated_at": {"$ne": None, "$lt": f.until}}},
        {"$set": {"s": start, "e": end}},
        {"$match": {"$expr": {"$gt": [{"$ifNull": ["$ended_at", f.open_end]}, f.since]}}},
        {"$setWindowFields": {"partitionBy": "$item", "sortBy": {"s": 1, "_id": 1}, "output": {
            "prev_end": {"$max": "$e", "window": {"documents": ["unbounded", -1]}},
            "next_s": {"$shift": {"output": "$s", "by": 1, "default": None}}}}},
        {"$set": {"flagged": {"$and": [{"$ne": ["$prev_end", None]}, {"$lt": ["$s", "$prev_end"]}]}}},
        {"$set": {"involved": {"$or": ["$flagged", {"$and": [{"$ne": ["$next_s", None]},
                                                            {"$lt": ["$next_s", "$e"]}]}]}}},
        {"$group": {"_id": "$item", "vault": {"$max": "$vault"}, "n": _count("$flagged"),
                    "first": {"$min": _when("$flagged", "$s")},
                    "who": {"$addToSet": _when("$involved", {"$concat": [
                        {"$ifNull": ["$requester", ""]}, "\n", {"$ifNull": ["$requester_display", ""]}]})}}},
        {"$match": {"n": {"$gt": 0}}},
        {"$sort": {"n": -1, "_id": 1}},
    ])
    def named(who: Sequence[str | None]) -> tuple[str, ...]:
        pairs = (str(w).partition("\n") for w in who if w)
        return tuple(sorted({display_label(display or None, key or None) for key, _, display in pairs}))

    return tuple(SharedUse(d["_id"], d.get("vault") or "", int(d["n"]), parse_time(d["first"]), named(d["who"]))
                 for d in docs)


async def _exposure(db: AsyncDatabase[Doc], f: _Filters, query: ReportQuery) -> tuple[ExposureReveal, ...]:
    if not query.exposed_requests:
        return ()
    docs = await _aggregate(db["events"], [
        {"$match": {"type": "grant.revealed", "request_id": {"$in": list(query.exposed_requests)}}},
        {"$sort": {"_id": 1}},
        {"$group": {"_id": {"request_id": "$request_id", "who": f.who}, "first": {"$min": "$at"},
                    "last": {"$max": "$at"}, "display": {"$last": "$actor.display"}}}])
    found = [ExposureReveal(d["_id"]["request_id"], d["_id"]["who"], display_label(d.get("display"), d["_id"]["who"]),
                            parse_time(d["first"]), parse_time(d["last"])) for d in docs]
    return tuple(sorted(found, key=lambda r: (r.first_at, r.request_id)))


async def report_data(db: AsyncDatabase[Doc], query: ReportQuery,
                      progress: ProgressCallback | None = None) -> ReportData:
    """Every figure of the report from the store's database (events up to the newest seq at the start)."""

    def step(name: str) -> None:
        if progress is not None:
            progress(name)

    newest = await db["events"].find_one({}, {"_id": 1}, sort=[("_id", -1)])
    f = _Filters(query, int(newest["_id"]) if newest else 0)
    scratch = f"report_scratch_{uuid.uuid4().hex[:12]}"
    rq = db[scratch]
    try:
        await _build_requests(db, f, scratch)
        step("requests")
        summaries = await _summaries(rq)
        step("summaries")
        latency = await _latency(db, rq, f)
        step("latency")
        timeline = await _timeline(db, rq, f)
        step("timeline")
        anomalies: Doc = {
            **await _unrevealed(rq, f), **await _off_hours(db, rq, f), **await _pending(db, f),
            **await _delivery_failures(db, rq, f),
            "bursts": await _bursts(db, f),
            "refusals": await _refusals(db, f), "shared_use": await _shared_use(rq, f),
            "accessed_items": frozenset(str(i) for i in await rq.distinct("item") if i),
        }
        step("anomalies")
        exposure = await _exposure(db, f, query)
        step("exposure")
    finally:
        await rq.drop()
    return ReportData(**summaries, **latency, timeline=timeline, **anomalies, exposure_reveals=exposure)
