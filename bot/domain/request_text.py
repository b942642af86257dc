"""Parse the chat request text ``<item> <why> <when>`` into a `RequestDraft`.

The when-phrase is read as the longest suffix of the text that is a complete time
expression, so the reason between the item and the time may contain anything. A trailing
phrase that clearly tries to be a time but cannot be read (``for 3 fortnights``,
``until 25:00``) is an error rather than part of the reason: granting a default window to
someone who asked for something else is worse than asking them again.

Grammar of the when-phrase (case-insensitive; ``DUR`` is anything `parse_duration` reads):

    now | today                         -> default duration from approval
    [now | today] [for [the] [next]] DUR -> DUR from approval
    [now | today] until [DAY] CLOCK [DAY] -> from approval until that time
    in DUR [for DUR]                    -> starts DUR from now
    [DAY] [at | from] SPAN [DAY] [for DUR] -> absolute window
    DAY [for DUR]                       -> rejected: which time that day?

    DAY   = today | tomorrow | [on | next] monday..sunday | [on] YYYY-MM-DD
    SPAN  = CLOCK [(- | to | until) CLOCK]
    CLOCK = 14:00 | 9am | 9:30pm | 9 am | noon | midnight; a bare hour (``9``) only
            next to a clock that fixes its meaning (``9-11am``, ``9-11:30``)
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import NoReturn

from bot.domain.errors import ParseError
from bot.domain.model import Window
from bot.domain.syntax import example

__all__ = [
    "MAX_DURATION", "MAX_LOOKBACK", "RequestDraft", "format_duration", "parse_duration", "parse_request",
    "parse_window",
]

# Far beyond any policy; it only keeps typos like `for 9999999d` from overflowing.
MAX_DURATION = timedelta(days=366)
MAX_LOOKBACK = timedelta(days=3660)  # how far back a report or an export may reach

# The longest when-phrase people write is about a dozen words ("in 1 hour and 30 minutes
# for 2 hours ..."); looking no further keeps a 40 kB chat message from costing seconds.
_MAX_WHEN_WORDS = 16

_EXAMPLE_ITEM = "acme-zendesk"
_EXAMPLE_REASON = "fix broken trigger"
_EXAMPLE_WHEN = "for 1h"
_DEFAULT_EXAMPLE = example("", f"{_EXAMPLE_ITEM} {_EXAMPLE_REASON} {_EXAMPLE_WHEN}")

_UNIT_SECONDS: dict[str, int] = {
    name: seconds
    for names, seconds in (
        (("s", "sec", "secs", "second", "seconds"), 1),
        (("m", "min", "mins", "minute", "minutes"), 60),
        (("h", "hr", "hrs", "hour", "hours"), 3600),
        (("d", "day", "days"), 86400),
        (("w", "wk", "wks", "week", "weeks"), 7 * 86400),
    )
    for name in names
}
# Units people use that we refuse (vague or silly lengths); knowing them lets
# `for 3 fortnights` be reported as a bad time instead of being swallowed as reason.
_REFUSED_UNITS = frozenset(
    {"fortnight", "fortnights", "month", "months", "mo", "y", "yr", "yrs", "year", "years", "ms"}
)
_UNIT_LIST = "s, m, h, d or w"

_WEEKDAYS = {
    name: number
    for number, name in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
}
_DAY_WORDS = frozenset({"today", "tomorrow", *_WEEKDAYS})
_UNTIL = frozenset({"until", "till", "til"})
_SPAN_SEPARATORS = frozenset({"-", "–", "—", "to", *_UNTIL})
_DAY_PREFIXES = frozenset({"on", "next"})
# Words that may sit inside a time phrase; a run of them before the when-phrase is
# inspected for a broken attempt at a time.
_TIME_WORDS = frozenset(
    {"for", "in", "at", "from", "now", "the", "and", "a", "an", "noon", "midnight", "morning"}
    | {"afternoon", "evening", "tonight", "am", "pm", "a.m", "p.m"}
    | _UNTIL
    | _SPAN_SEPARATORS
    | _DAY_PREFIXES
    | _DAY_WORDS
    | _REFUSED_UNITS
    | set(_UNIT_SECONDS)
)

_CLOCK_RE = re.compile(r"(?P<hour>[0-9]{1,2})(?::(?P<minute>[0-9]{1,2}))?(?:(?P<meridiem>[ap])\.?m\.?)?")
_MERIDIEM_RE = re.compile(r"(?P<meridiem>[ap])\.?m\.?")
_CLOCK_SHAPE = r"(?:[0-9]{1,2}(?::[0-9]{1,2})?(?:[ap]\.?m\.?)?|noon|midnight)"
_SPAN_TOKEN_RE = re.compile(rf"(?P<start>{_CLOCK_SHAPE})(?P<dash>[-–—])(?P<end>{_CLOCK_SHAPE})")
_STRONG_CLOCK_SHAPE_RE = re.compile(r"[0-9]{1,2}(?::[0-9]{1,2}(?:[ap]\.?m\.?)?|[ap]\.?m\.?)")
_ISO_DATE_RE = re.compile(r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})")
_NUMBER_RE = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?")
_NUMBER_WITH_UNITS_RE = re.compile(r"[+-]?[0-9][0-9.,]*(?P<units>[a-z][a-z0-9.,]*)")
_DURATION_PART_RE = re.compile(r"(?P<number>[+-]?[0-9]+(?:[.,][0-9]+)?|an?(?=\s))\s*(?P<unit>[a-z]+)?")
_DURATION_SEPARATOR_RE = re.compile(r"\s*(?:,|\band\b)?\s*")
_CLOCK_DURATION_RE = re.compile(r"(?P<hours>[0-9]{1,3}):(?P<minutes>[0-5][0-9])")


@dataclass(frozen=True)
class RequestDraft:
    """What a requester asked for, before policy and the store have a say."""

    item: str
    reason: str
    # None when no when-phrase was given: the policy's default window applies.
    window: Window | None


def parse_request(text: str, *, now: datetime, tz: tzinfo, default_duration: timedelta) -> RequestDraft:
    """Read ``<item> <why> <when>``; times are read in `tz` and returned as UTC."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    stripped = text.strip()
    if not stripped:
        raise ParseError("Say which item you need, why, and for how long.", hint=_DEFAULT_EXAMPLE)
    first = re.match(r"\S+", stripped)
    assert first is not None  # stripped is non-empty
    item = _clean_item(first.group())
    if not item:
        raise ParseError("Say which item you need, why, and for how long.", hint=_DEFAULT_EXAMPLE)
    if _looks_like_time(item):
        raise ParseError(
            f'"{first.group()}" looks like a time, not an item: start with the item name, then why, then when.',
            hint=_DEFAULT_EXAMPLE,
        )
    tail = stripped[first.end() :]
    tokens = _tokenize(tail)
    # Trailing emoji or :shortcodes: ("for 1h 🙏") are decoration, not the reason's end.
    while tokens and _is_decoration(tokens[-1].word):
        tokens.pop()
    words = [token.word for token in tokens]

    found = _longest_when(words)
    when_at = found[0] if found else len(words)
    broken_at = _broken_time_start(words, when_at)
    if broken_at is not None:
        _raise_broken(words, tokens, tail, broken_at, item)
    if found is None:
        return RequestDraft(item, _clean_reason(tail), None)

    index, when = found
    reason = _clean_reason(tail[: tokens[index].start])
    try:
        window = _resolve(when, now=now.astimezone(UTC), tz=tz, default_duration=default_duration)
    except _Problem as problem:
        raise _to_error(problem, tail[tokens[index].start :].strip(), item, reason) from None
    return RequestDraft(item, reason, window)


