"""`jitpass` commands: serve, items, audit, keys, policy, report, retention (one module per group)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from bot.cli import audit, items, keys, policy, reports, retention, serve
from bot.cli.common import Handler
from bot.domain.errors import JitpassError, new_error_id

__all__ = ["build_parser", "main"]

log = logging.getLogger("jitpass.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jitpass", description="Just-in-time access to shared credentials.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (serve, items, audit, keys, policy, reports, retention):
        group.add_commands(sub)
    return parser


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    # aiosqlite logs every SQL parameter at DEBUG, refs (response_urls) included.
    # The Agents SDK's connection manager logs a multi-line (redacted) config dump at INFO.
    for noisy in ("apscheduler", "aiohttp.access", "msal", "urllib3", "aiosqlite",
                  "microsoft_agents.hosting.core.authorization.connection_manager"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `jitpass` and `python -m bot`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    handler: Handler = args.handler
    try:
        return asyncio.run(handler(args))
    except JitpassError as exc:
        print(f"jitpass: {exc.user_message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception:  # an unexpected error: log it for us, show the user an id, never a trace
        error_id = new_error_id()  # the one error-id format of the CLI, Slack and Teams
        log.error("event=unexpected_error error_id=%s", error_id, exc_info=args.verbose)
        print(f"jitpass: something went wrong (error {error_id}); run with -v for details", file=sys.stderr)
        return 1
