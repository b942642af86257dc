"""Property tests: whatever a person types, the parsers answer with a result or a user error, never a crash.

HYPOTHESIS_PROFILE=long (see tests/conftest.py) runs many more examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from bot.domain.commands import Command, Form, Request, parse_command
from bot.domain.errors import InputError, JitpassError
from bot.domain.request_text import RequestDraft, parse_request
from bot.domain.syntax import SLACK, TEAMS

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
TZ = ZoneInfo("Europe/Amsterdam")
# Words the parsers give meaning to, mixed with anything at all.
WORDS = st.sampled_from([
    "acme-zendesk", "for", "1h", "30m", "90s", "2d", "until", "today", "tomorrow", "14:00", "14:00-16:00", "from",
    "to", "now", "next", "monday", "at", "in", "R-ABCD2345", "r-abcd2345", "cancel", "done", "extend", "status",
    "list", "help", "report", "whereami", "channel", "id", "access", "`", ":", ",", "-", "—", "24:00", "99:99",
    "0m", "-1h", "1e9h", "9999999999999d", "12am", "12pm", "2026-02-30", "2026-03-10", "\u202e", "\x00", "🙂",
])
TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(WORDS, st.text(min_size=1, max_size=12)), max_size=12).map(" ".join),
)


@given(TEXT)
def test_the_request_parser_returns_a_draft_or_a_user_error(text: str) -> None:
    try:
        draft = parse_request(text, now=NOW, tz=TZ, default_duration=timedelta(hours=1))
    except JitpassError as exc:
        assert exc.message and "Traceback" not in exc.message
        return
    assert isinstance(draft, RequestDraft)
    if draft.window is not None and draft.window.start is not None:
        assert draft.window.start.utcoffset() == timedelta(0)  # always UTC out
    if draft.window is not None:
        assert draft.window.duration >= timedelta(0)


@given(TEXT, st.sampled_from([SLACK, TEAMS]))
def test_the_command_parser_returns_a_command_or_a_user_error(text: str, syntax: object) -> None:
    try:
        command: Command = parse_command(text, now=NOW, tz=TZ, syntax=syntax)  # type: ignore[arg-type]
    except InputError as exc:
        assert exc.message
        return
    if isinstance(command, Request):
        assert command.draft.item and command.draft.reason
    if isinstance(command, Form) and command.problem is not None:
        assert command.problem.message