def parse_window(text: str, *, now: datetime, tz: tzinfo, item: str = _EXAMPLE_ITEM) -> Window | None:
    """A when-phrase on its own (`for 1h`, `until 17:00`, `tomorrow 9am-11am`); None when `text` is empty.

    `item` only names the item in the examples of the hints.
    """
    if not text.strip():
        return None
    draft = parse_request(f"{item} {text}", now=now, tz=tz, default_duration=timedelta(0))
    if draft.reason or draft.window is None:
        shown = " ".join(text.split())
        shown = shown if len(shown) <= 60 else shown[:59].rstrip() + "…"
        raise ParseError(f"I can't read “{shown}” as a time.",
                         hint="Examples: for 1h · until 17:00 · tomorrow 9am-11am")
    return draft.window


def parse_duration(text: str, *, maximum: timedelta = MAX_DURATION) -> timedelta:
    """Read a duration such as ``30m``, ``1h30m``, ``45 min``, ``90s``, ``1d`` or ``2 hours``.

    `maximum` defaults to the longest access window; look-back periods (reports) pass MAX_LOOKBACK."""
    if not text.strip():
        raise ParseError("Say how long, like 30m, 2h or 1h30m.", hint=_DEFAULT_EXAMPLE)
    try:
        return timedelta(seconds=_duration_seconds(text, maximum))
    except _Problem as problem:
        raise ParseError(
            f'I can\'t read "{text.strip()}" as a duration: {_sentence(problem.detail)}', hint=_DEFAULT_EXAMPLE
        ) from None


