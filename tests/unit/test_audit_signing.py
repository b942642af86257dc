"""Signed checkpoints and the audit key ring: round trips, forgeries, and errors that never echo a key."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.domain.audit_signing import (
    AuditKeyError,
    CheckpointLineError,
    SignedCheckpoint,
    format_private_line,
    format_public_line,
    parse_audit_keys,
    parse_checkpoint_line,
)

AT = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)


def _signed(key: Ed25519PrivateKey) -> SignedCheckpoint:
    ring = parse_audit_keys(format_private_line(key), source="test")
    return SignedCheckpoint.sign(ring, deployment="d" * 32, seq=42, hash="ab" * 32, at=AT, events=40, reason="manual")


def test_a_checkpoint_line_round_trips_and_verifies_under_a_retired_key() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signed = _signed(old)
    assert parse_checkpoint_line(signed.to_line()) == signed
    assert parse_checkpoint_line(signed.chat_text()) == signed  # pasted back from chat
    rotated = parse_audit_keys(f"{format_public_line(old.public_key())}\n{format_private_line(new)}\n", source="t")
    assert signed.signature_problem(rotated) == ""
    assert rotated.active_id != signed.key_id


@pytest.mark.parametrize("field", ["seq", "hash", "at", "events", "deployment", "reason"])
def test_changing_any_signed_field_breaks_the_signature(field: str) -> None:
    key = Ed25519PrivateKey.generate()
    signed = _signed(key)
    data = json.loads(signed.to_line())
    data[field] = {"seq": 41, "hash": "cd" * 32, "at": "2026-12-02T17:00:00.000000Z", "events": 1,
                   "deployment": "e" * 32, "reason": "interval"}[field]
    forged = parse_checkpoint_line(json.dumps(data))
    assert forged.signature_problem(parse_audit_keys(format_private_line(key), source="t")) == "bad_signature"


def test_a_checkpoint_by_another_key_is_unknown_not_forged() -> None:
    signed = _signed(Ed25519PrivateKey.generate())
    other = parse_audit_keys(format_private_line(Ed25519PrivateKey.generate()), source="t")
    assert signed.signature_problem(other) == "unknown_key"
    assert dataclasses.replace(signed, signature="!!").signature_problem(
        parse_audit_keys(format_public_line(Ed25519PrivateKey.generate().public_key()), source="t")) == "unknown_key"


@pytest.mark.parametrize(("line", "why"), [
    ("hello", "no JSON object"),
    ("{not json}", "invalid JSON"),
    ('{"type": "other"}', "no \"type\""),
    ('{"type": "jitpass.audit.checkpoint", "v": 2}', "version 2"),
    ('{"type": "jitpass.audit.checkpoint", "v": 1, "seq": 1}', "lacks"),
])
def test_garbage_lines_say_what_is_wrong(line: str, why: str) -> None:
    with pytest.raises(CheckpointLineError, match=why):
        parse_checkpoint_line(line)


def test_key_ring_errors_name_the_line_and_never_echo_the_key() -> None:
    secret = format_private_line(Ed25519PrivateKey.generate())
    with pytest.raises(AuditKeyError) as caught:
        parse_audit_keys(f"# comment\n{secret[:-6]}\n", source="KEYFILE")
    assert "KEYFILE, line 2" in str(caught.value) and secret[8:30] not in str(caught.value)
    with pytest.raises(AuditKeyError, match="line 1: not an audit key"):
        parse_audit_keys("k1:" + secret, source="KEYFILE")
    with pytest.raises(AuditKeyError, match="holds no audit signing key"):
        parse_audit_keys("# nothing\n", source="KEYFILE")
