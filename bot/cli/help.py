"""The parts every `--help` ends with: an example and the exit codes; and close-name suggestions."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Sequence

__all__ = ["EXIT_CODES", "EXIT_CODES_IMPORT", "EXIT_CODES_POLICY", "SuggestingParser", "close_names", "described"]

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
