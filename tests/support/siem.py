"""Local stand-ins for the SIEM sinks, speaking each wire format and refusing what the real one refuses.

- `WebhookReceiver`: checks the HMAC-SHA256 signature and timestamp (401 otherwise), JSON body (400).
- `SplunkHec`: `/services/collector/event` and `/services/collector/ack` with HEC's status codes:
  no `Authorization: Splunk` header 401 code 2, malformed 401 code 3, wrong token 403 code 4, no data
  400 code 5, invalid JSON 400 code 6, no `event` 400 code 12, blank event 400 code 13, ack on and no
  channel 400 code 10, busy 503 code 9.
- `SyslogReceiver`: TCP (or TLS, RFC 5425, with the certificate it is given), octet-counting frames
  (RFC 6587) holding RFC 5424 messages; anything else makes it drop the connection.

Each can be "down": the HTTP ones answer 503 (HEC: code 9), the syslog one stops listening.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

__all__ = ["SplunkHec", "SyslogReceiver", "WebhookReceiver"]


class _HttpStandIn:
    def __init__(self) -> None:
        self.down = False
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.received = asyncio.Event()

    def app(self) -> web.Application:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class WebhookReceiver(_HttpStandIn):
    """Keeps every record of every accepted batch, in arrival order."""

    def __init__(self, secret: str, *, max_skew: float = 300.0) -> None:
        super().__init__()
        self.secret = secret
        self.max_skew = max_skew
        self.records: list[dict[str, Any]] = []
        self.refused: list[int] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        return app

    async def hook(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503, headers={"Retry-After": "1"})
        body = await request.read()
        timestamp = request.headers.get("X-Jitpass-Timestamp", "")
        expected = "sha256=" + hmac.new(self.secret.encode(), timestamp.encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= self.max_skew
        if not fresh or not hmac.compare_digest(expected, request.headers.get("X-Jitpass-Signature", "")):
            self.refused.append(401)
            return web.json_response({"error": "bad signature"}, status=401)
        try:
            batch = json.loads(body)
            records = batch["records"]
            assert isinstance(records, list) and all(isinstance(r, dict) and "seq" in r for r in records)
        except (ValueError, KeyError, AssertionError):
            self.refused.append(400)
            return web.json_response({"error": "bad batch"}, status=400)
        self.records.extend(records)
        self.received.set()
        return web.json_response({"ok": True})


@dataclass
class _Ack:
    pending: dict[int, bool] = field(default_factory=dict)
    next_id: int = 0


class SplunkHec(_HttpStandIn):
    """HEC with optional indexer acknowledgement; `events` holds every indexed HEC event object."""

    def __init__(self, token: str, *, ack: bool = False) -> None:
        super().__init__()
        self.token = token
        self.ack = ack
        self.events: list[dict[str, Any]] = []
        self.codes: list[int] = []
        self.channels: dict[str, _Ack] = {}
        self.index_acks = True  # False: acks stay pending (an indexer that never confirms)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/services/collector/event", self.event)
        app.router.add_post("/services/collector/ack", self.ack_status)
        return app

    def _answer(self, status: int, code: int, text: str, **extra: Any) -> web.Response:
        self.codes.append(code)
        return web.json_response({"text": text, "code": code, **extra}, status=status)

    def _auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization")
        if header is None:
            return self._answer(401, 2, "Token is required")
        scheme, _, token = header.partition(" ")
        if scheme != "Splunk" or not token:
            return self._answer(401, 3, "Invalid authorization")
        if not hmac.compare_digest(token, self.token):
            return self._answer(403, 4, "Invalid token")
        return None

    async def event(self, request: web.Request) -> web.Response:
        if self.down:
            return self._answer(503, 9, "Server is busy")
        refused = self._auth(request)
        if refused is not None:
            return refused
        channel = request.headers.get("X-Splunk-Request-Channel") or request.query.get("channel")
        if self.ack and not channel:
            return self._answer(400, 10, "Data channel is missing")
        text = (await request.read()).decode("utf-8", errors="replace")
        if not text.strip():
            return self._answer(400, 5, "No data")
        decoder, position, parsed = json.JSONDecoder(), 0, []
        while position < len(text):
            while position < len(text) and text[position].isspace():
                position += 1
            if position >= len(text):
                break
            try:
                value, position = decoder.raw_decode(text, position)
            except ValueError:
                return self._answer(400, 6, "Invalid data format")
            if not isinstance(value, dict) or "event" not in value:
                return self._answer(400, 12, "Event field is required")
            if value["event"] in ("", None, {}):
                return self._answer(400, 13, "Event field cannot be blank")
            parsed.append(value)
        self.events.extend(parsed)
        self.received.set()
        if not self.ack:
            return self._answer(200, 0, "Success")
        state = self.channels.setdefault(str(channel), _Ack())
        ack_id, state.next_id = state.next_id, state.next_id + 1
        state.pending[ack_id] = self.index_acks
        return self._answer(200, 0, "Success", ackId=ack_id)

    async def ack_status(self, request: web.Request) -> web.Response:
        refused = self._auth(request)
        if refused is not None:
            return refused
        if not self.ack:
            return self._answer(400, 14, "ACK is disabled")
        channel = request.headers.get("X-Splunk-Request-Channel") or request.query.get("channel")
        if not channel:
            return self._answer(400, 10, "Data channel is missing")
        body = json.loads(await request.read() or b"{}")
        state = self.channels.get(channel, _Ack())
        return web.json_response({"acks": {str(a): state.pending.get(a, False) for a in body.get("acks", [])}})


_RFC5424 = re.compile(rb"^<(\d{1,3})>1 (\S+) (\S{1,255}) (\S{1,48}) (\S{1,128}) (\S{1,32}) (-|\[[^\]]*\])( (.*))?$",
                      re.S)


class SyslogReceiver:
    """Octet-counted RFC 5424 over TCP; `messages` holds (PRI, MSGID, structured data, JSON body) tuples."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.messages: list[tuple[int, str, str, dict[str, Any]]] = []
        self.tls = tls  # RFC 5425: the same frames inside TLS
        self.port = 0
        self.refused = 0
        self.received = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def go_down(self) -> None:
        """Stop listening and cut every connection (a restarting collector)."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                length = await reader.readuntil(b" ")
                if not length[:-1].isdigit() or length.startswith(b"0"):
                    self.refused += 1
                    return  # not octet counting: drop the connection, as rsyslog does
                message = await reader.readexactly(int(length[:-1]))
                match = _RFC5424.match(message)
                if match is None or int(match.group(1)) > 191:
                    self.refused += 1
                    return
                text = match.group(9) or b""
                body = json.loads(text.removeprefix(b"\xef\xbb\xbf"))
                self.messages.append((int(match.group(1)), match.group(6).decode(), match.group(7).decode(), body))
                self.received.set()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
