"""`jitpass keys rotate|generate`: master keys."""

from __future__ import annotations

import argparse
import os
from typing import Any

from bot.cli.common import actor, opened_runtime
from bot.domain.config import Settings
from bot.domain.errors import InputError
from bot.domain.vault import format_key_line, generate_key


async def cmd_keys_rotate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if settings.master_key:
        raise InputError(
            "JITPASS_MASTER_KEY is set in the environment, so jitpass cannot add a key to it.",
            hint="Append the line printed by `jitpass keys generate` to the value (the last key is active), "
                 "restart, then run `jitpass keys rotate` again; or use JITPASS_MASTER_KEY_FILE.")
    path = settings.master_key_file
    if not path.exists():
        raise InputError(f"master key file {path} does not exist: nothing to rotate. Looked in: {settings.where()}")
    # Open with the current ring first: a wrong key fails here, before anything changes.
    async with opened_runtime(settings):
        pass
    old_text = path.read_text(encoding="utf-8")
    new_key = generate_key()
    path.write_text(old_text.rstrip("\n") + "\n" + format_key_line(new_key) + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    try:
        async with opened_runtime(settings) as rt:
            moved = await rt.catalog.rotate_master_key(actor())
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


def add_commands(sub: Any) -> None:
    """Add this command group to the `jitpass` sub-command parser."""
    keys = sub.add_parser("keys", help="master keys").add_subparsers(dest="keys_cmd", required=True)
    p = keys.add_parser("rotate", help="add a new master key and re-wrap every item under it")
    p.add_argument("--retire-old", action="store_true", help="then drop the old keys from the key file")
    p.set_defaults(handler=cmd_keys_rotate)
    p = keys.add_parser("generate", help="print a new key-ring line (for JITPASS_MASTER_KEY)")
    p.set_defaults(handler=cmd_keys_generate)
