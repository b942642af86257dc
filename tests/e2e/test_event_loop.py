"""The loop `jitpass` runs on: uvloop by default, asyncio's own with JITPASS_EVENT_LOOP=asyncio; a bad value says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli.logs import parse_pairs
from tests.e2e.test_cli import Cli
from tests.e2e.test_logs import _serve_and_talk


def _started(lines: list[str]) -> dict[str, str]:
    records = [parse_pairs(line) or {} for line in lines]
    started = [r for r in records if r.get("event") == "started"]
    assert len(started) == 1, lines
    return {k: str(v) for k, v in started[0].items()}


@pytest.mark.parametrize(("choice", "expected"), [(None, "uvloop"), ("asyncio", "asyncio"), ("UVLoop", "uvloop")])
async def test_the_server_runs_and_answers_on_the_loop_asked_for(tmp_path: Path, choice: str | None,
                                                                 expected: str) -> None:
    cli = Cli(tmp_path)
    if choice is not None:
        cli.env["JITPASS_EVENT_LOOP"] = choice
    lines = await _serve_and_talk(cli, "kv")
    assert _started(lines)["loop"] == expected
    # It served a Teams activity and stopped cleanly on that loop.
    assert any("event=stopping" in line for line in lines), lines


def test_an_unknown_loop_is_named_and_nothing_runs(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli.env["JITPASS_EVENT_LOOP"] = "trio"
    done = cli("items", "list")
    assert done.returncode == 2
    assert "JITPASS_EVENT_LOOP='trio' is not an event loop; use uvloop or asyncio" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "jitpass.db").exists()


def test_the_loop_can_come_from_the_dotenv_file(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    (tmp_path / "none.env").write_text("JITPASS_EVENT_LOOP=bogus\n", encoding="utf-8")
    done = cli("items", "list")
    assert done.returncode == 2 and "JITPASS_EVENT_LOOP='bogus'" in done.stderr
