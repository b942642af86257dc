"""Home-tab markers on the SQLite file: who has opened the app's home tab, per platform (migration 8).

One row per person, written the first time and never changed (`INSERT … ON CONFLICT DO NOTHING`), so
opening the tab again changes nothing. `opened_at` is the first opening, indexed per platform, so a
process can ask for the markers written since it last looked (`since`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from bot.domain.audit import format_time

__all__ = ["MARK", "mark_params", "openers", "openers_query"]

MARK = "INSERT INTO home_tabs (platform, user_id, opened_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
_ALL = "SELECT user_id FROM home_tabs WHERE platform = ?"
_SINCE = "SELECT user_id FROM home_tabs WHERE platform = ? AND opened_at >= ?"


def mark_params(platform: str, user_id: str, at: datetime) -> tuple[str, str, str]:
    """The parameters of `MARK`."""
    return platform, user_id, format_time(at)


def openers_query(platform: str, since: datetime | None) -> tuple[str, tuple[str, ...]]:
    """The SELECT of the markers on `platform` (first recorded at or after `since`) and its parameters."""
    if since is None:
        return _ALL, (platform,)
    return _SINCE, (platform, format_time(since))


def openers(rows: Sequence[sqlite3.Row]) -> set[str]:
    """The user ids of the rows `openers_query` selected."""
    return {str(row[0]) for row in rows}
