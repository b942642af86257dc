"""`jitpass retention purge`: delete (or count) audit events older than the policy keeps."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from bot.bootstrap import Runtime
from bot.cli import common
from bot.cli.common import opened_runtime
from bot.cli.help import add_command, described
from bot.cli.progress import progress
from bot.domain.model import Identity
from bot.services.retention import purge

__all__ = ["add_commands", "cmd_retention_purge", "run_retention_purge"]


async def run_retention_purge(runtime: Runtime, args: argparse.Namespace, out: TextIO, *, actor: Identity,
                              status: TextIO | None = None) -> int:
    """Purge (or, with --dry-run, count) events older than the policy keeps."""
    with progress(status if status is not None else sys.stderr) as tracker:
        outcome = await purge(runtime.store, runtime.policy, runtime.clock.now(), actor, dry_run=args.dry_run,
                              tracker=tracker, checkpointer=runtime.checkpointer)
    print(outcome.message(), file=out)
    return 0


async def cmd_retention_purge(args: argparse.Namespace) -> int:
    async with opened_runtime() as runtime:
        return await run_retention_purge(runtime, args, sys.stdout, actor=common.actor())


def add_commands(sub: Any) -> None:
    """Add `retention purge` to the `jitpass` sub-command parser."""
    retention = sub.add_parser("retention", help="audit-trail retention",
                               description="Audit-trail retention ([retention] keep_days in the policy).",
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog=described("jitpass retention purge --dry-run")).add_subparsers(
        dest="retention_cmd", required=True, metavar="COMMAND")
    p = add_command(retention, "purge", "delete events older than [retention] keep_days (not under legal hold)",
                    description="Delete audit events older than the policy's [retention] keep_days, except those "
                    "under legal hold. Audited as "
                    "retention.purged.", example=["jitpass retention purge --dry-run", "jitpass retention purge"])
    p.add_argument("--dry-run", action="store_true", help="only count what would be purged; change nothing")
    p.set_defaults(handler=cmd_retention_purge)
