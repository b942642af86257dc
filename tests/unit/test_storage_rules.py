"""The rules both stores apply, stated once in storage.common: the compare-and-set guard and the purge cutoff.

The stores' own behaviour under these rules is exercised by the contract suite on SQLite and MongoDB
(tests/contract); these tests pin the rules themselves.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.model import AccessRequest, Identity, Status, Window
from storage.common import cas_allows, purge_cutoff

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
REQUEST = replace(AccessRequest(
    id="R-ABCDEFGH", item="acme-zendesk", vault="acme", requester=Identity("slack", "UREQ", "Req One"),
    reason="fix broken trigger", window=Window(timedelta(hours=1)), status=Status.PENDING,
    created_at=NOW, updated_at=NOW, platform="slack",
), version=3)


@pytest.mark.parametrize(("statuses", "expected_version", "allowed"), [
    ({"pending"}, None, True),
    ({"pending", "approved"}, 3, True),
    ({"approved"}, None, False),  # not in a from-status
    (set(), None, False),
    ({"pending"}, 2, False),  # another writer bumped the version since the caller read it
    ({"pending"}, 4, False),
    ({"active"}, 3, False),
])
def test_cas_guard(statuses: set[str], expected_version: int | None, allowed: bool) -> None:
    assert cas_allows(REQUEST, statuses, expected_version) is allowed


@pytest.mark.parametrize(("newest", "first_kept", "cutoff"), [
    (10, None, 9),  # every event is older than the cutoff time: all but the newest go
    (10, 4, 3),  # only the prefix before the first event to keep
    (10, 10, 9),
    (10, 1, 0),  # nothing is old enough: nothing goes
    (1, None, 0),  # a lone event is the newest one and stays
])
def test_purge_cutoff_is_a_prefix_and_never_the_newest(newest: int, first_kept: int | None, cutoff: int) -> None:
    assert purge_cutoff(newest, first_kept) == cutoff
    assert purge_cutoff(newest, first_kept) < newest
