"""A canary sweep: a known password and TOTP seed go through every Slack flow, then every place they
must never be is searched: the log (at DEBUG), the store's files on disk outside the encrypted blobs,
every call to the Slack stand-in except the private delivery to the requester, the audit exports, every
report format and the report files shared in Slack."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.slack.blocks import Actions
from bot.bootstrap import Runtime
from bot.domain.audit_export import csv_row, jsonl_line
from bot.reports.build import build_report
from bot.reports.html import render_html
from bot.reports.render import render_csv, render_json, render_table
from tests.support.app import CANARY_PASSWORD, CANARY_SEED
from tests.support.fake_slack import SlackHarness, slack_harness

CANARIES = (CANARY_PASSWORD, CANARY_SEED)


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    async with slack_harness(tmp_path) as harness:
        yield harness


def _clean(text: str, where: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"a canary reached {where}"


async def assert_stored_and_reported_clean(runtime: Runtime, home: Path) -> None:
    """No canary in the store's files on disk (outside the encrypted blobs), the exports or any report format."""
    for path in sorted(home.glob("jitpass.db*")):  # the database, its WAL and shared memory
        raw = path.read_bytes()
        for canary in CANARIES:
            assert canary.encode() not in raw, f"a canary is in {path.name} outside the encrypted blobs"
    events = [e async for e in runtime.store.events()]
    assert {"grant.revealed", "grant.code_shown", "grant.extended", "report.generated", "grant.expired"} <= {
        e.type for e in events}
    _clean("\n".join(jsonl_line(e) for e in events), "the JSON lines export")
    _clean("\n".join(",".join(csv_row(e)) for e in events), "the CSV export")
    now = runtime.clock.now()
    report = await build_report(runtime.store, runtime.policy, now, now - timedelta(days=30), now)
    for render in (render_csv, render_json, render_html):
        _clean(render(report), f"the {render.__name__} report")
    table = io.StringIO()
    render_table(report, table)
    _clean(table.getvalue(), "the table report")


async def test_the_canary_appears_nowhere_but_the_private_delivery(slack: SlackHarness, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Every flow: request, approve, New code, extension and its approval, report, done; a second grant expires.
    _, first = await slack.request("acme-zendesk fix broken trigger for 20m")
    await slack.users.press(Actions.APPROVE, first, "ULEAD1")
    await slack.settle()
    await slack.users.press(Actions.NEW_CODE, first, "UREQ", channel_id="CGENERAL")
    await slack.settle()
    reply = await slack.users.command(f"extend {first} 5m", "UREQ")
    await slack.settle()
    extension = re.search(r"R-[0-9A-Z]{8}", reply.json()["text"]).group()  # type: ignore[union-attr]
    await slack.users.press(Actions.APPROVE, extension, "ULEAD2")
    await slack.settle()
    await slack.users.command("status", "UREQ")
    await slack.users.command("report 30d", "UADMIN")
    await slack.settle()
    await slack.users.command(f"done {first}", "UREQ")
    await slack.settle()
    _, second = await slack.request("acme-zendesk look at ticket 42 for 10m")
    await slack.users.press(Actions.APPROVE, second, "ULEAD1")
    await slack.settle()
    slack.running.clock.advance(timedelta(minutes=11))
    await slack.runtime.scheduler.tick()
    await slack.settle()
    await slack.runtime.effects.run_due()

    delivered = 0
    for call in slack.fake.calls:
        if any(canary in call.dump() for canary in CANARIES):
            # Only the requester's private delivery: their command's response_url or their DM.
            private = call.method == "response_url" or call.args.get("channel") == "DUREQ"
            assert private, f"the password went to {call.method} {call.args.get('channel')}"
            assert CANARY_SEED not in call.dump(), "the seed never leaves the vault, not even to the holder"
            delivered += 1
    assert delivered >= 1, "the sweep must have delivered the password at least once"

    _clean(caplog.text, "the log")
    await assert_stored_and_reported_clean(slack.runtime, tmp_path)
    shared = slack.fake.shared_files()
    assert shared, "the report files were shared"
    for file in shared:
        _clean(file.text(), f"the shared report file {file.filename}")
