"""Work that continues after Slack got its 3-second acknowledgement, with every task kept referenced."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["Background"]

log = logging.getLogger("jitpass.slack")


class Background:
    """Holds strong references to running tasks (the loop keeps only weak ones) and drains them on stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        # Loops that run until cancelled (the Home tab's refreshers): `drain` would wait for them forever.
        self._lasting: set[asyncio.Task[Any]] = set()

    def spawn[T](self, coro: Coroutine[Any, Any, T], *, name: str, lasting: bool = False) -> asyncio.Task[T]:
        """Start `coro` now; it stays referenced until it finishes (`lasting`: not drained, only cancelled)."""
        task = asyncio.get_running_loop().create_task(coro, name=f"jitpass-slack-{name}")
        (self._lasting if lasting else self._tasks).add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._lasting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Handlers catch their own errors; this is the last line, and it logs no message text.
            log.error("event=background_task_failed task=%s error=%s", task.get_name(),
                      type(task.exception()).__name__)

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until all work (including work started meanwhile) has finished; lasting loops keep running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"{len(self._tasks)} Slack task(s) still running")
            await asyncio.wait(set(self._tasks), timeout=left)

    async def close(self) -> None:
        """Cancel what is still running, lasting loops included (server shutdown)."""
        tasks = [*self._tasks, *self._lasting]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
