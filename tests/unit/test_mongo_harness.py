"""The suite's MongoDB harness says why it has no server, and never lets CI pass without one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.mongo import MongoUnavailable, mongodb_unavailable, mongoeco_server


def test_a_missing_server_environment_is_reported_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MongoUnavailable, match=r"missing: run ./dev setup"), \
            mongoeco_server(Path(__file__).parents[2] / ".venv-none" / "bin" / "python"):
        pass


def test_a_server_that_dies_at_start_is_reported_with_its_own_error() -> None:
    # The suite's own Python has no mongoeco: the server process fails on its import and exits.
    died = r"(?s)exited with status 1:.*No module named 'mongoeco'"
    with pytest.raises(MongoUnavailable, match=died), mongoeco_server(Path(sys.executable)):
        pass


def test_no_server_fails_the_test_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run in CI: no server"):
        mongodb_unavailable("no server")


def test_no_server_skips_the_test_on_a_developer_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server"):
        mongodb_unavailable("no server")
