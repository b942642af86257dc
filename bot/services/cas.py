"""One bounded compare-and-set retry for the use cases.

A use case reads a record, decides, and writes it back only if its version is still the one it read
(`Store.transition(..., expected_version=...)`, `Store.save_refs(..., refs_version)`). When another writer
got there first the write reports a miss and the whole read-decide-write runs again from a fresh read. The
retry is bounded in count (no sleeping: every attempt re-reads, so a lost race is resolved by the next read);
when every attempt misses the caller's `Conflict` is raised and nothing of the last attempt was written.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.domain.errors import Conflict

# Attempts for a read-decide-write over a request whose version others may bump meanwhile.
CAS_ATTEMPTS = 5


def changing_too_quickly(record_id: str) -> Conflict:
    """What a user is told when every attempt lost its race."""
    return Conflict(f"{record_id} is changing too quickly; try again.")


async def retry_cas[T](attempt: Callable[[], Awaitable[T | None]], *, exhausted: Callable[[], Conflict],
                       attempts: int = CAS_ATTEMPTS) -> T:
    """Run `attempt` until it returns a result; `None` means its compare-and-set lost and it is re-run
    (from its own fresh read). After `attempts` misses, raise `exhausted()`. Errors `attempt` raises
    (a refusal decided on the fresh read) propagate at once."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for _ in range(attempts):
        result = await attempt()
        if result is not None:
            return result
    raise exhausted()
