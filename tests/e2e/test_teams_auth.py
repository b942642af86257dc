"""Who may talk to /api/messages, and which service URLs the bot will talk to.

With app credentials configured, the Agents SDK's JWT validator guards /api/messages. The SDK
fetches signing keys only from the fixed Bot Framework / Entra addresses (it cannot be pointed
at a local key server), so a token that *passes* validation cannot be made here: these tests
cover refusals; docs/teams.md says what was not tested.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from microsoft_agents.activity import Activity

from adapters.teams import TeamsAdapter
from adapters.teams.connector import Connector, ServiceUrlValidator
from adapters.teams.refs import ConversationRef
from bot.domain.config import Settings
from bot.domain.errors import DeliveryError
from tests.support.app import FakeClock, running_app, test_settings
from tests.support.fake_connector import FakeConnector, TeamsUser, message_activity, post_activity

APP_ID = "8f0d2a4c-1b2e-4c3d-9e8f-0a1b2c3d4e5f"
TENANT_ID = "11111111-2222-3333-4444-555555555555"
USER = TeamsUser("req-oid-1", "Req One")


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": "https://api.botframework.com", "aud": APP_ID, "iat": now, "nbf": now, "exp": now + 600,
            "serviceurl": "https://smba.trafficmanager.net/amer/"} | overrides


@pytest.fixture(scope="module")
def forger_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[str]:
    settings = test_settings(tmp_path, teams_app_id=APP_ID, teams_app_password="not-a-real-secret",
                             teams_tenant_id=TENANT_ID)
    async with running_app(tmp_path, settings=settings, clock=FakeClock()) as running:
        yield running.base_url


async def test_with_credentials_a_request_without_a_token_is_401(secured: str, connector: FakeConnector) -> None:
    status, body = await post_activity(secured, message_activity(connector.url, USER, "help"))

    assert status == 401 and body == {"error": "Invalid token or authentication failed."}
    assert connector.calls == []


@pytest.mark.parametrize("header", [
    "Bearer not-a-jwt",
    "Basic dXNlcjpwYXNz",
    "Bearer",
    "Bearer two tokens",
    "bearer " + jwt.encode(claims(), "an-app-secret-long-enough-for-hs256!!", algorithm="HS256", headers={"kid": "k1"}),
    "Bearer " + jwt.encode(claims(), "", algorithm="none"),
], ids=["garbage", "basic", "empty", "two-tokens", "hmac-with-app-secret", "unsigned"])
async def test_with_credentials_forged_tokens_are_401(secured: str, connector: FakeConnector, header: str) -> None:
    status, _ = await post_activity(secured, message_activity(connector.url, USER, "help"), token=header)

    assert status == 401
    assert connector.calls == []


async def test_with_credentials_tokens_signed_by_anyone_else_are_401(
        secured: str, connector: FakeConnector, forger_key: rsa.RSAPrivateKey,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="jitpass.teams")
    for forged in (
        jwt.encode(claims(aud="some-other-bot"), forger_key, algorithm="RS256", headers={"kid": "forger"}),
        jwt.encode(claims(), forger_key, algorithm="RS256"),  # no key id
        # Well addressed and well formed: only the SDK's signature check (against the Bot Framework's
        # published keys, which it must fetch) can refuse it.
        jwt.encode(claims(), forger_key, algorithm="RS256", headers={"kid": "forger"}),
    ):
        status, _ = await post_activity(secured, message_activity(connector.url, USER, "help"),
                                        token=f"Bearer {forged}")
        assert status == 401
    assert connector.calls == []
    assert "why=wrong_audience" in caplog.text and "why=no_key_id" in caplog.text
    assert "why=invalid_token" in caplog.text


async def test_with_credentials_only_api_messages_needs_a_token(secured: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{secured}/healthz") as response:
            assert response.status == 200
            health = await response.json()
        async with session.post(f"{secured}/slack/events", json={}) as response:
            assert response.status != 401
    assert health["platforms"]["teams"]["mode"] == "jwt"
    assert health["platforms"]["teams"]["app_id"] == APP_ID


async def test_the_mode_is_logged_loudly_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jitpass.teams")
    (tmp_path / "anon").mkdir()
    (tmp_path / "jwt").mkdir()
    async with running_app(tmp_path / "anon", settings=test_settings(tmp_path / "anon")):
        pass
    assert "Teams: ANONYMOUS mode (local development only) — set CLIENTID/CLIENTSECRET/TENANTID for production" \
        in caplog.text
    caplog.clear()
    settings = test_settings(tmp_path / "jwt", teams_app_id=APP_ID, teams_app_password="x", teams_tenant_id=TENANT_ID)
    async with running_app(tmp_path / "jwt", settings=settings):
        pass
    assert f"Teams: JWT validation on for app id {APP_ID}" in caplog.text
    assert "ANONYMOUS" not in caplog.text


@pytest.mark.parametrize("service_url", [
    "https://evil.example.com/",
    "http://smba.trafficmanager.net/amer/",
    "https://smba.trafficmanager.net.evil.example/",
])
async def test_with_validation_on_activities_naming_unknown_service_urls_are_refused(
        tmp_path: Path, connector: FakeConnector, service_url: str) -> None:
    settings = test_settings(tmp_path, teams_service_url_validation=True)
    async with running_app(tmp_path, settings=settings) as running:
        refused, _ = await post_activity(running.base_url, message_activity(service_url, USER, "help"))
        # Anonymous mode is for the local Agents Playground: loopback service URLs stay allowed.
        allowed, _ = await post_activity(running.base_url, message_activity(connector.url, USER, "help"))

    assert refused == 401
    assert allowed == 202
    assert [c.conversation_id for c in connector.calls] == [USER.personal_chat]


def test_the_service_url_rules() -> None:
    strict = ServiceUrlValidator(enabled=True, allow_loopback=False)
    local = ServiceUrlValidator(enabled=True, allow_loopback=True)
    off = ServiceUrlValidator(enabled=False, allow_loopback=False)

    for good in ("https://smba.trafficmanager.net/amer/", "https://smba.infra.gcc.teams.microsoft.com/",
                 "https://europe.webchat.botframework.com/", "https://smba.infra.gov.teams.microsoft.us/"):
        assert strict.is_allowed(good), good
    for bad in ("http://smba.trafficmanager.net/amer/", "https://evil.example/", "https://user:pw@smba.trafficmanager.net/",
                "https://botframework.com.evil.example/", "http://127.0.0.1:3978/", "https://10.0.0.1/"):
        assert not strict.is_allowed(bad), bad
    assert local.is_allowed("http://127.0.0.1:56150/_connector") and local.is_allowed("http://localhost:1/")
    assert not local.is_allowed("http://192.168.1.10/")
    assert off.is_allowed("http://anything.example/")


async def test_the_bot_never_posts_to_a_service_url_it_does_not_trust() -> None:
    adapter = TeamsAdapter(Settings())
    strict = Connector(adapter.client_factory, ServiceUrlValidator(enabled=True, allow_loopback=False), None)

    with pytest.raises(DeliveryError, match="not a known Teams / Bot Framework host"):
        await strict.send(ConversationRef("https://evil.example/", "a:chat"), Activity(type="message", text="hi"))
