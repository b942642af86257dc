"""Signed checkpoints of the audit chain head, and the Ed25519 key ring that signs them.

A checkpoint says "in deployment D, event `seq` had hash H at time T, with E events retained",
signed with a key kept outside the database. Published to witnesses (a file, chat, the SIEM) it
lets `audit verify --witness` notice what the hash chain alone cannot: deleted tail events, a
fully recomputed chain, a swapped signing key. The exact encoding is in docs/audit-format.md.

Key ring text (JITPASS_AUDIT_KEY or the key file): one key per line, blank lines and `#` comments
ignored. `ed25519:<base64 of the 32-byte private key>` is a signing key, the LAST one signs;
`ed25519-public:<base64 of the 32-byte public key>` is a retired key kept to verify old checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from bot.domain.audit import canonical, format_time, parse_time
from bot.domain.errors import JitpassError

__all__ = [
    "CHECKPOINT_TYPE",
    "AuditKeyError",
    "AuditKeyRing",
    "CheckpointLineError",
    "SignedCheckpoint",
    "audit_key_id",
    "format_private_line",
    "format_public_line",
    "load_audit_keys",
    "parse_audit_keys",
    "parse_checkpoint_line",
    "parse_witness",
]

CHECKPOINT_TYPE = "jitpass.audit.checkpoint"
CHECKPOINT_VERSION = 1
_PRIVATE = "ed25519:"
_PUBLIC = "ed25519-public:"
_FILE_HEADER = (
    "# jitpass audit signing key ring: the LAST `ed25519:` line signs checkpoints;\n"
    "# `ed25519-public:` lines are retired keys, kept so old checkpoints still verify.\n"
    "# Keep this file secret (mode 600), outside the database and backed up.\n"
)
_FIELDS = ("v", "type", "deployment", "seq", "hash", "at", "events", "key", "reason", "sig")


class AuditKeyError(JitpassError):
    """The audit signing key is missing, malformed, or not the one that signed the trail."""


class CheckpointLineError(ValueError):
    """A witness line that is not a checkpoint (the message says why)."""


def audit_key_id(public: Ed25519PublicKey) -> str:
    """16 hex digits naming a signing key: SHA-256 of "jitpass-audit-key" + the raw public key."""
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(b"jitpass-audit-key" + raw).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def format_private_line(key: Ed25519PrivateKey) -> str:
    """The key ring line of a signing key."""
    return _PRIVATE + _b64(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))


def format_public_line(key: Ed25519PublicKey) -> str:
    """The key ring line of a retired (verify-only) key."""
    return _PUBLIC + _b64(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


@dataclass(frozen=True)
class AuditKeyRing:
    """The active signing key (if any) and every public key that may have signed a checkpoint."""

    signer: Ed25519PrivateKey | None
    public: Mapping[str, Ed25519PublicKey]

    @property
    def active_id(self) -> str | None:
        return audit_key_id(self.signer.public_key()) if self.signer else None

    def knows(self, key_id: str) -> bool:
        return key_id in self.public

    def describe(self) -> str:
        ids = [k + (" (signs)" if k == self.active_id else "") for k in self.public]
        return ", ".join(ids) or "no keys"


def parse_audit_keys(text: str, *, source: str) -> AuditKeyRing:
    """Parse key ring text; errors name the line, never echo key material."""
    signer: Ed25519PrivateKey | None = None
    public: dict[str, Ed25519PublicKey] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        for token in line.split():
            prefix = _PRIVATE if token.startswith(_PRIVATE) else _PUBLIC if token.startswith(_PUBLIC) else None
            if prefix is None:
                raise AuditKeyError(f"{source}, line {number}: not an audit key (expected `ed25519:<base64>` or "
                                    "`ed25519-public:<base64>`)")
            try:
                material = base64.b64decode(token[len(prefix):], validate=True)
            except (binascii.Error, ValueError):
                raise AuditKeyError(f"{source}, line {number}: the key is not valid base64") from None
            if len(material) != 32:
                raise AuditKeyError(f"{source}, line {number}: an Ed25519 key is 32 bytes, this one {len(material)}")
            if prefix == _PRIVATE:
                signer = Ed25519PrivateKey.from_private_bytes(material)
                pub = signer.public_key()
            else:
                pub = Ed25519PublicKey.from_public_bytes(material)
            public[audit_key_id(pub)] = pub
    if not public:
        raise AuditKeyError(f"{source} holds no audit signing key")
    return AuditKeyRing(signer=signer, public=public)


def load_audit_keys(*, env_value: str | None, file_path: Path, create_if_missing: bool) -> tuple[AuditKeyRing, bool]:
    """The key ring from JITPASS_AUDIT_KEY, else the key file (created 0600 when allowed); (ring, created)."""
    if env_value is not None and env_value.strip():
        return parse_audit_keys(env_value, source="JITPASS_AUDIT_KEY"), False
    created = False
    if not file_path.exists():
        if not create_if_missing:
            raise AuditKeyError(f"audit signing key file {file_path} does not exist",
                                hint="Set JITPASS_AUDIT_KEY or JITPASS_AUDIT_KEY_FILE to the key that signed "
                                     "this trail's checkpoints (see README, Audit trail).")
        created = _create_key_file(file_path)
    try:
        text = file_path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditKeyError(f"audit signing key file {file_path} cannot be read ({exc.__class__.__name__})") from None
    return parse_audit_keys(text, source=str(file_path)), created


def _create_key_file(path: Path) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    content = (_FILE_HEADER + format_private_line(Ed25519PrivateKey.generate()) + "\n").encode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from the first byte
    except FileExistsError:
        return False  # another process created it meanwhile: use theirs
    except OSError as exc:
        raise AuditKeyError(f"cannot create audit signing key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return True


@dataclass(frozen=True)
class SignedCheckpoint:
    """The chain head, signed: `seq` and its `hash`, when, how many events the store held, by which key."""

    deployment: str
    seq: int
    hash: str
    at: datetime
    events: int
    key_id: str
    reason: str  # why it was taken: interval, events, purge, shutdown, rotation, manual
    signature: str = ""  # base64 Ed25519 signature of `signed_bytes()`

    def body(self) -> dict[str, Any]:
        """Every signed field (the line minus `sig`)."""
        return {"v": CHECKPOINT_VERSION, "type": CHECKPOINT_TYPE, "deployment": self.deployment, "seq": self.seq,
                "hash": self.hash, "at": format_time(self.at), "events": self.events, "key": self.key_id,
                "reason": self.reason}

    def signed_bytes(self) -> bytes:
        """What the signature covers: the canonical JSON of `body()` (the same encoding events are hashed in)."""
        return canonical(self.body())

    def to_line(self) -> str:
        """One witness line: the canonical JSON of the body plus `sig`."""
        return canonical({**self.body(), "sig": self.signature}).decode()

    def chat_text(self) -> str:
        """The short chat message; pasting it back into `audit verify --witness -` works."""
        return f"jitpass audit checkpoint seq {self.seq}: `{self.to_line()}`"

    @classmethod
    def sign(cls, ring: AuditKeyRing, *, deployment: str, seq: int, hash: str, at: datetime, events: int,
             reason: str) -> SignedCheckpoint:
        """A checkpoint signed with the ring's active key."""
        if ring.signer is None:
            raise AuditKeyError("the audit key ring has no signing key (only retired `ed25519-public:` lines)")
        unsigned = cls(deployment, seq, hash, parse_time(format_time(at)), events, ring.active_id or "", reason)
        signature = _b64(ring.signer.sign(unsigned.signed_bytes()))
        return cls(**{**unsigned.__dict__, "signature": signature})

    def signature_problem(self, ring: AuditKeyRing) -> str:
        """'' if a key of `ring` signed exactly this checkpoint; else 'unknown_key' or 'bad_signature'."""
        key = ring.public.get(self.key_id)
        if key is None:
            return "unknown_key"
        try:
            key.verify(base64.b64decode(self.signature, validate=True), self.signed_bytes())
        except (InvalidSignature, binascii.Error, ValueError):
            return "bad_signature"
        return ""


