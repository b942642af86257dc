"""Per-person rate limits for the actions one person can repeat quickly: requests, New code, reports.

Counted in this process (a sliding window over the injected clock): with N replicas a person gets at
most N times the budget. The check and the count happen without an await between them, so a burst of
concurrent presses cannot all slip through."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from bot.domain.policy import RateLimit
from bot.ports import Clock

__all__ = ["RateLimiter", "Verdict"]


class Verdict:
    """A refused attempt: how long until the next is allowed, and whether it is the first refusal of
    this window (that one is audited; later ones only logged, so a flood cannot flood the trail)."""

    def __init__(self, retry_after: timedelta, first: bool) -> None:
        self.retry_after = retry_after
        self.first = first


class RateLimiter:
    """Sliding windows per (person, action)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._seen: dict[tuple[str, str], deque[datetime]] = {}
        self._refused_since: dict[tuple[str, str], datetime] = {}

    def take(self, person: str, action: str, limit: RateLimit) -> Verdict | None:
        """Count one `action` by `person`: None when allowed, else the refusal."""
        now = self.clock.now()
        key = (person, action)
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - limit.per:
            seen.popleft()
        if len(seen) < limit.count:
            seen.append(now)
            self._refused_since.pop(key, None)
            return None
        first = key not in self._refused_since
        self._refused_since.setdefault(key, now)
        return Verdict(seen[0] + limit.per - now, first)
