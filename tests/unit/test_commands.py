"""One command vocabulary: Slack's `/access …` text and a Teams message parse to the same commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain import commands as cmd
from bot.domain.errors import InputError, ParseError
from bot.domain.request_text import parse_window
from bot.domain.syntax import SLACK, TEAMS, Hint, Typed, example

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
TZ = ZoneInfo("Europe/Berlin")
ID = "R-ABCD2345"


def slack(text: str) -> cmd.Command:
    return cmd.parse_command(text, now=NOW, tz=TZ, syntax=SLACK)


def teams(text: str) -> cmd.Command:
    return cmd.parse_command(text, now=NOW, tz=TZ, syntax=TEAMS)


@pytest.mark.parametrize(("text", "expected"), [
    ("help", cmd.Help()),
    ("list zen", cmd.ListItems("zen")),
    ("LIST", cmd.ListItems()),
    ("status", cmd.Status()),
    (f"cancel {ID.lower()}", cmd.Cancel(ID)),
    (f"done  {ID}", cmd.Done(ID)),
    (f"extend {ID} 30m", cmd.Extend(ID, timedelta(minutes=30))),
    ("report 30d vault:acme", cmd.Report("30d vault:acme")),
    ("whereami", cmd.WhereAmI()),
    ("channel id?", cmd.WhereAmI()),
])
def test_both_platforms_read_every_verb_the_same_way(text: str, expected: cmd.Command) -> None:
    assert slack(text) == expected
    assert teams(text) == expected


def test_a_request_is_the_text_itself_in_slack_and_follows_access_in_teams() -> None:
    in_slack = slack("acme-zendesk fix broken trigger for 1h")
    in_teams = teams("access acme-zendesk fix broken trigger for 1h")
    assert isinstance(in_slack, cmd.Request) and in_slack == in_teams
    assert in_slack.draft.item == "acme-zendesk" and in_slack.draft.reason == "fix broken trigger"
    assert in_slack.draft.window is not None and in_slack.draft.window.duration == timedelta(hours=1)


def test_teams_does_not_guess_a_request_from_an_unknown_word() -> None:
    assert teams("acme-zendesk fix it") == cmd.Unknown("acme-zendesk")
    assert teams("") == cmd.Unknown("")


def test_an_incomplete_request_is_a_form_saying_what_is_missing() -> None:
    assert slack("") == cmd.Form() == teams("access")
    no_reason = teams("access acme-zendesk for 2h")
    assert isinstance(no_reason, cmd.Form) and no_reason.missing_reason and no_reason.problem is None
    assert no_reason.item == "acme-zendesk" and no_reason.window_text == "for 2h"
    assert no_reason.window is not None and no_reason.window.duration == timedelta(hours=2)
    unreadable = slack("acme-zendesk fix trigger for 1x")
    assert isinstance(unreadable, cmd.Form) and isinstance(unreadable.problem, ParseError)
    assert unreadable.item == "acme-zendesk" and not unreadable.missing_reason


def test_a_missing_request_id_names_the_command_in_each_platforms_syntax() -> None:
    with pytest.raises(InputError) as caught:
        slack("cancel R-123")
    assert caught.value.user_message(SLACK) == (
        "Say which request: cancel needs a request id like R-ABCD2345.\nUsage: /access cancel R-ABCD2345")
    assert caught.value.user_message(TEAMS) == (
        "Say which request: cancel needs a request id like R-ABCD2345.\nUsage: cancel R-ABCD2345")


def test_extend_reads_its_duration_once_and_says_how_when_it_cannot() -> None:
    with pytest.raises(InputError) as missing:
        teams(f"extend {ID}")
    assert missing.value.user_message(TEAMS) == f"For how much longer?\nExample: extend {ID} 30m"
    with pytest.raises(InputError) as bad:
        slack(f"extend {ID} 5 fortnights")
    assert bad.value.hint == f"Example: /access extend {ID} 30m"


def test_a_window_is_parsed_on_its_own() -> None:
    assert parse_window("", now=NOW, tz=TZ) is None
    window = parse_window("for 90m", now=NOW, tz=TZ)
    assert window is not None and window.duration == timedelta(minutes=90)
    with pytest.raises(ParseError) as caught:
        parse_window("because", now=NOW, tz=TZ)
    assert caught.value.message == "I can't read “because” as a time."


def test_hints_name_commands_as_data_and_never_format_user_text() -> None:
    hint = Hint("Use `{}` first, or `{}`.", (Typed("cancel", ID), Typed("extend", f"{ID} 30m")))
    assert hint.render(SLACK) == f"Use `/access cancel {ID}` first, or `/access extend {ID} 30m`."
    assert hint.render(TEAMS) == f"Use `cancel {ID}` first, or `extend {ID} 30m`."
    assert example("", "x{0} why").render(TEAMS) == "Example: access x{0} why"
    assert InputError("bad", hint="a {literal} brace").hint == "a {literal} brace"
