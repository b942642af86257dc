"""The loaded access policy and the pure decisions made over it: who approves, which limits apply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.domain.model import Identity

__all__ = ["AuditPolicy", "Limits", "Members", "OnePasswordPolicy", "OnePasswordVault", "Policy", "RateLimit",
           "RateLimits", "Retention", "VaultPolicy", "WorkingHours"]


@dataclass(frozen=True)
class Members:
    """People by platform: user ids and (for Slack) user-group ids."""

    users: Mapping[str, frozenset[str]] = field(default_factory=dict)
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def includes(self, who: Identity) -> bool:
        if who.user_id in self.users.get(who.platform, frozenset()):
            return True
        return bool(who.groups & self.groups.get(who.platform, frozenset()))

    def is_empty(self) -> bool:
        return not any(self.users.values()) and not any(self.groups.values())

    def group_ids(self, platform: str) -> frozenset[str]:
        return self.groups.get(platform, frozenset())


@dataclass(frozen=True)
class Limits:
    default_duration: timedelta = timedelta(hours=1)
    min_duration: timedelta = timedelta(minutes=5)
    max_duration: timedelta = timedelta(hours=8)
    request_timeout: timedelta = timedelta(minutes=30)
    approvals_required: int = 1
    min_reason_length: int = 8
    exclusive: bool = False


@dataclass(frozen=True)
class RateLimit:
    """At most `count` in any `per`."""

    count: int
    per: timedelta

    def __str__(self) -> str:
        minutes = int(self.per.total_seconds() // 60)
        return f"{self.count} per {minutes // 60}h" if minutes % 60 == 0 else f"{self.count} per {minutes}m"


@dataclass(frozen=True)
class RateLimits:
    """Per person (all their linked accounts together), `[rate_limits]` in the policy."""

    requests: RateLimit = RateLimit(10, timedelta(hours=1))  # access requests and extensions: approval cards
    codes: RateLimit = RateLimit(30, timedelta(minutes=10))  # New code presses and live-code views
    reports: RateLimit = RateLimit(10, timedelta(hours=1))  # chat reports

    def of(self, action: str) -> RateLimit:
        limit: RateLimit = getattr(self, action)
        return limit


@dataclass(frozen=True)
class VaultPolicy:
    name: str
    description: str = ""
    approvers: Members = field(default_factory=Members)
    leads_channels: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    exclusive_items: frozenset[str] = frozenset()

    def is_exclusive(self, item: str) -> bool:
        return self.limits.exclusive or item in self.exclusive_items


@dataclass(frozen=True)
class WorkingHours:
    start: time = time(8, 0)
    end: time = time(18, 0)
    days: frozenset[int] = frozenset(range(5))  # Monday=0

    def contains(self, local: datetime) -> bool:
        return local.weekday() in self.days and self.start <= local.time() < self.end


@dataclass(frozen=True)
class Retention:
    keep_days: int | None = None  # None: keep forever
    legal_hold: bool = False
    purge_at: time = time(3, 30)

    def cutoff(self, now: datetime) -> datetime | None:
        """Events older than this may be purged (None when nothing may be)."""
        if self.keep_days is None or self.legal_hold:
            return None
        return now - timedelta(days=self.keep_days)


@dataclass(frozen=True)
class OnePasswordVault:
    """One served 1Password vault: `key` is its name (or 26-character id) in 1Password, `vault` the
    jitpass vault (customer) whose approvers and limits apply, `prefix` put before its item names."""

    key: str
    vault: str
    prefix: str = ""


@dataclass(frozen=True)
class OnePasswordPolicy:
    """Which 1Password vaults jitpass serves, how often it syncs, and who is who by e-mail."""

    vaults: tuple[OnePasswordVault, ...] = ()
    sync_every: timedelta = timedelta(minutes=5)
    events_every: timedelta = timedelta(minutes=1)
    # 1Password account e-mail (lower case) -> chat identities ("slack:U123", "teams:<aad object id>").
    people: Mapping[str, frozenset[str]] = field(default_factory=dict)
    notify_leads: bool = True

    def mapping_for(self, vault_id: str, vault_title: str) -> OnePasswordVault | None:
        """The mapping naming this vault by id, else by name."""
        by_id = next((v for v in self.vaults if v.key == vault_id), None)
        return by_id or next((v for v in self.vaults if v.key == vault_title), None)

    def is_person(self, email: str, who: Identity) -> bool:
        """Whether the 1Password user with this e-mail is `who` (the policy says so, or the ids are the e-mail)."""
        email = email.lower()
        return who.key in self.people.get(email, frozenset()) or who.user_id.lower() == email


@dataclass(frozen=True)
class AuditPolicy:
    """`[audit]`: how often the chain head is signed, and the chat channels that witness it."""

    checkpoint_every_events: int = 100
    checkpoint_every: timedelta = timedelta(minutes=10)
    witness_channels: Mapping[str, str] = field(default_factory=dict)  # platform -> channel id


@dataclass(frozen=True)
class Policy:
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    defaults: VaultPolicy = field(default_factory=lambda: VaultPolicy(name="*"))
    vaults: Mapping[str, VaultPolicy] = field(default_factory=dict)
    admins: Members = field(default_factory=Members)
    working_hours: WorkingHours = field(default_factory=WorkingHours)
    retention: Retention = field(default_factory=Retention)
    onepassword: OnePasswordPolicy = field(default_factory=OnePasswordPolicy)
    audit: AuditPolicy = field(default_factory=AuditPolicy)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    # Platform account ("slack:U123", "teams:<Entra object id>") -> the person's name ([people], e-mail links).
    people: Mapping[str, str] = field(default_factory=dict)
    # Verified e-mail (lower case) -> the `[people]` entry naming it (`email = "…"`).
    people_emails: Mapping[str, str] = field(default_factory=dict)

    def person_of(self, who: Identity) -> str:
        """The person behind an account: `person:<name>` when the policy links it (by account or by the
        account's verified e-mail), `email:<address>` for an unlinked account with a verified e-mail, else
        the account key."""
        name = self.people.get(who.key) or (self.people_emails.get(who.email) if who.email else None)
        if name:
            return f"person:{name}"
        return f"email:{who.email}" if who.email else who.key

    def same_person(self, one: Identity, other: Identity) -> bool:
        """One person, whichever platform each account is on."""
        return one.same_person(other) or self.person_of(one) == self.person_of(other)

    def accounts_of(self, who: Identity) -> tuple[Identity, ...]:
        """`who` and the person's linked accounts on other platforms (without their groups)."""
        name = self.people.get(who.key) or (self.people_emails.get(who.email) if who.email else None)
        if name is None:
            return (who,)
        linked = (k for k, n in self.people.items() if n == name and k != who.key)
        return (who, *(Identity(k.partition(":")[0], k.partition(":")[2]) for k in sorted(linked)))

    def for_vault(self, vault: str) -> VaultPolicy:
        """The vault's own policy, or the defaults for a vault the file does not name."""
        return self.vaults.get(vault) or VaultPolicy(
            name=vault,
            approvers=self.defaults.approvers,
            leads_channels=self.defaults.leads_channels,
            limits=self.defaults.limits,
        )

    def is_approver(self, vault: str, who: Identity) -> bool:
        """An approver through any of the person's linked accounts."""
        approvers = self.for_vault(vault).approvers
        return any(approvers.includes(account) for account in self.accounts_of(who))

    def is_admin(self, who: Identity) -> bool:
        return any(self.admins.includes(account) for account in self.accounts_of(who))

    def leads_channel(self, vault: str, platform: str) -> str | None:
        return self.for_vault(vault).leads_channels.get(platform) or self.defaults.leads_channels.get(platform)

    def in_working_hours(self, at: datetime) -> bool:
        return self.working_hours.contains(at.astimezone(self.timezone))

    def approver_group_ids(self, platform: str) -> frozenset[str]:
        """Every group id named anywhere as approvers or admins on `platform` (adapters resolve these)."""
        ids = set(self.defaults.approvers.group_ids(platform)) | set(self.admins.group_ids(platform))
        for vault in self.vaults.values():
            ids |= vault.approvers.group_ids(platform)
        return frozenset(ids)
