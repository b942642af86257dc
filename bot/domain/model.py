"""Domain model: items, secrets, identities, access requests and audit events.

Everything here is a plain value. Secret values only ever live inside `Secret`,
whose `repr`/`str` never show them.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "ACTIVE_STATUSES",
    "CHAT_PLATFORMS",
    "FINAL_STATUSES",
    "OPEN_STATUSES",
    "SECRET_LANE",
    "AccessRequest",
    "Approval",
    "CodeView",
    "Effect",
    "EffectDraft",
    "EffectKind",
    "EffectOutcome",
    "EffectStatus",
    "Event",
    "EventDraft",
    "ExternalRef",
    "Identity",
    "Item",
    "RequestKind",
    "Reveal",
    "RotationDue",
    "SealedItem",
    "Secret",
    "Status",
    "TransitionDraft",
    "Window",
    "new_request_id",
]


class Secret:
    """A secret string that never shows itself in `repr`, `str`, f-strings or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The plain value: call only at the point it leaves for its rightful holder."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("Secret values are not picklable")


class Status(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


OPEN_STATUSES = frozenset({Status.PENDING, Status.APPROVED, Status.ACTIVE})
ACTIVE_STATUSES = frozenset({Status.ACTIVE})
FINAL_STATUSES = frozenset(set(Status) - OPEN_STATUSES)


class RequestKind(enum.StrEnum):
    ACCESS = "access"
    EXTENSION = "extension"


@dataclass(frozen=True)
class Identity:
    """Someone acting through a platform (`slack`, `teams`, `cli`, `system`)."""

    platform: str
    user_id: str
    display: str = ""
    # Groups the adapter resolved for this user (Slack user groups, Entra tenant, ...).
    groups: frozenset[str] = frozenset()
    # The platform's verified e-mail (lower case) when the adapter could look it up, else "": it makes
    # unlinked accounts on two platforms one person (policy `person_of`).
    email: str = ""

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.user_id}"

    @property
    def label(self) -> str:
        return self.display or self.user_id

    def same_person(self, other: Identity) -> bool:
        return self.platform == other.platform and self.user_id == other.user_id

    def to_dict(self) -> dict[str, str]:
        return {"platform": self.platform, "user_id": self.user_id, "display": self.display}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Identity:
        return cls(str(data["platform"]), str(data["user_id"]), str(data.get("display") or ""))


SYSTEM = Identity("system", "jitpass", "jitpass")


@dataclass(frozen=True)
class RotationDue:
    """The password was revealed and has not been rotated since."""

    since: datetime
    seen_by: tuple[Identity, ...]
    request_ids: tuple[str, ...] = ()


BUILTIN = "builtin"
ONEPASSWORD = "1password"


@dataclass(frozen=True)
class ExternalRef:
    """Where an item lives in an outside secret manager (1Password): ids and versions, never a secret."""

    vault_id: str
    item_id: str
    vault_title: str = ""
    version: int = 0
    # A keyed fingerprint of the password (`Vault.fingerprint`): it changes when the password does.
    revision: str = ""


@dataclass(frozen=True)
class Item:
    """Catalogue metadata of a credential; never the secret."""

    name: str
    vault: str
    username: str = ""
    url: str = ""
    notes: str = ""
    tags: tuple[str, ...] = ()
    has_password: bool = True
    has_totp: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    password_rotated_at: datetime | None = None
    rotation_due: RotationDue | None = None
    source: str = BUILTIN  # "builtin": sealed in this store; "1password": read from Connect when used
    category: str = ""
    external: ExternalRef | None = None


@dataclass(frozen=True)
class SealedItem:
    """An item as stored: metadata plus the envelope-encrypted secret payload."""

    item: Item
    key_id: str
    wrapped_key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)


@dataclass(frozen=True)
class Window:
    """When access is wanted: `start` None means "as soon as approved"."""

    duration: timedelta
    start: datetime | None = None

    @property
    def end(self) -> datetime | None:
        return None if self.start is None else self.start + self.duration


@dataclass(frozen=True)
class Approval:
    approver: Identity
    at: datetime


