"""Items synced from 1Password hold no password and no seed, on every store: the file / collections are scanned."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.onepassword import ConnectClient, ConnectSource
from bot.domain.config import parse_policy
from bot.domain.model import SYSTEM
from bot.domain.vault import KeyRing, Vault, generate_key
from bot.services.access import AccessService
from bot.services.onepassword_sync import OnePasswordSync
from bot.services.secrets import BuiltinSource, SecretSources
from tests.contract.conftest import Harness
from tests.support.fake_onepassword import CONNECT_TOKEN, FakeOnePassword, running
from tests.support.onepassword import OP_CANARY_PASSWORD, OP_CANARY_SEED, OP_POLICY, seed_account


@pytest.fixture
async def onepassword(harness: Harness) -> AsyncIterator[FakeOnePassword]:
    async with running(FakeOnePassword(clock=harness.clock.now)) as fake:
        yield fake


async def _everything_stored(harness: Harness, request: pytest.FixtureRequest) -> bytes:
    if harness.path is not None:
        return b"".join(p.read_bytes() for p in harness.path.parent.glob(harness.path.name + "*"))
    from bson import BSON
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(harness.url)
    try:
        db = client[harness.store.db_name]  # type: ignore[attr-defined]
        dumped = b""
        for name in await db.list_collection_names():
            async for doc in db[name].find({}):
                dumped += BSON.encode(doc)
        return dumped
    finally:
        await client.close()


async def test_a_sync_stores_metadata_and_never_a_1password_secret(harness: Harness, onepassword: FakeOnePassword,
                                                                   request: pytest.FixtureRequest) -> None:
    account = seed_account(onepassword)
    vault = Vault(KeyRing([generate_key()]))
    policy = parse_policy(OP_POLICY)
    source = ConnectSource(ConnectClient(onepassword.connect_url, CONNECT_TOKEN), vault.fingerprint)
    service = AccessService(harness.store, vault, policy, harness.clock, SecretSources(BuiltinSource(vault), source))
    try:
        report = await OnePasswordSync(harness.store, vault, source, policy, harness.clock, service).run(SYSTEM)
    finally:
        await source.close()

    assert sorted(report.added) == ["acme-op-billing", "initech-portal-admin"]
    portal = await harness.store.get_item("initech-portal-admin")
    assert portal is not None and portal.item.external is not None
    assert portal.item.external.item_id == account.portal and portal.item.has_totp
    stored = await _everything_stored(harness, request)
    assert b"admin@initech.example" in stored  # the scan sees what the store holds
    for secret in (OP_CANARY_PASSWORD, OP_CANARY_SEED, "acme-" + OP_CANARY_PASSWORD):
        assert secret.encode() not in stored
