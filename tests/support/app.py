"""Start the real jitpass aiohttp server on 127.0.0.1 with an injected clock, for end-to-end tests."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.app import RUNTIME, create_app
from bot.bootstrap import Runtime
from bot.domain.config import Settings, parse_policy
from bot.domain.model import SYSTEM, Secret
from bot.ports import ChatAdapter
from bot.services.importers import ItemInput


class FakeClock:
    """A clock tests move by hand: no sleeping, no flakiness."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 3, 10, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


# A TOTP seed and password tests can recognise anywhere they must never appear.
CANARY_PASSWORD = "canary-Pa55w0rd-" + "x7Q9"
CANARY_SEED = base64.b32encode(b"canary-seed-bytes!!!").decode()

TEST_POLICY = """
timezone = "UTC"

[defaults]
default_duration = "1h"
min_duration = "1m"
max_duration = "8h"
request_timeout = "30m"
min_reason_length = 4

[working_hours]
start = "08:00"
end = "18:00"

[approvers]
slack = ["ULEAD1", "ULEAD2"]
teams = ["lead-oid-1", "lead-oid-2"]

[leads_channel]
slack = "CLEADS"
teams = "19:leads@thread.tacv2"

[admins]
slack = ["UADMIN"]
teams = ["admin-oid"]

[vaults.acme]
description = "Acme Corp"
approvals_required = 1

[vaults.globex]
description = "Globex"
approvals_required = 2
exclusive = true
"""


def canary_items() -> list[ItemInput]:
    return [
        ItemInput(name="acme-zendesk", vault="acme", username="support@acme.example",
                  url="https://acme.zendesk.example", password=Secret(CANARY_PASSWORD), totp=Secret(CANARY_SEED)),
        ItemInput(name="globex-aws", vault="globex", username="ops@globex.example",
                  url="https://globex.signin.aws.example", password=Secret(CANARY_PASSWORD + "-globex"),
                  totp=Secret(CANARY_SEED)),
    ]


@dataclass
class RunningApp:
    base_url: str
    app: web.Application
    clock: FakeClock

    @property
    def runtime(self) -> Runtime:
        return self.app[RUNTIME]


def test_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a store and key file inside tmp_path; no environment is read."""
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    values: dict[str, Any] = {
        "store_url": f"sqlite:///{tmp_path / 'jitpass.db'}",
        "master_key": key,
        "master_key_file": tmp_path / "jitpass.key",
        "teams_service_url_validation": False,
        "home": tmp_path,
    }
    values.update(overrides)
    return Settings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test, when imported into one


@asynccontextmanager
async def running_app(
    tmp_path: Path,
    *,
    settings: Settings | None = None,
    policy_text: str = TEST_POLICY,
    clock: FakeClock | None = None,
    adapters: Sequence[ChatAdapter] | None = None,
    items: Sequence[ItemInput] | None = None,
) -> AsyncIterator[RunningApp]:
    """The real application on an ephemeral 127.0.0.1 port; items seeded before the first request."""
    clock = clock or FakeClock()
    settings = settings or test_settings(tmp_path)
    app = create_app(settings, clock=clock, policy=parse_policy(policy_text, "test policy"), adapters=adapters)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    running = RunningApp(base_url=f"http://127.0.0.1:{port}", app=app, clock=clock)
    seed = canary_items() if items is None else items
    if seed and not await running.runtime.store.list_items():
        await running.runtime.catalog.add(list(seed), SYSTEM, source="test")
    try:
        yield running
    finally:
        await runner.cleanup()
