"""What a running jitpass is made of, and `open_runtime` that builds it (store, key ring, services).

The CLI and the server both start here; nothing here imports a chat SDK.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from adapters.onepassword import ConnectClient, ConnectSource, EventsClient, EventsFeed
from bot.domain.config import Settings, load_policy
from bot.domain.errors import StoreError, VaultError
from bot.domain.policy import Policy
from bot.domain.report_data import AuditTrust
from bot.domain.vault import Vault, load_key_ring
from bot.ports import Clock, Store, SystemClock, Witness
from bot.services.access import AccessService
from bot.services.catalog import Catalog
from bot.services.checkpoints import (
    Checkpointer,
    audit_key_settings,
    audit_trust,
    deployment_id,
    load_checked_ring,
)
from bot.services.effects import EffectRunner, RetryPolicy
from bot.services.metrics import Metrics, metered
from bot.services.onepassword_sync import OnePasswordSync
from bot.services.schedule import GrantScheduler
from bot.services.secrets import BuiltinSource, SecretSources
from bot.services.shadow import ShadowWatch
from storage import open_store
from storage.witness import FileWitness

__all__ = ["Runtime", "open_runtime"]

log = logging.getLogger("jitpass.app")


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
    effects: EffectRunner
    # Set when OP_CONNECT_HOST / OP_CONNECT_TOKEN (and OP_EVENTS_TOKEN) are configured.
    onepassword_sync: OnePasswordSync | None = None
    shadow: ShadowWatch | None = None
    # The store was created by `serve --demo` (its meta says so): demo item and, without a policy file, demo policy.
    demo: bool = False
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Set when /metrics is configured (the server only): the store is metered into it.
    metrics: Metrics | None = None

    async def close(self) -> None:
        """Close outside clients (1Password), then the store."""
        for close in self.closers:
            await close()
        await self.store.close()
    checkpointer: Checkpointer | None = None  # signs the audit chain head (bot/services/checkpoints.py)

    async def audit_trust(self) -> AuditTrust | None:
        """For reports (CLI and chat): the latest signed checkpoint, the witness file's verdict, the SIEM sinks."""
        if self.checkpointer is None:
            return None
        witness = self.settings.environ.get("JITPASS_AUDIT_WITNESS_FILE")
        return await audit_trust(self.store, self.checkpointer, Path(witness) if witness else None)


def _make_home(settings: Settings, store: Store) -> None:
    """Create the home directory (0700) when the store or the key file lives in it."""
    inside = [p for p in (getattr(store, "path", None), None if settings.master_key else settings.master_key_file)
              if isinstance(p, Path)]
    if any(p.parent == settings.home for p in inside) and not settings.home.is_dir():
        settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        log.info("event=home_created path=%s", settings.home)


def _require_existing(settings: Settings, store: Store) -> None:
    """Commands that need an existing store never create one: the file must be there."""
    path = getattr(store, "path", None)
    if isinstance(path, Path) and not path.is_file():
        raise StoreError(f"no jitpass store at {path}; nothing was created. Looked in: {settings.where()}")


