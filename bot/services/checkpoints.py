"""The checkpointer: signs the audit chain head every N events or M minutes, at purges and at shutdown,
keeps the latest in the store and publishes each to the witnesses (outside the database).

A witness that fails does not stop the trail: the failure is logged and shown in /healthz, and the
next checkpoint (which covers everything before it) is published again to every witness.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.domain.audit import format_time
from bot.domain.audit_signing import (
    AuditKeyError,
    AuditKeyRing,
    CheckpointLineError,
    SignedCheckpoint,
    load_audit_keys,
    parse_checkpoint_line,
    parse_witness,
)
from bot.domain.audit_verify import verify_trail
from bot.domain.policy import AuditPolicy
from bot.domain.report_data import AuditTrust
from bot.ports import Clock, Store, Witness

__all__ = [
    "DEPLOYMENT_KEY",
    "SIGNED_CHECKPOINT_KEY",
    "Checkpointer",
    "audit_key_settings",
    "audit_trust",
    "deployment_id",
    "load_checked_ring",
    "stored_checkpoint",
]

log = logging.getLogger("jitpass.audit")

SIGNED_CHECKPOINT_KEY = "audit_signed_checkpoint"
DEPLOYMENT_KEY = "deployment_id"
POLL_SECONDS = 1.0


async def deployment_id(store: Store) -> str:
    """This deployment's id (created once, kept in the store): every checkpoint names it."""
    current = await store.get_meta(DEPLOYMENT_KEY)
    if current:
        return current
    await store.set_meta(DEPLOYMENT_KEY, uuid.uuid4().hex)
    return await store.get_meta(DEPLOYMENT_KEY) or ""


async def stored_checkpoint(store: Store) -> SignedCheckpoint | CheckpointLineError | None:
    """The latest signed checkpoint the store holds (or why it cannot be read)."""
    text = await store.get_meta(SIGNED_CHECKPOINT_KEY)
    if not text:
        return None
    try:
        return parse_checkpoint_line(text)
    except CheckpointLineError as exc:
        return exc


def audit_key_settings(environ: dict[str, str] | Any, master_key_file: Path) -> tuple[str | None, Path, bool]:
    """(JITPASS_AUDIT_KEY, key file, whether the file was named explicitly); the default file sits next to
    the master key file."""
    explicit = environ.get("JITPASS_AUDIT_KEY_FILE") or ""
    path = Path(explicit) if explicit else master_key_file.with_name("jitpass-audit.key")
    return environ.get("JITPASS_AUDIT_KEY") or None, path, bool(explicit)


async def load_checked_ring(store: Store, *, env_value: str | None, file_path: Path,
                            create_if_missing: bool, require_signer: bool = True) -> AuditKeyRing:
    """The signing key ring, refused when it cannot be the one that signed this trail's checkpoints.

    `require_signer=False` (audit verify) accepts a verify-only ring and a ring that does not know the
    store's latest key: verification reports that as a finding instead of refusing to look.
    """
    latest = await stored_checkpoint(store)
    # Create a key (like the master key file) only for a trail nobody signed yet: a new key for a signed
    # trail would be a wrong key, so then a missing file stops the start instead.
    create = create_if_missing and latest is None
    try:
        ring, created = load_audit_keys(env_value=env_value, file_path=file_path, create_if_missing=create)
    except AuditKeyError as exc:
        if latest is not None and not file_path.exists() and not env_value:
            raise AuditKeyError(
                f"no audit signing key: {file_path} does not exist, but this trail's checkpoints are signed "
                f"(latest by key {getattr(latest, 'key_id', '?')})",
                hint="Restore the key file (or set JITPASS_AUDIT_KEY / JITPASS_AUDIT_KEY_FILE); jitpass will not "
                     "start with a new key, which would make every earlier checkpoint unverifiable.") from None
        raise exc from None
    if created:
        log.warning("event=audit_key_created path=%s note=\"a new local audit signing key was created; in "
                    "production set JITPASS_AUDIT_KEY or JITPASS_AUDIT_KEY_FILE from your secret manager\"",
                    file_path)
    if not require_signer:
        return ring
    if ring.signer is None:
        raise AuditKeyError("the audit key ring holds only retired keys: add an `ed25519:` signing key line")
    if isinstance(latest, SignedCheckpoint) and not ring.knows(latest.key_id):
        raise AuditKeyError(
            f"wrong audit signing key: the trail's latest checkpoint is signed by key {latest.key_id}, the "
            f"configured key ring holds {ring.describe()}",
            hint="Configure the key ring that signed this trail (after a rotation, keep the old key as an "
                 "`ed25519-public:` line).")
    return ring


@dataclass
class WitnessHealth:
    published_seq: int = 0
    failures: int = 0
    last_error: str = ""


