"""Hostile bodies on both chat endpoints: a 4xx and one log line each, never a 5xx, never a traceback.

The real application with the real Slack and Teams adapters on 127.0.0.1; Slack bodies are signed
with the harness's secret, so they pass the signature check and reach the parsers."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from adapters.slack import SlackAdapter
from adapters.teams import TeamsAdapter
from bot.domain.limits import MAX_BODY_BYTES, MAX_JSON_DEPTH, TooDeep, json_depth, loads_bounded
from tests.support.app import RunningApp, running_app, test_settings
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, fake_slack, sign


@dataclass
class Endpoints:
    running: RunningApp

    async def post(self, path: str, body: bytes, content_type: str = "application/json", *,
                   signed: bool = True) -> tuple[int, str]:
        headers = {"Content-Type": content_type}
        if signed and path == "/slack/events":
            now = int(time.time())
            headers |= {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": sign(body, now, SIGNING_SECRET)}
        async with aiohttp.ClientSession() as http, http.post(self.running.base_url + path, data=body,
                                                             headers=headers) as response:
            return response.status, await response.text()


@pytest.fixture
async def endpoints(tmp_path: Path) -> AsyncIterator[Endpoints]:
    async with fake_slack() as fake:
        settings = test_settings(tmp_path, slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                                 slack_api_url=fake.url)
        async with running_app(tmp_path, settings=settings,
                               adapters=[SlackAdapter(settings), TeamsAdapter(settings)]) as running:
            yield Endpoints(running)


HOSTILE = [
    ("/slack/events", b'{"type":' * 50_000, "application/json", 413),  # 400 KB: over the size limit first
    ("/slack/events", b'{"type":' * 5_000, "application/json", 400),
    ("/slack/events", b'{"type":"foo","event":"x"}', "application/json", 400),
    ("/slack/events", b"payload=" + b"%5B" * 20_000, "application/x-www-form-urlencoded", 400),
    ("/slack/events", b"{" + b" " * (MAX_BODY_BYTES + 1) + b"}", "application/json", 413),
    ("/api/messages", b"[" * 100_000, "application/json", 400),
    ("/api/messages", b'{"a":' * 1_000 + b"1" + b"}" * 1_000, "application/json", 400),
    ("/api/messages", b'{"type": "message", "text": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}', "application/json",
     413),
]


@pytest.mark.parametrize(("path", "body", "content_type", "status"), HOSTILE,
                         ids=["slack-deep-object-big", "slack-deep-object", "slack-event-string", "slack-deep-payload",
                              "slack-too-big", "teams-deep-array", "teams-deep-object", "teams-too-big"])
async def test_a_hostile_body_gets_a_4xx_and_one_log_line(endpoints: Endpoints, caplog: pytest.LogCaptureFixture,
                                                          path: str, body: bytes, content_type: str,
                                                          status: int) -> None:
    before = [e async for e in endpoints.running.runtime.store.events()]
    with caplog.at_level(logging.INFO):
        caplog.clear()
        answer = await endpoints.post(path, body, content_type)
    assert answer[0] == status, answer
    lines = [r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("jitpass")]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records if r.levelno > logging.DEBUG)
    assert "Traceback" not in answer[1]
    assert [e async for e in endpoints.running.runtime.store.events()] == before


def test_json_depth_counts_nesting_outside_strings_without_parsing() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[{{{{"}]}') == 3
    assert json_depth('"\\"[[["') == 0
    assert json_depth(b"[" * 100_000) == 100_000
    deepest: list[object] = []
    for _ in range(MAX_JSON_DEPTH - 1):
        deepest = [deepest]
    assert loads_bounded("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) == deepest
    with pytest.raises(TooDeep):
        loads_bounded("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
