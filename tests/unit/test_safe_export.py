"""Exports a spreadsheet or terminal cannot be attacked through: OWASP CSV injection, terminal escapes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from bot.domain.audit import GENESIS_HASH, event_from_dict, seal_event, verify_chain
from bot.domain.audit_export import CSV_COLUMNS, csv_row, jsonl_line
from bot.domain.model import Event, EventDraft, Identity
from bot.domain.safe_text import csv_cell, display_text

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
HOSTILE = Identity("slack", "U1\x1b[2J", "Mallory\x1b[31m RED\x1b]0;owned\x07\u202eevil\x9b2J")


@pytest.mark.parametrize("value", ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)",
                                   "\t=1", "\r=1"])
def test_every_formula_prefix_becomes_text(value: str) -> None:
    assert csv_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["fix the job", "", "a=b", "1-2", "'quoted"])
def test_ordinary_cells_stay_as_they_are(value: str) -> None:
    assert csv_cell(value) == value


def test_display_text_removes_escape_sequences_controls_and_bidi_overrides() -> None:
    assert display_text(HOSTILE.display) == "Mallory REDevil"
    assert display_text("line\nbreak\x00\x7f") == "linebreak"
    assert display_text("Zoë 😀 назад") == "Zoë 😀 назад"


def _hostile_event() -> Event:
    draft = EventDraft("grant.revealed", HOSTILE, "r1", "=cmd|' /C calc'!A0", "-vault",
                       "=HYPERLINK(\"http://evil\",\"click\")\x1b[8m", {"note": "\x1b[31m"})
    return seal_event(draft, seq=1, prev_hash=GENESIS_HASH, at=AT)


def test_csv_row_neutralises_formulas_and_strips_escapes_from_display_fields() -> None:
    event = _hostile_event()
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL)
    writer.writerow(CSV_COLUMNS)
    writer.writerow(csv_row(event))
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["reason"] == "'=HYPERLINK(\"http://evil\",\"click\")"
    assert row["item"] == "'=cmd|' /C calc'!A0" and row["vault"] == "'-vault"
    assert row["actor_display"] == "Mallory REDevil" and row["actor_user_id"] == "U1"
    assert "\x1b" not in out.getvalue() and "\x9b" not in out.getvalue()
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row.values())


async def test_jsonl_stays_exact_and_still_verifies() -> None:
    event = _hostile_event()
    line = jsonl_line(event)
    data = json.loads(line)
    assert data["actor"]["display"] == HOSTILE.display and data["reason"].startswith("=HYPERLINK")
    assert "\x1b" not in line  # JSON escapes C0 controls itself

    async def one() -> AsyncIterator[Event]:
        yield event_from_dict(data)

    report = await verify_chain(one())
    assert report.ok
