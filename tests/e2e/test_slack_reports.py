"""Slack: `/access report 30d` — admins get a summary and the CSV and HTML in their DM; others are refused."""

from __future__ import annotations

import csv
import io
import logging
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.slack.blocks import Actions
from bot.domain.wording import WORKING
from tests.support.app import CANARY_PASSWORD, CANARY_SEED
from tests.support.fake_slack import BOT_TOKEN, Reply, SlackHarness, slack_harness

ADMIN = "UADMIN"
CSV_HEADER = ["section", "key", "label", "vault", "metric", "value"]


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    async with slack_harness(tmp_path) as harness:
        yield harness


async def _one_approved_request(slack: SlackHarness) -> str:
    """One request, approved three minutes later; the report is asked for ten minutes after that."""
    _, request_id = await slack.request("acme-zendesk fix broken trigger for 1h")
    slack.running.clock.advance(timedelta(minutes=3))
    await slack.users.press(Actions.APPROVE, request_id, "ULEAD1")
    await slack.settle()
    # A period ends at "now" (exclusive): the report must come later than the events it counts.
    slack.running.clock.advance(timedelta(minutes=10))
    return request_id


async def _answer(slack: SlackHarness, reply: Reply) -> str:
    """The report reply: in the ack itself, or (when slow) the follow-up through the response_url."""
    assert reply.status == 200, reply.text
    await slack.settle()
    text = str(reply.json()["text"])
    if text != WORKING:
        return text
    shown = slack.fake.shown(reply.response_url)
    assert shown is not None, "no follow-up after the working notice"
    return str(shown["text"])


def _dm_of(slack: SlackHarness, user_id: str) -> str:
    opened = [c for c in slack.fake.calls_to("conversations.open") if c.args.get("users") == user_id]
    assert opened, f"no DM was opened with {user_id}"
    return f"D{user_id}"  # what the fake's conversations.open answered


