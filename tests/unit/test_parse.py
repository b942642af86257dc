"""The request parser: `<item> <why> <when>` into a draft, and durations both ways.

Every case runs against a fixed clock: Tuesday 10 March 2026, 10:00 in Amsterdam
(CET, UTC+1, so 09:00 UTC). Daylight saving starts there on Sunday 29 March and ends
on Sunday 25 October.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest

from bot.domain.errors import ParseError
from bot.domain.model import Window
from bot.domain.request_text import RequestDraft, format_duration, parse_duration, parse_request

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2026, 3, 10, 10, 0, tzinfo=AMSTERDAM)
EVENING = datetime(2026, 3, 10, 18, 2, tzinfo=AMSTERDAM)
NOW_UTC = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
DEFAULT = timedelta(hours=1)

H = timedelta(hours=1)
M = timedelta(minutes=1)


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def parse(text: str, *, now: datetime = NOW, tz: tzinfo = AMSTERDAM) -> RequestDraft:
    return parse_request(text, now=now, tz=tz, default_duration=DEFAULT)


# (text, reason, duration, start); the item is always acme-zendesk. duration None = no when-phrase.
VALID = [
    # durations from approval
    pytest.param("acme-zendesk fix broken trigger for 1h", "fix broken trigger", H, None, id="for-1h"),
    pytest.param("acme-zendesk fix ticket 1234 for 1h", "fix ticket 1234", H, None, id="number-in-reason"),
    pytest.param("acme-zendesk 30m", "", 30 * M, None, id="duration-only"),
    pytest.param("acme-zendesk rotate keys 2h", "rotate keys", 2 * H, None, id="bare-2h"),
    pytest.param("acme-zendesk check 1h30m", "check", 90 * M, None, id="bare-1h30m"),
    pytest.param("acme-zendesk check 90s", "check", timedelta(seconds=90), None, id="bare-90s"),
    pytest.param("acme-zendesk check for 45m", "check", 45 * M, None, id="for-45m"),
    pytest.param("acme-zendesk check for 2 hours", "check", 2 * H, None, id="for-2-hours"),
    pytest.param("acme-zendesk check 45 min", "check", 45 * M, None, id="bare-45-min"),
    pytest.param("acme-zendesk check for 1 hour and 30 minutes", "check", 90 * M, None, id="hour-and-minutes"),
    pytest.param("acme-zendesk check for 1.5h", "check", 90 * M, None, id="decimal-hours"),
    pytest.param("acme-zendesk check for 1,5h", "check", 90 * M, None, id="decimal-comma"),
    pytest.param("acme-zendesk check for 1h30", "check", 90 * M, None, id="1h30-shorthand"),
    pytest.param("acme-zendesk check for 1:30", "check", 90 * M, None, id="clock-style-duration"),
    pytest.param("acme-zendesk check for an hour", "check", H, None, id="an-hour"),
    pytest.param("acme-zendesk check for the next 2 hours", "check", 2 * H, None, id="for-the-next"),
    pytest.param("acme-zendesk check for 1d", "check", 24 * H, None, id="one-day"),
    pytest.param("acme-zendesk check for 1 week", "check", 7 * 24 * H, None, id="one-week"),
    pytest.param("acme-zendesk check now for 2h", "check", 2 * H, None, id="now-for-2h"),
    pytest.param("acme-zendesk check now", "check", DEFAULT, None, id="now-alone-default"),
    pytest.param("acme-zendesk check today for 2h", "check", 2 * H, None, id="today-for-2h"),
    # until a clock time, from approval
    pytest.param("acme-zendesk check until 17:30", "check", 7 * H + 30 * M, None, id="until-24h"),
    pytest.param("acme-zendesk check until 5:30pm", "check", 7 * H + 30 * M, None, id="until-pm"),
    pytest.param("acme-zendesk check now until 5 pm", "check", 7 * H, None, id="now-until-spaced-pm"),
    pytest.param("acme-zendesk check until midnight", "check", 14 * H, None, id="until-midnight"),
    pytest.param("acme-zendesk check until tomorrow 9am", "check", 23 * H, None, id="until-tomorrow"),
    # later or absolute windows
    pytest.param("acme-zendesk check in 30m for 2h", "check", 2 * H, utc(3, 10, 9, 30), id="in-30m-for-2h"),
    pytest.param("acme-zendesk check in 2h", "check", DEFAULT, utc(3, 10, 11), id="in-2h-default"),
    pytest.param("acme-zendesk check today 14:00-16:00", "check", 2 * H, utc(3, 10, 13), id="today-range"),
    pytest.param("acme-zendesk check 14:00-16:00", "check", 2 * H, utc(3, 10, 13), id="bare-range"),
    pytest.param("acme-zendesk check 14:00 - 16:00", "check", 2 * H, utc(3, 10, 13), id="spaced-range"),
    pytest.param("acme-zendesk check 14:00–16:00", "check", 2 * H, utc(3, 10, 13), id="en-dash-range"),
    pytest.param("acme-zendesk check from 2pm to 4pm tomorrow", "check", 2 * H, utc(3, 11, 13), id="from-to"),
    pytest.param("acme-zendesk check tomorrow 9am-11am", "check", 2 * H, utc(3, 11, 8), id="tomorrow-am"),
    pytest.param("acme-zendesk check tomorrow 9-11am", "check", 2 * H, utc(3, 11, 8), id="shared-meridiem"),
    pytest.param("acme-zendesk check tomorrow 11-1pm", "check", 2 * H, utc(3, 11, 10), id="meridiem-flips"),
    pytest.param("acme-zendesk check tomorrow 9am for 1h", "check", H, utc(3, 11, 8), id="tomorrow-for"),
    pytest.param("acme-zendesk check tomorrow 09:00 for 30m", "check", 30 * M, utc(3, 11, 8), id="tomorrow-24h"),
    pytest.param("acme-zendesk check at 14:00 for 1h", "check", H, utc(3, 10, 13), id="at-for"),
    pytest.param("acme-zendesk check at 9 a.m. tomorrow", "check", DEFAULT, utc(3, 11, 8), id="clock-then-day"),
    pytest.param("acme-zendesk check tomorrow at noon for 1h", "check", H, utc(3, 11, 11), id="noon"),
    pytest.param("acme-zendesk check today 22:00-midnight", "check", 2 * H, utc(3, 10, 21), id="to-midnight"),
    pytest.param("acme-zendesk check monday 10:00-12:00", "check", 2 * H, utc(3, 16, 9), id="next-monday"),
    pytest.param("acme-zendesk check tuesday 11:00-12:00", "check", H, utc(3, 10, 10), id="weekday-later-today"),
    pytest.param("acme-zendesk check tuesday 09:00-11:00", "check", 2 * H, utc(3, 17, 8), id="weekday-passed-today"),
    pytest.param("acme-zendesk check next tuesday 11:00-12:00", "check", H, utc(3, 17, 10), id="next-weekday"),
    pytest.param("acme-zendesk check on friday 9am-5pm", "check", 8 * H, utc(3, 13, 8), id="on-friday"),
    pytest.param("acme-zendesk check 2026-03-29 01:00-04:00", "check", 2 * H, utc(3, 29, 0), id="dst-starts"),
    pytest.param("acme-zendesk check 2026-10-25 01:00-04:00", "check", 4 * H, utc(10, 24, 23), id="dst-ends"),
    # item and reason spelling
    pytest.param("acme-zendesk", "", None, None, id="item-only"),
    pytest.param("acme-zendesk fix ticket 1234", "fix ticket 1234", None, None, id="no-when"),
    pytest.param("`ACME-Zendesk` Fix Trigger FOR 1H", "Fix Trigger", H, None, id="backticks-and-case"),
    pytest.param("acme-zendesk: fix trigger, for 1h.", "fix trigger", H, None, id="punctuation"),
    pytest.param('acme-zendesk fix "broken" trigger 🔥 for 1h', 'fix "broken" trigger 🔥', H, None, id="quotes-emoji"),
    pytest.param("acme-zendesk fix trigger for 1h 🙏 :pray:", "fix trigger", H, None, id="trailing-emoji"),
    pytest.param("  acme-zendesk   fix\ntrigger   for 30m  ", "fix\ntrigger", 30 * M, None, id="whitespace"),
    pytest.param("acme-zendesk reset 2fa", "reset 2fa", None, None, id="2fa-is-reason"),
    pytest.param("acme-zendesk need a code for 2fa", "need a code for 2fa", None, None, id="for-2fa-is-reason"),
    pytest.param("acme-zendesk refund for 3 users", "refund for 3 users", None, None, id="for-3-users-is-reason"),
    pytest.param("acme-zendesk fails for 3rd time", "fails for 3rd time", None, None, id="ordinal-is-reason"),
    pytest.param("acme-zendesk log in for 2h", "log in", 2 * H, None, id="log-in"),
    pytest.param("acme-zendesk check the last 24h for 1h", "check the last 24h", H, None, id="duration-in-reason"),
    pytest.param("acme-zendesk look at ticket 12-13 for 1h", "look at ticket 12-13", H, None, id="range-ish-reason"),
    pytest.param("acme-zendesk speed up 2x", "speed up 2x", None, None, id="2x-is-reason"),
    pytest.param("acme-zendesk check tonight 20:00-22:00", "check tonight", 2 * H, utc(3, 10, 19), id="tonight"),
]


@pytest.mark.parametrize(("text", "reason", "duration", "start"), VALID)
def test_request_text_becomes_item_reason_and_window(
    text: str, reason: str, duration: timedelta | None, start: datetime | None
) -> None:
    draft = parse(text)

    expected = None if duration is None else Window(duration, start)
    assert draft == RequestDraft("acme-zendesk", reason, expected)
    if draft.window is not None and draft.window.start is not None:
        assert draft.window.start.utcoffset() == timedelta(0)


UTC_CASES = [
    pytest.param("acme-zendesk check today 14:00-16:00", Window(2 * H, utc(3, 10, 14)), id="range"),
    pytest.param("acme-zendesk check until 17:30", Window(7 * H + 30 * M), id="until"),
    pytest.param("acme-zendesk check tomorrow 9am for 1h", Window(H, utc(3, 11, 9)), id="tomorrow"),
]


@pytest.mark.parametrize(("text", "window"), UTC_CASES)
def test_times_are_read_in_the_given_zone(text: str, window: Window) -> None:
    assert parse(text, now=NOW_UTC, tz=UTC).window == window


# (text, now, what the message must say)
INVALID = [
    pytest.param("", NOW, "Say which item you need", id="empty"),
    pytest.param("   \n ", NOW, "Say which item you need", id="blank"),
    pytest.param("2h fix trigger", NOW, '"2h" looks like a time, not an item', id="duration-first"),
    pytest.param("for 1h fix trigger", NOW, "looks like a time, not an item", id="for-first"),
    pytest.param("acme-zendesk fix for 3 fortnights", NOW, '"fortnights" is not a unit I know', id="fortnights"),
    pytest.param("acme-zendesk fix for 2 months", NOW, '"months" is not a unit I know', id="months"),
    pytest.param("acme-zendesk fix for 1x", NOW, '"x" is not a unit I know', id="unknown-unit"),
    pytest.param("acme-zendesk fix for 2 hourss", NOW, 'did you mean "hours"?', id="unit-typo"),
    pytest.param("acme-zendesk fix for -1h", NOW, "can't be negative", id="negative"),
    pytest.param("acme-zendesk fix -1h", NOW, "can't be negative", id="bare-negative"),
    pytest.param("acme-zendesk fix for 0m", NOW, "longer than zero", id="zero"),
    pytest.param("acme-zendesk fix 0h", NOW, "longer than zero", id="bare-zero"),
    pytest.param("acme-zendesk fix for 0.3s", NOW, "longer than zero", id="rounds-to-zero"),
    pytest.param("acme-zendesk fix for 400d", NOW, "366 days", id="too-long"),
    pytest.param("acme-zendesk fix for 99999999999999999999d", NOW, "366 days", id="absurdly-long"),
    pytest.param("acme-zendesk fix for 2", NOW, '"2" needs a unit', id="missing-unit"),
    pytest.param("acme-zendesk fix in 30", NOW, '"30" needs a unit', id="in-missing-unit"),
    pytest.param("acme-zendesk fix until 25:00", NOW, '"until 25:00" as the time: "25:00" is not a time', id="25h"),
    pytest.param("acme-zendesk fix tomorrow 9:75", NOW, '"9:75" is not a time of day', id="bad-minutes"),
    pytest.param("acme-zendesk fix tomorrow 13pm", NOW, '"13pm" is not a time of day', id="13pm"),
    pytest.param("acme-zendesk fix tomorrow 25:00 for 1h", NOW, '"25:00" is not a time of day', id="bad-start"),
    pytest.param(
        "acme-zendesk fix until 17:30", EVENING, "17:30 has already passed today (it is 18:02 now)", id="until-passed"
    ),
    pytest.param("acme-zendesk fix until 10:00", NOW, "10:00 has already passed today", id="until-exactly-now"),
    pytest.param("acme-zendesk fix until 5", NOW, '"5" could be morning or evening', id="until-bare-hour"),
    pytest.param("acme-zendesk fix at 9 for 1h", NOW, '"9" could be morning or evening', id="at-bare-hour"),
    pytest.param("acme-zendesk fix tomorrow 9-11", NOW, '"9" could be morning or evening', id="bare-range"),
    pytest.param("acme-zendesk fix tomorrow", NOW, "When tomorrow?", id="tomorrow-alone"),
    pytest.param("acme-zendesk fix friday", NOW, "When friday?", id="weekday-alone"),
    pytest.param("acme-zendesk fix monday for 2h", NOW, "When monday?", id="weekday-without-clock"),
    pytest.param("acme-zendesk fix tomorrow morning", NOW, '"tomorrow" must be followed by a clock', id="morning"),
    pytest.param("acme-zendesk fix tomorrow until 17:00", NOW, "say when it starts", id="day-until"),
    pytest.param("acme-zendesk fix today 09:00-11:00", NOW, "That window starts in the past", id="started"),
    pytest.param("acme-zendesk fix at 9:30 for 1h", NOW, "starts in the past", id="start-passed"),
    pytest.param("acme-zendesk fix today 08:00-09:00", NOW, "starts in the past and is already over", id="over"),
    pytest.param("acme-zendesk fix 2026-03-09 10:00-11:00", NOW, "(10:00 yesterday; it is 10:00 now)", id="date"),
    pytest.param("acme-zendesk fix today 16:00-14:00", NOW, "ends (14:00) before it starts (16:00)", id="backwards"),
    pytest.param("acme-zendesk fix tomorrow 22:00-02:00", NOW, "ends (02:00) before it starts", id="overnight"),
    pytest.param("acme-zendesk fix today 14:00-14:00", NOW, "starts and ends at 14:00", id="empty-window"),
    pytest.param("acme-zendesk fix 14:00-16:00 for 1h", NOW, "an end time or a duration, not both", id="both"),
    pytest.param("acme-zendesk fix 2026-02-30 10:00-11:00", NOW, '"2026-02-30" is not a date', id="no-such-date"),
]


@pytest.mark.parametrize(("text", "now", "fragment"), INVALID)
def test_unreadable_request_names_the_problem_and_shows_an_example(text: str, now: datetime, fragment: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(text, now=now)

    assert fragment in caught.value.message
    assert caught.value.hint.startswith("Example: /access ")


# (text, the whole hint): the example keeps the requester's own item and reason.
HINTS = [
    pytest.param("acme-zendesk fix trigger for 1x", "Example: /access acme-zendesk fix trigger for 1h", id="unit"),
    pytest.param("acme-zendesk for 1x", "Example: /access acme-zendesk fix broken trigger for 1h", id="no-reason"),
    pytest.param("acme-zendesk fix until 9:30", "Example: /access acme-zendesk fix until tomorrow 09:30", id="passed"),
    pytest.param("acme-zendesk fix until 5", "Example: /access acme-zendesk fix until 5pm", id="ambiguous-until"),
    pytest.param("acme-zendesk fix tomorrow", "Example: /access acme-zendesk fix tomorrow 9am-11am", id="day-alone"),
    pytest.param(
        "acme-zendesk fix today 16:00-14:00", "Example: /access acme-zendesk fix today 14:00-16:00", id="swap"
    ),
    pytest.param(
        "acme-zendesk fix tomorrow 22:00-02:00", "Example: /access acme-zendesk fix tomorrow 22:00 for 4h", id="night"
    ),
    pytest.param("acme-zendesk fix today 09:00-11:00", "Example: /access acme-zendesk fix now for 2h", id="past"),
    pytest.param("", "Example: /access acme-zendesk fix broken trigger for 1h", id="empty"),
]


@pytest.mark.parametrize(("text", "hint"), HINTS)
def test_hint_is_a_corrected_request(text: str, hint: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(text)

    assert caught.value.hint == hint


def test_bad_phrase_is_quoted_whole_in_the_message() -> None:
    with pytest.raises(ParseError) as caught:
        parse("acme-zendesk fix trigger for 3 fortnights")

    assert caught.value.message == (
        'I can\'t use "for 3 fortnights" as the time: "fortnights" is not a unit I know (use s, m, h, d or w).'
    )


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_request("acme-zendesk fix for 1h", now=datetime(2026, 3, 10, 10), tz=UTC, default_duration=DEFAULT)


DURATIONS = [
    pytest.param("30m", 30 * M, id="minutes"),
    pytest.param("2h", 2 * H, id="hours"),
    pytest.param("1h30m", 90 * M, id="compound"),
    pytest.param("1h 30m", 90 * M, id="compound-spaced"),
    pytest.param("45 min", 45 * M, id="min"),
    pytest.param("90s", timedelta(seconds=90), id="seconds"),
    pytest.param("1d", 24 * H, id="day"),
    pytest.param("2 hours", 2 * H, id="hours-word"),
    pytest.param("1 hr", H, id="hr"),
    pytest.param("3 mins", 3 * M, id="mins"),
    pytest.param("1d2h", 26 * H, id="day-and-hours"),
    pytest.param("2w", 14 * 24 * H, id="weeks"),
    pytest.param("  2H ", 2 * H, id="case-and-space"),
    pytest.param("366d", timedelta(days=366), id="longest"),
]


@pytest.mark.parametrize(("text", "expected"), DURATIONS)
def test_duration_text_is_read(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


BAD_DURATIONS = [
    pytest.param(" ", "Say how long", id="empty"),
    pytest.param("soon", '"soon" is not a duration', id="word"),
    pytest.param("3 fortnights", '"fortnights" is not a unit I know', id="unit"),
    pytest.param("-5m", "can't be negative", id="negative"),
    pytest.param("0s", "longer than zero", id="zero"),
    pytest.param("367d", "366 days", id="too-long"),
    pytest.param("45", '"45" needs a unit', id="no-unit"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_DURATIONS)
def test_bad_duration_is_refused_with_an_example(text: str, fragment: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_duration(text)

    assert fragment in caught.value.message
    assert "Example" in caught.value.hint


FORMATS = [
    pytest.param(90 * M, "1h30m", id="hours-minutes"),
    pytest.param(45 * M, "45m", id="minutes"),
    pytest.param(2 * H, "2h", id="hours"),
    pytest.param(26 * H, "1d2h", id="days-hours"),
    pytest.param(timedelta(seconds=90), "1m30s", id="seconds"),
    pytest.param(timedelta(0), "0m", id="zero"),
    pytest.param(-30 * M, "-30m", id="negative"),
]


@pytest.mark.parametrize(("duration", "text"), FORMATS)
def test_duration_is_formatted_compactly(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


@pytest.mark.parametrize(
    "duration", [timedelta(seconds=1), 59 * M, 25 * H + 1 * M + 1 * timedelta(seconds=1), timedelta(days=366)]
)
def test_formatted_duration_reads_back_the_same(duration: timedelta) -> None:
    assert parse_duration(format_duration(duration)) == duration
