"""1Password as the source of truth: catalogue sync, reveal at the moment of use, rotation, direct use.

jitpass runs for real (open_runtime on a SQLite file, AccessService, the Connect and Events API clients)
against the local 1Password stand-ins over HTTP. Chat is the recording notifier (the port itself).
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest

from bot.bootstrap import Runtime, open_runtime
from bot.domain.audit import format_time
from bot.domain.config import parse_policy
from bot.domain.errors import InputError, SecretSourceError
from bot.domain.model import SYSTEM, Event, Secret, Status
from bot.domain.report_data import FORMATS
from bot.reports.build import build_report
from bot.reports.render import render
from bot.services.shadow import CURSOR_KEY, ShadowWatch
from tests.support.app import CANARY_PASSWORD, FakeClock, canary_items, test_settings
from tests.support.fake_onepassword import FakeOnePassword, running
from tests.support.onepassword import (
    OP_CANARY_PASSWORD,
    OP_CANARY_SEED,
    OP_POLICY,
    OnePasswordAccount,
    op_settings,
    seed_account,
)
from tests.unit.test_lifecycle import ALICE, LEAD1, RecordingNotifier

REQUESTER = ALICE  # slack:UALICE, not in [onepassword.people]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def account(clock: FakeClock) -> AsyncIterator[OnePasswordAccount]:
    async with running(FakeOnePassword(clock=clock.now)) as fake:
        yield seed_account(fake)


@pytest.fixture
async def runtime(tmp_path: Path, clock: FakeClock, account: OnePasswordAccount) -> AsyncIterator[Runtime]:
    settings = test_settings(tmp_path, **op_settings(account.fake))
    rt = await open_runtime(settings, clock=clock, policy=parse_policy(OP_POLICY))
    await rt.catalog.add(canary_items(), SYSTEM, source="test")
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
def notifier(runtime: Runtime) -> RecordingNotifier:
    recorder = RecordingNotifier()
    recorder.runtime = runtime
    runtime.service.register_notifier(recorder)
    return recorder


async def _events(rt: Runtime, *types: str) -> list[Event]:
    return [e async for e in rt.store.events() if not types or e.type in types]


async def _sync(rt: Runtime) -> list[str]:
    assert rt.onepassword_sync is not None
    report = await rt.onepassword_sync.run()
    return report.problems


async def _granted(rt: Runtime, item: str = "initech-portal-admin") -> str:
    request = await rt.service.request_access(REQUESTER, f"{item} check the invoices for 30m")
    await rt.service.approve(request.id, LEAD1)
    await rt.effects.run_due()  # the delivery (when a notifier is registered)
    return request.id


# -- 2. metadata sync -------------------------------------------------------------------------------------


async def test_sync_serves_mapped_vaults_side_by_side_with_built_in_items_and_stores_no_secret(
        runtime: Runtime, account: OnePasswordAccount, tmp_path: Path) -> None:
    assert runtime.onepassword_sync is not None
    report = await runtime.onepassword_sync.run()

    items = {i.name: i for i in await runtime.store.list_items()}
    assert sorted(items) == ["acme-op-billing", "acme-zendesk", "globex-aws", "initech-portal-admin"]
    portal = items["initech-portal-admin"]
    assert (portal.vault, portal.source, portal.category) == ("initech", "1password", "LOGIN")
    assert (portal.username, portal.url, portal.tags) == ("admin@initech.example", "https://portal.initech.example",
                                                          ("customer", "portal"))
    assert portal.has_password and portal.has_totp
    assert portal.external is not None and portal.external.item_id == account.portal
    assert items["acme-zendesk"].source == "builtin"
    assert any("'Finance' is not mapped" in n for n in report.notes)
    added = await _events(runtime, "item.added")
    assert [e.details.get("source") for e in added if e.item and e.item.startswith(("initech", "acme-op"))] == [
        "1password", "1password"]
    # The store holds no password and no seed from 1Password: not in the file, not in any event.
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("jitpass.db*"))
    for secret in (OP_CANARY_PASSWORD, OP_CANARY_SEED, "acme-" + OP_CANARY_PASSWORD, "bank-" + OP_CANARY_PASSWORD):
        assert secret.encode() not in raw
    assert OP_CANARY_PASSWORD not in str(await _events(runtime))
    # Unchanged items are not fetched again on the next run (only listings).
    fetched = len([s for s in account.fake.seen if "/items/" in s.path])
    again = await runtime.onepassword_sync.run()
    assert again.unchanged == 2 and not again.added and not again.updated
    assert len([s for s in account.fake.seen if "/items/" in s.path]) == fetched


async def test_renamed_moved_and_deleted_items_follow_1password_and_an_open_grant_ends(
        runtime: Runtime, account: OnePasswordAccount, notifier: RecordingNotifier) -> None:
    await _sync(runtime)
    fake = account.fake
    billing = next(iter(fake.items[account.acme]))
    grant_id = await _granted(runtime, "acme-op-billing")

    fake.edit(account.initech, account.portal, title="Portal root")
    fake.delete(account.acme, billing)
    report = await runtime.onepassword_sync.run() if runtime.onepassword_sync else None
    assert report is not None

    names = {i.name for i in await runtime.store.list_items()}
    assert "initech-portal-root" in names and "initech-portal-admin" not in names
    assert "acme-op-billing" not in names
    assert report.removed == ["acme-op-billing"] and report.ended == [grant_id]
    ended = await runtime.service.get_request(grant_id)
    assert ended.status is Status.REVOKED
    told = await notifier.of("told")
    assert any("was deleted or archived in 1Password; access to it has ended" in c[2] for c in told)
    updated = await _events(runtime, "item.updated")
    assert updated[-1].details["renamed_to"] == "initech-portal-root"
    removed = (await _events(runtime, "item.removed"))[-1]
    assert removed.item == "acme-op-billing" and removed.details["source"] == "1password"
    # A new item in a served vault appears; moving it to an unmapped vault removes it.
    new_id = fake.add_login(account.initech, "VPN", username="vpn", password="vpn-pw")
    await _sync(runtime)
    assert "initech-vpn" in {i.name for i in await runtime.store.list_items()}
    fake.move(account.initech, new_id, account.finance)
    await _sync(runtime)
    assert "initech-vpn" not in {i.name for i in await runtime.store.list_items()}


async def test_bad_items_are_named_and_the_sync_goes_on_for_the_rest(runtime: Runtime,
                                                                      account: OnePasswordAccount) -> None:
    fake = account.fake
    fake.add_login(account.initech, "No password", password=None)
    fake.add_login(account.initech, "Two passwords", password="a", extra_passwords=("b",))
    fake.add_login(account.initech, "Bad code", password="c", otp="otpauth://totp/x?secret=!!!")
    other = fake.add_vault("Initech EU")
    fake.add_login(other, "Portal admin", password="d")
    await runtime.store.set_meta("unused", "x")
    policy = parse_policy(OP_POLICY + '\n[onepassword.vaults."Initech EU"]\nvault = "initech"\nprefix = "initech-"\n'
                          '[onepassword.vaults."Gone"]\nvault = "acme"\n')
    assert runtime.onepassword_sync is not None
    runtime.onepassword_sync.policy = policy

    report = await runtime.onepassword_sync.run()

    problems = "\n".join(report.problems)
    assert "'No password' in vault 'Initech' has no password field; it is not served" in problems
    assert "'Two passwords' in vault 'Initech' has 2 password fields" in problems
    assert "would all be called 'initech-portal-admin'; none is served" in problems
    assert "'Gone', which the Connect token cannot see" in problems
    assert any("'Bad code'" in n and "otpauth" in n for n in report.notes)
    names = {i.name for i in await runtime.store.list_items()}
    assert "initech-bad-code" in names and "acme-op-billing" in names  # the rest is served
    assert not {"initech-no-password", "initech-two-passwords", "initech-portal-admin"} & names
    bad_code = await runtime.service.get_item("initech-bad-code")
    assert bad_code.has_password and not bad_code.has_totp


async def test_a_token_for_another_account_stops_the_sync_before_anything_changes(
        runtime: Runtime, account: OnePasswordAccount) -> None:
    await _sync(runtime)
    before = await runtime.store.list_items()
    account.fake.connect_token = "the token of another account"

    with pytest.raises(SecretSourceError) as caught:
        await _sync(runtime)

    assert caught.value.reason == "unauthorized"
    assert await runtime.store.list_items() == before


async def test_1password_items_are_not_rotated_or_removed_through_jitpass(runtime: Runtime) -> None:
    await _sync(runtime)
    with pytest.raises(InputError, match="kept in 1password: rotate it there"):
        await runtime.catalog.rotate_password("initech-portal-admin", Secret("new"), SYSTEM)
    with pytest.raises(InputError, match="kept in 1password: remove it there"):
        await runtime.catalog.remove("initech-portal-admin", SYSTEM)


# -- 3. reveal at the moment of use -----------------------------------------------------------------------


async def test_delivery_and_new_code_read_the_item_from_connect_at_that_moment(
        runtime: Runtime, account: OnePasswordAccount, notifier: RecordingNotifier, clock: FakeClock) -> None:
    await _sync(runtime)
    before = len([s for s in account.fake.seen if s.path.endswith(account.portal)])
    grant_id = await _granted(runtime)

    (_, _, reveal), = await notifier.of("delivered")
    assert reveal.password == Secret(OP_CANARY_PASSWORD)
    assert reveal.code is not None and pyotp.TOTP(OP_CANARY_SEED).verify(reveal.code.code, for_time=clock.now())
    clock.advance(timedelta(seconds=40))
    code = await runtime.service.new_code(grant_id, REQUESTER)
    assert code.code is not None and pyotp.TOTP(OP_CANARY_SEED).verify(code.code.code, for_time=clock.now())
    assert len([s for s in account.fake.seen if s.path.endswith(account.portal)]) == before + 2
    assert [e.type for e in await _events(runtime) if e.request_id == grant_id][-2:] == [
        "grant.revealed", "grant.code_shown"]


@pytest.mark.parametrize(("status", "words"), [
    (503, "1Password is not reachable right now; nothing was shown"),
    (401, "1Password refused jitpass's Connect token; nothing was shown"),
    (403, "may no longer read this item's 1Password vault; nothing was shown"),
    (404, "This item is no longer in 1Password; nothing was shown"),
])
async def test_when_connect_fails_nothing_is_shown_the_requester_is_told_and_it_is_audited(
        runtime: Runtime, account: OnePasswordAccount, notifier: RecordingNotifier, status: int,
        words: str) -> None:
    await _sync(runtime)
    fake = account.fake
    if status == 503:
        fake.fail("/items/", 503, times=100)
    elif status == 401:
        fake.connect_token = "rotated"
    elif status == 403:
        fake.scope.discard(account.initech)
    else:
        fake.delete(account.initech, account.portal)

    grant_id = await _granted(runtime)

    assert await notifier.of("delivered") == []
    assert any(words in c[2] for c in await notifier.of("told") if c[1] == grant_id)
    types = [e.type for e in await _events(runtime) if e.request_id == grant_id]
    assert "grant.revealed" not in types and types[-2:] == ["grant.reveal_failed", "grant.delivery_failed"]
    with pytest.raises(SecretSourceError, match="nothing was shown"):
        await runtime.service.new_code(grant_id, REQUESTER)
    grant = await runtime.service.get_request(grant_id)
    assert grant.status is Status.ACTIVE and not grant.revealed  # nothing half-done: no reveal recorded
    assert OP_CANARY_PASSWORD not in str(notifier.calls)


async def test_an_item_that_gains_a_second_password_field_is_not_revealed(
        runtime: Runtime, account: OnePasswordAccount, notifier: RecordingNotifier) -> None:
    await _sync(runtime)
    item = account.fake.items[account.initech][account.portal]
    item["fields"].append({"id": "password2", "type": "CONCEALED", "purpose": "PASSWORD", "label": "old",
                           "value": "old-password"})

    grant_id = await _granted(runtime)

    assert await notifier.of("delivered") == []
    assert any("now has 2 password fields; nothing was shown" in c[2] for c in await notifier.of("told"))
    failed = [e for e in await _events(runtime) if e.type == "grant.reveal_failed"]
    assert [e.reason for e in failed] == ["bad_item"]
    del grant_id


# -- 4. rotation ------------------------------------------------------------------------------------------


async def test_a_password_changed_in_1password_clears_rotation_due_at_the_next_sync(
        runtime: Runtime, account: OnePasswordAccount, notifier: RecordingNotifier, clock: FakeClock) -> None:
    await _sync(runtime)
    grant_id = await _granted(runtime)
    await runtime.service.done(grant_id, REQUESTER)
    assert [i.name for i in await runtime.catalog.rotation_due()] == ["initech-portal-admin"]

    account.fake.edit(account.initech, account.portal, tags=["customer"])  # a new version, same password
    await _sync(runtime)
    assert [i.name for i in await runtime.catalog.rotation_due()] == ["initech-portal-admin"]

    clock.advance(timedelta(hours=1))
    account.fake.edit(account.initech, account.portal, password="rotated-" + OP_CANARY_PASSWORD)
    report = await runtime.onepassword_sync.run() if runtime.onepassword_sync else None

    assert report is not None and report.rotated == ["initech-portal-admin"]
    assert await runtime.catalog.rotation_due() == []
    item = await runtime.service.get_item("initech-portal-admin")
    assert item.password_rotated_at == clock.now()
    rotated = (await _events(runtime, "item.rotated"))[-1]
    assert rotated.details["source"] == "1password" and rotated.details["was_due_since"] is not None


async def test_a_password_changed_in_1password_is_noticed_at_the_next_fetch_too(
        runtime: Runtime, account: OnePasswordAccount, notifier: RecordingNotifier) -> None:
    await _sync(runtime)
    first = await _granted(runtime)
    await runtime.service.done(first, REQUESTER)
    account.fake.edit(account.initech, account.portal, password="rotated-" + OP_CANARY_PASSWORD)

    await _granted(runtime)

    assert await runtime.catalog.rotation_due() == []
    assert [e.item for e in await _events(runtime, "item.rotated")] == ["initech-portal-admin"]


# -- 5. direct use ----------------------------------------------------------------------------------------


async def test_direct_use_without_a_grant_is_flagged_and_the_cursor_survives_a_restart(
        runtime: Runtime, account: OnePasswordAccount, clock: FakeClock) -> None:
    await _sync(runtime)
    shadow = runtime.shadow
    assert shadow is not None
    fake = account.fake
    first = await shadow.run()
    assert first.read == 0

    bob = fake.used(account.initech, account.portal, "Bob@Initech.example", name="Bob")
    fake.used(account.finance, next(iter(fake.items[account.finance])), "cfo@initech.example")  # not served
    flagged = await shadow.run()

    assert flagged.flagged == ["initech-portal-admin by bob@initech.example"]
    [event] = await _events(runtime, "access.shadow")
    assert (event.item, event.vault, event.actor.user_id if event.actor else None) == (
        "initech-portal-admin", "initech", "bob@initech.example")
    assert event.details["usage_id"] == bob["uuid"] and event.details["source"] == "1password"
    assert await runtime.store.get_meta(CURSOR_KEY)

    # A restarted watcher continues from the stored cursor: nothing is flagged twice.
    restarted = ShadowWatch(runtime.store, shadow.feed, runtime.policy, clock)
    assert (await restarted.run()).read == 0
    # A cursor the Events API no longer accepts: read again from the last usage, no repeats.
    fake.invalidate_cursors()
    clock.advance(timedelta(minutes=1))
    fake.used(account.initech, account.portal, "eve@initech.example")
    reset = await restarted.run()
    assert reset.cursor_reset and reset.flagged == ["initech-portal-admin by eve@initech.example"]
    assert len(await _events(runtime, "access.shadow")) == 2


async def test_use_by_the_grant_holder_during_the_grant_is_not_flagged(
        runtime: Runtime, account: OnePasswordAccount, notifier: RecordingNotifier, clock: FakeClock) -> None:
    await _sync(runtime)
    assert runtime.shadow is not None
    await runtime.shadow.run()
    requester = REQUESTER.__class__("slack", "UREQ", "req")  # requester@initech.example in [onepassword.people]
    request = await runtime.service.request_access(requester, "initech-portal-admin check the invoices for 30m")
    await runtime.service.approve(request.id, LEAD1)
    clock.advance(timedelta(minutes=5))
    account.fake.used(account.initech, account.portal, "requester@initech.example")
    clock.advance(timedelta(minutes=30))
    account.fake.used(account.initech, account.portal, "requester@initech.example")  # after the grant ended

    result = await runtime.shadow.run()

    assert result.read == 2 and len(result.flagged) == 1
    [event] = await _events(runtime, "access.shadow")
    assert event.details["used_at"] == format_time(clock.now())
    assert CANARY_PASSWORD not in str(event)


async def test_shadow_access_has_its_section_in_every_report_format(
        runtime: Runtime, account: OnePasswordAccount, clock: FakeClock) -> None:
    await _sync(runtime)
    assert runtime.shadow is not None
    await runtime.shadow.run()
    since = clock.now() - timedelta(hours=1)
    clock.advance(timedelta(minutes=3))
    account.fake.used(account.initech, account.portal, "mallory@initech.example", name="Mallory", action="copy")
    await runtime.shadow.run()
    clock.advance(timedelta(minutes=1))

    report = await build_report(runtime.store, runtime.policy, clock.now(), since, clock.now(), verify=False)
    outputs = {}
    for fmt in FORMATS:
        out = io.StringIO()
        render(report, fmt, out)
        outputs[fmt] = out.getvalue()

    [use] = report.shadow_access
    assert (use.item, use.vault, use.email, use.action) == ("initech-portal-admin", "initech",
                                                            "mallory@initech.example", "copy")
    data = json.loads(outputs["json"])
    assert data["anomalies"]["shadow_access"][0]["email"] == "mallory@initech.example"
    assert "shadow_access,initech-portal-admin,Mallory,initech,email,mallory@initech.example" in outputs["csv"]
    assert "used in 1Password without a grant" in outputs["table"] and "mallory@initech.example" in outputs["table"]
    assert "Used in 1Password without a grant (shadow access)" in outputs["html"]
    assert "<td>mallory@initech.example</td>" in outputs["html"]
    for text in outputs.values():
        assert OP_CANARY_PASSWORD not in text
    other = await build_report(runtime.store, runtime.policy, clock.now(), since, clock.now(), vault="acme",
                               verify=False)
    assert other.shadow_access == ()


async def test_a_renamed_item_keeps_its_name_while_a_request_is_open_and_takes_the_new_one_after(
        runtime: Runtime, account: OnePasswordAccount, notifier: RecordingNotifier) -> None:
    await _sync(runtime)
    grant_id = await _granted(runtime)
    account.fake.edit(account.initech, account.portal, title="Portal root")

    assert runtime.onepassword_sync is not None
    held = await runtime.onepassword_sync.run()
    assert any("keeps the name 'initech-portal-admin' until its open requests end" in n for n in held.notes)
    assert (await runtime.service.get_request(grant_id)).status is Status.ACTIVE
    assert "initech-portal-admin" in {i.name for i in await runtime.store.list_items()}

    await runtime.service.done(grant_id, REQUESTER)
    after = await runtime.onepassword_sync.run()
    assert after.updated == ["initech-portal-root"]
    renamed = await runtime.service.get_item("initech-portal-root")
    assert renamed.rotation_due is not None, "what was due stays due under the new name"


async def test_an_item_moved_to_a_vault_of_another_customer_ends_its_grants(
        runtime: Runtime, account: OnePasswordAccount, notifier: RecordingNotifier) -> None:
    await _sync(runtime)
    grant_id = await _granted(runtime)
    policy = parse_policy(OP_POLICY.replace('[onepassword.vaults."Initech"]\nvault = "initech"',
                                            '[onepassword.vaults."Initech"]\nvault = "globex"'))
    assert runtime.onepassword_sync is not None
    runtime.onepassword_sync.policy = policy

    report = await runtime.onepassword_sync.run()

    assert report.ended == [grant_id]
    assert (await runtime.service.get_request(grant_id)).status is Status.REVOKED
    assert (await runtime.service.get_item("initech-portal-admin")).vault == "globex"
    assert any("moved to another vault in 1Password" in c[2] for c in await notifier.of("told"))


async def test_an_item_moved_between_vaults_of_the_same_customer_keeps_its_grant(
        runtime: Runtime, account: OnePasswordAccount, notifier: RecordingNotifier) -> None:
    eu = account.fake.add_vault("Initech EU")
    assert runtime.onepassword_sync is not None
    runtime.onepassword_sync.policy = parse_policy(
        OP_POLICY + '\n[onepassword.vaults."Initech EU"]\nvault = "initech"\nprefix = "initech-"\n')
    await _sync(runtime)
    grant_id = await _granted(runtime)
    new_id = account.fake.move(account.initech, account.portal, eu)

    report = await runtime.onepassword_sync.run()

    assert report.updated == ["initech-portal-admin"] and report.removed == [] and report.ended == []
    item = await runtime.service.get_item("initech-portal-admin")
    assert item.external is not None and (item.external.item_id, item.external.vault_title) == (new_id, "Initech EU")
    assert (await _events(runtime, "item.updated"))[-1].details["changed"] == ["moved"]
    code = await runtime.service.new_code(grant_id, REQUESTER)
    assert code.password == Secret(OP_CANARY_PASSWORD)


async def test_a_vault_the_token_lost_and_an_item_connect_cannot_read_are_left_as_they_were(
        runtime: Runtime, account: OnePasswordAccount) -> None:
    await _sync(runtime)
    fake = account.fake
    fake.scope.discard(account.initech)
    new_id = fake.add_login(account.acme, "Reports", password="r")
    fake.fail(f"/items/{new_id}", 500, times=100)
    fake.add_login(account.acme, "Payroll", password="p")

    problems = await _sync(runtime)

    names = {i.name for i in await runtime.store.list_items()}
    assert "initech-portal-admin" in names, "a vault out of scope is not a reason to delete its items"
    assert any("'Initech', which the Connect token cannot see; its items are left as they were" in p
               for p in problems)
    assert any("'Reports' in vault 'Acme (1Password)' could not be read (server_error)" in p for p in problems)
    assert "acme-op-payroll" in names and "acme-op-reports" not in names
