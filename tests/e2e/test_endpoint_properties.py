"""Property tests over both chat endpoints' payload handling, in-process against the real application.

Whatever arrives (signed Slack bodies, Teams activities, raw bytes): no 5xx, no traceback in the log,
and no change to requests without an audit event. The app (real Slack and Teams adapters, the Slack
and Bot Connector stand-ins) runs on an event loop in a thread, so hypothesis drives it synchronously.
HYPOTHESIS_PROFILE=long (tests/conftest.py) runs many more examples."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.slack import SlackAdapter
from adapters.teams import TeamsAdapter
from tests.support.app import RunningApp, running_app, test_settings
from tests.support.fake_connector import FakeConnector
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, fake_slack, sign

T = TypeVar("T")


class Served:
    """The application on its own loop; `run` waits for a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stack = AsyncExitStack()
        self.running: RunningApp
        self.http: aiohttp.ClientSession
        self.connector_url = ""
        self.response_url = ""

    def run(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)  # type: ignore[arg-type]

    async def start(self, tmp_path: Path) -> None:
        fake = await self.stack.enter_async_context(fake_slack())
        connector = await FakeConnector().start()
        self.stack.push_async_callback(connector.stop)
        self.connector_url, self.response_url = connector.url, fake.response_url("fuzz")
        settings = test_settings(tmp_path, slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                                 slack_api_url=fake.url)
        slack = SlackAdapter(settings)
        self.running = await self.stack.enter_async_context(
            running_app(tmp_path, settings=settings, adapters=[slack, TeamsAdapter(settings)]))
        self.stack.push_async_callback(slack.drain)
        self.http = await self.stack.enter_async_context(aiohttp.ClientSession())

    async def post(self, path: str, body: bytes, content_type: str) -> int:
        headers = {"Content-Type": content_type}
        if path == "/slack/events":
            now = int(time.time())
            headers |= {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": sign(body, now, SIGNING_SECRET)}
        async with self.http.post(self.running.base_url + path, data=body, headers=headers) as response:
            await response.read()
            return response.status

    async def state(self) -> tuple[int, list[tuple[str, str, int]]]:
        store = self.running.runtime.store
        events = await store.last_event()
        requests = [(r.id, r.status.value, r.version) for r in await store.find_requests()]
        return (events.seq if events else 0), requests

    def stop(self) -> None:
        self.run(self.stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = Served()
    served.run(served.start(tmp_path_factory.mktemp("fuzz")))
    yield served
    served.stop()


KEYS = ["type", "event", "payload", "user", "id", "actions", "action_id", "value", "view", "callback_id", "state",
        "challenge", "command", "text", "user_id", "channel_id", "trigger_id", "team", "channel", "name",
        "channelId", "serviceUrl", "conversation", "from", "recipient", "aadObjectId", "tenantId", "channelData",
        "action", "verb", "data", "request_id", "block_id", "private_metadata", "response_url"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(allow_nan=False),
                    st.text(max_size=40), st.sampled_from([
                        "message", "invoke", "block_actions", "view_submission", "event_callback", "app_mention",
                        "url_verification", "shortcut", "adaptiveCard/action", "msteams", "R-ABCD2345", "approve",
                        "newCode", "/access", "acme-zendesk fix broken trigger for 1h", "UREQ", "ULEAD1"]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)), max_leaves=25)
OBJECTS = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=8)


def _teams_activity(served: Served) -> st.SearchStrategy[bytes]:
    service_url = st.sampled_from([served.connector_url, "", "not a url", "ftp://x/", 5, None])
    activity = st.fixed_dictionaries(
        {"type": st.sampled_from(["message", "invoke", "conversationUpdate", "", 7]),
         "serviceUrl": service_url, "channelId": st.sampled_from(["msteams", "", None, 3])},
        optional={"conversation": st.one_of(JSON, st.fixed_dictionaries({"id": st.text(max_size=20)})),
                  "from": st.one_of(JSON, st.fixed_dictionaries({"id": st.text(max_size=20),
                                                                  "aadObjectId": st.text(max_size=20)})),
                  "text": st.text(max_size=80), "name": st.sampled_from(["adaptiveCard/action", "x", ""]),
                  "value": JSON})
    return st.one_of(activity.map(lambda a: json.dumps(a).encode()), OBJECTS.map(lambda a: json.dumps(a).encode()),
                     st.binary(max_size=200))


