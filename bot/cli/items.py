"""`jitpass items ...`: the credential catalogue."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from bot.bootstrap import Runtime
from bot.cli.common import actor, opened_runtime, read_secret
from bot.cli.help import EXIT_CODES_IMPORT, add_command, close_names, described, exit_codes
from bot.cli.progress import progress
from bot.domain.config import Settings, load_policy
from bot.domain.errors import InputError, JitpassError
from bot.domain.model import Item, Secret
from bot.domain.safe_text import display_text
from bot.domain.totp import parse_totp
from bot.services.importers import ItemInput, VaultRules, read_import, read_vault_map
from bot.services.onepassword_sync import SyncReport


def _item_row(item: Item) -> dict[str, Any]:
    due = item.rotation_due
    return {
        "name": item.name, "vault": item.vault, "username": item.username, "url": item.url,
        "tags": list(item.tags), "has_password": item.has_password, "has_totp": item.has_totp,
        "notes": item.notes, "source": item.source, "category": item.category,
        "onepassword_vault": item.external.vault_title if item.external else None,
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

    table = Table("name", "vault", "source", "username", "url", "totp", "rotation due")
    for item in items:
        due = item.rotation_due
        cells = (item.name, item.vault, item.source, item.username, item.url, "yes" if item.has_totp else "",
                 f"since {due.since:%Y-%m-%d %H:%M} ({', '.join(p.label for p in due.seen_by)})" if due else "")
        table.add_row(*(Text(display_text(c)) for c in cells))  # names from chat: no markup, no escapes
    Console(file=out, width=160).print(table)


async def cmd_items_import(args: argparse.Namespace) -> int:
    by_vault, by_tag = read_vault_map(Path(args.vault_map)) if args.vault_map else ({}, {})
    mapping = bool(args.vault_map) or args.vault_from_tag
    # With a mapping, a row it does not place is an error unless --vault says where such rows go.
    default = args.vault if args.vault is not None else (None if mapping else "default")
    settings = Settings.from_env()
    tag_vaults = _policy_vaults(settings) if args.vault_from_tag else None
    rules = VaultRules(default=default, by_vault=by_vault, by_tag=by_tag, tag_vaults=tag_vaults)
    # The whole file is checked before the store is opened: a rejected file creates nothing.
    result = read_import(Path(args.file), skip_bad=args.skip_bad, rules=rules)
    async with opened_runtime(settings, creates=True) as rt:
        with progress() as tracker:
            outcome = await rt.catalog.import_items(result.items, actor(), source=f"import:{Path(args.file).name}",
                                                    update=args.update, skip_bad=args.skip_bad, tracker=tracker)
        await _note_new_vaults(rt, [i.vault for i in outcome.added])
    for item, changed in outcome.updated:
        print(f"updated: {display_text(item.name)} ({', '.join(changed)})")
    for note in [*result.skipped, *outcome.skipped]:
        print(f"skipped: {display_text(note)}", file=sys.stderr)
    skipped = len(result.skipped) + len(outcome.skipped)
    print(f"imported {len(outcome.added)}, updated {len(outcome.updated)}, unchanged {len(outcome.unchanged)}, "
          f"skipped {skipped}")
    return 0


async def _note_new_vaults(rt: Runtime, vaults: Sequence[str]) -> None:
    """A vault name no policy table and no other item uses may be a typo: say so, with close names."""
    known = set(rt.policy.vaults)
    counts: dict[str, int] = {}
    for item in await rt.store.list_items():
        counts[item.vault] = counts.get(item.vault, 0) + 1
    for vault in dict.fromkeys(vaults):
        just_added = sum(1 for v in vaults if v == vault)
        if vault in known or counts.get(vault, 0) > just_added:
            continue
        close = close_names(vault, known | {v for v, n in counts.items() if v != vault})
        if close:
            print(f"note: vault {vault!r} is new (no [vaults.{vault}] in the policy, no other item); "
                  f"did you mean {' or '.join(close)}?", file=sys.stderr)


def _policy_vaults(settings: Settings) -> frozenset[str]:
    """The vaults `--vault-from-tag` may pick: those the policy file names under [vaults]."""
    if settings.policy_path is None:
        raise InputError("--vault-from-tag needs a policy file naming vaults ([vaults.<name>]); none is set.",
                         hint="Set JITPASS_POLICY (or put policy.toml in the jitpass home), or use --vault-map.")
    vaults = frozenset(load_policy(settings.policy_path).vaults)
    if not vaults:
        raise InputError(f"--vault-from-tag: the policy {settings.policy_path} names no vault under [vaults], "
                         "so no tag can pick one.")
    return vaults


async def cmd_items_add(args: argparse.Namespace) -> int:
    password = read_secret("Password: ", stdin=sys.stdin, optional=False)
    seed = read_secret("TOTP seed or otpauth:// URI (empty for none): ", stdin=sys.stdin, optional=True)
    entry = ItemInput(
        name=args.name.lower(), vault=args.vault.lower(), username=args.username or "", url=args.url or "",
        notes=args.notes or "", tags=tuple(t.strip() for t in (args.tags or "").split(",") if t.strip()),
        password=Secret(password) if password else None, totp=parse_totp(seed) if seed else None,
    )
    async with opened_runtime(creates=True) as rt:
        await rt.catalog.add([entry], actor())
        await _note_new_vaults(rt, [entry.vault])
    print(f"added {entry.name} to vault {entry.vault}")
    return 0


async def cmd_items_list(args: argparse.Namespace) -> int:
    async with opened_runtime() as rt:
        items = await rt.catalog.rotation_due() if args.rotation_due else await rt.service.list_items(args.query or "")
        if args.rotation_due and args.query:
            items = [i for i in items if args.query.lower() in i.name]
        if not items and args.query and not args.json:
            close = close_names(args.query, [i.name for i in await rt.store.list_items()])
            if close:
                print(f"no item matches {display_text(args.query)!r}; did you mean {' or '.join(close)}?",
                      file=sys.stderr)
    _print_items(items, sys.stdout, args.json)
    return 0


async def cmd_items_show(args: argparse.Namespace) -> int:
    async with opened_runtime() as rt:
        item = await rt.service.get_item(args.name)
    if args.json:
        print(json.dumps(_item_row(item), indent=2))
    else:
        sys.stdout.write(item_record(item))
    return 0


def item_record(item: Item) -> str:
    """One item's metadata as aligned `label: value` lines a person reads (no Python reprs)."""
    due = item.rotation_due
    rotation = "-" if due is None else (
        f"due since {due.since:%Y-%m-%d %H:%M} UTC, revealed to {', '.join(p.label for p in due.seen_by) or '-'}"
        + (f" (requests {', '.join(due.request_ids)})" if due.request_ids else ""))
    fields = [
        ("name", item.name), ("vault", item.vault), ("username", item.username), ("url", item.url),
        ("tags", ", ".join(item.tags)), ("password", "stored" if item.has_password else "none"),
        ("totp", "stored" if item.has_totp else "none"),
        ("source", item.source + (f" (1Password vault {item.external.vault_title})" if item.external else "")),
        ("category", item.category), ("rotation", rotation),
        ("rotated", f"{item.password_rotated_at:%Y-%m-%d %H:%M} UTC" if item.password_rotated_at else ""),
    ]
    lines = [f"{label:>9}: {display_text(value) or '-'}" for label, value in fields]
    # Notes may run over several lines: indent them under their label instead of flattening them.
    notes = [display_text(line) for line in item.notes.splitlines()] or ["-"]
    lines.append("    notes: " + ("\n" + " " * 11).join(notes))
    return "\n".join(lines) + "\n"


