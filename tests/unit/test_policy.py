"""Policy files: validation that names the key and line, and the decisions made over a policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.domain.config import Settings, load_dotenv, load_policy, parse_bool, parse_policy
from bot.domain.errors import InputError, PolicyError
from bot.domain.model import Identity

POLICY = """
timezone = "Europe/Amsterdam"

[defaults]
default_duration = "1h"
max_duration = "8h"

[approvers]
slack = ["ULEAD"]
slack_groups = ["SLEADS"]

[leads_channel]
slack = "CLEADS"

[admins]
teams = ["admin-oid"]

[retention]
keep_days = 400

[vaults.acme]
description = "Acme"
approvals_required = 2
max_duration = "4h"
exclusive_items = ["acme-zendesk"]
[vaults.acme.approvers]
teams = ["lead-oid"]
[vaults.acme.leads_channel]
slack = "CACME"
"""


def test_vault_overrides_defaults_and_unknown_vault_falls_back() -> None:
    policy = parse_policy(POLICY)
    acme = policy.for_vault("acme")
    assert acme.limits.approvals_required == 2 and acme.limits.max_duration == timedelta(hours=4)
    assert acme.limits.default_duration == timedelta(hours=1)
    assert acme.is_exclusive("acme-zendesk") and not acme.is_exclusive("acme-aws")
    assert policy.leads_channel("acme", "slack") == "CACME"
    assert policy.leads_channel("other", "slack") == "CLEADS"
    assert policy.is_approver("acme", Identity("teams", "lead-oid"))
    assert not policy.is_approver("acme", Identity("slack", "ULEAD"))
    assert policy.is_approver("other", Identity("slack", "ULEAD"))
    assert policy.is_approver("other", Identity("slack", "USOMEONE", groups=frozenset({"SLEADS"})))
    assert not policy.is_approver("other", Identity("teams", "ULEAD"))  # ids are per platform
    assert policy.is_admin(Identity("teams", "admin-oid")) and not policy.is_admin(Identity("slack", "admin-oid"))
    assert policy.approver_group_ids("slack") == frozenset({"SLEADS"})


def test_working_hours_use_the_policy_time_zone() -> None:
    policy = parse_policy(POLICY)
    # 2026-03-10 is a Tuesday; 07:30 UTC is 08:30 in Amsterdam.
    assert policy.in_working_hours(datetime(2026, 3, 10, 7, 30, tzinfo=UTC))
    assert not policy.in_working_hours(datetime(2026, 3, 10, 6, 30, tzinfo=UTC))
    assert not policy.in_working_hours(datetime(2026, 3, 14, 10, 0, tzinfo=UTC))  # Saturday


def test_retention_cutoff_respects_legal_hold() -> None:
    now = datetime(2026, 3, 10, tzinfo=UTC)
    assert parse_policy(POLICY).retention.cutoff(now) == now - timedelta(days=400)
    held = parse_policy(POLICY.replace("keep_days = 400", "keep_days = 400\nlegal_hold = true"))
    assert held.retention.cutoff(now) is None


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('approvals_required = 2', 'approvals_required = 0', "vaults.acme.approvals_required (line 23)"),
        ('max_duration = "4h"', 'max_duration = "4 parsecs"', "vaults.acme.max_duration (line 24)"),
        ('max_duration = "4h"', 'max_duration = "30m"', "vaults.acme.default_duration"),
        ('timezone = "Europe/Amsterdam"', 'timezone = "Mars/Olympus"', "timezone (line 2): unknown time zone"),
        ('keep_days = 400', 'keep_days = -1', "retention.keep_days (line 19)"),
        ('description = "Acme"', 'descripton = "Acme"', "vaults.acme.descripton (line 22): unknown key"),
        ('slack = "CACME"', 'slak = "CACME"', "vaults.acme.leads_channel.slak (line 29): unknown platform"),
        ('[admins]', '[admins]\nteams = "not-a-list', "not valid TOML"),
    ],
)
def test_invalid_policy_names_key_and_line(old: str, new: str, message: str) -> None:
    assert old in POLICY
    with pytest.raises(PolicyError) as caught:
        parse_policy(POLICY.replace(old, new), "policy.toml")
    assert message in caught.value.message


def test_missing_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "nope.toml")


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("FALSE", False), ("0", False), ("yes", True),
                                                 (None, True), ("", False)])
def test_security_booleans_are_parsed_explicitly(value: str | None, expected: bool) -> None:
    assert parse_bool("X", value, default=True) is expected


def test_a_typo_in_a_security_boolean_is_an_error() -> None:
    with pytest.raises(InputError, match="not a boolean"):
        parse_bool("JITPASS_TEAMS_VALIDATE_SERVICE_URL", "flase")


def test_dotenv_fills_only_unset_variables(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text('# comment\nexport PORT=4000\nJITPASS_STORE="sqlite:///x.db"\nSLACK_API_URL=set\n')
    settings = Settings.from_env({"JITPASS_DOTENV": str(env_file), "SLACK_API_URL": "http://127.0.0.1:1/api/"})
    assert settings.port == 4000 and settings.store_url == "sqlite:///x.db"
    assert settings.slack_api_url == "http://127.0.0.1:1/api/"
    environ: dict[str, str] = {}
    load_dotenv(tmp_path / "missing.env", environ)
    assert environ == {}


def test_settings_repr_never_shows_tokens() -> None:
    settings = Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-canary-token", "JITPASS_MASTER_KEY": "k" * 44,
                                  "JITPASS_DOTENV": "/nonexistent"})
    assert "xoxb-canary-token" not in repr(settings) and "k" * 44 not in repr(settings)


def test_bad_port_is_refused() -> None:
    with pytest.raises(InputError, match="PORT"):
        Settings.from_env({"PORT": "http", "JITPASS_DOTENV": "/nonexistent"})
