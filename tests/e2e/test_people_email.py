"""One person by verified e-mail: unlinked accounts on two platforms that report one confirmed address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from adapters.slack.api import SlackApi
from adapters.slack.groups import GroupDirectory
from bot.bootstrap import Runtime, open_runtime
from bot.domain.config import parse_policy
from bot.domain.errors import Conflict, NotAllowed
from bot.domain.model import SYSTEM, Identity, Status
from tests.support.app import TEST_POLICY, FakeClock, canary_items, test_settings
from tests.support.fake_slack import BOT_TOKEN, fake_slack

PEOPLE = """
[people.dana]
slack = "UDANA"
email = "Dana@Example.com"
"""


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await open_runtime(test_settings(tmp_path), clock=FakeClock(), policy=parse_policy(TEST_POLICY + PEOPLE))
    await rt.catalog.add(canary_items(), SYSTEM, source="test")
    try:
        yield rt
    finally:
        await rt.store.close()


def test_an_unlinked_account_with_a_verified_e_mail_is_that_person() -> None:
    policy = parse_policy(TEST_POLICY + PEOPLE)
    slack = Identity("slack", "UERIN", email="erin@example.com")
    teams = Identity("teams", "erin-oid", email="erin@example.com")
    assert policy.person_of(slack) == policy.person_of(teams) == "email:erin@example.com"
    assert policy.same_person(slack, teams)
    # The `[people]` entry's e-mail names the person: an unlinked Teams account with it is Dana.
    assert policy.person_of(Identity("teams", "dana-oid", email="dana@example.com")) == "person:dana"
    # Without an e-mail (lookup failed, or none verified) an account is only itself.
    assert policy.person_of(Identity("teams", "erin-oid")) == "teams:erin-oid"
    assert not policy.same_person(slack, Identity("teams", "erin-oid"))


async def test_a_slack_requester_cannot_approve_their_request_from_teams_with_the_same_verified_e_mail(
        runtime: Runtime) -> None:
    # ULEAD1 and lead-oid-2 are unlinked approvers; one verified address makes them one person.
    requester = Identity("slack", "ULEAD1", "lead one", email="lead@example.com")
    request = await runtime.service.request_access(requester, "acme-zendesk fix broken trigger for 1h")
    with pytest.raises(NotAllowed, match="your own request"):
        await runtime.service.approve(request.id, Identity("teams", "lead-oid-2", "Lead", email="lead@example.com"))
    assert (await runtime.service.get_request(request.id)).status is Status.PENDING
    refused = [e async for e in runtime.store.events() if e.type == "access.refused"]
    assert [(e.actor.key if e.actor else None, e.details.get("person"), e.reason) for e in refused] == [
        ("teams:lead-oid-2", "email:lead@example.com", "self-approve")]  # the account and the person
    created = [e async for e in runtime.store.events() if e.type == "request.created"]
    assert created[0].actor is not None and created[0].actor.key == "slack:ULEAD1"
    assert created[0].details["person"] == "email:lead@example.com"


async def test_self_approval_is_refused_when_the_approvers_e_mail_cannot_be_looked_up_but_the_policy_links_them(
        runtime: Runtime) -> None:
    # Dana's request was made with her verified e-mail; her linked Slack account, with no e-mail now
    # (users.info failed), is still Dana by the policy's link.
    teams = Identity("teams", "dana-oid", "Dana", email="dana@example.com")
    request = await runtime.service.request_access(teams, "acme-zendesk fix broken trigger for 1h")
    assert request.person == "person:dana"
    with pytest.raises(NotAllowed, match="your own request"):
        await runtime.service.approve(request.id, Identity("slack", "UDANA", "dana"))


async def test_two_accounts_with_one_verified_e_mail_count_once_for_two_of_m(runtime: Runtime) -> None:
    request = await runtime.service.request_access(Identity("slack", "UCAROL", "carol"),
                                                   "globex-aws deploy hotfix for 1h")  # 2 approvals needed
    await runtime.service.approve(request.id, Identity("slack", "ULEAD2", "lead two", email="l2@example.com"))
    with pytest.raises(Conflict, match="already approved"):
        await runtime.service.approve(request.id, Identity("teams", "lead-oid-2", "Lead 2", email="l2@example.com"))
    assert (await runtime.service.get_request(request.id)).status is Status.PENDING
    # Read back from the store, the first approval keeps its e-mail: a restart does not split the person.
    stored = await runtime.service.get_request(request.id)
    assert [a.approver.email for a in stored.approvals] == ["l2@example.com"]
    approved = await runtime.service.approve(request.id, Identity("teams", "lead-oid-1", "Lead 1"))
    assert approved.status is Status.ACTIVE
    added = [e async for e in runtime.store.events() if e.type == "request.approval_added"]
    assert [(e.actor.key if e.actor else None, e.details.get("person")) for e in added] == [
        ("slack:ULEAD2", "email:l2@example.com")]


async def test_slack_gives_only_a_confirmed_e_mail_and_a_failed_lookup_gives_none() -> None:
    now = [0.0]
    async with fake_slack() as fake, aiohttp.ClientSession() as session:
        directory = GroupDirectory(SlackApi(BOT_TOKEN, fake.url, session), frozenset(), email_ttl=60,
                                   monotonic=lambda: now[0])
        fake.emails |= {"UCONF": "Conf@Example.com", "UNCONF": "unconf@example.com"}
        fake.unconfirmed.add("UNCONF")
        assert (await directory.identity("UCONF", "c")).email == "conf@example.com"
        assert await directory.verified_email("UNCONF") == ""  # typed into a profile, never confirmed
        assert await directory.verified_email("BOGUS") == ""  # user_not_found
        assert fake.calls_to("users.info", ok=False)[-1].error == "user_not_found"
        calls = len(fake.calls_to("users.info"))
        assert await directory.verified_email("UCONF") == "conf@example.com"  # cached
        assert len(fake.calls_to("users.info")) == calls
        # Without users:read.email Slack leaves the e-mail out; without users:read it refuses the call.
        now[0] = 61.0
        fake.scopes.discard("users:read.email")
        assert await directory.verified_email("UCONF") == ""
        fake.scopes.clear()
        assert await directory.verified_email("UOTHER") == ""
        assert fake.calls_to("users.info", ok=False)[-1].error == "missing_scope"
