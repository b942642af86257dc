"""Who may do what: every action against every role, each cell asserted, refusals audited.

Roles: the requester, an approver of the request's vault, an approver of another vault, an admin, a
stranger, and the requester's own account on the other platform (linked in `[people]`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.bootstrap import Runtime, open_runtime
from bot.domain.commands import Form, Request, Unknown, parse_command
from bot.domain.config import parse_policy
from bot.domain.errors import Conflict, NotAllowed
from bot.domain.model import SYSTEM, Identity
from bot.domain.syntax import SLACK, TEAMS
from bot.reports.chat import chat_report
from tests.support.app import FakeClock, canary_items, test_settings

POLICY = """
timezone = "UTC"
[defaults]
min_reason_length = 4
[rate_limits]
requests = "1000/1h"
codes = "1000/1h"
reports = "1000/1h"
[admins]
slack = ["UADMIN"]
[vaults.acme]
approvals_required = 1
[vaults.acme.approvers]
slack = ["UACMELEAD"]
[vaults.globex]
approvals_required = 1
[vaults.globex.approvers]
slack = ["UGLOBEXLEAD"]
[people.alice]
slack = "UALICE"
teams = "alice-oid"
"""

ROLES = {
    "requester": Identity("slack", "UALICE", "alice"),
    "approver of this vault": Identity("slack", "UACMELEAD", "acme lead"),
    "approver of another vault": Identity("slack", "UGLOBEXLEAD", "globex lead"),
    "admin": Identity("slack", "UADMIN", "admin"),
    "stranger": Identity("slack", "UMALLORY", "mallory"),
    "same person, other platform": Identity("teams", "alice-oid", "Alice"),
}
REQUESTER = ROLES["requester"]
LEAD = ROLES["approver of this vault"]
TEXT = "acme-zendesk fix broken trigger for 1h"

Setup = Callable[[Runtime], Awaitable[str]]
Act = Callable[[Runtime, Identity, str], Awaitable[object]]


async def _nothing(rt: Runtime) -> str:
    return ""


async def _pending(rt: Runtime) -> str:
    return (await rt.service.request_access(REQUESTER, TEXT)).id


async def _active(rt: Runtime) -> str:
    request_id = await _pending(rt)
    await rt.service.approve(request_id, LEAD)
    return request_id


async def request(rt: Runtime, who: Identity, _: str) -> object:
    return await rt.service.request_access(who, "globex-aws check the cost report for 1h")


async def approve(rt: Runtime, who: Identity, request_id: str) -> object:
    return await rt.service.approve(request_id, who)


async def decline(rt: Runtime, who: Identity, request_id: str) -> object:
    return await rt.service.decline(request_id, who, "no")


async def cancel(rt: Runtime, who: Identity, request_id: str) -> object:
    return await rt.service.cancel(request_id, who)


async def done(rt: Runtime, who: Identity, request_id: str) -> object:
    return await rt.service.done(request_id, who)


async def extend(rt: Runtime, who: Identity, request_id: str) -> object:
    return await rt.service.request_extension(request_id, who, "30m")


async def new_code(rt: Runtime, who: Identity, request_id: str) -> object:
    return await rt.service.new_code(request_id, who)


async def report(rt: Runtime, who: Identity, _: str) -> object:
    return await chat_report(rt.service, who, "7d")


ALLOWED = "allowed"
REFUSED = "refused"
SELF = "refused: own request"
ONLY_REQUESTER = {"requester": ALLOWED, "same person, other platform": ALLOWED}
MATRIX: dict[str, tuple[Setup, Act, dict[str, str]]] = {
    "request": (_nothing, request, dict.fromkeys(ROLES, ALLOWED)),
    "approve": (_pending, approve, {**dict.fromkeys(ROLES, REFUSED), "approver of this vault": ALLOWED,
                          "requester": SELF, "same person, other platform": SELF}),
    "decline": (_pending, decline, {**dict.fromkeys(ROLES, REFUSED), "approver of this vault": ALLOWED,
                          "requester": SELF, "same person, other platform": SELF}),
    "cancel": (_pending, cancel, {**dict.fromkeys(ROLES, REFUSED), **ONLY_REQUESTER}),
    "done": (_active, done, {**dict.fromkeys(ROLES, REFUSED), **ONLY_REQUESTER}),
    "extend": (_active, extend, {**dict.fromkeys(ROLES, REFUSED), **ONLY_REQUESTER}),
    "new code": (_active, new_code, {**dict.fromkeys(ROLES, REFUSED), **ONLY_REQUESTER}),
    "report": (_nothing, report, {**dict.fromkeys(ROLES, REFUSED), "admin": ALLOWED}),
}
CELLS = [(action, role) for action in MATRIX for role in ROLES]


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await open_runtime(test_settings(tmp_path), clock=FakeClock(), policy=parse_policy(POLICY))
    await rt.catalog.add(canary_items(), SYSTEM, source="test")
    try:
        yield rt
    finally:
        await rt.store.close()


@pytest.mark.parametrize(("action", "role"), CELLS, ids=[f"{a} by {r}" for a, r in CELLS])
async def test_authorization_matrix(runtime: Runtime, action: str, role: str) -> None:
    setup, act, expected = MATRIX[action]
    who = ROLES[role]
    request_id = await setup(runtime)
    events_before = [e async for e in runtime.store.events()]
    requests_before = [(r.id, r.status, r.version) for r in await runtime.store.find_requests()]
    if expected[role] == ALLOWED:
        await act(runtime, who, request_id)
        new = [e async for e in runtime.store.events()][len(events_before):]
        assert new and "access.refused" not in [e.type for e in new]
        return
    with pytest.raises(NotAllowed) as refused:
        await act(runtime, who, request_id)
    if expected[role] == SELF:
        assert "your own request" in refused.value.message
    new = [e async for e in runtime.store.events()][len(events_before):]
    assert [(e.type, e.actor.key if e.actor else None) for e in new] == [("access.refused", who.key)]
    assert [(r.id, r.status, r.version) for r in await runtime.store.find_requests()] == requests_before


def test_purge_and_item_management_are_not_chat_commands() -> None:
    """Retention purges and the catalogue are CLI-only (OS access to the server and the master key)."""
    now = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
    for text in ("purge", "retention purge 30d", "items add x", "items remove acme-zendesk", "keys rotate"):
        for syntax in (SLACK, TEAMS):
            command = parse_command(text, now=now, tz=UTC, syntax=syntax)
            assert isinstance(command, Unknown | Form | Request), (text, command)
            if isinstance(command, Request):  # read as a request for an item of that name, nothing more
                assert command.draft.item == text.split()[0]


async def test_the_same_person_cannot_hold_two_open_requests_for_one_item(runtime: Runtime) -> None:
    await _pending(runtime)
    with pytest.raises(Conflict):
        await runtime.service.request_access(ROLES["same person, other platform"], TEXT)
