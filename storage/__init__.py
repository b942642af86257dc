"""Store adapters: `open_store(url, clock)` picks SQLite or MongoDB from a JITPASS_STORE value."""

from __future__ import annotations

from pathlib import Path

from bot.domain.errors import StoreError
from bot.ports import Clock, Store

from .sqlite import SqliteStore

__all__ = ["ACCEPTED_FORMS", "open_store"]

ACCEPTED_FORMS = (
    "sqlite:///relative/path.db",
    "sqlite:////absolute/path.db",
    "a plain file path (./jitpass.db)",
    "mongodb://[user:password@]host[:port][/database]",
    "mongodb+srv://[user:password@]host[/database]",
)


def open_store(url: str, clock: Clock, *, allow_standalone: bool = False) -> Store:
    """The store a URL names, not yet connected: the caller awaits `store.open()`.

    `allow_standalone`: a MongoDB server without transactions is accepted (development only).
    """
    text = url.strip()
    if text.startswith(("mongodb://", "mongodb+srv://")):
        from .mongo import MongoStore  # only deployments on MongoDB need the driver loaded

        return MongoStore(text, clock, allow_standalone=allow_standalone)
    if text.startswith("sqlite:"):
        # sqlite:///x.db is relative, sqlite:////x.db absolute (the SQLAlchemy convention).
        if not text.startswith("sqlite:///") or len(text) == len("sqlite:///"):
            raise StoreError(_unsupported("a sqlite: URL needs three slashes and a path"))
        return SqliteStore(Path(text.removeprefix("sqlite:///")).expanduser(), clock)
    if "://" in text or not text:
        scheme = text.split("://", 1)[0] if text else ""
        # Only the scheme is echoed: the rest of a URL may carry a password.
        problem = f"unsupported store URL scheme {scheme!r}" if scheme else "empty store URL"
        raise StoreError(_unsupported(problem))
    return SqliteStore(Path(text).expanduser(), clock)


def _unsupported(problem: str) -> str:
    return f"{problem}; JITPASS_STORE accepts: " + ", ".join(ACCEPTED_FORMS)
