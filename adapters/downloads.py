"""One-time download links for report files: `GET /reports/{token}/{filename}`.

A chat platform that cannot attach a file to a bot's message (Teams without a file-consent
step) hands the admin a link instead. The file waits here, in memory only, behind a random
256-bit token; the first GET takes it (a second one gets 410 Gone), and it is gone after
`LINK_LIFETIME` anyway. The token is the only credential, so it never appears in a log line,
and the response tells browsers and proxies not to keep a copy.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from urllib.parse import quote

from aiohttp import web

from bot.ports import Clock

__all__ = [
    "CSV_TYPE", "HTML_CSP", "HTML_TYPE", "LINK_LIFETIME", "MAX_LINKS", "ROUTE", "ReportLinks", "redact_access_log",
]

log = logging.getLogger("jitpass.downloads")

ROUTE: Final = "/reports/{token}/{filename}"
LINK_LIFETIME: Final = timedelta(minutes=15)
# Reports can be megabytes: remember at most this many links (waiting, used or expired), oldest dropped first.
MAX_LINKS: Final = 50
CSV_TYPE: Final = "text/csv; charset=utf-8"
HTML_TYPE: Final = "text/html; charset=utf-8"
# The same policy the report carries in its own <meta>: no script, no fetch, inline styles and data: images only.
HTML_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
GONE_TEXT: Final = "This download link was already used or has expired. Ask jitpass for the report again.\n"

_TOKEN_IN_PATH = re.compile(r"/reports/[A-Za-z0-9_-]{16,}")


def _redacted(value: object) -> object:
    if isinstance(value, str):
        return _TOKEN_IN_PATH.sub("/reports/[redacted]", value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value


class _RedactTokens(logging.Filter):
    """aiohttp's access log writes the request line, and a link's token is in its path: blank it out."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _redacted(record.msg)
        for key, value in list(vars(record).items()):
            if isinstance(value, str | dict) and key not in {"msg", "args"}:
                setattr(record, key, _redacted(value))
        return True


_REDACT = _RedactTokens()


def redact_access_log(logger_name: str = "aiohttp.access") -> None:
    """Keep download tokens out of the HTTP access log, whatever level it is configured at."""
    logger = logging.getLogger(logger_name)
    if _REDACT not in logger.filters:
        logger.addFilter(_REDACT)


@dataclass
class _File:
    filename: str
    content_type: str
    data: bytes | None  # None once downloaded
    expires_at: datetime


class ReportLinks:
    """Files waiting for their single download, keyed by an unguessable token."""

    def __init__(self, clock: Clock, *, lifetime: timedelta = LINK_LIFETIME, limit: int = MAX_LINKS) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.limit = limit
        self._files: OrderedDict[str, _File] = OrderedDict()

    def add(self, filename: str, data: bytes, content_type: str) -> tuple[str, datetime]:
        """Keep `data` for one download; returns the link's path (with its token) and when it expires."""
        self._sweep()
        while len(self._files) >= self.limit:
            self._files.popitem(last=False)
        token = secrets.token_urlsafe(32)
        expires_at = self.clock.now() + self.lifetime
        self._files[token] = _File(filename, content_type, data, expires_at)
        log.info("event=report_link_created filename=%s bytes=%d expires_at=%s", filename, len(data),
                 expires_at.isoformat())
        return f"/reports/{token}/{quote(filename)}", expires_at

    def link(self, base_url: str, filename: str, data: bytes, content_type: str) -> tuple[str, datetime]:
        """`add`, as an absolute URL under `base_url` (JITPASS_PUBLIC_URL)."""
        path, expires_at = self.add(filename, data, content_type)
        return base_url.rstrip("/") + path, expires_at

    @property
    def waiting(self) -> int:
        """Files not yet downloaded nor expired."""
        now = self.clock.now()
        return sum(1 for f in self._files.values() if f.data is not None and f.expires_at > now)

    def _sweep(self) -> None:
        """Drop the bytes of expired files; forget them entirely one lifetime later (410 until then, then 404)."""
        now = self.clock.now()
        for token, file in list(self._files.items()):
            if file.expires_at <= now:
                file.data = None
            if file.expires_at + self.lifetime <= now:
                del self._files[token]

    async def handle(self, request: web.Request) -> web.Response:
        """Serve a file once: 200 the first time, 410 when used or expired, 404 for anything unknown."""
        self._sweep()
        token, filename = request.match_info["token"], request.match_info["filename"]
        file = self._files.get(token)
        if file is None or file.filename != filename:
            # A wrong file name does not burn the link: only its owner's exact URL does.
            log.info("event=report_link_refused status=404")
            return web.Response(status=404, text="Not found.\n", headers=_NO_STORE)
        if file.data is None:
            log.info("event=report_link_refused status=410 filename=%s", file.filename)
            return web.Response(status=410, text=GONE_TEXT, headers=_NO_STORE)
        data, file.data = file.data, None  # taken before the response is written: a second GET finds nothing
        log.info("event=report_link_served filename=%s bytes=%d", file.filename, len(data))
        headers = {**_NO_STORE, "Content-Type": file.content_type, "X-Content-Type-Options": "nosniff",
                   "Content-Disposition": _attachment(file.filename), "Referrer-Policy": "no-referrer"}
        if file.content_type.startswith("text/html"):
            headers["Content-Security-Policy"] = HTML_CSP
        return web.Response(body=data, headers=headers)


_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _attachment(filename: str) -> str:
    """`Content-Disposition` for a download; the ASCII name quoted, the exact name as RFC 5987 UTF-8."""
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
