"""The suite's MongoDB harness says why it has no server, and never lets CI pass without one."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.mongo import MONGOECO_ENGINE_VAR, MongoUnavailable, mongodb_unavailable, mongoeco_server


def test_a_missing_server_environment_is_reported_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MongoUnavailable, match=r"missing: run ./dev setup"), \
            mongoeco_server(Path(__file__).parents[2] / ".venv-none" / "bin" / "python"):
        pass


def test_a_server_that_dies_at_start_is_reported_with_its_own_error() -> None:
    # The suite's own Python has no mongoeco: the server process fails on its import and exits.
    died = r"(?s)exited with status 1:.*No module named 'mongoeco'"
    with pytest.raises(MongoUnavailable, match=died), mongoeco_server(Path(sys.executable)):
        pass


def test_no_server_fails_the_test_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run in CI: no server"):
        mongodb_unavailable("no server")


def test_no_server_skips_the_test_on_a_developer_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server"):
        mongodb_unavailable("no server")


def test_an_unknown_mongoeco_engine_is_reported_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MONGOECO_ENGINE_VAR, "wiredtiger")
    with pytest.raises(MongoUnavailable, match="expected one of memory, sqlite"), mongoeco_server():
        pass


@pytest.mark.mongodb
async def test_the_sqlite_engine_serves_other_clients_beside_an_open_transaction(tmp_path: Path) -> None:
    # mongoeco's SQLite engine refuses every other session's command while one transaction is open; the
    # server makes them wait their turn: they see the committed state, and nothing is refused or lost.
    from pymongo import AsyncMongoClient

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(mongoeco_server(engine="sqlite", path=tmp_path / "mongoeco.db"))
        except MongoUnavailable as exc:
            mongodb_unavailable(str(exc))
        holder: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(server.uri)
        other: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(server.uri)
        try:
            await _hold_and_use_beside(holder, other)
        finally:
            await holder.close()
            await other.close()


async def _hold_and_use_beside(holder: Any, other: Any) -> None:
    await holder.t.c.insert_one({"_id": 1, "v": 0})
    opened = asyncio.Event()

    async def hold() -> None:
        async with holder.start_session() as session, await session.start_transaction():
            await holder.t.c.update_one({"_id": 1}, {"$inc": {"v": 1}}, session=session)
            opened.set()
            await asyncio.sleep(0.3)
            await holder.t.c.insert_one({"_id": 2}, session=session)

    async def beside() -> tuple[object, bool]:
        await opened.wait()
        seen = await other.t.c.find_one({"_id": 1})
        await other.t.c.insert_one({"_id": 3})
        async with other.start_session() as session, await session.start_transaction():
            await other.t.c.update_one({"_id": 1}, {"$inc": {"v": 10}}, session=session)
        return seen, (await other.t.c.find_one({"_id": 2})) is not None

    _, (seen, saw_commit) = await asyncio.wait_for(asyncio.gather(hold(), beside()), 30)
    assert seen == {"_id": 1, "v": 1}  # read after the open transaction committed, not refused
    assert saw_commit
    assert await holder.t.c.find({}, sort=[("_id", 1)]).to_list() == [{"_id": 1, "v": 11}, {"_id": 2}, {"_id": 3}]
