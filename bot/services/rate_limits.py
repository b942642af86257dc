"""Per-person rate limits for the actions one person can repeat quickly: requests, New code, reports.

Counted in this process (a sliding window over the injected clock): with N replicas a person gets at
most N times the budget. The check and the count happen without an await between them, so a burst of
concurrent presses cannot all slip through.

A burst of refusals is audited twice, not once per refusal: its first refusal at once (`access.refused`),
and, when the burst ends (the person may act again), one `access.refused_burst` with how many attempts
were refused in all, so the trail shows the volume without a flood writing an event per press."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.model import Identity
from bot.domain.policy import RateLimit
from bot.ports import Clock

__all__ = ["Burst", "RateLimiter", "Verdict"]


class Verdict:
    """A refused attempt: how long until the next is allowed, and whether it is the first refusal of
    this window (that one is audited; later ones only logged, so a flood cannot flood the trail)."""

    def __init__(self, retry_after: timedelta, first: bool) -> None:
        self.retry_after = retry_after
        self.first = first


@dataclass
class Burst:
    """Refusals of one person's `action` in a row: who was refused first, how many, from when to when,
    and when the person may act again (the burst ends then)."""

    actor: Identity
    action: str
    limit: RateLimit
    refused: int
    first_at: datetime
    last_at: datetime
    ends_at: datetime


class RateLimiter:
    """Sliding windows per (person, action), and the bursts of refusals they cause."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._seen: dict[tuple[str, str], deque[datetime]] = {}
        self._bursts: dict[tuple[str, str], Burst] = {}
        self._ended: list[Burst] = []

    def take(self, person: str, action: str, limit: RateLimit, actor: Identity | None = None) -> Verdict | None:
        """Count one `action` by `person`: None when allowed, else the refusal."""
        now = self.clock.now()
        key = (person, action)
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - limit.per:
            seen.popleft()
        if len(seen) < limit.count:
            seen.append(now)
            ended = self._bursts.pop(key, None)
            if ended is not None:
                self._ended.append(ended)
            return None
        retry_at = seen[0] + limit.per
        burst = self._bursts.get(key)
        if burst is None:
            self._bursts[key] = Burst(actor or Identity("", person), action, limit, 1, now, now, retry_at)
            return Verdict(retry_at - now, True)
        burst.refused += 1
        burst.last_at, burst.ends_at = now, retry_at
        return Verdict(retry_at - now, False)

    def ended_bursts(self) -> list[Burst]:
        """Bursts that ended (the person acted again, or may: their window reopened), each returned once."""
        now = self.clock.now()
        for key, burst in list(self._bursts.items()):
            if burst.ends_at <= now:
                self._ended.append(self._bursts.pop(key))
        ended, self._ended = self._ended, []
        return ended
