"""The work one request or approval causes in Slack: nothing twice (issue #14, point 2).

Counted at the Slack stand-in, never timed: an approval that activates the grant at once is one change
for the App Home (one publish) and for the approval card (one edit, with its final blocks); a person's
DM channel is opened once and then known; a request creates exactly one card. The App Home is published
only to someone who has opened it (Slack sent `app_home_opened`): for anyone else a request and its
approval cost no `views.publish` at all, except that a grant ending still republishes the tab, with no
code on it (a tab an older version published may show one).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pyotp
import pytest

from adapters.slack.api import SlackApi
from adapters.slack.blocks import Actions
from adapters.slack.notifier import SlackNotifier
from bot.domain.config import parse_policy
from tests.support.app import CANARY_PASSWORD, CANARY_SEED, TEST_POLICY, FakeClock
from tests.support.fake_slack import BOT_TOKEN, Call, SlackHarness, fake_slack, slack_harness


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    async with slack_harness(tmp_path) as harness:
        yield harness


def _since(slack: SlackHarness, mark: int, method: str) -> list[Call]:
    return [c for c in slack.fake.calls[mark:] if c.method == method and c.ok]


async def _open_home(slack: SlackHarness, user_id: str = "UREQ") -> None:
    """`app_home_opened`, as Slack sends it when the user switches to the tab; waits for its publish."""
    mark = len(slack.fake.calls)
    opened = await slack.users.event({"type": "app_home_opened", "user": user_id, "tab": "home",
                                      "channel": f"D{user_id}"})
    assert opened.status == 200
    await slack.fake.wait_for(lambda c: c.method == "views.publish" and c.args["user_id"] == user_id, after=mark)
    await slack.settle()


async def test_a_request_and_its_approval_publish_no_home_tab_for_someone_who_never_opened_it(
        slack: SlackHarness) -> None:
    mark = len(slack.fake.calls)
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h", "UREQ")
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()

    assert _since(slack, mark, "views.publish") == [], "nobody has that tab: nothing to publish"
    assert "UREQ" not in slack.fake.homes
    cards = _since(slack, mark, "chat.postMessage")
    assert cards[0].args["channel"] == "CLEADS" and any(CANARY_PASSWORD in c.dump() for c in cards), \
        "the card and the delivery are untouched"
    assert (await slack.runtime.service.get_request(request_id)).status.value == "active"
    # No code was put on a screen nobody opened: no code_shown event for the tab.
    assert await slack.codes_shown(request_id) == []
    assert slack.adapter.home.refreshing == frozenset()


async def test_a_request_posts_one_card_and_publishes_an_opened_home_once(slack: SlackHarness) -> None:
    await _open_home(slack)
    mark = len(slack.fake.calls)
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h", "UREQ")

    cards = _since(slack, mark, "chat.postMessage")
    assert [c.args["channel"] for c in cards] == ["CLEADS"] and request_id in cards[0].text()
    homes = _since(slack, mark, "views.publish")
    assert [c.args["user_id"] for c in homes] == ["UREQ"] and request_id in homes[0].text()
    assert not _since(slack, mark, "chat.update")


async def test_an_approval_edits_the_card_once_and_publishes_an_opened_home_once_with_the_code(
        slack: SlackHarness) -> None:
    await _open_home(slack)
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h", "UREQ")
    mark = len(slack.fake.calls)

    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()

    request = await slack.runtime.service.get_request(request_id)
    edits = _since(slack, mark, "chat.update")
    assert [(c.args["channel"], c.args["ts"]) for c in edits] == [("CLEADS", request.refs["card"]["ts"])]
    assert "Active until" in edits[0].text(), "the one edit carries the final state, not 'approved'"
    homes = _since(slack, mark, "views.publish")
    assert [c.args["user_id"] for c in homes] == ["UREQ"]
    assert request_id in homes[0].text() and "recorded in the audit trail" in homes[0].text(), \
        "the one publish shows the live grant with its code"
    code = re.search(r"`(\d{6})`", homes[0].text())
    assert code and pyotp.TOTP(CANARY_SEED).verify(code.group(1), for_time=slack.running.clock.now())
    assert await slack.codes_shown(request_id) == ["app_home"], "the code on the tab is audited"
    assert slack.adapter.home.refreshing == {"UREQ"}
    assert any(CANARY_PASSWORD in c.dump() for c in _since(slack, mark, "chat.postMessage")), "delivered by DM"
    # Nothing was dropped from the trail: both transitions are recorded.
    assert {"request.approved", "grant.activated", "grant.revealed"} <= set(await slack.event_types(request_id))


async def test_a_press_on_a_tab_an_older_version_published_keeps_that_tab_current(slack: SlackHarness) -> None:
    # No app_home_opened since markers exist, but the user presses Cancel on their Home tab: they have it.
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h", "UREQ")
    mark = len(slack.fake.calls)

    await slack.users.press(Actions.CANCEL, request_id, "UREQ", home=True)
    await slack.settle()

    homes = _since(slack, mark, "views.publish")
    assert [c.args["user_id"] for c in homes] == ["UREQ"] and "Cancelled" in homes[-1].text()
    assert await slack.runtime.store.home_openers("slack") == {"UREQ"}, "and the marker is written"


async def test_no_refresher_runs_for_a_tab_slack_did_not_take(slack: SlackHarness) -> None:
    await _open_home(slack)
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h", "UREQ")
    slack.fake.fail_next("views.publish", "internal_error")

    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()

    refused = slack.fake.calls_to("views.publish", ok=None)[-1]
    assert not refused.ok and refused.args["user_id"] == "UREQ", "the activation's publish was refused"
    assert slack.adapter.home.refreshing == frozenset(), "nothing with a code reached the tab: nothing to refresh"
    await _open_home(slack)  # the user switches to the tab: published, with the code, and refreshed from then on
    assert slack.adapter.home.refreshing == {"UREQ"}


async def test_an_unseen_users_grant_that_ends_is_still_published_once_and_shows_no_code(
        slack: SlackHarness) -> None:
    # Two grants, neither tab opened: when the short one expires, the tab is republished (an older version
    # may have put its code there) and shows no code at all, not even the other grant's.
    short = (await slack.request("acme-zendesk fix broken trigger for 15m", "UREQ"))[1]
    await slack.users.press(Actions.APPROVE, short, "ULEAD1")
    await slack.settle()
    other = (await slack.request("globex-aws quarterly audit for 1h", "UREQ"))[1]
    for lead in ("ULEAD1", "ULEAD2"):
        await slack.users.press(Actions.APPROVE, other, lead)
        await slack.settle()
    assert _since(slack, 0, "views.publish") == []
    mark = len(slack.fake.calls)

    slack.running.clock.advance(timedelta(minutes=15))
    await slack.runtime.scheduler.tick()
    await slack.settle()

    homes = _since(slack, mark, "views.publish")
    assert [c.args["user_id"] for c in homes] == ["UREQ"]
    text = homes[0].text()
    assert short in text and "Expired" in text and other in text, "the ended grant and the other one, listed"
    assert not re.search(r"`\d{6}`", text) and Actions.NEW_CODE not in text and CANARY_PASSWORD not in homes[0].dump()
    assert await slack.codes_shown() == [] and slack.adapter.home.refreshing == frozenset()


async def test_done_on_an_unseen_users_grant_still_republishes_their_tab_without_a_code(slack: SlackHarness) -> None:
    request_id = (await slack.request("acme-zendesk fix broken trigger for 1h", "UREQ"))[1]
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()
    mark = len(slack.fake.calls)

    await slack.users.press(Actions.DONE, request_id, "UREQ", channel_id="DUREQ")
    await slack.settle()

    homes = _since(slack, mark, "views.publish")
    assert [c.args["user_id"] for c in homes] == ["UREQ"] and not re.search(r"`\d{6}`", homes[0].text())
    assert (await slack.runtime.service.get_request(request_id)).status.value == "revoked"


async def test_the_dm_channel_is_opened_once_then_known_for_later_deliveries(slack: SlackHarness) -> None:
    first = (await slack.request("acme-zendesk fix broken trigger for 1h", "UREQ"))[1]
    await slack.users.press(Actions.APPROVE, first, "ULEAD1")
    await slack.settle()
    await slack.users.press(Actions.DONE, first, "UREQ", channel_id="DUREQ")
    await slack.settle()
    mark = len(slack.fake.calls)

    second = (await slack.request("acme-zendesk fix another trigger for 1h", "UREQ"))[1]
    await slack.users.press(Actions.APPROVE, second, "ULEAD1")
    await slack.settle()

    delivered = [c for c in _since(slack, mark, "chat.postMessage") if CANARY_PASSWORD in c.dump()]
    assert [c.args["channel"] for c in delivered] == ["DUREQ"]
    assert [c.args["users"] for c in slack.fake.calls_to("conversations.open")] == ["UREQ"], \
        "opened for the first delivery only"


async def test_callers_asking_for_one_persons_dm_channel_at_once_open_it_once() -> None:
    # A delivery and the "approved" message of one approval run side by side and both need the channel.
    async with fake_slack() as fake, aiohttp.ClientSession() as session:
        notifier = SlackNotifier(SlackApi(BOT_TOKEN, fake.url, session), parse_policy(TEST_POLICY, "test"),
                                 FakeClock())
        channels = await asyncio.gather(*(notifier.dm_channel("UREQ") for _ in range(3)),
                                        notifier.dm_channel("UOTHER"))
        again = await notifier.dm_channel("UREQ")

    assert channels == ["DUREQ", "DUREQ", "DUREQ", "DUOTHER"] and again == "DUREQ"
    assert sorted(c.args["users"] for c in fake.calls_to("conversations.open")) == ["UOTHER", "UREQ"]


async def test_a_failed_dm_channel_lookup_fails_every_caller_waiting_for_it_and_is_tried_again() -> None:
    async with fake_slack() as fake, aiohttp.ClientSession() as session:
        notifier = SlackNotifier(SlackApi(BOT_TOKEN, fake.url, session), parse_policy(TEST_POLICY, "test"),
                                 FakeClock())
        fake.fail_next("conversations.open", "user_not_found")
        failed = await asyncio.gather(notifier.dm_channel("UREQ"), notifier.dm_channel("UREQ"),
                                      return_exceptions=True)
        later = await notifier.dm_channel("UREQ")

    assert [getattr(f, "error", None) for f in failed] == ["user_not_found", "user_not_found"]
    assert later == "DUREQ" and len(fake.calls_to("conversations.open", ok=None)) == 2


async def test_a_request_costs_one_claim_that_brings_the_cards_rows_and_no_reads_after_it(tmp_path: Path) -> None:
    # Counted by the metered store (every call is timed under its operation's name), in the serving process.
    async with slack_harness(tmp_path, metrics_token="metrics-token-" + "5e1f0c9a7b3d2e84") as slack:
        metrics = slack.runtime.metrics
        assert metrics is not None

        def calls() -> dict[str, float]:
            return {s.labels["operation"]: s.value for family in metrics.registry.collect()
                    for s in family.samples if s.name == "jitpass_store_operation_seconds_count"}

        before = calls()
        _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h", "UREQ")
        made = {op: n - before.get(op, 0.0) for op, n in calls().items() if n - before.get(op, 0.0)}

    assert request_id and made["create_request"] == 1
    # The card effect ran with the request and item rows its claim returned: no read of either by the worker.
    assert made.get("claim_effects_with_rows", 0) >= 1 and "claim_effects" not in made
    assert "get_request" not in made, made
    assert made.get("get_item") == 1, made  # the request path's own read of the item, once
