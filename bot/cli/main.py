"""`jitpass` commands: serve, items, audit, keys, policy, report, retention (one module per group)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from bot.cli import audit, items, keys, policy, reports, retention, serve
from bot.cli.common import Handler
from bot.cli.help import SuggestingParser, described
from bot.cli.logs import configure_logging
from bot.cli.loop import loop_factory
from bot.domain.errors import JitpassError, new_error_id

__all__ = ["build_parser", "main"]

log = logging.getLogger("jitpass.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = SuggestingParser(
        prog="jitpass", description="Just-in-time access to shared credentials: the store, the catalogue, the "
        "audit trail, keys and policy, from the terminal. Every command works on the jitpass home "
        "(JITPASS_HOME, or a jitpass.toml found from the working directory upward).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=described(["jitpass items list", "jitpass policy check --strict"]))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (serve, items, audit, keys, policy, reports, retention):
        group.add_commands(sub)
    _verbose_everywhere(parser)
    return parser


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """`-v` after any sub-command too (every error says "run with -v"); SUPPRESS keeps a top-level -v."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any("--verbose" in a.option_strings for a in child._actions):
                    child.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                       help="debug logging (accepted anywhere on the line)")
                _verbose_everywhere(child)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `jitpass` and `python -m bot`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    undo_logging = configure_logging(args.verbose)
    try:
        return _run(args)
    finally:
        undo_logging()


def _run(args: argparse.Namespace) -> int:
    """Run the chosen command; every error ends as an exit code and one line on stderr."""
    handler: Handler = args.handler
    try:
        factory = loop_factory()
        log.debug("event=command command=%s loop=%s", args.command, "asyncio" if factory is None else "uvloop")
        return asyncio.run(handler(args), loop_factory=factory)
    except JitpassError as exc:
        print(f"jitpass: {exc.user_message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`jitpass items list --json | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception:  # an unexpected error: log it for us, show the user an id, never a trace
        error_id = new_error_id()  # the one error-id format of the CLI, Slack and Teams
        log.error("event=unexpected_error error_id=%s", error_id, exc_info=args.verbose)
        print(f"jitpass: something went wrong (error {error_id}); run with -v for details", file=sys.stderr)
        return 1
