"""A local MongoDB wire server for the test suite: mongoeco's proxy on 127.0.0.1, a free port.

Runs in its own Python >= 3.13 environment (`.venv-mongo`, made by `./dev`), never imported by the
suite itself. Prints `ready <uri>` once it listens, then serves until its standard input closes, so
a test run that dies (even by kill -9) takes its server with it.

mongoeco reports itself as a standalone server yet runs multi-document transactions. Two changes
make it answer as MongoDB does where jitpass depends on it:
- a transaction that loses a write conflict fails with WriteConflict (code 112) and the
  TransientTransactionError label, and is over (mongoeco 4.11 says "Write conflict" with neither and
  keeps the failed transaction open on that session, so the session's next one sees stale data);
- `--standalone` refuses transactions as a standalone mongod does (code 20, IllegalOperation), so
  the suite can prove what jitpass does on such a server.

`--engine sqlite` (a file at `--path`, else in memory) runs mongoeco's SQLite engine, which keeps one
transaction for the whole engine on one connection and refuses every other session's command while it is
open ("SQLiteEngine has an active transaction bound to another session"), where MongoDB serves them beside
it. There those commands wait their turn instead (bounded), so the engine serves several clients: one
transaction at a time, no write conflicts, everything else between transactions.

    .venv-mongo/bin/python tests/support/mongoeco_server.py [--standalone] [--engine memory|sqlite] [--path FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

# What mongod answers a transaction on a standalone server.
NO_TRANSACTIONS = "Transaction numbers are only allowed on a replica set member or mongos"
ILLEGAL_OPERATION = 20
WRITE_CONFLICT = 112
# How long a command waits for another session's transaction on the SQLite engine; then it runs and gets
# the engine's refusal (MongoDB aborts a transaction after 60 s: transactionLifetimeLimitSeconds).
TURN_TIMEOUT = 60.0
# Commands that never touch the engine's connection: they never wait (driver heartbeats, session ends).
_NEVER_WAIT = frozenset({"hello", "ismaster", "isMaster", "ping", "buildInfo", "buildinfo", "endSessions",
                         "saslStart", "saslContinue", "getParameter"})


def _end_conflicted_transactions(server: Any) -> None:
    from mongoeco.errors import OperationFailure

    sessions = server._session_store  # mongoeco 4.11 (pinned): commitTransaction lands here
    commit = sessions.commit_transaction

    def commit_or_end(body: Any) -> Any:
        try:
            return commit(body)
        except OperationFailure as exc:
            session = sessions._require_session(body)
            if session.transaction_active:
                session.abort_transaction()
            if "write conflict" not in str(exc).lower():
                raise
            raise OperationFailure(
                "WriteConflict error: this operation conflicted with another operation. Please retry your "
                "operation or multi-document transaction.", code=WRITE_CONFLICT,
                error_labels=("TransientTransactionError",),
            ) from exc

    sessions.commit_transaction = commit_or_end


def _refuse_transactions(server: Any) -> None:
    from mongoeco.errors import OperationFailure

    executor = server._executor  # mongoeco 4.11 (pinned): every command's body passes through here
    build = executor._build_request_context

    def build_refusing(body: Any, **options: Any) -> Any:
        if isinstance(body, dict) and body.get("autocommit") is False:
            raise OperationFailure(NO_TRANSACTIONS, code=ILLEGAL_OPERATION)
        return build(body, **options)

    executor._build_request_context = build_refusing


class _NotYourTurn(Exception):
    """A transaction may not start yet: another session's transaction is open, or other commands run."""


class _StartLater:
    """A request whose transaction start waits for its turn: decoding it again starts it."""

    def __init__(self, decode: Any) -> None:
        self.decode = decode


class _Turns:
    """Who may use the SQLite engine now: the session owning its one transaction, or everybody else."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.running = 0  # commands of sessions other than the transaction's, under way
        self.starting = 0  # transactions waiting to start (they go before new other commands)
        self._changed = asyncio.Event()

    def owner(self) -> str | None:
        owner: str | None = self._engine._transaction_owner_session_id  # mongoeco 4.11 (pinned)
        return owner

    def may_start(self) -> bool:
        return self.owner() is None and self.running == 0

    def changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def until(self, ready: Any, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while not ready() and loop.time() < deadline:
            changed = self._changed
            # The short timeout also covers an owner that went away without a command (session reaped).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.05)


def _one_transaction_at_a_time(server: Any, engine: Any) -> None:
    turns = _Turns(engine)
    sessions = server._session_store  # mongoeco 4.11 (pinned): startTransaction lands here, while decoding
    apply_metadata = sessions._apply_transaction_metadata

    def apply_when_free(session: Any, body: Any) -> None:
        if body.get("startTransaction") is True and not session.transaction_active and not turns.may_start():
            raise _NotYourTurn
        apply_metadata(session, body)

    sessions._apply_transaction_metadata = apply_when_free

    decode = server._decode_wire_context

    def decode_or_later(header: Any, payload: Any, connection: Any, state: Any) -> Any:
        try:
            return decode(header, payload, connection, state)
        except _NotYourTurn:
            return _StartLater(lambda: decode(header, payload, connection, state))

    server._decode_wire_context = decode_or_later

    executor = server._executor
    execute = executor.execute_prepared

    async def execute_in_turn(context: Any) -> Any:
        deadline = asyncio.get_running_loop().time() + TURN_TIMEOUT
        while isinstance(context, _StartLater):
            turns.starting += 1
            try:
                await turns.until(turns.may_start, deadline)
            finally:
                turns.starting -= 1
            try:
                context = context.decode()
            except _NotYourTurn:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
        session = context.session
        if context.command_name in _NEVER_WAIT or (session is not None and turns.owner() == session.session_id):
            try:
                return await execute(context)
            finally:
                turns.changed()
        await turns.until(lambda: turns.owner() is None and turns.starting == 0, deadline)
        turns.running += 1
        try:
            return await execute(context)
        finally:
            turns.running -= 1
            turns.changed()

    executor.execute_prepared = execute_in_turn


async def _serve(engine_name: str, path: str | None, standalone: bool) -> None:
    from mongoeco.engines import MemoryEngine, SQLiteEngine
    from mongoeco.wire import AsyncMongoEcoProxyServer

    engine = SQLiteEngine(path or ":memory:") if engine_name == "sqlite" else MemoryEngine()
    server = AsyncMongoEcoProxyServer(engine=engine, host="127.0.0.1", port=0)
    _end_conflicted_transactions(server)
    if engine_name == "sqlite":
        _one_transaction_at_a_time(server, engine)
    if standalone:
        _refuse_transactions(server)
    address = await server.start()
    print(f"ready {address.uri}", flush=True)
    loop = asyncio.get_running_loop()
    try:
        # Serve until the parent goes away: reading stdin returns b"" when its end closes.
        await loop.run_in_executor(None, sys.stdin.buffer.read)
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--path", help="the SQLite file for --engine sqlite (default: in memory)")
    parser.add_argument("--standalone", action="store_true", help="refuse transactions as a standalone mongod does")
    args = parser.parse_args()
    asyncio.run(_serve(args.engine, args.path, args.standalone))


if __name__ == "__main__":
    main()
