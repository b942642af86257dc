"""Protocols the core needs from the outside world: a store, a clock, and one notifier per chat platform."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bot.domain.model import (
    AccessRequest,
    CodeView,
    Effect,
    EffectDraft,
    EffectOutcome,
    Event,
    EventDraft,
    Identity,
    Item,
    RequestKind,
    Reveal,
    SealedItem,
    Secret,
    Status,
    TransitionDraft,
)
from bot.domain.policy import Policy
from bot.domain.report_data import ChatReport
from bot.domain.request_text import RequestDraft

if TYPE_CHECKING:
    from bot.domain.audit_signing import SignedCheckpoint
    from bot.domain.report_data import ProgressCallback, ReportData, ReportQuery

__all__ = [
    "QUIET",
    "ChatAccess",
    "ChatAdapter",
    "ChatCore",
    "ChatMetrics",
    "ChatReports",
    "Checkpoint",
    "ClaimBatch",
    "Claimed",
    "Clock",
    "EffectLease",
    "Failed",
    "ItemFeed",
    "ItemUsage",
    "NoMetrics",
    "Notifier",
    "NotifyResult",
    "PurgeResult",
    "RateTake",
    "RefusalBurst",
    "ReportSource",
    "SecretRead",
    "SecretSource",
    "Sent",
    "SiemRecord",
    "SiemSink",
    "SinkError",
    "SourceItem",
    "SourceSummary",
    "SourceVault",
    "Store",
    "SystemClock",
    "Tracker",
    "UsageFeed",
    "UsagePage",
    "Witness",
]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class Checkpoint:
    """Where the retained audit chain starts after a purge."""

    seq: int  # last purged sequence number
    hash: str  # its hash: the first retained event's prev_hash
    at: datetime


@dataclass(frozen=True)
class PurgeResult:
    purged: int
    checkpoint: Checkpoint | None


@dataclass(frozen=True)
class RefusalBurst:
    """Rate-limit refusals of one key in a row: who was refused first, how many, from when to when."""

    key: str
    actor: Identity
    refused: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class EffectLease:
    """Effects leased as they are written (`Store.create_request`), as a claim by `owner` would lease them at
    that moment: those of `platforms`, the first of each lane, attempt 1, until `until`. The writer's own
    worker then runs them at once, without a claim (one store round trip less per request); if it dies, the
    lease runs out and any worker claims them, as after any claim."""

    owner: str
    until: datetime
    platforms: frozenset[str]


@dataclass(frozen=True)
class Claimed:
    """A leased effect with the rows running it reads, from the claim itself (`Store.claim_effects_with_rows`):
    its request and its item's metadata (no secret), each None when gone."""

    effect: Effect
    request: AccessRequest | None
    item: Item | None


@dataclass(frozen=True)
class ClaimBatch:
    """What one claim leased, and when to look again.

    `next_at` (only when fewer than `limit` were leased, else None: claim again at once): when the earliest
    pending effect becomes due or its lease ends, read right after the claim (None: nothing pending). A store
    may leave out effects waiting behind another pending one in their lane (claimable only once it ends)."""

    claimed: list[Claimed]
    next_at: datetime | None = None


@dataclass(frozen=True)
class RateTake:
    """One attempt counted against a rate limit (`Store.take_rate_token`).

    Granted: `ended` is the burst of refusals this attempt ended, if any (each burst is returned once,
    by whichever process ends it). Refused: `retry_at` is when the next attempt can be granted and
    `refused` how many attempts in a row this key has been refused, this one included (1: the first)."""

    granted: bool
    retry_at: datetime | None = None
    refused: int = 0
    ended: RefusalBurst | None = None


