"""A generic HTTPS webhook: JSON batches signed with HMAC-SHA256.

POST <url>, `Content-Type: application/json`, body `{"deployment": ..., "records": [...]}` (each record
an exported event or a signed checkpoint, with its `seq`), headers `X-Jitpass-Timestamp: <unix
seconds>` and `X-Jitpass-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body>` with the shared
secret. Any 2xx acknowledges the whole batch; anything else (or no answer within 10 s) is retried with
backoff and the same records come again, so receivers should drop records whose seq they have.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence

import aiohttp

from adapters.siem.http import check_url, refused, session
from bot.ports import SiemRecord, SinkError

__all__ = ["WebhookSink", "signature"]


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Jitpass-Signature value for `body` sent at `timestamp`."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str, secret: str, deployment: str, *, batch_size: int = 100,
                 now: Callable[[], float] = time.time) -> None:
        self.url = check_url(url, "JITPASS_SIEM_WEBHOOK_URL")
        self._secret = secret
        self.deployment = deployment
        self.batch_size = batch_size
        self._now = now
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"WebhookSink(url={self.url!r})"  # never the secret

    async def send(self, records: Sequence[SiemRecord]) -> None:
        """POST the batch; return once a 2xx acknowledged it."""
        body = json.dumps({"deployment": self.deployment, "records": [r.body for r in records]},
                          ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(int(self._now()))
        headers = {"Content-Type": "application/json", "X-Jitpass-Timestamp": timestamp,
                   "X-Jitpass-Signature": signature(self._secret, timestamp, body)}
        self._session = self._session or session()
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                if not 200 <= response.status < 300:
                    raise refused("the webhook", response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SinkError(f"the webhook is unreachable ({exc.__class__.__name__})") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