async def open_runtime(settings: Settings, *, clock: Clock | None = None, policy: Policy | None = None,
                       create_key: bool = True, audit_key_check: bool = True, must_exist: bool = False,
                       demo_policy: Policy | None = None, mark_demo: bool = False,
                       metrics: Metrics | None = None) -> Runtime:
    """Open the store, check the master key and audit signing key against it, and build the core.

    `audit_key_check=False` (audit verify only) opens even when the signing key is wrong or verify-only.
    `must_exist`: every command but the ones that add items or serve: no store, key or home is created; a missing
    or never-written store is refused, saying where it was looked for.
    `demo_policy`: used when no policy file is configured AND the store was created by `serve --demo`
    (`mark_demo` marks a new store so), so the CLI and the server agree on the policy.
    `metrics`: every store call is timed and every recorded audit event counted into it (bot/services/metrics.py).
    """
    clock = clock or SystemClock()
    store: Store = open_store(settings.store_url, clock, allow_standalone=settings.mongodb_allow_standalone)
    if metrics is not None:
        store = metered(store, metrics)
    if must_exist:
        _require_existing(settings, store)
    else:
        _make_home(settings, store)
    # The store first: a corrupt or foreign file is named before a missing key.
    await store.open()
    try:
        try:
            ring, created = load_key_ring(env_value=settings.master_key, file_path=settings.master_key_file,
                                          create_if_missing=create_key and not must_exist)
        except VaultError as exc:
            raise VaultError(f"{exc.message}; nothing was created. Looked in: {settings.where()}") from None
        if created:
            log.warning("event=master_key_created path=%s note=\"a new local master key was created; in production "
                        "set JITPASS_MASTER_KEY or JITPASS_MASTER_KEY_FILE from your secret manager and back it up\"",
                        settings.master_key_file)
        vault = Vault(ring)
        token = await store.get_meta("key_check")
        if token is None:
            if must_exist and await store.count_events() == 0:
                raise StoreError(f"the {settings.store_url.split('://', 1)[0]} store holds no jitpass data "
                                 f"(never written); nothing was created. Looked in: {settings.where()}")
            await store.set_meta("key_check", vault.key_check())
            if mark_demo:
                await store.set_meta("demo", "true")
        else:
            vault.verify_key_check(token)
        is_demo = await store.get_meta("demo") == "true"
        if policy is None:
            if settings.policy_path is None and is_demo and demo_policy is not None:
                policy = demo_policy
                log.info("event=demo_policy note=\"this store was created with --demo and no policy file is set: "
                         "the built-in demo policy applies\"")
            else:
                policy = load_policy(settings.policy_path)
        # The audit signing key may be created for an existing store (as before); the master key may not.
        checkpointer = await open_checkpointer(settings, store, clock, policy, create_key=create_key,
                                               require_signer=audit_key_check)
    except BaseException:
        # Any failure (wrong key, a corrupt page met on the first read): an open connection would keep
        # the process alive after the error is shown.
        await store.close()
        raise
    secrets = SecretSources(BuiltinSource(vault))
    service = AccessService(store, vault, policy, clock, secrets)
    # The scheduler and effects worker write on a connection of their own (SQLite), so ending grants and
    # carrying out chat effects never wait behind request handling; same notifiers and callbacks.
    worker = service.using(store.background())
    effects = EffectRunner(worker, RetryPolicy(call_timeout=settings.call_timeout,
                                                retry_after_max=settings.retry_after_max,
                                                lease_seconds=settings.effect_lease))
    runtime = Runtime(settings=settings, store=store, vault=vault, policy=policy, clock=clock, service=service,
                      catalog=Catalog(store, vault, clock), scheduler=GrantScheduler(worker), effects=effects,
                      checkpointer=checkpointer, demo=is_demo, metrics=metrics)
    if settings.op_connect_host and settings.op_connect_token:
        # The secret sources (no chat SDK): 1Password Connect for items, the Events API for direct use.
        connect = ConnectSource(ConnectClient(settings.op_connect_host, settings.op_connect_token), vault.fingerprint)
        secrets.add(connect)
        runtime.closers.append(connect.close)
        runtime.onepassword_sync = OnePasswordSync(store, vault, connect, policy, clock, service)
        if settings.op_events_token:
            events = EventsFeed(EventsClient(settings.op_events_url, settings.op_events_token))
            runtime.closers.append(events.close)
            runtime.shadow = ShadowWatch(store, events, policy, clock)
    return runtime


def audit_witnesses(settings: Settings) -> list[Witness]:
    """The witnesses every process can write: JITPASS_AUDIT_WITNESS_FILE (the server adds chat and SIEM)."""
    witnesses: list[Witness] = []
    path = settings.environ.get("JITPASS_AUDIT_WITNESS_FILE")
    if path:
        witnesses.append(FileWitness(Path(path)))
    return witnesses


async def open_checkpointer(settings: Settings, store: Store, clock: Clock, policy: Policy, *,
                            create_key: bool = True, require_signer: bool = True) -> Checkpointer:
    """Load and check the audit signing key (AuditKeyError when wrong or missing) and the latest checkpoint."""
    env_value, key_file, _ = audit_key_settings(settings.environ, settings.master_key_file)
    ring = await load_checked_ring(store, env_value=env_value, file_path=key_file,
                                   create_if_missing=create_key, require_signer=require_signer)
    checkpointer = Checkpointer(store, ring, clock, await deployment_id(store), policy.audit,
                                audit_witnesses(settings))
    await checkpointer.load()
    return checkpointer
