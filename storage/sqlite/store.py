"""SQLite store on aiosqlite: WAL, numbered migrations, one transaction per unit of work.

Every write that appends an audit event runs inside `BEGIN IMMEDIATE`: the write lock is taken
before the last event is read, so reading (seq, hash) and inserting the next event are atomic even
when several processes share the file. A request transition and its event share that transaction.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from bot.domain.audit import GENESIS_HASH, event_from_dict, event_to_dict, format_time, parse_time, seal_event
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
    effect_from_doc,
    item_from_doc,
    request_from_doc,
    request_to_doc,
    sealed_from_doc,
    sealed_to_doc,
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
from storage.sqlite import home_tabs, rate_limits
from storage.sqlite.schema import FACTS_CREATED_V3, FACTS_FROM_EVENTS_V3, MIGRATIONS, SCHEMA_VERSION

if TYPE_CHECKING:
    from bot.domain.report_data import ProgressCallback, ReportData, ReportQuery

__all__ = ["EVENT_COLUMNS", "MIGRATIONS", "SCHEMA_VERSION", "SqliteStore", "event_row"]



BUSY_TIMEOUT_MS = 10_000

# Request fields kept in their own columns (for indexes and CAS); the rest live in `data`.
_REQUEST_COLUMNS = (
    "id", "status", "item", "vault", "requester_key", "kind", "parent_id", "created_at", "updated_at",
    "timeout_at", "starts_at", "ends_at", "version", "refs_version", "refs", "open_claim", "hold_claim",
)
_ITEM_META_COLUMNS = (
    "name", "vault", "username", "url", "notes", "tags", "has_password", "has_totp", "created_at",
    "updated_at", "password_rotated_at", "rotation_due", "source", "category", "external",
)
_ITEM_COLUMNS = (*_ITEM_META_COLUMNS, "key_id", "wrapped_key", "nonce", "ciphertext")
_ITEM_JSON = ("tags", "rotation_due", "external")
EVENT_COLUMNS = (
    "seq", "id", "at", "type", "actor_platform", "actor_user_id", "actor", "request_id", "item", "vault",
    "reason", "details", "prev_hash", "hash",
)


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


_INSERT_EVENT = _insert_sql("events", EVENT_COLUMNS)
_INSERT_ITEM = _insert_sql("items", _ITEM_COLUMNS)
_UPDATE_ITEM = f"UPDATE items SET {', '.join(f'{c} = ?' for c in _ITEM_COLUMNS[1:])} WHERE name = ?"
_REQUEST_ROW = (*_REQUEST_COLUMNS, "created_seq", "data")
_INSERT_REQUEST = _insert_sql("requests", _REQUEST_ROW)
_UPSERT_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_UPDATABLE = (*_REQUEST_COLUMNS[1:], "data")


@functools.cache
def _update_request_sql(columns: tuple[str, ...], statuses: int) -> str:
    return (f"UPDATE requests SET {', '.join(f'{c} = ?' for c in columns)} "
            f"WHERE id = ? AND version = ? AND status IN ({_placeholders(statuses)})")


def _request_update(before: Mapping[str, Any] | sqlite3.Row,
                    updated: AccessRequest) -> tuple[tuple[str, ...], dict[str, Any], list[Any]]:
    """The columns of `updated`'s row that differ from `before` (the stored row, or the values of the update
    before it), the new values of every column, and the changed ones' values in order. Only those are SET:
    SQLite rewrites the entries of every index on a column an UPDATE names, changed or not (a card's refs
    saved, a grant ended: a request row's nine index entries rewritten for nothing). `updated` comes from
    `apply_changes`, whose version bump means at least one column always differs."""
    new = dict(zip(_REQUEST_ROW, _request_row(updated, 0), strict=True))
    columns = tuple(c for c in _UPDATABLE if before[c] != new[c])
    return columns, new, [new[c] for c in columns]


def _due_where(status: str, extra: Mapping[str, str]) -> str:
    return f"status = '{status}'" + "".join(f" AND {column} = '{value}'" for column, value in extra.items())


_DUE = " UNION ALL ".join(
    f"SELECT *, {field} AS due FROM requests WHERE {_due_where(status, extra)} AND {field} <= :until"
    for status, field, extra in DUE_RULES) + " ORDER BY due, created_seq"
_EFFECT_COLUMNS = (
    "request_id", "platform", "kind", "lane", "payload", "status", "attempts", "due_at", "created_at", "updated_at",
    "error", "lease_owner", "lease_until",
)
_INSERT_EFFECT = _insert_sql("effects", _EFFECT_COLUMNS)
# Due, lease free, and first pending in its lane (a wipe waits for its delivery, a card update for the post).
_CLAIM_EFFECTS = (
    "UPDATE effects SET lease_owner = :owner, lease_until = :lease_until, attempts = attempts + 1, "
    "updated_at = :now WHERE seq IN ("
    "SELECT e.seq FROM effects e{index} WHERE e.status = 'pending' AND e.due_at <= :now{lane} "
    "AND (e.lease_until IS NULL OR e.lease_until <= :now) AND e.platform IN ({platforms}) "
    "AND NOT EXISTS (SELECT 1 FROM effects p WHERE p.request_id = e.request_id AND p.lane = e.lane "
    "AND p.status = 'pending' AND p.seq < e.seq) "
    "ORDER BY e.due_at, e.seq LIMIT :limit) RETURNING *"
)
# The first pass of a claim: deliveries and wipes (the secret lane) before any other effect, whatever their
# due times, through the partial index effects_secret_due (its WHERE is implied by this one's). Named: without
# statistics the planner takes effects_due, which walks every pending effect when none is a secret's.
_CLAIM_SECRET = _CLAIM_EFFECTS.replace("{index}", " INDEXED BY effects_secret_due").replace(
    "{lane}", f" AND e.lane = '{SECRET_LANE}'")
_CLAIM_ANY = _CLAIM_EFFECTS.replace("{index}", "").replace("{lane}", "")
_NEXT_EFFECT = ("SELECT min(max(due_at, coalesce(lease_until, due_at))) FROM effects WHERE status = 'pending' "
                "AND platform IN ({platforms})")
# For the claim's `next_at`: lane heads only. An effect behind another pending one in its lane is claimable
# only when that one ends (which wakes the worker running it); counting its own due time, already past,
# would send the worker straight back to claim nothing until the head ends.
_NEXT_CLAIMABLE = (
    "SELECT min(max(e.due_at, coalesce(e.lease_until, e.due_at))) FROM effects e WHERE e.status = 'pending' "
    "AND e.platform IN ({platforms}) AND NOT EXISTS (SELECT 1 FROM effects p WHERE p.request_id = e.request_id "
    "AND p.lane = e.lane AND p.status = 'pending' AND p.seq < e.seq)"
)
_NEXT_DUE = "SELECT min(due) FROM (" + " UNION ALL ".join(
    f"SELECT min({field}) AS due FROM requests WHERE {_due_where(status, extra)}" for status, field, extra in DUE_RULES
) + ")"


def _claim_rows(conn: sqlite3.Connection, names: Mapping[str, str], params: Mapping[str, Any]) -> list[sqlite3.Row]:
    """Lease up to `params["limit"]` due lane heads: the secret lane's first (deliveries and wipes, through their
    partial index), then the others' in due order. Inside the caller's write transaction."""
    platforms = ", ".join(f":{n}" for n in names)
    rows: list[sqlite3.Row] = conn.execute(_CLAIM_SECRET.format(platforms=platforms), params).fetchall()
    if len(rows) < params["limit"]:  # the first pass's leases are taken: the second cannot lease them again
        rows += conn.execute(_CLAIM_ANY.format(platforms=platforms),
                             {**params, "limit": params["limit"] - len(rows)}).fetchall()
    return rows


def _claim_order(effect: Effect) -> tuple[bool, datetime, int]:
    """The order claimed effects are started in: the secret lane first, then by due time and seq."""
    return effect.kind.lane != SECRET_LANE, effect.due_at, int(effect.id)


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _item_row(sealed: SealedItem) -> tuple[Any, ...]:
    doc = sealed_to_doc(sealed)
    for column in _ITEM_JSON:
        doc[column] = json.dumps(doc[column])
    doc["has_password"] = int(doc["has_password"])
    doc["has_totp"] = int(doc["has_totp"])
    return tuple(doc[c] for c in _ITEM_COLUMNS)


def _item_doc(row: sqlite3.Row) -> dict[str, Any]:
    doc = {key: row[key] for key in row.keys()}  # noqa: SIM118 - sqlite3.Row is not a mapping
    for column in _ITEM_JSON:
        doc[column] = json.loads(doc[column]) if doc[column] is not None else None
    return doc


def _request_row(request: AccessRequest, created_seq: int) -> tuple[Any, ...]:
    doc = request_to_doc(request)
    doc["refs"] = json.dumps(doc["refs"])
    data = json.dumps({k: v for k, v in doc.items() if k not in _REQUEST_COLUMNS})
    return (*(doc[c] for c in _REQUEST_COLUMNS), created_seq, data)


def _request_from_row(row: sqlite3.Row) -> AccessRequest:
    doc: dict[str, Any] = json.loads(row["data"])
    doc.update({c: row[c] for c in _REQUEST_COLUMNS})
    doc["refs"] = json.loads(row["refs"])
    return request_from_doc(doc)


def _effect_from_row(row: sqlite3.Row) -> Effect:
    doc = {key: row[key] for key in row.keys()}  # noqa: SIM118 - sqlite3.Row is not a mapping
    doc["id"] = str(doc.pop("seq"))
    return effect_from_doc(doc)


def event_row(event: Event) -> tuple[Any, ...]:
    """An events-table row in column order EVENT_COLUMNS (benchmarks bulk-load with it too)."""
    doc = event_to_dict(event)
    actor = doc["actor"]
    doc["actor_platform"] = actor["platform"] if actor else None
    doc["actor_user_id"] = actor["user_id"] if actor else None
    doc["actor"] = json.dumps(actor) if actor else None
    doc["details"] = json.dumps(doc["details"], ensure_ascii=False)
    return tuple(doc[c] for c in EVENT_COLUMNS)


def _event_from_row(row: sqlite3.Row) -> Event:
    doc = {c: row[c] for c in EVENT_COLUMNS}
    actor = json.loads(row["actor"]) if row["actor"] else None
    if actor is not None or row["actor_platform"] is not None or row["actor_user_id"] is not None:
        # Reports count by the indexed columns, so they are what the hash must vouch for: the event is
        # rebuilt from them (display from the JSON) and an edit of either copy breaks verification.
        actor = {**(actor or {}), "platform": row["actor_platform"], "user_id": row["actor_user_id"]}
    doc["actor"] = actor
    doc["details"] = json.loads(row["details"])
    return event_from_dict(doc)


def _parse(value: Any) -> datetime:
    return parse_time(str(value))


def _claim_taken(exc: sqlite3.IntegrityError, request: AccessRequest) -> ClaimTaken | None:
    """The unique claim index `exc` names, as the invariant it protects."""
    text = str(exc)
    if "requests.open_claim" in text:
        return ClaimTaken("open", f"{request.requester.label} already has an open request for {request.item}")
    if "requests.hold_claim" in text:
        return ClaimTaken("hold", f"{request.item} is exclusive and already held")
    return None


def _is_corruption(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in {"SQLITE_NOTADB", "SQLITE_CORRUPT"} or (
        "not a database" in str(exc) or "malformed" in str(exc)
    )


def _create_private(path: Path) -> None:
    """Create the database file with mode 0600 (whatever the umask) unless it exists.

    An existing zero-length file is refused, not taken for a new store (a truncated copy or a stray
    `touch` must not silently become an empty trail); another process that created it an instant
    ago gets a moment to write its header.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        for _ in range(40):
            if path.stat().st_size > 0:
                return
            time.sleep(0.025)
        raise StoreError(f"the database file {path} is empty (zero bytes), not a jitpass store: restore it from "
                         "a backup, or remove it to start a new store") from None
    except OSError as exc:
        raise sqlite3.OperationalError(str(exc)) from None
    os.fchmod(fd, 0o600)
    os.close(fd)


