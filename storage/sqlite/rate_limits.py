"""Rate limits on the SQLite file: a sliding window per key, checked and counted in one IMMEDIATE transaction.

The caller (`SqliteStore`) runs each function inside a unit of work (`take`: on aiosqlite's thread, one
hand-off for the whole step; `end_bursts`: `_write`), whose `BEGIN IMMEDIATE`
takes the file's write lock before the row is read: two processes taking a token for one key queue
on that lock, so the count they read is never stale and the budget is shared exactly.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta

import aiosqlite

from bot.domain.audit import format_time, parse_time
from bot.domain.model import Identity
from bot.ports import RateTake, RefusalBurst
from storage.codec import identity_from_doc, identity_to_doc

__all__ = ["end_bursts", "take"]

_SELECT = "SELECT until, refused, first_refused_at, last_refused_at, actor FROM rate_windows WHERE key = ?"
_UPSERT = """
    INSERT INTO rate_windows (key, until, expires_at, refused, first_refused_at, last_refused_at, retry_at, actor)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET
        until = excluded.until, expires_at = excluded.expires_at, refused = excluded.refused,
        first_refused_at = excluded.first_refused_at, last_refused_at = excluded.last_refused_at,
        retry_at = excluded.retry_at, actor = excluded.actor"""
# RETURNING would give the values after the update: read the bursts, then close them (one transaction).
_OVER_BURSTS = """
    SELECT key, refused, first_refused_at, last_refused_at, actor FROM rate_windows
    WHERE refused > 0 AND retry_at <= ?"""
_CLOSE_BURSTS = """
    UPDATE rate_windows SET refused = 0, first_refused_at = NULL, last_refused_at = NULL, retry_at = NULL,
                            actor = NULL
    WHERE refused > 0 AND retry_at <= ?"""
# A row whose every granted attempt has left its window counts nothing: gone, unless a burst is open.
_DELETE_EMPTY = "DELETE FROM rate_windows WHERE expires_at <= ? AND refused = 0"


def _burst(key: str, refused: int, first_at: str, last_at: str, actor: str) -> RefusalBurst:
    return RefusalBurst(key, identity_from_doc(json.loads(actor)), refused, parse_time(first_at), parse_time(last_at))


def take(conn: sqlite3.Connection, key: str, count: int, per: timedelta, now: datetime, actor: Identity) -> RateTake:
    """Count one attempt for `key` (inside the caller's IMMEDIATE transaction, on aiosqlite's thread)."""
    at = format_time(now)
    row = conn.execute(_SELECT, (key,)).fetchone()
    until: list[str] = []
    refused, first_at, first_actor = 0, "", ""
    ended: RefusalBurst | None = None
    if row is not None:
        until = [t for t in json.loads(row[0]) if t > at]  # format_time texts sort as the instants do
        refused = int(row[1])
        if refused:  # an open burst: its start, its first account, and (for `ended`) its last refusal
            first_at, first_actor = str(row[2]), str(row[4])
            ended = _burst(key, refused, first_at, str(row[3]), first_actor)
    if len(until) < count:
        until.append(format_time(now + per))
        conn.execute(_UPSERT, (key, json.dumps(until), until[-1], 0, None, None, None, None))
        return RateTake(True, ended=ended)
    refused += 1
    if refused == 1:
        first_at, first_actor = at, json.dumps(identity_to_doc(actor))
    retry_at = until[len(until) - count]  # when one fewer than `count` are left (count may have shrunk)
    conn.execute(_UPSERT, (key, json.dumps(until), until[-1], refused, first_at, at, retry_at, first_actor))
    return RateTake(False, retry_at=parse_time(retry_at), refused=refused)


async def end_bursts(conn: aiosqlite.Connection, now: datetime) -> list[RefusalBurst]:
    """Claim the bursts whose key may act again, then delete the empty windows (same transaction)."""
    at = format_time(now)
    ended = [_burst(str(r[0]), int(r[1]), r[2], r[3], r[4]) for r in await conn.execute_fetchall(_OVER_BURSTS, (at,))]
    await conn.execute(_CLOSE_BURSTS, (at,))
    await conn.execute(_DELETE_EMPTY, (at,))
    return ended
