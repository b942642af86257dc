"""Admission control for the chat endpoints: at most `running` requests do core work at once, at most
`queued` more wait for a turn, and any request beyond that is refused before anything is started.

The rule a user can rely on: a request is either admitted (it will run, and its outcome is told,
in the acknowledgement or in a follow-up) or refused at arrival ("busy, nothing was recorded").
A request is never refused after it started.

A request that finds no turn free waits for one for a short share of its acknowledgement budget
(`TURN_WAIT_SHARE`: under load a turn frees every few milliseconds) before its acknowledgement says "queued";
one that gets its turn meanwhile is answered like any other, its outcome in the acknowledgement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = ["ACK_BUDGET_SECONDS", "ARRIVED", "SLACK_ACK_SECONDS", "TURN_WAIT_SHARE", "Admission", "Ticket", "arrived",
           "deadline"]

# Slack gives 3 s for the acknowledgement (Teams invokes a little more): keep the rest for the network.
ACK_BUDGET_SECONDS = 2.0
SLACK_ACK_SECONDS = 3.0
# Of the ack budget, how long a request that found no turn free waits for one before it is told "queued"
# (0.25 s of the default 2 s): a queued answer costs a journal line, a durable follow-up and a second
# message, and under a burst most waits for a turn are a few milliseconds.
TURN_WAIT_SHARE = 0.125
# When the request being handled arrived (event-loop time): set by the app's first middleware, before the
# body is read, and read by the adapters' handlers (the same task), so the budget counts time spent before them.
ARRIVED: ContextVar[float | None] = ContextVar("jitpass_arrived", default=None)


def arrived() -> float:
    """The arrival of the request being handled (now, when no middleware stamped it, e.g. Socket Mode)."""
    stamp = ARRIVED.get()
    return stamp if stamp is not None else asyncio.get_running_loop().time()


def deadline(arrived: float, budget: float, *, sent_at: int | None = None, now_wall: float | None = None) -> float:
    """When the acknowledgement must leave (event-loop time): `budget` after arrival, earlier when the sender's
    timestamp (whole seconds, e.g. X-Slack-Request-Timestamp) shows the request waited before it arrived."""
    late = 0.0
    if sent_at is not None and now_wall is not None:
        late = max(0.0, now_wall - sent_at - 1.0)  # a whole-second stamp may be up to 1 s early
    return arrived + max(0.0, budget - late)


@dataclass
class Ticket:
    """One admitted request; `queued` when no turn was free at arrival."""

    admission: Admission
    queued: bool
    started: bool = False  # the work has its turn
    told_queued: bool = False  # the acknowledgement said "queued" before the work had its turn
    dropped: bool = False  # given up before its turn (`drop`): the work never runs

    async def run[T](self, work: Coroutine[Any, Any, T], *, dropped: T) -> T:
        """Wait for a turn, then run `work` (or return `dropped` when the ticket was dropped meanwhile); the
        place in the bound is given back whatever happens."""
        try:
            async with self.admission.turns:
                if not self.dropped:
                    self.started = True
                    return await work
                return dropped
        finally:
            if not self.started:
                work.close()  # never started: nothing was recorded
            self.give_back()

    async def wait(self, task: asyncio.Future[Any], *, deadline: float, budget: float) -> bool:
        """Wait for `task` (this ticket's `run`) until `deadline` (event-loop time), but when no turn was free at
        arrival for at most `TURN_WAIT_SHARE` of the ack `budget` until it has one. True: it finished. False: it
        is still running (the acknowledgement says "working"), or, with `told_queued` now set, still waiting for
        its turn (it says "queued": the work, when its turn comes, knows its answer goes by a durable follow-up)."""
        loop = asyncio.get_running_loop()
        if self.queued:
            turn_by = min(deadline, loop.time() + budget * TURN_WAIT_SHARE)
            await asyncio.wait({task}, timeout=max(0.0, turn_by - loop.time()))
            if not task.done() and not self.started:
                self.told_queued = True
                return False
        await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
        return task.done()

    def drop(self) -> None:
        """Give up a ticket still waiting for its turn (e.g. its promise could not be journaled): the work is
        never started; its place is given back when the turn comes."""
        if self.started:
            raise RuntimeError("a started request cannot be dropped")
        self.dropped = True

    def give_back(self) -> None:
        """Leave the bound without running (the work could not be started); `run` calls it too."""
        self.admission.admitted -= 1


class Admission:
    """A bounded queue in front of the core: `admit()` answers at once, never waits."""

    def __init__(self, running: int, queued: int) -> None:
        if running < 1 or queued < 0:
            raise ValueError("admission needs running >= 1 and queued >= 0")
        self.running = running
        self.queued = queued
        self.turns = asyncio.Semaphore(running)
        self.admitted = 0  # running plus waiting
        self.refused = 0
        self.total = 0  # admitted since start (with `--workers`, /healthz shows how the kernel spread them)

    def admit(self) -> Ticket | None:
        """A ticket, or None when `running + queued` requests are already admitted (refuse: busy)."""
        if self.admitted >= self.running + self.queued:
            self.refused += 1
            return None
        ticket = Ticket(self, queued=self.admitted >= self.running)
        self.admitted += 1
        self.total += 1
        return ticket

    def describe(self) -> dict[str, int]:
        """For /healthz: the limits and what is admitted now."""
        return {"max_running": self.running, "max_queued": self.queued, "admitted": self.admitted,
                "waiting": max(0, self.admitted - self.running), "refused": self.refused, "total": self.total}
