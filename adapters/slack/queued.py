"""The journal of queued slash-command requests: what a process promised ("⏳ Queued … I'll follow up here")
but had not yet started when it died.

A request acknowledged "⏳ Working on it…" (it had a turn but outran the ack budget) is journaled the same way,
with `durable_answer=False`: if it was created, the next process sends its answer (at least once: a kill
between that answer and its `finished` line repeats it); if not, it is refused and told as below.

A queued request waits in memory for a turn; its follow-up is made durable in two halves:
- once it runs, the request is created together with a TELL effect carrying the answer (bot/services/effects.py
  sends it, after a crash too, from any process on the store);
- before that, only this journal knows it: one line written before the acknowledgement leaves, one when the
  request has been created or its outcome told. A process that starts finds the lines of its predecessor
  without an end and, for each, checks the store: created (the TELL effect will answer) or not (recorded as
  refused, `access.refused` with `why=restarted_before_it_ran`, and the user told to send it again).

The file is appended with plain `write()` calls, no fsync: a killed process (kill -9, the OOM killer) loses
nothing the kernel has, but a host that loses power may lose the last lines. It holds response URLs (they let
anyone post to that user for 30 minutes), so it is created 0600 in jitpass's home and emptied whenever
nothing is waiting. One journal per worker (`--workers`): worker k reads only its own file at start.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bot.domain.errors import StartupError

__all__ = ["QueuedCommand", "QueuedJournal"]

log = logging.getLogger("jitpass.slack.queued")


@dataclass(frozen=True)
class QueuedCommand:
    """What a queued `/access <item> <why> <when>` needs for its follow-up: the id it will have, and where to say it."""

    request_id: str
    user_id: str
    response_url: str
    channel_id: str
    at: str  # when it was acknowledged, ISO 8601 UTC
    # True: it was queued, and its answer is recorded with the request (a TELL effect). False: it was running
    # when "Working on it…" left, and only this process would have answered: the next one answers instead.
    durable_answer: bool = True

    @classmethod
    def from_json(cls, data: Any) -> QueuedCommand | None:
        """Read back one journal entry; None when it is not one (a torn last line)."""
        if not isinstance(data, dict):
            return None
        fields = [data.get(name) for name in ("request_id", "user_id", "response_url", "channel_id", "at")]
        if not all(isinstance(value, str) for value in fields):
            return None
        request_id, user_id, response_url, channel_id, at = (str(value) for value in fields)
        return cls(request_id, user_id, response_url, channel_id, at,
                   durable_answer=data.get("durable_answer") is not False)


class QueuedJournal:
    """An append-only file of `queued` and `finished` lines (None: kept in memory only, e.g. in tests)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None
        self.waiting: set[str] = set()

    def open(self) -> list[QueuedCommand]:
        """Return what the previous process left unfinished (the file itself is made at the first queued line)."""
        if self.path is None:
            return []
        left = self._read()
        self.waiting |= {entry.request_id for entry in left}
        if left:
            try:
                self._open_file()
            except OSError as exc:
                raise StartupError(f"cannot write the queued-requests journal {self.path}: {exc.strerror or exc}. "
                                   "It must be a file this process can read and write") from None
        return left

    def _open_file(self) -> int:
        if self._fd is None:
            assert self.path is not None
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def _read(self) -> list[QueuedCommand]:
        try:
            text = self.path.read_text(encoding="utf-8") if self.path is not None else ""
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not text: fix it, then start
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "it is not a text file"
            raise StartupError(f"cannot read the queued-requests journal {self.path}: {reason}. It must be a "
                               "file this process can read and write (or absent)") from None
        queued: dict[str, QueuedCommand] = {}
        for line in text.splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue  # a line torn by the kill: it was never acknowledged
            if isinstance(data, dict) and isinstance(data.get("finished"), str):
                queued.pop(data["finished"], None)
            elif isinstance(data, dict) and (entry := QueuedCommand.from_json(data.get("queued"))) is not None:
                queued[entry.request_id] = entry
        return list(queued.values())

    def _write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        written = os.write(self._open_file(), line)
        if written != len(line):
            raise OSError("short write to the queued-requests journal")

    def queued(self, entry: QueuedCommand) -> None:
        """Record a promise before its acknowledgement leaves; raises OSError when it cannot (answer busy then)."""
        self._write({"queued": asdict(entry)})
        self.waiting.add(entry.request_id)

    def finished(self, request_id: str) -> None:
        """The promise is kept (or durable elsewhere); the file is emptied when nothing else waits."""
        if request_id not in self.waiting:
            return
        self.waiting.discard(request_id)
        try:
            if self._fd is not None and not self.waiting:
                os.ftruncate(self._fd, 0)
            else:
                self._write({"finished": request_id})
        except OSError as exc:  # at worst the next start tells this user once more
            log.warning("event=queued_journal_write_failed request_id=%s error=%s", request_id, exc.strerror)

    def close(self) -> None:
        """Close the file (what is unfinished stays for the next start)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
