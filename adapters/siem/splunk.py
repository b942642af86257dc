"""Splunk HTTP Event Collector (HEC): `POST /services/collector/event`, `Authorization: Splunk <token>`.

The body is HEC's JSON event format, one object per record, concatenated: `{"time": <epoch seconds>,
"host": ..., "source": "jitpass", "sourcetype": "jitpass:audit", ["index": ...,] "event": <record>}`.
HEC answers `{"text": "Success", "code": 0}`; other codes (2/3 token missing or malformed, 1/4 token
disabled or invalid, 5/6/12/13 bad data, 7 bad index, 9/18 busy) are failures and the batch is sent
again after a backoff. With indexer acknowledgement on (`ack=True`, the token's "Enable indexer
acknowledgement"), each request names a channel (`X-Splunk-Request-Channel`), HEC returns an `ackId`,
and the batch counts as delivered only once `POST /services/collector/ack` says it is indexed;
without it, HEC's 200 means "received", not "indexed".
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiohttp

from adapters.siem.http import check_url, refused, session
from bot.ports import SiemRecord, SinkError

__all__ = ["SplunkHecSink"]

_ACK_POLLS = 30


class SplunkHecSink:
    name = "splunk"

    def __init__(self, url: str, token: str, *, ack: bool = False, index: str | None = None, batch_size: int = 100,
                 ack_interval: float = 1.0) -> None:
        self.base = check_url(url, "JITPASS_SPLUNK_HEC_URL")
        self._token = token
        self.ack = ack
        self.index = index
        self.batch_size = batch_size
        self.ack_interval = ack_interval
        self.channel = str(uuid.uuid4())
        self.host = socket.gethostname()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"SplunkHecSink(url={self.base!r}, ack={self.ack})"  # never the token

    def _payload(self, records: Sequence[SiemRecord]) -> bytes:
        parts = []
        for record in records:
            at = record.body.get("at")
            wrapper: dict[str, Any] = {"host": self.host, "source": "jitpass", "sourcetype": "jitpass:audit",
                                       "event": record.body}
            if isinstance(at, str):
                wrapper["time"] = round(datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp(), 6)
            if self.index:
                wrapper["index"] = self.index
            parts.append(json.dumps(wrapper, ensure_ascii=False, separators=(",", ":")))
        return "".join(parts).encode()

    async def _post(self, path: str, body: bytes) -> dict[str, Any]:
        self._session = self._session or session()
        headers = {"Authorization": f"Splunk {self._token}", "X-Splunk-Request-Channel": self.channel,
                   "Content-Type": "application/json"}
        try:
            async with self._session.post(self.base + path, data=body, headers=headers) as response:
                try:
                    answer = await response.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    answer = {}
                answer = answer if isinstance(answer, dict) else {}
                if response.status != 200:
                    raise refused("Splunk HEC", response, f"code {answer.get('code')} {answer.get('text', '')}")
                return answer
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SinkError(f"Splunk HEC is unreachable ({exc.__class__.__name__})") from None

    async def send(self, records: Sequence[SiemRecord]) -> None:
        """Send the batch; with indexer acknowledgement, wait until HEC says it is indexed."""
        answer = await self._post("/services/collector/event", self._payload(records))
        if answer.get("code") != 0:
            raise SinkError(f"Splunk HEC refused the batch: code {answer.get('code')} {answer.get('text', '')}")
        if not self.ack:
            return
        ack_id = answer.get("ackId")
        if not isinstance(ack_id, int):
            raise SinkError("Splunk HEC gave no ackId: is indexer acknowledgement enabled on the token?")
        for _ in range(_ACK_POLLS):
            status = await self._post("/services/collector/ack", json.dumps({"acks": [ack_id]}).encode())
            if (status.get("acks") or {}).get(str(ack_id)) is True:
                return
            await asyncio.sleep(self.ack_interval)
        raise SinkError(f"Splunk HEC did not confirm indexing of ackId {ack_id}: sending the batch again")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
