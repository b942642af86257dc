"""`jitpass serve`: the HTTP server (Slack, Teams, scheduler)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from bot.cli.help import add_command, exit_codes
from bot.domain.config import MAX_WORKERS, Settings, load_policy
from bot.domain.errors import InputError

log = logging.getLogger("jitpass.cli")


async def cmd_serve(args: argparse.Namespace) -> int:
    from bot.app import serve

    settings = Settings.from_env()
    load_policy(settings.policy_path)  # fail fast with the key and line before binding the port
    workers = args.workers or settings.workers
    if workers < 1 or workers > MAX_WORKERS:
        raise InputError(f"--workers {workers} is not between 1 and {MAX_WORKERS}")
    if workers > 1 and settings.worker_of is None:
        from bot.workers import supervise

        await supervise(host=args.host or settings.host, port=args.port or settings.port, workers=workers,
                        demo=args.demo, verbose=logging.getLogger().level <= logging.DEBUG)
        return 0
    # The demo policy (no policy file set) and the demo item apply to a store `--demo` creates, and to
    # that store only: the CLI reads the same mark, so both always see the same policy.
    await serve(settings, host=args.host or settings.host, port=args.port or settings.port, demo=args.demo)
    return 0


def add_commands(sub: Any) -> None:
    """Add this command group to the `jitpass` sub-command parser."""
    serve = add_command(
        sub, "serve", "run the HTTP server (Slack, Teams, scheduler)",
        description="Run the HTTP server: Slack (/slack/events), Teams (/api/messages), /healthz and the "
        "scheduler that ends every grant on time. It runs until stopped (Ctrl-C or SIGTERM). The policy is "
        "checked before the port is bound.",
        example=["jitpass serve --demo", "jitpass serve --host 0.0.0.0 --port 8080"],
        codes=exit_codes(done="stopped cleanly", note="A server that cannot start (the port is in use, a "
                         "setting is unsafe, the policy does not validate) exits 2 and says what to change."))
    serve.add_argument("--demo", action="store_true", help=(
        "when this creates the store: mark it a demo store, seed a demo item and, with no policy file set, "
        "use the built-in demo policy (the CLI then uses it too)"))
    serve.add_argument("--host", help="bind address (default JITPASS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default PORT or 3978)")
    serve.add_argument("--workers", type=int, help=(
        "server processes sharing the port (SO_REUSEPORT) and the store; a dead one is restarted "
        "(default JITPASS_WORKERS or 1)"))
    serve.set_defaults(handler=cmd_serve)