@runtime_checkable
class ReportSource(Protocol):
    """What a report reads: the store's aggregates, the catalogue and the trail (every Store is one)."""

    kind: str  # "sqlite" | "mongodb"

    async def report_data(self, query: ReportQuery, progress: ProgressCallback | None = None) -> ReportData:
        """Every figure of an access report, aggregated inside the store (SQL / aggregation pipelines);
        `progress(step)` after each of REPORT_STEPS."""
        ...

    async def check_report_tables(self) -> str:
        """Summary tables kept for reports checked against the trail ("" when they agree or there are none)."""
        ...

    async def list_items(self) -> list[Item]:
        """Every item's metadata, sorted by name."""
        ...

    def events(
        self,
        *,
        after_seq: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[Event]:
        """Events in sequence order."""
        ...

    async def count_events(self, *, before: datetime | None = None) -> int: ...

    async def checkpoint(self) -> Checkpoint | None:
        """The chain's starting point after a purge, or None if nothing was ever purged."""
        ...


@runtime_checkable
class Store(ReportSource, Protocol):
    """Persistence for items, requests and the audit trail.

    Writes that change a request are compare-and-set on its status and record their audit
    event in the same unit of work: either both happen or neither does.
    """

    async def open(self) -> None:
        """Connect, create or migrate the schema / indexes. Raises StoreError on a corrupted store."""
        ...

    async def close(self) -> None: ...

    async def describe(self) -> dict[str, Any]:
        """`{"kind": ..., "schema_version": ..., ...}` for health checks."""
        ...

    async def check_write(self, timeout: float) -> None:
        """Write a health mark within `timeout` seconds, never queued behind this process's own writes.

        Raises StoreError when the store cannot take a write in time."""
        ...

    # -- key/value metadata (key check, checkpoints) -------------------------------------------
    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...

    # -- items ---------------------------------------------------------------------------------
    async def add_items(self, sealed: Sequence[SealedItem], events: Sequence[EventDraft]) -> None:
        """Insert all items and their events, or none: Conflict if any name exists."""
        ...

    async def replace_item(self, sealed: SealedItem, event: EventDraft | None) -> None:
        """Overwrite an existing item (metadata and ciphertext). NotFound if absent."""
        ...

    async def rewrap_items(self, sealed: Sequence[SealedItem], event: EventDraft) -> None:
        """Replace key material of many items at once (key rotation), all or nothing."""
        ...

    async def remove_item(self, name: str, event: EventDraft) -> None:
        """Delete an item. NotFound if absent."""
        ...

    async def get_item(self, name: str) -> SealedItem | None: ...

    async def list_sealed_items(self) -> list[SealedItem]: ...

    # -- requests ------------------------------------------------------------------------------
    async def create_request(self, request: AccessRequest, event: EventDraft,
                             effects: Sequence[EffectDraft] = (), *, lease: EffectLease | None = None) -> list[Effect]:
        """Insert the request, its event and its chat effects in one unit of work; the effects `lease` leased
        ([] without one)."""
        ...

    async def get_request(self, request_id: str) -> AccessRequest | None: ...

    async def find_requests(
        self,
        *,
        requester: Identity | None = None,
        statuses: Collection[Status] | None = None,
        item: str | None = None,
        parent_id: str | None = None,
        parent_ids: Collection[str] | None = None,
        kind: RequestKind | None = None,
        limit: int | None = None,
    ) -> list[AccessRequest]:
        """Requests matching every given filter, newest first (`parent_ids`: the extensions of any of these)."""
        ...

    async def transition(
        self,
        request_id: str,
        from_statuses: Collection[Status],
        changes: Mapping[str, Any],
        event: EventDraft | None,
        *,
        expected_version: int | None = None,
        effects: Sequence[EffectDraft] = (),
    ) -> AccessRequest | None:
        """Apply `changes` (AccessRequest field names) if the request is in one of `from_statuses`
        (and at `expected_version` when given); bump `version`; append `event` in the same unit of
        work, with `effects` (a new UPDATE_CARD drops the request's unclaimed older ones). Returns the
        updated request, or None when the compare failed (nothing written)."""
        ...

    async def transition_many(self, drafts: Sequence[TransitionDraft]) -> list[AccessRequest | None]:
        """`transition` for each draft, all in ONE unit of work (their events appended in order): the
        scheduler ends a burst of grants in one write. One result per draft, None where its compare
        failed. For changes that take no claim (ends of grants, timeouts): a ClaimTaken aborts the batch."""
        ...

    async def save_refs(self, request_id: str, refs: Mapping[str, Any], expected_version: int) -> bool:
        """Replace the adapter's refs if `refs_version` is still `expected_version`."""
        ...

    async def due_requests(self, until: datetime) -> list[AccessRequest]:
        """Open requests with something due at or before `until`: pending past `timeout_at`,
        approved past `starts_at`, active past `ends_at`."""
        ...

    async def next_due_at(self) -> datetime | None:
        """The earliest timeout_at / starts_at / ends_at among open requests."""
        ...

    # -- durable chat effects -----------------------------------------------------------------
    async def claim_effects(self, now: datetime, owner: str, lease_until: datetime, *, platforms: Collection[str],
                            limit: int) -> list[Effect]:
        """Lease up to `limit` pending effects due by `now` whose lease is free and that have no
        earlier pending effect in their request's lane; `attempts` goes up by one for each."""
        ...

    async def claim_effects_with_rows(self, now: datetime, owner: str, lease_until: datetime, *,
                                      platforms: Collection[str], limit: int) -> ClaimBatch:
        """`claim_effects`, returning each claimed effect with its request and item rows, and (for a short
        batch) `next_effect_at`, all read with the claim: the effects worker's one store call per batch
        instead of a claim, two reads per effect and a planning read."""
        ...

    async def settle_effect(self, effect: Effect, owner: str, outcome: EffectOutcome) -> bool:
        """Record an attempt's outcome if `owner` still holds the lease: the effect row, the outcome's
        event, refs merged into the request (and `revealed`), follow-up effects, in one unit of work."""
        ...

    async def settle_effects(self, settled: Sequence[tuple[Effect, EffectOutcome]], owner: str) -> list[bool]:
        """`settle_effect` for each pair, all in one unit of work; False where the lease was lost."""
        ...

    def background(self) -> Store:
        """This store for the scheduler and effects worker, on a connection of its own where that matters
        (SQLite: a second connection, so due work never queues behind request handling; MongoDB: itself,
        its client already pools connections). Opened and closed with this store."""
        ...

    async def renew_leases(self, owner: str, lease_until: datetime) -> int:
        """Extend every lease `owner` holds on a pending effect (a live worker's heartbeat)."""
        ...

    async def next_effect_at(self, platforms: Collection[str]) -> datetime | None:
        """When the earliest pending effect becomes due (or its lease ends)."""
        ...

    async def effect_counts(self) -> dict[str, int]:
        """`{"pending", "failed", "failed_wipes", "failed_deliveries", "retrying_wipes"}` counts for /healthz
        and reports (a retrying wipe: pending after at least one failed attempt)."""
        ...

    async def effects_of(self, request_id: str) -> list[Effect]:
        """Every effect of one request, oldest first."""
        ...

    async def effects_by_kind(self) -> dict[str, dict[str, int]]:
        """Pending and failed effects per kind, `{"pending": {"wipe": n, ...}, "failed": {...}}` (for /metrics);
        kinds with none are left out."""
        ...

    # -- rate limits -------------------------------------------------------------------------
    async def take_rate_token(self, key: str, count: int, per: timedelta, now: datetime,
                              actor: Identity) -> RateTake:
        """Count one attempt for `key` if fewer than `count` (>= 1) were granted in the `per` before `now`.

        A sliding window held by the store, one atomic step (check and count together), so every
        process sharing the store shares one budget. A refusal is counted into the key's burst."""
        ...

    async def end_rate_bursts(self, now: datetime) -> list[RefusalBurst]:
        """Claim every burst of refusals whose key may act again by `now` (each returned once, to one
        caller), and delete the windows with nothing left in them (the table stays bounded)."""
        ...

    # -- home tabs opened (Slack App Home: a view only matters to someone who has the tab) -----
    async def mark_home_opened(self, platform: str, user_id: str, at: datetime) -> None:
        """Record that `user_id` has opened the app's home tab on `platform`; the first `at` is kept (idempotent)."""
        ...

    async def home_openers(self, platform: str, *, since: datetime | None = None) -> set[str]:
        """The users on `platform` with a home-tab marker (only those first recorded at or after `since`)."""
        ...

    # -- audit trail ---------------------------------------------------------------------------
    async def append_event(self, event: EventDraft) -> Event:
        """Give the event the next sequence number and chain it to the last one (safe across
        processes). Raises AuditWriteError when it cannot be written."""
        ...

    async def last_event(self) -> Event | None: ...

    async def purge_events(self, before: datetime, event: EventDraft) -> PurgeResult:
        """Delete events older than `before` (never the newest event), record a checkpoint and
        append `event` (details gain `purged` and `checkpoint_seq`)."""
        ...



@dataclass(frozen=True)
class Sent:
    """The platform took the call. `refs` merge into the request's refs; `done` False: there was
    nothing to do (no card to update, nothing delivered to wipe)."""

    refs: Mapping[str, Any] | None = None
    done: bool = True


@dataclass(frozen=True)
class Failed:
    """The platform did not take the call: an error code (never a payload), an optional Retry-After
    (0: try again at once, e.g. by another route), `permanent` when retrying cannot help (no leads
    channel configured), and refs to record anyway (e.g. a response_url found spent)."""

    error: str
    retry_after: float | None = None
    permanent: bool = False
    refs: Mapping[str, Any] | None = None


type NotifyResult = Sent | Failed


@dataclass(frozen=True)
class SiemRecord:
    """One record for a SIEM: an exported audit event or a signed checkpoint (`body`, the exact JSON)."""

    seq: int
    kind: str  # "event" | "checkpoint"
    body: Mapping[str, Any]


class SinkError(Exception):
    """A SIEM sink did not acknowledge a batch; it is sent again after a backoff.

    `permanent`: the sink said the request itself is wrong (bad token, bad signature); it is still
    retried (nothing may be skipped) but shown as a configuration problem."""

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


class SiemSink(Protocol):
    """Where the audit trail streams to (webhook, Splunk HEC, syslog)."""

    name: str
    batch_size: int

    async def send(self, records: Sequence[SiemRecord]) -> None:
        """Return only once the sink acknowledged every record; raise SinkError otherwise."""
        ...

    async def close(self) -> None: ...


class Witness(Protocol):
    """Somewhere outside the database that keeps every signed audit checkpoint (file, chat, SIEM)."""

    name: str

    async def publish(self, checkpoint: SignedCheckpoint) -> None:
        """Record the checkpoint; raise on failure (the caller logs it and shows it in /healthz)."""
        ...


class Notifier(Protocol):
    """One per chat platform: renders what the core decided. Every call returns a result the core
    records; a notifier raises only on a bug (the effects worker records that as a failure too)."""

    platform: str

    async def request_posted(self, request: AccessRequest, item: Item, *, attempt: int = 1) -> NotifyResult:
        """Post the approval card to the vault's leads channel (refs: where it went). `attempt` > 1: an earlier
        attempt may have reached chat before dying; find that card rather than post a second one."""
        ...

    async def request_updated(self, request: AccessRequest, item: Item) -> NotifyResult:
        """Edit the approval card in place to show the request's current state."""
        ...

    async def delivery_target(self, request: AccessRequest) -> NotifyResult:
        """Where the secret will go (refs recorded BEFORE it is sent, so a wipe can find it later)."""
        ...

    async def deliver_secret(self, request: AccessRequest, reveal: Reveal) -> NotifyResult:
        """Privately give the requester the secret and current code (refs: where it is)."""
        ...

    async def secret_revoked(self, request: AccessRequest, item: Item) -> NotifyResult:
        """Replace or wipe the delivered secret (found through the recorded target if need be)."""
        ...

    async def requester_told(self, request: AccessRequest, message: str, *, reply: bool = False) -> NotifyResult:
        """Tell the requester an outcome (approved, declined with reason, timed out, ...); `reply`: it answers
        the command that made the request (where the platform can, in place of that command's reply)."""
        ...

    async def leads_told(self, vault: str, message: str) -> NotifyResult:
        """Post a notice to the vault's leads channel (`Sent(done=False)`: not on this platform)."""
        ...


class ChatAccess(Protocol):
    """The use cases chat adapters call (`bot.services.access.AccessService` is the implementation);
    adapters are handed this, never the service itself or the runtime around it."""

    # Called after every state change of a request (the Slack App Home republishes from it).
    on_change: list[Callable[[AccessRequest], None]]

    @property
    def ending(self) -> int:
        """Due transitions running now: views hold back their reads meanwhile (access ends first)."""
        ...

    async def expiries_done(self, timeout: float = 10.0) -> None:
        """Return once no due transition is being applied (or after `timeout` seconds)."""
        ...

    def register_notifier(self, notifier: Notifier) -> None: ...

    async def list_items(self, query: str = "") -> list[Item]: ...

    async def request_access(self, requester: Identity, text: str | RequestDraft, *,
                             refs: Mapping[str, Any] | None = None, request_id: str | None = None,
                             answer: Callable[[AccessRequest], str] | None = None) -> AccessRequest: ...

    async def not_started(self, requester: Identity, request_id: str, why: str) -> bool: ...

    async def request_extension(self, request_id: str, requester: Identity, duration: str | timedelta, *,
                                refs: Mapping[str, Any] | None = None) -> AccessRequest: ...

    async def approve(self, request_id: str, approver: Identity) -> AccessRequest: ...

    async def decline(self, request_id: str, approver: Identity, reason: str = "") -> AccessRequest: ...

    async def cancel(self, request_id: str, requester: Identity) -> AccessRequest: ...

    async def done(self, request_id: str, holder: Identity) -> AccessRequest: ...

    async def new_code(self, request_id: str, holder: Identity) -> Reveal: ...

    async def record_refusal(self, actor: Identity, what: str, *, request_id: str | None = None,
                             vault: str | None = None) -> None: ...

    async def live_code(self, request_id: str, holder: Identity, *, via: str, audit: bool) -> CodeView | None: ...

    async def get_request(self, request_id: str) -> AccessRequest: ...

    async def my_requests(self, requester: Identity, *, open_only: bool = True,
                          limit: int = 20) -> list[AccessRequest]: ...

    async def item_of(self, request: AccessRequest) -> Item: ...

    async def save_refs(self, request_id: str, update: Mapping[str, Any]) -> AccessRequest: ...


class ChatReports(Protocol):
    """`report …` from chat: admins only (refusals audited), `report.generated` recorded."""

    async def __call__(self, actor: Identity, args_text: str) -> ChatReport: ...


class ChatMetrics(Protocol):
    """What a chat adapter tells the metrics (bot/services/metrics.py): its failed platform API calls."""

    def chat_api_error(self, platform: str, method: str, status: str) -> None:
        """One failed call: `method` as the platform names it, `status` the HTTP status (or `timeout`, ...)."""
        ...


class NoMetrics:
    """The metrics when /metrics is not configured: nothing is counted."""

    def chat_api_error(self, platform: str, method: str, status: str) -> None:
        return None


@dataclass(frozen=True)
class ChatCore:
    """Everything a chat adapter gets from the core at start (bot/app.py wires it)."""

    access: ChatAccess
    reports: ChatReports
    policy: Policy
    clock: Clock
    # For the adapter's own small records in the store's meta (Teams: service URLs per tenant).
    store: Store
    metrics: ChatMetrics = field(default_factory=NoMetrics)


class ChatAdapter(Protocol):
    """A chat platform: mounts its HTTP routes before start, connects to the core at start."""

    platform: str

    def add_routes(self, app: Any) -> None:
        """Add the platform's endpoint(s) to the aiohttp application (routes freeze at start)."""
        ...

    async def start(self, core: ChatCore) -> None:
        """Connect to the core: register the notifier, start socket connections, etc."""
        ...

    async def stop(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """Mode and state for /healthz (never a token)."""
        ...


class Tracker:
    """Reports progress of one step at a time; this base class stays silent."""

    def start(self, description: str, total: float | None = None) -> None:
        """Begin a step: `total` units of work, or None when its size is unknown (a spinner)."""

    def advance(self, amount: float = 1) -> None:
        """Some units of the current step are done."""

    def finish(self) -> None:
        """The current step is complete."""


QUIET = Tracker()


# -- secret sources ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRead:
    """What a source gives for one reveal: the password and the code valid now. Held only in memory."""

    password: Secret | None
    code: CodeView | None
    revision: str = ""  # outside sources: the password's fingerprint now (rotation detection)
    version: int = 0

    def __repr__(self) -> str:
        return f"SecretRead(password={'set' if self.password else None}, code={'set' if self.code else None})"


class SecretSource(Protocol):
    """Where an item's secret comes from at the moment of use: the built-in vault, or 1Password Connect."""

    source: str  # the Item.source it serves

    async def read(self, sealed: SealedItem, now: datetime) -> SecretRead:
        """The password and current code. Raises SecretSourceError (nothing shown) when it cannot."""
        ...


@dataclass(frozen=True)
class SourceVault:
    id: str
    title: str


@dataclass(frozen=True)
class SourceSummary:
    """An item as a vault listing shows it: enough to see what changed without reading secrets."""

    vault_id: str
    item_id: str
    title: str
    version: int


@dataclass(frozen=True)
class SourceItem:
    """An outside item's metadata for the catalogue. `problem` says why it cannot be served (or '')."""

    vault_id: str
    item_id: str
    title: str
    category: str
    version: int
    username: str = ""
    url: str = ""
    tags: tuple[str, ...] = ()
    has_password: bool = False
    has_totp: bool = False
    revision: str = ""
    problem: str = ""
    warning: str = ""  # served, but with something the admin should fix (an unreadable one-time password)


class ItemFeed(Protocol):
    """The catalogue side of an outside source: vaults, item listings and one item's metadata."""

    source: str

    async def vaults(self) -> list[SourceVault]: ...

    async def summaries(self, vault_id: str) -> list[SourceSummary]: ...

    async def item(self, vault_id: str, item_id: str) -> SourceItem: ...


@dataclass(frozen=True)
class ItemUsage:
    """Someone used an item directly in the outside source (filled, copied, revealed)."""

    id: str
    at: datetime
    vault_id: str
    item_id: str
    action: str
    email: str
    name: str = ""
    used_version: int = 0


@dataclass(frozen=True)
class UsagePage:
    cursor: str
    has_more: bool
    usages: tuple[ItemUsage, ...]


class UsageFeed(Protocol):
    """Item usage events, cursor by cursor. Raises SecretSourceError(reason="bad_cursor") for a dead cursor."""

    async def page(self, *, cursor: str | None, start: datetime | None) -> UsagePage: ...
