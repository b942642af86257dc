"""The Slack Web API and `response_url`s as jitpass uses them: one client, retries, quiet logs.

Every Web API method the adapter calls goes through `SlackApi.call`, which only accepts the
methods in `METHOD_SCOPES`; `manifest.json` asks for exactly the scopes in that table (a unit
test checks both agree). Files go through Slack's external upload flow (`SlackApi.share_files`):
`files.getUploadURLExternal`, a POST of the raw bytes to the URL it returns, then
`files.completeUploadExternal` to share them in one conversation.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.domain.errors import DeliveryError
from bot.ports import ChatMetrics, NoMetrics

__all__ = [
    "APP_TOKEN_METHOD_SCOPES",
    "COMMAND_SCOPE",
    "DEFAULT_API_URL",
    "METHOD_SCOPES",
    "SharedFile",
    "SlackApi",
    "SlackCallError",
    "bot_scopes",
    "normalise_api_url",
    "quiet_logger",
]

DEFAULT_API_URL = "https://slack.com/api/"
# Bot-token Web API methods we call, with the OAuth scope each needs (None: no scope needed).
METHOD_SCOPES: dict[str, str | None] = {
    "auth.test": None,  # bolt checks the bot token once, on the first request
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    # Finding a delivery (DM) or an approval card (leads channel) again by its metadata after a crash.
    "conversations.history": "im:history",
    "conversations.open": "im:write",
    "files.completeUploadExternal": "files:write",
    "files.getUploadURLExternal": "files:write",
    "usergroups.users.list": "usergroups:read",
    "users.info": "users:read",  # the holder's e-mail, to tell their own 1Password use from shadow access
    "views.open": None,
    "views.publish": None,
    "views.update": None,
}
# Called with the app-level token (Socket Mode only); app-level scopes are not bot scopes.
APP_TOKEN_METHOD_SCOPES: dict[str, str] = {"apps.connections.open": "connections:write"}
# The slash command itself needs this scope although it is no Web API method.
COMMAND_SCOPE = "commands"
# users.info carries `profile.email` only with this scope as well.
EMAIL_SCOPE = "users:read.email"
# conversations.history on the leads channel (public or private) needs these besides im:history.
CHANNEL_HISTORY_SCOPES = frozenset({"channels:history", "groups:history"})
# Read methods take query parameters; write methods take a JSON body.
_GET_METHODS = frozenset({"usergroups.users.list", "users.info"})
# Slack documents the upload methods as form-encoded (JSON only later, and not everywhere): send forms.
_FORM_METHODS = frozenset({"files.getUploadURLExternal", "files.completeUploadExternal"})
DEFAULT_CALL_TIMEOUT = 10.0


def bot_scopes() -> set[str]:
    """The bot scopes the code needs: `commands` plus the scopes of every method it calls."""
    return {COMMAND_SCOPE, EMAIL_SCOPE, *CHANNEL_HISTORY_SCOPES} | {scope for scope in METHOD_SCOPES.values() if scope}


def normalise_api_url(url: str | None) -> str:
    """`SLACK_API_URL` or Slack's own; slack_sdk joins method names to it, so it must end in '/'."""
    base = (url or DEFAULT_API_URL).strip()
    return base if base.endswith("/") else base + "/"


class _NoDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


class _NoTokenWarning(logging.Filter):
    # bolt warns that SLACK_BOT_TOKEN is unused whenever it is set and a client is given: it is used,
    # through our client.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("As you gave `client` as well")


