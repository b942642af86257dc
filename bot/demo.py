"""Demo data for the one-command local run: one vault item with a password and a TOTP seed."""

from __future__ import annotations

import base64
import logging
import secrets

from bot.domain.model import SYSTEM, Secret
from bot.ports import Store
from bot.services.catalog import Catalog
from bot.services.importers import ItemInput

__all__ = ["DEMO_ITEM", "seed_demo"]

log = logging.getLogger("jitpass.demo")

DEMO_ITEM = "demo-zendesk"


async def seed_demo(store: Store, catalog: Catalog) -> bool:
    """Add the demo item once (random password and seed, so nothing real is ever shipped)."""
    if await store.get_item(DEMO_ITEM) is not None:
        return False
    seed = base64.b32encode(secrets.token_bytes(20)).decode()
    entry = ItemInput(name=DEMO_ITEM, vault="demo", username="support@demo.example",
                      url="https://demo.zendesk.example/agent", notes="Demo item created by `jitpass serve --demo`.",
                      tags=("demo",), password=Secret(secrets.token_urlsafe(18)), totp=Secret(seed), source_row=0)
    await catalog.add([entry], SYSTEM, source="demo")
    log.info("event=demo_seeded item=%s vault=demo", DEMO_ITEM)
    return True

# Used by `jitpass serve --demo` when JITPASS_POLICY is not set: lets a newcomer try the whole flow locally.
DEMO_POLICY = """
timezone = "UTC"

[defaults]
default_duration = "1h"
min_duration = "1m"
max_duration = "8h"
request_timeout = "30m"
min_reason_length = 4

[approvers]
slack = ["U0DEMOLEAD"]
# Microsoft 365 Agents Playground's built-in users: Megan Bowen leads, Alex Wilber (the default user) asks.
teams = ["00000000-0000-0000-0000-0000000000021"]

[leads_channel]
teams = "channel-announcements-id"

[admins]
slack = ["U0DEMOADMIN"]
teams = ["00000000-0000-0000-0000-0000000000020"]

[retention]
keep_days = 400
"""
