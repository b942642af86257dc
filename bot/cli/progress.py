"""Progress bars for long operations (a report over a large trail, a purge): on a terminal only.

`progress(stream)` yields a `Tracker`: a rich progress bar when `stream` is a TTY, otherwise one that
does nothing, so pipes, files, cron and CI logs stay quiet.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from bot.ports import QUIET, Tracker

__all__ = ["QUIET", "RichTracker", "Tracker", "progress"]


class RichTracker(Tracker):
    """A rich progress bar: one line per step, removed when the operation ends."""

    def __init__(self, bar: Progress) -> None:
        self._bar = bar
        self._task: TaskID | None = None

    def start(self, description: str, total: float | None = None) -> None:
        self.finish()
        self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: float = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, amount)

    def finish(self) -> None:
        if self._task is not None:
            task = self._bar.tasks[-1] if self._bar.tasks else None
            if task is not None and task.total is not None:
                self._bar.update(self._task, completed=task.total)
            self._bar.stop_task(self._task)
            self._task = None


@contextmanager
def progress(stream: TextIO | None = None, *, enabled: bool | None = None) -> Iterator[Tracker]:
    """A Tracker drawing on `stream` (default stderr) when it is a terminal, else QUIET."""
    stream = stream if stream is not None else sys.stderr
    if enabled is None:
        isatty = getattr(stream, "isatty", None)
        enabled = bool(isatty and isatty())
    if not enabled:
        yield QUIET
        return
    console = Console(file=stream, force_terminal=True)
    bar = Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
    tracker = RichTracker(bar)
    with bar:
        try:
            yield tracker
        finally:
            tracker.finish()
