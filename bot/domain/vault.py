"""Envelope encryption of item secrets, the master key ring, and key rotation.

Each item gets its own random 256-bit data key. The payload (password and TOTP seed) is
encrypted with that data key using AES-256-GCM; the data key is in turn encrypted ("wrapped")
by the active master key. Both ciphertexts carry associated data naming the item's vault and
name, so a record copied onto another item does not open. Rotating the master key only
re-wraps the small data keys; payload ciphertexts stay as they are.

Key ring text: one key per line, `<key id>:<base64 of 32 bytes>` (the id prefix is optional
and checked when present); blank lines and `#` comments are ignored; the LAST key is active.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bot.domain.errors import VaultError
from bot.domain.model import Item, SealedItem, Secret

__all__ = [
    "KEY_BYTES",
    "KeyRing",
    "MasterKey",
    "Vault",
    "format_key_line",
    "generate_key",
    "key_id_for",
    "load_key_ring",
    "parse_key_ring",
    "retire_key_lines",
]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_WRAPPED_KEY_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES
_KEY_ID_HEX = 12
_KEY_CHECK_PLAINTEXT = b"jitpass key check"
_KEY_CHECK_PREFIX = "v1"
_KEY_FILE_HEADER = (
    "# jitpass master key ring: one key per line, the LAST line is the active key.\n"
    "# Keep this file secret (mode 600) and backed up: without it nothing in the store opens.\n"
)


def key_id_for(key: bytes) -> str:
    """The public identifier of a master key: 12 hex digits of a domain-separated SHA-256."""
    return hashlib.sha256(b"jitpass-key-id" + key).hexdigest()[:_KEY_ID_HEX]


@dataclass(frozen=True)
class MasterKey:
    """A 32-byte AES-256 master key and its id; `repr` shows only the id."""

    key_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise VaultError(f"a master key must be {KEY_BYTES} bytes, not {len(self.key)}")
        if self.key_id != key_id_for(self.key):
            raise VaultError(f"master key id {self.key_id!r} does not match its key material")

    @classmethod
    def from_bytes(cls, key: bytes) -> MasterKey:
        """A master key for raw key bytes, with its id computed."""
        if len(key) != KEY_BYTES:
            raise VaultError(f"a master key must be {KEY_BYTES} bytes, not {len(key)}")
        return cls(key_id_for(key), key)


class KeyRing:
    """Master keys by id; the last one given is the active key used for new seals."""

    __slots__ = ("_by_id", "_keys")

    def __init__(self, keys: Sequence[MasterKey]) -> None:
        if not keys:
            raise VaultError("the master key ring is empty: at least one key is needed")
        self._keys = tuple(keys)
        self._by_id = {key.key_id: key for key in self._keys}

    @property
    def active(self) -> MasterKey:
        """The key new items and re-wrapped items are sealed with."""
        return self._keys[-1]

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of all keys, in ring order (active last), without duplicates."""
        return tuple(dict.fromkeys(key.key_id for key in self._keys))

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._by_id

    def __len__(self) -> int:
        return len(self.key_ids)

    def get(self, key_id: str) -> MasterKey:
        """The key with this id; VaultError if the ring does not hold it."""
        try:
            return self._by_id[key_id]
        except KeyError:
            raise VaultError(
                f"this item was sealed with master key {key_id}, which is not in the key ring; "
                f"add that key back (the ring has {', '.join(self.key_ids)})"
            ) from None

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={list(self.key_ids)!r}, active={self.active.key_id!r})"

    __str__ = __repr__


def generate_key() -> MasterKey:
    """A new random master key."""
    return MasterKey.from_bytes(secrets.token_bytes(KEY_BYTES))


def format_key_line(key: MasterKey) -> str:
    """One key-ring line: `<key id>:<urlsafe base64 key>`."""
    return f"{key.key_id}:{base64.urlsafe_b64encode(key.key).decode('ascii')}"


def parse_key_ring(text: str, *, source: str = "the key ring") -> KeyRing:
    """Parse key-ring text (see module docstring); errors never echo key material."""
    keys: list[MasterKey] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        # Several keys on one line (comma or space separated) make a single env var workable.
        for token in line.replace(",", " ").split():
            keys.append(_parse_key_token(token, f"{source}, line {line_no}"))
    if not keys:
        raise VaultError(f"no master key found in {source}: expected one base64-encoded 32-byte key per line")
    return KeyRing(keys)