@dataclass
class _Unit:
    """A unit of work running on aiosqlite's thread: the raw connection and the chain tail it appends after."""

    conn: sqlite3.Connection
    tail: tuple[int, str] | None  # this process's guess when the unit started; the true tail once it appended
    appended: bool = False


def _read_tail_now(conn: sqlite3.Connection) -> tuple[int, str]:
    """The chain's true tail (the caller holds the write lock), as `SqliteStore._read_tail` on the thread."""
    row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    if row is not None:
        return int(row[0]), str(row[1])
    meta = conn.execute("SELECT value FROM meta WHERE key = ?", (CHECKPOINT_KEY,)).fetchone()
    checkpoint = checkpoint_from_json(str(meta[0]) if meta else None)
    return (checkpoint.seq, checkpoint.hash) if checkpoint else (0, GENESIS_HASH)


def _supersede_sql(n: int) -> str:
    return ("UPDATE effects SET status = 'dropped', error = 'superseded', updated_at = ? WHERE request_id IN "
            f"({_placeholders(n)}) AND kind = 'update_card' AND status = 'pending' "
            "AND (lease_until IS NULL OR lease_until <= ?)")


def _effect_rows(batch: Sequence[tuple[AccessRequest, Sequence[EffectDraft]]], now: datetime) -> list[tuple[Any, ...]]:
    return [tuple(json.dumps(doc[c]) if c == "payload" else doc[c] for c in _EFFECT_COLUMNS)
            for request, effects in batch for doc in effect_docs(request.id, request.platform, effects, now)]


