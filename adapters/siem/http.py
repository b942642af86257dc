"""What the HTTP sinks share: one session, a per-call timeout, status codes mapped to SinkError."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from bot.ports import SinkError

__all__ = ["check_url", "retry_after", "session"]

TIMEOUT_SECONDS = 10.0


def check_url(url: str, what: str) -> str:
    """HTTPS only, except to this machine (local stand-ins and sidecars)."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")):
        return url.rstrip("/")
    raise ValueError(f"{what} must be an https:// URL (http:// only to 127.0.0.1 / localhost), not {parts.scheme}://")


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS))


def retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def refused(what: str, response: aiohttp.ClientResponse, detail: str = "") -> SinkError:
    """Retryable unless the sink said the request itself is wrong (4xx other than 408/429)."""
    status = response.status
    permanent = 400 <= status < 500 and status not in (408, 429)
    return SinkError(f"{what} answered {status}{': ' + detail if detail else ''}", retry_after=retry_after(response),
                     permanent=permanent)