async def cmd_items_remove(args: argparse.Namespace) -> int:
    async with opened_runtime() as rt:
        await rt.catalog.remove(args.name.lower(), actor())
    print(f"removed {args.name}")
    return 0


async def cmd_items_rotate(args: argparse.Namespace) -> int:
    async with opened_runtime() as rt:
        await rt.catalog.get(args.name.lower())  # an unknown name (with close names) before any prompt
        password = read_secret("New password: ", stdin=sys.stdin, optional=False)
        await rt.catalog.rotate_password(args.name.lower(), Secret(password or ""), actor())
    print(f"recorded the rotation of {args.name}; rotation no longer due")
    return 0


async def cmd_items_sync(args: argparse.Namespace) -> int:
    async with opened_runtime(creates=True) as rt:
        if rt.onepassword_sync is None:
            raise InputError("1Password Connect is not configured: set OP_CONNECT_HOST and OP_CONNECT_TOKEN "
                             "(and map vaults under [onepassword.vaults] in the policy).")
        _print_sync(await rt.onepassword_sync.run(actor()))
        if rt.shadow is None or not args.events:
            return 0
        try:
            usage = await rt.shadow.run(rt.service)
        except JitpassError as exc:  # the catalogue is synced; only the usage reading failed
            print(f"1Password item usage was not read: {exc.message}", file=sys.stderr)
            return 1
    for flagged in usage.flagged:
        print(f"shadow access: {display_text(flagged)}")
    print(f"1Password item usage: {usage.read} read, {len(usage.flagged)} without a grant"
          + (" (the stored cursor was no longer valid; read again from the last usage)" if usage.cursor_reset
             else ""))
    return 0