@dataclass(frozen=True)
class AccessRequest:
    """One request for one item, and the grant it becomes once approved."""

    id: str
    item: str
    vault: str
    requester: Identity
    reason: str
    window: Window
    status: Status
    created_at: datetime
    updated_at: datetime
    required_approvals: int = 1
    approvals: tuple[Approval, ...] = ()
    decided_by: Identity | None = None
    decided_at: datetime | None = None
    decline_reason: str = ""
    timeout_at: datetime | None = None
    starts_at: datetime | None = None  # when the grant became / becomes active
    ends_at: datetime | None = None  # when the grant ends (moves with approved extensions)
    ended_at: datetime | None = None
    ended_by: Identity | None = None  # who ended a grant early (None: the window ended, or not ended)
    revealed: bool = False  # the password was shown at least once
    kind: RequestKind = RequestKind.ACCESS
    parent_id: str | None = None  # for extensions: the grant being extended
    notes: tuple[str, ...] = ()  # policy notes shown on the card
    platform: str = ""
    refs: dict[str, Any] = field(default_factory=dict)  # adapter-owned message references
    refs_version: int = 0
    version: int = 0
    # The requester as a person (policy `[people]`; else the platform account key): one open request each.
    person: str = ""
    # The item was exclusive under the policy: while active, this grant holds the item alone.
    exclusive: bool = False

    @property
    def is_extension(self) -> bool:
        return self.kind is RequestKind.EXTENSION

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class CodeView:
    """The current TOTP code and how long it stays valid. Not stored, not audited as a value."""

    code: str
    seconds_left: int
    period: int = 30


@dataclass(frozen=True)
class Reveal:
    """What the holder of an active grant receives."""

    request_id: str
    item: Item
    password: Secret | None
    code: CodeView | None
    ends_at: datetime

    def __repr__(self) -> str:
        return f"Reveal(request_id={self.request_id!r}, item={self.item.name!r}, ends_at={self.ends_at!r})"


@dataclass(frozen=True)
class EventDraft:
    """An audit event before the store gives it a place in the chain."""

    type: str
    actor: Identity | None = None
    request_id: str | None = None
    item: str | None = None
    vault: str | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """A recorded audit event, hash-chained to the one before it."""

    seq: int
    id: str
    at: datetime
    type: str
    actor: Identity | None
    request_id: str | None
    item: str | None
    vault: str | None
    reason: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


# -- durable chat effects ----------------------------------------------------------------------------

# Platforms whose requests get chat effects (a CLI-made change on a Slack request still updates Slack).
CHAT_PLATFORMS = frozenset({"slack", "teams"})
# The lane of the secret's delivery and wipe. Workers claim it before every other lane: under a backlog, a
# password reaches its requester, and leaves chat at the end, before cards and messages are brought up to date.
SECRET_LANE = "secret"


class EffectKind(enum.StrEnum):
    """A chat effect a state change causes; carried out later, durably, by the effects worker."""

    POST_CARD = "post_card"  # the approval card to the leads channel
    UPDATE_CARD = "update_card"  # the card shows the request's current state
    DELIVER = "deliver"  # the secret to the requester (revealed at execution time, never stored)
    WIPE = "wipe"  # the delivered secret replaced by "access ended"
    TELL = "tell"  # a sentence to the requester (payload "message")

    @property
    def lane(self) -> str:
        """Effects of one request in one lane run in order: a wipe never overtakes its delivery."""
        return {"post_card": "card", "update_card": "card", "deliver": SECRET_LANE, "wipe": SECRET_LANE}.get(
            self.value, self.value)


class EffectStatus(enum.StrEnum):
    PENDING = "pending"  # due at `due_at` (a retry moves it)
    DONE = "done"
    FAILED = "failed"  # the retry budget is spent (a wipe raises an alert)
    DROPPED = "dropped"  # made pointless by a later effect or state (a superseded card update)


@dataclass(frozen=True)
class EffectDraft:
    """An effect before the store records it with the state change that causes it. Never a secret."""

    kind: EffectKind
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Effect:
    """A recorded chat effect; `attempts` counts claims (a worker that died mid-way counts too)."""

    id: str
    request_id: str
    platform: str
    kind: EffectKind
    payload: dict[str, Any]
    status: EffectStatus
    attempts: int
    due_at: datetime
    created_at: datetime
    error: str = ""
    lease_owner: str | None = None
    lease_until: datetime | None = None


@dataclass(frozen=True)
class EffectOutcome:
    """How an attempt ended, recorded in one unit of work: the effect row, its audit event, the
    request's refs / revealed flag, and follow-up effects (e.g. telling the requester delivery failed)."""

    status: EffectStatus
    error: str = ""
    retry_at: datetime | None = None  # with status PENDING: when to try again
    event: EventDraft | None = None
    refs: dict[str, Any] | None = None  # merged key by key into the request's refs
    revealed: bool = False  # the secret reached the requester (grant.delivered)
    follow_ups: tuple[EffectDraft, ...] = ()
    alert: EventDraft | None = None  # recorded right after `event` (a wipe that will not happen)


@dataclass(frozen=True)
class TransitionDraft:
    """One compare-and-set of a batch (`Store.transition_many`): the same fields as `Store.transition`."""

    request_id: str
    from_statuses: frozenset[Status]
    changes: dict[str, Any]
    event: EventDraft | None
    effects: tuple[EffectDraft, ...] = ()
    expected_version: int | None = None


_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def new_request_id() -> str:
    """Short, unambiguous, unguessable: `R-` and 8 characters without 0/O/1/I."""
    return "R-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