def quiet_logger(name: str) -> logging.Logger:
    """A logger for slack_sdk / bolt that never emits DEBUG records.

    Their DEBUG lines include whole request bodies, and a delivered secret is a request body.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    for kind in (_NoDebug, _NoTokenWarning):
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
    return logger


def _form(params: Mapping[str, Any]) -> dict[str, str]:
    """Form fields: lists and objects as JSON strings (how Slack reads `files=[...]`), the rest as text."""
    return {key: json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else str(value)
            for key, value in params.items() if value is not None}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


@dataclass(frozen=True)
class SharedFile:
    """One file to share: its name, what to show as its title, and its bytes."""

    filename: str
    title: str
    data: bytes


class SlackCallError(DeliveryError):
    """Slack refused or could not take a call; carries Slack's error code (and a 429's Retry-After
    in seconds), never the payload."""

    def __init__(self, method: str, error: str, retry_after: float | None = None) -> None:
        super().__init__(f"Slack did not accept {method} ({error}).")
        self.method = method
        self.error = error
        self.retry_after = retry_after


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class SlackApi:
    """The Web API calls and `response_url` posts of the adapter."""

    def __init__(self, token: str | None, api_url: str | None, session: aiohttp.ClientSession | None = None, *,
                 timeout: float = DEFAULT_CALL_TIMEOUT, metrics: ChatMetrics | None = None) -> None:
        self.logger = quiet_logger("jitpass.slack.sdk")
        self.metrics = metrics or NoMetrics()
        self.session = session
        self.timeout = timeout
        # No SDK retries: a Retry-After slept inside a call would hold up whatever awaits it. The
        # effects worker retries instead, with a capped Retry-After, without blocking other work.
        # slack_sdk applies `timeout` only to sessions it creates; `call` bounds every call itself.
        self.client = AsyncWebClient(
            token=token, base_url=normalise_api_url(api_url), timeout=int(max(1, timeout)), session=session,
            logger=self.logger, retry_handlers=[],
        )

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Call one Web API method from `METHOD_SCOPES`; SlackCallError when Slack says no."""
        if method not in METHOD_SCOPES:
            raise ValueError(f"{method} is not in METHOD_SCOPES; add it there and to manifest.json")
        try:
            async with asyncio.timeout(self.timeout):
                if method in _GET_METHODS:
                    response = await self.client.api_call(method, http_verb="GET", params=params)
                elif method in _FORM_METHODS:
                    response = await self.client.api_call(method, data=_form(params))
                else:
                    response = await self.client.api_call(method, json=params)
        except SlackApiError as exc:
            status = exc.response.status_code
            self.metrics.chat_api_error("slack", method, "ok_false" if status == 200 else str(status))
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
            raise SlackCallError(method, str(error or f"http {status}"),
                                 _retry_after(exc.response.headers) if status == 429 else None) from None
        except TimeoutError:
            self.metrics.chat_api_error("slack", method, "timeout")
            raise SlackCallError(method, "timeout") from None
        except aiohttp.ClientError as exc:
            self.metrics.chat_api_error("slack", method, "network")
            raise SlackCallError(method, type(exc).__name__) from None
        data = response.data
        return dict(data) if isinstance(data, Mapping) else {}

    async def respond(self, response_url: str, payload: Mapping[str, Any]) -> None:
        """Post to an interaction's `response_url` (ephemeral replies, replacing a message)."""
        webhook = AsyncWebhookClient(response_url, timeout=int(max(1, self.timeout)), session=self.session,
                                     logger=self.logger, retry_handlers=[])
        try:
            async with asyncio.timeout(self.timeout):
                response = await webhook.send_dict(dict(payload))
        except TimeoutError:
            self.metrics.chat_api_error("slack", "response_url", "timeout")
            raise SlackCallError("response_url", "timeout") from None
        except aiohttp.ClientError as exc:
            self.metrics.chat_api_error("slack", "response_url", "network")
            raise SlackCallError("response_url", type(exc).__name__) from None
        if response.status_code != 200:
            self.metrics.chat_api_error("slack", "response_url", str(response.status_code))
            retry = _retry_after(response.headers) if response.status_code == 429 else None
            raise SlackCallError("response_url", f"http {response.status_code}: {response.body[:40]}", retry)

    async def share_files(self, channel_id: str, files: Sequence[SharedFile], *, comment: str = "") -> list[str]:
        """Upload `files` with Slack's external upload flow and share them in `channel_id`; returns the file ids."""
        uploaded: list[dict[str, str]] = []
        for file in files:
            data = await self.call("files.getUploadURLExternal", filename=file.filename, length=len(file.data))
            upload_url, file_id = data.get("upload_url"), data.get("file_id")
            if not isinstance(upload_url, str) or not isinstance(file_id, str) or not file_id:
                raise SlackCallError("files.getUploadURLExternal", "no_upload_url")
            await self._upload(upload_url, file)
            uploaded.append({"id": file_id, "title": file.title})
        params: dict[str, Any] = {"files": uploaded, "channel_id": channel_id}
        if comment:
            params["initial_comment"] = comment
        await self.call("files.completeUploadExternal", **params)
        return [f["id"] for f in uploaded]

    def _trusted_upload_url(self, url: str) -> bool:
        # The bytes are a report naming people and credentials: only https, or the API's own origin
        # (a proxy or a local stand-in at SLACK_API_URL), may receive them.
        scheme = urlsplit(url).scheme
        return scheme == "https" or _origin(url) == _origin(str(self.client.base_url))

    async def _upload(self, upload_url: str, file: SharedFile) -> None:
        """POST the raw bytes to the pre-signed upload URL; no token goes with them (the URL is the credential)."""
        if not self._trusted_upload_url(upload_url):
            raise SlackCallError("file upload", "untrusted_upload_url")
        session = self.session or aiohttp.ClientSession()
        try:
            async with session.post(upload_url, data=file.data, timeout=aiohttp.ClientTimeout(total=self.timeout),
                                    headers={"Content-Type": "application/octet-stream"}) as response:
                if response.status != 200:
                    self.metrics.chat_api_error("slack", "file_upload", str(response.status))
                    raise SlackCallError("file upload", f"http {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.metrics.chat_api_error("slack", "file_upload", "timeout" if isinstance(exc, TimeoutError)
                                        else "network")
            raise SlackCallError("file upload", type(exc).__name__) from None
        finally:
            if self.session is None:
                await session.close()