def _print_sync(report: SyncReport) -> None:
    for label, names in (("added", report.added), ("updated", report.updated), ("removed", report.removed),
                         ("rotated", report.rotated)):
        for name in names:
            print(f"{label}: {display_text(name)}")
    for request_id in report.ended:
        print(f"ended: {request_id} (its item left 1Password)")
    for note in report.notes:
        print(f"note: {display_text(note)}", file=sys.stderr)
    for problem in report.problems:
        print(f"not served: {display_text(problem)}", file=sys.stderr)
    print(f"1Password sync: {report.summary()}", flush=True)


VAULT_MAP_HELP = """Vault map (--vault-map FILE, TOML; names and tags compared without case):
  [vaults]                 # 1Password vault name (the export's Vault column) -> jitpass vault
  "Acme Corp" = "acme"
  [tags]                   # a row's tag -> jitpass vault (two tags naming different vaults: an error)
  globex = "globex"
"""


_JSON_HELP = "print JSON (a machine-readable form of the same fields) instead of the readable form"
_NAME_HELP = "the item's name, as `items list` shows it (e.g. acme-zendesk)"
_ADD_STDIN = """  Without a terminal, two lines are read from stdin (secrets never come through argv):
    line 1: the password (required; kept byte for byte, spaces included)
    line 2: the TOTP seed, base32 or an otpauth:// URI (empty line or end of input: none)"""


