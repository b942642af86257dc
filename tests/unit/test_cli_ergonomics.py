"""Small things a newcomer hits in the first hour: -v anywhere, a closed pipe, short grants in reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.reports.text import _span

JITPASS = str(Path(sys.executable).parent / "jitpass")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JITPASS_")}
    return env | {"JITPASS_HOME": str(tmp_path / "home"), "JITPASS_DOTENV": str(tmp_path / "none.env")}


def test_verbose_is_accepted_after_the_sub_command_too(tmp_path: Path) -> None:
    for argv in (["-v", "keys", "generate"], ["keys", "generate", "-v"], ["keys", "-v", "generate"]):
        done = subprocess.run([JITPASS, *argv], capture_output=True, text=True, env=_env(tmp_path), timeout=60)
        assert done.returncode == 0 and ":" in done.stdout, (argv, done.stderr)
        assert "level=DEBUG" in done.stderr, argv  # -v took effect wherever it stood
    listed = subprocess.run([JITPASS, "items", "list", "--verbose"], capture_output=True, text=True,
                            env=_env(tmp_path), timeout=60)
    assert "unrecognized arguments" not in listed.stderr and "no jitpass store at" in listed.stderr


def test_output_to_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before jitpass writes a byte (`| head` that already quit)
    try:
        done = subprocess.run([JITPASS, "keys", "generate"], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              env=_env(tmp_path), timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == 141 and done.stderr == ""


def test_granted_time_under_an_hour_reads_in_minutes() -> None:
    assert [_span(s) for s in (0, 20, 300, 359, 3599, 3600, 5400)] == ["0m", "<1m", "5m", "6m", "60m", "1.0h", "1.5h"]
