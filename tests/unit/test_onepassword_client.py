"""The Connect and Events API clients against the local stand-ins: statuses, retries, cursors, item reading."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from adapters.onepassword import ConnectClient, ConnectSource, EventsClient, EventsFeed, OnePasswordError
from bot.domain.errors import SecretSourceError
from bot.domain.model import ONEPASSWORD, ExternalRef, Item, SealedItem, Secret
from tests.support.fake_onepassword import CONNECT_TOKEN, EVENTS_TOKEN, FakeOnePassword, running

NOW = datetime(2026, 12, 2, 10, 0, 5, tzinfo=UTC)
SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
OTPAUTH = f"otpauth://totp/Acme:admin?secret={SEED}&issuer=Acme"


def _fingerprint(value: Secret) -> str:
    return "fp:" + str(len(value.reveal()))


@pytest.fixture
async def onepassword() -> AsyncIterator[FakeOnePassword]:
    async with running(FakeOnePassword(clock=lambda: NOW)) as fake:
        yield fake


def _connect(fake: FakeOnePassword, token: str = CONNECT_TOKEN) -> ConnectSource:
    return ConnectSource(ConnectClient(fake.connect_url, token, max_retry_wait=0.01), _fingerprint)


def _sealed(name: str, vault_id: str, item_id: str) -> SealedItem:
    item = Item(name=name, vault="acme", source=ONEPASSWORD, external=ExternalRef(vault_id, item_id))
    return SealedItem(item=item, key_id="k", wrapped_key=b"", nonce=b"", ciphertext=b"")


async def test_connect_lists_vaults_in_scope_and_item_summaries_without_fields(onepassword: FakeOnePassword) -> None:
    acme = onepassword.add_vault("Acme")
    onepassword.add_vault("Finance", in_scope=False)
    onepassword.add_login(acme, "Zendesk admin", username="admin@acme", password="pw-1", otp=OTPAUTH,
                          urls=("https://acme.zendesk.com",), tags=("support",))
    source = _connect(onepassword)
    try:
        assert [v.title for v in await source.vaults()] == ["Acme"]
        [summary] = await source.summaries(acme)
        assert (summary.title, summary.version) == ("Zendesk admin", 1)
        item = await source.item(acme, summary.item_id)
    finally:
        await source.close()
    assert (item.username, item.url, item.tags, item.category) == ("admin@acme", "https://acme.zendesk.com",
                                                                   ("support",), "LOGIN")
    assert item.has_password and item.has_totp and item.revision == "fp:4" and not item.problem


async def test_a_wrong_token_is_refused_with_401_and_named_unauthorized(onepassword: FakeOnePassword) -> None:
    onepassword.add_vault("Acme")
    source = _connect(onepassword, token="a-token-of-another-account")
    try:
        with pytest.raises(SecretSourceError) as caught:
            await source.vaults()
    finally:
        await source.close()
    assert caught.value.reason == "unauthorized"
    assert "OP_CONNECT_TOKEN" in caught.value.message
    assert "a-token-of-another-account" not in caught.value.message + caught.value.detail
    assert onepassword.seen[-1].status == 401


async def test_a_vault_outside_the_token_scope_is_403_and_an_unknown_item_404(onepassword: FakeOnePassword) -> None:
    finance = onepassword.add_vault("Finance", in_scope=False)
    secret_id = onepassword.add_login(finance, "Bank", password="pw")
    acme = onepassword.add_vault("Acme")
    source = _connect(onepassword)
    try:
        with pytest.raises(SecretSourceError) as forbidden:
            await source.read(_sealed("bank", finance, secret_id), NOW)
        with pytest.raises(SecretSourceError) as missing:
            await source.read(_sealed("gone", acme, "z" * 26), NOW)
    finally:
        await source.close()
    assert forbidden.value.reason == "forbidden" and "nothing was shown" in forbidden.value.message
    assert missing.value.reason == "not_found" and "no longer in 1Password" in missing.value.message
    assert [s.status for s in onepassword.seen] == [403, 404]


async def test_429_and_5xx_are_retried_and_a_persistent_5xx_says_not_reachable(
        onepassword: FakeOnePassword) -> None:
    acme = onepassword.add_vault("Acme")
    item_id = onepassword.add_login(acme, "Zendesk", password="pw-429")
    onepassword.fail("/items/", 429, retry_after=1)
    onepassword.fail("/items/", 503)
    source = _connect(onepassword)
    try:
        read = await source.read(_sealed("zendesk", acme, item_id), NOW)
        assert read.password == Secret("pw-429")
        onepassword.fail("/items/", 500, times=10)
        with pytest.raises(SecretSourceError) as caught:
            await source.read(_sealed("zendesk", acme, item_id), NOW)
    finally:
        await source.close()
    assert [s.status for s in onepassword.seen[:3]] == [429, 503, 200]
    assert caught.value.message.startswith("1Password is not reachable right now; nothing was shown")


async def test_an_unreachable_connect_server_is_named_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = ConnectSource(ConnectClient(f"http://127.0.0.1:{port}", CONNECT_TOKEN, retries=1,
                                         max_retry_wait=0.01), _fingerprint)
    try:
        with pytest.raises(SecretSourceError) as caught:
            await source.vaults()
    finally:
        await source.close()
    assert caught.value.reason == "unreachable"
    assert "ConnectClient" in repr(source.client) and CONNECT_TOKEN not in repr(source.client)


async def test_reveal_takes_connects_totp_or_computes_the_code_from_the_otpauth_value(
        onepassword: FakeOnePassword) -> None:
    acme = onepassword.add_vault("Acme")
    given = onepassword.add_login(acme, "With code", password="pw-a", otp=OTPAUTH)
    computed = onepassword.add_login(acme, "Seed only", password="pw-b", otp=OTPAUTH, totp_in_response=False)
    source = _connect(onepassword)
    try:
        a = await source.read(_sealed("a", acme, given), NOW)
        b = await source.read(_sealed("b", acme, computed), NOW)
    finally:
        await source.close()
    expected = pyotp.TOTP(SEED).at(NOW)
    assert a.code is not None and b.code is not None
    assert a.code.code == b.code.code == expected
    assert a.code.seconds_left == b.code.seconds_left == 25
    assert "pw-a" not in repr(a) and SEED not in repr(b)


async def test_items_with_no_or_several_password_fields_or_a_bad_otpauth_are_named(
        onepassword: FakeOnePassword) -> None:
    acme = onepassword.add_vault("Acme")
    none = onepassword.add_login(acme, "No password", password=None)
    several = onepassword.add_login(acme, "Two passwords", password="a", extra_passwords=("b",))
    bad_otp = onepassword.add_login(acme, "Bad OTP", password="c", otp="otpauth://totp/x?secret=!!notbase32")
    source = _connect(onepassword)
    try:
        no_pw, two_pw, bad = [await source.item(acme, i) for i in (none, several, bad_otp)]
        with pytest.raises(SecretSourceError) as refused:
            await source.read(_sealed("two", acme, several), NOW)
    finally:
        await source.close()
    assert no_pw.problem == "has no password field" and not no_pw.has_password
    assert two_pw.problem.startswith("has 2 password fields ('password', 'password 2')") and not two_pw.revision
    assert refused.value.reason == "bad_item" and "2 password fields" in refused.value.message
    assert not bad.problem and bad.has_password and not bad.has_totp
    assert "not a valid otpauth" in bad.warning and "notbase32" not in bad.warning


async def test_item_usages_page_with_the_cursor_and_a_dead_cursor_is_named(onepassword: FakeOnePassword) -> None:
    acme = onepassword.add_vault("Acme")
    item_id = onepassword.add_login(acme, "Zendesk", password="pw")
    for minute in range(5):
        onepassword.used(acme, item_id, f"Person{minute}@Example.com", at=NOW + timedelta(minutes=minute))
    feed = EventsFeed(EventsClient(onepassword.events_url, EVENTS_TOKEN, max_retry_wait=0.01), limit=2)
    try:
        first = await feed.page(cursor=None, start=NOW - timedelta(days=1))
        second = await feed.page(cursor=first.cursor, start=None)
        third = await feed.page(cursor=second.cursor, start=None)
        onepassword.invalidate_cursors()
        with pytest.raises(SecretSourceError) as dead:
            await feed.page(cursor=third.cursor, start=None)
    finally:
        await feed.close()
    assert [len(p.usages) for p in (first, second, third)] == [2, 2, 1]
    assert [p.has_more for p in (first, second, third)] == [True, True, False]
    assert third.usages[0].email == "person4@example.com" and third.usages[0].item_id == item_id
    assert dead.value.reason == "bad_cursor"


async def test_the_events_api_refuses_a_wrong_token_and_a_limit_over_1000(onepassword: FakeOnePassword) -> None:
    wrong = EventsClient(onepassword.events_url, "not-the-token", max_retry_wait=0.01)
    right = EventsClient(onepassword.events_url, EVENTS_TOKEN, max_retry_wait=0.01)
    try:
        with pytest.raises(OnePasswordError) as unauthorized:
            await wrong.item_usages()
        with pytest.raises(OnePasswordError) as too_many:
            await right.item_usages(limit=1001)
    finally:
        await wrong.close()
        await right.close()
    assert (unauthorized.value.reason, unauthorized.value.detail) == ("unauthorized", "Unauthorized")
    assert too_many.value.reason == "bad_request" and "1000" in too_many.value.detail


async def test_an_events_token_refused_is_named_for_what_to_fix(onepassword: FakeOnePassword) -> None:
    feed = EventsFeed(EventsClient(onepassword.events_url, "expired-events-token", max_retry_wait=0.01))
    try:
        with pytest.raises(SecretSourceError) as caught:
            await feed.page(cursor=None, start=NOW)
    finally:
        await feed.close()
    assert caught.value.reason == "unauthorized" and "OP_EVENTS_TOKEN" in caught.value.message
    assert "expired-events-token" not in caught.value.message + caught.value.detail
