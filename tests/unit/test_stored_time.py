"""Stored times: `parse_time` reads exactly what `format_time` writes (the fast path and strptime agree)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.audit import format_time, parse_time


@pytest.mark.parametrize("at", [
    datetime(2026, 12, 2, 20, 33, 34, 170379, tzinfo=UTC),
    datetime(1999, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 3, 29, 2, 30, tzinfo=UTC) + timedelta(microseconds=1),
])
def test_a_stored_time_reads_back_as_the_same_instant(at: datetime) -> None:
    text = format_time(at)
    assert parse_time(text) == at and parse_time(text).tzinfo is UTC
    assert parse_time(text) == datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@pytest.mark.parametrize("text", [
    "2026-12-02T20:33:34Z", "2026-12-02 20:33:34.170379Z", "2026-13-02T20:33:34.170379Z",
    "2026-12-02T20:33:34.170379+00:00", "2026-12-02T20:33:34.170379", "",
])
def test_a_text_format_time_never_writes_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)
