#!/usr/bin/env python3
"""Verify a jitpass audit export without jitpass: Python standard library + `cryptography` only.

    python tools/verify_audit.py EXPORT.jsonl [--witness FILE|-] [--public-keys FILE] [--deployment ID]

EXPORT.jsonl comes from `jitpass audit export`; FILE holds signed checkpoints kept outside the
database (JITPASS_AUDIT_WITNESS_FILE, or lines pasted from chat); the public keys file is the output
of `jitpass audit public-key` (its `# deployment: ID` line names the deployment). Implements
docs/audit-format.md independently of jitpass's own code; exit codes are those of `audit verify`:
0 intact, 2 bad input, 3 chain broken, 5 a checkpoint contradicts the trail, 6 bad witness lines.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
CHECKPOINT_MEMBERS = {"v", "type", "deployment", "seq", "hash", "at", "events", "key", "reason", "sig"}


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(b"jitpass-audit-key" + raw_public).hexdigest()[:16]


class BadInput(Exception):
    pass


def read_text(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        with open(source, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError as exc:
        raise BadInput(f"{source} cannot be read ({exc.strerror})") from None


def read_keys(text: str) -> tuple[dict[str, Ed25519PublicKey], str | None]:
    keys: dict[str, Ed25519PublicKey] = {}
    deployment = None
    for number, raw in enumerate(text.splitlines(), start=1):
        found = re.match(r"^\s*#\s*deployment:\s*([0-9a-f]+)\s*$", raw)
        if found:
            deployment = found.group(1)
            continue
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not line.startswith("ed25519-public:"):
            raise BadInput(f"public keys, line {number}: expected ed25519-public:<base64>")
        try:
            raw_key = base64.b64decode(line[len("ed25519-public:"):], validate=True)
        except (binascii.Error, ValueError):
            raise BadInput(f"public keys, line {number}: not base64") from None
        if len(raw_key) != 32:
            raise BadInput(f"public keys, line {number}: not a 32-byte Ed25519 key")
        keys[key_id(raw_key)] = Ed25519PublicKey.from_public_bytes(raw_key)
    return keys, deployment


def check_chain(lines: list[str]) -> tuple[dict[int, str], int, int, str]:
    """(hash by seq, start seq, last good seq, problem or '')."""
    hashes: dict[int, str] = {}
    start = expected = last = 0
    prev = GENESIS
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            seq, stored_hash, prev_hash = event["seq"], event.pop("hash"), event["prev_hash"]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            return hashes, start, last, f"export line {number} is not an event"
        if not expected:  # the first event: genesis, or where a retention purge left the chain
            start, expected, prev = seq - 1, seq, (GENESIS if seq == 1 else prev_hash)
        if seq != expected:
            what = "missing (deleted?)" if seq > expected else "out of order"
            return hashes, start, last, f"seq {expected}: event {expected} is {what}"
        if prev_hash != prev:
            return hashes, start, last, f"seq {seq}: event {seq} does not follow the event before it"
        if hashlib.sha256(canonical(event)).hexdigest() != stored_hash:
            return hashes, start, last, f"seq {seq}: event {seq} was modified after it was written"
        hashes[seq], prev, last, expected = stored_hash, stored_hash, seq, expected + 1
    return hashes, start, last, ""


def parse_checkpoint(line: str) -> dict[str, Any]:
    begin, end = line.find("{"), line.rfind("}")
    if begin < 0 or end < begin:
        raise ValueError("not a checkpoint (no JSON object on the line)")
    try:
        data = json.loads(line[begin:end + 1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a checkpoint (invalid JSON: {exc.msg})") from None
    if not isinstance(data, dict) or data.get("type") != "jitpass.audit.checkpoint" or data.get("v") != 1:
        raise ValueError("not a checkpoint (type/v)")
    if set(data) != CHECKPOINT_MEMBERS:
        raise ValueError("not a checkpoint (members)")
    for name in ("seq", "events"):
        if type(data[name]) is not int:
            raise ValueError(f"not a checkpoint ({name} is not an integer)")
    for name in ("deployment", "hash", "at", "key", "reason", "sig"):
        if not isinstance(data[name], str):
            raise ValueError(f"not a checkpoint ({name} is not a string)")
    if not TIME.match(data["at"]):
        raise ValueError("not a checkpoint (at)")
    return data


def verify(export: str, witness: str | None, keys: dict[str, Ed25519PublicKey], deployment: str | None
           ) -> tuple[int, list[str]]:
    hashes, start, last, problem = check_chain(export.splitlines())
    out: list[str] = []
    codes: set[int] = set()
    if problem:
        out.append(f"BROKEN (the export): {problem}")
        codes.add(3)
    matched = 0
    for number, line in enumerate((witness or "").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"witness line {number}"
        try:
            cp = parse_checkpoint(stripped)
        except ValueError as exc:
            out.append(f"GARBAGE ({where}): {exc}")
            codes.add(6)
            continue
        if deployment is not None and cp["deployment"] != deployment:
            out.append(f"OTHER_DEPLOYMENT ({where}): seq {cp['seq']}")
            codes.add(6)
            continue
        key = keys.get(cp["key"])
        if key is None:
            out.append(f"KEY_SWAPPED ({where}): seq {cp['seq']} signed by unknown key {cp['key']}")
            codes.add(5)
            continue
        body = {k: v for k, v in cp.items() if k != "sig"}
        try:
            key.verify(base64.b64decode(cp["sig"], validate=True), canonical(body))
        except (InvalidSignature, binascii.Error, ValueError):
            out.append(f"TAMPERED ({where}): seq {cp['seq']}")
            codes.add(6)
            continue
        seq = cp["seq"]
        if not problem and seq > last:
            out.append(f"TRUNCATED ({where}): the export ends at seq {last}, checkpoint seq {seq}")
            codes.add(5)
        elif seq < start:
            out.append(f"note ({where}): seq {seq} predates the export (purged)")
        elif seq in hashes or seq == start:
            if seq in hashes and hashes[seq] != cp["hash"]:
                out.append(f"RECHAINED ({where}): event {seq}")
                codes.add(5)
            else:
                matched += 1
    if witness is not None:
        out.append(f"witness: {matched} checkpoint(s) agree with the export")
    if not problem:
        out.insert(0, f"hash chain intact: seq {start + 1}..{last}")
    code = next((c for c in (3, 5, 6) if c in codes), 0)
    if code == 0:
        out.append("audit trail intact")
    return code, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="`jitpass audit export` output (JSON lines), or - for stdin")
    parser.add_argument("--witness", metavar="FILE|-", help="signed checkpoints kept outside the database")
    parser.add_argument("--public-keys", metavar="FILE", help="`jitpass audit public-key` output")
    parser.add_argument("--deployment", help="the deployment id (default: the public keys file's)")
    args = parser.parse_args(argv)
    try:
        if args.export == "-" and args.witness == "-":
            raise BadInput("only one of EXPORT and --witness can be stdin")
        keys, deployment = read_keys(read_text(args.public_keys)) if args.public_keys else ({}, None)
        if args.witness and not args.public_keys:
            raise BadInput("--witness needs --public-keys (the output of `jitpass audit public-key`)")
        code, lines = verify(read_text(args.export), read_text(args.witness) if args.witness else None, keys,
                             args.deployment or deployment)
    except BadInput as exc:
        print(f"verify_audit: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line, file=sys.stdout if code == 0 else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
