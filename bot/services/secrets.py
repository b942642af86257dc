"""Secret sources: the built-in encrypted vault, and the router that sends each item to its own source."""

from __future__ import annotations

from datetime import datetime

from bot.domain.errors import SecretSourceError
from bot.domain.model import BUILTIN, SealedItem
from bot.domain.totp import current_code
from bot.domain.vault import Vault
from bot.ports import SecretRead, SecretSource

__all__ = ["BuiltinSource", "SecretSources"]


class BuiltinSource:
    """Items sealed in this store: opened with the master key ring."""

    source = BUILTIN

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    async def read(self, sealed: SealedItem, now: datetime) -> SecretRead:
        password, seed = self.vault.open(sealed)
        return SecretRead(password=password, code=current_code(seed, now) if seed else None)


class SecretSources:
    """Every configured source, by the `Item.source` it serves."""

    source = "any"

    def __init__(self, *sources: SecretSource) -> None:
        self._by_source = {s.source: s for s in sources}

    def add(self, source: SecretSource) -> None:
        self._by_source[source.source] = source

    def serves(self, source: str) -> bool:
        return source in self._by_source

    async def read(self, sealed: SealedItem, now: datetime) -> SecretRead:
        source = self._by_source.get(sealed.item.source)
        if source is None:
            raise SecretSourceError(
                f"{sealed.item.name} is kept in {sealed.item.source}, which this jitpass is not connected to; "
                "nothing was shown. An admin must set OP_CONNECT_HOST and OP_CONNECT_TOKEN.",
                source=sealed.item.source, reason="not_configured")
        return await source.read(sealed, now)
