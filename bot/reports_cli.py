"""`jitpass report` and `jitpass retention purge`: argparse commands added by bot/cli.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from bot.model import Identity
from bot.progress import progress
from bot.reports import (
    DEFAULT_PERIOD,
    FORMATS,
    Report,
    ReportSource,
    build_report,
    parse_period,
    record_report,
    render,
)
from bot.retention import purge
from bot.runtime import Runtime

__all__ = ["add_commands", "cmd_report", "cmd_retention_purge", "run_report", "run_retention_purge"]

EXIT_CHAIN_BROKEN = 3  # as `jitpass audit verify`


def _cli_actor() -> Identity:
    from bot.cli import _actor  # the person at the terminal, as every other command records them

    return _actor()


async def run_report(runtime: Runtime, args: argparse.Namespace, out: TextIO, *, actor: Identity,
                     source: ReportSource | None = None, status: TextIO | None = None) -> int:
    """Build, audit and write one report; exit 3 when the hash chain turned out broken."""
    status = status if status is not None else sys.stderr
    now = runtime.clock.now()
    since, until = parse_period(now, runtime.policy.timezone, since=args.since, start=args.start, end=args.end)
    with progress(status) as tracker:
        report = await build_report(source or runtime.store, runtime.policy, now, since, until,
                                    vault=args.vault, item=args.item, user=args.user, verify=not args.no_verify,
                                    tracker=tracker)
    await record_report(runtime.store, actor, report, args.format)  # before the report leaves the process
    if args.out:
        _write(report, args.format, Path(args.out))
        print(f"wrote the {args.format} report to {args.out}", file=status)
    else:
        render(report, args.format, out)
    chain = report.retention.chain
    if chain.verified and not chain.ok:
        print(f"jitpass: the audit trail is BROKEN at seq {chain.first_broken_seq}: {chain.problem}", file=status)
        return EXIT_CHAIN_BROKEN
    return 0


def _write(report: Report, fmt: str, path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        render(report, fmt, out)


async def run_retention_purge(runtime: Runtime, args: argparse.Namespace, out: TextIO, *, actor: Identity,
                              status: TextIO | None = None) -> int:
    """Purge (or, with --dry-run, count) events older than the policy keeps."""
    with progress(status if status is not None else sys.stderr) as tracker:
        outcome = await purge(runtime.store, runtime.policy, runtime.clock.now(), actor, dry_run=args.dry_run,
                              tracker=tracker)
    print(outcome.message(), file=out)
    return 0


async def cmd_report(args: argparse.Namespace) -> int:
    from bot.cli import _runtime

    async with _runtime() as runtime:
        return await run_report(runtime, args, sys.stdout, actor=_cli_actor())


async def cmd_retention_purge(args: argparse.Namespace) -> int:
    from bot.cli import _runtime

    async with _runtime() as runtime:
        return await run_retention_purge(runtime, args, sys.stdout, actor=_cli_actor())


def add_commands(sub: Any) -> None:
    """Add `report` and `retention purge` to the `jitpass` sub-command parser."""
    from bot.cli import _duration_arg

    report = sub.add_parser("report", help="access report: summaries, latency, anomalies, exposure, retention",
                            description="Access report over a period (default: the last "
                                        f"{DEFAULT_PERIOD}); see docs/reports.md.")
    period = report.add_argument_group("period (default: --since 30d)")
    period.add_argument("--since", type=_duration_arg, help="the last N days/hours, e.g. 90d")
    period.add_argument("--from", dest="start", metavar="DATE", help="first day (YYYY-MM-DD, policy time zone)")
    period.add_argument("--to", dest="end", metavar="DATE", help="last day, inclusive (default: now)")
    report.add_argument("--vault", help="only this vault")
    report.add_argument("--item", help="only this item")
    report.add_argument("--user", help="only requests this person made or decided (U123 or slack:U123)")
    report.add_argument("--format", choices=FORMATS, default="table")
    report.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    report.add_argument("--no-verify", action="store_true",
                        help="skip re-hashing the audit chain (the slow part on a large trail)")
    report.set_defaults(handler=cmd_report)

    retention = sub.add_parser("retention", help="audit-trail retention").add_subparsers(
        dest="retention_cmd", required=True)
    p = retention.add_parser("purge", help="delete events older than [retention] keep_days (not under legal hold)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be purged")
    p.set_defaults(handler=cmd_retention_purge)