def parse_checkpoint_line(text: str) -> SignedCheckpoint:
    """A checkpoint from one witness line: plain JSON, or the chat message's line (prefix and backticks allowed)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise CheckpointLineError("not a checkpoint (no JSON object on the line)")
    try:
        data = json.loads(text[start:end + 1])
    except json.JSONDecodeError as exc:
        raise CheckpointLineError(f"not a checkpoint (invalid JSON: {exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict) or data.get("type") != CHECKPOINT_TYPE:
        raise CheckpointLineError(f"not a checkpoint (no \"type\": \"{CHECKPOINT_TYPE}\")")
    if data.get("v") != CHECKPOINT_VERSION:
        raise CheckpointLineError(f"checkpoint version {data.get('v')!r} is not supported (expected 1)")
    missing = [f for f in _FIELDS if f not in data]
    if missing:
        raise CheckpointLineError(f"checkpoint lacks {', '.join(missing)}")
    extra = sorted(set(data) - set(_FIELDS))
    if extra:
        raise CheckpointLineError(f"checkpoint has unknown field(s) {', '.join(extra)}")
    try:
        seq, events = data["seq"], data["events"]
        if isinstance(seq, bool) or not isinstance(seq, int) or isinstance(events, bool) or not isinstance(events, int):
            raise ValueError("seq and events must be whole numbers")
        return SignedCheckpoint(deployment=_text(data, "deployment"), seq=seq, hash=_text(data, "hash"),
                                at=parse_time(_text(data, "at")), events=events, key_id=_text(data, "key"),
                                reason=_text(data, "reason"), signature=_text(data, "sig"))
    except ValueError as exc:
        raise CheckpointLineError(f"checkpoint has an invalid field ({exc})") from None


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def parse_witness(lines: Iterable[str]) -> list[tuple[int, SignedCheckpoint | CheckpointLineError]]:
    """Every non-blank, non-comment line with its number: a checkpoint or why it is not one."""
    result: list[tuple[int, SignedCheckpoint | CheckpointLineError]] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            result.append((number, parse_checkpoint_line(stripped)))
        except CheckpointLineError as exc:
            result.append((number, exc))
    return result
