"""MongoDB store on PyMongo's AsyncMongoClient.

Documents come from the same codec as the SQLite store; times are `format_time` strings, which
sort and range-compare correctly as strings. Audit events use the sequence number as `_id`, so two
writers can never both take the same place in the chain: the loser gets a duplicate key, reads the
new tail and tries again.

Production needs transactions (a replica set, even of one member, a sharded cluster, or Atlas): a
unit of work (request change + its event) runs in one multi-document transaction. `open` asks the
server by running a transaction, and refuses a server that has none (a standalone mongod) unless
`allow_standalone` (JITPASS_MONGODB_ALLOW_STANDALONE=true) says this is development. There a unit runs
as compare-and-set, then append, and undoes the change if the append fails: a crash in between
leaves a change without its event, and another writer's event can land between the two, so the
trail's order may differ from the order of changes. That is why production refuses it.

Reads and transactions go to the primary whatever the URL's readPreference says (a secondary may
lag, and transactions need the primary); writes use w=majority unless the URL gives `w`. Options
the URL gives win over jitpass's defaults (server selection timeout, appname).

A purge writes the new checkpoint and its `retention.purged` event in one transaction, then deletes
the events below the checkpoint in bounded batches outside it (a transaction has a time and size
limit; a purge does not). Events at or below the checkpoint are purged as far as every reader is
concerned from the moment it is written; batches left by a crash are finished at the next open or purge.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, unquote

import pymongo
from bson.errors import InvalidDocument
from pymongo import (
    ASCENDING,
    DESCENDING,
    AsyncMongoClient,
    IndexModel,
    ReadPreference,
    ReturnDocument,
    UpdateOne,
    WriteConcern,
)
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from bot.domain.audit import GENESIS_HASH, event_from_dict, event_to_dict, format_time, seal_event
from bot.domain.errors import AuditWriteError, ClaimTaken, Conflict, NotFound, StoreError
from bot.domain.model import (
    SECRET_LANE,
    AccessRequest,
    Effect,
    EffectDraft,
    EffectOutcome,
    EffectStatus,
    Event,
    EventDraft,
    Identity,
    Item,
    RequestKind,
    SealedItem,
    Status,
    TransitionDraft,
)
from bot.ports import Checkpoint, ClaimBatch, Claimed, Clock, EffectLease, PurgeResult, RateTake, RefusalBurst
from storage.codec import (
    CLAIM_FIELDS,
    KEY_FIELDS,
    claims,
    effect_from_doc,
    item_from_doc,
    request_from_doc,
    request_to_doc,
    sealed_from_doc,
    sealed_to_doc,
    time_from_doc,
)
from storage.common import (
    CHECKPOINT_KEY,
    DUE_RULES,
    EVENTS_PAGE,
    apply_changes,
    as_recorded,
    cas_allows,
    checkpoint_from_json,
    checkpoint_to_json,
    effect_docs,
    lease_new_effects,
    paged_events,
    purge_cutoff,
    purge_draft,
    settled_changes,
    supersedes,
)
from storage.mongo import home_tabs, rate_limits
from storage.mongo.reports import REPORT_INDEXES

if TYPE_CHECKING:
    from bot.domain.report_data import ProgressCallback, ReportData, ReportQuery

__all__ = ["ALLOW_STANDALONE_VAR", "SCHEMA_VERSION", "MongoStore", "client_options", "mongo_location"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_DB = "jitpass"
SERVER_SELECTION_TIMEOUT = 5.0
# Bounds on optimistic retries: appends racing other writers, and CAS racing other changes.
APPEND_ATTEMPTS = 50
CAS_ATTEMPTS = 10
# Events deleted per batch when a purge removes what lies below its checkpoint.
PURGE_BATCH = 5_000
# Transitions per transaction in `transition_many`: few round trips each, yet short enough to commit
# beside other writers (bench/mongo_round_trips.py --other-writes).
TRANSITION_BATCH = 25
ALLOW_STANDALONE_VAR = "JITPASS_MONGODB_ALLOW_STANDALONE"
_COLLECTIONS = ("items", "requests", "events", "meta", "effects", rate_limits.COLLECTION, home_tabs.COLLECTION)
_ILLEGAL_OPERATION = 20  # what a standalone mongod answers a transaction
_WRITE_CONFLICT = 112
_DUPLICATE_KEY = 11000
# The driver's own errors, and BSON's: a value BSON cannot hold (an int >= 2**63, a key with NUL,
# a document over 16 MB) raises these, which are not PyMongoError.
_DRIVER_ERRORS = (PyMongoError, InvalidDocument, OverflowError)

Doc = dict[str, Any]
T = TypeVar("T")
Session = AsyncClientSession | None

_ITEM_META_PROJECTION = {k: 0 for k in KEY_FIELDS}
# The store owns these; a transition only writes them when `refs` is among the changes.
_REFS_FIELDS = ("refs", "refs_version")
# Which time makes a request due in each open status, and what else must match (storage.common.DUE_RULES).
_DUE_FIELDS = tuple((status, field) for status, field, _ in DUE_RULES)
# An approved extension is never due: approving it moved its grant's end.
_DUE_ONLY = {status: dict(extra) for status, _, extra in DUE_RULES if extra}


_EFFECT_ORDER = itertools.count()


def _claim_taken(exc: DuplicateKeyError, request: AccessRequest) -> ClaimTaken | None:
    """The unique claim index `exc` names, as the invariant it protects."""
    details = exc.details or {}
    pattern = details.get("keyPattern") or {}
    text = str(details.get("errmsg") or exc)
    if "open_claim" in pattern or "index: open_claim" in text:
        return ClaimTaken("open", f"{request.requester.label} already has an open request for {request.item}")
    if "hold_claim" in pattern or "index: hold_claim" in text:
        return ClaimTaken("hold", f"{request.item} is exclusive and already held")
    return None


class _SeqTaken(Exception):
    """Another writer took the next seq inside our transaction: run the whole unit again."""


class _LeaseLost(Exception):
    """A settle assumed every lease was still its own and one was not: settle again, reading them first."""


class _OneByOne(Exception):
    """A batched write met a unique-index clash: run the batch draft by draft, which names the clash."""


def _duplicate_key(exc: BulkWriteError) -> Doc | None:
    """The key pattern of the first duplicate-key error in a bulk write, if that is what failed."""
    for error in (exc.details or {}).get("writeErrors", []):
        if error.get("code") == _DUPLICATE_KEY:
            return dict(error.get("keyPattern") or {"_id": 1})
    return None


def _url_options(url: str) -> set[str]:
    """The option names a MongoDB URL sets, lower-cased (MongoDB option names are case-insensitive)."""
    query = url.partition("?")[2]
    return {key.lower() for key, _ in parse_qsl(query, keep_blank_values=True)}


def client_options(url: str, server_selection_timeout: float | None = None) -> dict[str, Any]:
    """The driver options jitpass adds: its defaults where the URL is silent; an explicit timeout wins."""
    given = _url_options(url)
    options: dict[str, Any] = {}
    if server_selection_timeout is not None or "serverselectiontimeoutms" not in given:
        options["serverSelectionTimeoutMS"] = int((server_selection_timeout or SERVER_SELECTION_TIMEOUT) * 1000)
    if "appname" not in given:
        options["appname"] = "jitpass"
    return options


def _is_write_conflict(exc: OperationFailure) -> bool:
    """A transaction lost to a concurrent one (WriteConflict, or labelled transient): run it again."""
    return exc.code == _WRITE_CONFLICT or exc.has_error_label("TransientTransactionError")


def mongo_location(url: str) -> tuple[str, str | None]:
    """(hosts, database) from a MongoDB URL, leaving out user name and password."""
    rest = url.split("://", 1)[1] if "://" in url else url
    netloc, _, path = rest.partition("/")
    netloc = netloc.split("?", 1)[0]
    hosts = netloc.rpartition("@")[2] or "localhost"
    database = unquote(path.split("?", 1)[0]) or None
    return hosts, database


def _secrets_in(url: str) -> list[str]:
    rest = url.split("://", 1)[1] if "://" in url else url
    userinfo = rest.split("/", 1)[0].rpartition("@")[0]
    if not userinfo:
        return []
    password = userinfo.partition(":")[2]
    return [s for s in (userinfo, password, unquote(password)) if s]


class MongoStore:
    """Store in one MongoDB database: collections items, requests, events, meta."""

    kind = "mongodb"

    def __init__(
        self, url: str, clock: Clock, db_name: str | None = None, *,
        server_selection_timeout: float | None = None, allow_standalone: bool = False,
        purge_batch: int = PURGE_BATCH, transition_batch: int = TRANSITION_BATCH,
    ) -> None:
        self._url = url
        self._clock = clock
        self.hosts, url_db = mongo_location(url)
        self.db_name = db_name or url_db or DEFAULT_DB
        self._timeout = server_selection_timeout
        self._allow_standalone = allow_standalone
        self._purge_batch = max(1, purge_batch)
        self._transition_batch_size = max(1, transition_batch)
        self._client: AsyncMongoClient[Doc] | None = None
        self._db: AsyncDatabase[Doc] | None = None
        self._transactions = False
        # The chain tail (seq, hash) this process last wrote or read, committed: the next append goes after
        # it without reading the tail (on mongoeco that read is a scan and sort of every event). The guess is
        # checked by the events' `_id` (the seq): if another writer appended since, the insert clashes with a
        # duplicate key (or the transaction conflicts) and the true tail is read. A tail written inside a
        # transaction waits in `_written_tails` until `_unit` sees it commit, so a guess is never ahead.
        self._tail_guess: tuple[int, str] | None = None
        self._written_tails: dict[int, tuple[int, str]] = {}


    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, check the schema version and create indexes."""
        if self._client is not None:
            return
        try:
            client: AsyncMongoClient[Doc] = AsyncMongoClient(self._url, **client_options(self._url, self._timeout))
        except (PyMongoError, ValueError, TypeError) as exc:  # the driver raises ValueError for a bad port
            raise StoreError(f"the MongoDB URL for {self.hosts} is not valid: {self._scrub(exc)}") from None
        given = _url_options(self._url)
        self._client = client
        # Every read on the primary (secondaries lag; transactions need it), w=majority unless the URL says.
        self._db = client.get_database(
            self.db_name, read_preference=ReadPreference.PRIMARY,
            write_concern=None if "w" in given else WriteConcern("majority"),
        )
        try:
            with self._errors("open"):
                await self._db.command("ping")
                await self._create_collections()
                await self._check_schema()
                await self._create_indexes()
                self._transactions = await self._server_has_transactions(client)
                if not self._transactions and not self._allow_standalone:
                    raise StoreError(
                        f"MongoDB at {self.hosts} has no transactions (a standalone server): jitpass needs a "
                        "replica set, a sharded cluster or Atlas, so that a change and its audit event are "
                        "written together. A one-member replica set will do (mongod --replSet rs0, then "
                        f"rs.initiate()). For development only, set {ALLOW_STANDALONE_VAR}=true."
                    )
                if not self._transactions:
                    log.warning("event=mongodb_standalone hosts=%s note=\"no transactions: development only; a crash "
                                "between a change and its audit event leaves the change without its event\"",
                                self.hosts)
                await self._delete_purged()  # finish a purge a crash interrupted
        except BaseException:
            self._client = self._db = None
            await client.close()
            raise

    async def _create_collections(self) -> None:
        """Create the collections up front: never for the first time inside a transaction."""
        assert self._db is not None
        existing = set(await self._db.list_collection_names())
        for name in _COLLECTIONS:
            if name not in existing:
                try:
                    await self._db.create_collection(name)
                except OperationFailure as exc:
                    if exc.code != 48:  # NamespaceExists: another replica created it first
                        raise

    async def _server_has_transactions(self, client: AsyncMongoClient[Doc]) -> bool:
        """Run a one-read transaction: a standalone mongod refuses it with IllegalOperation."""
        meta = self._collection("meta")

        async def read(session: AsyncClientSession) -> object:
            return await meta.find_one({"_id": "schema_version"}, session=session)

        async with client.start_session() as session:
            try:
                await session.with_transaction(read, read_preference=ReadPreference.PRIMARY)
            except OperationFailure as exc:
                if exc.code == _ILLEGAL_OPERATION:
                    return False
                raise
        return True

    async def _check_schema(self) -> None:
        meta = self._collection("meta")
        found = await meta.find_one({"_id": "schema_version"})
        version = int(found["value"]) if found else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the MongoDB database {self.db_name} at {self.hosts} was written by a newer jitpass (schema "
                f"version {version}; this version knows up to {SCHEMA_VERSION}): upgrade jitpass"
            )
        if version < SCHEMA_VERSION:
            await meta.update_one(
                {"_id": "schema_version"}, {"$set": {"value": str(SCHEMA_VERSION)}}, upsert=True
            )

    async def _backfill_claims(self) -> None:
        """Documents written before the claim keys get them (the first open one per person and item wins)."""
        requests = self._collection("requests")
        taken: set[str] = set()
        async for doc in requests.find({"open_claim": {"$exists": False}}).sort("created_seq", ASCENDING):
            keys = claims(request_from_doc(doc))
            for field in CLAIM_FIELDS:
                if keys[field] in taken:
                    keys[field] = f"free:{doc['_id']}"
                taken.add(keys[field])
            await requests.update_one({"_id": doc["_id"]}, {"$set": keys})

    async def _create_indexes(self) -> None:
        await self._backfill_claims()
        await self._collection("events").create_indexes([
            IndexModel([("id", ASCENDING)], unique=True, name="id_unique"),
            IndexModel([("at", ASCENDING)], name="at"),
            IndexModel([("type", ASCENDING), ("_id", ASCENDING)], name="type"),
            IndexModel([("item", ASCENDING), ("_id", ASCENDING)], name="item"),
            IndexModel([("request_id", ASCENDING), ("_id", ASCENDING)], name="request_id"),
            IndexModel([("actor.user_id", ASCENDING), ("_id", ASCENDING)], name="actor_user_id"),
            *REPORT_INDEXES,
        ])
        await self._collection("requests").create_indexes([
            IndexModel([("status", ASCENDING), ("timeout_at", ASCENDING)], name="status_timeout"),
            IndexModel([("status", ASCENDING), ("starts_at", ASCENDING)], name="status_starts"),
            IndexModel([("status", ASCENDING), ("ends_at", ASCENDING)], name="status_ends"),
            IndexModel([("requester_key", ASCENDING), ("created_at", DESCENDING)], name="requester"),
            IndexModel([("item", ASCENDING), ("status", ASCENDING)], name="item_status"),
            IndexModel([("parent_id", ASCENDING)], name="parent"),
            IndexModel([("created_at", DESCENDING), ("created_seq", DESCENDING)], name="newest"),
            # Invariants held by the server (storage/codec.py `claims`); plain unique indexes.
            IndexModel([("open_claim", ASCENDING)], unique=True, name="open_claim_unique"),
            IndexModel([("hold_claim", ASCENDING)], unique=True, name="hold_claim_unique"),
        ])
        await self._collection("effects").create_indexes([
            IndexModel([("status", ASCENDING), ("due_at", ASCENDING)], name="status_due"),
            IndexModel([("request_id", ASCENDING), ("lane", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)],
                       name="lane"),
            # The claim's first pass (`claim_effects`): only pending deliveries and wipes are in it.
            IndexModel([("due_at", ASCENDING), ("_id", ASCENDING)], name="secret_due",
                       partialFilterExpression={"status": "pending", "lane": SECRET_LANE}),
        ])
        await self._collection(rate_limits.COLLECTION).create_indexes(rate_limits.RATE_INDEXES)
        await self._collection(home_tabs.COLLECTION).create_indexes(home_tabs.HOME_TAB_INDEXES)

    async def close(self) -> None:
        """Close the client; safe to call twice."""
        client, self._client, self._db = self._client, None, None
        if client is not None:
            await client.close()

    async def describe(self) -> dict[str, Any]:
        """Kind, schema version, hosts (never credentials), database and last event seq."""
        last = await self.last_event()
        return {
            "kind": self.kind,
            "schema_version": SCHEMA_VERSION,
            "hosts": self.hosts,
            "database": self.db_name,
            "transactions": self._transactions,
            "last_seq": last.seq if last else 0,
        }

    async def check_write(self, timeout: float) -> None:
        """An acknowledged upsert of a health mark, bounded by `timeout`."""
        with self._errors("a health-check write"), pymongo.timeout(timeout):
            await self._collection("meta").update_one(
                {"_id": "health_check"}, {"$set": {"value": format_time(self._clock.now())}}, upsert=True)

    # -- plumbing -----------------------------------------------------------------------------
    def _collection(self, name: str) -> AsyncCollection[Doc]:
        if self._db is None:
            raise StoreError("the MongoDB store is not open")
        return self._db[name]

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc)
        for secret in _secrets_in(self._url):
            text = text.replace(secret, "****")
        return text

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Driver errors become StoreError naming the hosts only (a URL may carry a password)."""
        try:
            yield
        except ConnectionFailure:
            raise StoreError(
                f"cannot reach MongoDB at {self.hosts} ({what}); "
                "check JITPASS_STORE and that the server is up"
            ) from None
        except OperationFailure as exc:
            if exc.code in (13, 18):  # Unauthorized, AuthenticationFailed
                raise StoreError(
                    f"MongoDB at {self.hosts} refused the credentials in JITPASS_STORE"
                ) from None
            raise StoreError(f"MongoDB at {self.hosts} refused {what}: {self._scrub(exc)}") from None
        except PyMongoError as exc:
            raise StoreError(f"MongoDB at {self.hosts} failed during {what}: {self._scrub(exc)}") from None
        except (InvalidDocument, OverflowError) as exc:
            raise StoreError(f"MongoDB cannot store a value in {what} ({type(exc).__name__}): nothing was changed") \
                from None

    async def _unit(self, what: str, body: Callable[[Session], Awaitable[T]]) -> T:
        """Run `body` in a transaction where the server has them, else directly (it compensates)."""
        with self._errors(what):
            if not self._transactions or self._client is None:
                return await body(None)
            async def attempt_body(session: AsyncClientSession) -> T:
                # with_transaction may run the body again after an abort: what an aborted try wrote is gone.
                self._written_tails.pop(id(session), None)
                return await body(session)

            async with self._client.start_session() as session:
                for attempt in range(APPEND_ATTEMPTS):
                    try:
                        result = await session.with_transaction(attempt_body,
                                                                read_preference=ReadPreference.PRIMARY)
                    except _SeqTaken:
                        self._tail_guess = None  # another writer appended: read the true tail
                    except OperationFailure as exc:
                        self._tail_guess = None
                        if not _is_write_conflict(exc):
                            raise
                    else:
                        written = self._written_tails.pop(id(session), None)
                        if written is not None:
                            self._guess_tail(written)  # committed: the next append may start from it
                        return result
                    finally:
                        self._written_tails.pop(id(session), None)
                    await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise AuditWriteError(f"the audit trail is too busy to record {what}; nothing was changed")

    def _guess_tail(self, tail: tuple[int, str]) -> None:
        """Remember a committed tail, unless a later one is already remembered."""
        if self._tail_guess is None or tail[0] > self._tail_guess[0]:
            self._tail_guess = tail

    def _wrote_tail(self, session: Session, tail: tuple[int, str]) -> None:
        """A tail this process just wrote: known at once outside a transaction, after its commit inside one."""
        if session is None:
            self._guess_tail(tail)
        else:
            self._written_tails[id(session)] = tail

    async def _compensate(self, what: str, undo: Awaitable[object]) -> None:
        """Undo a standalone write whose event failed; if the undo fails too, say so instead of hiding it."""
        try:
            await undo
        except _DRIVER_ERRORS as exc:
            log.error("event=mongodb_undo_failed what=%r error=%s", what, type(exc).__name__)
            raise AuditWriteError(
                f"the audit event could not be written, and undoing {what} failed too: the change stays "
                "without its event (see the log)"
            ) from None

    async def _tail(self, session: Session) -> tuple[int, str]:
        """The tail to append after: this process's committed guess, else read (the newest event, or the
        checkpoint when a purge left none). Inside a transaction that appended already, its own last event."""
        own = self._written_tails.get(id(session)) if session is not None else None
        if own is not None:
            return own
        if self._tail_guess is not None:
            return self._tail_guess
        last = await self._collection("events").find_one({}, sort=[("_id", DESCENDING)], session=session)
        if last is not None:
            return int(last["_id"]), str(last["hash"])
        checkpoint = await self._checkpoint(session)
        return (checkpoint.seq, checkpoint.hash) if checkpoint else (0, GENESIS_HASH)

    async def _append(self, draft: EventDraft, session: Session) -> Event:
        """Insert `draft` at the next seq; on a lost race read the new tail and try again."""
        events = self._collection("events")
        for attempt in range(APPEND_ATTEMPTS):
            try:
                seq, prev_hash = await self._tail(session)
                event = seal_event(draft, seq=seq + 1, prev_hash=prev_hash, at=self._clock.now())
                await events.insert_one({"_id": event.seq, **event_to_dict(event)}, session=session)
                self._wrote_tail(session, (event.seq, event.hash))
                return as_recorded(event)
            except DuplicateKeyError as exc:
                self._tail_guess = None  # the guess (or the read) was overtaken: read the true tail
                pattern = (exc.details or {}).get("keyPattern") or {"_id": 1}
                if "_id" not in pattern:
                    raise AuditWriteError(
                        f"the audit event {draft.type} could not be written (duplicate event id)"
                    ) from None
                if session is not None:
                    raise _SeqTaken from None  # the server aborted our transaction: redo the unit
                if attempt > 2:
                    await asyncio.sleep(random.uniform(0, 0.002 * attempt))
            except _DRIVER_ERRORS as exc:
                if session is not None and isinstance(exc, OperationFailure) and _is_write_conflict(exc):
                    raise  # the unit runs again (with_transaction or _unit)
                if session is not None and isinstance(exc, PyMongoError) and exc.has_error_label(
                        "TransientTransactionError"):
                    raise
                raise AuditWriteError(
                    f"the audit event {draft.type} could not be written to MongoDB at {self.hosts} "
                    f"({type(exc).__name__}); nothing was changed"
                ) from None
        raise AuditWriteError(f"the audit trail is too busy to record {draft.type}; nothing was changed")

    async def _append_many(self, drafts: Sequence[EventDraft], session: AsyncClientSession) -> list[Event]:
        """Chain `drafts` in order after the tail and insert them at once (inside a transaction only:
        a lost race aborts it and the whole unit runs again)."""
        if not drafts:
            return []
        seq, prev_hash = await self._tail(session)
        at = self._clock.now()
        sealed: list[Event] = []
        for draft in drafts:
            event = seal_event(draft, seq=seq + 1, prev_hash=prev_hash, at=at)
            seq, prev_hash = event.seq, event.hash
            sealed.append(event)
        try:
            await self._collection("events").insert_many(
                [{"_id": e.seq, **event_to_dict(e)} for e in sealed], ordered=True, session=session)
        except BulkWriteError as exc:
            self._tail_guess = None
            pattern = _duplicate_key(exc)
            if pattern is not None and "_id" in pattern:
                raise _SeqTaken from None
            if pattern is not None:
                raise AuditWriteError("an audit event could not be written (duplicate event id)") from None
            raise AuditWriteError(
                f"the audit events could not be written to MongoDB at {self.hosts} (BulkWriteError); "
                "nothing was changed") from None
        except _DRIVER_ERRORS as exc:
            if isinstance(exc, OperationFailure) and _is_write_conflict(exc):
                raise
            if isinstance(exc, PyMongoError) and exc.has_error_label("TransientTransactionError"):
                raise
            raise AuditWriteError(
                f"the audit events could not be written to MongoDB at {self.hosts} ({type(exc).__name__}); "
                "nothing was changed") from None
        self._wrote_tail(session, (sealed[-1].seq, sealed[-1].hash))
        return [as_recorded(e) for e in sealed]

    async def _checkpoint(self, session: Session = None) -> Checkpoint | None:
        found = await self._collection("meta").find_one({"_id": CHECKPOINT_KEY}, session=session)
        return checkpoint_from_json(found["value"] if found else None)

    # -- metadata -----------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None:
        """The value stored under `key`, or None."""
        with self._errors("reading metadata"):
            found = await self._collection("meta").find_one({"_id": key})
        return str(found["value"]) if found else None

    async def set_meta(self, key: str, value: str) -> None:
        """Store `value` under `key`, replacing any previous value."""
        with self._errors("writing metadata"):
            await self._collection("meta").update_one({"_id": key}, {"$set": {"value": value}}, upsert=True)

    # -- items --------------------------------------------------------------------------------
    async def add_items(self, sealed: Sequence[SealedItem], events: Sequence[EventDraft]) -> None:
        """Insert all items and their events, or none: Conflict if any name exists."""
        names = [s.item.name for s in sealed]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise Conflict(f"an item named {duplicates[0]!r} is listed twice")
        docs = [{"_id": s.item.name, **sealed_to_doc(s)} for s in sealed]
        items = self._collection("items")

        async def body(session: Session) -> None:
            existing = await items.find_one({"_id": {"$in": names}}, {"_id": 1}, session=session)
            if existing is not None:
                raise Conflict(f"an item named {existing['_id']!r} already exists")
            if not docs:
                inserted = 0
            else:
                try:
                    await items.insert_many(docs, ordered=True, session=session)
                    inserted = len(docs)
                except BulkWriteError as exc:
                    # Take back what went in; only a duplicate name is someone else's conflicting add.
                    inserted = int(exc.details.get("nInserted", 0))
                    if session is None:
                        await self._compensate("adding items", take_back(inserted))
                    codes = {e.get("code") for e in exc.details.get("writeErrors", [])}
                    if codes == {_DUPLICATE_KEY}:
                        raise Conflict("an item with one of these names was just added by someone else") from None
                    raise
            try:
                for draft in events:
                    await self._append(draft, session)
            except AuditWriteError:
                if session is None:
                    await self._compensate("adding items", take_back(inserted))
                raise

        async def take_back(inserted: int) -> None:
            await items.delete_many({"_id": {"$in": names[:inserted]}})

        await self._unit("adding items", body)

    async def replace_item(self, sealed: SealedItem, event: EventDraft | None) -> None:
        """Overwrite an existing item (metadata and ciphertext). NotFound if absent."""
        name = sealed.item.name
        items = self._collection("items")

        async def body(session: Session) -> None:
            old = await items.find_one_and_replace(
                {"_id": name}, {"_id": name, **sealed_to_doc(sealed)}, session=session
            )
            if old is None:
                raise NotFound(f"no item named {name!r}")
            if event is not None:
                try:
                    await self._append(event, session)
                except AuditWriteError:
                    if session is None:
                        await self._compensate("replacing an item", items.replace_one({"_id": name}, old))
                    raise

        await self._unit("replacing an item", body)

    async def rewrap_items(self, sealed: Sequence[SealedItem], event: EventDraft) -> None:
        """Replace key material of many items at once (key rotation), all or nothing."""
        items = self._collection("items")

        async def body(session: Session) -> None:
            olds: list[Doc] = []
            try:
                for one in sealed:
                    keys = {k: v for k, v in sealed_to_doc(one).items() if k in KEY_FIELDS}
                    old = await items.find_one_and_update(
                        {"_id": one.item.name}, {"$set": keys}, projection=["_id", *KEY_FIELDS],
                        session=session,
                    )
                    if old is None:
                        raise NotFound(f"no item named {one.item.name!r}")
                    olds.append(old)
                await self._append(event, session)
            except BaseException:
                if session is None:
                    await self._compensate("re-wrapping items", put_back(olds))
                raise

        async def put_back(olds: list[Doc]) -> None:
            for old in olds:  # the previous key material
                await items.update_one({"_id": old["_id"]}, {"$set": {k: old[k] for k in KEY_FIELDS}})

        await self._unit("re-wrapping items", body)

    async def remove_item(self, name: str, event: EventDraft) -> None:
        """Delete an item. NotFound if absent."""
        items = self._collection("items")

        async def body(session: Session) -> None:
            old = await items.find_one_and_delete({"_id": name}, session=session)
            if old is None:
                raise NotFound(f"no item named {name!r}")
            try:
                await self._append(event, session)
            except AuditWriteError:
                if session is None:
                    await self._compensate("removing an item", items.insert_one(old))
                raise

        await self._unit("removing an item", body)

    async def get_item(self, name: str) -> SealedItem | None:
        """The item with its sealed secret, or None."""
        with self._errors("reading an item"):
            found = await self._collection("items").find_one({"_id": name})
        return sealed_from_doc(found) if found else None

    async def list_items(self) -> list[Item]:
        """Every item's metadata, sorted by name."""
        with self._errors("listing items"):
            cursor = self._collection("items").find({}, _ITEM_META_PROJECTION).sort("_id", ASCENDING)
            return [item_from_doc(d) async for d in cursor]

    async def list_sealed_items(self) -> list[SealedItem]:
        """Every item with its sealed secret, sorted by name."""
        with self._errors("listing items"):
            cursor = self._collection("items").find({}).sort("_id", ASCENDING)
            return [sealed_from_doc(d) async for d in cursor]

    # -- requests -----------------------------------------------------------------------------
    async def create_request(self, request: AccessRequest, event: EventDraft,
                             effects: Sequence[EffectDraft] = (), *, lease: EffectLease | None = None) -> list[Effect]:
        """Insert a new request, its `request.created` event and its effects (those `lease` leases, leased);
        Conflict if the id exists. The effects leased."""
        requests = self._collection("requests")
        doc = {"_id": request.id, **request_to_doc(request), "created_seq": None}
        leased: list[Effect] = []

        async def body(session: Session) -> None:
            leased.clear()  # a transaction retried after a transient error starts again
            try:
                await requests.insert_one(dict(doc), session=session)
            except DuplicateKeyError as exc:
                raise _claim_taken(exc, request) or Conflict(f"a request with id {request.id} already exists") \
                    from None
            try:
                recorded = await self._append(event, session)
            except AuditWriteError:
                if session is None:
                    await self._compensate("creating a request",
                                           requests.delete_one({"_id": request.id, "version": request.version}))
                raise
            # The creating event's seq orders requests created in the same microsecond.
            await requests.update_one(
                {"_id": request.id}, {"$set": {"created_seq": recorded.seq}}, session=session
            )
            leased.extend(await self._add_effects(request, effects, session, lease=lease))

        await self._unit("creating a request", body)
        return list(leased)

    async def get_request(self, request_id: str) -> AccessRequest | None:
        """The request with this id, or None."""
        with self._errors("reading a request"):
            found = await self._collection("requests").find_one({"_id": request_id})
        return request_from_doc(found) if found else None

    async def find_requests(
        self,
        *,
        requester: Identity | None = None,
        statuses: Collection[Status] | None = None,
        item: str | None = None,
        parent_id: str | None = None,
        parent_ids: Collection[str] | None = None,
        kind: RequestKind | None = None,
        limit: int | None = None,
    ) -> list[AccessRequest]:
        """Requests matching every given filter, newest first."""
        query: Doc = {}
        if requester is not None:
            query["requester_key"] = requester.key
        if statuses is not None:
            query["status"] = {"$in": [Status(s).value for s in statuses]}
        if item is not None:
            query["item"] = item
        if parent_id is not None:
            query["parent_id"] = parent_id
        if parent_ids is not None:
            if not parent_ids:
                return []
            query["parent_id"] = {"$in": sorted(parent_ids)} if parent_id is None else parent_id
        if kind is not None:
            query["kind"] = kind.value
        with self._errors("finding requests"):
            cursor = self._collection("requests").find(query).sort(
                [("created_at", DESCENDING), ("created_seq", DESCENDING)]
            )
            if limit is not None:
                if limit <= 0:
                    return []
                cursor = cursor.limit(limit)
            return [request_from_doc(d) async for d in cursor]

    async def transition(
        self,
        request_id: str,
        from_statuses: Collection[Status],
        changes: Mapping[str, Any],
        event: EventDraft | None,
        *,
        expected_version: int | None = None,
        effects: Sequence[EffectDraft] = (),
    ) -> AccessRequest | None:
        """Compare-and-set on status (and version), with its event and effects in the same unit of work."""
        async def body(session: Session) -> AccessRequest | None:
            return await self._transition_in(session, request_id, from_statuses, changes, event,
                                             expected_version, effects)

        return await self._unit("changing a request", body)

    async def transition_many(self, drafts: Sequence[TransitionDraft]) -> list[AccessRequest | None]:
        """The drafts' compare-and-sets in order, `transition_batch` per transaction, each in a few round
        trips: one read of the requests, one bulk update guarded by version and status, one insert of the
        chained events, one of the effects. Transactions stay short because a long one loses to every
        other writer's commit (mongoeco aborts it on any; MongoDB on a shared document) and is redone.
        If a later transaction fails after earlier ones committed, its drafts come back as None (not
        moved; the scheduler's next pass retries them) and the failure is logged. Without transactions
        (standalone, development) each is its own compare-and-set + append, as `transition`."""
        if not drafts:
            return []

        def one_by_one(part: Sequence[TransitionDraft]) -> Callable[[Session], Awaitable[list[AccessRequest | None]]]:
            async def body(session: Session) -> list[AccessRequest | None]:
                return [await self._transition_in(session, d.request_id, d.from_statuses, d.changes, d.event,
                                                  d.expected_version, d.effects) for d in part]
            return body

        if not self._transactions:
            return await self._unit("changing requests", one_by_one(drafts))

        def batched(part: Sequence[TransitionDraft]) -> Callable[[Session], Awaitable[list[AccessRequest | None]]]:
            async def body(session: Session) -> list[AccessRequest | None]:
                assert session is not None
                return await self._transition_batch(session, part)
            return body

        results: list[AccessRequest | None] = []
        for start in range(0, len(drafts), self._transition_batch_size):
            part = drafts[start:start + self._transition_batch_size]
            try:
                try:
                    results += await self._unit("changing requests", batched(part))
                except _OneByOne:
                    results += await self._unit("changing requests", one_by_one(part))
            except (StoreError, AuditWriteError) as exc:
                if not results:
                    raise  # nothing committed: the caller sees the failure as it is
                log.warning("event=mongodb_batch_incomplete moved=%d left=%d error=%s", len(results),
                            len(drafts) - len(results), exc.message)
                return results + [None] * (len(drafts) - len(results))
        return results

    async def _transition_batch(self, session: AsyncClientSession,
                                drafts: Sequence[TransitionDraft]) -> list[AccessRequest | None]:
        requests = self._collection("requests")
        ids = sorted({d.request_id for d in drafts})
        found = {str(doc["_id"]): doc async for doc in requests.find({"_id": {"$in": ids}}, session=session)}
        now = self._clock.now()
        ops: list[UpdateOne] = []
        events: list[EventDraft] = []
        effects: list[tuple[AccessRequest, Sequence[EffectDraft]]] = []
        results: list[AccessRequest | None] = []
        for draft in drafts:
            doc = found.get(draft.request_id)
            statuses = [Status(s).value for s in draft.from_statuses]
            current = request_from_doc(doc) if doc is not None else None
            if doc is None or current is None or not cas_allows(current, statuses, draft.expected_version):
                results.append(None)
                continue
            updated = apply_changes(current, draft.changes, now)
            kept = () if "refs" in draft.changes else _REFS_FIELDS  # save_refs may be writing those
            new = {k: v for k, v in request_to_doc(updated).items() if k != "id" and k not in kept}
            # The status filter too: a grant another replica already moved is never moved twice.
            ops.append(UpdateOne({"_id": current.id, "version": current.version, "status": {"$in": statuses}},
                                 {"$set": new}))
            doc = found[draft.request_id] = {**doc, **new}  # a later draft for the same request sees this one
            result = request_from_doc(doc)
            results.append(result)
            if draft.event is not None:
                events.append(draft.event)
            if draft.effects:
                effects.append((result, draft.effects))
        if ops:
            try:
                done = await requests.bulk_write(ops, ordered=True, session=session)
            except BulkWriteError as exc:
                if _duplicate_key(exc) is not None:
                    raise _OneByOne from None  # a claim index: the one-by-one path says whose
                raise
            if done.matched_count != len(ops):
                raise _SeqTaken  # moved since our read: the unit runs again on fresh reads
        await self._append_many(events, session)
        await self._add_effects_many(effects, session)
        return results

    async def _transition_in(self, session: Session, request_id: str, from_statuses: Collection[Status],
                             changes: Mapping[str, Any], event: EventDraft | None, expected_version: int | None,
                             effects: Sequence[EffectDraft]) -> AccessRequest | None:
        statuses = [Status(s).value for s in from_statuses]
        requests = self._collection("requests")
        for _ in range(CAS_ATTEMPTS):
            found = await requests.find_one({"_id": request_id}, session=session)
            if found is None:
                return None
            current = request_from_doc(found)
            if not cas_allows(current, statuses, expected_version):
                return None
            updated = apply_changes(current, changes, self._clock.now())
            kept = () if "refs" in changes else _REFS_FIELDS  # save_refs may be writing those
            new = {k: v for k, v in request_to_doc(updated).items() if k != "id" and k not in kept}
            old = {k: v for k, v in request_to_doc(current).items() if k in new}
            try:
                moved = await requests.find_one_and_update(
                    {"_id": request_id, "version": current.version, "status": {"$in": statuses}},
                    {"$set": new}, session=session, return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError as exc:
                raise _claim_taken(exc, updated) or exc from None
            if moved is None:
                # Changed under us. Like SQLite, apply to the current request when the caller did
                # not pin a version and its status still qualifies.
                if expected_version is not None:
                    return None
                continue
            if event is not None:
                try:
                    await self._append(event, session)
                except AuditWriteError:
                    if session is None:
                        await self._compensate("changing a request",
                                               self._undo(request_id, updated.version, old))
                    raise
            result = request_from_doc(moved)
            await self._add_effects(result, effects, session)
            return result
        return None

    async def _add_effects(self, request: AccessRequest, effects: Sequence[EffectDraft], session: Session, *,
                           lease: EffectLease | None = None) -> list[Effect]:
        """Insert a request's new effects (superseding its unclaimed card updates); those `lease` leased."""
        if not effects:
            return []
        collection = self._collection("effects")
        now = self._clock.now()
        at = format_time(now)
        if supersedes(effects):
            await collection.update_many(
                {"request_id": request.id, "kind": "update_card", "status": "pending",
                 "$or": [{"lease_until": None}, {"lease_until": {"$lte": at}}]},
                {"$set": {"status": "dropped", "error": "superseded", "updated_at": at}}, session=session)
        # _id sorts like creation order (time, then this process's counter): the lane order of both stores.
        docs = [{"_id": f"{at}-{next(_EFFECT_ORDER):012d}-{secrets.token_hex(3)}", **doc}
                for doc in effect_docs(request.id, request.platform, effects, now)]
        leased = lease_new_effects(docs, lease)
        await collection.insert_many(docs, ordered=True, session=session)
        return [effect_from_doc({**doc, "id": doc["_id"]}) for doc in leased]

    async def _add_effects_many(self, pairs: Sequence[tuple[AccessRequest, Sequence[EffectDraft]]],
                                session: Session) -> None:
        """`_add_effects` for many requests: one supersede update and one insert, in the order given."""
        pairs = [(request, effects) for request, effects in pairs if effects]
        if len({request.id for request, _ in pairs}) != len(pairs):
            # A request twice: its second card update must supersede its first, so keep the order exact.
            for request, effects in pairs:
                await self._add_effects(request, effects, session)
            return
        if not pairs:
            return
        collection = self._collection("effects")
        now = self._clock.now()
        at = format_time(now)
        superseding = sorted(request.id for request, effects in pairs if supersedes(effects))
        if superseding:
            await collection.update_many(
                {"request_id": {"$in": superseding}, "kind": "update_card", "status": "pending",
                 "$or": [{"lease_until": None}, {"lease_until": {"$lte": at}}]},
                {"$set": {"status": "dropped", "error": "superseded", "updated_at": at}}, session=session)
        docs = [{"_id": f"{at}-{next(_EFFECT_ORDER):012d}-{secrets.token_hex(3)}", **doc}
                for request, effects in pairs for doc in effect_docs(request.id, request.platform, effects, now)]
        await collection.insert_many(docs, ordered=True, session=session)

    # -- durable chat effects -----------------------------------------------------------------
    async def claim_effects(self, now: datetime, owner: str, lease_until: datetime, *, platforms: Collection[str],
                            limit: int) -> list[Effect]:
        """Lease due effects (first pending in their lane, lease free) to `owner`."""
        if not platforms or limit <= 0:
            return []
        collection = self._collection("effects")
        at = format_time(now)
        free: Doc = {"status": "pending", "$or": [{"lease_until": None}, {"lease_until": {"$lte": at}}]}
        claimed: list[Effect] = []
        with self._errors("claiming effects"):
            due: Doc = {**free, "due_at": {"$lte": at}, "platform": {"$in": sorted(platforms)}}
            order = [("due_at", ASCENDING), ("_id", ASCENDING)]
            window = limit * 4
            candidates = [d async for d in collection.find(due).sort(order).limit(window)]
            if not candidates:
                return []
            # The secret lane (deliveries, wipes) first, whatever the due times: under a backlog a password
            # reaches its requester, and leaves chat, before cards and messages are brought up to date. A
            # short read saw every due effect; a full one is a backlog, whose secret ones may lie beyond it.
            if len(candidates) == window:
                secret = [d async for d in collection.find({**due, "lane": SECRET_LANE}).sort(order).limit(window)]
                seen = {d["_id"] for d in secret}
                candidates = secret + [d for d in candidates if d["_id"] not in seen]
            else:
                candidates.sort(key=lambda d: d.get("lane") != SECRET_LANE)  # stable: due order within each
            # Only the first pending effect of each lane may run: find every lane's head in one read.
            heads: dict[tuple[str, str], str] = {}
            async for d in collection.find({"request_id": {"$in": sorted({d["request_id"] for d in candidates})},
                                            "status": "pending"}, {"_id": 1, "request_id": 1, "lane": 1}):
                lane = (str(d["request_id"]), str(d["lane"]))
                if lane not in heads or str(d["_id"]) < heads[lane]:
                    heads[lane] = str(d["_id"])
            read = {d["_id"]: d for d in candidates}
            eligible = [d["_id"] for d in candidates if heads.get((d["request_id"], d["lane"])) == d["_id"]]
            # One bulk write per round, each effect guarded by its `_id`, a free lease and the attempt count
            # read (a claim always counts one, so an unchanged count means nobody claimed it since: the
            # document is as read). All won, the common case: the claimed effects are what was read plus
            # the lease, without reading them back. Some lost to another worker: the token tells which this
            # call won, and the next eligible ones are tried, so racing workers share the work out.
            token = secrets.token_hex(8)
            lease = {"lease_owner": owner, "lease_until": format_time(lease_until), "updated_at": at,
                     "lease_token": token}
            while eligible and len(claimed) < limit:
                chosen, eligible = eligible[:limit - len(claimed)], eligible[limit - len(claimed):]
                done = await collection.bulk_write(
                    [UpdateOne({"_id": i, "attempts": read[i].get("attempts", 0), **free},
                               {"$set": lease, "$inc": {"attempts": 1}}) for i in chosen], ordered=False)
                if done.modified_count == len(chosen):
                    won = {i: {**read[i], **lease, "attempts": int(read[i].get("attempts", 0)) + 1} for i in chosen}
                else:
                    won = {d["_id"]: d async for d in collection.find({"_id": {"$in": chosen},
                                                                       "lease_token": token})}
                claimed += [effect_from_doc({**won[i], "id": i}) for i in chosen if i in won]
        return claimed

    async def claim_effects_with_rows(self, now: datetime, owner: str, lease_until: datetime, *,
                                      platforms: Collection[str], limit: int) -> ClaimBatch:
        """`claim_effects` with each effect's request and item (metadata) and, for a short batch,
        `next_effect_at`: the same round trips as the claim plus one read of the requests, one of the items."""
        effects = await self.claim_effects(now, owner, lease_until, platforms=platforms, limit=limit)
        with self._errors("claiming effects"):
            request_ids = sorted({e.request_id for e in effects})
            requests = {str(d["_id"]): request_from_doc(d) async for d in
                        self._collection("requests").find({"_id": {"$in": request_ids}})} if request_ids else {}
            names = sorted({r.item for r in requests.values()})
            items = {str(d["_id"]): item_from_doc(d) async for d in
                     self._collection("items").find({"_id": {"$in": names}}, _ITEM_META_PROJECTION)} if names else {}
        claimed = []
        for effect in effects:
            request = requests.get(effect.request_id)
            claimed.append(Claimed(effect, request, items.get(request.item) if request is not None else None))
        short = bool(platforms) and limit > 0 and len(effects) < limit
        return ClaimBatch(claimed, await self.next_effect_at(platforms) if short else None)

    def background(self) -> MongoStore:
        """Itself: the client's connection pool already runs the worker's calls beside the requests'."""
        return self

    async def settle_effect(self, effect: Effect, owner: str, outcome: EffectOutcome) -> bool:
        """Record an attempt's outcome while `owner` holds the lease, with its event, refs and follow-ups."""
        return (await self.settle_effects([(effect, outcome)], owner))[0]

    async def settle_effects(self, settled: Sequence[tuple[Effect, EffectOutcome]], owner: str) -> list[bool]:
        """Record outcomes while `owner` holds their leases, in one transaction (each alone when standalone)."""
        if not settled:
            return []
        if not self._transactions:  # standalone: each settles alone, as `settle_effect` always did
            kept: list[bool] = []
            for effect, outcome in settled:
                async def one(session: Session, effect: Effect = effect, outcome: EffectOutcome = outcome) -> bool:
                    return await self._settle_in(session, effect, outcome, owner)
                kept.append(await self._unit("recording an effect", one))
            return kept

        def body(read_first: bool) -> Callable[[Session], Awaitable[list[bool]]]:
            async def run(session: Session) -> list[bool]:
                assert session is not None
                return await self._settle_batch(session, settled, owner, read_first)
            return run

        try:
            # Usually every lease is still ours: write at once; the guarded writes say whether they all were.
            return await self._unit("recording effects", body(read_first=False))
        except _LeaseLost:
            return await self._unit("recording effects", body(read_first=True))

    async def _settle_batch(self, session: AsyncClientSession, settled: Sequence[tuple[Effect, EffectOutcome]],
                            owner: str, read_first: bool = True) -> list[bool]:
        """`_settle_in` for many outcomes in a few round trips: one bulk update of the effects guarded by the
        lease, one read and one bulk update of their requests, the follow-ups and events at once.
        `read_first`: first read which leases are still ours; otherwise assume all are, and raise
        `_LeaseLost` (the transaction is abandoned) if the guarded update says one was not."""
        effects = self._collection("effects")
        requests = self._collection("requests")
        ids = [effect.id for effect, _ in settled]
        if read_first:
            ours = {str(d["_id"]) async for d in effects.find(
                {"_id": {"$in": ids}, "lease_owner": owner, "status": "pending"}, {"_id": 1}, session=session)}
        else:
            ours = set(ids)
        now = self._clock.now()
        at = format_time(now)
        kept: list[bool] = []
        ops: list[UpdateOne] = []
        for effect, outcome in settled:
            if effect.id not in ours:
                kept.append(False)
                continue
            ours.discard(effect.id)  # the same effect twice: only its first outcome counts, as one by one
            kept.append(True)
            update: Doc = {"status": outcome.status.value, "error": outcome.error[:500], "lease_owner": None,
                           "lease_until": None, "updated_at": at}
            if outcome.status is EffectStatus.PENDING and outcome.retry_at is not None:
                update["due_at"] = format_time(outcome.retry_at)
            ops.append(UpdateOne({"_id": effect.id, "lease_owner": owner, "status": "pending"}, {"$set": update}))
        if not ops:
            return kept
        done = await effects.bulk_write(ops, ordered=True, session=session)
        if done.matched_count != len(ops):
            if not read_first:
                raise _LeaseLost  # a lease is no longer ours: read which before writing
            raise _SeqTaken  # a lease changed since our read: run the unit again
        mine = [(effect, outcome) for (effect, outcome), ok in zip(settled, kept, strict=True) if ok]
        request_ids = sorted({effect.request_id for effect, _ in mine})
        current = {str(d["_id"]): request_from_doc(d)
                   async for d in requests.find({"_id": {"$in": request_ids}}, session=session)}
        read_version = {request_id: request.version for request_id, request in current.items()}
        follow_ups: list[tuple[AccessRequest, Sequence[EffectDraft]]] = []
        events: list[EventDraft] = []
        for effect, outcome in mine:
            request = current.get(effect.request_id)
            if request is not None:
                changes = settled_changes(request, outcome)
                if changes:
                    current[request.id] = apply_changes(request, changes, now)
                follow_ups.append((request, outcome.follow_ups))
            events.extend(e for e in (outcome.event, outcome.alert) if e is not None)
        changed = [UpdateOne({"_id": request_id, "version": read_version[request_id]},
                             {"$set": {k: v for k, v in request_to_doc(request).items() if k != "id"}})
                   for request_id, request in current.items() if request.version != read_version[request_id]]
        if changed:
            moved = await requests.bulk_write(changed, ordered=True, session=session)
            if moved.matched_count != len(changed):
                raise _SeqTaken
        await self._add_effects_many(follow_ups, session)
        await self._append_many(events, session)
        return kept

    async def _settle_in(self, session: Session, effect: Effect, outcome: EffectOutcome, owner: str) -> bool:
        effects = self._collection("effects")
        requests = self._collection("requests")
        at = format_time(self._clock.now())
        update: Doc = {"status": outcome.status.value, "error": outcome.error[:500], "lease_owner": None,
                       "lease_until": None, "updated_at": at}
        if outcome.status is EffectStatus.PENDING and outcome.retry_at is not None:
            update["due_at"] = format_time(outcome.retry_at)
        moved = await effects.update_one({"_id": effect.id, "lease_owner": owner, "status": "pending"},
                                         {"$set": update}, session=session)
        if moved.matched_count != 1:
            return False
        for _ in range(CAS_ATTEMPTS):
            found = await requests.find_one({"_id": effect.request_id}, session=session)
            if found is None:
                break
            current = request_from_doc(found)
            changes = settled_changes(current, outcome)
            if changes:
                updated = apply_changes(current, changes, self._clock.now())
                new = {k: v for k, v in request_to_doc(updated).items() if k != "id"}
                done = await requests.update_one({"_id": current.id, "version": current.version},
                                                 {"$set": new}, session=session)
                if done.matched_count != 1:
                    continue
            await self._add_effects(current, outcome.follow_ups, session)
            break
        for event in (outcome.event, outcome.alert):
            if event is not None:
                await self._append(event, session)
        return True

    async def renew_leases(self, owner: str, lease_until: datetime) -> int:
        """Extend every lease `owner` holds on a pending effect."""
        with self._errors("renewing effect leases"):
            result = await self._collection("effects").update_many(
                {"lease_owner": owner, "status": "pending"}, {"$set": {"lease_until": format_time(lease_until)}})
        return result.modified_count

    async def next_effect_at(self, platforms: Collection[str]) -> datetime | None:
        """When the earliest pending effect is due, or its lease runs out."""
        if not platforms:
            return None
        query = {"status": "pending", "platform": {"$in": sorted(platforms)}}
        with self._errors("planning effects"):
            due = await self._collection("effects").find_one({**query, "lease_until": None}, {"due_at": 1},
                                                             sort=[("due_at", ASCENDING)])
            leased = await self._collection("effects").find_one({**query, "lease_until": {"$type": "string"}},
                                                                {"lease_until": 1}, sort=[("lease_until", ASCENDING)])
        times = [d["due_at"] for d in (due,) if d] + [d["lease_until"] for d in (leased,) if d]
        return time_from_doc(min(times)) if times else None

    async def effect_counts(self) -> dict[str, int]:
        """Pending effects, failed ones, failed wipes (an alert: a secret may still be on screen), deliveries
        that failed for good, and wipes waiting to be tried again after a failed attempt."""
        collection = self._collection("effects")
        with self._errors("counting effects"):
            pending = await collection.count_documents({"status": "pending"})
            failed = await collection.count_documents({"status": "failed"})
            wipes = await collection.count_documents({"status": "failed", "kind": "wipe"})
            deliveries = await collection.count_documents({"status": "failed", "kind": "deliver"})
            retrying = await collection.count_documents({"status": "pending", "kind": "wipe", "error": {"$ne": ""}})
        return {"pending": pending, "failed": failed, "failed_wipes": wipes, "failed_deliveries": deliveries,
                "retrying_wipes": retrying}

    async def effects_by_kind(self) -> dict[str, dict[str, int]]:
        """Pending and failed effects per kind (for /metrics): one aggregation over the status index."""
        counts: dict[str, dict[str, int]] = {"pending": {}, "failed": {}}
        pipeline: list[Doc] = [{"$match": {"status": {"$in": ["pending", "failed"]}}},
                               {"$group": {"_id": {"status": "$status", "kind": "$kind"}, "n": {"$sum": 1}}}]
        with self._errors("counting effects"):
            cursor = await self._collection("effects").aggregate(pipeline)
            async for doc in cursor:
                counts[str(doc["_id"]["status"])][str(doc["_id"]["kind"])] = int(doc["n"])
        return counts

    async def effects_of(self, request_id: str) -> list[Effect]:
        """Every effect of one request, oldest first."""
        with self._errors("reading effects"):
            cursor = self._collection("effects").find({"request_id": request_id}).sort("_id", ASCENDING)
            return [effect_from_doc({**d, "id": d["_id"]}) async for d in cursor]

    async def _undo(self, request_id: str, version: int, old: Doc) -> None:
        requests = self._collection("requests")
        undone = await requests.update_one({"_id": request_id, "version": version}, {"$set": old})
        if undone.matched_count != 1:
            # Someone moved the request again before we could put it back: say so loudly.
            log.error("audit write failed and the change could not be undone request_id=%s", request_id)

    async def save_refs(self, request_id: str, refs: Mapping[str, Any], expected_version: int) -> bool:
        """Replace the adapter's refs if `refs_version` is still `expected_version`."""
        with self._errors("saving message references"):
            result = await self._collection("requests").update_one(
                {"_id": request_id, "refs_version": expected_version},
                {"$set": {"refs": dict(refs)}, "$inc": {"refs_version": 1}},
            )
        return result.matched_count == 1

    async def due_requests(self, until: datetime) -> list[AccessRequest]:
        """Pending past timeout_at, approved past starts_at, active past ends_at; soonest first."""
        limit = format_time(until)
        query = {"$or": [{"status": status, field: {"$lte": limit}, **_DUE_ONLY.get(status, {})}
                         for status, field in _DUE_FIELDS]}
        due_field = dict(_DUE_FIELDS)
        with self._errors("finding due requests"):
            docs = [d async for d in self._collection("requests").find(query)]
        docs.sort(key=lambda d: (d[due_field[d["status"]]], d.get("created_seq") or 0))
        return [request_from_doc(d) for d in docs]

    async def next_due_at(self) -> datetime | None:
        """The earliest timeout_at / starts_at / ends_at among open requests."""
        found: list[str] = []
        requests = self._collection("requests")
        with self._errors("planning due requests"):
            for status, field in _DUE_FIELDS:
                doc = await requests.find_one(
                    {"status": status, field: {"$type": "string"}, **_DUE_ONLY.get(status, {})}, {field: 1},
                    sort=[(field, ASCENDING)],
                )
                if doc is not None:
                    found.append(doc[field])
        return time_from_doc(min(found)) if found else None

    # -- rate limits --------------------------------------------------------------------------
    async def take_rate_token(self, key: str, count: int, per: timedelta, now: datetime,
                              actor: Identity) -> RateTake:
        """Count one attempt for `key` within its sliding window: one atomic update of its document."""
        with self._errors("a rate-limit check"):
            return await rate_limits.take(self._collection(rate_limits.COLLECTION), key, count, per, now, actor)

    async def end_rate_bursts(self, now: datetime) -> list[RefusalBurst]:
        """Claim the bursts of refusals that are over (one update each) and delete the empty windows."""
        with self._errors("ending rate-limit bursts"):
            return await rate_limits.end_bursts(self._collection(rate_limits.COLLECTION), now)

    # -- home tabs opened ---------------------------------------------------------------------
    async def mark_home_opened(self, platform: str, user_id: str, at: datetime) -> None:
        """Record that `user_id` has opened the app's home tab on `platform`; the first `at` is kept."""
        with self._errors("recording a home tab opened"):
            await home_tabs.mark(self._collection(home_tabs.COLLECTION), platform, user_id, at)

    async def home_openers(self, platform: str, *, since: datetime | None = None) -> set[str]:
        """The users on `platform` with a home-tab marker (only those first recorded at or after `since`)."""
        with self._errors("reading home tabs opened"):
            return await home_tabs.openers(self._collection(home_tabs.COLLECTION), platform, since)

    # -- audit trail --------------------------------------------------------------------------
    async def append_event(self, event: EventDraft) -> Event:
        """Give the event the next sequence number and chain it to the last one."""
        with self._errors("appending an audit event"):
            return await self._append(event, None)

    async def events(
        self,
        *,
        after_seq: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[Event]:
        """Events in sequence order, `since` <= at < `until`, read a page at a time."""
        query: Doc = {}
        at: Doc = {}
        if since is not None:
            at["$gte"] = format_time(since)
        if until is not None:
            at["$lt"] = format_time(until)
        if at:
            query["at"] = at
        if types is not None:
            query["type"] = {"$in": list(types)}
        events = self._collection("events")
        with self._errors("reading the audit checkpoint"):
            checkpoint = await self._checkpoint()
        # Below the checkpoint is purged, even where a batch delete has not reached yet.

        async def page(last: int) -> list[Event]:
            with self._errors("reading audit events"):
                cursor = events.find({**query, "_id": {"$gt": last}}, sort=[("_id", ASCENDING)], limit=EVENTS_PAGE)
                return [event_from_dict(doc) async for doc in cursor]

        async for event in paged_events(page, max(after_seq, checkpoint.seq if checkpoint else 0)):
            yield event

    async def last_event(self) -> Event | None:
        """The newest event, or None."""
        with self._errors("reading audit events"):
            found = await self._collection("events").find_one({}, sort=[("_id", DESCENDING)])
        return event_from_dict(found) if found else None

    async def count_events(self, *, before: datetime | None = None) -> int:
        """How many events there are (older than `before`, when given)."""
        query: Doc = {} if before is None else {"at": {"$lt": format_time(before)}}
        with self._errors("counting audit events"):
            checkpoint = await self._checkpoint()
            if checkpoint is not None:
                query["_id"] = {"$gt": checkpoint.seq}
            return int(await self._collection("events").count_documents(query))

    async def checkpoint(self) -> Checkpoint | None:
        """The chain's starting point after a purge, or None if nothing was ever purged."""
        with self._errors("reading the audit checkpoint"):
            return await self._checkpoint()

    async def check_report_tables(self) -> str:
        """'': reports aggregate the events themselves here; there is no summary table to check."""
        return ""

    async def report_data(self, query: ReportQuery, progress: ProgressCallback | None = None) -> ReportData:
        """Report aggregates through aggregation pipelines on the server."""
        from .reports import report_data

        if self._db is None:
            raise StoreError("the MongoDB store is not open")
        return await report_data(self._db, query, progress)

    async def purge_events(self, before: datetime, event: EventDraft) -> PurgeResult:
        """Move the checkpoint up to `before` (never past the newest event) with its event; then delete below it."""
        events = self._collection("events")
        meta = self._collection("meta")

        async def mark(session: Session) -> PurgeResult:
            old = await self._checkpoint(session)
            floor = old.seq if old else 0
            checkpoint, purged = old, 0
            newest = await events.find_one({}, {"_id": 1}, sort=[("_id", DESCENDING)], session=session)
            if newest is not None:
                # Only a prefix of the chain goes, so the rest verifies from one checkpoint.
                first_kept = await events.find_one(
                    {"_id": {"$gt": floor}, "at": {"$gte": format_time(before)}}, {"_id": 1},
                    sort=[("_id", ASCENDING)], session=session,
                )
                cutoff = purge_cutoff(int(newest["_id"]), None if first_kept is None else int(first_kept["_id"]))
                last = await events.find_one(
                    {"_id": {"$gt": floor, "$lte": cutoff}}, sort=[("_id", DESCENDING)], session=session
                ) if cutoff > floor else None
                if last is not None:
                    checkpoint = Checkpoint(seq=int(last["_id"]), hash=str(last["hash"]),
                                            at=event_from_dict(last).at)
                    purged = int(await events.count_documents(
                        {"_id": {"$gt": floor, "$lte": checkpoint.seq}}, session=session))
                    await meta.update_one(
                        {"_id": CHECKPOINT_KEY}, {"$set": {"value": checkpoint_to_json(checkpoint)}},
                        upsert=True, session=session,
                    )
            try:
                await self._append(purge_draft(event, purged, checkpoint.seq if checkpoint else 0), session)
            except AuditWriteError:
                if session is None and checkpoint is not old:
                    await self._compensate("moving the audit checkpoint", put_back(old))
                raise
            return PurgeResult(purged=purged, checkpoint=checkpoint)

        async def put_back(old: Checkpoint | None) -> None:
            if old is None:
                await meta.delete_one({"_id": CHECKPOINT_KEY})
            else:
                await meta.update_one({"_id": CHECKPOINT_KEY}, {"$set": {"value": checkpoint_to_json(old)}})

        result = await self._unit("purging audit events", mark)
        with self._errors("deleting purged audit events"):
            await self._delete_purged()
        return result

    async def _delete_purged(self) -> None:
        """Delete what lies at or below the checkpoint, a bounded batch at a time (each its own write)."""
        checkpoint = await self._checkpoint()
        if checkpoint is None:
            return
        events = self._collection("events")
        below = {"_id": {"$lte": checkpoint.seq}}
        while True:
            batch = [d["_id"] async for d in events.find(below, {"_id": 1}, sort=[("_id", ASCENDING)],
                                                          limit=self._purge_batch)]
            if not batch:
                return
            await events.delete_many({"_id": {"$gte": batch[0], "$lte": batch[-1]}})
