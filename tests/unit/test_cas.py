"""The one compare-and-set retry helper the use cases share (bot.services.cas)."""
from __future__ import annotations

import asyncio

import pytest

from bot.domain.errors import Conflict
from bot.services.cas import CAS_ATTEMPTS, changing_too_quickly, retry_cas


def run_with_misses(misses: int, attempts: int = CAS_ATTEMPTS) -> tuple[str | Conflict, int]:
    calls = 0

    async def attempt() -> str | None:
        nonlocal calls
        calls += 1
        return None if calls <= misses else f"won on try {calls}"

    async def go() -> str | Conflict:
        try:
            return await retry_cas(attempt, attempts=attempts, exhausted=lambda: changing_too_quickly("R-X"))
        except Conflict as exc:
            return exc

    return asyncio.run(go()), calls


def test_first_win_is_returned_without_retrying() -> None:
    assert run_with_misses(0) == ("won on try 1", 1)


def test_lost_races_are_retried_from_a_fresh_attempt() -> None:
    assert run_with_misses(CAS_ATTEMPTS - 1) == (f"won on try {CAS_ATTEMPTS}", CAS_ATTEMPTS)


def test_bounded_in_count_then_the_callers_conflict() -> None:
    result, calls = run_with_misses(100, attempts=3)
    assert calls == 3
    assert isinstance(result, Conflict)
    assert str(result) == "R-X is changing too quickly; try again."


def test_a_refusal_on_the_fresh_read_is_not_retried() -> None:
    calls = 0

    async def attempt() -> str | None:
        nonlocal calls
        calls += 1
        raise Conflict("R-X was already declined")

    with pytest.raises(Conflict, match="already declined"):
        asyncio.run(retry_cas(attempt, exhausted=lambda: changing_too_quickly("R-X")))
    assert calls == 1


def test_zero_attempts_is_a_programming_error() -> None:
    async def attempt() -> str | None:
        return "x"

    with pytest.raises(ValueError):
        asyncio.run(retry_cas(attempt, attempts=0, exhausted=lambda: changing_too_quickly("R-X")))
