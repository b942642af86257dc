"""What a running jitpass is made of, handed to chat adapters when the server starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bot.catalog import Catalog
from bot.config import Settings
from bot.policy import Policy
from bot.ports import Clock, Store
from bot.service import AccessService
from bot.vault import Vault

if TYPE_CHECKING:
    from bot.schedule import GrantScheduler

__all__ = ["ChatAdapter", "Runtime"]


@dataclass
class Runtime:
    settings: Settings
    store: Store
    vault: Vault
    policy: Policy
    clock: Clock
    service: AccessService
    catalog: Catalog
    scheduler: GrantScheduler


class ChatAdapter(Protocol):
    """A chat platform: mounts its HTTP routes before start, registers its notifier at start."""

    platform: str

    def add_routes(self, app: Any) -> None:
        """Add the platform's endpoint(s) to the aiohttp application (routes freeze at start)."""
        ...

    async def start(self, runtime: Runtime) -> None:
        """Connect to the core: register the notifier, start socket connections, etc."""
        ...

    async def stop(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """Mode and state for /healthz (never a token)."""
        ...
