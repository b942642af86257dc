"""Helpers every `jitpass` command group uses: who is at the terminal, an opened runtime, secrets from a prompt."""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

from bot.bootstrap import Runtime, open_runtime
from bot.domain.config import Settings, parse_policy
from bot.domain.errors import InputError, JitpassError
from bot.domain.model import Identity
from bot.domain.request_text import MAX_LOOKBACK, parse_duration

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def actor() -> Identity:
    """The person at the terminal, as every command records them."""
    user = os.environ.get("JITPASS_ADMIN") or getpass.getuser()
    return Identity("cli", user, user)


@asynccontextmanager
async def opened_runtime(settings: Settings | None = None, *, creates: bool = False,
                         audit_key_check: bool = True) -> AsyncIterator[Runtime]:
    """The runtime on the configured home. Only `creates=True` commands (adding items) may create a
    store or a key; every other command refuses a missing store and says where it looked."""
    from bot.demo import DEMO_POLICY  # the CLI applies it exactly when the server does: a `--demo` store

    runtime = await open_runtime(settings or Settings.from_env(), create_key=True, must_exist=not creates,
                                 audit_key_check=audit_key_check,
                                 demo_policy=parse_policy(DEMO_POLICY, "built-in demo policy"))
    try:
        yield runtime
    finally:
        await runtime.close()


def read_secret(prompt: str, *, stdin: TextIO, optional: bool) -> str | None:
    """From a prompt on a terminal, else one line of stdin: secrets never come through argv."""
    if stdin.isatty():
        value = getpass.getpass(prompt)
    else:
        line = stdin.readline()
        value = line.rstrip("\r\n")
    if not value and not optional:
        raise InputError(f"{prompt.strip(': ')} is required.")
    return value or None


def duration_arg(text: str) -> str:
    try:
        parse_duration(text, maximum=MAX_LOOKBACK)
    except JitpassError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def replace_file(path: Path, text: str, *, suffix: str = ".new") -> None:
    """Replace `path` atomically, 0600 from the first byte: a crash leaves the old or the new file."""
    temporary = path.with_name(path.name + suffix)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
