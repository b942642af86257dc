"""The event loop every command runs on: uvloop where it is installed, else asyncio's own.

uvloop (libuv underneath) runs the same asyncio code with less CPU per socket read, write and
thread hand-off; on the request path of `jitpass serve` that is most of what is not jitpass's own work
(docs/benchmarks.md, "Event loop"). `JITPASS_EVENT_LOOP=asyncio` picks the standard loop, e.g. to
compare the two or when debugging with tools that only know asyncio's loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from bot.domain.config import load_dotenv
from bot.domain.errors import InputError

__all__ = ["EVENT_LOOPS", "loop_factory"]

EVENT_LOOPS = ("uvloop", "asyncio")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(environ: Mapping[str, str] | None = None) -> LoopFactory | None:
    """The loop factory for `asyncio.run` that JITPASS_EVENT_LOOP asks for (None: asyncio's default)."""
    env = dict(os.environ if environ is None else environ)
    load_dotenv(Path(env.get("JITPASS_DOTENV", ".env")), env)
    choice = env.get("JITPASS_EVENT_LOOP", "").strip().lower()
    if choice not in ("", *EVENT_LOOPS):
        raise InputError(f"JITPASS_EVENT_LOOP={choice!r} is not an event loop; use uvloop or asyncio")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # not installed (e.g. Windows): asyncio's loop, unless uvloop was asked for by name
        if choice == "uvloop":
            raise InputError("JITPASS_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop
