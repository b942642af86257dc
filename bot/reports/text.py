"""The lines the table, the chat summary and the HTML report share."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from bot.domain.report_data import ChainStatus, Report, RetentionSummary
from bot.domain.request_text import format_duration
from bot.domain.wording import moment

if TYPE_CHECKING:
    pass


# -- human renderings -----------------------------------------------------------------------------


def _span(seconds: float) -> str:
    """Granted time: minutes under an hour (a 5-minute grant must not read 0.0h), then hours."""
    if seconds <= 0:
        return "0m"
    if seconds < 60:
        return "<1m"
    if seconds < 3600:
        return f"{round(seconds / 60)}m"
    return f"{seconds / 3600:.1f}h"


def _latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    return format_duration(timedelta(seconds=round(seconds)))


def _waiting(report: Report, since: datetime) -> str:
    """How long a pending request had waited at the end of the period (or now, if earlier)."""
    return _latency(max(0.0, (min(report.generated_at, report.until) - since).total_seconds()))


def _local(at: datetime | None, tz: ZoneInfo) -> str:
    # The core's one time formatter; a report names its zone once, in the period line, so not in every cell.
    return moment(at, tz, zone=False)


def _chain_line(chain: ChainStatus) -> str:
    if not chain.verified:
        return "not verified (--no-verify)"
    start = f" from the checkpoint after event {chain.from_checkpoint}" if chain.from_checkpoint else ""
    if chain.ok:
        return f"intact: {chain.checked} event(s) verified{start}, last seq {chain.last_seq}"
    if chain.first_broken_seq is None:
        return f"BROKEN: {chain.problem}"
    return f"BROKEN at seq {chain.first_broken_seq}: {chain.problem}"


def _purge_line(ret: RetentionSummary, tz: ZoneInfo) -> str:
    if ret.legal_hold:
        return "legal hold: purging is suspended"
    if ret.keep_days is None:
        return "events are kept forever (no retention.keep_days)"
    return (f"keep {ret.keep_days} days; next purge {_local(ret.next_purge_at, tz)} removes {ret.would_purge} "
            f"event(s) older than {_local(ret.purge_cutoff, tz)}")


def _period_line(report: Report, tz: ZoneInfo) -> str:
    filters = " ".join(f"{k}={v}" for k, v in report.filters.items())
    return (f"{_local(report.since, tz)} → {_local(report.until, tz)} ({report.timezone})"
            + (f"  filters: {filters}" if filters else ""))