def retire_key_lines(text: str, active_id: str, *, source: str = "the key ring") -> tuple[str, tuple[str, ...]]:
    """Key-ring text with every key but `active_id` removed; returns (text, retired ids).

    Comments, blank lines and the active key's line stay as they were; each retired key's line becomes a
    `# retired master key <id>` comment (the id only, never key material), so the file keeps its history.
    """
    out: list[str] = []
    retired: list[str] = []
    active_kept = False
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            out.append(raw)
            continue
        tokens = line.replace(",", " ").split()
        ids = [_parse_key_token(token, f"{source}, line {line_no}").key_id for token in tokens]
        kept = [token for token, key_id in zip(tokens, ids, strict=True) if key_id == active_id]
        for key_id in ids:
            if key_id != active_id and key_id not in retired:
                retired.append(key_id)
                out.append(f"# retired master key {key_id}")
        if kept:
            active_kept = True
            out.append(raw if len(kept) == len(tokens) else " ".join(kept))
    if not active_kept:
        raise VaultError(f"{source} does not hold the active key {active_id}: nothing was retired")
    return "\n".join(out) + "\n", tuple(retired)


def _parse_key_token(token: str, where: str) -> MasterKey:
    claimed_id, sep, encoded = token.rpartition(":")
    if not sep:
        claimed_id, encoded = "", token
    # Accept both alphabets and missing padding: keys get pasted from many tools.
    normalised = encoded.replace("-", "+").replace("_", "/")
    normalised += "=" * (-len(normalised) % 4)
    try:
        key = base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError):
        raise VaultError(f"{where}: the key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise VaultError(
            f"{where}: the key decodes to {len(key)} bytes; a master key is {KEY_BYTES} random bytes, "
            "base64-encoded"
        )
    master = MasterKey.from_bytes(key)
    if claimed_id and claimed_id.lower() != master.key_id:
        raise VaultError(
            f"{where}: the key id prefix {claimed_id!r} does not match the key (its id is "
            f"{master.key_id}); the line was damaged or edited"
        )
    return master


def load_key_ring(
    *, env_value: str | None, file_path: Path | None, create_if_missing: bool
) -> tuple[KeyRing, bool]:
    """The key ring from the environment value, else the key file; returns (ring, file_created)."""
    if env_value is not None and env_value.strip():
        return parse_key_ring(env_value, source="JITPASS_MASTER_KEY"), False
    if file_path is None:
        raise VaultError("no master key: set JITPASS_MASTER_KEY or JITPASS_MASTER_KEY_FILE")
    if not file_path.exists():
        if not create_if_missing:
            raise VaultError(f"master key file {file_path} does not exist")
        created = _create_key_file(file_path)
        if created:
            return _read_key_file(file_path), True
        # Another process created it between our check and our create: use theirs.
    return _read_key_file(file_path), False


