"""`jitpass audit export|verify|checkpoint|public-key|generate-key|rotate-key`: the audit trail."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.cli.common import duration_arg, opened_runtime, replace_file
from bot.domain.audit_export import CSV_COLUMNS, csv_row, jsonl_line
from bot.domain.audit_signing import (
    AuditKeyRing,
    format_private_line,
    format_public_line,
    parse_audit_keys,
    parse_witness,
)
from bot.domain.audit_verify import verify_trail
from bot.domain.config import Settings
from bot.domain.errors import InputError
from bot.domain.request_text import MAX_LOOKBACK, parse_duration
from bot.services.checkpoints import audit_key_settings, deployment_id, stored_checkpoint


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


def _read_lines(source: str) -> list[str]:
    if source == "-":
        return sys.stdin.read().splitlines()
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise InputError(f"witness file {path} does not exist") from None
    except OSError as exc:
        raise InputError(f"witness file {path} cannot be read ({exc.strerror})") from None


def _with_extra_keys(ring: AuditKeyRing, path: str | None) -> AuditKeyRing:
    if not path:
        return ring
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"public key file {path} cannot be read ({exc.__class__.__name__})") from None
    extra = parse_audit_keys(text, source=path)
    return AuditKeyRing(signer=ring.signer, public={**ring.public, **extra.public})


async def cmd_audit_verify(args: argparse.Namespace) -> int:
    witness = parse_witness(_read_lines(args.witness)) if args.witness else None
    async with opened_runtime(audit_key_check=False) as rt:
        assert rt.checkpointer is not None  # open_runtime always builds one
        ring = _with_extra_keys(rt.checkpointer.ring, args.public_keys)
        purge = await rt.store.checkpoint()
        verdict = await verify_trail(rt.store.events(), purge=(purge.seq, purge.hash) if purge else None,
                                     stored=await stored_checkpoint(rt.store), ring=ring,
                                     deployment=await deployment_id(rt.store), witness=witness)
    out = sys.stdout if verdict.exit_code == 0 else sys.stderr
    for line in verdict.lines():
        print(line, file=out)
    return verdict.exit_code


async def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    async with opened_runtime() as rt:
        assert rt.checkpointer is not None
        signed = await rt.checkpointer.checkpoint("manual")
    if signed is None:
        print("the audit trail is empty: nothing to sign yet", file=sys.stderr)
        return 0
    print(signed.to_line())
    return 0


async def cmd_audit_public_key(args: argparse.Namespace) -> int:
    async with opened_runtime(audit_key_check=False) as rt:
        assert rt.checkpointer is not None
        print(f"# deployment: {rt.checkpointer.deployment}")
        for key_id, key in rt.checkpointer.ring.public.items():
            print(f"{format_public_line(key)}  # key {key_id}")
    return 0


async def cmd_audit_generate_key(args: argparse.Namespace) -> int:
    print(format_private_line(Ed25519PrivateKey.generate()))
    return 0


async def cmd_audit_rotate_key(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    env_value, path, _ = audit_key_settings(settings.environ, settings.master_key_file)
    if env_value:
        raise InputError(
            "JITPASS_AUDIT_KEY is set in the environment, so jitpass cannot rotate it.",
            hint="Set it to the lines printed by `jitpass audit public-key` (the old keys, verify-only) followed "
                 "by a line from `jitpass audit generate-key`, restart, then run `jitpass audit checkpoint`.")
    async with opened_runtime() as rt:  # the current key must be the right one before anything changes
        assert rt.checkpointer is not None
        old = rt.checkpointer.ring
        await rt.checkpointer.checkpoint("rotation")  # the head as the old key last saw it
        new_key = Ed25519PrivateKey.generate()
        lines = ["# jitpass audit signing key ring: the LAST `ed25519:` line signs; `ed25519-public:` lines verify.",
                 *(f"{format_public_line(k)}  # retired key {key_id}" for key_id, k in old.public.items()),
                 format_private_line(new_key)]
        replace_file(path, "\n".join(lines) + "\n")
        rt.checkpointer.ring = parse_audit_keys(path.read_text(encoding="ascii"), source=str(path))
        signed = await rt.checkpointer.checkpoint("rotation")
    print(f"new audit signing key {rt.checkpointer.ring.active_id} is active; retired key(s) "
          f"{', '.join(old.public)} still verify"
          + (f"; checkpoint seq {signed.seq} signed with the new key" if signed else ""))
    return 0




def add_checkpoint_commands(audit: Any) -> None:
    """Add the checkpoint and verification commands to the `audit` sub-parsers."""
    p = audit.add_parser("verify", help="check the hash chain, the signed checkpoint and witnesses (exit codes: "
                                        "0 intact, 3 chain broken, 4 store checkpoint forged, 5 witness mismatch, "
                                        "6 bad witness lines)")
    p.add_argument("--witness", metavar="FILE|-", help="checkpoints kept outside the database: the witness file, "
                                                       "or `-` to paste checkpoint lines from chat")
    p.add_argument("--public-keys", metavar="FILE", help="more trusted public keys (`ed25519-public:` lines)")
    p.set_defaults(handler=cmd_audit_verify)
    p = audit.add_parser("checkpoint", help="sign the chain head now and publish it to the witnesses")
    p.set_defaults(handler=cmd_audit_checkpoint)
    p = audit.add_parser("public-key", help="print the public keys that verify checkpoints (safe to share)")
    p.set_defaults(handler=cmd_audit_public_key)
    p = audit.add_parser("generate-key", help="print a new signing key line (for JITPASS_AUDIT_KEY)")
    p.set_defaults(handler=cmd_audit_generate_key)
    p = audit.add_parser("rotate-key", help="start signing with a new key; old keys stay for verification")
    p.set_defaults(handler=cmd_audit_rotate_key)


def add_commands(sub: Any) -> None:
    """Add this command group to the `jitpass` sub-command parser."""
    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="audit_cmd", required=True)
    p = audit.add_parser("export", help="events as JSON lines or CSV")
    p.add_argument("--since", type=duration_arg, help="e.g. 30d, 12h")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--out", help="file to write (default stdout)")
    p.set_defaults(handler=cmd_audit_export)
    add_checkpoint_commands(audit)