def format_duration(d: timedelta) -> str:
    """Render a duration compactly, largest unit first: ``1d2h``, ``1h30m``, ``45m``, ``1m30s``."""
    if d < timedelta(0):
        return "-" + format_duration(-d)
    days, rest = divmod(int(d.total_seconds()), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{value}{unit}" for value, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")) if value]
    return "".join(parts) or "0m"


# --- errors ---------------------------------------------------------------------------------


class _Problem(Exception):
    """Why a when-phrase failed; `example` is a corrected when-phrase for the hint."""

    def __init__(self, detail: str, example: str = _EXAMPLE_WHEN, *, complete: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.example = example
        # A complete message stands alone ("17:30 has already passed today ...");
        # otherwise it explains which phrase could not be read.
        self.complete = complete


def _to_error(problem: _Problem, phrase: str, item: str, reason: str) -> ParseError:
    detail = _sentence(problem.detail)
    message = detail if problem.complete else f'I can\'t use "{phrase}" as the time: {detail}'
    return ParseError(message, hint=example("", f"{item} {reason or _EXAMPLE_REASON} {problem.example}"))


def _sentence(detail: str) -> str:
    return detail if detail.endswith((".", "?")) else f"{detail}."


def _raise_broken(words: Sequence[str], tokens: Sequence[_Token], tail: str, at: int, item: str) -> NoReturn:
    phrase = tail[tokens[at].start :].strip()
    reason = _clean_reason(tail[: tokens[at].start])
    try:
        _parse_when(words[at:])
    except _Problem as problem:
        raise _to_error(problem, phrase, item, reason) from None
    # Unreachable in practice: `at` lies before the longest readable suffix, so it fails.
    raise ParseError(f'I can\'t use "{phrase}" as the time.', hint=_DEFAULT_EXAMPLE)


# --- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    word: str  # lower-cased, trailing punctuation removed
    start: int  # offset in the text after the item, so the reason keeps its original spelling


def _tokenize(tail: str) -> list[_Token]:
    tokens: list[_Token] = []
    for match in re.finditer(r"\S+", tail):
        word = match.group().lower().rstrip(".,;!?")
        if not word:
            continue
        span = _SPAN_TOKEN_RE.fullmatch(word)
        if span:
            # "9am-11am" is one chat word but three grammar words.
            for group in ("start", "dash", "end"):
                tokens.append(_Token(span.group(group), match.start() + span.start(group)))
        else:
            tokens.append(_Token(word, match.start()))
    return tokens


def _is_decoration(word: str) -> bool:
    return bool(re.fullmatch(r":[a-z0-9_+'-]+:", word)) or not any(c.isalnum() or c in "-–—" for c in word)


def _clean_item(word: str) -> str:
    # Slack users often wrap names in backticks or write "acme-zendesk: why".
    return word.strip("`").rstrip(":,").strip("`").lower()


def _clean_reason(text: str) -> str:
    reason = text.strip()
    reason = re.sub(r"(?:\s+[-–—]+|[,;]+)$", "", reason)
    reason = re.sub(r"^[-–—:]+\s+", "", reason)
    return reason.strip()


def _looks_like_time(item: str) -> bool:
    if item in {"for", "now", "in", "at", "from"} | _UNTIL | _DAY_WORDS or _STRONG_CLOCK_SHAPE_RE.fullmatch(item):
        return True
    try:
        _duration_seconds(item)
    except _Problem:
        return False
    return True


# --- finding the when-phrase -----------------------------------------------------------------


def _longest_when(words: Sequence[str]) -> tuple[int, _When] | None:
    for index in range(max(0, len(words) - _MAX_WHEN_WORDS), len(words)):
        try:
            return index, _parse_when(words[index:])
        except _Problem:
            continue
    return None


def _broken_time_start(words: Sequence[str], end: int) -> int | None:
    """Where a failed attempt at a time begins in the words before `end`, if there is one."""
    start = end
    while start > max(0, end - _MAX_WHEN_WORDS) and _is_time_word(words[start - 1]):
        start -= 1
    for index in range(start, end):
        if _opens_time(words, index, end):
            return index
    return None


def _is_time_word(word: str) -> bool:
    return (
        word in _TIME_WORDS
        or word[:1].isdigit()
        or (word[:1] in "+-" and word[1:2].isdigit())
        or _is_unit_like(word)
        or bool(_ISO_DATE_RE.fullmatch(word))
    )


def _opens_time(words: Sequence[str], index: int, end: int) -> bool:
    """Whether `words[index]` starts something that can only be meant as a time."""
    word = words[index]
    following = list(words[index + 1 : end])
    after = following[0] if following else None
    if word in ("for", "in"):
        while following and following[0] in ("the", "next"):
            following.pop(0)
        return bool(following) and _is_number_like(following[0]) and all(map(_is_duration_word, following))
    if word in _UNTIL:
        return after is not None and (
            any(c.isdigit() for c in after) or after in _DAY_WORDS | {"noon", "midnight", "morning", "tonight"}
        )
    if word in ("at", "from"):
        # A bare hour counts too: "at 9 for 1h" must be asked about, not read as reason.
        bare_hour = after is not None and after.isdigit() and len(after) <= 2
        return after is not None and (bare_hour or _is_clock_like(words, index + 1))
    if word in _DAY_PREFIXES:
        return after in _DAY_WORDS
    if word == "now" or word in _DAY_WORDS or _ISO_DATE_RE.fullmatch(word):
        return index + 1 < len(words)
    if index == len(words) - 1 and _is_known_duration(word):
        # A last word like "0h" or "400d" is a time; "24h" earlier ("the last 24h for 1h") is reason.
        return True
    return _is_clock_like(words, index)


def _is_known_duration(word: str) -> bool:
    attached = _NUMBER_WITH_UNITS_RE.fullmatch(word)
    return attached is not None and all(unit in _UNIT_SECONDS for unit in re.findall(r"[a-z]+", attached["units"]))


def _is_clock_like(words: Sequence[str], index: int) -> bool:
    word = words[index]
    if word in ("noon", "midnight") or _STRONG_CLOCK_SHAPE_RE.fullmatch(word):
        return True
    following = words[index + 1] if index + 1 < len(words) else ""
    return word.isdigit() and len(word) <= 2 and bool(_MERIDIEM_RE.fullmatch(following))


def _is_number_like(word: str) -> bool:
    return word in ("a", "an") or bool(re.match(r"[+-]?[0-9]", word))


def _is_duration_word(word: str) -> bool:
    if word in ("and", "a", "an") or _NUMBER_RE.fullmatch(word) or re.fullmatch(r"[0-9]+:[0-9]+", word):
        return True
    if _is_unit_like(word):
        return True
    attached = _NUMBER_WITH_UNITS_RE.fullmatch(word)
    return attached is not None and all(map(_is_unit_like, re.findall(r"[a-z]+", attached.group("units"))))


def _is_unit_like(word: str) -> bool:
    # Close misspellings ("hourss") count, so they are reported rather than kept as
    # reason; "2fa", "3rd" or "users" do not.
    return (
        word in _UNIT_SECONDS
        or word in _REFUSED_UNITS
        or (len(word) == 1 and word.isalpha())
        or bool(difflib.get_close_matches(word, _UNIT_SECONDS, n=1, cutoff=0.8))
    )


# --- parsing the when-phrase -----------------------------------------------------------------


@dataclass(frozen=True)
class _Day:
    text: str
    kind: str  # "today", "tomorrow", "weekday" or "date"
    weekday: int = 0
    on: date | None = None
    skip_today: bool = False  # "next monday" said on a Monday means a week later


@dataclass(frozen=True)
class _FromApproval:
    duration: timedelta | None


@dataclass(frozen=True)
class _Until:
    day: _Day | None
    minutes: int


@dataclass(frozen=True)
class _Later:
    delay: timedelta
    duration: timedelta | None


@dataclass(frozen=True)
class _Span:
    day: _Day | None
    start: int
    end: int | None
    duration: timedelta | None


@dataclass(frozen=True)
class _DayWithoutTime:
    day: _Day
    duration: timedelta | None


type _When = _FromApproval | _Until | _Later | _Span | _DayWithoutTime


@dataclass(frozen=True)
class _Clock:
    text: str
    hour: int
    minute: int
    minute_digits: int  # 0 when no minutes were written
    meridiem: str | None  # "a" or "p"
    special: str | None = None  # "noon" or "midnight"

    @property
    def fixed(self) -> bool:
        """A bare hour ("9") could be 09:00 or 21:00 and needs a partner to fix it."""
        return self.special is not None or self.meridiem is not None or self.minute_digits > 0


class _Reader:
    def __init__(self, words: Sequence[str]) -> None:
        self.words = words
        self.pos = 0

    def peek(self, ahead: int = 0) -> str | None:
        index = self.pos + ahead
        return self.words[index] if index < len(self.words) else None

    def take(self) -> str:
        word = self.words[self.pos]
        self.pos += 1
        return word

    def accept(self, *options: str) -> bool:
        if self.peek() in options:
            self.pos += 1
            return True
        return False

    def at_end(self) -> bool:
        return self.pos >= len(self.words)

    def rest(self) -> str:
        return " ".join(self.words[self.pos :])


def _parse_when(words: Sequence[str]) -> _When:
    """Read `words` as one complete when-phrase or raise `_Problem` saying why not."""
    reader = _Reader(words)
    when = _when(reader)
    if not reader.at_end():
        raise _Problem(f'I don\'t understand "{reader.rest()}" after the time')
    return when


def _when(r: _Reader) -> _When:
    first = r.peek()
    if first is None:
        raise _Problem("there is no time")
    if first in ("now", "today") and r.peek(1) in _UNTIL | {None}:
        r.take()
        if r.at_end():
            return _FromApproval(None)
        r.take()
        return _until(r)
    if first == "now":
        r.take()
        return _FromApproval(_for_duration(r))
    if first in _UNTIL:
        r.take()
        return _until(r)
    if first == "for":
        return _FromApproval(_for_duration(r))
    if first == "in":
        r.take()
        return _later(r)
    day = _day(r)
    if day is not None:
        return _after_day(r, day)
    if first in ("at", "from") or _is_clock_start(r):
        r.accept("at", "from")
        start, end = _clock_span(r)
        day = _day(r)
        return _Span(day, start, end, _optional_duration(r, end))
    if _is_number_like(first) and first not in ("a", "an"):
        return _FromApproval(_duration(r))
    raise _Problem(f'"{first}" does not start a time')


def _after_day(r: _Reader, day: _Day) -> _When:
    if r.at_end():
        return _FromApproval(None) if day.kind == "today" else _DayWithoutTime(day, None)
    if r.peek() in ("at", "from") or _is_clock_start(r):
        r.accept("at", "from")
        start, end = _clock_span(r)
        return _Span(day, start, end, _optional_duration(r, end))
    if r.peek() in _UNTIL:
        # "tomorrow until 17:00" hides when it starts; only today's start is obvious.
        raise _Problem(f'say when it starts, like "{day.text} 9am-5pm"', example=f"{day.text} 9am-5pm")
    if r.peek() == "for" or _is_number_like(r.peek() or ""):
        duration = _for_duration(r)
        return _FromApproval(duration) if day.kind == "today" else _DayWithoutTime(day, duration)
    raise _Problem(
        f'"{day.text}" must be followed by a clock time, like "{day.text} 9am-11am"',
        example=f"{day.text} 9am-11am",
    )


def _until(r: _Reader) -> _Until:
    day = _day(r)
    if r.at_end():
        raise _Problem('"until" needs a clock time, like "until 17:30"', example="until 17:30")
    clock = _clock(r)
    if clock is None:
        raise _Problem(f'"{r.peek()}" is not a clock time', example="until 17:30")
    if not clock.fixed:
        raise _ambiguous(clock, until=True)
    minutes = _minutes(clock, clock.meridiem, end=True)
    return _Until(day or _day(r), minutes)


def _later(r: _Reader) -> _Later:
    words: list[str] = []
    while not r.at_end() and r.peek() != "for":
        words.append(r.take())
    if not words:
        raise _Problem('"in" needs a delay, like "in 30m for 1h"', example="in 30m for 1h")
    delay = timedelta(seconds=_duration_seconds(" ".join(words)))
    return _Later(delay, None if r.at_end() else _for_duration(r))


def _day(r: _Reader) -> _Day | None:
    word = r.peek()
    prefix = word if word in _DAY_PREFIXES else None
    if prefix is not None:
        word = r.peek(1)
    if word is None:
        return None
    if prefix != "next" and word in ("today", "tomorrow"):
        r.pos += 2 if prefix else 1
        return _Day(word, word)
    if word in _WEEKDAYS:
        r.pos += 2 if prefix else 1
        text = f"next {word}" if prefix == "next" else word
        return _Day(text, "weekday", weekday=_WEEKDAYS[word], skip_today=prefix == "next")
    iso = _ISO_DATE_RE.fullmatch(word)
    if iso and prefix != "next":
        try:
            on = date(int(iso["year"]), int(iso["month"]), int(iso["day"]))
        except ValueError:
            raise _Problem(f'"{word}" is not a date', example="2026-03-12 9am-11am") from None
        r.pos += 2 if prefix else 1
        return _Day(word, "date", on=on)
    return None


def _is_clock_start(r: _Reader) -> bool:
    word = r.peek() or ""
    if word in ("noon", "midnight"):
        return True
    match = _CLOCK_RE.fullmatch(word)
    if match is None:
        return False
    following = r.peek(1) or ""
    # "2 hours" is a duration, not two o'clock.
    return match["minute"] is not None or match["meridiem"] is not None or not _is_unit_like(following)


def _clock(r: _Reader) -> _Clock | None:
    word = r.peek()
    if word in ("noon", "midnight"):
        r.take()
        return _Clock(word, 12 if word == "noon" else 0, 0, 2, None, special=word)
    match = _CLOCK_RE.fullmatch(word or "")
    if match is None:
        return None
    r.take()
    text = match.group()
    meridiem = match["meridiem"]
    if meridiem is None and (after := _MERIDIEM_RE.fullmatch(r.peek() or "")):
        text = f"{text} {r.take()}"
        meridiem = after["meridiem"]
    minute = match["minute"] or ""
    return _Clock(text, int(match["hour"]), int(minute or 0), len(minute), meridiem)


def _clock_span(r: _Reader) -> tuple[int, int | None]:
    first = _clock(r)
    if first is None:
        raise _Problem(f'"{r.peek()}" is not a clock time', example="at 14:00 for 1h")
    second: _Clock | None = None
    if r.peek() in _SPAN_SEPARATORS:
        mark = r.pos
        r.take()
        second = _clock(r)
        if second is None:
            r.pos = mark
    if second is None:
        if not first.fixed:
            raise _ambiguous(first)
        return _minutes(first, first.meridiem, end=False), None
    if not first.fixed and not second.fixed:
        raise _ambiguous(first)
    if first.fixed and second.fixed:
        return _minutes(first, first.meridiem, end=False), _minutes(second, second.meridiem, end=True)
    # One bare hour takes am/pm from its partner ("9-11am"), flipping it when that
    # would put the end first ("11-1pm" is 11:00-13:00).
    if not first.fixed:
        end = _minutes(second, second.meridiem, end=True)
        borrowed = second.meridiem if first.hour <= 12 else None
        start = _minutes(first, borrowed, end=False)
        if borrowed and start >= end:
            start = _minutes(first, _other(borrowed), end=False)
        return start, end
    start = _minutes(first, first.meridiem, end=False)
    borrowed = first.meridiem if second.hour <= 12 else None
    end = _minutes(second, borrowed, end=True)
    if borrowed and end <= start:
        end = _minutes(second, _other(borrowed), end=True)
    return start, end


def _other(meridiem: str) -> str:
    return "p" if meridiem == "a" else "a"


def _minutes(clock: _Clock, meridiem: str | None, *, end: bool) -> int:
    """Minutes after midnight; an end of ``midnight`` or ``24:00`` is the next midnight (1440)."""
    if clock.special == "noon":
        return 12 * 60
    if clock.special == "midnight":
        return 24 * 60 if end else 0
    bad = _Problem(f'"{clock.text}" is not a time of day', example="14:00-16:00")
    if clock.minute_digits not in (0, 2) or clock.minute > 59:
        raise bad
    if meridiem is not None:
        if not 1 <= clock.hour <= 12:
            raise bad
        return (clock.hour % 12 + (12 if meridiem == "p" else 0)) * 60 + clock.minute
    if end and clock.hour == 24 and clock.minute == 0:
        return 24 * 60
    if clock.hour > 23:
        raise bad
    return clock.hour * 60 + clock.minute


def _ambiguous(clock: _Clock, *, until: bool = False) -> _Problem:
    hour = clock.hour
    fixed = f"{hour:02d}:00" if hour > 12 else f"{hour}pm"
    example = f"until {fixed}" if until else f"at {fixed} for 1h"
    if hour > 12:
        return _Problem(f'"{clock.text}" needs minutes: say {hour:02d}:00', example=example)
    return _Problem(
        f'"{clock.text}" could be morning or evening: say {hour}am, {hour}pm or {hour % 12 + 12:02d}:00',
        example=example,
    )


def _optional_duration(r: _Reader, end: int | None) -> timedelta | None:
    if r.at_end():
        return None
    if end is not None:
        raise _Problem("give an end time or a duration, not both", example="tomorrow 9am-11am")
    return _for_duration(r)


def _for_duration(r: _Reader) -> timedelta:
    if r.accept("for"):
        r.accept("the")
        r.accept("next")
        if r.at_end():
            raise _Problem('"for" needs a duration, like "for 1h"')
    return _duration(r)


def _duration(r: _Reader) -> timedelta:
    seconds = _duration_seconds(r.rest())
    r.pos = len(r.words)
    return timedelta(seconds=seconds)


def _duration_seconds(text: str, maximum: timedelta = MAX_DURATION) -> int:
    """Whole seconds in a duration text; raises `_Problem` naming the bad part."""
    s = " ".join(text.lower().split())
    if not s:
        raise _Problem("there is no duration")
    clock_style = _CLOCK_DURATION_RE.fullmatch(s)
    if clock_style:
        total = int(clock_style["hours"]) * 3600 + int(clock_style["minutes"]) * 60
    else:
        total = _sum_duration_parts(s, maximum)
    if total <= 0:
        raise _Problem("a duration must be longer than zero")
    if total > maximum.total_seconds():
        raise _Problem(f"the longest duration I accept is {maximum.days} days", example="for 1d")
    return total


def _sum_duration_parts(s: str, maximum: timedelta) -> int:
    total = 0.0
    previous_unit = ""
    pos = 0
    while pos < len(s):
        if pos:
            separator = _DURATION_SEPARATOR_RE.match(s, pos)
            assert separator is not None  # the pattern matches the empty string
            pos = separator.end()
        part = _DURATION_PART_RE.match(s, pos)
        if part is None or part.end() == pos:
            raise _Problem(f'"{s[pos:] or s}" is not a duration, like 30m, 2h or 1h30m')
        pos = part.end()
        number_text, unit = part["number"], part["unit"]
        if number_text.startswith("-"):
            raise _Problem("a duration can't be negative")
        number = 1.0 if number_text in ("a", "an") else float(number_text.replace(",", "."))
        if unit is None:
            # "1h30" is common shorthand for 1h30m; any other bare number lacks a unit.
            if previous_unit == "h" and pos >= len(s) and number.is_integer():
                unit = "m"
            else:
                bare = number_text.lstrip("+")
                raise _Problem(f'"{number_text}" needs a unit, like {bare}m or {bare}h')
        if unit not in _UNIT_SECONDS:
            raise _Problem(_unknown_unit(unit))
        previous_unit = "h" if _UNIT_SECONDS[unit] == 3600 else unit
        total += number * _UNIT_SECONDS[unit]
        if total > maximum.total_seconds():
            break  # stop before a huge number makes float or timedelta overflow
    return round(total)


def _unknown_unit(unit: str) -> str:
    message = f'"{unit}" is not a unit I know (use {_UNIT_LIST})'
    close = difflib.get_close_matches(unit, _UNIT_SECONDS, n=1, cutoff=0.75)
    return f'{message}; did you mean "{close[0]}"?' if close else message


# --- turning a when-phrase into a window -------------------------------------------------------


def _resolve(when: _When, *, now: datetime, tz: tzinfo, default_duration: timedelta) -> Window:
    local_now = now.astimezone(tz)
    match when:
        case _FromApproval(duration):
            return Window(duration or default_duration)
        case _Later(delay, duration):
            return Window(duration or default_duration, now + delay)
        case _Until(day, minutes):
            return _resolve_until(day, minutes, now=now, local_now=local_now, tz=tz)
        case _Span(day, start_minutes, end_minutes, duration):
            return _resolve_span(
                day,
                start_minutes,
                end_minutes,
                duration or default_duration,
                now=now,
                local_now=local_now,
                tz=tz,
            )
        case _DayWithoutTime(day, duration):
            length = f"for {format_duration(duration)}" if duration else "for 1h"
            raise _Problem(
                f'When {day.text}? Add a clock time, like "{day.text} 9am-11am" or "{day.text} 9am {length}".',
                example=f"{day.text} 9am {length}" if duration else f"{day.text} 9am-11am",
                complete=True,
            )


def _resolve_until(day: _Day | None, minutes: int, *, now: datetime, local_now: datetime, tz: tzinfo) -> Window:
    on = _date_for(day, minutes, local_now=local_now, tz=tz)
    target = _at(on, minutes, tz)
    if target <= now:
        clock = _hhmm(minutes)
        if day is None or day.kind == "today":
            raise _Problem(
                f"{clock} has already passed today (it is {local_now:%H:%M} now).",
                example=f"until tomorrow {clock}",
                complete=True,
            )
        raise _Problem(
            f"{clock} {_day_label(on, local_now)} has already passed (it is {local_now:%H:%M} now).",
            example="for 1h",
            complete=True,
        )
    return Window(target - now)


def _resolve_span(
    day: _Day | None,
    start_minutes: int,
    end_minutes: int | None,
    duration: timedelta,
    *,
    now: datetime,
    local_now: datetime,
    tz: tzinfo,
) -> Window:
    on = _date_for(day, start_minutes, local_now=local_now, tz=tz)
    start = _at(on, start_minutes, tz)
    if end_minutes is not None:
        end = _at(on, end_minutes, tz)
        if end <= start:
            raise _backwards_window(day, start_minutes, end_minutes)
        duration = end - start
    if start < now:
        over = " and is already over" if start + duration <= now else ""
        raise _Problem(
            f"That window starts in the past{over} ({_hhmm(start_minutes)} {_day_label(on, local_now)}; "
            f"it is {local_now:%H:%M} now).",
            example=f"now for {format_duration(duration)}",
            complete=True,
        )
    return Window(duration, start)


def _backwards_window(day: _Day | None, start: int, end: int) -> _Problem:
    prefix = f"{day.text} " if day else ""
    if end == start:
        return _Problem(
            f"That window starts and ends at {_hhmm(start)}.",
            example=f"{prefix}{_hhmm(start)} for 1h",
            complete=True,
        )
    overnight = end + 24 * 60 - start
    # "22:00-02:00" is probably meant overnight; "16:00-14:00" probably swapped.
    example = (
        f"{prefix}{_hhmm(start)} for {format_duration(timedelta(minutes=overnight))}"
        if overnight <= 12 * 60
        else f"{prefix}{_hhmm(end)}-{_hhmm(start)}"
    )
    return _Problem(
        f"That window ends ({_hhmm(end)}) before it starts ({_hhmm(start)}).", example=example, complete=True
    )


def _date_for(day: _Day | None, minutes: int, *, local_now: datetime, tz: tzinfo) -> date:
    today = local_now.date()
    if day is None or day.kind == "today":
        return today
    if day.kind == "tomorrow":
        return today + timedelta(days=1)
    if day.on is not None:
        return day.on
    ahead = (day.weekday - today.weekday()) % 7
    # A weekday means its next occurrence: today only while that time is still ahead.
    if ahead == 0 and (day.skip_today or _at(today, minutes, tz) <= local_now):
        ahead = 7
    return today + timedelta(days=ahead)


def _at(on: date, minutes: int, tz: tzinfo) -> datetime:
    # Aware datetimes sharing a tzinfo compare and subtract by wall clock, so every
    # instant is converted to UTC before it is compared (DST days are 23 or 25 hours).
    on += timedelta(days=minutes // (24 * 60))
    minutes %= 24 * 60
    return datetime.combine(on, time(minutes // 60, minutes % 60), tzinfo=tz).astimezone(UTC)


def _hhmm(minutes: int) -> str:
    return "24:00" if minutes == 24 * 60 else f"{minutes // 60:02d}:{minutes % 60:02d}"


def _day_label(on: date, local_now: datetime) -> str:
    offset = (on - local_now.date()).days
    return {0: "today", 1: "tomorrow", -1: "yesterday"}.get(offset, f"on {on:%a %d %b}")
