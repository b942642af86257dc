"""Verify the audit trail against its hash chain, the store's signed checkpoint and witnesses.

What each check can see (docs/audit-format.md, "What verification detects"):
- the hash chain alone: an edited event, one deleted in the middle, events reordered;
- plus the store's signed checkpoint: events deleted at the tail or a recomputed chain, unless the
  same person also deleted or rolled back that checkpoint (it lives in the database);
- plus a witness (checkpoints kept outside the database): tail truncation, a full re-chain and a
  swapped signing key, whatever was done to the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field

from bot.domain.audit import GENESIS_HASH, ChainReport, format_time, verify_chain
from bot.domain.audit_signing import AuditKeyRing, CheckpointLineError, SignedCheckpoint
from bot.domain.model import Event

__all__ = ["EXIT_CODES", "Finding", "TrailVerdict", "verify_trail"]

# Exit codes of `jitpass audit verify` (README, docs/audit-format.md); the first that applies wins.
EXIT_OK = 0
EXIT_CHAIN_BROKEN = 3  # an event edited, deleted in the middle, or out of order
EXIT_WITNESS_MISMATCH = 5  # tail truncated, chain recomputed, or signing key swapped
EXIT_STORE_CHECKPOINT = 4  # the store's own checkpoint is forged, unreadable or of another deployment
EXIT_WITNESS_UNUSABLE = 6  # witness lines that are garbage, forged or of another deployment
EXIT_CODES = {"chain": EXIT_CHAIN_BROKEN, "mismatch": EXIT_WITNESS_MISMATCH, "store": EXIT_STORE_CHECKPOINT,
              "witness": EXIT_WITNESS_UNUSABLE}
_PRECEDENCE = (EXIT_CHAIN_BROKEN, EXIT_WITNESS_MISMATCH, EXIT_STORE_CHECKPOINT, EXIT_WITNESS_UNUSABLE)


@dataclass(frozen=True)
class Finding:
    """One problem: `kind` is broken, truncated, rechained, key_swapped, tampered, other_deployment or garbage."""

    kind: str
    where: str  # "the store" or "witness line N"
    message: str

    @property
    def exit_code(self) -> int:
        if self.kind == "broken":
            return EXIT_CHAIN_BROKEN
        if self.kind in ("truncated", "rechained", "key_swapped"):
            return EXIT_WITNESS_MISMATCH
        return EXIT_STORE_CHECKPOINT if self.where == "the store" else EXIT_WITNESS_UNUSABLE


@dataclass(frozen=True)
class TrailVerdict:
    chain: ChainReport
    start_seq: int
    stored: SignedCheckpoint | None
    witness_checked: int | None  # None: no witness given; else how many witness checkpoints matched
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        codes = {f.exit_code for f in self.findings}
        return next((c for c in _PRECEDENCE if c in codes), EXIT_OK)

    @property
    def newest_witness_match(self) -> bool:
        return bool(self.witness_checked) and not any(f.exit_code == EXIT_WITNESS_MISMATCH for f in self.findings)

    def lines(self) -> list[str]:
        """What `audit verify` prints: the verdict, each finding, then notes."""
        start = f" (from the retention checkpoint after event {self.start_seq})" if self.start_seq else ""
        if self.chain.ok:
            head = f"hash chain intact: {self.chain.checked} event(s) verified{start}, last seq {self.chain.last_seq}"
        else:
            head = f"hash chain BROKEN at seq {self.chain.first_broken_seq}: {self.chain.problem}"
        out = [head]
        if self.stored is not None:
            out.append(f"latest signed checkpoint: seq {self.stored.seq} at {format_time(self.stored.at)} "
                       f"({self.stored.reason}), key {self.stored.key_id}")
        if self.witness_checked is not None:
            out.append(f"witness: {self.witness_checked} checkpoint(s) agree with the trail")
        out += [f"{f.kind.upper()} ({f.where}): {f.message}" for f in self.findings]
        out += [f"note: {n}" for n in self.notes]
        if not self.findings:
            out.append("audit trail intact")
        return out


async def _tap(events: AsyncIterable[Event], wanted: set[int], seen: dict[int, str]) -> AsyncIterator[Event]:
    async for event in events:
        if event.seq in wanted:
            seen[event.seq] = event.hash
        yield event


def _signature_finding(cp: SignedCheckpoint, where: str, ring: AuditKeyRing, deployment: str) -> Finding | None:
    if cp.deployment != deployment:
        return Finding("other_deployment", where, f"checkpoint seq {cp.seq} belongs to deployment {cp.deployment}, "
                                                  f"not this one ({deployment})")
    problem = cp.signature_problem(ring)
    if problem == "unknown_key":
        return Finding("key_swapped", where, f"checkpoint seq {cp.seq} is signed by key {cp.key_id}, which this "
                                             f"deployment's key ring ({ring.describe()}) does not hold: the signing "
                                             "key was swapped, or a retired key was dropped from the ring")
    if problem:
        return Finding("tampered", where, f"checkpoint seq {cp.seq} does not match its signature by key "
                                          f"{cp.key_id}: it was altered after signing")
    return None


async def verify_trail(
    events: AsyncIterable[Event],
    *,
    purge: tuple[int, str] | None,
    stored: SignedCheckpoint | CheckpointLineError | None,
    ring: AuditKeyRing,
    deployment: str,
    witness: Sequence[tuple[int, SignedCheckpoint | CheckpointLineError]] | None = None,
) -> TrailVerdict:
    """Walk the chain once and hold it against every valid checkpoint (the store's and the witness's).

    `purge` is the retention checkpoint (seq, hash) the retained chain starts from, if any."""
    findings: list[Finding] = []
    notes: list[str] = []
    claims: list[tuple[str, SignedCheckpoint]] = []
    stored_cp = stored if isinstance(stored, SignedCheckpoint) else None
    if isinstance(stored, CheckpointLineError):
        findings.append(Finding("tampered", "the store", f"the stored signed checkpoint is unreadable ({stored})"))
    elif stored is not None:
        problem = _signature_finding(stored, "the store", ring, deployment)
        if problem:
            findings.append(problem)
        else:
            claims.append(("the store", stored))
    for number, entry in witness or ():
        where = f"witness line {number}"
        if isinstance(entry, CheckpointLineError):
            findings.append(Finding("garbage", where, str(entry)))
            continue
        problem = _signature_finding(entry, where, ring, deployment)
        if problem:
            findings.append(problem)
        else:
            claims.append((where, entry))

    start_seq, start_hash = purge if purge else (0, GENESIS_HASH)
    seen: dict[int, str] = {}
    chain = await verify_chain(_tap(events, {cp.seq for _, cp in claims}, seen), start_seq=start_seq,
                               start_hash=start_hash)
    if not chain.ok:
        findings.append(Finding("broken", "the store", f"seq {chain.first_broken_seq}: {chain.problem}"))
    trusted_until = chain.last_seq if chain.ok else (chain.first_broken_seq or 1) - 1

    matched = 0
    for where, cp in claims:
        if chain.ok and cp.seq > chain.last_seq:
            findings.append(Finding("truncated", where, f"the trail ends at seq {chain.last_seq} but checkpoint seq "
                                                        f"{cp.seq} (signed {format_time(cp.at)}) was there: "
                                                        f"{cp.seq - chain.last_seq} event(s) deleted at the tail"))
        elif cp.seq < start_seq:
            notes.append(f"{where}: checkpoint seq {cp.seq} is older than the retention checkpoint: not comparable")
        elif cp.seq == start_seq:
            if cp.hash != start_hash:
                findings.append(Finding("rechained", where,
                                        f"the retention checkpoint says seq {cp.seq} had hash {start_hash[:16]}…, "
                                        f"the signed checkpoint {cp.hash[:16]}…"))
            elif where != "the store":
                matched += 1
        elif cp.seq <= trusted_until:
            if seen.get(cp.seq) != cp.hash:
                findings.append(Finding("rechained", where, f"event {cp.seq} now hashes to "
                                                            f"{seen.get(cp.seq, '?')[:16]}…, the checkpoint signed "
                                                            f"{format_time(cp.at)} says {cp.hash[:16]}…: the chain "
                                                            "was recomputed after that event changed"))
            elif where != "the store":
                matched += 1
    findings = _condense(findings)
    if stored is None:
        notes.append("the store holds no signed checkpoint yet" if witness else
                     "the store holds no signed checkpoint: tail deletion cannot be detected without --witness")
    elif witness is None:
        notes.append("without --witness, deleting tail events together with the store's checkpoint, or a "
                     "re-chain that also rolls the checkpoint back, cannot be detected")
    return TrailVerdict(chain=chain, start_seq=start_seq, stored=stored_cp,
                        witness_checked=None if witness is None else matched, findings=tuple(findings),
                        notes=tuple(notes))


def _condense(findings: list[Finding]) -> list[Finding]:
    """At most three witness truncation / re-chain findings (a re-chain contradicts every later checkpoint);
    every garbage, forged or foreign line is still named."""
    kept: list[Finding] = []
    counts: dict[str, int] = {}
    for finding in findings:
        if finding.where == "the store" or finding.kind not in ("truncated", "rechained"):
            kept.append(finding)
            continue
        counts[finding.kind] = counts.get(finding.kind, 0) + 1
        if counts[finding.kind] <= 3:
            kept.append(finding)
    for kind, count in counts.items():
        if count > 3:
            kept.append(Finding(kind, "witness", f"and {count - 3} more witness line(s) of this kind"))
    return kept
