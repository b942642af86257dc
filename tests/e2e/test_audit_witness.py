"""Tampering with the audit trail as a database administrator would, against real `jitpass` processes.

Each case runs `jitpass audit verify` without and with `--witness`: the cases the hash chain catches
alone (edit, delete in the middle, reorder), and the ones only a checkpoint kept outside the database
catches (delete at the tail, a full re-chain, a swapped signing key).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.domain.audit import event_from_dict, seal_event
from bot.domain.audit_signing import SignedCheckpoint, format_private_line, parse_audit_keys, parse_checkpoint_line
from bot.domain.model import EventDraft
from tests.e2e.test_cli import FIXTURES, Cli, _free_port

EXIT_CHAIN_BROKEN, EXIT_STORE_CHECKPOINT, EXIT_WITNESS_MISMATCH, EXIT_WITNESS_UNUSABLE = 3, 4, 5, 6


class Trail(Cli):
    """A deployment with 6 events and two signed checkpoints (seq 3, seq 6) in its witness file."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.witness = tmp_path / "witness.jsonl"
        self.env["JITPASS_AUDIT_WITNESS_FILE"] = str(self.witness)
        self.db = tmp_path / "jitpass.db"

    def build(self) -> Trail:
        assert self("items", "import", str(FIXTURES / "items.json")).returncode == 0
        assert self("audit", "checkpoint").returncode == 0
        assert self("items", "remove", "acme-zendesk").returncode == 0
        assert self("items", "remove", "initech-printer").returncode == 0
        assert self("items", "add", "extra", "--vault", "acme", stdin="pw\n\n").returncode == 0
        assert self("audit", "checkpoint").returncode == 0
        return self

    def verify(self, *extra: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return self("audit", "verify", *extra, stdin=stdin)

    def with_witness(self) -> subprocess.CompletedProcess[str]:
        return self.verify("--witness", str(self.witness))

    def sql(self, *statements: str) -> None:
        with closing(sqlite3.connect(self.db)) as conn:
            for statement in statements:
                conn.execute(statement)
            conn.commit()

    def forget_signed_checkpoint(self) -> None:
        """What a careful attacker does too: the store's own checkpoint would give them away."""
        self.sql("DELETE FROM meta WHERE key = 'audit_signed_checkpoint'")

    def rechain(self, *, edit_seq: int) -> None:
        """Edit one event and recompute every later hash with the published algorithm."""
        events = [event_from_dict(json.loads(line)) for line in self("audit", "export").stdout.splitlines()]
        prev_hash = events[0].prev_hash
        with closing(sqlite3.connect(self.db)) as conn:
            for event in events:
                reason = "nothing to see here" if event.seq == edit_seq else event.reason
                draft = EventDraft(event.type, event.actor, event.request_id, event.item, event.vault, reason,
                                   event.details)
                resealed = seal_event(draft, seq=event.seq, prev_hash=prev_hash, at=event.at, event_id=event.id)
                conn.execute("UPDATE events SET reason = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                             (reason, resealed.prev_hash, resealed.hash, event.seq))
                prev_hash = resealed.hash
            conn.commit()


TRAIL_FILES = ("jitpass.db", "jitpass.key", "jitpass-audit.key", "witness.jsonl")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trail built by real processes; each test tampers with its own copy."""
    directory = tmp_path_factory.mktemp("trail")
    Trail(directory).build()
    return directory


@pytest.fixture
def trail(built: Path, tmp_path: Path) -> Trail:
    for name in TRAIL_FILES:
        shutil.copy2(built / name, tmp_path / name)
    return Trail(tmp_path)


def test_an_untouched_trail_verifies_with_and_without_its_witness(trail: Trail) -> None:
    alone = trail.verify()
    assert alone.returncode == 0, alone.stderr
    assert "6 event(s) verified" in alone.stdout and "latest signed checkpoint: seq 6" in alone.stdout
    witnessed = trail.with_witness()
    assert witnessed.returncode == 0, witnessed.stderr
    assert "witness: 2 checkpoint(s) agree" in witnessed.stdout
    lines = trail.witness.read_text(encoding="utf-8").splitlines()
    assert [parse_checkpoint_line(line).seq for line in lines] == [3, 6]
    assert (trail.witness.stat().st_mode & 0o777) == 0o600


def test_an_edited_event_is_caught_by_the_chain_alone(trail: Trail) -> None:
    trail.sql("UPDATE events SET reason = 'edited' WHERE seq = 2")
    for done in (trail.verify(), trail.with_witness()):
        assert done.returncode == EXIT_CHAIN_BROKEN and "BROKEN at seq 2" in done.stderr
        assert "modified after it was written" in done.stderr


def test_a_deletion_in_the_middle_is_caught_by_the_chain_alone(trail: Trail) -> None:
    trail.sql("DELETE FROM events WHERE seq = 4")
    for done in (trail.verify(), trail.with_witness()):
        assert done.returncode == EXIT_CHAIN_BROKEN and "event 4 is missing" in done.stderr


def test_reordered_events_are_caught_by_the_chain_alone(trail: Trail) -> None:
    trail.sql("UPDATE events SET seq = -1 WHERE seq = 4", "UPDATE events SET seq = 4 WHERE seq = 5",
              "UPDATE events SET seq = 5 WHERE seq = -1")
    for done in (trail.verify(), trail.with_witness()):
        assert done.returncode == EXIT_CHAIN_BROKEN and "BROKEN at seq 4" in done.stderr


def test_a_tail_deletion_is_caught_by_the_stores_checkpoint_while_it_is_there(trail: Trail) -> None:
    trail.sql("DELETE FROM events WHERE seq >= 5")
    done = trail.verify()
    assert done.returncode == EXIT_WITNESS_MISMATCH
    assert "TRUNCATED (the store): the trail ends at seq 4 but checkpoint seq 6" in done.stderr


def test_a_tail_deletion_with_the_checkpoint_removed_needs_the_witness(trail: Trail) -> None:
    trail.sql("DELETE FROM events WHERE seq >= 5")
    trail.forget_signed_checkpoint()
    alone = trail.verify()
    assert alone.returncode == 0  # undetectable without a witness, as docs/audit-format.md says
    assert "tail deletion cannot be detected without --witness" in alone.stdout
    done = trail.with_witness()
    assert done.returncode == EXIT_WITNESS_MISMATCH
    assert "TRUNCATED (witness line 2): the trail ends at seq 4 but checkpoint seq 6" in done.stderr
    assert "2 event(s) deleted at the tail" in done.stderr


def test_a_full_rechain_is_caught_by_the_stores_checkpoint_while_it_is_there(trail: Trail) -> None:
    trail.rechain(edit_seq=2)
    done = trail.verify()
    assert done.returncode == EXIT_WITNESS_MISMATCH and "RECHAINED (the store): event 6" in done.stderr


def test_a_full_rechain_with_the_checkpoint_removed_needs_the_witness(trail: Trail) -> None:
    trail.rechain(edit_seq=2)
    trail.forget_signed_checkpoint()
    alone = trail.verify()
    assert alone.returncode == 0 and "hash chain intact" in alone.stdout  # undetectable alone, documented
    done = trail.with_witness()
    assert done.returncode == EXIT_WITNESS_MISMATCH
    assert "RECHAINED (witness line 1): event 3" in done.stderr
    assert "RECHAINED (witness line 2): event 6" in done.stderr


def test_a_swapped_signing_key_is_caught_by_the_witness(trail: Trail, tmp_path: Path) -> None:
    # The attacker re-chains, replaces the key with their own and signs a fresh checkpoint with it.
    trail.rechain(edit_seq=2)
    trail.forget_signed_checkpoint()
    (tmp_path / "jitpass-audit.key").write_text(trail("audit", "generate-key").stdout, encoding="ascii")
    trail.env.pop("JITPASS_AUDIT_WITNESS_FILE")  # they cannot write the witness
    assert trail("audit", "checkpoint").returncode == 0
    alone = trail.verify()
    assert alone.returncode == 0  # a self-consistent forgery: only the witness can tell
    done = trail.with_witness()
    assert done.returncode == EXIT_WITNESS_MISMATCH
    assert "KEY_SWAPPED (witness line 1): checkpoint seq 3 is signed by key" in done.stderr
    assert "the signing key was swapped" in done.stderr


def test_bad_witness_lines_are_each_named(trail: Trail, tmp_path: Path) -> None:
    good = trail.witness.read_text(encoding="utf-8").splitlines()
    forged = json.loads(good[1])
    forged["hash"] = "f" * 64
    # A genuine checkpoint of another deployment, signed with that deployment's own key.
    other_ring = parse_audit_keys(format_private_line(Ed25519PrivateKey.generate()), source="other")
    foreign = SignedCheckpoint.sign(other_ring, deployment="0" * 32, seq=3, hash="a" * 64, at=datetime.now(UTC),
                                    events=3, reason="interval").to_line()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([good[0], "hello from chat", json.dumps(forged), foreign, '{"type": "x"}', "{oops}"])
                   + "\n", encoding="utf-8")
    done = trail.verify("--witness", str(bad))
    assert done.returncode == EXIT_WITNESS_UNUSABLE, done.stderr
    assert "GARBAGE (witness line 2): not a checkpoint (no JSON object on the line)" in done.stderr
    assert "TAMPERED (witness line 3): checkpoint seq 6 does not match its signature" in done.stderr
    assert "OTHER_DEPLOYMENT (witness line 4): checkpoint seq 3 belongs to deployment" in done.stderr
    assert "GARBAGE (witness line 5): not a checkpoint" in done.stderr
    assert "GARBAGE (witness line 6): not a checkpoint (invalid JSON" in done.stderr
    assert "witness: 1 checkpoint(s) agree" in done.stderr
    assert "Traceback" not in done.stderr
    missing = trail.verify("--witness", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_checkpoints_pasted_from_chat_are_a_witness(trail: Trail) -> None:
    lines = trail.witness.read_text(encoding="utf-8").splitlines()
    pasted = "\n".join(f"jitpass audit checkpoint seq {parse_checkpoint_line(x).seq}: `{x}`" for x in lines)
    trail.sql("DELETE FROM events WHERE seq = 6")
    trail.forget_signed_checkpoint()
    done = trail.verify("--witness", "-", stdin=pasted + "\n")
    assert done.returncode == EXIT_WITNESS_MISMATCH and "TRUNCATED (witness line 2)" in done.stderr


def test_a_forged_checkpoint_in_the_store_is_named(trail: Trail) -> None:
    trail.sql("UPDATE meta SET value = replace(value, '\"seq\":6', '\"seq\":5') WHERE key = 'audit_signed_checkpoint'")
    done = trail.verify()
    assert done.returncode == EXIT_STORE_CHECKPOINT
    assert "TAMPERED (the store): checkpoint seq 5 does not match its signature" in done.stderr


def test_a_wrong_or_missing_signing_key_stops_the_start(trail: Trail, tmp_path: Path) -> None:
    key = tmp_path / "jitpass-audit.key"
    original = key.read_text(encoding="ascii")
    key.write_text(trail("audit", "generate-key").stdout, encoding="ascii")
    wrong = trail("items", "list")
    assert wrong.returncode == 2 and "wrong audit signing key" in wrong.stderr and "Traceback" not in wrong.stderr
    key.unlink()
    missing = trail("items", "list")
    assert missing.returncode == 2 and "no audit signing key" in missing.stderr
    assert not key.exists()  # never silently replaced by a new key
    key.write_text("ed25519:not-base64!\n", encoding="ascii")
    garbled = trail("items", "list")
    assert garbled.returncode == 2 and "line 1: the key is not valid base64" in garbled.stderr
    key.write_text(original, encoding="ascii")
    assert trail("items", "list").returncode == 0


def test_rotation_keeps_old_checkpoints_verifiable(trail: Trail, tmp_path: Path) -> None:
    before = trail("audit", "public-key").stdout.splitlines()[1].split()[0]
    rotated = trail("audit", "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    key_text = (tmp_path / "jitpass-audit.key").read_text(encoding="ascii")
    assert before in key_text and sum(line.startswith("ed25519:") for line in key_text.splitlines()) == 1
    assert (tmp_path / "jitpass-audit.key").stat().st_mode & 0o777 == 0o600
    assert trail("items", "add", "after-rotation", "--vault", "acme", stdin="pw\n\n").returncode == 0
    assert trail("audit", "checkpoint").returncode == 0
    done = trail.with_witness()
    assert done.returncode == 0, done.stderr
    keys = {parse_checkpoint_line(x).key_id for x in trail.witness.read_text(encoding="utf-8").splitlines()}
    assert len(keys) == 2  # checkpoints by the old and the new key, all verified


async def poll_healthz(port: int, ready: Callable[[dict[str, Any]], bool], *, tries: int = 300) -> dict[str, Any]:
    """/healthz of a starting server, until `ready` says so (bounded: `tries` x 0.1 s)."""
    body: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(tries):
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    body = await response.json()
                if ready(body):
                    break
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    return body


async def test_the_server_signs_at_shutdown_and_shows_the_checkpoint_in_healthz(tmp_path: Path) -> None:
    server = Trail(tmp_path)
    server.env["PORT"] = str(_free_port())
    proc = subprocess.Popen([str(Path(sys.executable).parent / "jitpass"), "serve", "--demo"], cwd=tmp_path,
                            env=server.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # The demo item's event, signed within a second.
        body = await poll_healthz(int(server.env["PORT"]), lambda b: b["audit"]["latest"] is not None)
        assert body["audit"]["latest"]["seq"] >= 1 and body["audit"]["witnesses"]["file"]["failures"] == 0
        assert len(body["audit"]["key"]) == 16
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    assert proc.returncode == 0, output
    assert "audit_key_created" in output  # local development: a key file, with a warning
    assert (tmp_path / "jitpass-audit.key").stat().st_mode & 0o777 == 0o600
    last = parse_checkpoint_line(server.witness.read_text(encoding="utf-8").splitlines()[-1])
    assert last.reason == "shutdown"
    assert server.with_witness().returncode == 0


# -- the standalone verifier (tools/verify_audit.py) agrees with `jitpass audit verify` ---------------

TOOL = Path(__file__).parent.parent.parent / "tools" / "verify_audit.py"


def _tool(trail: Trail, *, witness: Path) -> subprocess.CompletedProcess[str]:
    export, keys = trail.tmp / "export.jsonl", trail.tmp / "public.keys"
    export.write_text(trail("audit", "export").stdout, encoding="utf-8")
    keys.write_text(trail("audit", "public-key").stdout, encoding="utf-8")
    # Its own interpreter run, outside the package: standard library + cryptography only.
    return subprocess.run([sys.executable, "-I", str(TOOL), str(export), "--witness", str(witness),
                           "--public-keys", str(keys)], capture_output=True, text=True, timeout=60, cwd=trail.tmp)


def _kinds(text: str) -> set[str]:
    return {line.split(" ", 1)[0] for line in text.splitlines() if line.split(" ", 1)[0].isupper()}


@pytest.mark.parametrize("tamper", ["none", "edit", "delete_middle", "reorder", "delete_tail", "rechain",
                                    "key_swap", "garbage"])
def test_the_standalone_verifier_agrees_with_jitpass(trail: Trail, tmp_path: Path, tamper: str) -> None:
    witness = trail.witness
    if tamper == "edit":
        trail.sql("UPDATE events SET reason = 'edited' WHERE seq = 2")
    elif tamper == "delete_middle":
        trail.sql("DELETE FROM events WHERE seq = 4")
    elif tamper == "reorder":
        trail.sql("UPDATE events SET seq = -1 WHERE seq = 4", "UPDATE events SET seq = 4 WHERE seq = 5",
                  "UPDATE events SET seq = 5 WHERE seq = -1")
    elif tamper == "delete_tail":
        trail.sql("DELETE FROM events WHERE seq >= 5")
    elif tamper == "rechain":
        trail.rechain(edit_seq=2)
    elif tamper == "key_swap":
        trail.rechain(edit_seq=2)
        (tmp_path / "jitpass-audit.key").write_text(trail("audit", "generate-key").stdout, encoding="ascii")
    elif tamper == "garbage":
        witness = tmp_path / "garbage.jsonl"
        witness.write_text(trail.witness.read_text(encoding="utf-8") + "not a checkpoint\n", encoding="utf-8")
    trail.forget_signed_checkpoint()  # both verifiers then know the same: the trail and the witness
    ours = trail.verify("--witness", str(witness))
    theirs = _tool(trail, witness=witness)
    assert "Traceback" not in theirs.stderr
    assert theirs.returncode == ours.returncode, (ours.stderr, theirs.stderr)
    assert _kinds(theirs.stdout + theirs.stderr) == _kinds(ours.stdout + ours.stderr) - {"OTHER_DEPLOYMENT"}
    expected = {"none": 0, "edit": 3, "delete_middle": 3, "reorder": 3, "delete_tail": 5, "rechain": 5,
                "key_swap": 5, "garbage": 6}[tamper]
    assert ours.returncode == expected


def test_the_html_report_shows_the_latest_checkpoint_and_whether_the_witness_matches(trail: Trail) -> None:
    page = trail.tmp / "report.html"
    done = trail("report", "--since", "30d", "--format", "html", "--out", str(page))
    assert done.returncode == 0, done.stderr
    html = page.read_text(encoding="utf-8")
    assert "Latest signed checkpoint: seq 6 signed" in html
    assert '<span class="ok">matches the witness file (2 checkpoint(s) agree)</span>' in html

    trail.rechain(edit_seq=2)
    trail.forget_signed_checkpoint()
    assert trail("report", "--since", "30d", "--format", "html", "--out", str(page)).returncode == 0
    html = page.read_text(encoding="utf-8")
    assert "Latest signed checkpoint: none yet" in html
    assert '<span class="bad">does NOT match the witness file: rechained (witness line 1)' in html
