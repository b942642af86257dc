"""The real server's log: every line in one format, the SDKs' lines included (key=value, or JSON)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import aiohttp
import pytest

from bot.cli.logs import LogFormatter, parse_pairs
from tests.e2e.test_cli import Cli, _free_port

KV_LINE = r'^(?:[A-Za-z_][\w.]*=(?:"(?:[^"\\]|\\.)*"|[^\s"=\\]+)(?: |$))+$'


async def _serve_and_talk(cli: Cli, log_format: str) -> list[str]:
    """Run `jitpass -v serve --demo`, send it one Teams activity, stop it; its stderr lines."""
    port = _free_port()
    cli.env.update({"PORT": str(port), "JITPASS_LOG_FORMAT": log_format})
    proc = subprocess.Popen([str(Path(sys.executable).parent / "jitpass"), "-v", "serve", "--demo"], cwd=cli.tmp,
                            env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            activity = {"type": "message", "id": "a1", "text": "help", "channelId": "msteams",
                        "serviceUrl": "http://127.0.0.1:9/", "from": {"id": "u1", "aadObjectId": "oid-1"},
                        "conversation": {"id": "c1", "conversationType": "personal"}, "recipient": {"id": "bot"}}
            async with http.post(f"http://127.0.0.1:{port}/api/messages", json=activity) as response:
                await response.read()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("log_format", ["kv", "json"])
async def test_every_server_log_line_has_one_format_sdk_lines_included(tmp_path: Path, log_format: str) -> None:
    lines = await _serve_and_talk(Cli(tmp_path), log_format)
    loggers: set[str] = set()
    for line in lines:
        if log_format == "json":
            record = json.loads(line)
        else:
            assert re.match(KV_LINE, line), f"not key=value: {line!r}"
            parsed = parse_pairs(line)
            assert parsed is not None
            record = parsed
        assert {"at", "level", "logger"} <= record.keys(), line
        loggers.add(str(record["logger"]))
    assert any(name.startswith("jitpass") for name in loggers)
    assert any(name.startswith(("microsoft_agents", "aiohttp")) for name in loggers), loggers  # not only ours
    assert any("event=stopping" in line or '"event": "stopping"' in line for line in lines)


def test_free_text_and_tracebacks_stay_on_one_line_and_parse_back() -> None:
    out = StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(LogFormatter("kv"))  # the formatter configure_logging installs, on loggers of its own
    loggers = [logging.getLogger(name) for name in ("jitpass.test_logs", "some.sdk")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        loggers[0].warning('event=thing item=acme-zendesk note="two words"')
        loggers[1].warning('Config:\n  host = "x"\n  id=3')
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            loggers[0].exception("event=failed")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            logger.propagate = True
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    ours, sdk, failed = (parse_pairs(line) for line in lines)
    assert ours is not None and ours["event"] == "thing" and ours["note"] == "two words"
    assert sdk is not None and sdk["msg"] == 'Config:\n  host = "x"\n  id=3' and sdk["logger"] == "some.sdk"
    assert failed is not None and failed["exc"] == "ValueError: bad\nvalue" and "raise ValueError" in failed["trace"]


def test_main_called_in_process_puts_the_root_logger_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`main()` in-process (tests, an embedding program) leaves no handler on a stream its caller may close."""
    from bot.cli.main import main

    monkeypatch.setenv("JITPASS_HOME", str(tmp_path))
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    assert main(["-v", "audit", "verify"]) != 0  # nothing here yet: a read-only command refuses, logs, exits
    assert (list(root.handlers), root.level) == before
    assert "jitpass:" in capsys.readouterr().err
