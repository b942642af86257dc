"""What a report asks the store for and the figures the store returns (both stores fill these)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


# -- thresholds and shapes (stores import these, so both compute the same thing) ----------------

DEFAULT_PERIOD = "30d"
# "The same requester hitting many customers": this many distinct vaults requested within the window.
BURST_MIN_VAULTS = 3
BURST_WINDOW = timedelta(hours=1)
# How far before the period a grant may have started and still count (clipped) towards granted time.
# Grants ending inside the period are always exact; only grants longer than this that span the whole
# period would be missed.
GRANT_LOOKBACK = timedelta(days=30)
# Anomaly lists keep at most this many rows (newest first); their totals are always exact.
LIST_LIMIT = 100
# Age buckets of the retention section: (label, from days, to days).
AGE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("<30d", 0, 30), ("30-90d", 30, 90), ("90-365d", 90, 365), (">365d", 365, None),
)
# Approval-latency histogram: (label, upper bound in seconds, exclusive; None = no bound).
LATENCY_BUCKETS: tuple[tuple[str, float | None], ...] = (
    ("<1m", 60.0), ("1-5m", 300.0), ("5-15m", 900.0), ("15-60m", 3600.0), ("1-4h", 14400.0), (">4h", None),
)
# The steps a store reports, in order, through `progress` while it computes `report_data`.
REPORT_STEPS = ("requests", "summaries", "latency", "timeline", "anomalies", "exposure")
# Decisions that end a pending request (a request with none of these before the period's end is pending).
CLOSING_TYPES = ("request.approved", "request.declined", "request.cancelled", "request.timed_out")
# The outcomes of durable chat effects a report reads: a failure counts unless a later success of the same
# effect follows it in the period (a reveal after a failed delivery, a wipe after a failed one).
EFFECT_FAILURE_TYPES = ("grant.delivery_failed", "grant.wipe_failed", "chat.effect_failed")
EFFECT_SUCCESS_TYPES = ("grant.revealed", "grant.wiped")
FORMATS = ("table", "csv", "json", "html")

ProgressCallback = Callable[[str], None]


@dataclass(frozen=True)
class ChatReport:
    """What a chat adapter posts for `report …`: a short summary plus two files to attach."""

    summary: str
    csv: bytes
    html: bytes
    csv_filename: str
    html_filename: str


# -- what a report is asked for ----------------------------------------------------------------


@dataclass(frozen=True)
class UserFilter:
    """A person by user id, on one platform or any (`slack:U123` or `U123`)."""

    user_id: str
    platform: str | None = None

    @classmethod
    def parse(cls, text: str) -> UserFilter:
        platform, sep, user_id = text.strip().partition(":")
        if sep and platform in {"slack", "teams", "cli", "system"} and user_id:
            return cls(user_id=user_id, platform=platform)
        return cls(user_id=text.strip())

    def matches(self, key: str) -> bool:
        platform, _, user_id = key.partition(":")
        return user_id == self.user_id and (self.platform is None or platform == self.platform)

    def __str__(self) -> str:
        return f"{self.platform}:{self.user_id}" if self.platform else self.user_id


@dataclass(frozen=True)
class ReportQuery:
    """The period, filters and policy facts a store needs to aggregate the trail."""

    since: datetime
    until: datetime
    now: datetime
    vault: str | None = None
    item: str | None = None
    user: UserFilter | None = None
    timezone: str = "UTC"
    # Working hours, as UTC intervals covering the period (what SQLite compares against) ...
    working_intervals: tuple[tuple[datetime, datetime], ...] = ()
    # ... and as local rules (what MongoDB evaluates with its own time-zone support). Monday = 0.
    work_days: frozenset[int] = frozenset(range(5))
    work_start_seconds: int = 8 * 3600
    work_end_seconds: int = 18 * 3600
    # Requests whose reveals left a password due for rotation: the store says when each was seen.
    exposed_requests: tuple[str, ...] = ()
    # [people]: accounts ("slack:U1") linked to one person ("person:ann"). Stores group by the person, so a
    # person with a Slack and a Teams account is one row; an account not listed is its own person.
    people: tuple[tuple[str, str], ...] = ()

    def persons_of_user(self) -> tuple[str, ...]:
        """The person keys whose linked accounts the user filter names."""
        user = self.user
        return tuple(sorted({person for account, person in self.people if user is not None and user.matches(account)}))

    def names_account(self, key: str) -> bool:
        """The user filter names this account ("platform:user_id"), itself or through its person."""
        return self.user is not None and (self.user.matches(key) or key in self.accounts_of_user())

    def accounts_of_user(self) -> tuple[str, ...]:
        """Every account linked to a person the user filter names (the filter covers the whole person)."""
        persons = set(self.persons_of_user())
        return tuple(sorted(account for account, person in self.people if person in persons))

    @property
    def open_end(self) -> datetime:
        """Where a grant without an end event stops counting: now, or the period's end if earlier."""
        return min(self.now, self.until)


# -- what the store returns --------------------------------------------------------------------


@dataclass(frozen=True)
class AccessRow:
    """Access figures for one item, vault, requester or approver (or the whole period: `total`)."""

    dimension: str  # total | item | vault | requester | approver
    key: str  # item name, vault name, or person key "platform:user_id"
    label: str = ""  # a person's display name
    vault: str = ""  # for item rows
    requests: int = 0
    approved: int = 0
    declined: int = 0
    timed_out: int = 0
    cancelled: int = 0
    reveals: int = 0
    code_views: int = 0
    granted_seconds: float = 0.0


@dataclass(frozen=True)
class LatencyStats:
    """request.created -> request.approved, over requests approved in the period (nearest-rank)."""

    approved: int = 0
    median_seconds: float | None = None
    p95_seconds: float | None = None


@dataclass(frozen=True)
class LatencyBucket:
    label: str
    count: int


@dataclass(frozen=True)
class ApproverLoad:
    """How much deciding one approver did, and how fast their final approvals came."""

    key: str
    label: str
    approvals: int  # request.approval_added + request.approved by them
    declines: int
    median_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True)
class TimelinePoint:
    day: date  # UTC
    requests: int
    approved: int
    reveals: int
    code_views: int


@dataclass(frozen=True)
class UnrevealedGrant:
    request_id: str
    item: str
    vault: str
    requester: str
    requester_label: str
    activated_at: datetime
    ended_at: datetime | None  # None: still active at the end of the period


@dataclass(frozen=True)
class PendingRequest:
    """A request still waiting for a decision at the end of the period (no approve/decline/cancel/timeout)."""

    request_id: str
    item: str
    vault: str
    requester: str
    requester_label: str
    created_at: datetime
    reason: str
    approvals: int  # approvals given so far (N of M)


@dataclass(frozen=True)
class DeliveryFailure:
    """A durable chat effect of one request that failed in the period and had not succeeded by its end."""

    request_id: str
    item: str
    vault: str
    requester: str
    requester_label: str
    effect: str  # delivery | wipe | post_card | update_card | tell
    state: str  # failed: retry budget spent or refused for good; retrying: still being retried at the end
    attempts: int  # of the last failure
    error: str  # the platform's error code (never a payload)
    failures: int  # failed attempts recorded in the period
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class FailureCount:
    effect: str
    state: str
    count: int


@dataclass(frozen=True)
class OffHoursReveal:
    at: datetime
    request_id: str
    item: str
    vault: str
    requester: str
    requester_label: str


@dataclass(frozen=True)
class PersonCount:
    key: str
    label: str
    count: int


@dataclass(frozen=True)
class VaultBurst:
    """A requester who asked for items in BURST_MIN_VAULTS or more vaults within BURST_WINDOW."""

    requester: str
    requester_label: str
    max_vaults: int  # most distinct vaults in any one window
    at: datetime  # the request that first reached max_vaults
    vaults: tuple[str, ...]  # the vaults of that window, sorted
    flagged_requests: int  # requests that completed a window of >= BURST_MIN_VAULTS vaults


@dataclass(frozen=True)
class Refusal:
    """access.refused events of one actor for one reason."""

    actor: str
    actor_label: str
    reason: str
    count: int
    first_at: datetime
    last_at: datetime

    @property
    def self_approval(self) -> bool:
        return self.reason.startswith("self-")


@dataclass(frozen=True)
class SharedUse:
    """An item whose grants overlapped in time: more than one holder at once."""

    item: str
    vault: str
    overlaps: int  # grants that started while an earlier grant of the item was still running
    first_at: datetime  # start of the first overlapping grant
    requesters: tuple[str, ...]  # labels of everyone in an overlapping grant, sorted


