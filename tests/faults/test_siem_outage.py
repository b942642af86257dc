"""Streaming the trail to each SIEM sink through outages and restarts: nothing lost, nothing reordered.

Real SQLite files, real sinks talking to local stand-ins over 127.0.0.1 (tests/support/siem.py) that
speak the webhook / Splunk HEC / RFC 5424+6587 wire formats and refuse what the real ones refuse.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.siem import SplunkHecSink, SyslogSink, WebhookSink, sinks_from_env
from bot.domain.audit_signing import format_private_line, parse_audit_keys, parse_checkpoint_line
from bot.domain.errors import InputError
from bot.ports import SiemSink, SinkError
from bot.services.checkpoints import Checkpointer, deployment_id
from bot.services.siem import SiemStreamer, cursor_key
from storage.sqlite import SqliteStore
from tests.support.siem import SplunkHec, SyslogReceiver, WebhookReceiver
from tests.support.stores import FakeClock, draft
from tests.support.tls import Authority

SECRET = "whsec-test-secret"
TOKEN = "11111111-2222-3333-4444-555555555555"


@dataclass
class Sink:
    """One sink kind under test: how to make the jitpass side, read the stand-in, take it down and back."""

    make: Callable[[], SiemSink]
    seqs: Callable[[], list[tuple[str, int]]]  # (kind, seq) in arrival order
    down: Callable[[], Awaitable[None]]
    up: Callable[[], Awaitable[None]]
    duplicates_allowed: bool


@asynccontextmanager
async def webhook() -> AsyncIterator[Sink]:
    async with WebhookReceiver(SECRET) as receiver:
        async def down() -> None:
            receiver.down = True

        async def up() -> None:
            receiver.down = False

        yield Sink(lambda: WebhookSink(f"{receiver.url}/hook", SECRET, "dep", batch_size=7),
                   lambda: [(_kind(r), r["seq"]) for r in receiver.records], down, up, False)


@asynccontextmanager
async def splunk() -> AsyncIterator[Sink]:
    async with SplunkHec(TOKEN, ack=True) as hec:
        async def down() -> None:
            hec.down = True

        async def up() -> None:
            hec.down = False

        yield Sink(lambda: SplunkHecSink(hec.url, TOKEN, ack=True, batch_size=7, ack_interval=0.01),
                   lambda: [(_kind(e["event"]), e["event"]["seq"]) for e in hec.events], down, up, False)


@asynccontextmanager
async def syslog() -> AsyncIterator[Sink]:
    receiver = SyslogReceiver()
    await receiver.start()
    try:
        yield Sink(lambda: SyslogSink("127.0.0.1", receiver.port, batch_size=7, timeout=2.0),
                   lambda: [(_kind(m[3]), m[3]["seq"]) for m in receiver.messages], receiver.go_down,
                   receiver.start, True)
    finally:
        await receiver.go_down()


def _kind(record: dict[str, Any]) -> str:
    return "checkpoint" if record.get("type") == "jitpass.audit.checkpoint" else "event"


SINKS = {"webhook": webhook, "splunk": splunk, "syslog": syslog}


async def _until(condition: Callable[[], bool], what: str, *, seconds: float = 15.0) -> None:
    """Await a condition the streamer's own tasks make true (bounded in time, not a sleep-and-hope)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _streamer(store: SqliteStore, sink: SiemSink, clock: FakeClock) -> SiemStreamer:
    return SiemStreamer(store, [sink], clock, backoff_base=0.01, backoff_cap=0.05, idle_poll=0.02)


