"""Text from the audit trail made safe to show: spreadsheet cells and terminals.

Display names, reasons and item names come from chat users. Opened in a spreadsheet, a CSV cell
starting with `=`, `+`, `-`, `@`, tab or CR is a formula (OWASP "CSV Injection"); printed on a
terminal, ESC / CSI sequences recolour, hide or rewrite what an auditor sees, and bidirectional
overrides reorder it. JSON lines exports stay exact (JSON escapes C0 controls itself); these
helpers are for the human-facing formats only.
"""

from __future__ import annotations

import re

__all__ = ["FORMULA_PREFIXES", "csv_cell", "display_text"]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# C0 controls, DEL, C1 controls (0x9b is an 8-bit CSI), and the Unicode bidi embeddings,
# overrides and isolates ("Trojan Source"). Newlines are controls too: one field, one line.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# A whole escape sequence, so its parameters ("[31m") do not stay behind as text.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])|\x9b[0-?]*[ -/]*[@-~]")


def display_text(value: str) -> str:
    """`value` without terminal escape sequences, control characters or bidi overrides."""
    return _CONTROLS.sub("", _ESCAPES.sub("", value))


def csv_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: OWASP's leading single quote before a formula prefix."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value
