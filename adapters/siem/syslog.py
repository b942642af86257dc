"""Syslog: RFC 5424 messages over TCP (optionally TLS, RFC 5425) with octet-counting framing (RFC 6587).

Each record is one message: `<110>1 <event time> <host> jitpass - <type> [jitpass@32473 seq="N"
kind="event|checkpoint"] BOM<record JSON>` (facility 13 "log audit", severity 6 "informational";
32473 is the example enterprise number of RFC 5612), framed as `<length> <message>`. TCP syslog has
no application acknowledgement: a batch counts as delivered once written and drained to the socket.
After a broken connection the previous batch is sent again before the next one (the receiver may
have lost the tail of it), so duplicates are possible and are marked by `seq` in the structured data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import Sequence

from bot.ports import SiemRecord, SinkError

__all__ = ["SyslogSink", "format_message"]

PRI = 13 * 8 + 6  # log audit, informational
_BOM = b"\xef\xbb\xbf"


def _sd_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _token(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, `-` when empty."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def format_message(record: SiemRecord, hostname: str) -> bytes:
    """One RFC 5424 message (without framing)."""
    body = record.body
    at = body.get("at") if isinstance(body.get("at"), str) else "-"
    header = (f"<{PRI}>1 {at} {_token(hostname, 255)} jitpass - {_token(str(body.get('type', '')), 32)} "
              f'[jitpass@32473 seq="{record.seq}" kind="{_sd_value(record.kind)}"] ')
    return header.encode("ascii") + _BOM + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: `MSG-LEN SP SYSLOG-MSG`."""
    return str(len(message)).encode("ascii") + b" " + message


class SyslogSink:
    name = "syslog"

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None, batch_size: int = 100,
                 timeout: float = 10.0) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.batch_size = batch_size
        self.timeout = timeout
        self.hostname = socket.gethostname()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._previous: bytes = b""  # the last batch written, resent after a reconnect

    def __repr__(self) -> str:
        return f"SyslogSink({self.host}:{self.port}, tls={self.tls is not None})"

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.tls,
                                        server_hostname=self.host if self.tls else None), self.timeout)
        except ssl.SSLCertVerificationError as exc:  # before OSError: it is one
            raise SinkError(f"syslog at {self.host}:{self.port}: its TLS certificate was refused "
                            f"({exc.verify_message or exc.__class__.__name__})") from None
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise SinkError(f"syslog at {self.host}:{self.port} is unreachable ({exc.__class__.__name__})") from None

    async def send(self, records: Sequence[SiemRecord]) -> None:
        """Write the framed batch and drain it (after a reconnect, the previous batch first)."""
        data = b"".join(frame(format_message(r, self.hostname)) for r in records)
        try:
            # The receiver closing its side (seen as EOF) means what we wrote last may be lost: reconnect, resend.
            if self._reader is not None and self._reader.at_eof():
                await self._drop()
            if self._writer is None or self._writer.is_closing():
                self._reader, self._writer = await self._connect()
                if self._previous:
                    self._writer.write(self._previous)
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self.timeout)
        except SinkError:
            raise
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            await self._drop()
            raise SinkError(f"syslog at {self.host}:{self.port} broke the connection ({exc.__class__.__name__})") \
                from None
        self._previous = data

    async def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def close(self) -> None:
        await self._drop()
