"""The scheduler: a cache of the store's timing. The store says what is due; APScheduler wakes us then.

On start, every minute, and after every change we plan again from the store: overdue work runs at
once, the next due moment gets one date job. Jobs are idempotent because transitions are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.domain.model import AccessRequest, RequestKind, Status
from bot.services.access import AccessService

__all__ = ["TICK_RETRY_MAX", "GrantScheduler"]

TICK_RETRY_MAX = timedelta(seconds=30)

log = logging.getLogger("jitpass.schedule")


class GrantScheduler:
    """Plans timeouts, activations and expiries from the store; runs what is overdue at once."""

    def __init__(self, service: AccessService, *, replan_every: timedelta = timedelta(minutes=1)) -> None:
        self.service = service
        self.replan_every = replan_every
        self._scheduler: AsyncIOScheduler | None = None
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[object]] = set()
        self._replan_queued = False
        # The moment the next-due job was planned for (the service's clock), None: nothing planned.
        self._planned: datetime | None = None
        self._tick_waiting = False  # a tick started by `_fire` has not taken `_lock` yet
        self._failures = 0  # ticks failed in a row: the retry waits 2, 4, 8 … seconds, at most TICK_RETRY_MAX
        service.on_change.append(self._request_changed)

    async def start(self) -> None:
        """Start planning; overdue work runs in the background (the server answers meanwhile)."""
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._scheduler.add_job(self._fire, IntervalTrigger(seconds=self.replan_every.total_seconds()),
                                id="replan", coalesce=True, max_instances=1)
        self._scheduler.start()
        self._spawn(self.tick())

    async def _fire(self) -> None:
        """The APScheduler jobs' function: start a tick as a task of ours and return at once. A tick plans the
        next-due job while it runs; run by APScheduler itself, a job planned for a moment already here found
        the planning tick still counted as running and was skipped (max_instances), and a skipped date job is
        gone: every end after it waited for the next re-plan (a minute). `_lock` keeps ticks one at a time, and
        one waiting tick covers every wake-up that comes meanwhile (it reads the store when it runs)."""
        if not self._tick_waiting:
            self._tick_waiting = True
            self._spawn(self.tick())

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def add_interval(self, job_id: str, func: Callable[[], Awaitable[object]], every: timedelta) -> None:
        """Run `func` every `every` (first run right away), one at a time."""
        if self._scheduler is not None:
            self._scheduler.add_job(func, IntervalTrigger(seconds=every.total_seconds()), id=job_id,
                                    replace_existing=True, max_instances=1, coalesce=True,
                                    next_run_time=datetime.now(UTC))

    def add_daily(self, job_id: str, func: Callable[[], Awaitable[object]], hour: int, minute: int, tz: str) -> None:
        """A daily job (retention purge) in the policy's time zone."""
        if self._scheduler is not None:
            self._scheduler.add_job(func, CronTrigger(hour=hour, minute=minute, timezone=tz), id=job_id,
                                    coalesce=True, max_instances=1, replace_existing=True)

    async def shutdown(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._scheduler = None

    async def tick(self) -> int:
        """Apply everything due now and schedule a wake-up for the next due moment."""
        async with self._lock:
            self._tick_waiting = False  # a wake-up from now on needs a tick after this one
            try:
                applied = self.service.clock.now()
                ran = await self.service.run_due(now=applied)
                await self.service.summarise_refusal_bursts()
                self._plan(await self.service.store.next_due_at(), applied=applied)
            except Exception:  # keep the scheduler alive and try again soon (a store outage, say)
                log.exception("scheduler tick failed")
                self._failures += 1
                # What was planned did not happen: wake again within seconds, not at the next replan interval
                # (a window that ended during a store outage must end as soon as the store is back).
                self._plan(self.service.clock.now() + min(TICK_RETRY_MAX, timedelta(seconds=2 ** self._failures)))
                return 0
            self._failures = 0
            return ran

    def _plan(self, at: datetime | None, *, applied: datetime | None = None) -> None:
        """One date job for `at`. `applied`: the tick just applied what was due up to then; a moment after
        it that is already past (it became due while the tick ran) is run at once."""
        if self._scheduler is None:
            return
        self._planned = at
        if at is None:
            if self._scheduler.get_job("next-due"):
                self._scheduler.remove_job("next-due")
            return
        # Wait as long as the service's clock says is left (an injected clock need not be wall time). Wake
        # exactly then. A moment already past waits a little only if it was due when the tick looked (it could
        # not be applied: one stuck request must not make the scheduler spin); one that came due while the
        # tick ran (ends arriving during a batch, the usual case under load) runs at once.
        delay = at - self.service.clock.now()
        if delay <= timedelta(0):
            delay = timedelta(0) if applied is not None and at > applied else timedelta(seconds=0.5)
        run_date = datetime.now(UTC) + delay
        self._scheduler.add_job(self._fire, DateTrigger(run_date=run_date), id="next-due", replace_existing=True,
                                misfire_grace_time=None, coalesce=True)

    def _request_changed(self, request: AccessRequest) -> None:
        # A burst of changes (a batch of expiries) is one re-plan, not one store query each.
        if self._scheduler is None or self._replan_queued:
            return
        # A change can only bring the next wake-up forward if the request is now due before it: a new request
        # timing out after the planned moment (the usual case) costs no store query. A request closed early
        # may leave a wake-up with nothing to do; that tick plans again from the store.
        due = _due_of(request)
        if due is None or (self._planned is not None and due >= self._planned):
            return
        self._replan_queued = True
        self._spawn(self._replan_soon())

    async def _replan_soon(self) -> None:
        async with self._lock:
            self._replan_queued = False
            self._plan(await self.service.store.next_due_at())


def _due_of(request: AccessRequest) -> datetime | None:
    """When the scheduler must act on `request` next (the store's DUE_RULES), None if never."""
    if request.status is Status.PENDING:
        return request.timeout_at
    if request.status is Status.APPROVED and request.kind is RequestKind.ACCESS:
        return request.starts_at
    if request.status is Status.ACTIVE:
        return request.ends_at
    return None
