"""Small aiohttp clients for the 1Password Connect REST API and the 1Password Events API.

Connect (self-hosted; OpenAPI `docs/openapi/spec.yaml` in 1Password/connect): `GET /v1/vaults`,
`GET /v1/vaults/{id}/items`, `GET /v1/vaults/{id}/items/{id}`, Bearer token. Events API
(`https://events.1password.com` by default): `POST /api/v1/itemusages` with a ResetCursor
(`limit`, `start_time`) or a `cursor`, Bearer token.

Why not `onepasswordconnectsdk`: its async client folds every HTTP status into one exception type
with a formatted message, and jitpass must tell 401 / 403 / 404 / unreachable apart to say what
went wrong without showing anything. Both clients retry 429 and 5xx a few times with a capped
wait (Retry-After honoured up to the cap); other failures come back at once as `OnePasswordError`.
Tokens are only ever in the Authorization header: never in a URL, a log line, an error or a repr.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp

__all__ = ["DEFAULT_EVENTS_URL", "ConnectClient", "EventsClient", "OnePasswordError", "Reason"]

log = logging.getLogger("jitpass.onepassword")

Reason = Literal["unreachable", "unauthorized", "forbidden", "not_found", "rate_limited", "server_error",
                 "bad_request", "bad_response"]

_REASONS: Mapping[int, Reason] = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                                  429: "rate_limited"}
DEFAULT_EVENTS_URL = "https://events.1password.com"


class OnePasswordError(Exception):
    """A Connect or Events API call failed. `reason` says how; `detail` is the server's message (no secret)."""

    def __init__(self, service: str, reason: Reason, detail: str = "", status: int | None = None) -> None:
        super().__init__(f"{service}: {reason}" + (f" ({status}: {detail})" if status else f" ({detail})"))
        self.service = service
        self.reason: Reason = reason
        self.detail = detail
        self.status = status


class _Http:
    service = ""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0, retries: int = 3,
                 max_retry_wait: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retries = retries
        self._max_retry_wait = max_retry_wait
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _call(self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        for attempt in range(self._retries + 1):
            try:
                async with self._client().request(method, self.base_url + path, json=json, params=params,
                                                  headers=headers) as response:
                    if response.status < 300:
                        try:
                            return await response.json(content_type=None)
                        except ValueError:
                            raise OnePasswordError(self.service, "bad_response", "the answer is not JSON",
                                                   response.status) from None
                    detail = _message(await response.text())
                    reason = _REASONS.get(response.status, "server_error" if response.status >= 500 else "bad_request")
                    if reason in {"rate_limited", "server_error"} and attempt < self._retries:
                        wait = self._wait(attempt, response.headers.get("Retry-After"))
                        log.warning("event=onepassword_retry service=%s status=%s path=%s wait=%.2f",
                                    self.service, response.status, path.split("?")[0], wait)
                        await asyncio.sleep(wait)
                        continue
                    raise OnePasswordError(self.service, reason, detail, response.status)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if attempt < self._retries:
                    await asyncio.sleep(self._wait(attempt, None))
                    continue
                raise OnePasswordError(self.service, "unreachable", type(exc).__name__) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        wait: float = min(0.2 * 2**attempt, self._max_retry_wait)
        if retry_after and retry_after.strip().isdigit():
            wait = float(retry_after)
        return min(wait, self._max_retry_wait)


def _message(body: str) -> str:
    """The error message of a Connect (`{"status", "message"}`) or Events (`{"Error": {"Message"}}`) answer."""
    import json as _json

    try:
        data = _json.loads(body)
    except ValueError:
        return body[:200]
    if isinstance(data, dict):
        if isinstance(data.get("message"), str):
            return str(data["message"])[:200]
        error = data.get("Error")
        if isinstance(error, dict) and isinstance(error.get("Message"), str):
            return str(error["Message"])[:200]
    return body[:200]


class ConnectClient(_Http):
    """The read side of the Connect REST API."""

    service = "1Password Connect"

    async def vaults(self) -> list[dict[str, Any]]:
        """Every vault the token may read."""
        return _list(await self._call("GET", "/v1/vaults"), self.service)

    async def items(self, vault_id: str) -> list[dict[str, Any]]:
        """Item summaries of a vault (no fields)."""
        return _list(await self._call("GET", f"/v1/vaults/{vault_id}/items"), self.service)

    async def item(self, vault_id: str, item_id: str) -> dict[str, Any]:
        """One full item, its fields (and their values) included."""
        data = await self._call("GET", f"/v1/vaults/{vault_id}/items/{item_id}")
        if not isinstance(data, dict):
            raise OnePasswordError(self.service, "bad_response", "an item is not a JSON object")
        return data


class EventsClient(_Http):
    """Item usages from the Events API, page by page."""

    service = "1Password Events API"

    async def item_usages(self, *, cursor: str | None = None, start_time: str | None = None,
                          limit: int = 100) -> dict[str, Any]:
        """One page: `{"cursor", "has_more", "items"}`. Without a cursor, a ResetCursor from `start_time`."""
        body: dict[str, Any] = {"cursor": cursor} if cursor else {"limit": limit, **(
            {"start_time": start_time} if start_time else {})}
        data = await self._call("POST", "/api/v1/itemusages", json=body)
        if not isinstance(data, dict) or not isinstance(data.get("cursor"), str):
            raise OnePasswordError(self.service, "bad_response", "an item usage page has no cursor")
        items = data.get("items") or []
        if not isinstance(items, list):
            raise OnePasswordError(self.service, "bad_response", "items is not a list")
        return {"cursor": data["cursor"], "has_more": bool(data.get("has_more")), "items": items}


def _list(data: Any, service: str) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise OnePasswordError(service, "bad_response", "expected a JSON array of objects")
    return data