def add_commands(sub: Any) -> None:
    """Add this command group to the `jitpass` sub-command parser."""
    items = sub.add_parser("items", help="the credential catalogue",
                           description="The credential catalogue: add, import, list, show, remove, rotate, sync.",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=described(["jitpass items list acme", "jitpass items import export.csv "
                                             "--vault-from-tag"])).add_subparsers(
        dest="items_cmd", required=True, metavar="COMMAND")
    p = add_command(
        items, "import", "import a 1Password CSV export or a jitpass JSON file",
        description="Import items from a 1Password CSV export (.csv) or a jitpass JSON file (.json). Every row "
        "is checked first: a bad row, a name used twice in the file, or (without --update) a name already in "
        "the catalogue rejects the whole file, naming each row, unless --skip-bad. Archived rows are skipped."
        "\n\nA row's vault is, first match wins: --vault-map's [vaults] (its 1Password vault), --vault-map's "
        "[tags], --vault-from-tag, the file's own Vault column / \"vault\" field, then --vault.",
        example=["jitpass items import export.csv --vault acme",
                 "jitpass items import export.csv --vault-from-tag --update",
                 "jitpass items import export.csv --vault-map vaults.toml --skip-bad"],
        codes=EXIT_CODES_IMPORT + "\n\n" + VAULT_MAP_HELP)
    p.add_argument("file", help="the export: .csv (1Password 8: Title,Url,Username,Password,OTPAuth,...,Tags,Notes"
                   ", optional Vault) or .json ({\"items\": [{\"name\", \"vault\", \"password\", ...}]})")
    p.add_argument("--vault", default=None,
                   help="vault for rows nothing else places (default: 'default'; with --vault-from-tag or "
                   "--vault-map such rows are an error unless --vault is given)")
    p.add_argument("--vault-from-tag", action="store_true",
                   help="a row tagged with the name of a policy vault ([vaults.<name>]) goes to that vault; "
                   "tags naming two vaults are an error for that row")
    p.add_argument("--vault-map", metavar="FILE",
                   help="TOML table mapping 1Password vault names ([vaults]) and tags ([tags]) to jitpass vaults")
    p.add_argument("--update", action="store_true",
                   help="change items that already exist (fields, secrets, vault) in place, audited as "
                   "item.updated; without it an existing name rejects its row")
    p.add_argument("--skip-bad", action="store_true",
                   help="import the good rows and report the bad, duplicate or existing ones (stderr)")
    p.set_defaults(handler=cmd_items_import)
    p = add_command(items, "add", "add one item; its password and TOTP seed are read at a prompt or from stdin",
                    example=["jitpass items add acme-zendesk --vault acme --username admin@acme.example",
                             "printf '%s\\n%s\\n' \"$PASSWORD\" \"$OTPAUTH_URI\" | jitpass items add acme-aws "
                             "--vault acme"],
                    stdin=_ADD_STDIN)
    p.add_argument("name", help="the new item's name: 1-64 lowercase letters, digits, '.', '_' or '-'")
    p.add_argument("--vault", required=True, help="the vault it belongs to (its [vaults.<name>] policy applies)")
    p.add_argument("--username", help="the login name shown with the secret")
    p.add_argument("--url", help="where the credential is used (shown in chat)")
    p.add_argument("--notes", help="free text shown to whoever is granted access (not a secret)")
    p.add_argument("--tags", help="comma-separated tags, e.g. support,billing")
    p.set_defaults(handler=cmd_items_add)
    p = add_command(items, "list", "metadata of matching items (never a secret)",
                    example=["jitpass items list", "jitpass items list zendesk --json",
                             "jitpass items list --rotation-due"])
    p.add_argument("query", nargs="?",
                   help="only items whose name, vault, URL, username or tags contain every word of it")
    p.add_argument("--rotation-due", action="store_true", help="only items revealed since their last rotation")
    p.add_argument("--json", action="store_true", help=_JSON_HELP)
    p.set_defaults(handler=cmd_items_list)
    p = add_command(items, "show", "one item's metadata, as a readable record or JSON",
                    example=["jitpass items show acme-zendesk", "jitpass items show acme-zendesk --json"])
    p.add_argument("name", help=_NAME_HELP)
    p.add_argument("--json", action="store_true", help=_JSON_HELP)
    p.set_defaults(handler=cmd_items_show)
    p = add_command(items, "remove", "delete an item (refused while a request for it is open; audited)",
                    example="jitpass items remove acme-old-wiki")
    p.add_argument("name", help=_NAME_HELP)
    p.set_defaults(handler=cmd_items_remove)
    p = add_command(items, "rotate", "record a new password after rotating it at the provider (clears rotation "
                    "due; audited)", example=["jitpass items rotate acme-zendesk",
                                              "printf '%s\\n' \"$NEW_PASSWORD\" | jitpass items rotate acme-zendesk"],
                    stdin="  Without a terminal, one line is read from stdin: the new password (required).")
    p.add_argument("name", help=_NAME_HELP)
    p.set_defaults(handler=cmd_items_rotate)
    p = add_command(items, "sync", "read item metadata from the 1Password vaults the policy serves (Connect)",
                    description="Read item metadata from the 1Password vaults mapped under [onepassword.vaults] "
                    "(needs OP_CONNECT_HOST and OP_CONNECT_TOKEN); then, with OP_EVENTS_TOKEN, flag items used "
                    "directly in 1Password without a grant. See docs/1password.md.",
                    example=["jitpass items sync", "jitpass items sync --no-events"],
                    codes=exit_codes("1    the catalogue was synced but the 1Password item usage could not be read",
                                     done="synced (and usage read)"))
    p.add_argument("--no-events", dest="events", action="store_false",
                   help="do not read 1Password item usage (shadow access) after the sync")
    p.set_defaults(handler=cmd_items_sync)