@dataclass
class Checkpointer:
    """Signs the chain head when due and hands each checkpoint to every witness."""

    store: Store
    ring: AuditKeyRing
    clock: Clock
    deployment: str
    policy: AuditPolicy = field(default_factory=AuditPolicy)
    witnesses: Sequence[Witness] = ()
    latest: SignedCheckpoint | None = None
    health: dict[str, WitnessHealth] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def load(self) -> None:
        """Read the latest checkpoint from the store (a forged or unreadable one counts as none)."""
        latest = await stored_checkpoint(self.store)
        if isinstance(latest, SignedCheckpoint) and not latest.signature_problem(self.ring):
            self.latest = latest

    async def due(self, now: datetime) -> str:
        """Why a checkpoint is due now ('events' / 'interval'), or ''."""
        last = await self.store.last_event()
        if last is None:
            return ""
        if self.latest is None:
            return "events"
        new = last.seq - self.latest.seq
        if new >= self.policy.checkpoint_every_events:
            return "events"
        if new > 0 and now - self.latest.at >= self.policy.checkpoint_every:
            return "interval"
        return ""

    async def checkpoint(self, reason: str) -> SignedCheckpoint | None:
        """Sign the current head now (None when there is no event yet) and publish it."""
        async with self._lock:
            last = await self.store.last_event()
            if last is None:
                return None
            events = await self.store.count_events()
            signed = SignedCheckpoint.sign(self.ring, deployment=self.deployment, seq=last.seq, hash=last.hash,
                                           at=self.clock.now(), events=events, reason=reason)
            await self.store.set_meta(SIGNED_CHECKPOINT_KEY, signed.to_line())
            self.latest = signed
            log.info("event=audit_checkpoint seq=%d reason=%s key=%s", signed.seq, reason, signed.key_id)
        await self.publish(signed)
        return signed

    async def publish(self, signed: SignedCheckpoint) -> None:
        """Give `signed` to every witness; a failure is recorded, never raised."""
        for witness in self.witnesses:
            health = self.health.setdefault(witness.name, WitnessHealth())
            try:
                await witness.publish(signed)
            except Exception as exc:  # a witness outage must not stop the trail; the next checkpoint retries
                health.failures += 1
                health.last_error = exc.__class__.__name__
                log.error("event=audit_witness_failed witness=%s seq=%d error=%s", witness.name, signed.seq,
                          exc.__class__.__name__)
            else:
                health.published_seq = signed.seq

    async def tick(self) -> SignedCheckpoint | None:
        """Checkpoint if due; called every second by `start`."""
        reason = await self.due(self.clock.now())
        return await self.checkpoint(reason) if reason else None

    def start(self) -> None:
        """Run `tick` every second until `stop`."""
        async def loop() -> None:
            while True:
                try:
                    await self.tick()
                except Exception:  # the store may be briefly away: try again next second
                    log.exception("event=audit_checkpoint_failed")
                await asyncio.sleep(POLL_SECONDS)

        self._task = asyncio.get_running_loop().create_task(loop(), name="audit-checkpoints")

    async def stop(self) -> None:
        """Stop the loop and sign the head one last time (the shutdown checkpoint)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.checkpoint("shutdown")
        except Exception:
            log.exception("event=audit_checkpoint_failed reason=shutdown")

    def describe(self) -> dict[str, Any]:
        """For /healthz: the latest checkpoint and each witness's state (no key material)."""
        latest = self.latest
        return {
            "key": self.ring.active_id,
            "latest": None if latest is None else {"seq": latest.seq, "at": format_time(latest.at),
                                                   "reason": latest.reason},
            "witnesses": {w.name: vars(self.health.get(w.name, WitnessHealth())) for w in self.witnesses},
        }


async def audit_trust(store: Store, checkpointer: Checkpointer, witness_path: Path | None) -> AuditTrust:
    """The report's view of the signed head, the witness file's verdict, and the SIEM sinks' state."""
    latest = await stored_checkpoint(store)
    if isinstance(latest, SignedCheckpoint):
        problem = latest.signature_problem(checkpointer.ring)
        head = (f"seq {latest.seq} signed {format_time(latest.at)} ({latest.reason}), key {latest.key_id}"
                + (f" — INVALID ({problem.replace('_', ' ')})" if problem else ""))
    else:
        head = "none yet" if latest is None else f"UNREADABLE ({latest})"
    witness, witness_ok = "no witness file configured (JITPASS_AUDIT_WITNESS_FILE)", None
    if witness_path is not None:
        try:
            lines = witness_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            witness, witness_ok = f"the witness file cannot be read ({exc.__class__.__name__})", False
        else:
            purge = await store.checkpoint()
            verdict = await verify_trail(store.events(), purge=(purge.seq, purge.hash) if purge else None,
                                         stored=latest, ring=checkpointer.ring, deployment=checkpointer.deployment,
                                         witness=parse_witness(lines))
            bad = [f for f in verdict.findings if f.where != "the store"]
            witness_ok = not bad
            witness = (f"matches the witness file ({verdict.witness_checked} checkpoint(s) agree)" if not bad else
                       "does NOT match the witness file: " + "; ".join(f"{f.kind} ({f.where})" for f in bad[:3]))
    siem: tuple[str, ...] = ()
    status = await store.get_meta("siem_status")
    if status:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            siem = tuple(f"{name}: cursor {s['cursor']}, lag {s['lag']}, {s['total_failures']} failure(s)"
                         + (f", last error {s['last_error']}" if s.get("last_error") else "")
                         for name, s in sorted(json.loads(status).items()))
    return AuditTrust(checkpoint=head, witness=witness, witness_ok=witness_ok, siem=siem)
