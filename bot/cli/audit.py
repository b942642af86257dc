"""`jitpass audit export|verify`: the audit trail."""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any, TextIO

from bot.cli.common import duration_arg, opened_runtime
from bot.domain.audit import verify_chain
from bot.domain.audit_export import CSV_COLUMNS, csv_row, jsonl_line
from bot.domain.request_text import MAX_LOOKBACK, parse_duration


async def cmd_audit_export(args: argparse.Namespace) -> int:
    since = None
    out: TextIO = open(args.out, "w", encoding="utf-8", newline="") if args.out else sys.stdout  # noqa: SIM115
    try:
        async with opened_runtime() as rt:
            if args.since:
                since = rt.clock.now() - parse_duration(args.since, maximum=MAX_LOOKBACK)
            # OWASP: every cell quoted, formulas neutralised (bot/domain/audit_export.py).
            writer = csv.writer(out, quoting=csv.QUOTE_ALL) if args.format == "csv" else None
            if writer:
                writer.writerow(CSV_COLUMNS)
            count = 0
            async for event in rt.store.events(since=since):
                if writer:
                    writer.writerow(csv_row(event))
                else:
                    out.write(jsonl_line(event))
                count += 1
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"exported {count} event(s) to {args.out}", file=sys.stderr)
    return 0


async def cmd_audit_verify(args: argparse.Namespace) -> int:
    async with opened_runtime() as rt:
        checkpoint = await rt.store.checkpoint()
        if checkpoint:
            report = await verify_chain(rt.store.events(), start_seq=checkpoint.seq, start_hash=checkpoint.hash)
        else:
            report = await verify_chain(rt.store.events())
    if report.ok:
        start = f" (from the retention checkpoint after event {checkpoint.seq})" if checkpoint else ""
        print(f"audit trail intact: {report.checked} event(s) verified{start}, last seq {report.last_seq}")
        return 0
    print(f"audit trail BROKEN at seq {report.first_broken_seq}: {report.problem}", file=sys.stderr)
    return 3


def add_commands(sub: Any) -> None:
    """Add this command group to the `jitpass` sub-command parser."""
    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="audit_cmd", required=True)
    p = audit.add_parser("export", help="events as JSON lines or CSV")
    p.add_argument("--since", type=duration_arg, help="e.g. 30d, 12h")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--out", help="file to write (default stdout)")
    p.set_defaults(handler=cmd_audit_export)
    p = audit.add_parser("verify", help="check the hash chain (exit 3 with the first broken seq)")
    p.set_defaults(handler=cmd_audit_verify)
