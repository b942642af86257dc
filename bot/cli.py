"""`jitpass` commands: serve, items, audit, keys, policy (and report / retention)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import json
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

from bot.audit import verify_chain
from bot.audit_export import CSV_COLUMNS, csv_row, jsonl_line
from bot.config import Settings, load_policy, parse_policy
from bot.errors import InputError, JitpassError
from bot.importers import ItemInput, read_import
from bot.model import Identity, Item, Secret
from bot.parse import MAX_LOOKBACK, format_duration, parse_duration
from bot.progress import progress
from bot.runtime import Runtime
from bot.safe_text import display_text
from bot.totp import parse_totp
from bot.vault import format_key_line, generate_key

__all__ = ["main"]

log = logging.getLogger("jitpass.cli")

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _actor() -> Identity:
    user = os.environ.get("JITPASS_ADMIN") or getpass.getuser()
    return Identity("cli", user, user)


@asynccontextmanager
async def _runtime(settings: Settings | None = None, *, create_key: bool = True) -> AsyncIterator[Runtime]:
    from bot.app import open_runtime  # the composition root, imported only by commands that need a store

    runtime = await open_runtime(settings or Settings.from_env(), create_key=create_key)
    try:
        yield runtime
    finally:
        await runtime.store.close()


def _read_secret(prompt: str, *, stdin: TextIO, optional: bool) -> str | None:
    """From a prompt on a terminal, else one line of stdin: secrets never come through argv."""
    if stdin.isatty():
        value = getpass.getpass(prompt)
    else:
        line = stdin.readline()
        value = line.rstrip("\r\n")
    if not value and not optional:
        raise InputError(f"{prompt.strip(': ')} is required.")
    return value or None


def _item_row(item: Item) -> dict[str, Any]:
    due = item.rotation_due
    return {
        "name": item.name, "vault": item.vault, "username": item.username, "url": item.url,
        "tags": list(item.tags), "has_password": item.has_password, "has_totp": item.has_totp,
        "notes": item.notes,
        "rotation_due": None if due is None else {
            "since": due.since.isoformat(), "seen_by": [p.label for p in due.seen_by],
            "requests": list(due.request_ids)},
    }


def _print_items(items: Sequence[Item], out: TextIO, as_json: bool) -> None:
    if as_json:
        json.dump([_item_row(i) for i in items], out, indent=2)
        out.write("\n")
        return
    if not items:
        out.write("no items\n")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table("name", "vault", "username", "url", "totp", "rotation due")
    for item in items:
        due = item.rotation_due
        cells = (item.name, item.vault, item.username, item.url, "yes" if item.has_totp else "",
                 f"since {due.since:%Y-%m-%d %H:%M} ({', '.join(p.label for p in due.seen_by)})" if due else "")
        table.add_row(*(Text(display_text(c)) for c in cells))  # names from chat: no markup, no escapes
    Console(file=out, width=160).print(table)


# -- serve -----------------------------------------------------------------------------------------


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


# -- items -----------------------------------------------------------------------------------------


async def cmd_items_import(args: argparse.Namespace) -> int:
    result = read_import(Path(args.file), default_vault=args.vault, skip_bad=args.skip_bad)
    async with _runtime(create_key=True) as rt:
        with progress() as tracker:
            added = await rt.catalog.add(result.items, _actor(), source=f"import:{Path(args.file).name}",
                                         tracker=tracker)
    for note in result.skipped:
        print(f"skipped: {note}", file=sys.stderr)
    print(f"imported {len(added)} item(s)" + (f", skipped {len(result.skipped)}" if result.skipped else ""))
    return 0


async def cmd_items_add(args: argparse.Namespace) -> int:
    password = _read_secret("Password: ", stdin=sys.stdin, optional=False)
    seed = _read_secret("TOTP seed or otpauth:// URI (empty for none): ", stdin=sys.stdin, optional=True)
    entry = ItemInput(
        name=args.name.lower(), vault=args.vault.lower(), username=args.username or "", url=args.url or "",
        notes=args.notes or "", tags=tuple(t.strip() for t in (args.tags or "").split(",") if t.strip()),
        password=Secret(password) if password else None, totp=parse_totp(seed) if seed else None,
    )
    async with _runtime(create_key=True) as rt:
        await rt.catalog.add([entry], _actor())
    print(f"added {entry.name} to vault {entry.vault}")
    return 0


async def cmd_items_list(args: argparse.Namespace) -> int:
    async with _runtime() as rt:
        items = await rt.catalog.rotation_due() if args.rotation_due else await rt.service.list_items(args.query or "")
        if args.rotation_due and args.query:
            items = [i for i in items if args.query.lower() in i.name]
    _print_items(items, sys.stdout, args.json)
    return 0


async def cmd_items_show(args: argparse.Namespace) -> int:
    async with _runtime() as rt:
        item = await rt.service.get_item(args.name)
    row = _item_row(item)
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        for key, value in row.items():
            print(f"{key:>13}: {display_text(str(value)) if value not in (None, [], '') else '-'}")
    return 0


async def cmd_items_remove(args: argparse.Namespace) -> int:
    async with _runtime() as rt:
        await rt.catalog.remove(args.name.lower(), _actor())
    print(f"removed {args.name}")
    return 0


async def cmd_items_rotate(args: argparse.Namespace) -> int:
    password = _read_secret("New password: ", stdin=sys.stdin, optional=False)
    async with _runtime() as rt:
        await rt.catalog.rotate_password(args.name.lower(), Secret(password or ""), _actor())
    print(f"recorded the rotation of {args.name}; rotation no longer due")
    return 0


# -- audit -----------------------------------------------------------------------------------------

async def cmd_audit_export(args: argparse.Namespace) -> int:
    since = None
    out: TextIO = open(args.out, "w", encoding="utf-8", newline="") if args.out else sys.stdout  # noqa: SIM115
    try:
        async with _runtime() as rt:
            if args.since:
                since = rt.clock.now() - parse_duration(args.since, maximum=MAX_LOOKBACK)
            # OWASP: every cell quoted, formulas neutralised (bot/audit_export.py).
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


async def cmd_audit_verify(args: argparse.Namespace) -> int:
    async with _runtime() as rt:
        checkpoint = await rt.store.checkpoint()
        if checkpoint:
            report = await verify_chain(rt.store.events(), start_seq=checkpoint.seq, start_hash=checkpoint.hash)
        else:
            report = await verify_chain(rt.store.events())
    if report.ok:
        start = f" (from the retention checkpoint after event {checkpoint.seq})" if checkpoint else ""
        print(f"audit trail intact: {report.checked} event(s) verified{start}, last seq {report.last_seq}")
        return 0
    print(f"audit trail BROKEN at seq {report.first_broken_seq}: {report.problem}", file=sys.stderr)
    return 3


# -- keys ------------------------------------------------------------------------------------------


async def cmd_keys_rotate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if settings.master_key:
        raise InputError(
            "JITPASS_MASTER_KEY is set in the environment, so jitpass cannot add a key to it.",
            hint="Append the line printed by `jitpass keys generate` to the value (the last key is active), "
                 "restart, then run `jitpass keys rotate` again; or use JITPASS_MASTER_KEY_FILE.")
    path = settings.master_key_file
    if not path.exists():
        raise InputError(f"master key file {path} does not exist: nothing to rotate.")
    # Open with the current ring first: a wrong key fails here, before anything changes.
    async with _runtime(settings):
        pass
    old_text = path.read_text(encoding="utf-8")
    new_key = generate_key()
    path.write_text(old_text.rstrip("\n") + "\n" + format_key_line(new_key) + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    try:
        async with _runtime(settings) as rt:
            moved = await rt.catalog.rotate_master_key(_actor())
    except BaseException:
        path.write_text(old_text, encoding="utf-8")  # nothing was re-wrapped: keep the old ring
        raise
    if args.retire_old:
        path.write_text(format_key_line(new_key) + "\n", encoding="utf-8")
    print(f"new master key {new_key.key_id} is active; {moved} item(s) re-wrapped"
          + ("; old keys retired" if args.retire_old else "; old keys can now be removed with --retire-old"))
    return 0


async def cmd_keys_generate(args: argparse.Namespace) -> int:
    print(format_key_line(generate_key()))
    return 0


# -- policy ----------------------------------------------------------------------------------------


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


# -- parser ----------------------------------------------------------------------------------------


def _duration_arg(text: str) -> str:
    try:
        parse_duration(text, maximum=MAX_LOOKBACK)
    except JitpassError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jitpass", description="Just-in-time access to shared credentials.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (Slack, Teams, scheduler)")
    serve.add_argument("--demo", action="store_true", help="seed a demo item; built-in demo policy if none set")
    serve.add_argument("--host", help="bind address (default JITPASS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default PORT or 3978)")
    serve.set_defaults(handler=cmd_serve)

    items = sub.add_parser("items", help="the credential catalogue").add_subparsers(dest="items_cmd", required=True)
    p = items.add_parser("import", help="import a 1Password CSV export or a jitpass JSON file")
    p.add_argument("file")
    p.add_argument("--vault", default="default", help="vault for rows that name none (default: default)")
    p.add_argument("--skip-bad", action="store_true", help="import the good rows and report the bad ones")
    p.set_defaults(handler=cmd_items_import)
    p = items.add_parser("add", help="add one item; password and TOTP seed are read at a prompt or from stdin")
    p.add_argument("name")
    p.add_argument("--vault", required=True)
    p.add_argument("--username")
    p.add_argument("--url")
    p.add_argument("--notes")
    p.add_argument("--tags", help="comma-separated")
    p.set_defaults(handler=cmd_items_add)
    p = items.add_parser("list", help="metadata of matching items")
    p.add_argument("query", nargs="?")
    p.add_argument("--rotation-due", action="store_true", help="only items revealed since their last rotation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_items_list)
    p = items.add_parser("show", help="one item's metadata")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_items_show)
    p = items.add_parser("remove", help="delete an item")
    p.add_argument("name")
    p.set_defaults(handler=cmd_items_remove)
    p = items.add_parser("rotate", help="record a new password (read at a prompt or from stdin)")
    p.add_argument("name")
    p.set_defaults(handler=cmd_items_rotate)

    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="audit_cmd", required=True)
    p = audit.add_parser("export", help="events as JSON lines or CSV")
    p.add_argument("--since", type=_duration_arg, help="e.g. 30d, 12h")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--out", help="file to write (default stdout)")
    p.set_defaults(handler=cmd_audit_export)
    p = audit.add_parser("verify", help="check the hash chain (exit 3 with the first broken seq)")
    p.set_defaults(handler=cmd_audit_verify)

    keys = sub.add_parser("keys", help="master keys").add_subparsers(dest="keys_cmd", required=True)
    p = keys.add_parser("rotate", help="add a new master key and re-wrap every item under it")
    p.add_argument("--retire-old", action="store_true", help="then drop the old keys from the key file")
    p.set_defaults(handler=cmd_keys_rotate)
    p = keys.add_parser("generate", help="print a new key-ring line (for JITPASS_MASTER_KEY)")
    p.set_defaults(handler=cmd_keys_generate)

    policy = sub.add_parser("policy", help="the access policy").add_subparsers(dest="policy_cmd", required=True)
    p = policy.add_parser("check", help="validate a policy file")
    p.add_argument("file", nargs="?")
    p.set_defaults(handler=cmd_policy_check)

    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: Any) -> None:
    """Report and retention commands live with their module (bot/reports.py)."""
    try:
        from bot.reports_cli import add_commands
    except ImportError:
        return
    add_commands(sub)


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
        error_id = uuid.uuid4().hex[:8]
        log.error("event=unexpected_error error_id=%s", error_id, exc_info=args.verbose)
        print(f"jitpass: something went wrong (error id {error_id}); run with -v for details", file=sys.stderr)
        return 1