@dataclass(frozen=True)
class ExposureReveal:
    """When one exposed request's holder saw the password (from the trail)."""

    request_id: str
    person: str
    label: str
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class ReportData:
    """Everything a store aggregates for one `ReportQuery`."""

    totals: AccessRow = field(default_factory=lambda: AccessRow("total", "all"))
    by_item: tuple[AccessRow, ...] = ()
    by_vault: tuple[AccessRow, ...] = ()
    by_requester: tuple[AccessRow, ...] = ()
    by_approver: tuple[AccessRow, ...] = ()
    latency: LatencyStats = field(default_factory=LatencyStats)
    latency_buckets: tuple[LatencyBucket, ...] = ()
    approver_load: tuple[ApproverLoad, ...] = ()
    timeline: tuple[TimelinePoint, ...] = ()
    unrevealed_total: int = 0
    unrevealed: tuple[UnrevealedGrant, ...] = ()
    pending_total: int = 0
    pending: tuple[PendingRequest, ...] = ()  # oldest first, at most LIST_LIMIT
    delivery_failure_counts: tuple[FailureCount, ...] = ()  # exact, per (effect, state), sorted
    delivery_failures: tuple[DeliveryFailure, ...] = ()  # newest first, at most LIST_LIMIT
    off_hours_total: int = 0
    off_hours_by_person: tuple[PersonCount, ...] = ()
    off_hours: tuple[OffHoursReveal, ...] = ()
    bursts: tuple[VaultBurst, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    shared_use: tuple[SharedUse, ...] = ()
    accessed_items: frozenset[str] = frozenset()
    exposure_reveals: tuple[ExposureReveal, ...] = ()

    @property
    def delivery_failures_total(self) -> int:
        """Every failed effect of the period (all kinds, failed for good or still retrying)."""
        return sum(c.count for c in self.delivery_failure_counts)

    def failures(self, effect: str, state: str | None = None) -> int:
        """Failed effects of one kind (`delivery`, `wipe`, ...), in one state or both."""
        return sum(c.count for c in self.delivery_failure_counts
                   if c.effect == effect and (state is None or c.state == state))


# -- sections assembled here -------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowUse:
    """A served 1Password item used directly in 1Password by someone with no active grant for it."""

    at: datetime
    item: str
    vault: str
    email: str
    name: str
    action: str


@dataclass(frozen=True)
class UnusedItem:
    item: str
    vault: str


@dataclass(frozen=True)
class ExposureRow:
    """An item revealed and not rotated since: who saw it, and when."""

    item: str
    vault: str
    since: datetime
    seen_by: tuple[str, ...]
    request_ids: tuple[str, ...]
    sightings: tuple[ExposureReveal, ...]

    def days(self, now: datetime) -> float:
        return round((now - self.since).total_seconds() / 86400, 1)


@dataclass(frozen=True)
class AgeBucket:
    label: str
    count: int


@dataclass(frozen=True)
class ChainStatus:
    verified: bool  # False: not checked (--no-verify)
    ok: bool | None = None
    checked: int = 0
    last_seq: int = 0
    from_checkpoint: int | None = None  # the chain was verified from this purge checkpoint
    first_broken_seq: int | None = None
    problem: str = ""


@dataclass(frozen=True)
class AuditTrust:
    """What vouches for the chain beyond itself: its latest signed checkpoint, a witness, the SIEM sinks."""

    checkpoint: str  # e.g. "seq 120 signed 2026-12-02T16:40:01.123456Z (interval), key b68a…", or "none yet"
    witness: str  # what the witness file says about the trail
    witness_ok: bool | None = None  # None: no witness configured
    siem: tuple[str, ...] = ()  # one line per sink: cursor, lag, failures


@dataclass(frozen=True)
class RetentionSummary:
    total_events: int
    buckets: tuple[AgeBucket, ...]
    oldest_at: datetime | None
    keep_days: int | None
    legal_hold: bool
    next_purge_at: datetime | None  # None: nothing is ever purged (keep forever or legal hold)
    purge_cutoff: datetime | None  # the next purge deletes events older than this
    would_purge: int
    checkpoint_seq: int | None
    checkpoint_at: datetime | None
    chain: ChainStatus


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    since: datetime
    until: datetime
    timezone: str
    store: str
    vault: str | None
    item: str | None
    user: str | None
    data: ReportData
    unused_items: tuple[UnusedItem, ...]
    exposure: tuple[ExposureRow, ...]
    retention: RetentionSummary
    shadow_access: tuple[ShadowUse, ...] = ()  # from access.shadow events (1Password Events API)
    trust: AuditTrust | None = None  # signed checkpoint, witness and SIEM state (CLI reports)

    @property
    def filters(self) -> dict[str, str]:
        return {k: v for k, v in (("vault", self.vault), ("item", self.item), ("user", self.user)) if v}
