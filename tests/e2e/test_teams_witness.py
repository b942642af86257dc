"""The Teams witness channel: each signed checkpoint posted to a Teams channel through the Bot Connector
(the stand-in refuses what the real connector refuses), and the messages, copied back from the channel into
`jitpass audit verify --witness -`, catch a tail deletion the store alone no longer shows."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from bot.domain.audit_signing import parse_checkpoint_line
from tests.support.app import TEST_POLICY, FakeClock, running_app, test_settings
from tests.support.fake_connector import FakeConnector, TeamsUser, message_activity, post_activity

AUDIT_CHANNEL = "19:audit@thread.tacv2"
POLICY = TEST_POLICY + (f'\n[audit]\ncheckpoint_every_events = 1000\n'
                        f'[audit.witness_channel]\nteams = "{AUDIT_CHANNEL}"\n')
SOMEONE = TeamsUser("req-oid-1", "Req One")


def _verify(tmp_path: Path, master_key: str, pasted: str) -> subprocess.CompletedProcess[str]:
    """`jitpass audit verify --witness -` on the test's store, with the pasted chat messages on stdin."""
    env = {"PATH": "", "JITPASS_HOME": str(tmp_path), "JITPASS_DOTENV": str(tmp_path / "none.env"),
           "JITPASS_STORE": f"sqlite:///{tmp_path / 'jitpass.db'}", "JITPASS_MASTER_KEY": master_key,
           "JITPASS_AUDIT_KEY_FILE": str(tmp_path / "jitpass-audit.key")}
    return subprocess.run([str(Path(sys.executable).parent / "jitpass"), "audit", "verify", "--witness", "-"],
                          input=pasted, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)


async def test_each_checkpoint_is_posted_to_the_teams_channel_and_pasted_back_it_catches_a_truncation(
        tmp_path: Path, connector: FakeConnector, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    settings = test_settings(tmp_path)  # no Slack tokens: the Slack witness channel below has no one to post it
    policy = POLICY + 'slack = "C0AUDIT"\n'
    async with running_app(tmp_path, settings=settings, clock=clock, policy_text=policy) as running:
        checkpointer = running.runtime.checkpointer
        assert checkpointer is not None and [w.name for w in checkpointer.witnesses] == ["teams"]
        assert "event=audit_witness_channel_unused platform=slack" in caplog.text
        # Nobody has messaged the bot yet, so Teams gave it no serviceUrl: the post fails and is recorded.
        early = await checkpointer.checkpoint("manual")
        assert early is not None
        health = checkpointer.describe()["witnesses"]["teams"]
        assert (health["failures"], health["last_error"], health["published_seq"]) == (1, "DeliveryError", 0)
        assert connector.calls_to(AUDIT_CHANNEL) == []

        status, _ = await post_activity(running.base_url, message_activity(connector.url, SOMEONE, "help"))
        assert status == 202
        signed = await checkpointer.checkpoint("manual")
        assert signed is not None
        call = await connector.wait_for(lambda c: c.conversation_id == AUDIT_CHANNEL and c.kind == "send")
        assert call.status == 201, call.dump()  # the connector took it as a valid message activity
        assert call.text == f"jitpass audit checkpoint seq {signed.seq}: `{signed.to_line()}`"
        assert parse_checkpoint_line(call.text) == signed and signed.signature_problem(checkpointer.ring) == ""
        assert checkpointer.describe()["witnesses"]["teams"]["published_seq"] == signed.seq
    # The shutdown checkpoint went to the channel too.
    posted = [c for c in connector.calls_to(AUDIT_CHANNEL) if c.status == 201]
    assert [parse_checkpoint_line(c.text).reason for c in posted] == ["manual", "shutdown"]
    pasted = "".join(f"{c.text}\n" for c in posted)  # the messages' text, as copied from the channel
    assert settings.master_key

    intact = _verify(tmp_path, settings.master_key, pasted)
    assert intact.returncode == 0, intact.stderr
    assert "witness: 2 checkpoint(s) agree with the trail" in intact.stdout

    # A database administrator deletes the newest event and the store's own checkpoint with it.
    with closing(sqlite3.connect(tmp_path / "jitpass.db")) as conn:
        conn.execute("DELETE FROM events WHERE seq = (SELECT max(seq) FROM events)")
        conn.execute("DELETE FROM meta WHERE key = 'audit_signed_checkpoint'")
        conn.commit()
    caught = _verify(tmp_path, settings.master_key, pasted)
    assert caught.returncode == 5, caught.stdout + caught.stderr
    assert f"TRUNCATED (witness line 1): the trail ends at seq {signed.seq - 1} but checkpoint seq {signed.seq}" \
        in caught.stderr
