"""Inbound authentication for /api/messages: the Bot Framework JWT, checked by the Agents SDK.

With app credentials configured every request must carry `Authorization: Bearer <jwt>` that
the SDK's `JwtTokenValidator` accepts (signature from the Bot Framework / Entra keys, audience
= our app id, issuer-tenant binding). Cheap checks run first so that obviously forged tokens
(wrong audience, unsigned, HMAC-signed) are refused without fetching signing keys. Without
credentials the endpoint is anonymous: for local development only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import jwt
from microsoft_agents.activity import load_configuration_from_env
from microsoft_agents.hosting.core.authorization import AgentAuthConfiguration, ClaimsIdentity, JwtTokenValidator

from bot.domain.config import Settings

__all__ = ["InboundAuth", "auth_configuration"]

log = logging.getLogger("jitpass.teams")

CONNECTION = "SERVICE_CONNECTION"


def auth_configuration(settings: Settings) -> AgentAuthConfiguration:
    """The SDK's connection settings: from `CONNECTIONS__SERVICE_CONNECTION__SETTINGS__*` (so every
    SDK option, e.g. AUTHTYPE, works) with jitpass's own Settings for the id, secret and tenant."""
    if not settings.teams_app_id:
        return AgentAuthConfiguration(anonymous_allowed=True, connection_name=CONNECTION)
    connections: Mapping[str, Any] = load_configuration_from_env(settings.environ).get("CONNECTIONS", {})
    raw = dict(connections.get(CONNECTION, {}).get("SETTINGS", {}))
    raw.update({"CLIENTID": settings.teams_app_id, "CLIENTSECRET": settings.teams_app_password,
                "TENANTID": settings.teams_tenant_id})
    raw = {key: value for key, value in raw.items() if value and key not in {"CONNECTIONNAME", "ANONYMOUS_ALLOWED"}}
    return AgentAuthConfiguration(connection_name=CONNECTION, anonymous_allowed=False, **raw)


class InboundAuth:
    """Decides whether an inbound request may reach the agent; returns the caller's claims."""

    def __init__(self, configuration: AgentAuthConfiguration) -> None:
        self.configuration = configuration
        self.validator = JwtTokenValidator(configuration)

    @property
    def app_id(self) -> str:
        return self.configuration.CLIENT_ID or ""

    async def authenticate(self, header: str | None) -> ClaimsIdentity | None:
        """The validated claims, or None when the request must be refused with 401."""
        if not header:
            log.warning("event=teams_auth_refused why=missing_authorization")
            return None
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
            log.warning("event=teams_auth_refused why=malformed_authorization")
            return None
        why = self._precheck(token)
        if why:
            log.warning("event=teams_auth_refused why=%s", why)
            return None
        try:
            return await self.validator.validate_token(token)
        except Exception as exc:  # any failure to validate is a refusal, never a 500
            log.warning("event=teams_auth_refused why=invalid_token error=%s", type(exc).__name__)
            return None

    def _precheck(self, token: str) -> str:
        """Refuse without network what can never validate: Bot Framework tokens are RS256, name
        their key, and are addressed to our app id."""
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return "unreadable_token"
        if header.get("alg") != "RS256":
            return "wrong_algorithm"
        if not header.get("kid"):
            return "no_key_id"
        audience = claims.get("aud")
        if not isinstance(audience, str) or audience.lower() != self.app_id.lower():
            return "wrong_audience"
        return ""
