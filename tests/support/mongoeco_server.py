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

    .venv-mongo/bin/python tests/support/mongoeco_server.py [--standalone] [--engine memory|sqlite] [--path FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

# What mongod answers a transaction on a standalone server.
NO_TRANSACTIONS = "Transaction numbers are only allowed on a replica set member or mongos"
ILLEGAL_OPERATION = 20
WRITE_CONFLICT = 112


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


async def _serve(engine_name: str, path: str | None, standalone: bool) -> None:
    from mongoeco.engines import MemoryEngine, SQLiteEngine
    from mongoeco.wire import AsyncMongoEcoProxyServer

    engine = SQLiteEngine(path) if engine_name == "sqlite" and path else MemoryEngine()
    server = AsyncMongoEcoProxyServer(engine=engine, host="127.0.0.1", port=0)
    _end_conflicted_transactions(server)
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
    parser.add_argument("--path", help="the SQLite file for --engine sqlite")
    parser.add_argument("--standalone", action="store_true", help="refuse transactions as a standalone mongod does")
    args = parser.parse_args()
    asyncio.run(_serve(args.engine, args.path, args.standalone))


if __name__ == "__main__":
    main()
