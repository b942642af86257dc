"""`jitpass policy check`: the access policy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bot.domain.config import Settings, load_policy
from bot.domain.errors import InputError
from bot.domain.request_text import format_duration


async def cmd_policy_check(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else Settings.from_env().policy_path
    if path is None:
        raise InputError("No policy file given: pass FILE or set JITPASS_POLICY.")
    policy = load_policy(path)
    limits = policy.defaults.limits
    print(f"{path}: OK — {len(policy.vaults)} vault(s) configured, timezone {policy.timezone.key}, "
          f"default window {format_duration(limits.default_duration)} (max {format_duration(limits.max_duration)})")
    for vault in policy.vaults.values():
        if vault.approvers.is_empty():
            print(f"warning: vault {vault.name} has no approvers: its requests will be refused", file=sys.stderr)
    return 0


def add_commands(sub: Any) -> None:
    """Add this command group to the `jitpass` sub-command parser."""
    policy = sub.add_parser("policy", help="the access policy").add_subparsers(dest="policy_cmd", required=True)
    p = policy.add_parser("check", help="validate a policy file")
    p.add_argument("file", nargs="?")
    p.set_defaults(handler=cmd_policy_check)
