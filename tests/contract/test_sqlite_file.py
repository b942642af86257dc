"""SQLite only: what happens to the file itself — tampering, corruption, schema versions, sharing.

Tampering is done with the plain sqlite3 module, as someone with access to the file would.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from bot.domain.audit import verify_chain
from bot.domain.errors import Conflict, StoreError
from bot.domain.model import EffectDraft, EffectKind, EffectOutcome, EffectStatus, Status
from storage.sqlite import store as store_sql
from storage.sqlite.store import SCHEMA_VERSION, SqliteStore
from tests.support.stores import START, FakeClock, draft, make_request


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "jitpass.db", FakeClock())
    await store.open()
    for i in range(1, 11):
        await store.append_event(draft(details={"i": i}))
    yield store
    await store.close()


def _edit(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()


async def test_an_edited_event_is_reported_at_its_sequence_number(store: SqliteStore) -> None:
    details = json.dumps({"i": 999})
    _edit(store.path, f"UPDATE events SET details = '{details}' WHERE seq = 7")

    report = await verify_chain(store.events())

    assert not report.ok
    assert report.first_broken_seq == 7
    assert "modified" in report.problem


async def test_a_deleted_event_is_reported_as_missing(store: SqliteStore) -> None:
    _edit(store.path, "DELETE FROM events WHERE seq = 4")

    report = await verify_chain(store.events())

    assert (report.ok, report.first_broken_seq, report.checked) == (False, 4, 3)
    assert "missing" in report.problem


async def test_two_swapped_events_are_reported_where_the_order_breaks(store: SqliteStore) -> None:
    # Swap the bodies of events 5 and 6 but keep their seqs in place, as a careful forger would.
    _edit(
        store.path,
        "UPDATE events SET seq = -5 WHERE seq = 5",
        "UPDATE events SET seq = 5 WHERE seq = 6",
        "UPDATE events SET seq = 6 WHERE seq = -5",
    )

    report = await verify_chain(store.events())

    assert (report.ok, report.first_broken_seq) == (False, 5)


async def test_a_replaced_hash_is_reported_at_its_event(store: SqliteStore) -> None:
    # Flip the first hex digit to another one (a fixed 'f' would be no change one time in 16).
    _edit(store.path, "UPDATE events SET hash = CASE substr(hash, 1, 1) WHEN 'f' THEN '0' ELSE 'f' END "
                      "|| substr(hash, 2) WHERE seq = 9")

    report = await verify_chain(store.events())

    assert (report.ok, report.first_broken_seq) == (False, 9)


async def test_an_edited_actor_column_is_reported_although_the_actor_json_is_intact(store: SqliteStore) -> None:
    # Reports count by the indexed actor columns: crediting another user there must break the chain.
    _edit(store.path, "UPDATE events SET actor_user_id = 'USOMEONE-ELSE' WHERE seq = 3")

    report = await verify_chain(store.events())

    assert (report.ok, report.first_broken_seq) == (False, 3)


async def test_a_file_of_random_bytes_is_refused_with_advice_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "jitpass.db"
    path.write_bytes(os.urandom(8192))

    with pytest.raises(StoreError) as caught:
        await SqliteStore(path, FakeClock()).open()

    message = str(caught.value)
    assert message.startswith(f"the database file {path} is not a valid jitpass store (file is not a database)")
    assert "restore it from a backup" in message


async def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jitpass.db"
    store = SqliteStore(path, FakeClock())
    await store.open()
    for i in range(300):
        await store.create_request(make_request(f"R{i}", item=f"item-{i}", reason="x" * 500), draft("request.created"))
    await store.close()
    with closing(sqlite3.connect(path)) as conn:  # fold the WAL into the main file first
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.truncate(path, path.stat().st_size // 2)

    with pytest.raises(StoreError, match="is not a valid jitpass store"):
        await SqliteStore(path, FakeClock()).open()


async def test_a_file_from_a_newer_jitpass_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jitpass.db"
    store = SqliteStore(path, FakeClock())
    await store.open()
    await store.close()
    _edit(path, f"INSERT INTO schema_version (version, applied_at) VALUES ({SCHEMA_VERSION + 1}, 'later')")

    with pytest.raises(StoreError, match="newer jitpass"):
        await SqliteStore(path, FakeClock()).open()


async def test_another_applications_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    _edit(path, "CREATE TABLE invoices (id INTEGER PRIMARY KEY)")

    with pytest.raises(StoreError, match="not a valid jitpass store"):
        await SqliteStore(path, FakeClock()).open()

    with closing(sqlite3.connect(path)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"invoices"}


async def test_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory does not exist"):
        await SqliteStore(tmp_path / "nope" / "jitpass.db", FakeClock()).open()


async def test_reopening_keeps_everything_and_migrations_run_once(store: SqliteStore) -> None:
    await store.close()
    again = SqliteStore(store.path, FakeClock())
    await again.open()
    try:
        assert (await again.describe())["last_seq"] == 10
        with closing(sqlite3.connect(store.path)) as conn:
            assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        await again.append_event(draft())
        assert (await verify_chain(again.events())).ok
    finally:
        await again.close()


async def test_two_stores_on_one_file_interleave_appends_into_one_chain(store: SqliteStore) -> None:
    # Each store remembers the last event it wrote; the other one's appends must not fool it.
    other = SqliteStore(store.path, FakeClock())
    await other.open()
    try:
        for _ in range(5):
            await store.append_event(draft())
            await other.append_event(draft())
            await other.append_event(draft())
    finally:
        await other.close()

    report = await verify_chain(store.events())
    assert report.ok, report.problem
    assert report.last_seq == 25


async def test_two_stores_on_one_file_interleave_request_units_into_one_chain(store: SqliteStore) -> None:
    # create_request and settle_effects run as one unit on aiosqlite's thread, guessing the chain tail from
    # their own last write: each guess the other store made stale must be caught and the event re-sealed.
    other = SqliteStore(store.path, FakeClock())
    await other.open()
    card = (EffectDraft(EffectKind.POST_CARD),)
    try:
        for i in range(6):
            writer = store if i % 2 else other
            await writer.create_request(make_request(f"R{i}", item=f"item-{i}"),
                                        draft("request.created", request_id=f"R{i}"), card)
            await other.append_event(draft())
        claimed = await store.claim_effects(START, "w-1", START + timedelta(seconds=10), platforms={"slack"},
                                            limit=10)
        outcome = EffectOutcome(EffectStatus.DONE, event=draft())
        assert await store.settle_effects([(e, outcome) for e in claimed], "w-1") == [True] * 6
        await other.append_event(draft())
    finally:
        await other.close()

    report = await verify_chain(store.events())
    assert report.ok, report.problem
    assert report.last_seq == 10 + 6 + 6 + 6 + 1
    created = {e.request_id: e.seq async for e in store.events() if e.type == "request.created"}
    with closing(sqlite3.connect(store.path)) as conn:
        rows = dict(conn.execute("SELECT id, created_seq FROM requests").fetchall())
    assert rows == created  # each request row carries the seq its own event finally got


async def test_a_refused_create_unit_leaves_no_event_and_no_effect(store: SqliteStore) -> None:
    card = (EffectDraft(EffectKind.POST_CARD),)
    await store.create_request(make_request("R1"), draft("request.created", request_id="R1"), card)
    with pytest.raises(Conflict):
        await store.create_request(make_request("R1", item="other"), draft("request.created", request_id="R1"), card)

    assert (await store.last_event()) is not None
    assert (await store.count_events()) == 11
    assert len(await store.effects_of("R1")) == 1
    await store.append_event(draft())  # the chain goes on after the rolled-back unit
    assert (await verify_chain(store.events())).ok


async def test_a_closed_store_says_so(store: SqliteStore) -> None:
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.append_event(draft())


async def test_the_store_file_and_its_wal_and_shm_are_created_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the common default, under which a plain create gives 0644
    try:
        store = SqliteStore(tmp_path / "private.db", FakeClock())
        await store.open()
        try:
            await store.append_event(draft(details={"i": 1}))
            modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir() if p.name.startswith("private.db")}
        finally:
            await store.close()
    finally:
        os.umask(old)
    assert set(modes) == {"private.db", "private.db-wal", "private.db-shm"}
    assert modes == {name: 0o600 for name in modes}


async def test_a_unit_meeting_another_connections_write_lock_waits_off_the_loop(store: SqliteStore) -> None:
    # Small units run on the event loop's thread; a write lock held elsewhere (another process) must make
    # them wait on aiosqlite's thread, the loop going on meanwhile, and commit once the lock is free.
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    card = (EffectDraft(EffectKind.POST_CARD),)
    unit = asyncio.create_task(store.create_request(make_request("R1"), draft("request.created", request_id="R1"),
                                                    card))
    ticks = 0
    for _ in range(20):  # 20 turns of the loop, 10 ms apart: the unit is waiting on the lock meanwhile
        await asyncio.sleep(0.01)
        ticks += 1
    assert not unit.done()
    holder.execute("COMMIT")
    holder.close()
    await asyncio.wait_for(unit, 10)

    assert ticks == 20
    assert store.inline_fallbacks == 1
    assert (await store.get_request("R1")) is not None
    assert len(await store.effects_of("R1")) == 1
    assert (await verify_chain(store.events())).ok


async def test_the_wal_stays_bounded_while_units_run_on_the_loop(store: SqliteStore) -> None:
    # Units committed on the loop's thread still checkpoint (SQLite's own, every 1,000 pages): the WAL is
    # reused instead of growing with every unit (a WAL of millions of frames makes every page read slow).
    wal = store.path.with_name(store.path.name + "-wal")
    card = (EffectDraft(EffectKind.POST_CARD),)
    sizes = []
    for i in range(800):
        await store.create_request(make_request(f"R{i}", item=f"item-{i}"),
                                   draft("request.created", request_id=f"R{i}"), card)
        if i % 200 == 199:
            sizes.append(wal.stat().st_size)
    # Without checkpoints each round of 200 units (~27 pages each) would add ~22 MB to the file.
    assert max(sizes) < 12_000_000, sizes
    assert (await store.count_events()) == 10 + 800


async def test_a_change_rewrites_only_the_indexes_of_the_columns_it_changes(store: SqliteStore) -> None:
    # SQLite rewrites the entries of every index on a column an UPDATE names, changed or not: a card's refs
    # saved, or a status change, must name only the columns that changed (measured in WAL frames, one page
    # each: with every column named, the same changes wrote 13 and 10 frames each).
    wal = store.path.with_name(store.path.name + "-wal")
    n = 40
    for i in range(n):
        await store.create_request(make_request(f"R{i}", item=f"item-{i}"),
                                   draft("request.created", request_id=f"R{i}"), (EffectDraft(EffectKind.POST_CARD),))
    now = START
    claimed = await store.claim_effects(now, "w1", now + timedelta(seconds=30), platforms={"slack"}, limit=n)
    assert len(claimed) == n

    def frames_since_truncate() -> float:
        return max(0, wal.stat().st_size - 32) / (4096 + 24)

    def truncate() -> None:
        with closing(sqlite3.connect(store.path)) as conn:
            assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy

    truncate()
    for effect in claimed:
        assert await store.settle_effect(effect, "w1", EffectOutcome(
            EffectStatus.DONE, refs={"card": {"channel": "C1", "ts": "1.2"}}))
    assert frames_since_truncate() / n <= 6
    truncate()
    for i in range(n):
        assert await store.transition(f"R{i}", {Status.PENDING}, {"status": Status.APPROVED}, None) is not None
    assert frames_since_truncate() / n <= 6
    # What was written is what a read gives back.
    request = await store.get_request("R7")
    assert request is not None and request.status is Status.APPROVED
    assert request.refs["card"] == {"channel": "C1", "ts": "1.2"}


async def test_the_schedulers_queries_are_served_by_their_partial_indexes(store: SqliteStore) -> None:
    # The due-time indexes hold only the rows of their status (schema 10): a query whose WHERE no longer
    # implies an index's would scan every request ever made, each tick.
    with closing(sqlite3.connect(store.path)) as conn:
        plans = {name: " | ".join(str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
                 for name, sql, params in (
                     ("due", store_sql._DUE, {"until": "9999"}),
                     ("next due", store_sql._NEXT_DUE, {}),
                     ("extensions", "SELECT * FROM requests WHERE parent_id IN (?, ?)", ("R1", "R2")))}
    for index in ("requests_timeout", "requests_starts", "requests_ends"):
        assert index in plans["due"] and index in plans["next due"], plans
    assert "requests_parent" in plans["extensions"], plans
    assert not any("SCAN requests" in plan for plan in plans.values()), plans
