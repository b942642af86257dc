"""Signed checkpoints on every store: when they are due, purges and witnesses (the real file witness)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.domain.audit_signing import AuditKeyRing, format_private_line, parse_audit_keys, parse_witness
from bot.domain.audit_verify import verify_trail
from bot.domain.policy import AuditPolicy, Policy, Retention
from bot.ports import Store
from bot.services.checkpoints import Checkpointer, deployment_id, stored_checkpoint
from bot.services.retention import purge
from storage.witness import FileWitness
from tests.support.stores import ANN, FakeClock, draft


def _ring() -> AuditKeyRing:
    return parse_audit_keys(format_private_line(Ed25519PrivateKey.generate()), source="test key")


async def _checkpointer(store: Store, clock: FakeClock, witness: Path, **policy: object) -> Checkpointer:
    audit = AuditPolicy(**policy)  # type: ignore[arg-type]
    checkpointer = Checkpointer(store, _ring(), clock, await deployment_id(store), audit, [FileWitness(witness)])
    await checkpointer.load()
    return checkpointer


async def _verify(store: Store, checkpointer: Checkpointer, witness: Path) -> tuple[int, list[str]]:
    purged = await store.checkpoint()
    verdict = await verify_trail(store.events(), purge=(purged.seq, purged.hash) if purged else None,
                                 stored=await stored_checkpoint(store), ring=checkpointer.ring,
                                 deployment=await deployment_id(store),
                                 witness=parse_witness(witness.read_text(encoding="utf-8").splitlines()))
    return verdict.exit_code, verdict.lines()


async def test_a_checkpoint_is_due_every_n_events(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    witness = tmp_path / "witness.jsonl"
    checkpointer = await _checkpointer(store, clock, witness, checkpoint_every_events=3)
    assert await checkpointer.tick() is None  # an empty trail: nothing to sign
    for _ in range(2):
        await store.append_event(draft())
    first = await checkpointer.tick()
    assert first is not None and first.seq == 2 and first.reason == "events"  # the first head is signed at once
    await store.append_event(draft())
    await store.append_event(draft())
    assert await checkpointer.tick() is None  # 2 new events < 3
    await store.append_event(draft())
    signed = await checkpointer.tick()
    assert signed is not None and (signed.seq, signed.events) == (5, 5)
    assert signed.signature_problem(checkpointer.ring) == ""
    assert await stored_checkpoint(store) == signed
    assert [line.seq for _, line in parse_witness(witness.read_text(encoding="utf-8").splitlines())] == [2, 5]
    code, lines = await _verify(store, checkpointer, witness)
    assert code == 0 and "witness: 2 checkpoint(s) agree with the trail" in lines


async def test_a_checkpoint_is_due_after_m_minutes_when_something_happened(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    checkpointer = await _checkpointer(store, clock, tmp_path / "w.jsonl", checkpoint_every=timedelta(minutes=10))
    await store.append_event(draft())
    assert await checkpointer.tick() is not None
    clock.advance(minutes=30)
    assert await checkpointer.tick() is None  # nothing new: no checkpoint however long it has been
    await store.append_event(draft())
    idle = await checkpointer.tick()  # the last one is older than 10 minutes: sign the new event at once
    assert idle is not None and (idle.seq, idle.reason) == (2, "interval")
    await store.append_event(draft())
    clock.advance(minutes=9)
    assert await checkpointer.tick() is None
    clock.advance(minutes=1)
    signed = await checkpointer.tick()
    assert signed is not None and signed.reason == "interval" and signed.seq == 3


async def test_a_purge_signs_the_new_head_and_the_rest_still_verifies(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.jsonl"
    checkpointer = await _checkpointer(store, clock, witness)
    for _ in range(4):
        await store.append_event(draft())
        clock.advance(days=2)
    await checkpointer.checkpoint("manual")
    clock.advance(days=1)
    outcome = await purge(store, Policy(retention=Retention(keep_days=3)), clock.now(), ANN,
                          checkpointer=checkpointer)
    assert outcome.purged > 0
    latest = await stored_checkpoint(store)
    last = await store.last_event()
    assert latest is not None and last is not None and last.type == "retention.purged"
    assert (latest.seq, latest.reason, latest.events) == (last.seq, "purge", await store.count_events())
    code, lines = await _verify(store, checkpointer, witness)
    assert code == 0, lines


async def test_a_failing_witness_is_recorded_and_the_checkpoint_still_kept(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    (tmp_path / "not-a-file").mkdir()
    checkpointer = await _checkpointer(store, clock, tmp_path / "not-a-file")
    await store.append_event(draft())
    signed = await checkpointer.checkpoint("manual")
    assert signed is not None and await stored_checkpoint(store) == signed
    health = checkpointer.describe()["witnesses"]["file"]
    assert health["failures"] == 1 and health["published_seq"] == 0 and health["last_error"] == "IsADirectoryError"
