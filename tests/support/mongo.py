"""The MongoDB server the suite runs against: a given one (JITPASS_TEST_MONGODB_URI) or mongoeco's.

`./dev` installs mongoeco (a MongoDB wire-protocol server in pure Python, Python >= 3.13) in
`.venv-mongo`; `mongoeco_server()` starts it as a child process on 127.0.0.1 and a free port, waits
until it answers a ping (bounded), and stops it afterwards. A real replica set or Atlas given in
JITPASS_TEST_MONGODB_URI always wins.

JITPASS_TEST_MONGOECO_ENGINE=sqlite runs mongoeco's SQLite engine (a file in a temporary directory)
instead of its memory engine, the default.

When no server can be had, the MongoDB tests skip with the reason on a developer's machine and FAIL
with it in CI (CI=true), so a run that never reached MongoDB cannot pass as green.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

__all__ = ["MONGODB_URI_VAR", "MONGOECO_ENGINES", "MONGOECO_ENGINE_VAR", "MongoServer", "mongodb_unavailable",
           "mongoeco_engine", "mongoeco_server", "new_db_name"]

MONGODB_URI_VAR = "JITPASS_TEST_MONGODB_URI"
MONGOECO_ENGINE_VAR = "JITPASS_TEST_MONGOECO_ENGINE"
MONGOECO_ENGINES = ("memory", "sqlite")
ROOT = Path(__file__).resolve().parents[2]
SERVER_PYTHON = ROOT / ".venv-mongo" / "bin" / "python"
SERVER_SCRIPT = Path(__file__).with_name("mongoeco_server.py")
START_TIMEOUT = 60.0  # seconds; the machine may be busy, but a server that never starts must not hang CI


class MongoUnavailable(Exception):
    """No MongoDB server for the tests, with the reason."""


class MongoServer:
    """A MongoDB the tests use: its URI and, when we started it, who it is."""

    def __init__(self, uri: str, started_by_us: bool) -> None:
        self.uri = uri
        self.started_by_us = started_by_us


def new_db_name(prefix: str = "jitpass_test") -> str:
    """A database name no other test (or other engineer's run on the same server) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def mongodb_unavailable(reason: str) -> None:
    """Skip the calling test with `reason`, or fail it in CI where a skip would hide a gap."""
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"MongoDB tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def mongoeco_engine() -> str:
    """The mongoeco engine the suite runs: JITPASS_TEST_MONGOECO_ENGINE, else memory."""
    engine = os.environ.get(MONGOECO_ENGINE_VAR, "").strip().lower() or "memory"
    if engine not in MONGOECO_ENGINES:
        raise MongoUnavailable(f"{MONGOECO_ENGINE_VAR}={engine!r}: expected one of {', '.join(MONGOECO_ENGINES)}")
    return engine


def _ping(uri: str, deadline: float) -> None:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    last: Exception | None = None
    while time.monotonic() < deadline:
        client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=2000)
        try:
            client.admin.command("ping")
            return
        except PyMongoError as exc:
            last = exc
        finally:
            client.close()
    raise MongoUnavailable(f"the MongoDB server at {uri} did not answer a ping: {last}")


def _read_ready_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The server's first line, or "" if it printed none within `timeout` (a thread keeps it bounded)."""
    lines: list[str] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0].strip() if lines else ""


@contextmanager
def mongoeco_server(python: Path = SERVER_PYTHON, *, standalone: bool = False, engine: str | None = None,
                    path: Path | None = None) -> Iterator[MongoServer]:
    """Start mongoeco's wire server on 127.0.0.1:<free port>; stop it on exit.

    `standalone`: it refuses transactions, as a standalone mongod does. `engine`: memory or sqlite
    (default: `mongoeco_engine()`); `path`: the sqlite engine's file (default: in a temporary directory).
    """
    if not python.exists():
        raise MongoUnavailable(f"{python.relative_to(ROOT)} is missing: run ./dev setup (needs Python >= 3.13)")
    engine = engine or mongoeco_engine()
    # stderr to a file, not a pipe: a chatty server can never block on it.
    with tempfile.TemporaryDirectory(prefix="jitpass-mongoeco-") as scratch, \
            tempfile.TemporaryFile("w+") as errors, subprocess.Popen(
        [str(python), str(SERVER_SCRIPT), *(["--standalone"] if standalone else []), "--engine", engine,
         *(["--path", str(path or Path(scratch) / "mongoeco.db")] if engine == "sqlite" else [])],
        cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
    ) as proc:
        try:
            started = time.monotonic()
            ready = _read_ready_line(proc, START_TIMEOUT)
            if not ready.startswith("ready "):
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)  # it closed its output: give it the moment it needs to exit
                how = (f"exited with status {proc.returncode}" if proc.poll() is not None
                       else f"did not start within {START_TIMEOUT:.0f} s")
                proc.kill()
                proc.wait(timeout=10)
                errors.seek(0)
                raise MongoUnavailable(f"mongoeco {how}: {errors.read().strip()[-2000:]}")
            uri = ready.split(" ", 1)[1]
            _ping(uri, started + START_TIMEOUT)
            yield MongoServer(uri, started_by_us=True)
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Close the server's stdin (its signal to stop); kill it if it has not stopped after 10 s."""
    if proc.poll() is not None:
        return
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
