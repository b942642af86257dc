"""Local stand-ins for a 1Password Connect server and the 1Password Events API.

Both speak the published wire formats (Connect: `docs/openapi/spec.yaml` of 1Password/connect, v1.7;
Events API reference: `POST /api/v1/itemusages` with a ResetCursor or cursor body) and refuse what the
real services refuse: a missing or wrong Bearer token (401), a vault outside the token's scope (403),
unknown vaults and items (404), malformed UUIDs (400), a ResetCursor limit outside 1..1000 or a cursor
that is not (or no longer) valid (400). 429 and 5xx answers are injected on demand with `fail(...)`.

Real aiohttp servers on 127.0.0.1, ephemeral ports. Items are kept as FullItem documents; the
item list endpoint answers Item summaries (no fields, no sections), like Connect does.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyotp
from aiohttp import web

CONNECT_TOKEN = "connect-token-for-tests"
EVENTS_TOKEN = "events-token-for-tests"
ACCOUNT_UUID = "ACCTUUID0000000000000000AA"

_UUID = re.compile(r"^[\da-z]{26}$")
_ids = itertools.count(1)


def new_uuid() -> str:
    """A 1Password-style UUID: 26 characters of [0-9a-z]."""
    return (secrets.token_hex(8) + f"{next(_ids):010d}")[:26]


def _now_text(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Failure:
    """Answer `status` to requests whose path contains `path_part`, `times` times."""

    path_part: str
    status: int
    times: int = 1
    retry_after: int | None = None


@dataclass
class Seen:
    method: str
    path: str
    status: int
    authorization: str | None


@dataclass
class FakeOnePassword:
    """One 1Password account: its vaults and items (for Connect) and item usages (for Events)."""

    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    connect_token: str = CONNECT_TOKEN
    events_token: str = EVENTS_TOKEN
    vaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # vault id -> item id -> FullItem
    scope: set[str] = field(default_factory=set)  # vault ids the Connect token may read
    usages: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    cursor_epoch: int = 0
    _cursor_key: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    connect_url: str = ""
    events_url: str = ""

    # -- building the account -------------------------------------------------------------------
    def add_vault(self, name: str, *, in_scope: bool = True) -> str:
        vault_id = new_uuid()
        at = _now_text(self.clock())
        self.vaults[vault_id] = {"id": vault_id, "name": name, "description": "", "attributeVersion": 1,
                                 "contentVersion": 1, "items": 0, "type": "USER_CREATED",
                                 "createdAt": at, "updatedAt": at}
        self.items[vault_id] = {}
        if in_scope:
            self.scope.add(vault_id)
        return vault_id

    def add_login(self, vault_id: str, title: str, *, username: str = "", password: str | None = "",
                  otp: str | None = None, totp_in_response: bool = True, urls: tuple[str, ...] = (),
                  tags: tuple[str, ...] = (), extra_passwords: tuple[str, ...] = (),
                  category: str = "LOGIN") -> str:
        """A LOGIN item the way the 1Password apps create one: username / password / notes fields with
        their purposes, the one-time password in its own section. `password=None`: no password field."""
        item_id = new_uuid()
        fields: list[dict[str, Any]] = [
            {"id": "username", "type": "STRING", "purpose": "USERNAME", "label": "username", "value": username},
        ]
        if password is not None:
            fields.append({"id": "password", "type": "CONCEALED", "purpose": "PASSWORD", "label": "password",
                           "value": password, "entropy": 71.2})
        for i, extra in enumerate(extra_passwords):
            fields.append({"id": f"password{i + 2}", "type": "CONCEALED", "purpose": "PASSWORD",
                           "label": f"password {i + 2}", "value": extra})
        fields.append({"id": "notesPlain", "type": "STRING", "purpose": "NOTES", "label": "notesPlain",
                       "value": ""})
        sections: list[dict[str, Any]] = [{"id": "add more"}]
        if otp is not None:
            sections.append({"id": "Section_security", "label": "Security"})
            fields.append({"id": "TOTP_" + new_uuid()[:12], "section": {"id": "Section_security"}, "type": "OTP",
                           "label": "one-time password", "value": otp, "_totp_in_response": totp_in_response})
        at = _now_text(self.clock())
        self.items[vault_id][item_id] = {
            "id": item_id, "title": title, "vault": {"id": vault_id}, "category": category,
            "urls": [{"primary": i == 0, "href": u} for i, u in enumerate(urls)], "favorite": False,
            "tags": list(tags), "version": 1, "createdAt": at, "updatedAt": at,
            "lastEditedBy": "USERUUID00000000000000000A", "sections": sections, "fields": fields,
        }
        self.vaults[vault_id]["items"] = len(self.items[vault_id])
        return item_id

    def edit(self, vault_id: str, item_id: str, **changes: Any) -> None:
        """Change an item as a 1Password user would: `title`, `tags`, `password`, `username`; bumps version."""
        item = self.items[vault_id][item_id]
        for key, value in changes.items():
            if key in {"password", "username"}:
                next(f for f in item["fields"] if f["id"] == key)["value"] = value
            else:
                item[key] = value
        item["version"] += 1
        item["updatedAt"] = _now_text(self.clock())

    def move(self, vault_id: str, item_id: str, to_vault: str) -> str:
        """Moving an item in 1Password makes a new item (new id) in the target vault."""
        item = self.items[vault_id].pop(item_id)
        new_id = new_uuid()
        self.items[to_vault][new_id] = {**item, "id": new_id, "vault": {"id": to_vault}, "version": 1}
        return new_id

    def delete(self, vault_id: str, item_id: str) -> None:
        del self.items[vault_id][item_id]

    def used(self, vault_id: str, item_id: str, email: str, *, action: str = "reveal",
             at: datetime | None = None, name: str = "") -> dict[str, Any]:
        """Record an item usage, as the Events API reports a fill / copy / reveal in the 1Password apps."""
        usage = {
            "uuid": new_uuid(), "timestamp": _now_text(at or self.clock()),
            "used_version": self.items.get(vault_id, {}).get(item_id, {}).get("version", 1),
            "vault_uuid": vault_id, "item_uuid": item_id, "action": action,
            "user": {"uuid": "U" + new_uuid()[:25].upper(), "name": name or email.split("@")[0], "email": email},
            "client": {"app_name": "1Password Browser Extension", "app_version": "81024001",
                       "platform_name": "Chrome", "platform_version": "120", "os_name": "MacOSX",
                       "os_version": "14.1", "ip_address": "192.0.2.10"},
            "location": {"country": "NL", "region": "Noord-Holland", "city": "Amsterdam",
                         "latitude": 52.37, "longitude": 4.89},
        }
        self.usages.append(usage)
        return usage

    def fail(self, path_part: str, status: int, *, times: int = 1, retry_after: int | None = None) -> None:
        self.failures.append(Failure(path_part, status, times, retry_after))

    def invalidate_cursors(self) -> None:
        """Every cursor handed out so far stops working (as an expired cursor does)."""
        self.cursor_epoch += 1

    # -- the servers ----------------------------------------------------------------------------
    def connect_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record, self._inject])
        app.router.add_get("/heartbeat", self._heartbeat)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/vaults", self._vaults)
        app.router.add_get("/v1/vaults/{vault}", self._vault)
        app.router.add_get("/v1/vaults/{vault}/items", self._items)
        app.router.add_get("/v1/vaults/{vault}/items/{item}", self._item)
        return app

    def events_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record, self._inject])
        app.router.add_get("/api/v2/auth/introspect", self._introspect)
        app.router.add_post("/api/v1/itemusages", self._itemusages)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        self.seen.append(Seen(request.method, request.path, response.status, request.headers.get("Authorization")))
        return response

    @web.middleware
    async def _inject(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        for failure in self.failures:
            if failure.times > 0 and failure.path_part in request.path:
                failure.times -= 1
                headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
                message = "Too Many Requests" if failure.status == 429 else "Internal Server Error"
                return web.json_response({"status": failure.status, "message": message}, status=failure.status,
                                         headers=headers)
        result: web.StreamResponse = await handler(request)
        return result

    def _connect_auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.connect_token}":
            return _connect_error(401, "Invalid token signature")
        return None

    def _vault_or_error(self, vault_id: str) -> web.Response | None:
        if not _UUID.match(vault_id):
            return _connect_error(400, "Invalid Vault UUID")
        if vault_id not in self.vaults:
            return _connect_error(404, f"vault {vault_id} not found")
        if vault_id not in self.scope:
            return _connect_error(403, f"vault {vault_id} is not in scope")
        return None

    async def _heartbeat(self, request: web.Request) -> web.Response:
        return web.Response(text=".", content_type="text/plain")

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "1Password Connect API", "version": "1.7.1",
                                  "dependencies": [{"service": "sync", "status": "ACTIVE"},
                                                   {"service": "sqlite", "status": "ACTIVE",
                                                    "message": "Connected to./1password.sqlite"}]})

    async def _vaults(self, request: web.Request) -> web.Response:
        if (refused := self._connect_auth(request)) is not None:
            return refused
        vaults = [v for vid, v in self.vaults.items() if vid in self.scope]
        wanted = _scim_eq(request.query.get("filter"), "name")
        if wanted is not None:
            vaults = [v for v in vaults if v["name"] == wanted]
        return web.json_response(vaults)

    async def _vault(self, request: web.Request) -> web.Response:
        if (refused := self._connect_auth(request) or self._vault_or_error(request.match_info["vault"])) is not None:
            return refused
        return web.json_response(self.vaults[request.match_info["vault"]])

    async def _items(self, request: web.Request) -> web.Response:
        vault_id = request.match_info["vault"]
        if (refused := self._connect_auth(request) or self._vault_or_error(vault_id)) is not None:
            return refused
        summaries = [{k: v for k, v in item.items() if k not in {"fields", "sections", "files"}}
                     for item in self.items[vault_id].values()]
        wanted = _scim_eq(request.query.get("filter"), "title")
        if wanted is not None:
            summaries = [s for s in summaries if s["title"] == wanted]
        return web.json_response(summaries)

    async def _item(self, request: web.Request) -> web.Response:
        vault_id, item_id = request.match_info["vault"], request.match_info["item"]
        if (refused := self._connect_auth(request) or self._vault_or_error(vault_id)) is not None:
            return refused
        if not _UUID.match(item_id):
            return _connect_error(400, "Invalid Item UUID")
        item = self.items[vault_id].get(item_id)
        if item is None:
            return _connect_error(404, f"item {item_id} not found")
        return web.json_response(self._full(item))

    def _full(self, item: dict[str, Any]) -> dict[str, Any]:
        fields = []
        for f in item["fields"]:
            shown = {k: v for k, v in f.items() if not k.startswith("_")}
            # Connect computes the current code for OTP fields and returns it as `totp`.
            if f["type"] == "OTP" and f.get("_totp_in_response", True):
                # An unreadable otpauth value: Connect returns the field without a code.
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    shown["totp"] = pyotp.parse_uri(f["value"]).at(self.clock())
            fields.append(shown)
        return {**item, "fields": fields}

    # -- Events API -----------------------------------------------------------------------------
    def _events_auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.events_token}":
            return web.json_response({"Error": {"Message": "Unauthorized"}}, status=401)
        return None

    async def _introspect(self, request: web.Request) -> web.Response:
        if (refused := self._events_auth(request)) is not None:
            return refused
        return web.json_response({"uuid": "INTEGRATIONUUID00000000000A", "issued_at": "2026-01-01T00:00:00Z",
                                  "features": ["itemusages"], "account_uuid": ACCOUNT_UUID})

    async def _itemusages(self, request: web.Request) -> web.Response:
        if (refused := self._events_auth(request)) is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return _events_error(400, "Invalid request body")
        if not isinstance(body, dict):
            return _events_error(400, "Invalid request body")
        if "cursor" in body:
            state = self._open_cursor(body["cursor"])
            if state is None:
                return _events_error(400, "Invalid cursor")
        else:
            limit = body.get("limit", 100)
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
                return _events_error(400, "limit must be between 1 and 1000")
            try:
                start = _parse_time(body.get("start_time"))
                end = _parse_time(body.get("end_time"))
            except ValueError:
                return _events_error(400, "start_time and end_time must be RFC 3339 date-times")
            state = {"pos": 0, "limit": limit, "start": start, "end": end}
        matching = [u for u in self.usages if _in_range(u["timestamp"], state["start"], state["end"])]
        page = matching[state["pos"]:state["pos"] + state["limit"]]
        state["pos"] += len(page)
        return web.json_response({"cursor": self._make_cursor(state), "has_more": state["pos"] < len(matching),
                                  "items": page})

    def _make_cursor(self, state: dict[str, Any]) -> str:
        payload = json.dumps({**state, "epoch": self.cursor_epoch}).encode()
        mac = hmac.new(self._cursor_key, payload, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")

    def _open_cursor(self, cursor: object) -> dict[str, Any] | None:
        if not isinstance(cursor, str) or not cursor:
            return None
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except ValueError:
            return None
        mac, payload = raw[:12], raw[12:]
        if not hmac.compare_digest(mac, hmac.new(self._cursor_key, payload, hashlib.sha256).digest()[:12]):
            return None
        state: dict[str, Any] = json.loads(payload)
        if state.pop("epoch") != self.cursor_epoch:
            return None
        return state


def _connect_error(status: int, message: str) -> web.Response:
    return web.json_response({"status": status, "message": message}, status=status)


def _events_error(status: int, message: str) -> web.Response:
    return web.json_response({"Error": {"Message": message}}, status=status)


def _scim_eq(text: str | None, attribute: str) -> str | None:
    if text is None:
        return None
    match = re.fullmatch(rf'\s*{attribute}\s+eq\s+"(.*)"\s*', text)
    return match.group(1) if match else "\x00no-match"


def _parse_time(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("not a date-time")
    datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def _in_range(stamp: str, start: str | None, end: str | None) -> bool:
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if start is not None and at < datetime.fromisoformat(start.replace("Z", "+00:00")):
        return False
    return not (end is not None and at >= datetime.fromisoformat(end.replace("Z", "+00:00")))


@asynccontextmanager
async def running(fake: FakeOnePassword) -> AsyncIterator[FakeOnePassword]:
    """Serve Connect and the Events API on two ephemeral ports; `fake.connect_url` / `fake.events_url`."""
    runners = []
    try:
        for app, attr in ((fake.connect_app(), "connect_url"), (fake.events_app(), "events_url")):
            runner = web.AppRunner(app)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            setattr(fake, attr, f"http://127.0.0.1:{port}")
        yield fake
    finally:
        for runner in runners:
            await runner.cleanup()
