"""Safe by default: an unauthenticated chat endpoint is refused at start unless only this machine can reach it."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bot.app import check_safe_start, is_loopback
from bot.domain.config import Settings
from bot.domain.errors import InputError, StartupError

TEAMS_CREDENTIALS = {"CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID": "app-id",
                     "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTSECRET": "secret",
                     "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__TENANTID": "tenant"}


def settings(**env: str) -> Settings:
    return Settings.from_env({"JITPASS_DOTENV": "/nonexistent/.env", **env})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"])
def test_loopback_binds_are_local_development(host: str) -> None:
    assert is_loopback(host)
    check_safe_start(settings(), host)  # anonymous Teams, no Slack secret: fine where only we can connect


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "jitpass.example.com"])
def test_anonymous_teams_on_a_reachable_bind_refuses_to_start_and_says_what_to_set(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(StartupError) as refused:
        check_safe_start(settings(), host)
    assert "CLIENTID" in refused.value.message and "JITPASS_TEAMS_ENABLED=false" in refused.value.message
    check_safe_start(settings(**TEAMS_CREDENTIALS), host)
    check_safe_start(settings(JITPASS_TEAMS_ENABLED="false"), host)


def test_anonymous_teams_on_a_reachable_bind_only_with_the_explicit_word_and_loudly(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jitpass.app"):
        check_safe_start(settings(JITPASS_TEAMS_ANONYMOUS="insecure-allow"), "0.0.0.0")
    assert any("INSECURE" in r.getMessage() and "0.0.0.0" in r.getMessage() for r in caplog.records)
    for almost in ("true", "1", "yes", "insecure_allow", "Insecure-Allow"):
        with pytest.raises(InputError, match="the only value is insecure-allow"):
            settings(JITPASS_TEAMS_ANONYMOUS=almost)


def test_security_booleans_are_parsed_explicitly() -> None:
    assert settings(JITPASS_TEAMS_ENABLED="false").teams_enabled is False
    assert settings(JITPASS_TEAMS_ENABLED="0").teams_enabled is False
    assert settings().teams_enabled is True
    with pytest.raises(InputError, match="not a boolean"):
        settings(JITPASS_TEAMS_ENABLED="nope")
    assert settings(JITPASS_TEAMS_VALIDATE_SERVICE_URL="false").teams_service_url_validation is False
    with pytest.raises(InputError, match="not a boolean"):
        settings(JITPASS_TEAMS_VALIDATE_SERVICE_URL="off please")


def test_slack_http_mode_without_a_signing_secret_refuses_to_start_on_a_reachable_bind() -> None:
    slack_only = {"JITPASS_TEAMS_ENABLED": "false", "SLACK_BOT_TOKEN": "xoxb-test"}
    with pytest.raises(StartupError, match="SLACK_SIGNING_SECRET"):
        check_safe_start(settings(**slack_only), "0.0.0.0")
    check_safe_start(settings(**slack_only, SLACK_SIGNING_SECRET="s3cret"), "0.0.0.0")
    check_safe_start(settings(**slack_only, SLACK_APP_TOKEN="xapp-test"), "0.0.0.0")  # Socket Mode: no HTTP
    check_safe_start(settings(**slack_only), "127.0.0.1")


def test_serve_refuses_before_binding_or_opening_anything(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "JITPASS_DOTENV": str(tmp_path / "none.env"),
           "JITPASS_STORE": f"sqlite:///{tmp_path / 'jitpass.db'}", "JITPASS_MASTER_KEY_FILE": str(tmp_path / "k"),
           "DYNO": "web.1", "PORT": "1"}  # a Heroku-like host binds 0.0.0.0; port 1 would fail if ever bound
    done = subprocess.run([str(Path(sys.executable).parent / "jitpass"), "serve"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "refusing to start" in done.stderr and "CLIENTID" in done.stderr
    assert "error id" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "jitpass.db").exists() and not (tmp_path / "k").exists()
