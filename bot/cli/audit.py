"""`jitpass audit export|verify|checkpoint|public-key|generate-key|rotate-key`: the audit trail."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.cli.common import duration_arg, opened_runtime, replace_file
from bot.cli.help import add_command, described, exit_codes
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




_VERIFY_CODES = exit_codes(
    "3    the hash chain is broken: an event edited, deleted in the middle or reordered",
    "4    the store's own checkpoint is forged, unreadable or of another deployment",
    "5    a checkpoint contradicts the trail: tail truncated, chain recomputed, signing key swapped",
    "6    witness lines that are garbage, forged or of another deployment (each named by line number)",
    done="the trail is intact (and matches every checkpoint given)")
_WITNESS_STDIN = """  With --witness -: checkpoint lines, one a line, as the witness file holds them (a JSON object with
  "seq", "hash", ..., "sig") or as jitpass posts them to chat ("jitpass audit checkpoint seq N: `{...}`").
  Blank and # lines are ignored; any other line that is neither is named as unusable (exit 6)."""


def add_checkpoint_commands(audit: Any) -> None:
    """Add the checkpoint and verification commands to the `audit` sub-parsers."""
    p = add_command(audit, "verify", "check the hash chain, the signed checkpoint and witnesses",
                    description="Re-hash the whole audit trail, check the store's latest signed checkpoint and, "
                    "with --witness, the checkpoints kept outside the database. Every problem is named.",
                    example=["jitpass audit verify", "jitpass audit verify --witness /var/lib/jitpass/witness.log",
                             "pbpaste | jitpass audit verify --witness -"],
                    codes=_VERIFY_CODES, stdin=_WITNESS_STDIN)
    p.add_argument("--witness", metavar="FILE|-", help="checkpoints kept outside the database: the witness file, "
                                                       "or `-` to paste checkpoint lines from chat on stdin")
    p.add_argument("--public-keys", metavar="FILE", help="more trusted public keys (`ed25519-public:` lines)")
    p.set_defaults(handler=cmd_audit_verify)
    p = add_command(audit, "checkpoint", "sign the chain head now and publish it to the witnesses",
                    description="Sign the audit chain head now, keep the checkpoint in the store and append it to "
                    "the witnesses; prints the checkpoint line (an empty trail: nothing to sign, exit 0).",
                    example="jitpass audit checkpoint >> offsite-witness.log")
    p.set_defaults(handler=cmd_audit_checkpoint)
    p = add_command(audit, "public-key", "print the public keys that verify checkpoints (safe to share)",
                    example="jitpass audit public-key > jitpass-public-keys.txt")
    p.set_defaults(handler=cmd_audit_public_key)
    p = add_command(audit, "generate-key", "print a new signing key line (for JITPASS_AUDIT_KEY)",
                    description="Print a new `ed25519:` signing key line, for JITPASS_AUDIT_KEY. Touches no store.",
                    example="jitpass audit generate-key")
    p.set_defaults(handler=cmd_audit_generate_key)
    p = add_command(audit, "rotate-key", "start signing with a new key; old keys stay for verification",
                    description="Sign the head with the current key, keep it as a retired (verify-only) line in "
                    "the key file, add a new signing key and sign the head again. Refused when JITPASS_AUDIT_KEY "
                    "is set in the environment.", example="jitpass audit rotate-key")
    p.set_defaults(handler=cmd_audit_rotate_key)


def add_commands(sub: Any) -> None:
    """Add this command group to the `jitpass` sub-command parser."""
    audit = sub.add_parser("audit", help="the audit trail",
                           description="The hash-chained audit trail: export, verify, checkpoints, signing keys.",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=described(["jitpass audit verify", "jitpass audit export --since 30d --format csv"],
                                            _VERIFY_CODES)).add_subparsers(dest="audit_cmd", required=True,
                                                                           metavar="COMMAND")
    p = add_command(audit, "export", "events as JSON lines or CSV",
                    description="The trail: JSON lines exactly as hashed (what `audit verify` and auditors check), "
                    "or CSV safe to open in a spreadsheet (cells that could be formulas get a leading ').",
                    example=["jitpass audit export --since 30d > trail.jsonl",
                             "jitpass audit export --format csv --out trail.csv"])
    p.add_argument("--since", type=duration_arg, help="only events of the last N days/hours, e.g. 30d, 12h "
                   "(default: the whole trail)")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl",
                   help="jsonl: one event a line as hashed (default); csv: spreadsheet-safe")
    p.add_argument("--out", metavar="FILE", help="file to write (default stdout)")
    p.set_defaults(handler=cmd_audit_export)
    add_checkpoint_commands(audit)
