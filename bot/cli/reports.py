"""`jitpass report`: an access report over a period, in a terminal table, CSV, JSON or HTML."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from bot.bootstrap import Runtime
from bot.cli import common
from bot.cli.common import duration_arg, opened_runtime
from bot.cli.help import add_command, exit_codes
from bot.cli.progress import progress
from bot.domain.model import Identity
from bot.domain.report_data import DEFAULT_PERIOD, FORMATS, Report
from bot.ports import ReportSource
from bot.reports.build import build_report, parse_period, record_report
from bot.reports.render import render

__all__ = ["add_commands", "cmd_report", "run_report"]

EXIT_CHAIN_BROKEN = 3  # as `jitpass audit verify`


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
    if not args.no_verify:
        report = replace(report, trust=await runtime.audit_trust())
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


async def cmd_report(args: argparse.Namespace) -> int:
    async with opened_runtime() as runtime:
        return await run_report(runtime, args, sys.stdout, actor=common.actor())


def add_commands(sub: Any) -> None:
    """Add `report` to the `jitpass` sub-command parser."""
    report = add_command(
        sub, "report", "access report: summaries, latency, anomalies, exposure, retention",
        description=f"Access report over a period (default: the last {DEFAULT_PERIOD}); see docs/reports.md. "
        "The report is recorded in the trail (report.generated) before it is written. A --vault, --item or "
        "--user that names nothing known is refused with close names.",
        example=["jitpass report --since 90d", "jitpass report --from 2026-11-01 --to 2026-11-30 --vault acme "
                 "--format html --out november.html"],
        codes=exit_codes("3    the report was written, but re-hashing found the audit chain broken",
                         done="the report was written (and the chain verified, unless --no-verify)"))
    period = report.add_argument_group("period (default: --since 30d)")
    period.add_argument("--since", type=duration_arg, help="the last N days/hours, e.g. 90d")
    period.add_argument("--from", dest="start", metavar="DATE", help="first day (YYYY-MM-DD, policy time zone)")
    period.add_argument("--to", dest="end", metavar="DATE", help="last day, inclusive (default: now)")
    report.add_argument("--vault", help="only this vault")
    report.add_argument("--item", help="only this item")
    report.add_argument("--user", help="only requests this person made or decided (U123 or slack:U123)")
    report.add_argument("--format", choices=FORMATS, default="table",
                        help="table: for the terminal (default); csv, json: for machines; html: one page with "
                        "charts, for people")
    report.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    report.add_argument("--no-verify", action="store_true",
                        help="skip re-hashing the audit chain (the slow part on a large trail)")
    report.set_defaults(handler=cmd_report)
