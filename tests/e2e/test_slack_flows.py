"""Slack: the request form, subcommands, declines, extensions, timeouts, DMs, App Home, groups, rate limits."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest

from adapters.slack.blocks import Actions
from tests.support.app import CANARY_PASSWORD, CANARY_SEED, TEST_POLICY, FakeClock
from tests.support.fake_slack import APP_TOKEN, Call, SlackHarness, slack_harness, state_values, user


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    async with slack_harness(tmp_path) as harness:
        yield harness


def _opened_view(slack: SlackHarness, call: Call) -> dict[str, Any]:
    view_id = next(v for v, view in slack.fake.views.items() if view.get("callback_id") == call.args["view"].get(
        "callback_id") and view["blocks"] == call.args["view"]["blocks"])
    return slack.fake.views[view_id]


def _request_form(item: str, reason: str, duration: str, start: int | None = None) -> dict[str, Any]:
    values: dict[str, tuple[str, Any]] = {"item": ("static_select", item), "reason": ("plain_text_input", reason),
              "duration": ("plain_text_input", duration)}
    if start is not None:
        values["start"] = ("datetimepicker", start)
    return state_values(**values)


def _code_in(text: str) -> str:
    match = re.search(r"\*Code\*\\?n`(\d{6})`", text)
    assert match, text
    return match.group(1)


async def _approved(slack: SlackHarness, text: str, lead: str = "ULEAD1") -> str:
    _, request_id = await slack.request(text)
    await slack.users.press(Actions.APPROVE, request_id, lead)
    await slack.settle()
    return request_id


async def _card(slack: SlackHarness, request_id: str) -> dict[str, Any]:
    request = await slack.runtime.service.get_request(request_id)
    return slack.fake.message("CLEADS", request.refs["card"]["ts"])


# -- the request form -------------------------------------------------------------------------------------


async def test_access_alone_opens_the_request_form(slack: SlackHarness) -> None:
    reply = await slack.users.command("", "UREQ")
    opened = await slack.fake.wait_for(lambda c: c.method == "views.open")

    assert reply.status == 200 and reply.elapsed < 3
    assert opened.args["trigger_id"] == "trigger-1"
    view = opened.args["view"]
    assert view["callback_id"] == Actions.REQUEST_VIEW
    picker = next(b for b in view["blocks"] if b.get("block_id") == "item")["element"]
    assert picker["type"] == "static_select"
    assert [o["value"] for o in picker["options"]] == ["acme-zendesk", "globex-aws"]
    assert CANARY_PASSWORD not in opened.dump()
    assert json.loads(view["private_metadata"])["channel"] == "CGENERAL"


async def test_missing_reason_opens_the_form_with_the_item_chosen(slack: SlackHarness) -> None:
    await slack.users.command("acme-zendesk for 2h", "UREQ")
    opened = await slack.fake.wait_for(lambda c: c.method == "views.open")

    blocks = {b.get("block_id"): b for b in opened.args["view"]["blocks"]}
    assert blocks["item"]["element"]["initial_option"]["value"] == "acme-zendesk"
    assert blocks["duration"]["element"]["initial_value"] == "2h"
    assert "request.created" not in await slack.event_types()


async def test_unreadable_time_opens_the_form_with_the_problem(slack: SlackHarness) -> None:
    await slack.users.command("acme-zendesk fix broken trigger for 3 fortnights", "UREQ")
    opened = await slack.fake.wait_for(lambda c: c.method == "views.open")

    assert "fortnight" in opened.text()


async def test_submitting_the_form_sends_the_request(slack: SlackHarness) -> None:
    reply = await slack.users.command("", "UREQ")
    opened = await slack.fake.wait_for(lambda c: c.method == "views.open")
    view = _opened_view(slack, opened)

    submitted = await slack.users.submit(view, "UREQ", _request_form("acme-zendesk", "rotate the API key", "45m"))
    await slack.settle()

    answer = submitted.json()
    assert answer["response_action"] == "update"
    request_id = re.search(r"R-[0-9A-Z]{8}", json.dumps(answer["view"])).group()  # type: ignore[union-attr]
    request = await slack.runtime.service.get_request(request_id)
    assert request.reason == "rotate the API key" and request.window.duration == timedelta(minutes=45)
    assert request.refs["origin_channel"] == "CGENERAL"
    assert request.refs["command"]["response_url"].endswith(reply.response_url)
    assert request.refs["card"]["channel"] == "CLEADS"


async def test_form_with_a_start_time_asks_for_that_window(slack: SlackHarness) -> None:
    await slack.users.command("", "UREQ")
    view = _opened_view(slack, await slack.fake.wait_for(lambda c: c.method == "views.open"))
    start = int((slack.running.clock.now() + timedelta(hours=2)).timestamp())

    submitted = await slack.users.submit(view, "UREQ", _request_form("acme-zendesk", "planned maintenance", "1h",
                                                                     start))
    await slack.settle()

    request_id = re.search(r"R-[0-9A-Z]{8}", submitted.text).group()  # type: ignore[union-attr]
    request = await slack.runtime.service.get_request(request_id)
    assert request.window.start == slack.running.clock.now() + timedelta(hours=2)


@pytest.mark.parametrize(("values", "block", "words"), [
    (("acme-zendesk", "fix broken trigger", "9h"), "duration", "longer than"),
    (("acme-zendesk", "fix broken trigger", "soon"), "duration", "duration"),
    (("acme-zendesk", "ab", "1h"), "reason", "too short"),
    (("acme-zendesk", "", "1h"), "reason", "why"),
    (("", "fix broken trigger", "1h"), "item", "Choose"),
])
async def test_invalid_form_points_at_the_right_input(slack: SlackHarness, values: tuple[str, str, str],
                                                      block: str, words: str) -> None:
    await slack.users.command("", "UREQ")
    view = _opened_view(slack, await slack.fake.wait_for(lambda c: c.method == "views.open"))

    submitted = await slack.users.submit(view, "UREQ", _request_form(*values))
    await slack.settle()

    answer = submitted.json()
    assert answer["response_action"] == "errors"
    assert words in answer["errors"][block]
    assert "request.created" not in await slack.event_types()


async def test_form_for_an_item_already_requested_says_so_on_the_item(slack: SlackHarness) -> None:
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h")
    await slack.users.command("", "UREQ")
    view = _opened_view(slack, await slack.fake.wait_for(lambda c: c.method == "views.open"))

    submitted = await slack.users.submit(view, "UREQ", _request_form("acme-zendesk", "another reason", "1h"))

    assert request_id in submitted.json()["errors"]["item"]


# -- one-line requests and subcommands ---------------------------------------------------------------------


async def test_unknown_item_suggests_close_names(slack: SlackHarness) -> None:
    reply = await slack.users.command("acme-zendesc fix broken trigger for 1h", "UREQ")

    assert "no item called 'acme-zendesc'" in reply.json()["text"]
    assert "Did you mean: acme-zendesk?" in reply.json()["text"]
    assert "request.created" not in await slack.event_types()


async def test_over_max_duration_is_refused_with_the_limit(slack: SlackHarness) -> None:
    reply = await slack.users.command("acme-zendesk fix broken trigger for 9h", "UREQ")

    assert "9h is longer than vault 'acme' allows (at most 8h)" in reply.json()["text"]
    assert not slack.fake.calls_to("chat.postMessage")


async def test_help_list_and_report(slack: SlackHarness) -> None:
    help_reply = await slack.users.command("help", "UREQ")
    listing = await slack.users.command("list globex", "UREQ")
    everything = await slack.users.command("list", "UREQ")
    report = await slack.users.command("report weekly", "UADMIN")

    assert "/access acme-zendesk fix broken trigger for 1h" in help_reply.json()["text"]
    assert "globex-aws" in listing.json()["text"] and "acme-zendesk" not in listing.json()["text"]
    assert "acme-zendesk" in everything.json()["text"] and "https://acme.zendesk.example" in everything.json()["text"]
    assert CANARY_PASSWORD not in everything.text
    assert "'weekly' is not a period such as 30d." in report.json()["text"]  # tests/e2e/test_slack_reports.py


async def test_status_cancel_and_done(slack: SlackHarness) -> None:
    _, first = await slack.request("acme-zendesk fix broken trigger for 1h")
    _, second = await slack.request("globex-aws check billing alarm for 1h")

    status = await slack.users.command("status", "UREQ")
    cancelled = await slack.users.command(f"cancel {first.lower()}", "UREQ")
    withdrawn = await slack.users.command(f"done {second}", "UREQ")
    usage = await slack.users.command("cancel", "UREQ")
    await slack.settle()

    assert first in status.json()["text"] and second in status.json()["text"]
    assert f"Cancelled {first}" in cancelled.json()["text"]
    assert f"Cancelled {second}" in withdrawn.json()["text"]
    assert "Usage" in usage.json()["text"]
    assert "Cancelled" in str((await _card(slack, first))["blocks"])
    assert not [b for b in (await _card(slack, first))["blocks"] if b["type"] == "actions"]


async def test_extension_is_approved_and_the_delivered_message_moves_its_end(slack: SlackHarness) -> None:
    request_id = await _approved(slack, "acme-zendesk fix broken trigger for 10m")
    delivered_before = len(slack.fake.calls_to("response_url"))

    reply = await slack.users.command(f"extend {request_id} 5m", "UREQ")
    await slack.settle()
    extension_id = re.search(r"R-[0-9A-Z]{8}", reply.json()["text"]).group()  # type: ignore[union-attr]
    assert extension_id != request_id and "<#CLEADS>" in reply.json()["text"]
    await slack.users.press(Actions.APPROVE, extension_id, "ULEAD2")
    await slack.settle()

    grant = await slack.runtime.service.get_request(request_id)
    assert grant.starts_at is not None and grant.ends_at == grant.starts_at + timedelta(minutes=15)
    redelivered = slack.fake.calls_to("response_url")[delivered_before:]
    assert redelivered and redelivered[-1].args["replace_original"] is True
    assert CANARY_PASSWORD in redelivered[-1].dump()
    assert "Extension request" in str((await _card(slack, extension_id))["blocks"])


# -- decline -------------------------------------------------------------------------------------------------


async def test_decline_asks_for_a_reason_and_tells_the_requester(slack: SlackHarness) -> None:
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h")

    await slack.users.press(Actions.DECLINE, request_id, "ULEAD1")
    opened = await slack.fake.wait_for(lambda c: c.method == "views.open")
    view = _opened_view(slack, opened)
    assert view["callback_id"] == Actions.DECLINE_VIEW
    submitted = await slack.users.submit(view, "ULEAD1",
                                         state_values(reason=("plain_text_input", "use the <!channel> shared login")))
    await slack.settle()

    assert submitted.status == 200 and submitted.text == ""
    request = await slack.runtime.service.get_request(request_id)
    assert request.status.value == "declined" and request.decline_reason == "use the <!channel> shared login"
    card = str((await _card(slack, request_id))["blocks"])
    assert "Declined by <@ULEAD1>" in card and "&lt;!channel&gt;" in card and "<!channel>" not in card
    told = await slack.fake.wait_for(lambda c: c.method == "chat.postMessage" and c.args["channel"] == "DUREQ")
    assert "declined" in told.args["text"] and "shared login" in told.args["text"]


async def test_decline_by_a_non_approver_is_refused_on_the_form(slack: SlackHarness) -> None:
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h")
    await slack.users.press(Actions.DECLINE, request_id, "UOTHER")
    view = _opened_view(slack, await slack.fake.wait_for(lambda c: c.method == "views.open"))

    submitted = await slack.users.submit(view, "UOTHER", state_values(reason=("plain_text_input", "")))

    assert "not an approver" in submitted.json()["errors"]["reason"]
    assert (await slack.runtime.service.get_request(request_id)).status.value == "pending"
    assert "access.refused" in await slack.event_types(request_id)


# -- time: timeouts, DMs for long grants ---------------------------------------------------------------------


async def test_pending_request_times_out_and_card_and_requester_say_so(slack: SlackHarness) -> None:
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h")

    slack.running.clock.advance(timedelta(minutes=31))
    await slack.runtime.scheduler.tick()
    await slack.settle()

    card = str((await _card(slack, request_id))["blocks"])
    assert "Timed out" in card and Actions.APPROVE not in card
    told = await slack.fake.wait_for(lambda c: c.method == "chat.postMessage" and "timed out" in c.args.get("text", ""))
    assert told.args["channel"] == "DUREQ"
    assert "request.timed_out" in await slack.event_types(request_id)


async def test_grant_longer_than_a_response_url_lives_is_delivered_by_dm_and_wiped_there(
        slack: SlackHarness) -> None:
    request_id = await _approved(slack, "acme-zendesk fix broken trigger for 1h")

    delivered = next(c for c in slack.fake.calls_to("chat.postMessage") if CANARY_PASSWORD in c.dump())
    assert delivered.args["channel"] == "DUREQ"
    assert pyotp.TOTP(CANARY_SEED).verify(_code_in(delivered.dump()), for_time=slack.running.clock.now())
    request = await slack.runtime.service.get_request(request_id)
    assert request.refs["delivery"]["via"] == "dm"

    slack.running.clock.advance(timedelta(hours=1, seconds=1))
    await slack.runtime.scheduler.tick()
    await slack.settle()

    message = slack.fake.message("DUREQ", request.refs["delivery"]["ts"])
    assert "expired" in message["text"] and CANARY_PASSWORD not in json.dumps(message["blocks"])
    assert message["history"]  # edited in place, not a new message


async def test_spent_response_url_falls_back_to_a_dm(slack: SlackHarness) -> None:
    reply, request_id = await slack.request("acme-zendesk fix broken trigger for 20m")
    slack.fake.response_uses[reply.response_url] = 5  # Slack answers 404 used_url from now on

    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()

    delivered = [c for c in slack.fake.calls if CANARY_PASSWORD in c.dump()]
    assert [(c.method, c.ok) for c in delivered] == [("response_url", False), ("chat.postMessage", True)]
    assert delivered[1].args["channel"] == "DUREQ"
    assert (await slack.runtime.service.get_request(request_id)).refs["delivery"]["via"] == "dm"


async def test_failed_delivery_is_audited_and_shows_nothing(slack: SlackHarness) -> None:
    slack.fake.fail_next("chat.postMessage", "channel_not_found", when=lambda args: "blocks" in args and args.get(
        "channel") == "DUREQ")
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h")

    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()

    assert "grant.delivery_failed" in await slack.event_types(request_id)
    assert not [c for c in slack.fake.calls if CANARY_PASSWORD in c.dump() and c.ok]


async def test_rate_limited_card_is_retried_after_retry_after_without_holding_up_the_answer(tmp_path: Path) -> None:
    async with slack_harness(tmp_path, adapter_options={"ack_budget": 0.2}) as slack:
        slack.fake.rate_limit_next("chat.postMessage", retry_after=1)

        reply = await slack.users.command("acme-zendesk fix broken trigger for 1h", "UREQ")
        await slack.settle()
        # The answer does not wait for Slack's rate limit: the card is durable work, retried later.
        assert "<#CLEADS>" in reply.json()["text"]
        request_id = re.search(r"R-[0-9A-Z]{8}", reply.json()["text"]).group()  # type: ignore[union-attr]
        (effect,) = [e for e in await slack.runtime.store.effects_of(request_id) if e.kind.value == "post_card"]
        assert effect.status.value == "pending" and effect.error == "chat.postMessage:ratelimited"
        assert effect.due_at >= slack.running.clock.now() + timedelta(seconds=1)  # Retry-After honoured

        slack.running.clock.advance(timedelta(seconds=1))
        slack.runtime.effects.wake()
        await slack.fake.wait_for(lambda c: c.method == "chat.postMessage" and c.ok and c.args["channel"] == "CLEADS")
        await slack.settle()
        attempts = [c for c in slack.fake.calls if c.method == "chat.postMessage" and c.args["channel"] == "CLEADS"]
        assert [c.status for c in attempts] == [429, 200]
        assert "card" in (await slack.runtime.service.get_request(request_id)).refs


# -- App Home ------------------------------------------------------------------------------------------------


def _home(slack: SlackHarness, user_id: str = "UREQ") -> str:
    return json.dumps(slack.fake.homes[user_id])


def _publishes(slack: SlackHarness, user_id: str, after: int = 0) -> list[Call]:
    return [c for c in slack.fake.calls[after:] if c.method == "views.publish" and c.args["user_id"] == user_id]


async def _open_home(slack: SlackHarness, user_id: str = "UREQ") -> None:
    before = len(slack.fake.calls)
    opened = await slack.users.event({"type": "app_home_opened", "user": user_id, "tab": "home",
                                      "channel": f"D{user_id}"})
    assert opened.status == 200
    await slack.fake.wait_for(lambda c: c.method == "views.publish" and c.args["user_id"] == user_id, after=before)
    await slack.settle()


async def test_home_tab_shows_the_live_code_of_an_active_grant_audited_once_and_never_the_password(
        slack: SlackHarness) -> None:
    await _open_home(slack)  # the tab is theirs: a change now publishes to it
    request_id = await _approved(slack, "acme-zendesk fix broken trigger for 1h")

    home = _home(slack)
    assert request_id in home and Actions.NEW_CODE in home and Actions.DONE in home
    assert pyotp.TOTP(CANARY_SEED).verify(_code_in(home), for_time=slack.running.clock.now())
    # Published on activation, while the user may not be looking: audited at once, before the code left.
    assert await slack.codes_shown(request_id) == ["app_home"]
    shown = next(e for e in await slack.events(request_id) if e.type == "grant.code_shown")
    assert shown.details == {"password": False, "code": True, "via": "app_home"}

    await slack.request("globex-aws quarterly audit for 1h")  # the tab changes again (a waiting request)
    assert "globex-aws" in _home(slack)
    assert await slack.codes_shown(request_id) == ["app_home"]  # once per grant, not once per publish
    assert all(CANARY_PASSWORD not in c.dump() for c in _publishes(slack, "UREQ"))


async def test_opening_the_home_tab_audits_the_code_it_shows_exactly_once(slack: SlackHarness) -> None:
    request_id = await _approved(slack, "acme-zendesk fix broken trigger for 1h")
    before = await slack.codes_shown(request_id)

    await _open_home(slack)

    assert await slack.codes_shown(request_id) == [*before, "app_home"]
    assert pyotp.TOTP(CANARY_SEED).verify(_code_in(_home(slack)), for_time=slack.running.clock.now())
    assert CANARY_PASSWORD not in _home(slack)


async def test_each_totp_period_republishes_the_new_code_without_a_new_audit_event(slack: SlackHarness) -> None:
    request_id = await _approved(slack, "acme-zendesk fix broken trigger for 1h")
    await _open_home(slack)
    home_tab = slack.adapter.home
    old_code, events = _code_in(_home(slack)), await slack.codes_shown(request_id)
    assert home_tab.refreshing == {"UREQ"}

    slack.running.clock.advance(timedelta(seconds=30))
    before = len(slack.fake.calls)
    await home_tab.refresh_now("UREQ")

    assert len(_publishes(slack, "UREQ", before)) == 1
    new_code = _code_in(_home(slack))
    assert new_code != old_code
    assert pyotp.TOTP(CANARY_SEED).verify(new_code, for_time=slack.running.clock.now())
    assert await slack.codes_shown(request_id) == events
    assert CANARY_PASSWORD not in _home(slack)


async def test_refresher_republishes_by_itself_at_the_period_boundary(tmp_path: Path) -> None:
    # One second before a TOTP boundary: the refresher's real sleep is one second long.
    clock = FakeClock(datetime(2026, 3, 10, 9, 0, 29, tzinfo=UTC))
    async with slack_harness(tmp_path, clock=clock) as slack:
        await _open_home(slack)
        request_id = await _approved(slack, "acme-zendesk fix broken trigger for 1h")
        events = await slack.codes_shown(request_id)
        before = len(slack.fake.calls)
        clock.advance(timedelta(seconds=1))

        await slack.fake.wait_for(lambda c: c.method == "views.publish" and c.args["user_id"] == "UREQ",
                                  after=before)

        assert pyotp.TOTP(CANARY_SEED).verify(_code_in(_home(slack)), for_time=clock.now())
        assert await slack.codes_shown(request_id) == events


async def test_expiry_takes_the_code_off_the_home_tab_and_stops_the_refresher(slack: SlackHarness) -> None:
    request_id = await _approved(slack, "acme-zendesk fix broken trigger for 1h")
    await _open_home(slack)
    assert slack.adapter.home.refreshing == {"UREQ"}

    slack.running.clock.advance(timedelta(hours=1))
    await slack.runtime.scheduler.tick()
    await slack.settle()

    home = _home(slack)
    assert request_id in home and "Expired" in home
    assert not re.search(r"`\d{6}`", home) and Actions.NEW_CODE not in home and CANARY_PASSWORD not in home
    assert slack.adapter.home.refreshing == frozenset()
    events = await slack.codes_shown(request_id)
    await slack.adapter.home.refresh_now("UREQ")
    assert slack.adapter.home.refreshing == frozenset() and await slack.codes_shown(request_id) == events


async def test_done_on_the_home_tab_takes_the_code_off_it(slack: SlackHarness) -> None:
    request_id = await _approved(slack, "acme-zendesk fix broken trigger for 1h")

    await slack.users.press(Actions.DONE, request_id, "UREQ", home=True)
    await slack.settle()

    assert not re.search(r"`\d{6}`", _home(slack)) and slack.adapter.home.refreshing == frozenset()


async def test_another_users_home_never_shows_someone_elses_grant(slack: SlackHarness) -> None:
    await _open_home(slack)
    request_id = await _approved(slack, "acme-zendesk fix broken trigger for 1h")

    await _open_home(slack, "UOTHER")
    await slack.users.press(Actions.NEW_CODE, request_id, "UOTHER", home=True)
    await slack.settle()

    for call in _publishes(slack, "UOTHER"):
        assert request_id not in call.dump() and not re.search(r"`\d{6}`", call.dump())
    assert "Nothing active." in _home(slack, "UOTHER")
    assert await slack.codes_shown(request_id) == ["app_home"]  # only UREQ's own, on activation
    refused = [e for e in await slack.events(request_id) if e.type == "access.refused"]
    assert [e.actor.user_id for e in refused] == ["UOTHER"]
    assert slack.adapter.home.refreshing == {"UREQ"}


async def test_new_code_on_the_home_tab_is_audited_and_republishes_the_tab(slack: SlackHarness) -> None:
    request_id = await _approved(slack, "acme-zendesk fix broken trigger for 1h")
    events = await slack.codes_shown(request_id)
    before = len(slack.fake.calls)
    slack.running.clock.advance(timedelta(seconds=30))

    await slack.users.press(Actions.NEW_CODE, request_id, "UREQ", home=True)
    await slack.settle()

    assert len(_publishes(slack, "UREQ", before)) == 1
    assert pyotp.TOTP(CANARY_SEED).verify(_code_in(_home(slack)), for_time=slack.running.clock.now())
    assert await slack.codes_shown(request_id) == [*events, "app_home"]
    assert CANARY_PASSWORD not in _home(slack)
    assert not [c for c in slack.fake.calls[before:] if c.method == "chat.postMessage"]  # no DM, no apology


async def test_show_password_on_the_home_tab_opens_an_audited_modal_wiped_at_expiry(slack: SlackHarness) -> None:
    request_id = await _approved(slack, "acme-zendesk fix broken trigger for 1h")
    events = await slack.codes_shown(request_id)

    await slack.users.press(Actions.SHOW_PASSWORD, request_id, "UREQ", home=True)
    modal_call = await slack.fake.wait_for(lambda c: c.method == "views.open")
    await slack.settle()
    assert CANARY_PASSWORD in modal_call.dump()
    assert pyotp.TOTP(CANARY_SEED).verify(_code_in(modal_call.dump()), for_time=slack.running.clock.now())
    assert await slack.codes_shown(request_id) == [*events, "message"]
    view_id = (await slack.runtime.service.get_request(request_id)).refs["code_view"]

    slack.running.clock.advance(timedelta(seconds=30))
    await slack.users.press(Actions.MODAL_NEW_CODE, request_id, "UREQ", view_id=view_id)
    await slack.fake.wait_for(lambda c: c.method == "views.update" and c.args["view_id"] == view_id)
    await slack.settle()
    assert await slack.codes_shown(request_id) == [*events, "message", "message"]

    slack.running.clock.advance(timedelta(hours=1))
    await slack.runtime.scheduler.tick()
    await slack.settle()
    assert CANARY_PASSWORD not in json.dumps(slack.fake.views[view_id])
    assert "expired" in json.dumps(slack.fake.views[view_id])
    assert CANARY_PASSWORD not in _home(slack)


async def test_home_request_button_opens_the_form_and_done_ends_access(slack: SlackHarness) -> None:
    request_id = await _approved(slack, "acme-zendesk fix broken trigger for 1h")

    await slack.users.press(Actions.OPEN_REQUEST, "open", "UREQ", home=True)
    opened = await slack.fake.wait_for(lambda c: c.method == "views.open")
    await slack.users.press(Actions.DONE, request_id, "UREQ", home=True)
    await slack.settle()

    assert opened.args["view"]["callback_id"] == Actions.REQUEST_VIEW
    assert (await slack.runtime.service.get_request(request_id)).status.value == "revoked"


# -- approvers by user group and by count ---------------------------------------------------------------------

GROUP_POLICY = TEST_POLICY.replace('[approvers]\nslack = ["ULEAD1", "ULEAD2"]',
                                   '[approvers]\nslack = ["ULEAD1", "ULEAD2"]\nslack_groups = ["SLEADS"]')


async def test_member_of_an_approver_user_group_can_approve(tmp_path: Path) -> None:
    async with slack_harness(tmp_path, policy_text=GROUP_POLICY) as slack:
        slack.fake.usergroups["SLEADS"] = ["UGROUPLEAD"]
        _, first = await slack.request("acme-zendesk fix broken trigger for 1h")
        _, second = await slack.request("globex-aws check billing alarm for 1h")

        await slack.users.press(Actions.APPROVE, first, "UGROUPLEAD")
        await slack.users.press(Actions.APPROVE, second, "UGROUPLEAD")
        await slack.settle()

        assert (await slack.runtime.service.get_request(first)).status.value == "active"
        assert len((await slack.runtime.service.get_request(second)).approvals) == 1
        lookups = slack.fake.calls_to("usergroups.users.list")
        assert lookups and lookups[0].args["usergroup"] == "SLEADS"
        assert len(lookups) == 1  # cached between presses


async def test_failed_group_lookup_fails_closed(tmp_path: Path) -> None:
    async with slack_harness(tmp_path, policy_text=GROUP_POLICY) as slack:
        slack.fake.usergroups["SLEADS"] = ["UGROUPLEAD"]
        _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h")
        slack.fake.fail_next("usergroups.users.list", "missing_scope")

        press = await slack.users.press(Actions.APPROVE, request_id, "UGROUPLEAD")
        answer = await slack.fake.wait_for(lambda c: c.key == press.response_url)

        assert "not an approver" in answer.text()


async def test_two_approval_vault_shows_progress_then_activates(slack: SlackHarness) -> None:
    _, request_id = await slack.request("globex-aws check billing alarm for 20m")

    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()
    card = str((await _card(slack, request_id))["blocks"])
    again = await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    repeat = await slack.fake.wait_for(lambda c: c.key == again.response_url)
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD2")
    await slack.settle()

    assert "1 of 2 approvals" in card and Actions.APPROVE in card
    assert "already approved" in repeat.text()
    assert (await slack.runtime.service.get_request(request_id)).status.value == "active"


# -- Socket Mode ---------------------------------------------------------------------------------------------


async def test_socket_mode_receives_commands_and_acks_over_the_websocket(tmp_path: Path) -> None:
    async with slack_harness(tmp_path, slack_app_token=APP_TOKEN, slack_signing_secret=None) as slack:
        payload = {"command": "/access", "text": "acme-zendesk fix broken trigger for 1h", "user_id": "UREQ",
                   "user_name": "ureq", "channel_id": "CGENERAL", "team_id": "T0TEST",
                   "response_url": slack.fake.response_url("socket-cmd"), "trigger_id": "trigger-s"}

        ack = await slack.fake.socket_send("slash_commands", payload)
        await slack.settle()

        assert "<#CLEADS>" in ack["payload"]["text"]
        assert [c.method for c in slack.fake.calls[:1]] == ["apps.connections.open"]
        assert slack.adapter.describe() == {"mode": "socket", "started": True, "api_url": slack.fake.url,
                                            "connected": True, "admission": {
                                                "max_running": 16, "max_queued": 256, "admitted": 0, "waiting": 0,
                                                "refused": 0, "total": 1}}
        card = await slack.fake.wait_for(lambda c: c.method == "chat.postMessage")
        request_id = re.search(r"R-[0-9A-Z]{8}", ack["payload"]["text"]).group()  # type: ignore[union-attr]
        assert request_id in card.text()
        http = await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
        assert http.status == 501  # no signing secret: HTTP mode is off
        await slack.fake.socket_send("interactive", {
            "type": "block_actions", "user": user("ULEAD1"), "team": {"id": "T0TEST"}, "trigger_id": "t",
            "response_url": slack.fake.response_url("socket-press"),
            "actions": [{"type": "button", "action_id": Actions.APPROVE, "value": request_id}]})
        await slack.settle()
        assert (await slack.runtime.service.get_request(request_id)).status.value == "active"
