"""Witnesses for signed audit checkpoints that live outside the database: an append-only file.

Point JITPASS_AUDIT_WITNESS_FILE at storage the database administrator cannot write (another host's
mount, a WORM bucket sync, a file made append-only with `chattr +a`). Each checkpoint is one line,
written with O_APPEND and fsynced, so a crash leaves at most one incomplete last line, which
`audit verify --witness` names as garbage.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bot.domain.audit_signing import SignedCheckpoint

__all__ = ["FileWitness"]


class FileWitness:
    """Appends each checkpoint as one JSON line (mode 0600 when it creates the file)."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def publish(self, checkpoint: SignedCheckpoint) -> None:
        """Append one line and fsync it."""
        await asyncio.to_thread(self._append, (checkpoint.to_line() + "\n").encode("utf-8"))

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
