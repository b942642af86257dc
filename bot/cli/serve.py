"""`jitpass serve`: the HTTP server (Slack, Teams, scheduler)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from bot.domain.config import Settings, load_policy, parse_policy

log = logging.getLogger("jitpass.cli")


async def cmd_serve(args: argparse.Namespace) -> int:
    from bot.app import serve
    from bot.demo import DEMO_POLICY

    settings = Settings.from_env()
    policy = None
    if args.demo and settings.policy_path is None:
        policy = parse_policy(DEMO_POLICY, "built-in demo policy")
        log.warning("event=demo_policy note=\"JITPASS_POLICY is not set: using the built-in demo policy\"")
    else:
        load_policy(settings.policy_path)  # fail fast with the key and line before binding the port
    await serve(settings, host=args.host or settings.host, port=args.port or settings.port, policy=policy,
                demo=args.demo)
    return 0


def add_commands(sub: Any) -> None:
    """Add this command group to the `jitpass` sub-command parser."""
    serve = sub.add_parser("serve", help="run the HTTP server (Slack, Teams, scheduler)")
    serve.add_argument("--demo", action="store_true", help="seed a demo item; built-in demo policy if none set")
    serve.add_argument("--host", help="bind address (default JITPASS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default PORT or 3978)")
    serve.set_defaults(handler=cmd_serve)