# Shapes close to what Slack sends, so the fuzzing reaches past the first checks into bolt.
SLACK_EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["event_callback", "url_verification", "foo", "app_home_opened", 5])},
    optional={"event": st.one_of(JSON, st.fixed_dictionaries({"type": st.sampled_from(["app_home_opened", "x"])},
                                                             optional={"user": JSON, "tab": JSON})),
              "challenge": JSON, "team_id": JSON, "api_app_id": JSON})
SLACK_PAYLOADS = st.fixed_dictionaries(
    {"type": st.sampled_from(["block_actions", "view_submission", "view_closed", "shortcut", "foo"])},
    optional={"user": st.one_of(JSON, st.fixed_dictionaries({"id": st.sampled_from(["UREQ", "ULEAD1", ""])})),
              "actions": st.one_of(JSON, st.lists(st.fixed_dictionaries(
                  {"action_id": st.sampled_from(["approve", "decline", "new_code", "x"])},
                  optional={"value": st.one_of(JSON, st.sampled_from(["R-ABCD2345", ""]))}), max_size=2)),
              "view": st.one_of(JSON, st.fixed_dictionaries({"callback_id": st.text(max_size=20)},
                                                            optional={"state": JSON, "private_metadata": JSON})),
              "trigger_id": JSON, "channel": JSON, "message": JSON, "container": JSON})


def _slack_body(served: Served) -> st.SearchStrategy[tuple[bytes, str]]:
    form_values = st.one_of(st.text(max_size=60), st.sampled_from(["/access", "UREQ", "acme-zendesk why for 1h"]))
    form = st.dictionaries(st.sampled_from(["command", "text", "user_id", "channel_id", "payload", "ssl_check",
                                            "trigger_id"]), form_values, max_size=5)
    return st.one_of(
        SLACK_EVENTS.map(lambda b: (json.dumps(b).encode(), "application/json")),
        SLACK_PAYLOADS.map(lambda b: (urlencode({"payload": json.dumps(b)}).encode(),
                                      "application/x-www-form-urlencoded")),
        OBJECTS.map(lambda b: (json.dumps(b).encode(), "application/json")),
        OBJECTS.map(lambda b: (urlencode({"payload": json.dumps(b)}).encode(), "application/x-www-form-urlencoded")),
        form.map(lambda f: (urlencode({**f, "response_url": served.response_url}).encode(),
                            "application/x-www-form-urlencoded")),
        st.binary(max_size=200).map(lambda b: (b, "application/json")),
    )


def _check(served: Served, caplog: pytest.LogCaptureFixture, path: str, body: bytes, content_type: str) -> None:
    before = served.run(served.state())
    caplog.clear()
    status = served.run(served.post(path, body, content_type))
    after = served.run(served.state())
    assert status < 500, (status, body[:300])
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info and r.levelno > logging.DEBUG]
    assert not tracebacks, tracebacks
    if after[1] != before[1]:
        assert after[0] > before[0], "a request changed without an audit event"


def test_slack_events_never_5xx_never_a_traceback(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    @given(_slack_body(served))
    def one(case: tuple[bytes, str]) -> None:
        _check(served, caplog, "/slack/events", *case)

    with caplog.at_level(logging.INFO):
        one()


def test_teams_messages_never_5xx_never_a_traceback(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    @given(_teams_activity(served))
    def one(body: bytes) -> None:
        _check(served, caplog, "/api/messages", body, "application/json")

    with caplog.at_level(logging.INFO):
        one()


# Found by the property test above: fields bolt reads as strings, holding something else.
NON_STRING_FIELDS = [
    ({"type": "foo", "command": []}, "application/json"),
    ({"type": "event_callback", "event": {"type": "app_home_opened"}, "command": {"a": 1}}, "application/json"),
    ({"type": "foo", "callback_id": 5}, "application/json"),
    ({"type": "shortcut", "callback_id": [], "user": {"id": "UREQ"}}, "payload"),
    ({"type": "block_actions", "user": {"id": "UREQ"}, "actions": [{"action_id": "approve", "block_id": 3}]},
     "payload"),
]


@pytest.mark.parametrize(("body", "shape"), NON_STRING_FIELDS)
def test_slack_fields_of_the_wrong_type_are_refused_not_5xx(served: Served, caplog: pytest.LogCaptureFixture,
                                                           body: dict[str, object], shape: str) -> None:
    if shape == "payload":
        raw, content_type = urlencode({"payload": json.dumps(body)}).encode(), "application/x-www-form-urlencoded"
    else:
        raw, content_type = json.dumps(body).encode(), shape
    with caplog.at_level(logging.INFO):
        _check(served, caplog, "/slack/events", raw, content_type)
