"""People, not accounts: a person's Slack and Teams accounts are one requester and one approver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.bootstrap import Runtime, open_runtime
from bot.domain.config import parse_policy
from bot.domain.errors import Conflict, NotAllowed, PolicyError
from bot.domain.model import SYSTEM, Identity, Status
from tests.support.app import TEST_POLICY, FakeClock, canary_items, test_settings

PEOPLE = """
[people.lead-one]
slack = "ULEAD1"
teams = "lead-oid-1"

[people.alice]
slack = "UALICE"
teams = "alice-oid"
email = "alice@example.com"

[onepassword]
people = { "alice@example.com" = ["teams:alice-laptop-oid"], "bob@example.com" = ["slack:UBOB", "teams:bob-oid"] }
"""

ALICE_SLACK = Identity("slack", "UALICE", "alice")
ALICE_TEAMS = Identity("teams", "alice-oid", "Alice")
LEAD_SLACK = Identity("slack", "ULEAD1", "lead one")
LEAD_TEAMS = Identity("teams", "lead-oid-1", "Lead One")
LEAD2 = Identity("slack", "ULEAD2", "lead two")


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await open_runtime(test_settings(tmp_path), clock=FakeClock(), policy=parse_policy(TEST_POLICY + PEOPLE))
    await rt.catalog.add(canary_items(), SYSTEM, source="test")
    try:
        yield rt
    finally:
        await rt.store.close()


def test_the_policy_links_accounts_by_name_and_by_e_mail() -> None:
    policy = parse_policy(TEST_POLICY + PEOPLE)
    assert policy.person_of(ALICE_SLACK) == policy.person_of(ALICE_TEAMS) == "person:alice"
    assert policy.person_of(Identity("teams", "alice-laptop-oid")) == "person:alice"  # the same e-mail
    assert policy.person_of(Identity("slack", "UBOB")) == policy.person_of(Identity("teams", "bob-oid"))
    assert policy.person_of(LEAD2) == "slack:ULEAD2"  # unlinked: the account is the person
    assert policy.is_approver("acme", LEAD_TEAMS)  # an approver through the linked Slack account
    with pytest.raises(PolicyError, match="linked to two people"):
        parse_policy(TEST_POLICY + PEOPLE + '\n[people.mallory]\nslack = "UALICE"\n')
    with pytest.raises(PolicyError, match=r"people\.x\.phone"):
        parse_policy(TEST_POLICY + '[people.x]\nphone = "1"\n')


async def test_one_lead_on_two_platforms_is_one_vote(runtime: Runtime) -> None:
    request = await runtime.service.request_access(Identity("slack", "UCAROL", "carol"),
                                                   "globex-aws deploy hotfix for 1h")  # 2 approvals needed
    await runtime.service.approve(request.id, LEAD_SLACK)
    with pytest.raises(Conflict, match="already approved"):
        await runtime.service.approve(request.id, LEAD_TEAMS)
    assert (await runtime.service.get_request(request.id)).status is Status.PENDING
    approved = await runtime.service.approve(request.id, LEAD2)
    assert approved.status is Status.ACTIVE


async def test_a_requester_cannot_approve_their_own_request_from_the_other_platform(runtime: Runtime) -> None:
    request = await runtime.service.request_access(LEAD_SLACK, "acme-zendesk fix broken trigger for 1h")
    with pytest.raises(NotAllowed, match="your own request"):
        await runtime.service.approve(request.id, LEAD_TEAMS)
    refused = [e async for e in runtime.store.events() if e.type == "access.refused"]
    assert [(e.actor.key if e.actor else None, e.details.get("person"), e.reason) for e in refused] == [
        ("teams:lead-oid-1", "person:lead-one", "self-approve")]  # the account and the person


async def test_one_open_request_per_person_across_platforms(runtime: Runtime) -> None:
    first = await runtime.service.request_access(ALICE_SLACK, "acme-zendesk fix broken trigger for 1h")
    with pytest.raises(Conflict, match="already have an open request for acme-zendesk"):
        await runtime.service.request_access(ALICE_TEAMS, "acme-zendesk fix broken trigger for 1h")
    created = [e async for e in runtime.store.events() if e.type == "request.created"]
    assert [e.request_id for e in created] == [first.id]
    assert created[0].details["person"] == "person:alice"
    # The person may end or cancel their request from either account.
    cancelled = await runtime.service.cancel(first.id, ALICE_TEAMS)
    assert cancelled.status is Status.CANCELLED
