"""Retention: purge audit events older than the policy keeps, unless a legal hold suspends it.

The store deletes a prefix of the chain, records a checkpoint (the last purged event's seq and hash)
and appends `retention.purged` in the same unit of work, so `audit verify` still proves the rest of
the trail from that checkpoint. Run by hand (`jitpass retention purge [--dry-run]`) or daily at
`retention.purge_at` in the policy's time zone (`install_retention`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from bot.domain.audit import format_time
from bot.domain.model import SYSTEM, EventDraft, Identity
from bot.domain.policy import Policy
from bot.ports import QUIET, Checkpoint, Clock, Store, Tracker

if TYPE_CHECKING:
    from bot.services.checkpoints import Checkpointer
    from bot.services.schedule import GrantScheduler

__all__ = ["JOB_ID", "PurgeOutcome", "install_retention", "plan_purge", "purge", "scheduled_purge"]

log = logging.getLogger("jitpass.retention")

JOB_ID = "retention-purge"


@dataclass(frozen=True)
class PurgeOutcome:
    """What a purge did, or would do (`dry_run`), and why when it did nothing."""

    cutoff: datetime | None  # events older than this go; None when nothing may be purged
    eligible: int  # events older than the cutoff when the purge started
    purged: int
    dry_run: bool
    legal_hold: bool
    keep_days: int | None
    checkpoint: Checkpoint | None = None

    def message(self) -> str:
        """One line for a person: what happened, and what to change if nothing could."""
        if self.legal_hold:
            return ("Legal hold is on ([retention] legal_hold = true in the policy): purging is suspended and "
                    "nothing was deleted.")
        if self.keep_days is None or self.cutoff is None:
            return "The policy keeps audit events forever (no [retention] keep_days): nothing to purge."
        older = f"older than {format_time(self.cutoff)} ({self.keep_days} days)"
        if self.dry_run:
            return f"Dry run: {self.eligible} event(s) {older} would be purged; nothing was deleted."
        if self.purged == 0:
            return f"No events {older}: nothing to purge."
        start = f"; the chain now starts after event {self.checkpoint.seq}" if self.checkpoint else ""
        return f"Purged {self.purged} event(s) {older}{start}."


async def plan_purge(store: Store, policy: Policy, now: datetime) -> PurgeOutcome:
    """What a purge would delete now under the policy (nothing under legal hold)."""
    retention = policy.retention
    cutoff = retention.cutoff(now)
    eligible = await store.count_events(before=cutoff) if cutoff is not None else 0
    return PurgeOutcome(cutoff=cutoff, eligible=eligible, purged=0, dry_run=True, legal_hold=retention.legal_hold,
                        keep_days=retention.keep_days)


async def purge(store: Store, policy: Policy, now: datetime, actor: Identity, *, dry_run: bool = False,
                trigger: str = "cli", tracker: Tracker = QUIET,
                checkpointer: Checkpointer | None = None) -> PurgeOutcome:
    """Purge events older than the policy keeps; the store records checkpoint + retention.purged; then the
    head (the purge event) is signed, so the witnesses know where the retained chain stands."""
    plan = await plan_purge(store, policy, now)
    if dry_run or plan.cutoff is None or plan.eligible == 0:
        return plan if dry_run else _done(plan, 0, None)
    tracker.start(f"purging {plan.eligible} event(s) older than {format_time(plan.cutoff)}", total=None)
    event = EventDraft("retention.purged", actor, None, None, None, "", {
        "before": format_time(plan.cutoff), "keep_days": plan.keep_days, "trigger": trigger,
    })
    result = await store.purge_events(plan.cutoff, event)
    if checkpointer is not None:
        await checkpointer.checkpoint("purge")
    tracker.finish()
    log.info("event=retention_purged purged=%d before=%s checkpoint_seq=%s trigger=%s", result.purged,
             format_time(plan.cutoff), result.checkpoint.seq if result.checkpoint else None, trigger)
    return _done(plan, result.purged, result.checkpoint)


def _done(plan: PurgeOutcome, purged: int, checkpoint: Checkpoint | None) -> PurgeOutcome:
    return PurgeOutcome(cutoff=plan.cutoff, eligible=plan.eligible, purged=purged, dry_run=False,
                        legal_hold=plan.legal_hold, keep_days=plan.keep_days, checkpoint=checkpoint)


async def scheduled_purge(store: Store, policy: Policy, clock: Clock,
                          checkpointer: Checkpointer | None = None) -> PurgeOutcome | None:
    """The daily job: purge as the policy says; a failure is logged, never raised into the scheduler."""
    try:
        outcome = await purge(store, policy, clock.now(), SYSTEM, trigger="schedule", checkpointer=checkpointer)
    except Exception:  # the next day's run retries; the trail is untouched by a failed unit of work
        log.exception("event=retention_purge_failed")
        return None
    if outcome.legal_hold:
        log.warning("event=retention_purge_suspended reason=legal_hold")
    return outcome


def install_retention(scheduler: GrantScheduler, store: Store, policy: Policy, clock: Clock,
                      checkpointer: Checkpointer | None = None) -> None:
    """Schedule `scheduled_purge` daily at retention.purge_at in the policy's time zone.

    Call after `scheduler.start()` (GrantScheduler.add_daily ignores a stopped scheduler).
    """
    at = policy.retention.purge_at

    async def job() -> None:
        await scheduled_purge(store, policy, clock, checkpointer)

    scheduler.add_daily(JOB_ID, job, at.hour, at.minute, policy.timezone.key)