@pytest.mark.parametrize("kind", sorted(SINKS))
async def test_an_outage_and_a_restart_lose_nothing_and_reorder_nothing(kind: str, tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "jitpass.db", clock)
    await store.open()
    ring = parse_audit_keys(format_private_line(Ed25519PrivateKey.generate()), source="test")
    checkpointer = Checkpointer(store, ring, clock, await deployment_id(store))
    try:
        async with SINKS[kind]() as sink:
            for i in range(30):
                await store.append_event(draft(details={"i": i}))
            signed = await checkpointer.checkpoint("manual")
            assert signed is not None
            first = _streamer(store, sink.make(), clock)
            await first.load()
            first.start()
            await _until(lambda: ("checkpoint", 30) in sink.seqs(), "the first 30 events and their checkpoint")

            await sink.down()
            for i in range(30, 50):
                await store.append_event(draft(details={"i": i}))
            first.wake()
            name = sink.make().name
            await _until(lambda: first.states[name].failures >= 2 and first.states[name].lag == 20,
                         "failures, and a lag of 20, while the sink is down")
            assert first.describe()[name]["last_error"]
            await first.stop(flush_for=0.2)  # the process stops while the sink is still down

            second = _streamer(store, sink.make(), clock)  # a restart: the cursor comes from the store
            await second.load()
            assert second.states[sink.make().name].cursor == 30
            second.start()
            for i in range(50, 60):
                await store.append_event(draft(details={"i": i}))
            await sink.up()
            second.wake()
            await _until(lambda: second.states[name].cursor == 60, "all 60 events acknowledged")
            await second.stop()

            events = [s for k, s in sink.seqs() if k == "event"]
            firsts = list(dict.fromkeys(events))
            assert firsts == list(range(1, 61))  # every event, in order of first arrival
            if not sink.duplicates_allowed:
                assert events == firsts
            else:  # a resend repeats a seq already seen, never goes back further than one batch
                assert all(b >= a - 7 for a, b in itertools.pairwise(events))
            received = sink.seqs()
            assert received.index(("checkpoint", 30)) > received.index(("event", 30))
            assert await store.get_meta(cursor_key(sink.make().name)) == "60"
            assert second.describe()[sink.make().name]["lag"] == 0
    finally:
        await store.close()


async def test_the_checkpoint_streamed_to_the_siem_verifies(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "jitpass.db", clock)
    await store.open()
    ring = parse_audit_keys(format_private_line(Ed25519PrivateKey.generate()), source="test")
    try:
        async with WebhookReceiver(SECRET) as receiver:
            await store.append_event(draft())
            await Checkpointer(store, ring, clock, await deployment_id(store)).checkpoint("manual")
            streamer = _streamer(store, WebhookSink(f"{receiver.url}/hook", SECRET, "dep"), clock)
            await streamer.load()
            assert await streamer.pump(streamer.sinks[0]) == 2
            line = receiver.records[-1]
            checkpoint = parse_checkpoint_line(json.dumps(line))
            assert checkpoint.seq == 1 and checkpoint.signature_problem(ring) == ""
            await streamer.sinks[0].close()
    finally:
        await store.close()


async def test_the_webhook_signs_and_a_wrong_secret_is_refused(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "jitpass.db", clock)
    await store.open()
    try:
        async with WebhookReceiver(SECRET) as receiver:
            await store.append_event(draft())
            streamer = _streamer(store, WebhookSink(f"{receiver.url}/hook", "not-the-secret", "dep"), clock)
            await streamer.load()
            with pytest.raises(SinkError, match="answered 401") as caught:
                await streamer.pump(streamer.sinks[0])
            assert caught.value.permanent and receiver.refused == [401] and receiver.records == []
            assert await store.get_meta(cursor_key("webhook")) is None  # nothing acknowledged, nothing advanced
            await streamer.sinks[0].close()
    finally:
        await store.close()


def test_the_webhook_refuses_plain_http_to_another_host() -> None:
    with pytest.raises(ValueError, match="https"):
        WebhookSink("http://siem.example.com/hook", SECRET, "dep")