_SETTLE_EFFECT = (
    "UPDATE effects SET status = ?, error = ?, due_at = coalesce(?, due_at), lease_owner = NULL, "
    "lease_until = NULL, updated_at = ? WHERE seq = ? AND lease_owner = ? AND status = 'pending'"
)


class SqliteStore:
    """Store on one SQLite file; safe to share between processes on one host."""

    kind = "sqlite"

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = Path(path)
        self._clock = clock
        self._conn: aiosqlite.Connection | None = None
        # aiosqlite runs one connection's statements in order, but coroutines could interleave
        # their statements inside each other's transactions: one unit of work at a time.
        self._lock = asyncio.Lock()
        self._schema_version = 0
        # (seq, hash) of the last event this process committed: a guess, checked by the seq key.
        self._tail: tuple[int, str] | None = None
        self._pending_tail: tuple[int, str] | None = None
        # The scheduler's and effects worker's store: the same file on a second connection (`background`).
        self._background: SqliteStore | None = None
        self._is_background = False
        self._opens_lazily = False  # a background store until it is closed
        self.inline_fallbacks = 0  # inline work that met a lock and ran on aiosqlite's thread instead

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the file (creating it if needed), switch to WAL and apply pending migrations."""
        if self._conn is not None:
            return
        if not self.path.parent.is_dir():
            raise StoreError(f"cannot create the database file {self.path}: its directory does not exist")
        try:
            # The file holds names, usernames, URLs, reasons and the whole trail: owner-only. SQLite
            # gives the -wal and -shm files the main file's mode, so creating it 0600 covers all three.
            _create_private(self.path)
            # isolation_level=None: the sqlite3 module opens no transactions; `_write` does, explicitly.
            # check_same_thread=False: small units also run on the event loop's thread (`_inline`), never
            # at the same time as aiosqlite's thread: every use of the connection holds `_lock`.
            conn = await aiosqlite.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database file {self.path}: {exc}") from None
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA journal_mode = WAL")
            # With WAL, NORMAL loses no committed data on a process crash; only an OS crash may drop
            # the last transactions. That buys an order of magnitude in appends per second.
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            self._schema_version = await self._migrate(conn)
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._open_error(exc) from None
            raise
        self._conn = conn
        if self._background is not None:  # re-opened after a close: the background store may open again
            self._background._opens_lazily = True

    def _open_error(self, exc: sqlite3.Error) -> StoreError:
        if _is_corruption(exc):
            return StoreError(
                f"the database file {self.path} is not a valid jitpass store ({exc}); restore it from a "
                "backup, or move it aside to start with an empty store"
            )
        return StoreError(f"cannot open the database file {self.path}: {exc}")

    async def _migrate(self, conn: aiosqlite.Connection) -> int:
        # IMMEDIATE: two processes starting together must not both apply the same step.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            rows = await conn.execute_fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
            tables = {str(r[0]) for r in rows}
            if "schema_version" not in tables:
                if {t for t in tables if not t.startswith("sqlite_")}:
                    raise StoreError(
                        f"the database file {self.path} is not a valid jitpass store (it holds other tables "
                        "but no jitpass schema); point JITPASS_STORE at another file"
                    )
                await conn.execute(
                    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
            versions = list(await conn.execute_fetchall("SELECT max(version) FROM schema_version"))
            current = int(versions[0][0] or 0)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the database file {self.path} was written by a newer jitpass (schema version "
                    f"{current}; this version knows up to {SCHEMA_VERSION}): upgrade jitpass"
                )
            for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in step:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (number, format_time(self._clock.now())),
                )
        except BaseException:
            with suppress(sqlite3.Error):  # a corrupt file may refuse even this; report the first error
                await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        return max(current, SCHEMA_VERSION)

    def background(self) -> SqliteStore:
        """The same file on a second connection (opened on first use, closed with this store): due work and
        chat effects then never wait behind request handling in this process's one-connection queue."""
        if self._is_background:
            return self
        if self._background is None:
            self._background = SqliteStore(self.path, self._clock)
            self._background._is_background = self._background._opens_lazily = True
        return self._background

    async def _open_if_lazy(self) -> None:
        if self._conn is None and self._opens_lazily:
            async with self._lock:
                if self._conn is None:
                    await self.open()

    async def close(self) -> None:
        """Close the connection (and the background one); safe to call twice."""
        self._opens_lazily = False  # closed for good: no lazy re-open by a late worker
        if self._background is not None:
            await self._background.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            async with self._lock:
                await conn.close()

    async def describe(self) -> dict[str, Any]:
        """Kind, schema version, file and the last event's sequence number."""
        last = await self.last_event()
        return {
            "kind": self.kind,
            "schema_version": self._schema_version,
            "path": str(self.path),
            "last_seq": last.seq if last else 0,
        }

    async def check_write(self, timeout: float) -> None:
        """A real write on a connection of its own: `_lock` would queue it behind our other writes."""
        now = format_time(self._clock.now())

        def write() -> None:
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_UPSERT_META, ("health_check", now))
                conn.execute("COMMIT")
            finally:
                conn.close()

        try:
            await asyncio.wait_for(asyncio.to_thread(write), timeout + 1)
        except TimeoutError:
            raise StoreError(f"the SQLite store at {self.path} took no write within {timeout:g}s") from None
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    # -- plumbing -----------------------------------------------------------------------------
    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreError("the SQLite store is not open")
        return self._conn

    @asynccontextmanager
    async def _write(self, *, begin: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """One IMMEDIATE transaction: committed when the block ends, rolled back on any error.

        `begin=False` is for a block of one statement, which SQLite runs as its own transaction.
        """
        await self._open_if_lazy()
        async with self._lock:
            conn = self._connection()
            if begin:
                try:
                    await conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise self._error(exc) from None
                except BaseException:
                    # Cancelled while BEGIN ran on aiosqlite's thread (a shutdown, a timeout): it may have
                    # begun. Left open, the transaction would hold the write lock of every other connection
                    # to the file (the shutdown checkpoint then failed with "database is locked").
                    await self._rollback(conn)
                    raise
            try:
                yield conn
                if conn.in_transaction:
                    await conn.execute("COMMIT")
            except BaseException as exc:
                self._pending_tail = None
                self._tail = None  # unknown after a rollback: read it again next time
                if conn.in_transaction:
                    # Cancelled mid-COMMIT, the transaction may end before ROLLBACK runs: keep the first error.
                    await self._rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc) from None
                raise
            if self._pending_tail is not None:
                self._tail, self._pending_tail = self._pending_tail, None

    @staticmethod
    async def _rollback(conn: aiosqlite.Connection) -> None:
        """ROLLBACK whatever this connection has begun, even if the task is cancelled again meanwhile
        (aiosqlite runs it after the statement in flight; "no transaction is active" is fine)."""
        with suppress(sqlite3.Error):
            await asyncio.shield(conn.execute("ROLLBACK"))

    async def _read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *,
                    inline: bool = False) -> list[sqlite3.Row]:
        """The rows of one query. `inline`: a point read (by key, or an indexed LIMIT 1) that may run on the
        event loop's thread (`_inline`); a read of unbounded size always runs on aiosqlite's thread."""
        await self._open_if_lazy()
        async with self._lock:
            conn = self._connection()
            try:
                if inline:
                    return await self._inline(conn, lambda: conn._conn.execute(sql, params).fetchall())
                return list(await conn.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    async def _inline[T](self, conn: aiosqlite.Connection, work: Callable[[], T]) -> T:
        """`work` (statements on the raw connection, no await) run on the event loop's thread, without the
        hand-off to aiosqlite's thread: that hand-off (queue, thread wake-up, GIL switch, the loop's
        self-pipe) costs ~75 us of CPU, 8x a small unit's own work. The caller holds `_lock`, so aiosqlite's
        thread is idle for this connection.

        The loop must never wait on a lock: with a busy timeout of 0 a write lock held by another connection
        (this process's other one, another process) or a WAL being recovered answers SQLITE_BUSY at once, and
        then `work` runs again on aiosqlite's thread with the usual busy timeout. SQLite has begun nothing
        when it answers BUSY at BEGIN or at a read; a unit that raises rolls back before it is retried.
        SQLite's own automatic checkpoint stays on (every 1,000 WAL pages, PASSIVE, inside the commit that
        crosses it): a checkpoint kept off the commits fell behind under a backlog, and a WAL of millions of
        frames made every page read slow (the start-up benchmark's wipes stalled).
        """
        raw = conn._conn
        raw.execute("PRAGMA busy_timeout = 0")
        try:
            return work()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
        finally:
            raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.inline_fallbacks += 1
        # aiosqlite has no public call for "run this function on the connection's thread"; `_execute` is what
        # each of its own methods uses.
        run: Callable[[Callable[[], T]], Awaitable[T]] = conn._execute
        return await run(work)

    async def _unit[T](self, work: Callable[[_Unit], T], *, inline: bool = True) -> T:
        """`work` as one IMMEDIATE transaction run whole in one go: on the event loop's thread when the write
        lock is free, else on aiosqlite's thread (`_inline`), instead of one awaited round trip per statement
        (BEGIN, each INSERT/UPDATE, COMMIT). Committed when `work` returns, rolled back when it raises;
        `work` must not await.

        Run on aiosqlite's thread, the unit cannot interleave with other statements of this connection even if
        the awaiting task is cancelled (then the unit still completes or rolls back on the thread, and the
        tail is read afresh next time).
        """
        await self._open_if_lazy()
        async with self._lock:
            conn = self._connection()
            tail = self._tail
            unit = _Unit(conn._conn, tail)  # the raw sqlite3 connection, only ever used holding `_lock`

            def transaction() -> T:
                unit.tail, unit.appended = tail, False  # afresh when retried on the thread after a BUSY
                unit.conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(unit)
                    unit.conn.execute("COMMIT")
                except BaseException:
                    if unit.conn.in_transaction:
                        with suppress(sqlite3.Error):  # keep the first error
                            unit.conn.execute("ROLLBACK")
                    raise
                return result

            try:
                if inline:
                    result = await self._inline(conn, transaction)
                else:
                    run: Callable[[Callable[[], T]], Awaitable[T]] = conn._execute
                    result = await run(transaction)
            except BaseException as exc:
                self._tail = None  # unknown after a rollback (or a cancelled wait): read it again next time
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc) from None
                raise
            if unit.appended:
                self._tail = unit.tail
            return result

    def _append_now(self, unit: _Unit, drafts: Sequence[EventDraft]) -> Event | None:
        """Chain `drafts` inside `unit` (on the thread), as `_append`/`_append_many` do; the last event.

        With the tail this process last wrote, the first INSERT is made right after it; the seq primary
        key checks that guess, and when another process appended since, the true tail is read (the unit
        holds the write lock) and the events are sealed again after it.
        """
        if not drafts:
            return None
        try:
            for guessed in (True, False):
                if guessed and unit.tail is None:
                    continue
                seq, prev_hash = unit.tail if guessed and unit.tail is not None else _read_tail_now(unit.conn)
                sealed: list[Event] = []
                for draft in drafts:
                    event = seal_event(draft, seq=seq + 1, prev_hash=prev_hash, at=self._clock.now())
                    sealed.append(event)
                    seq, prev_hash = event.seq, event.hash
                try:
                    unit.conn.executemany(_INSERT_EVENT, [event_row(e) for e in sealed])
                except sqlite3.IntegrityError as exc:
                    if not guessed or "events.seq" not in str(exc):
                        raise
                    continue  # another process appended since: seal again after the true tail
                unit.tail, unit.appended = (seq, prev_hash), True
                return sealed[-1]
        except sqlite3.Error as exc:
            what = f"the audit event {drafts[0].type}" if len(drafts) == 1 else \
                f"{len(drafts)} audit events ({drafts[0].type}, ...)"
            raise AuditWriteError(f"{what} could not be written ({exc}); nothing was changed") from None
        raise AssertionError("unreachable: the second pass reads the true tail")

    def _add_effects_now(self, unit: _Unit, batch: Sequence[tuple[AccessRequest, Sequence[EffectDraft]]]) -> None:
        """`_add_effects_many` inside `unit` (on the thread)."""
        for sql, params, many in self._effect_statements(batch):
            (unit.conn.executemany if many else unit.conn.execute)(sql, params)

    def _effect_statements(self, batch: Sequence[tuple[AccessRequest, Sequence[EffectDraft]]]
                           ) -> list[tuple[str, Any, bool]]:
        """The statements adding several requests' effects: an UPDATE per 500 requests whose pending card
        updates are superseded, then one insert batch (`many`: run with executemany)."""
        batch = [(r, e) for r, e in batch if e]
        if not batch:
            return []
        now = self._clock.now()
        at = format_time(now)
        superseding = sorted({r.id for r, e in batch if supersedes(e)})
        statements: list[tuple[str, Any, bool]] = [
            (_supersede_sql(len(chunk)), (at, *chunk, at), False)
            for chunk in (superseding[start:start + 500] for start in range(0, len(superseding), 500))]
        statements.append((_INSERT_EFFECT, _effect_rows(batch, now), True))
        return statements

    def _error(self, exc: sqlite3.Error) -> StoreError:
        if _is_corruption(exc):
            return self._open_error(exc)
        return StoreError(f"the SQLite store at {self.path} refused the operation: {exc}")

    async def _read_tail(self, conn: aiosqlite.Connection) -> tuple[int, str]:
        rows = list(await conn.execute_fetchall("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"))
        if rows:
            return int(rows[0][0]), str(rows[0][1])
        # Only after every event was deleted by hand: keep counting from the checkpoint.
        checkpoint = checkpoint_from_json(await self._meta(conn, CHECKPOINT_KEY))
        return (checkpoint.seq, checkpoint.hash) if checkpoint else (0, GENESIS_HASH)

    async def _append(self, conn: aiosqlite.Connection, draft: EventDraft) -> Event:
        """Chain `draft` to the last event, inside the caller's unit of work.

        When this process wrote the last event it remembers (seq, hash) and inserts right after it.
        The seq primary key checks that guess: had another process appended since, seq + 1 is taken
        and the INSERT fails; then, holding the write lock (BEGIN IMMEDIATE), it reads the true tail
        and inserts again. Outside a transaction the guessed INSERT is a single statement, which
        SQLite runs as its own write transaction (taking the lock, honouring busy_timeout) and the
        whole append costs one round trip to aiosqlite's thread instead of four.
        """
        event: Event | None = None
        try:
            if self._tail is not None:
                event = seal_event(draft, seq=self._tail[0] + 1, prev_hash=self._tail[1], at=self._clock.now())
                try:
                    await conn.execute(_INSERT_EVENT, event_row(event))
                except sqlite3.IntegrityError as exc:
                    if "events.seq" not in str(exc):
                        raise
                    event = None  # another process appended since: fall through to the locked read
            if event is None:
                if not conn.in_transaction:
                    await conn.execute("BEGIN IMMEDIATE")
                seq, prev_hash = await self._read_tail(conn)
                event = seal_event(draft, seq=seq + 1, prev_hash=prev_hash, at=self._clock.now())
                await conn.execute(_INSERT_EVENT, event_row(event))
        except sqlite3.Error as exc:
            raise AuditWriteError(
                f"the audit event {draft.type} could not be written ({exc}); nothing was changed"
            ) from None
        self._pending_tail = (event.seq, event.hash)
        return as_recorded(event)

    @staticmethod
    async def _meta(conn: aiosqlite.Connection, key: str) -> str | None:
        rows = list(await conn.execute_fetchall("SELECT value FROM meta WHERE key = ?", (key,)))
        return str(rows[0][0]) if rows else None

    # -- metadata -----------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None:
        """The value stored under `key`, or None."""
        rows = await self._read("SELECT value FROM meta WHERE key = ?", (key,), inline=True)
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        """Store `value` under `key`, replacing any previous value."""
        async with self._write() as conn:
            await conn.execute(_UPSERT_META, (key, value))

    # -- items --------------------------------------------------------------------------------
    async def add_items(self, sealed: Sequence[SealedItem], events: Sequence[EventDraft]) -> None:
        """Insert all items and their events, or none: Conflict if any name exists."""
        async with self._write() as conn:
            for one in sealed:
                try:
                    await conn.execute(_INSERT_ITEM, _item_row(one))
                except sqlite3.IntegrityError:
                    raise Conflict(f"an item named {one.item.name!r} already exists") from None
            for draft in events:
                await self._append(conn, draft)

    async def replace_item(self, sealed: SealedItem, event: EventDraft | None) -> None:
        """Overwrite an existing item (metadata and ciphertext). NotFound if absent."""
        async with self._write() as conn:
            row = _item_row(sealed)
            cursor = await conn.execute(_UPDATE_ITEM, (*row[1:], row[0]))
            if cursor.rowcount != 1:
                raise NotFound(f"no item named {sealed.item.name!r}")
            if event is not None:
                await self._append(conn, event)

    async def rewrap_items(self, sealed: Sequence[SealedItem], event: EventDraft) -> None:
        """Replace key material of many items at once (key rotation), all or nothing."""
        async with self._write() as conn:
            for one in sealed:
                cursor = await conn.execute(
                    "UPDATE items SET key_id = ?, wrapped_key = ?, nonce = ?, ciphertext = ? WHERE name = ?",
                    (one.key_id, one.wrapped_key, one.nonce, one.ciphertext, one.item.name),
                )
                if cursor.rowcount != 1:
                    raise NotFound(f"no item named {one.item.name!r}")
            await self._append(conn, event)

    async def remove_item(self, name: str, event: EventDraft) -> None:
        """Delete an item. NotFound if absent."""
        async with self._write() as conn:
            cursor = await conn.execute("DELETE FROM items WHERE name = ?", (name,))
            if cursor.rowcount != 1:
                raise NotFound(f"no item named {name!r}")
            await self._append(conn, event)

    async def get_item(self, name: str) -> SealedItem | None:
        """The item with its sealed secret, or None."""
        rows = await self._read(f"SELECT {', '.join(_ITEM_COLUMNS)} FROM items WHERE name = ?", (name,), inline=True)
        return sealed_from_doc(_item_doc(rows[0])) if rows else None

    async def list_items(self) -> list[Item]:
        """Every item's metadata, sorted by name."""
        rows = await self._read(f"SELECT {', '.join(_ITEM_META_COLUMNS)} FROM items ORDER BY name")
        return [item_from_doc(_item_doc(r)) for r in rows]

    async def list_sealed_items(self) -> list[SealedItem]:
        """Every item with its sealed secret, sorted by name."""
        rows = await self._read(f"SELECT {', '.join(_ITEM_COLUMNS)} FROM items ORDER BY name")
        return [sealed_from_doc(_item_doc(r)) for r in rows]

    # -- requests -----------------------------------------------------------------------------
    async def create_request(self, request: AccessRequest, event: EventDraft,
                             effects: Sequence[EffectDraft] = (), *, lease: EffectLease | None = None) -> list[Effect]:
        """Insert a new request, its `request.created` event and its effects (those `lease` leases, leased);
        Conflict if the id exists. The effects leased."""

        def create(unit: _Unit) -> list[Effect]:  # one transaction (`_unit`)
            recorded = self._append_now(unit, [event])
            assert recorded is not None
            try:
                # The creating event's seq orders requests created in the same microsecond.
                unit.conn.execute(_INSERT_REQUEST, _request_row(request, recorded.seq))
            except sqlite3.IntegrityError as exc:
                raise _claim_taken(exc, request) or Conflict(f"a request with id {request.id} already exists") \
                    from None
            if lease is None:
                self._add_effects_now(unit, [(request, effects)])
                return []
            for sql, params, _many in self._effect_statements([(request, effects)])[:-1]:  # superseding
                unit.conn.execute(sql, params)
            docs = effect_docs(request.id, request.platform, effects, self._clock.now())
            leased = {id(doc) for doc in lease_new_effects(docs, lease)}
            out = []
            for doc in docs:  # one by one: each leased effect's id is its row's seq
                row = tuple(json.dumps(doc[c]) if c == "payload" else doc[c] for c in _EFFECT_COLUMNS)
                seq = unit.conn.execute(_INSERT_EFFECT, row).lastrowid
                if id(doc) in leased:
                    out.append(effect_from_doc({**doc, "id": str(seq)}))
            return out

        return await self._unit(create)

    async def get_request(self, request_id: str) -> AccessRequest | None:
        """The request with this id, or None."""
        rows = await self._read("SELECT * FROM requests WHERE id = ?", (request_id,), inline=True)
        return _request_from_row(rows[0]) if rows else None

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
        where: list[str] = []
        params: list[Any] = []
        if requester is not None:
            where.append("requester_key = ?")
            params.append(requester.key)
        if statuses is not None:
            if not statuses:
                return []
            where.append(f"status IN ({_placeholders(len(statuses))})")
            params.extend(Status(s).value for s in statuses)
        if item is not None:
            where.append("item = ?")
            params.append(item)
        if parent_id is not None:
            where.append("parent_id = ?")
            params.append(parent_id)
        if parent_ids is not None:
            if not parent_ids:
                return []
            where.append(f"parent_id IN ({_placeholders(len(parent_ids))})")
            params.extend(sorted(parent_ids))
        if kind is not None:
            where.append("kind = ?")
            params.append(kind.value)
        sql = "SELECT * FROM requests"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, created_seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_request_from_row(r) for r in await self._read(sql, params)]

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
        """Compare-and-set on status (and version); the change, its event and its effects commit together."""
        statuses = [Status(s).value for s in from_statuses]
        if not statuses:
            return None
        async with self._write() as conn:
            rows = list(await conn.execute_fetchall("SELECT * FROM requests WHERE id = ?", (request_id,)))
            if not rows:
                return None
            current = _request_from_row(rows[0])
            if not cas_allows(current, statuses, expected_version):
                return None
            updated = apply_changes(current, changes, self._clock.now())
            columns, _, values = _request_update(rows[0], updated)
            try:
                cursor = await conn.execute(_update_request_sql(columns, len(statuses)),
                                            (*values, request_id, current.version, *statuses))
            except sqlite3.IntegrityError as exc:
                raise _claim_taken(exc, updated) or self._error(exc) from None
            # The write lock makes a lost race impossible here; the check keeps CAS honest regardless.
            if cursor.rowcount != 1:
                return None
            if event is not None:
                await self._append(conn, event)
            await self._add_effects(conn, updated, effects)
        return updated

    async def transition_many(self, drafts: Sequence[TransitionDraft]) -> list[AccessRequest | None]:
        """Every draft's compare-and-set in one IMMEDIATE transaction, in a handful of statements: one read
        of the requests, one UPDATE per row (executemany), the events chained in order (executemany), the
        effects (executemany). A burst of 200 expiries is one commit instead of 200."""
        if not drafts:
            return []
        now = self._clock.now()
        results: list[AccessRequest | None] = []
        async with self._write() as conn:
            ids = sorted({d.request_id for d in drafts})
            current: dict[str, AccessRequest] = {}
            # Each row's column values as they stand before its UPDATE.
            stored: dict[str, Mapping[str, Any] | sqlite3.Row] = {}
            for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                chunk = ids[start:start + 500]
                rows = await conn.execute_fetchall(
                    f"SELECT * FROM requests WHERE id IN ({_placeholders(len(chunk))})", chunk)
                current |= {str(r["id"]): _request_from_row(r) for r in rows}
                stored |= {str(r["id"]): r for r in rows}
            updates: list[tuple[tuple[str, ...], tuple[Any, ...]]] = []
            events: list[EventDraft] = []
            effects: list[tuple[AccessRequest, Sequence[EffectDraft]]] = []
            for draft in drafts:
                before = current.get(draft.request_id)
                statuses = [Status(x).value for x in draft.from_statuses]
                if before is None or not statuses or not cas_allows(before, statuses, draft.expected_version):
                    results.append(None)
                    continue
                updated = apply_changes(before, draft.changes, now)
                current[draft.request_id] = updated  # a second draft for the same request sees this one
                columns, stored[draft.request_id], values = _request_update(stored[draft.request_id], updated)
                updates.append((columns, (*values, before.id, before.version, before.status.value)))
                if draft.event is not None:
                    events.append(draft.event)
                if draft.effects:
                    effects.append((updated, draft.effects))
                results.append(updated)
            # One executemany per run of updates that change the same columns (a batch of expiries: one), in
            # order: a second draft for the same request must follow the first.
            for columns, run in itertools.groupby(updates, key=lambda u: u[0]):
                params = [values for _, values in run]
                try:
                    cursor = await conn.executemany(_update_request_sql(columns, 1), params)
                except sqlite3.IntegrityError as exc:
                    raise self._error(exc) from None
                # Under the write lock nothing can move a row between the read and the UPDATE.
                if cursor.rowcount != len(params):
                    raise StoreError(f"the SQLite store at {self.path} changed under a batch of transitions")
            await self._append_many(conn, events)
            await self._add_effects_many(conn, effects)
        return results

    async def _append_many(self, conn: aiosqlite.Connection, drafts: Sequence[EventDraft]) -> None:
        """Chain `drafts` after the true tail (the caller holds the write lock) in one statement."""
        if not drafts:
            return
        try:
            seq, prev_hash = await self._read_tail(conn)
            sealed: list[Event] = []
            for draft in drafts:
                event = seal_event(draft, seq=seq + 1, prev_hash=prev_hash, at=self._clock.now())
                sealed.append(event)
                seq, prev_hash = event.seq, event.hash
            await conn.executemany(_INSERT_EVENT, [event_row(e) for e in sealed])
        except sqlite3.Error as exc:
            raise AuditWriteError(
                f"{len(drafts)} audit events ({drafts[0].type}, ...) could not be written ({exc}); nothing was changed"
            ) from None
        self._pending_tail = (seq, prev_hash)

    async def _add_effects(self, conn: aiosqlite.Connection, request: AccessRequest,
                           effects: Sequence[EffectDraft]) -> None:
        await self._add_effects_many(conn, [(request, effects)])

    async def _add_effects_many(self, conn: aiosqlite.Connection,
                                batch: Sequence[tuple[AccessRequest, Sequence[EffectDraft]]]) -> None:
        """The effects of several requests: one UPDATE for the superseded card updates, one insert batch."""
        for sql, params, many in self._effect_statements(batch):
            await (conn.executemany if many else conn.execute)(sql, params)

    # -- durable chat effects -----------------------------------------------------------------
    async def claim_effects(self, now: datetime, owner: str, lease_until: datetime, *, platforms: Collection[str],
                            limit: int) -> list[Effect]:
        """Lease due effects (first pending in their lane, lease free) to `owner`."""
        if not platforms or limit <= 0:
            return []
        names = {f"p{i}": p for i, p in enumerate(sorted(platforms))}
        params = {"owner": owner, "lease_until": format_time(lease_until), "now": format_time(now),
                  "limit": limit, **names}
        rows = await self._unit(lambda unit: _claim_rows(unit.conn, names, params), inline=False)
        return sorted(map(_effect_from_row, rows), key=_claim_order)

    async def claim_effects_with_rows(self, now: datetime, owner: str, lease_until: datetime, *,
                                      platforms: Collection[str], limit: int) -> ClaimBatch:
        """`claim_effects` with each effect's request and item rows and, for a short batch, `next_effect_at`:
        one unit on aiosqlite's thread (one hand-off) instead of four or more."""
        if not platforms or limit <= 0:
            return ClaimBatch([])
        names = {f"p{i}": p for i, p in enumerate(sorted(platforms))}
        params = {"owner": owner, "lease_until": format_time(lease_until), "now": format_time(now),
                  "limit": limit, **names}
        next_sql = _NEXT_CLAIMABLE.format(platforms=", ".join(f":{n}" for n in names))

        def claim(unit: _Unit) -> tuple[list[sqlite3.Row], list[sqlite3.Row], list[sqlite3.Row], Any]:
            rows = _claim_rows(unit.conn, names, params)
            # Rows are read inside the claim's write transaction: what each effect is run with is the state
            # committed before the claim, exactly as a read right after it would see.
            request_ids = sorted({str(r["request_id"]) for r in rows})
            requests = unit.conn.execute(f"SELECT * FROM requests WHERE id IN ({_placeholders(len(request_ids))})",
                                         request_ids).fetchall() if request_ids else []
            item_names = sorted({str(r["item"]) for r in requests})
            items = unit.conn.execute(
                f"SELECT {', '.join(_ITEM_META_COLUMNS)} FROM items WHERE name IN ({_placeholders(len(item_names))})",
                item_names).fetchall() if item_names else []
            nxt = unit.conn.execute(next_sql, names).fetchone()[0] if len(rows) < limit else None
            return rows, requests, items, nxt

        # On aiosqlite's thread: a claim scans the pending effects (under a backlog, tens of thousands), work
        # the loop must not hold still for; the request path's own effects are leased as written, no claim.
        rows, request_rows, item_rows, nxt = await self._unit(claim, inline=False)
        requests = {r.id: r for r in map(_request_from_row, request_rows)}
        items = {i.name: i for i in (item_from_doc(_item_doc(r)) for r in item_rows)}
        effects = sorted(map(_effect_from_row, rows), key=_claim_order)
        claimed = []
        for effect in effects:
            request = requests.get(effect.request_id)
            claimed.append(Claimed(effect, request, items.get(request.item) if request is not None else None))
        return ClaimBatch(claimed, None if nxt is None else _parse(nxt))

    async def settle_effect(self, effect: Effect, owner: str, outcome: EffectOutcome) -> bool:
        """Record an attempt's outcome while `owner` holds the lease, with its event, refs and follow-ups."""
        return (await self.settle_effects([(effect, outcome)], owner))[0]

    async def settle_effects(self, settled: Sequence[tuple[Effect, EffectOutcome]], owner: str) -> list[bool]:
        """Record outcomes while `owner` holds their leases, with events, refs and follow-ups: one transaction."""
        if not settled:
            return []
        now = self._clock.now()

        def settle(unit: _Unit) -> list[bool]:  # one transaction, one hand-off to the thread (`_unit`)
            kept: list[bool] = []
            events: list[EventDraft] = []
            for effect, outcome in settled:
                retry_at = outcome.retry_at if outcome.status is EffectStatus.PENDING else None
                cursor = unit.conn.execute(_SETTLE_EFFECT, (
                    outcome.status.value, outcome.error[:500], format_time(retry_at) if retry_at else None,
                    format_time(now), int(effect.id), owner))
                kept.append(cursor.rowcount == 1)
                if cursor.rowcount != 1:
                    continue  # the lease ran out and another worker took it over
                if outcome.refs or outcome.revealed or outcome.follow_ups:
                    row = unit.conn.execute("SELECT * FROM requests WHERE id = ?", (effect.request_id,)).fetchone()
                    current = _request_from_row(row) if row is not None else None
                    if current is not None:
                        changes = settled_changes(current, outcome)
                        if changes:
                            updated = apply_changes(current, changes, now)
                            columns, _, values = _request_update(row, updated)
                            unit.conn.execute(_update_request_sql(columns, 1),
                                              (*values, current.id, current.version, current.status.value))
                        if outcome.follow_ups:
                            self._add_effects_now(unit, [(current, outcome.follow_ups)])
                events += [e for e in (outcome.event, outcome.alert) if e is not None]
            self._append_now(unit, events)
            return kept

        return await self._unit(settle, inline=len(settled) <= 4)  # a batch of many: on the thread

    async def renew_leases(self, owner: str, lease_until: datetime) -> int:
        """Extend every lease `owner` holds on a pending effect."""
        async with self._write(begin=False) as conn:
            cursor = await conn.execute(
                "UPDATE effects SET lease_until = ? WHERE lease_owner = ? AND status = 'pending'",
                (format_time(lease_until), owner))
            return int(cursor.rowcount)

    async def next_effect_at(self, platforms: Collection[str]) -> datetime | None:
        """When the earliest pending effect is due, or its lease runs out."""
        if not platforms:
            return None
        rows = await self._read(_NEXT_EFFECT.format(platforms=_placeholders(len(platforms))),
                                tuple(sorted(platforms)))
        value = rows[0][0] if rows else None
        return None if value is None else _parse(value)

    async def effect_counts(self) -> dict[str, int]:
        """Pending effects, failed ones, failed wipes (an alert: a secret may still be on screen), deliveries
        that failed for good, and wipes waiting to be tried again after a failed attempt."""
        rows = await self._read(
            "SELECT sum(status = 'pending'), sum(status = 'failed'), sum(status = 'failed' AND kind = 'wipe'), "
            "sum(status = 'failed' AND kind = 'deliver'), sum(status = 'pending' AND kind = 'wipe' AND error != '') "
            "FROM effects")
        pending, failed, wipes, deliveries, retrying = rows[0] if rows else (0, 0, 0, 0, 0)
        return {"pending": int(pending or 0), "failed": int(failed or 0), "failed_wipes": int(wipes or 0),
                "failed_deliveries": int(deliveries or 0), "retrying_wipes": int(retrying or 0)}

    async def effects_by_kind(self) -> dict[str, dict[str, int]]:
        """Pending and failed effects per kind (for /metrics): one grouped read over the status index."""
        rows = await self._read("SELECT status, kind, count(*) FROM effects WHERE status IN ('pending', 'failed') "
                                "GROUP BY status, kind")
        counts: dict[str, dict[str, int]] = {"pending": {}, "failed": {}}
        for status, kind, n in rows:
            counts[str(status)][str(kind)] = int(n)
        return counts

    async def effects_of(self, request_id: str) -> list[Effect]:
        """Every effect of one request, oldest first."""
        rows = await self._read("SELECT * FROM effects WHERE request_id = ? ORDER BY seq", (request_id,))
        return [_effect_from_row(r) for r in rows]

    async def save_refs(self, request_id: str, refs: Mapping[str, Any], expected_version: int) -> bool:
        """Replace the adapter's refs if `refs_version` is still `expected_version`."""
        async with self._write() as conn:
            cursor = await conn.execute(
                "UPDATE requests SET refs = ?, refs_version = refs_version + 1 "
                "WHERE id = ? AND refs_version = ?",
                (json.dumps(dict(refs)), request_id, expected_version),
            )
            return bool(cursor.rowcount == 1)

    async def due_requests(self, until: datetime) -> list[AccessRequest]:
        """Pending past timeout_at, approved past starts_at, active past ends_at; soonest first."""
        rows = await self._read(_DUE, {"until": format_time(until)})
        return [_request_from_row(r) for r in rows]

    async def next_due_at(self) -> datetime | None:
        """The earliest timeout_at / starts_at / ends_at among open requests."""
        rows = await self._read(_NEXT_DUE, inline=True)
        value = rows[0][0] if rows else None
        return None if value is None else _parse(value)

    # -- rate limits --------------------------------------------------------------------------
    async def take_rate_token(self, key: str, count: int, per: timedelta, now: datetime,
                              actor: Identity) -> RateTake:
        """Count one attempt for `key` within its sliding window; read and write under one write lock, as one
        unit on aiosqlite's thread (one hand-off instead of BEGIN, SELECT, UPSERT, COMMIT)."""
        return await self._unit(lambda unit: rate_limits.take(unit.conn, key, count, per, now, actor))

    async def end_rate_bursts(self, now: datetime) -> list[RefusalBurst]:
        """Claim the bursts of refusals that are over and delete the empty windows, in one transaction."""
        async with self._write() as conn:
            return await rate_limits.end_bursts(conn, now)

    # -- home tabs opened ---------------------------------------------------------------------
    async def mark_home_opened(self, platform: str, user_id: str, at: datetime) -> None:
        """Record that `user_id` has opened the app's home tab on `platform`; the first `at` is kept."""
        async with self._write(begin=False) as conn:  # one statement: its own transaction
            await conn.execute(home_tabs.MARK, home_tabs.mark_params(platform, user_id, at))

    async def home_openers(self, platform: str, *, since: datetime | None = None) -> set[str]:
        """The users on `platform` with a home-tab marker (only those first recorded at or after `since`)."""
        return home_tabs.openers(await self._read(*home_tabs.openers_query(platform, since)))

    # -- audit trail --------------------------------------------------------------------------
    async def append_event(self, event: EventDraft) -> Event:
        """Give the event the next sequence number and chain it to the last one."""
        # With a remembered tail the append is one INSERT (see `_append`); without, a full transaction.
        async with self._write(begin=self._tail is None) as conn:
            return await self._append(conn, event)

    async def events(
        self,
        *,
        after_seq: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[Event]:
        """Events in sequence order, `since` <= at < `until`, read a page at a time."""
        where = ["seq > ?"]
        filters: list[Any] = []
        if since is not None:
            where.append("at >= ?")
            filters.append(format_time(since))
        if until is not None:
            where.append("at < ?")
            filters.append(format_time(until))
        if types is not None:
            if not types:
                return
            where.append(f"type IN ({_placeholders(len(types))})")
            filters.extend(types)
        sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT {EVENTS_PAGE}"

        async def page(last: int) -> list[Event]:
            return [_event_from_row(row) for row in await self._read(sql, (last, *filters))]

        async for event in paged_events(page, after_seq):
            yield event

    async def last_event(self) -> Event | None:
        """The newest event, or None."""
        rows = await self._read("SELECT * FROM events ORDER BY seq DESC LIMIT 1", inline=True)
        return _event_from_row(rows[0]) if rows else None

    async def count_events(self, *, before: datetime | None = None) -> int:
        """How many events there are (older than `before`, when given)."""
        if before is None:
            rows = await self._read("SELECT count(*) FROM events")
        else:
            rows = await self._read("SELECT count(*) FROM events WHERE at < ?", (format_time(before),))
        return int(rows[0][0])

    async def checkpoint(self) -> Checkpoint | None:
        """The chain's starting point after a purge, or None if nothing was ever purged."""
        return checkpoint_from_json(await self.get_meta(CHECKPOINT_KEY))

    async def report_data(self, query: ReportQuery, progress: ProgressCallback | None = None) -> ReportData:
        """Report aggregates on a read connection of their own (appends go on meanwhile)."""
        from .reports import report_data  # storage.sqlite.reports imports this module

        return await report_data(self.path, query, progress)

    @staticmethod
    async def _purge_facts(conn: aiosqlite.Connection, cutoff: int) -> None:
        """Make request_facts say what the remaining events say once events up to `cutoff` are gone.

        A request whose events were all purged loses its row; one whose events straddle the cutoff
        gets its row recomputed from the events it has left.
        """
        await conn.execute("DELETE FROM request_facts WHERE last_seq <= ?", (cutoff,))
        only = " AND request_id IN (SELECT request_id FROM request_facts WHERE first_seq <= ?)"
        await conn.execute(f"INSERT OR REPLACE INTO request_facts {FACTS_FROM_EVENTS_V3.format(only=only)}",
                           (cutoff,))
        await conn.execute(FACTS_CREATED_V3)

    async def check_report_tables(self) -> str:
        """'' if request_facts says what the events say, else the problem (reports read that table).

        The hash chain vouches for the events only; this recomputes the summary table from them, so a
        verified report is as trustworthy as one folded from the events themselves.
        """
        from .reports import facts_disagreements  # storage.sqlite.reports imports this module

        found = await facts_disagreements(self.path, FACTS_FROM_EVENTS_V3.format(only=""))
        return (f"the report summary table (request_facts) disagrees with the events for {found} request "
                "row(s)") if found else ""

    async def purge_events(self, before: datetime, event: EventDraft) -> PurgeResult:
        """Delete the oldest events up to `before` (never the newest), checkpoint, and record the purge."""
        async with self._write() as conn:
            # Delete a prefix of the chain only, so what remains verifies from one checkpoint: stop
            # at the first event not older than `before`, and always keep the newest one.
            rows = list(await conn.execute_fetchall(
                "SELECT (SELECT min(seq) FROM events WHERE at >= ?), (SELECT max(seq) FROM events)",
                (format_time(before),),
            ))
            first_kept, newest = rows[0][0], rows[0][1]
            checkpoint = checkpoint_from_json(await self._meta(conn, CHECKPOINT_KEY))
            purged = 0
            if newest is not None:
                cutoff = purge_cutoff(int(newest), None if first_kept is None else int(first_kept))
                last_rows = list(await conn.execute_fetchall(
                    "SELECT seq, hash, at FROM events WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (cutoff,)
                ))
                if last_rows:
                    checkpoint = Checkpoint(seq=int(last_rows[0][0]), hash=str(last_rows[0][1]),
                                            at=_parse(last_rows[0][2]))
                    cursor = await conn.execute("DELETE FROM events WHERE seq <= ?", (cutoff,))
                    purged = int(cursor.rowcount)
                    await self._purge_facts(conn, cutoff)
                    await conn.execute(_UPSERT_META, (CHECKPOINT_KEY, checkpoint_to_json(checkpoint)))
            await self._append(conn, purge_draft(event, purged, checkpoint.seq if checkpoint else 0))
        return PurgeResult(purged=purged, checkpoint=checkpoint)

