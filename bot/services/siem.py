"""Streaming the audit trail to SIEM sinks: at least once, in order, resuming where the sink last acknowledged.

Each sink has a durable cursor in the store (`siem_cursor:<sink>`): the highest sequence number the
sink acknowledged. The streamer reads the events after it, sends them in batches of the sink's size,
and advances the cursor only after the sink acknowledged the whole batch. A crash or an outage at any
point therefore resends from the cursor: nothing is lost or reordered, and a batch the sink took but
whose acknowledgement was lost comes again (every record carries its `seq`, so receivers drop
repeats). The latest signed checkpoint follows the events it covers, so the SIEM is also a witness.

Failures back off exponentially (capped, with jitter; Retry-After honoured up to the cap) per sink,
so one sink down delays nobody else; state and lag are in /healthz and the reports (`siem_status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.domain.audit import event_to_dict, format_time
from bot.domain.audit_signing import SignedCheckpoint, parse_checkpoint_line
from bot.ports import Clock, SiemRecord, SiemSink, SinkError, Store

__all__ = ["STATUS_KEY", "SiemStreamer", "SinkState", "cursor_key"]

log = logging.getLogger("jitpass.siem")

STATUS_KEY = "siem_status"
_SIGNED_CHECKPOINT_KEY = "audit_signed_checkpoint"  # bot.services.checkpoints.SIGNED_CHECKPOINT_KEY


def cursor_key(name: str) -> str:
    """Store metadata key of a sink's cursor (last acknowledged seq)."""
    return f"siem_cursor:{name}"


def _checkpoint_key(name: str) -> str:
    return f"siem_checkpoint:{name}"


@dataclass
class SinkState:
    """What /healthz and the reports show per sink."""

    cursor: int = 0
    checkpoint_seq: int = 0
    lag: int = 0
    failures: int = 0  # consecutive, reset by a success
    total_failures: int = 0
    last_error: str = ""
    last_ok_at: str | None = None
    gap: str = ""  # events purged before they were streamed


@dataclass
class SiemStreamer:
    """Pumps events (and checkpoints) from the store to every sink, each in its own task."""

    store: Store
    sinks: Sequence[SiemSink]
    clock: Clock
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    idle_poll: float = 1.0
    jitter: Callable[[], float] = random.random
    states: dict[str, SinkState] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def load(self) -> None:
        """Read each sink's durable cursor."""
        for sink in self.sinks:
            state = self.states.setdefault(sink.name, SinkState())
            state.cursor = int(await self.store.get_meta(cursor_key(sink.name)) or 0)
            state.checkpoint_seq = int(await self.store.get_meta(_checkpoint_key(sink.name)) or 0)

    async def _latest_checkpoint(self) -> SignedCheckpoint | None:
        text = await self.store.get_meta(_SIGNED_CHECKPOINT_KEY)
        if not text:
            return None
        try:
            return parse_checkpoint_line(text)
        except ValueError:
            return None

    async def _batch(self, sink: SiemSink, state: SinkState) -> list[SiemRecord]:
        records: list[SiemRecord] = []
        events = self.store.events(after_seq=state.cursor)
        try:
            async for event in events:
                if not records and event.seq != state.cursor + 1 and not state.gap:
                    state.gap = f"events {state.cursor + 1}..{event.seq - 1} were purged before they were streamed"
                    log.error("event=siem_gap sink=%s %s", sink.name, state.gap)
                records.append(SiemRecord(seq=event.seq, kind="event", body=event_to_dict(event)))
                if len(records) >= sink.batch_size:
                    break
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        head = records[-1].seq if records else state.cursor
        checkpoint = await self._latest_checkpoint()
        if checkpoint is not None and state.checkpoint_seq < checkpoint.seq <= head:
            records.append(SiemRecord(seq=checkpoint.seq, kind="checkpoint", body=json.loads(checkpoint.to_line())))
        return records

    async def pump(self, sink: SiemSink) -> int:
        """Send one batch and advance the cursor once it is acknowledged; the number of records sent."""
        state = self.states.setdefault(sink.name, SinkState())
        records = await self._batch(sink, state)
        last = await self.store.last_event()
        state.lag = max(0, (last.seq if last else 0) - state.cursor)
        if not records:
            return 0
        await sink.send(records)  # raises SinkError: the cursor stays, the batch comes again
        events = [r.seq for r in records if r.kind == "event"]
        # Memory follows the store, never leads it: a write cancelled at shutdown means a resend, not a gap.
        if events:
            await self.store.set_meta(cursor_key(sink.name), str(events[-1]))
            state.cursor = events[-1]
        if records[-1].kind == "checkpoint":
            await self.store.set_meta(_checkpoint_key(sink.name), str(records[-1].seq))
            state.checkpoint_seq = records[-1].seq
        state.failures, state.last_error = 0, ""
        state.last_ok_at = format_time(self.clock.now())
        state.lag = max(0, (last.seq if last else 0) - state.cursor)
        return len(records)

    def backoff(self, failures: int, retry_after: float | None) -> float:
        """Capped exponential backoff with jitter; a sink's Retry-After is honoured up to the cap."""
        delay: float = min(self.backoff_cap, self.backoff_base * 2.0 ** min(failures - 1, 16))
        delay = delay * (0.5 + self.jitter() / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_cap))
        return delay

    async def run_sink(self, sink: SiemSink) -> None:
        """Pump until cancelled: at once while there is a backlog, then on wake-up or every `idle_poll`."""
        state = self.states.setdefault(sink.name, SinkState())
        while True:
            try:
                sent = await self.pump(sink)
            except SinkError as exc:
                state.failures += 1
                state.total_failures += 1
                state.last_error = str(exc)
                log.warning("event=siem_send_failed sink=%s failures=%d error=%s", sink.name, state.failures, exc)
                await self._save_status()
                await self.sleep(self.backoff(state.failures, exc.retry_after))
                continue
            except Exception as exc:  # the store away for a moment: same backoff, never a dead task
                state.failures += 1
                state.total_failures += 1
                state.last_error = exc.__class__.__name__
                log.exception("event=siem_pump_failed sink=%s", sink.name)
                await self.sleep(self.backoff(state.failures, None))
                continue
            if sent:
                await self._save_status()
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.idle_poll)

    def wake(self) -> None:
        """Something was appended: pump now rather than at the next poll."""
        self._wake.set()

    async def _save_status(self) -> None:
        with contextlib.suppress(Exception):  # status is for people; the cursor is what must be durable
            await self.store.set_meta(STATUS_KEY, json.dumps(self.describe(), sort_keys=True))

    def start(self) -> None:
        """One task per sink."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.run_sink(s), name=f"siem-{s.name}") for s in self.sinks]

    async def stop(self, *, flush_for: float = 5.0) -> None:
        """Stop the tasks, then give each sink `flush_for` seconds to take what is left (the shutdown checkpoint)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain(sink), flush_for)
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.close()
        await self._save_status()

    async def _drain(self, sink: SiemSink) -> None:
        while await self.pump(sink):
            pass

    def describe(self) -> dict[str, Any]:
        """Per sink: cursor, lag, failures, last error (never a token or URL secret)."""
        return {name: asdict(state) for name, state in self.states.items()}
