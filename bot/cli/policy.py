"""`jitpass policy check`: the access policy, and the warnings for policies under which nobody can be approved."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bot.cli.help import EXIT_CODES_POLICY, described
from bot.domain.config import Settings, load_policy
from bot.domain.errors import InputError
from bot.domain.model import Identity
from bot.domain.policy import Members, Policy, VaultPolicy
from bot.domain.request_text import format_duration

__all__ = ["policy_warnings"]

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# The forms each platform's ids take (what the adapters put in an Identity or a channel reference).
_USER_IDS = {
    "slack": (re.compile(r"[UW][A-Z0-9]{2,}"), "a Slack user id (U or W, then capital letters and digits)"),
    # The adapter uses from.aadObjectId (an Entra object id, a GUID), else the Bot Framework id "29:…".
    "teams": (re.compile(rf"{_GUID}|29:[A-Za-z0-9_-]+"), "an Entra object id (a GUID such as "
              "3f2a1b4c-0d5e-4f6a-8b7c-9d0e1f2a3b4c) or a Bot Framework user id 29:…"),
}
_GROUP_IDS = {
    "slack": (re.compile(r"S[A-Z0-9]{2,}"), "a Slack user-group id (S, then capital letters and digits)"),
    "teams": (re.compile(_GUID), "an Entra tenant or group id (a GUID)"),
}
_CHANNEL_IDS = {
    "slack": (re.compile(r"[CGD][A-Z0-9]{2,}"), "a Slack channel id (C, G or D, then capital letters and digits)"),
    "teams": (re.compile(r"19:[A-Za-z0-9_.-]+@[a-z0-9.]+"), "a Teams conversation id such as "
              "19:abc123@thread.tacv2 (`@jitpass whereami` shows it)"),
}


def _id_warnings(where: str, members: Members) -> Iterator[str]:
    for platform, ids in sorted(members.users.items()):
        pattern, form = _USER_IDS[platform]
        for user_id in sorted(ids):
            if not pattern.fullmatch(user_id):
                yield f"{where}.{platform}: {user_id!r} cannot be a real id: expected {form}"
    for platform, ids in sorted(members.groups.items()):
        pattern, form = _GROUP_IDS[platform]
        for group_id in sorted(ids):
            if not pattern.fullmatch(group_id):
                yield f"{where}.{platform}_groups: {group_id!r} cannot be a real id: expected {form}"


def _channel_warnings(where: str, channels: Mapping[str, str]) -> Iterator[str]:
    for platform, channel in sorted(channels.items()):
        pattern, form = _CHANNEL_IDS[platform]
        if not pattern.fullmatch(channel):
            yield f"{where}.{platform}: {channel!r} cannot be a real channel id: expected {form}"


def _approval_warnings(policy: Policy, where: str, vault: VaultPolicy, what: str) -> Iterator[str]:
    approvers = vault.approvers
    if approvers.is_empty():
        admins = " (admins do not approve requests)" if not policy.admins.is_empty() else ""
        yield f"{where}: no approvers: requests for {what} can never be approved{admins}"
        return
    if any(approvers.groups.values()):
        return  # a group's size is known only to the chat platform: the count below would be a guess
    # People, not accounts: linked accounts ([people], [onepassword] people) give one vote.
    people = {policy.person_of(Identity(platform, user_id))
              for platform, ids in approvers.users.items() for user_id in ids}
    required = vault.limits.approvals_required
    if required > len(people):
        yield (f"{where}: approvals_required = {required} but only {len(people)} distinct approver(s): "
               f"requests for {what} can never be approved")


def policy_warnings(policy: Policy) -> list[str]:
    """Every reason, one line each, why requests under `policy` could never be approved or delivered."""
    warnings: list[str] = []
    warnings += _approval_warnings(policy, "[approvers]", policy.defaults, "vaults not named under [vaults]")
    for name, vault in sorted(policy.vaults.items()):
        own = vault.approvers is not policy.defaults.approvers
        where = f"[vaults.{name}.approvers]" if own else f"[vaults.{name}] (approvers from [approvers])"
        warnings += _approval_warnings(policy, where, vault, f"vault {name}")
    warnings += _id_warnings("approvers", policy.defaults.approvers)
    for name, vault in sorted(policy.vaults.items()):
        if vault.approvers is not policy.defaults.approvers:
            warnings += _id_warnings(f"vaults.{name}.approvers", vault.approvers)
    warnings += _id_warnings("admins", policy.admins)
    warnings += _channel_warnings("leads_channel", policy.defaults.leads_channels)
    for name, vault in sorted(policy.vaults.items()):
        channels = {p: c for p, c in vault.leads_channels.items() if policy.defaults.leads_channels.get(p) != c}
        warnings += _channel_warnings(f"vaults.{name}.leads_channel", channels)
    warnings += _channel_warnings("audit.witness_channel", policy.audit.witness_channels)
    for account, person in sorted(policy.people.items()):
        platform, _, user_id = account.partition(":")
        pattern, form = _USER_IDS.get(platform, (None, ""))
        if pattern is not None and not pattern.fullmatch(user_id):
            warnings.append(f"people.{person}.{platform}: {user_id!r} cannot be a real id: expected {form}")
    return list(dict.fromkeys(warnings))


async def cmd_policy_check(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else Settings.from_env().policy_path
    if path is None:
        raise InputError("No policy file given: pass FILE or set JITPASS_POLICY.")
    policy = load_policy(path)
    limits = policy.defaults.limits
    warnings = policy_warnings(policy)
    print(f"{path}: {'OK' if not warnings else 'valid'} — {len(policy.vaults)} vault(s) configured, "
          f"timezone {policy.timezone.key}, default window {format_duration(limits.default_duration)} "
          f"(max {format_duration(limits.max_duration)})")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if warnings:
        print(f"{len(warnings)} warning(s)" + ("; --strict: failing" if args.strict else ""), file=sys.stderr)
    return 1 if warnings and args.strict else 0


def add_commands(sub: Any) -> None:
    """Add this command group to the `jitpass` sub-command parser."""
    policy = sub.add_parser("policy", help="the access policy", description="Check the access policy file.",
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=described("jitpass policy check policy.toml --strict", EXIT_CODES_POLICY))
    commands = policy.add_subparsers(dest="policy_cmd", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "check", help="validate a policy file and warn about requests that could never be approved",
        description="Validate a policy file (every error names the key and its line), then warn, one line each, "
                    "about vaults whose requests can never be approved: no approvers, approvals_required above "
                    "the number of distinct approvers (linked accounts count as one person; admins do not "
                    "approve), and user, group or channel ids that cannot be real.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=described("jitpass policy check policy.toml --strict", EXIT_CODES_POLICY))
    p.add_argument("file", nargs="?", metavar="FILE", help="the policy file (default: JITPASS_POLICY / the home's)")
    p.add_argument("--strict", action="store_true", help="exit 1 when there is any warning")
    p.set_defaults(handler=cmd_policy_check)
