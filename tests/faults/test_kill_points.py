"""kill -9 at the remaining steps of delivery and revocation (the others are in test_slack_faults.py), then a
restart: exactly one delivery, the wipe happens once, the card shows the final state.

Each step is reached by holding the Slack call that starts it in the stand-in, then killing the server while
the call is held: before the call took effect (Slack never got it), or after (Slack did it, the answer never
came back). Real `jitpass serve` processes on one SQLite file.

| killed while … | what the store says at the kill | after the restart |
| --- | --- | --- |
| opening the requester's DM (approved, nothing sent) | active, not revealed | delivered once, then wiped |
| posting the DM, before Slack stored it | `grant.delivery_started`, not revealed | delivered once (no copy in chat) |
| editing the DM to wipe it, after Slack edited it | revoked, no `grant.wiped` | the wipe redone and recorded once |
| updating the card after the end, before Slack took it | revoked (the wipe runs in its own lane) | card shows the end |
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from adapters.slack.blocks import Actions
from tests.faults.world import World, is_delivery, world
from tests.support.fake_slack import Hold

LONG = "acme-zendesk fault drill for 1h"


def _deliveries(w: World) -> int:
    """Deliveries Slack stored (a held call that never took effect stored nothing)."""
    return len([c for c in w.fake.calls if is_delivery(c) and c.ok])


async def _approve_and_kill_at(w: World, held: Hold) -> str:
    """A request approved in a first server, killed -9 once `held` (the call starting the step) arrived."""
    async with w.server() as first:
        request_id = await w.request(first, LONG)
        await w.users(first).press(Actions.APPROVE, request_id, "ULEAD1")
        await asyncio.wait_for(held.arrived.wait(), 15)
        first.kill9()
    return request_id


async def _deliver_then_kill_at_done(w: World, hold: Callable[[], Hold], *, card_first: bool = False) -> str:
    """A grant delivered in a first server, then ended with `done`; killed -9 once the call `hold()` holds
    arrived (set after the delivery, so it catches the end's call). `card_first`: the card shows the grant first."""
    async with w.server() as first:
        request_id = await w.request(first, LONG)
        await w.users(first).press(Actions.APPROVE, request_id, "ULEAD1")
        await w.until(lambda: "grant.revealed" in w.types(request_id), "delivered")
        if card_first:
            await w.until(lambda: "active" in str(w.card()["blocks"]).lower(), "the card shows the grant")
        held = hold()
        await w.users(first).command(f"done {request_id}", "UREQ")
        await asyncio.wait_for(held.arrived.wait(), 15)
        first.kill9()
    return request_id


async def _restart_delivers_once(w: World, request_id: str, *, looked_for_a_copy: bool) -> None:
    """A second server delivers once (looking for a copy by its metadata first, if asked) and wipes at done."""
    async with w.server() as second:
        await w.until(lambda: "grant.revealed" in w.types(request_id), "delivered after restart")
        if looked_for_a_copy:  # the retry looked for a copy by its metadata, found none, and posted once
            assert [c for c in w.fake.calls if c.method == "conversations.history" and c.ok]
        assert len(w.secret_messages()) == 1 and _deliveries(w) == 1
        await _done_and_wiped(w, second, request_id)
    assert not w.secret_messages()
    assert w.types(request_id).count("grant.revealed") == 1


async def _done_and_wiped(w: World, server: object, request_id: str) -> None:
    reply = await w.users(server).command(f"done {request_id}", "UREQ")  # type: ignore[arg-type]
    assert reply.status == 200
    await w.until(lambda: "grant.wiped" in w.types(request_id), "wipe after done")
    await w.until(lambda: "ended" in str(w.card()["blocks"]).lower(), "the card shows the end")


async def test_kill_9_while_opening_the_dm_after_the_approval_then_the_restart_delivers_once(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        request_id = await _approve_and_kill_at(w, w.fake.hold_next("conversations.open"))
        assert w.status(request_id) == "active" and "grant.revealed" not in w.types(request_id)
        assert not w.secret_messages()
        await _restart_delivers_once(w, request_id, looked_for_a_copy=False)


async def test_kill_9_before_slack_stored_the_dm_then_the_restart_delivers_once(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        request_id = await _approve_and_kill_at(w, w.fake.hold_next(
            "chat.postMessage", when=lambda a: a.get("channel") == "DUREQ" and "metadata" in a))
        assert "grant.delivery_started" in w.types(request_id) and "grant.revealed" not in w.types(request_id)
        assert not w.secret_messages()  # Slack never got it
        await _restart_delivers_once(w, request_id, looked_for_a_copy=True)


async def test_kill_9_after_slack_wiped_the_dm_but_before_the_wipe_was_recorded(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        request_id = await _deliver_then_kill_at_done(w, lambda: w.fake.hold_next(
            "chat.update", when=lambda a: a.get("channel") == "DUREQ", after_effect=True))
        assert not w.secret_messages()  # Slack edited it; jitpass died before it heard so
        assert w.status(request_id) == "revoked" and "grant.wiped" not in w.types(request_id)
        async with w.server():
            await w.until(lambda: "grant.wiped" in w.types(request_id), "the wipe recorded after restart")
            await w.until(lambda: "ended" in str(w.card()["blocks"]).lower(), "the card shows the end")
        assert not w.secret_messages()
        wipes = [c for c in w.fake.calls if c.method == "chat.update" and c.args.get("channel") == "DUREQ"]
        assert len(wipes) == 2  # redone once: an edit to the same words is harmless
        assert w.types(request_id).count("grant.wiped") == 1 and _deliveries(w) == 1


async def test_kill_9_while_the_card_shows_the_end_then_the_restart_updates_it(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        request_id = await _deliver_then_kill_at_done(w, lambda: w.fake.hold_next(
            "chat.update", when=lambda a: a.get("channel") == "CLEADS"), card_first=True)
        assert w.status(request_id) == "revoked"
        assert "ended" not in str(w.card()["blocks"]).lower()  # Slack never got the update
        async with w.server():
            await w.until(lambda: "ended" in str(w.card()["blocks"]).lower(), "the card shows the end")
            await w.until(lambda: "grant.wiped" in w.types(request_id), "wiped")
        assert not w.secret_messages()
        assert w.types(request_id).count("grant.wiped") == 1 and _deliveries(w) == 1
