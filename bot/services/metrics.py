"""Prometheus metrics of one server (`/metrics`): what happened, how late, what is waiting, what failed.

Most counters are read off the audit events as the store records them: `MeteredStore` wraps the store
once (bootstrap), times every store call by operation, and counts an event only when its write
succeeded (a lost compare-and-set or a refused write counts nothing). So the figures say what the trail
says, with no extra store round trip and no counting code in the use cases. Chat API errors come from
the adapters through `bot.ports.ChatMetrics`; pending durable work is read from the store at scrape
time, bounded by a timeout.

Labels are small closed sets chosen here (platform, kind, path, outcome, reason slug, method, status,
store operation): never a user, a request id, an item or free text, so nothing personal or secret can
reach a scrape and the number of series stays fixed.

Every `Metrics` has its own `CollectorRegistry` (never the process-global one): several apps in one
process (tests, `serve --workers` in one interpreter) never share or collide.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.domain.errors import StoreError
from bot.domain.model import CHAT_PLATFORMS, Effect, EffectKind, EffectOutcome, EventDraft, TransitionDraft
from bot.ports import Store

__all__ = ["CONTENT_TYPE", "MeteredStore", "Metrics", "metered", "refusal_reason"]

log = logging.getLogger("jitpass.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
# grant.expired's `late_seconds`: window end -> the expiry recorded. Seconds to an hour.
LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# grant.revealed's `via` (what the adapter's notifier recorded) -> the `path` label.
DELIVERY_PATHS = {"response_url": "ephemeral", "dm": "dm", "teams": "teams"}
CODE_VIEW_VIAS = frozenset({"app_home", "message"})
RATE_LIMITED_ACTIONS = frozenset({"requests", "codes", "reports"})
# access.refused's reason text -> a fixed slug (first match wins); anything else is `other`.
_REFUSAL_SLUGS = (
    ("self-", "self_decision"),
    ("without being an approver", "not_an_approver"),
    ("without being an admin", "not_an_admin"),
    ("someone else's", "not_theirs"),
    ("grant that is", "grant_not_active"),
    ("revoke", "revoke_not_allowed"),
)
# The store calls that may write audit events: their arguments are read after a successful call.
_RECORDING = frozenset({"create_request", "transition", "transition_many", "append_event", "settle_effect",
                        "settle_effects"})


def refusal_reason(text: str) -> str:
    """The `reason` label of an access.refused event: a fixed slug, never the free text itself."""
    words = text.strip().lower()
    if words.startswith("rate limit:"):
        action = words.removeprefix("rate limit:").split()[:1]
        return f"rate_limit_{action[0]}" if action and action[0] in RATE_LIMITED_ACTIONS else "rate_limit_other"
    return next((slug for part, slug in _REFUSAL_SLUGS if part in words), "other")


def _platform(event: EventDraft) -> str:
    platform = event.actor.platform if event.actor is not None else ""
    return platform if platform in CHAT_PLATFORMS else "other"


def _via(refs: Mapping[str, Any] | None) -> str:
    """Where a failed delivery was going, from the refs the notifier returned with the failure."""
    for key in ("delivery_intent", "delivery"):
        value = (refs or {}).get(key)
        if isinstance(value, Mapping) and isinstance(value.get("via"), str):
            return str(value["via"])
    return ""


class Metrics:
    """The server's metrics on a registry of its own; `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("jitpass_requests", "Access requests recorded (request.created), by chat platform "
                                "and kind (access or extension).", ["platform", "kind"], registry=registry)
        self.approvals = Counter("jitpass_approvals", "Requests approved (request.approved: the last approval "
                                 "needed), by the approver's platform.", ["platform"], registry=registry)
        self.declines = Counter("jitpass_declines", "Requests declined (request.declined), by the decider's "
                                "platform.", ["platform"], registry=registry)
        self.deliveries = Counter("jitpass_deliveries", "Secret deliveries by the effects worker, by path "
                                  "(ephemeral, dm, teams, unknown) and outcome (delivered; retrying: an attempt "
                                  "failed and is retried; failed: given up).", ["path", "outcome"], registry=registry)
        self.code_views = Counter("jitpass_code_views", "Audited code views (grant.code_shown), by where: app_home "
                                  "or message (New code, Show password).", ["via"], registry=registry)
        self.refusals = Counter("jitpass_refusals", "Refused attempts (access.refused; a rate-limit burst's "
                                "unaudited ones when its access.refused_burst is recorded), by reason.", ["reason"],
                                registry=registry)
        self.lateness = Histogram("jitpass_revocation_lateness_seconds", "Seconds from a grant's window end to its "
                                  "grant.expired being recorded (access itself ends at the window end).",
                                  buckets=LATENESS_BUCKETS, registry=registry)
        self.effects_pending = Gauge("jitpass_effects_pending", "Durable chat effects waiting to be carried out, "
                                     "by kind (read from the store at scrape time).", ["kind"], registry=registry)
        self.effects_failed = Gauge("jitpass_effects_failed", "Durable chat effects given up, by kind (a failed "
                                    "wipe: a secret may still be on a screen).", ["kind"], registry=registry)
        self.effects_read = Gauge("jitpass_effects_read_ok", "1 when this scrape read the effect counts from the "
                                  "store in time; 0 when it could not (the effect gauges keep their last values).",
                                  registry=registry)
        self.chat_errors = Counter("jitpass_chat_api_errors", "Failed chat platform API calls, by platform, method "
                                   "and status (HTTP status, ok_false, timeout, network).",
                                   ["platform", "method", "status"], registry=registry)
        self.store_seconds = Histogram("jitpass_store_operation_seconds", "Store call latency, by operation.",
                                       ["operation"], buckets=STORE_BUCKETS, registry=registry)
        self.store_errors = Counter("jitpass_store_errors", "Store calls that raised, by operation.", ["operation"],
                                    registry=registry)

    # -- bot.ports.ChatMetrics ---------------------------------------------------------------------

    def chat_api_error(self, platform: str, method: str, status: str) -> None:
        """One failed chat API call (the adapters call this; the labels are their fixed method names)."""
        self.chat_errors.labels(platform, method, status).inc()

    # -- what the store recorded -------------------------------------------------------------------

    def recorded(self, event: EventDraft | None, *, effect: Effect | None = None,
                 outcome: EffectOutcome | None = None) -> None:
        """Count one audit event the store has just written (`effect`/`outcome`: the effect it settles)."""
        if event is None:
            return
        kind, details = event.type, event.details or {}
        if kind == "request.created":
            self.requests.labels(_platform(event), "extension" if "extends" in details else "access").inc()
        elif kind == "request.approved":
            self.approvals.labels(_platform(event)).inc()
        elif kind == "request.declined":
            self.declines.labels(_platform(event)).inc()
        elif kind == "grant.revealed" and effect is not None:  # a delivery (a reveal asked for in chat is not)
            self.deliveries.labels(DELIVERY_PATHS.get(str(details.get("via", "")), "unknown"), "delivered").inc()
        elif kind == "grant.delivery_failed":
            via = _via(outcome.refs if outcome else None) or (effect.platform if effect is not None else "")
            self.deliveries.labels(DELIVERY_PATHS.get(via, "unknown"),
                                   "failed" if details.get("final") else "retrying").inc()
        elif kind == "grant.code_shown":
            via = str(details.get("via", "message"))
            self.code_views.labels(via if via in CODE_VIEW_VIAS else "other").inc()
        elif kind == "access.refused":
            self.refusals.labels(refusal_reason(event.reason)).inc()
        elif kind == "access.refused_burst":  # its first refusal was counted when it was audited
            extra = details.get("not_audited_one_by_one")
            if isinstance(extra, int) and extra > 0:
                self.refusals.labels(refusal_reason(event.reason)).inc(extra)
        elif kind == "grant.expired":
            late = details.get("late_seconds")
            if isinstance(late, int | float):
                self.lateness.observe(max(0.0, float(late)))

    def _after(self, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        """Count the events a successful recording store call wrote."""
        if operation == "create_request":
            self.recorded(kwargs.get("event", args[1] if len(args) > 1 else None))
        elif operation == "append_event":
            self.recorded(kwargs.get("event", args[0] if args else None))
        elif operation == "transition":
            if result is not None:  # None: the compare-and-set lost, nothing was written
                self.recorded(kwargs.get("event", args[3] if len(args) > 3 else None))
        elif operation == "transition_many":
            drafts: Sequence[TransitionDraft] = kwargs.get("drafts", args[0] if args else ())
            for draft, done in zip(drafts, result, strict=False):
                if done is not None:
                    self.recorded(draft.event)
        elif operation == "settle_effects":
            settled: Sequence[tuple[Effect, EffectOutcome]] = kwargs.get("settled", args[0] if args else ())
            for (effect, outcome), kept in zip(settled, result, strict=False):
                if kept:
                    self._settled(effect, outcome)
        elif operation == "settle_effect" and result:
            self._settled(args[0], args[2])

    def _settled(self, effect: Effect, outcome: EffectOutcome) -> None:
        self.recorded(outcome.event, effect=effect, outcome=outcome)
        self.recorded(outcome.alert, effect=effect, outcome=outcome)

    # -- the scrape ----------------------------------------------------------------------------------

    async def refresh(self, store: Store, timeout: float) -> None:
        """Read the pending and failed effects per kind, waiting at most `timeout` seconds."""
        try:
            counts = await asyncio.wait_for(store.effects_by_kind(), timeout)
        except (TimeoutError, StoreError):
            self.effects_read.set(0)
            return
        for status, gauge in (("pending", self.effects_pending), ("failed", self.effects_failed)):
            for kind in EffectKind:
                gauge.labels(kind.value).set(counts.get(status, {}).get(kind.value, 0))
        self.effects_read.set(1)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


class MeteredStore:
    """A store whose every call is timed (by operation) and whose recorded audit events are counted."""

    def __init__(self, inner: Store, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._background: Store | None = None

    def background(self) -> Store:
        """The inner store's background handle, metered into the same metrics."""
        inner = self._inner.background()
        if inner is self._inner:
            return cast(Store, self)
        if self._background is None or cast(MeteredStore, self._background)._inner is not inner:
            self._background = metered(inner, self._metrics)
        return self._background

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(value):
            return value
        timed = self._timed(name, value)
        self.__dict__[name] = timed  # later lookups find it here, without __getattr__
        return timed

    def _timed(self, operation: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        seconds = self._metrics.store_seconds.labels(operation)
        errors = self._metrics.store_errors.labels(operation)
        after = partial(self._metrics._after, operation) if operation in _RECORDING else None

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = await call(*args, **kwargs)
            except Exception:
                errors.inc()
                raise
            finally:
                seconds.observe(time.perf_counter() - start)
            if after is not None:
                try:
                    after(args, kwargs, result)
                except Exception as exc:  # counting must never turn a recorded change into an error
                    log.warning("event=metrics_count_failed operation=%s error=%s", operation, type(exc).__name__)
            return result

        return timed

    def __repr__(self) -> str:
        return f"MeteredStore({self._inner!r})"


def metered(store: Store, metrics: Metrics) -> Store:
    """`store`, timed and counted into `metrics` (a `Store` by delegation)."""
    return cast(Store, MeteredStore(store, metrics))