@pytest.mark.parametrize(("token", "code"), [("wrong", 4)])
async def test_splunk_refusals_keep_the_cursor(tmp_path: Path, token: str, code: int) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "jitpass.db", clock)
    await store.open()
    try:
        async with SplunkHec(TOKEN) as hec:
            await store.append_event(draft())
            streamer = _streamer(store, SplunkHecSink(hec.url, token), clock)
            await streamer.load()
            with pytest.raises(SinkError, match=f"403: code {code} Invalid token"):
                await streamer.pump(streamer.sinks[0])
            assert hec.events == [] and await store.get_meta(cursor_key("splunk")) is None
            await streamer.sinks[0].close()
    finally:
        await store.close()


async def test_splunk_without_indexer_ack_confirmation_sends_again_marked_by_seq(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "jitpass.db", clock)
    await store.open()
    try:
        async with SplunkHec(TOKEN, ack=True) as hec:
            hec.index_acks = False  # received, never confirmed as indexed
            for _ in range(3):
                await store.append_event(draft())
            streamer = _streamer(store, SplunkHecSink(hec.url, TOKEN, ack=True, ack_interval=0.001), clock)
            await streamer.load()
            with pytest.raises(SinkError, match="did not confirm indexing"):
                await streamer.pump(streamer.sinks[0])
            hec.index_acks = True
            assert await streamer.pump(streamer.sinks[0]) == 3
            assert [e["event"]["seq"] for e in hec.events] == [1, 2, 3, 1, 2, 3]  # the duplicate, marked by seq
            assert {e["sourcetype"] for e in hec.events} == {"jitpass:audit"}
            assert await store.get_meta(cursor_key("splunk")) == "3"
            await streamer.sinks[0].close()
    finally:
        await store.close()


async def test_syslog_messages_are_rfc5424_with_octet_counting(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "jitpass.db", clock)
    await store.open()
    receiver = SyslogReceiver()
    await receiver.start()
    try:
        await store.append_event(draft("request.approval_added", reason="a ] \" \\ reason with ünïcode"))
        sink = SyslogSink("127.0.0.1", receiver.port)
        streamer = _streamer(store, sink, clock)
        await streamer.load()
        assert await streamer.pump(sink) == 1
        await _until(lambda: bool(receiver.messages), "the message")
        pri, msgid, sd, body = receiver.messages[0]
        assert (pri, msgid, sd) == (110, "request.approval_added", '[jitpass@32473 seq="1" kind="event"]')
        assert body["reason"] == "a ] \" \\ reason with ünïcode" and receiver.refused == 0
        await sink.close()
    finally:
        await receiver.go_down()
        await store.close()


def _syslog_tls_env(port: int, ca_file: Path) -> dict[str, str]:
    return {"JITPASS_SYSLOG_ADDRESS": f"127.0.0.1:{port}", "JITPASS_SYSLOG_TLS": "true",
            "JITPASS_SYSLOG_CA_FILE": str(ca_file)}


async def test_syslog_over_tls_checks_the_certificate_and_a_refused_one_keeps_the_cursor(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "jitpass.db", clock)
    await store.open()
    ours, other = Authority(tmp_path, "ours"), Authority(tmp_path, "other")
    receiver = SyslogReceiver(tls=ours.issue(hosts=("127.0.0.1",)).server_context())
    await receiver.start()
    misnamed = SyslogReceiver(tls=ours.issue(hosts=("siem.example.com",), name="misnamed").server_context())
    await misnamed.start()
    try:
        for i in range(3):
            await store.append_event(draft(details={"i": i}))
        # A server whose certificate another CA signed, and one of ours issued for another name: both refused,
        # nothing reaches them, and the cursor stays where it was (the batch comes again).
        for port, ca_file, why in ((receiver.port, other.ca_file, "unable to get local issuer certificate"),
                                   (misnamed.port, ours.ca_file, "IP address mismatch")):
            (sink,) = sinks_from_env(_syslog_tls_env(port, ca_file), "dep")
            streamer = _streamer(store, sink, clock)
            await streamer.load()
            with pytest.raises(SinkError, match=f"TLS certificate was refused .*{why}"):
                await streamer.pump(sink)
            assert streamer.states["syslog"].cursor == 0
            await sink.close()
        assert receiver.messages == [] and misnamed.messages == []
        assert await store.get_meta(cursor_key("syslog")) is None

        (sink,) = sinks_from_env(_syslog_tls_env(receiver.port, ours.ca_file), "dep")
        streamer = _streamer(store, sink, clock)
        await streamer.load()
        assert await streamer.pump(sink) == 3
        await _until(lambda: len(receiver.messages) == 3, "three messages over TLS")
        # Inside TLS: octet-counted RFC 5424 frames (the receiver drops anything else), in order.
        assert receiver.refused == 0
        assert [(m[0], m[2]) for m in receiver.messages] == [
            (110, f'[jitpass@32473 seq="{n}" kind="event"]') for n in (1, 2, 3)]
        assert [m[3]["details"]["i"] for m in receiver.messages] == [0, 1, 2]
        assert await store.get_meta(cursor_key("syslog")) == "3"
        await sink.close()
    finally:
        await receiver.go_down()
        await misnamed.go_down()
        await store.close()


