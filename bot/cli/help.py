"""The parts every `--help` ends with: an example and the exit codes; and close-name suggestions."""

from __future__ import annotations

import argparse
import difflib
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["EXIT_CODES", "EXIT_CODES_IMPORT", "EXIT_CODES_POLICY", "SuggestingParser", "add_command", "close_names",
           "described", "exit_codes"]

_COMMON = """  2    bad input: an unknown name, option or file, a store that is missing or not jitpass's,
       a policy that does not validate (the message says which and where; nothing was changed)
  130  interrupted (Ctrl-C)
  141  the output was closed early (`| head`): stopped quietly"""

EXIT_CODES = f"""  0    done
  1    an unexpected error (the message gives an error id; -v logs the details)
{_COMMON}"""

EXIT_CODES_POLICY = f"""  0    the policy is valid (warnings, if any, are printed one a line on stderr)
  1    with --strict: the policy is valid but has at least one warning
{_COMMON}"""

EXIT_CODES_IMPORT = f"""  0    imported (the summary says how many were added, updated, unchanged and skipped)
  1    an unexpected error (the message gives an error id; -v logs the details)
{_COMMON}
       An import file with bad rows or duplicate names imports nothing (exit 2) unless --skip-bad."""


def exit_codes(*extra: str, done: str = "done", note: str = "") -> str:
    """The exit-code list of a command with its own codes (`"3    the chain is broken"`) besides the common ones."""
    common = _COMMON.split("\n  130")
    lines = [f"  0    {done}", "  1    an unexpected error (the message gives an error id; -v logs the details)",
             common[0], *(f"  {line}" for line in extra), "  130" + common[1]]
    if note:
        lines.append(textwrap.fill(note, 100, initial_indent="  ", subsequent_indent="  "))
    return "\n".join(lines)


def add_command(sub: Any, name: str, summary: str, *, description: str = "", example: str | Sequence[str],
                codes: str = EXIT_CODES, stdin: str = "") -> argparse.ArgumentParser:
    """A sub-command whose `--help` has a wrapped description, then its stdin format, examples and exit codes."""
    text = "\n\n".join(textwrap.fill(part, 100) for part in (description or summary[:1].upper() + summary[1:] + ".")
                        .split("\n\n"))
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=text, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=described(example, codes, stdin=stdin))
    return parser


def described(example: str | Sequence[str], exit_codes: str = EXIT_CODES, *, stdin: str = "") -> str:
    """The epilog of a command's `--help`: its stdin format (if it reads one), an example, the exit codes."""
    examples = [example] if isinstance(example, str) else list(example)
    parts = [f"Stdin:\n{stdin}"] if stdin else []
    parts.append("Example:\n" + "\n".join(f"  {line}" for line in examples))
    parts.append(f"Exit codes:\n{exit_codes}")
    return "\n\n".join(parts)


def close_names(name: str, names: Iterable[str], n: int = 3) -> list[str]:
    """Up to `n` of `names` close to `name` (spelling first, then names containing it)."""
    pool = sorted(set(names))
    wanted = name.lower()
    close = difflib.get_close_matches(wanted, pool, n=n, cutoff=0.5)
    close += [c for c in pool if wanted and wanted in c and c not in close]
    return close[:n]


class SuggestingParser(argparse.ArgumentParser):
    """argparse's "invalid choice" error, with the close names spelled out as "did you mean"."""

    def _check_value(self, action: argparse.Action, value: object) -> None:
        if action.choices is not None and value not in action.choices:
            choices = sorted(str(c) for c in action.choices)
            close = close_names(str(value), choices)
            what = "command" if isinstance(action, argparse._SubParsersAction) else (action.metavar or action.dest)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise argparse.ArgumentError(
                action, f"unknown {what} {value!r}{hint} (choose from {', '.join(choices)})")
        super()._check_value(action, value)