def _create_key_file(path: Path) -> bool:
    """Write a new one-key ring to `path` with mode 0600; False if the file appeared meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = (_KEY_FILE_HEADER + format_key_line(generate_key()) + "\n").encode("ascii")
    try:
        # O_EXCL: never overwrite a key somebody else just wrote; 0o600 from the first byte,
        # not chmod after the fact, so the key is never readable by others even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise VaultError(f"cannot create master key file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise VaultError(f"cannot write master key file {path}: {exc.strerror}") from None
    return True


def _read_key_file(path: Path) -> KeyRing:
    try:
        mode = path.stat().st_mode
        # POSIX permission bits mean nothing useful on Windows.
        if os.name != "nt" and stat.S_IMODE(mode) & 0o077:
            raise VaultError(
                f"master key file {path} can be read by other users (mode {stat.S_IMODE(mode):o}); "
                f"run `chmod 600 {path}`"
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VaultError(f"cannot read master key file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise VaultError(f"master key file {path} is not a text file") from None
    return parse_key_ring(text, source=f"master key file {path}")


def _item_aad(item: Item) -> bytes:
    return f"jitpass:item:v1:{item.vault}/{item.name}".encode()


def _wrap_aad(key_id: str, item: Item) -> bytes:
    return f"jitpass:key:v1:{key_id}:{item.vault}/{item.name}".encode()


def _key_check_aad(key_id: str) -> bytes:
    return f"jitpass:key-check:v1:{key_id}".encode()


def _cannot_decrypt(item: Item) -> VaultError:
    return VaultError(
        f"cannot decrypt item {item.name!r}: the master key does not match the one it was sealed with, "
        "or the record was tampered with or moved to another item"
    )


class Vault:
    """Seals and opens item secrets with the master keys of a `KeyRing`."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    @property
    def ring(self) -> KeyRing:
        """The key ring this vault uses."""
        return self._ring

    @property
    def active_key_id(self) -> str:
        """Id of the key new seals use."""
        return self._ring.active.key_id

    def __repr__(self) -> str:
        return f"Vault({self._ring!r})"

    def seal(self, item: Item, password: Secret | None, totp_seed: Secret | None) -> SealedItem:
        """Encrypt the secrets under a fresh data key wrapped by the active master key."""
        # The stored flags must agree with what the payload holds, whatever the caller passed.
        item = replace(item, has_password=password is not None, has_totp=totp_seed is not None)
        payload = json.dumps(
            {
                "password": None if password is None else password.reveal(),
                "totp_seed": None if totp_seed is None else totp_seed.reveal(),
            }
        ).encode("utf-8")
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, payload, _item_aad(item))
        master = self._ring.active
        return SealedItem(
            item=item,
            key_id=master.key_id,
            wrapped_key=_wrap(master, data_key, item),
            nonce=nonce,
            ciphertext=ciphertext,
        )

    def open(self, sealed: SealedItem) -> tuple[Secret | None, Secret | None]:
        """Decrypt an item: (password, totp_seed)."""
        data_key = self._unwrap(sealed)
        try:
            plain = AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, _item_aad(sealed.item))
        except (InvalidTag, ValueError):
            raise _cannot_decrypt(sealed.item) from None
        try:
            payload = json.loads(plain.decode("utf-8"))
            password, totp_seed = payload["password"], payload["totp_seed"]
        except (ValueError, KeyError, TypeError):
            # Authenticated but unreadable: written by something that is not this vault.
            raise VaultError(f"item {sealed.item.name!r} holds a payload this version cannot read") from None
        return _secret_or_none(password), _secret_or_none(totp_seed)

    def rewrap(self, sealed: SealedItem) -> SealedItem:
        """The same item with its data key wrapped by the active key (payload unchanged)."""
        master = self._ring.active
        if sealed.key_id == master.key_id:
            return sealed
        data_key = self._unwrap(sealed)
        return replace(sealed, key_id=master.key_id, wrapped_key=_wrap(master, data_key, sealed.item))

    def reseal(self, sealed: SealedItem, item: Item) -> SealedItem:
        """Seal the secrets again for new metadata (rename, vault move): the AAD changes."""
        password, totp_seed = self.open(sealed)
        return self.seal(item, password, totp_seed)

    def fingerprint(self, value: Secret) -> str:
        """`v1:<key id>:<hex>`: an HMAC of the value under a key derived from the active master key.

        Tells whether an outside secret (a 1Password password) changed without keeping it: without the
        master key the fingerprint cannot be tested against guesses."""
        master = self._ring.active
        derived = hmac.new(master.key, b"jitpass-fingerprint-v1", hashlib.sha256).digest()
        digest = hmac.new(derived, value.reveal().encode("utf-8"), hashlib.sha256).hexdigest()[:32]
        return f"v1:{master.key_id}:{digest}"

    def key_check(self) -> str:
        """A token the store keeps so a later start can tell whether it has the right key."""
        master = self._ring.active
        nonce = os.urandom(NONCE_BYTES)
        box = AESGCM(master.key).encrypt(nonce, _KEY_CHECK_PLAINTEXT, _key_check_aad(master.key_id))
        encoded = base64.urlsafe_b64encode(nonce + box).decode("ascii")
        return f"{_KEY_CHECK_PREFIX}:{master.key_id}:{encoded}"

    def verify_key_check(self, token: str) -> None:
        """Raise VaultError unless a key in the ring opens the store's key-check token."""
        version, _, rest = token.partition(":")
        key_id, _, encoded = rest.partition(":")
        if version != _KEY_CHECK_PREFIX or not key_id or not encoded:
            raise VaultError("the store's key check record is malformed; the store metadata was edited")
        if key_id not in self._ring:
            raise VaultError(
                f"the master key does not match this store (it was set up with key {key_id}; "
                f"the key ring has {', '.join(self._ring.key_ids)}). "
                "Check JITPASS_MASTER_KEY / JITPASS_MASTER_KEY_FILE"
            )
        try:
            blob = base64.urlsafe_b64decode(encoded.encode("ascii"))
            opened = AESGCM(self._ring.get(key_id).key).decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], _key_check_aad(key_id)
            )
        except (InvalidTag, ValueError, binascii.Error):
            opened = b""
        if opened != _KEY_CHECK_PLAINTEXT:
            raise VaultError(
                f"the master key does not match this store: key {key_id} in the ring does not open the "
                "store's key check (the key line or the store metadata was altered)"
            )

    def _unwrap(self, sealed: SealedItem) -> bytes:
        master = self._ring.get(sealed.key_id)
        if len(sealed.wrapped_key) != _WRAPPED_KEY_BYTES or len(sealed.nonce) != NONCE_BYTES:
            raise _cannot_decrypt(sealed.item)
        nonce, boxed = sealed.wrapped_key[:NONCE_BYTES], sealed.wrapped_key[NONCE_BYTES:]
        try:
            return AESGCM(master.key).decrypt(nonce, boxed, _wrap_aad(master.key_id, sealed.item))
        except InvalidTag:
            raise _cannot_decrypt(sealed.item) from None


def _wrap(master: MasterKey, data_key: bytes, item: Item) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master.key).encrypt(nonce, data_key, _wrap_aad(master.key_id, item))


def _secret_or_none(value: object) -> Secret | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise VaultError("an item payload holds a value of the wrong type")
    return Secret(value)
