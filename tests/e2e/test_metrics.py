"""/metrics end to end: a real server, real signed Slack requests, a Slack stand-in that fails on demand,
and the Prometheus text parsed with prometheus_client's own parser."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.slack.blocks import Actions
from bot.domain.errors import StartupError
from tests.support.app import CANARY_PASSWORD, CANARY_SEED, running_app, test_settings
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, SlackHarness, slack_harness, state_values

TOKEN = "metrics-token-" + "9f3c2a7d41b8e6f0"
# Every label a jitpass metric may carry: closed sets, never a user, a request id, an item or free text.
ALLOWED_LABELS = {"platform", "kind", "path", "outcome", "reason", "via", "method", "status", "operation", "le"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _get(url: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.text(), response.headers.get("Content-Type", "")


async def _scrape(slack: SlackHarness) -> tuple[Samples, str]:
    status, text, content_type = await _get(f"{slack.running.base_url}/metrics")
    assert status == 200, text
    assert content_type.startswith("text/plain; version=")  # the text exposition format
    return _parse(text), text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    async with slack_harness(tmp_path, metrics_token=TOKEN) as harness:
        yield harness


async def test_a_request_approved_delivered_and_expired_moves_each_counter_once(slack: SlackHarness) -> None:
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 20m")
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()
    slack.running.clock.advance(timedelta(minutes=20, seconds=1))  # the window ended 1 s ago
    await slack.runtime.scheduler.tick()
    await slack.settle()

    samples, _ = await _scrape(slack)

    assert _value(samples, "jitpass_requests_total", platform="slack", kind="access") == 1
    assert _value(samples, "jitpass_approvals_total", platform="slack") == 1
    assert _value(samples, "jitpass_declines_total", platform="slack") == 0
    assert _value(samples, "jitpass_deliveries_total", path="ephemeral", outcome="delivered") == 1
    assert sum(v for (name, _), v in samples.items() if name == "jitpass_deliveries_total") == 1
    assert _value(samples, "jitpass_revocation_lateness_seconds_count") == 1
    assert _value(samples, "jitpass_revocation_lateness_seconds_sum") == pytest.approx(1.0)
    assert _value(samples, "jitpass_revocation_lateness_seconds_bucket", le="0.5") == 0
    assert _value(samples, "jitpass_revocation_lateness_seconds_bucket", le="1.0") == 1
    # One request, so one create_request; every store call is timed under its operation's name.
    assert _value(samples, "jitpass_store_operation_seconds_count", operation="create_request") == 1
    assert _value(samples, "jitpass_store_operation_seconds_count", operation="transition_many") >= 1
    assert _value(samples, "jitpass_effects_pending", kind="wipe") == 0
    assert _value(samples, "jitpass_effects_read_ok") == 1
    assert not [k for k in samples if k[0] == "jitpass_chat_api_errors_total"]


async def test_declines_refusals_a_slack_500_and_the_queued_card_show_up(slack: SlackHarness) -> None:
    _, declined = await slack.request("acme-zendesk fix broken trigger for 20m")
    await slack.users.press(Actions.DECLINE, declined, "ULEAD2")
    opened = await slack.fake.wait_for(lambda c: c.method == "views.open")
    view = next(v for v in slack.fake.views.values() if v.get("callback_id") == opened.args["view"]["callback_id"])
    await slack.users.submit(view, "ULEAD2", state_values(reason=("plain_text_input", "use the shared login")))
    await slack.settle()
    assert (await slack.runtime.service.get_request(declined)).status.value == "declined"
    # The leads' card of the next request meets a bare HTTP 500: the post is retried later.
    slack.fake.status_next("chat.postMessage", 500, when=lambda args: args.get("channel") == "CLEADS")
    _, queued = await slack.request("acme-zendesk check the trigger again for 20m")
    await slack.users.press(Actions.APPROVE, queued, "UREQ")  # self-approval
    await slack.users.press(Actions.APPROVE, queued, "USTRANGER")  # not an approver
    await slack.settle()

    samples, _ = await _scrape(slack)

    assert _value(samples, "jitpass_requests_total", platform="slack", kind="access") == 2
    assert _value(samples, "jitpass_declines_total", platform="slack") == 1
    assert _value(samples, "jitpass_approvals_total", platform="slack") == 0
    assert _value(samples, "jitpass_refusals_total", reason="self_decision") == 1
    assert _value(samples, "jitpass_refusals_total", reason="not_an_approver") == 1
    assert _value(samples, "jitpass_chat_api_errors_total", platform="slack", method="chat.postMessage",
                  status="500") == 1
    assert sum(v for (name, _), v in samples.items() if name == "jitpass_chat_api_errors_total") == 1
    assert _value(samples, "jitpass_effects_pending", kind="post_card") == 1
    assert _value(samples, "jitpass_effects_pending", kind="deliver") == 0
    assert _value(samples, "jitpass_effects_failed", kind="post_card") == 0


async def test_the_scrape_names_no_secret_person_request_or_item(slack: SlackHarness) -> None:
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 20m")
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()
    slack.running.clock.advance(timedelta(seconds=65))
    await slack.users.press(Actions.NEW_CODE, request_id, "UREQ", channel_id="CGENERAL")
    await slack.settle()
    await slack.users.press(Actions.DONE, request_id, "UREQ", channel_id="CGENERAL")
    await slack.settle()

    samples, text = await _scrape(slack)

    assert _value(samples, "jitpass_code_views_total", via="message") == 1
    for forbidden in (CANARY_PASSWORD, CANARY_SEED, TOKEN, BOT_TOKEN, SIGNING_SECRET, request_id, "UREQ", "ULEAD1",
                      "acme", "fix broken trigger", "CLEADS", "CGENERAL", "support@acme.example"):
        assert forbidden not in text, forbidden
    assert not re.search(r"R-[0-9A-Z]{8}", text)
    labels = {key for (_, pairs) in samples for key, _ in pairs}
    assert labels <= ALLOWED_LABELS, labels - ALLOWED_LABELS


async def test_metrics_on_the_main_port_need_the_bearer_token(slack: SlackHarness) -> None:
    url = f"{slack.running.base_url}/metrics"

    missing, missing_body, _ = await _get(url, token=None)
    wrong, wrong_body, _ = await _get(url, token=TOKEN[:-1] + "x")
    right, _, _ = await _get(url)
    async with aiohttp.ClientSession() as session, session.get(url, headers={"Authorization": TOKEN}) as bare:
        no_scheme = bare.status

    assert (missing, wrong, no_scheme, right) == (401, 401, 401, 200)
    assert "jitpass_" not in missing_body + wrong_body and TOKEN not in missing_body + wrong_body


async def test_without_metrics_settings_there_is_no_metrics_endpoint(tmp_path: Path) -> None:
    async with slack_harness(tmp_path) as slack:
        _, request_id = await slack.request("acme-zendesk fix broken trigger for 20m")
        status, body, _ = await _get(f"{slack.running.base_url}/metrics")

        assert status == 404 and "jitpass_" not in body
        assert slack.runtime.metrics is None
        assert type(slack.runtime.store).__name__ == "SqliteStore"  # not metered: no cost on the request path
        assert (await slack.runtime.service.get_request(request_id)).status.value == "pending"


async def test_the_metrics_port_serves_metrics_on_loopback_and_the_public_port_does_not(tmp_path: Path) -> None:
    port = _free_port()
    async with slack_harness(tmp_path, metrics_port=port) as slack:
        await slack.request("acme-zendesk fix broken trigger for 20m")
        public, public_body, _ = await _get(f"{slack.running.base_url}/metrics", token=None)
        own, own_body, _ = await _get(f"http://127.0.0.1:{port}/metrics", token=None)
        other_path, _, _ = await _get(f"http://127.0.0.1:{port}/healthz", token=None)

        assert public == 404 and "jitpass_" not in public_body
        assert own == 200
        assert _value(_parse(own_body), "jitpass_requests_total", platform="slack", kind="access") == 1
        assert other_path == 404  # the metrics listener serves /metrics alone
    with socket.socket() as sock:  # closed with the app
        sock.bind(("127.0.0.1", port))


async def test_the_metrics_port_with_a_token_requires_it_there_too(tmp_path: Path) -> None:
    port = _free_port()
    async with slack_harness(tmp_path, metrics_port=port, metrics_token=TOKEN) as slack:
        without, _, _ = await _get(f"http://127.0.0.1:{port}/metrics", token=None)
        with_token, _, _ = await _get(f"http://127.0.0.1:{port}/metrics")
        main, _, _ = await _get(f"{slack.running.base_url}/metrics")

    assert (without, with_token, main) == (401, 200, 200)


async def test_a_reachable_metrics_host_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    settings = test_settings(tmp_path, metrics_port=_free_port(), metrics_host="0.0.0.0")

    with pytest.raises(StartupError, match="JITPASS_METRICS_TOKEN is not set"):
        async with running_app(tmp_path, settings=settings, adapters=[]):
            pass
    assert not (tmp_path / "jitpass.db").exists()  # refused before the store was opened


async def test_two_apps_in_one_process_count_apart(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with slack_harness(tmp_path / "a", metrics_token=TOKEN) as first, \
            slack_harness(tmp_path / "b", metrics_token=TOKEN) as second:
        await first.request("acme-zendesk fix broken trigger for 20m")
        one, _ = await _scrape(first)
        other, _ = await _scrape(second)

    assert _value(one, "jitpass_requests_total", platform="slack", kind="access") == 1
    assert _value(other, "jitpass_requests_total", platform="slack", kind="access") == 0
