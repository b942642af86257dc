"""A local MongoDB wire server for the test suite: mongoeco's proxy on 127.0.0.1, a free port.

Runs in its own Python >= 3.13 environment (`.venv-mongo`, made by `./dev`), never imported by the
suite itself. Prints `ready <uri>` once it listens, then serves until its standard input closes, so
a test run that dies (even by kill -9) takes its server with it.

    .venv-mongo/bin/python tests/support/mongoeco_server.py [--engine memory|sqlite] [--path FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import sys


async def _serve(engine_name: str, path: str | None) -> None:
    from mongoeco.engines import MemoryEngine, SQLiteEngine
    from mongoeco.wire import AsyncMongoEcoProxyServer

    engine = SQLiteEngine(path) if engine_name == "sqlite" and path else MemoryEngine()
    server = AsyncMongoEcoProxyServer(engine=engine, host="127.0.0.1", port=0)
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
    args = parser.parse_args()
    asyncio.run(_serve(args.engine, args.path))


if __name__ == "__main__":
    main()