async def test_admin_gets_the_summary_and_both_files_in_a_dm(slack: SlackHarness,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    request_id = await _one_approved_request(slack)

    reply = await slack.users.command("report 30d", ADMIN, channel_id="CGENERAL")
    text = await _answer(slack, reply)

    assert "*Access report" in text
    assert "Requests 1: 1 approved, 0 declined, 0 timed out, 0 cancelled; 1 reveal(s)" in text
    assert "Approval latency: median 3m" in text and "(1 approved)" in text
    assert "direct messages" in text
    dm = _dm_of(slack, ADMIN)
    shared = slack.fake.shared_files()
    assert sorted(f.filename.rsplit(".", 1)[1] for f in shared) == ["csv", "html"]
    assert all(f.channels == [dm] for f in shared), "shared in the admin's DM and nowhere else"
    assert not slack.fake.shared_files("CLEADS") and not slack.fake.shared_files("CGENERAL")
    assert all(f.upload_authorization is None for f in shared), "the bot token never goes to the upload URL"

    report_csv = next(f for f in shared if f.filename.endswith(".csv"))
    rows = list(csv.reader(io.StringIO(report_csv.text())))
    assert rows[0] == CSV_HEADER
    assert any("acme-zendesk" in row for row in rows)
    html = next(f for f in shared if f.filename.endswith(".html")).text()
    assert "<svg" in html and "acme-zendesk" in html
    for file in shared:
        assert file.filename.startswith("jitpass-report-") and file.title.startswith("Access report")
        assert CANARY_PASSWORD not in file.text() and CANARY_SEED not in file.text()

    assert CANARY_PASSWORD not in caplog.text and CANARY_SEED not in caplog.text
    assert "event=report_files_shared user=UADMIN channel=DUADMIN" in caplog.text
    [generated] = [e for e in await slack.events() if e.type == "report.generated"]
    assert generated.actor is not None and generated.actor.user_id == ADMIN
    assert request_id in [e.request_id for e in await slack.events()]


async def test_upload_flow_is_announce_upload_then_share(slack: SlackHarness) -> None:
    await slack.users.command("report 7d", ADMIN)
    await slack.settle()

    flow = [c.method for c in slack.fake.calls if c.method.startswith("files.") or c.method == "upload"]
    assert flow == ["files.getUploadURLExternal", "upload", "files.getUploadURLExternal", "upload",
                    "files.completeUploadExternal"]
    announced = slack.fake.calls_to("files.getUploadURLExternal")
    assert all(c.token == BOT_TOKEN for c in announced)
    assert [int(c.args["length"]) for c in announced] == [f.length for f in slack.fake.shared_files()]
    [complete] = slack.fake.calls_to("files.completeUploadExternal")
    assert [f["id"] for f in complete.args["files"]] == [f.id for f in slack.fake.shared_files()]
    assert complete.args["channel_id"] == _dm_of(slack, ADMIN)


async def test_slow_report_is_acknowledged_then_followed_up(tmp_path: Path) -> None:
    async with slack_harness(tmp_path, adapter_options={"ack_budget": 0.0}) as slack:
        reply = await slack.users.command("report 30d", ADMIN)
        assert reply.json()["text"] == WORKING and reply.elapsed < 3

        text = await _answer(slack, reply)

        assert "Requests 0: 0 approved" in text
        assert len(slack.fake.shared_files(_dm_of(slack, ADMIN))) == 2


async def test_non_admin_is_refused_audited_and_gets_no_files(slack: SlackHarness) -> None:
    reply = await slack.users.command("report 30d", "UREQ")
    text = await _answer(slack, reply)

    assert text == "Only jitpass admins can produce access reports."
    [refusal] = [e for e in await slack.events() if e.type == "access.refused"]
    assert refusal.actor is not None and refusal.actor.user_id == "UREQ"
    assert "report" in (refusal.reason or "")
    assert not slack.fake.files and not slack.fake.calls_to("files.getUploadURLExternal", ok=None)
    assert "report.generated" not in await slack.event_types()


async def test_a_lead_is_not_an_admin_either(slack: SlackHarness) -> None:
    text = await _answer(slack, await slack.users.command("report", "ULEAD1"))

    assert "Only jitpass admins" in text and not slack.fake.files


@pytest.mark.parametrize(("args", "words"), [
    ("weekly", "'weekly' is not a period such as 30d."),
    ("30d colour:blue", "I don't understand 'colour:blue' in a report request."),
    ("from:yesterday", "--from 'yesterday' is not a date."),
])
async def test_bad_arguments_get_a_specific_message_and_an_example(slack: SlackHarness, args: str,
                                                                   words: str) -> None:
    text = await _answer(slack, await slack.users.command(f"report {args}", ADMIN))

    assert words in text
    assert "Example:" in text
    assert not slack.fake.files
    assert "report.generated" not in await slack.event_types()


async def test_refused_upload_still_answers_with_the_summary(slack: SlackHarness) -> None:
    slack.fake.fail_next("files.getUploadURLExternal", "missing_scope")

    text = await _answer(slack, await slack.users.command("report 30d", ADMIN))

    assert "Requests 0" in text
    assert "could not send you the CSV and HTML files (missing_scope)" in text
    assert not slack.fake.shared_files()
    assert "report.generated" in await slack.event_types()


async def test_length_mismatch_at_the_upload_url_is_an_error(slack: SlackHarness) -> None:
    """The fake holds Slack's promise: the bytes posted must be exactly the announced length."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{slack.fake.url}files.getUploadURLExternal",
                                data={"filename": "x.csv", "length": "5"},
                                headers={"Authorization": f"Bearer {BOT_TOKEN}"}) as response:
            announced = await response.json()
        async with session.post(announced["upload_url"], data=b"toolong") as response:
            assert response.status == 400 and await response.text() == "length_mismatch"
        async with session.post(f"{slack.fake.url}files.completeUploadExternal",
                                data={"files": f'[{{"id": "{announced["file_id"]}"}}]', "channel_id": "DX"},
                                headers={"Authorization": f"Bearer {BOT_TOKEN}"}) as response:
            assert (await response.json())["error"] == "file_not_found"


async def test_the_summary_shows_the_signed_checkpoint_and_the_witness_verdict(tmp_path: Path) -> None:
    witness = tmp_path / "witness.jsonl"
    async with slack_harness(tmp_path, environ={"JITPASS_AUDIT_WITNESS_FILE": str(witness)}) as slack:
        await _one_approved_request(slack)
        checkpointer = slack.running.runtime.checkpointer
        assert checkpointer is not None
        signed = await checkpointer.checkpoint("manual")
        assert signed is not None
        text = await _answer(slack, await slack.users.command("report 30d", ADMIN))
        assert f"Signed checkpoint: seq {signed.seq} signed " in text and f"(manual), key {signed.key_id}" in text
        assert re.search(r"Witness: matches the witness file \(\d+ checkpoint\(s\) agree\)", text), text

        # The newest event and its checkpoint in the store go; the witness file still has the checkpoint.
        signed = await checkpointer.checkpoint("manual")
        assert signed is not None
        with closing(sqlite3.connect(tmp_path / "jitpass.db")) as conn:
            conn.execute("DELETE FROM events WHERE seq = ?", (signed.seq,))
            conn.commit()
        text = await _answer(slack, await slack.users.command("report 30d", ADMIN))
        assert re.search(r"Witness: does NOT match the witness file: truncated \(witness line \d+\)", text), text