def test_an_unusable_syslog_ca_file_is_named_at_start(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n", encoding="utf-8")
    for ca_file in (tmp_path / "missing.pem", garbage):
        with pytest.raises(InputError, match=f"JITPASS_SYSLOG_CA_FILE='{ca_file}' cannot be used"):
            sinks_from_env(_syslog_tls_env(6514, ca_file), "dep")


async def test_a_served_jitpass_streams_to_the_webhook_and_reports_it_in_healthz(tmp_path: Path) -> None:
    from tests.e2e.test_audit_witness import Trail, poll_healthz
    from tests.e2e.test_cli import _free_port

    async with WebhookReceiver(SECRET) as receiver:
        server = Trail(tmp_path)
        server.env.update({"PORT": str(_free_port()), "JITPASS_SIEM_WEBHOOK_URL": f"{receiver.url}/hook",
                           "JITPASS_SIEM_WEBHOOK_SECRET": SECRET})
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "jitpass"), "serve", "--demo", cwd=tmp_path, env=server.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            body = await poll_healthz(int(server.env["PORT"]),
                                      lambda b: b.get("siem", {}).get("webhook", {}).get("cursor", 0) >= 1)
            state = body["siem"]["webhook"]
            assert state["cursor"] >= 1 and state["lag"] == 0 and state["failures"] == 0
            assert "whsec" not in json.dumps(body)  # the secret never shows
        finally:
            proc.terminate()
            output = (await asyncio.wait_for(proc.communicate(), 30))[0].decode()
        assert proc.returncode == 0, output
        kinds = [_kind(r) for r in receiver.records]
        assert kinds[0] == "event" and kinds[-1] == "checkpoint"  # the head's signature, streamed last
        last_event = max(r["seq"] for r in receiver.records if _kind(r) == "event")
        assert receiver.records[-1]["seq"] == last_event


async def test_the_slack_witness_channel_gets_each_checkpoint_and_it_verifies(tmp_path: Path) -> None:
    from tests.support.app import TEST_POLICY
    from tests.support.fake_slack import slack_harness

    policy = TEST_POLICY + '\n[audit.witness_channel]\nslack = "C0AUDIT"\n'
    async with slack_harness(tmp_path, policy_text=policy) as slack:
        checkpointer = slack.runtime.checkpointer
        signed = await checkpointer.checkpoint("manual")
        call = await slack.fake.wait_for(lambda c: c.method == "chat.postMessage" and c.args.get("channel") ==
                                         "C0AUDIT")
        pasted = parse_checkpoint_line(call.args["text"])
        assert pasted == signed and pasted.signature_problem(checkpointer.ring) == ""
        assert call.args["text"].startswith(f"jitpass audit checkpoint seq {signed.seq}: `")
        assert checkpointer.describe()["witnesses"]["slack"]["published_seq"] == signed.seq
