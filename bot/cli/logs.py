"""One log format for every line, jitpass's and the SDKs' alike: key=value (default) or JSON lines.

`JITPASS_LOG_FORMAT=json` switches to one JSON object per line. jitpass's own messages are already
`event=... key=value ...`; a free-text line from a library becomes `msg="..."`; a traceback becomes
`exc=` and `trace=` on the same line, so one event is always one line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["LOG_FORMATS", "LogFormatter", "configure_logging", "parse_pairs"]

LOG_FORMATS = ("kv", "json")
_PAIR = re.compile(r'([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|\S*)')
_PAIRS = re.compile(rf"^\s*(?:{_PAIR.pattern}\s*)+$")
_BARE = re.compile(r"^[^\s\"=\\]*$")
# aiosqlite logs every SQL parameter at DEBUG, refs (response_urls) included.
# The Agents SDK's connection manager logs a multi-line (redacted) config dump at INFO.
_NOISY = ("apscheduler", "aiohttp.access", "msal", "urllib3", "aiosqlite",
          "microsoft_agents.hosting.core.authorization.connection_manager")


def parse_pairs(message: str) -> dict[str, str] | None:
    """`event=x note="a b"` -> {"event": "x", "note": "a b"}; None when the text is not key=value pairs."""
    if not _PAIRS.match(message):
        return None
    pairs: dict[str, str] = {}
    for key, value in _PAIR.findall(message):
        pairs[key] = json.loads(value) if value.startswith('"') else value
    return pairs


def _quote(value: str) -> str:
    return value if value and _BARE.match(value) else json.dumps(value, ensure_ascii=False)


class LogFormatter(logging.Formatter):
    """One line per record: key=value pairs (`kv`) or a JSON object (`json`)."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        fields: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
        }
        pairs = parse_pairs(message)
        if pairs is not None:
            fields.update({k: v for k, v in pairs.items() if k not in fields})
        else:
            fields["msg"] = message
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            fields["exc"] = f"{exc_type.__name__}: {exc}"
            fields["trace"] = "".join(traceback.format_tb(tb))
        if self.style == "json":
            return json.dumps(fields, ensure_ascii=False, default=str)
        return " ".join(f"{key}={_quote(str(value))}" for key, value in fields.items())


def configure_logging(verbose: bool, *, stream: IO[str] | None = None,
                      style: str | None = None) -> Callable[[], None]:
    """Route every logger (the SDKs' included) through one formatter on stderr; returns an undo.

    The undo puts the root logger back as it was: `main()` called in-process (the tests, an embedding
    program) must not leave a handler on a stream that its caller closes afterwards.
    """
    style = style or os.environ.get("JITPASS_LOG_FORMAT", "kv").strip().lower() or "kv"
    if style not in LOG_FORMATS:
        print(f"jitpass: JITPASS_LOG_FORMAT={style!r} is not one of {', '.join(LOG_FORMATS)}; using kv",
              file=sys.stderr)
        style = "kv"
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogFormatter(style))
    root = logging.getLogger()
    before_level = root.level
    noisy_levels = {name: logging.getLogger(name).level for name in _NOISY}
    removed = [old for old in root.handlers  # ours from an earlier call, or a default stderr handler
               if isinstance(old.formatter, LogFormatter) or type(old) is logging.StreamHandler]
    for old in removed:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def undo() -> None:
        root.removeHandler(handler)
        for old in removed:
            root.addHandler(old)
        root.setLevel(before_level)
        for name, level in noisy_levels.items():
            logging.getLogger(name).setLevel(level)

    return undo
