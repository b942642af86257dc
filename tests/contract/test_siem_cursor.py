"""SIEM cursors on every store: advanced only on acknowledgement, resumed by a new streamer."""

from __future__ import annotations

import pytest

from bot.ports import SinkError, Store
from bot.services.siem import SiemStreamer, cursor_key
from tests.support.siem import WebhookReceiver
from tests.support.stores import FakeClock, draft

SECRET = "whsec-contract"


async def test_the_cursor_moves_only_when_the_sink_acknowledges(store: Store, clock: FakeClock) -> None:
    from adapters.siem import WebhookSink

    async with WebhookReceiver(SECRET) as receiver:
        for i in range(5):
            await store.append_event(draft(details={"i": i}))
        sink = WebhookSink(f"{receiver.url}/hook", SECRET, "dep", batch_size=3)
        streamer = SiemStreamer(store, [sink], clock)
        await streamer.load()
        assert await streamer.pump(sink) == 3 and await store.get_meta(cursor_key("webhook")) == "3"
        receiver.down = True
        with pytest.raises(SinkError, match="503"):  # not acknowledged: the cursor stays
            await streamer.pump(sink)
        assert await store.get_meta(cursor_key("webhook")) == "3"
        receiver.down = False
        resumed = SiemStreamer(store, [sink], clock)
        await resumed.load()
        assert await resumed.pump(sink) == 2
        assert [r["seq"] for r in receiver.records] == [1, 2, 3, 4, 5]
        await sink.close()
