"""The two export formats of the audit trail: JSON lines (exact) and CSV (safe to open)."""

from __future__ import annotations

import json

from bot.domain.audit import event_to_dict
from bot.domain.model import Event
from bot.domain.safe_text import csv_cell, display_text

__all__ = ["CSV_COLUMNS", "csv_row", "jsonl_line"]

CSV_COLUMNS = ["seq", "id", "at", "type", "actor_platform", "actor_user_id", "actor_display", "request_id",
               "item", "vault", "reason", "details", "prev_hash", "hash"]


def jsonl_line(event: Event) -> str:
    """The event exactly as hashed (plus its hash): what `audit verify` and tools/ check."""
    return json.dumps(event_to_dict(event), ensure_ascii=False, sort_keys=True) + "\n"


def csv_row(event: Event) -> list[str]:
    """One CSV row for a spreadsheet: display fields without control characters, no cell a formula.

    CSV is for reading, not verifying: the cleaned cells no longer hash to `hash`; use JSON lines for that.
    """
    row = event_to_dict(event)
    actor = row.pop("actor") or {}
    shown = [actor.get("platform", ""), actor.get("user_id", ""), actor.get("display", ""), row["request_id"] or "",
             row["item"] or "", row["vault"] or "", row["reason"]]
    cells = [str(row["seq"]), row["id"], row["at"], row["type"], *(display_text(str(v)) for v in shown),
             json.dumps(row["details"], sort_keys=True), row["prev_hash"], row["hash"]]
    return [csv_cell(cell) for cell in cells]
