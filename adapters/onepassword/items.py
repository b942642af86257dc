"""Reading Connect FullItem documents: which field is the password, the username, the one-time password.

A LOGIN item keeps them in fields with the purposes USERNAME / PASSWORD; other categories (PASSWORD,
SERVER, DATABASE, API_CREDENTIAL) have no purposes and name the field `password` / `username`. The
one-time password is a field of type OTP (older servers say TOTP) whose value is an otpauth:// URI and
whose `totp` Connect fills with the code valid now. Nothing here keeps a value beyond the call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from bot.domain.errors import InputError
from bot.domain.model import CodeView, Secret
from bot.domain.totp import current_code, parse_totp, totp_spec
from bot.ports import SourceItem, SourceSummary

__all__ = ["code_of", "password_fields", "source_item", "summary"]

OTP_TYPES = frozenset({"OTP", "TOTP"})


def _fields(item: dict[str, Any]) -> list[dict[str, Any]]:
    fields = item.get("fields") or []
    return [f for f in fields if isinstance(f, dict)]


def password_fields(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The fields that hold the password: those with purpose PASSWORD, else a CONCEALED field `password`."""
    fields = _fields(item)
    by_purpose = [f for f in fields if f.get("purpose") == "PASSWORD"]
    if by_purpose:
        return by_purpose
    return [f for f in fields if f.get("type") == "CONCEALED" and str(f.get("id", "")).lower() == "password"]


def _username(item: dict[str, Any]) -> str:
    fields = _fields(item)
    for f in fields:
        if f.get("purpose") == "USERNAME":
            return str(f.get("value") or "")
    for f in fields:
        if str(f.get("id", "")).lower() == "username":
            return str(f.get("value") or "")
    return ""


def _otp_field(item: dict[str, Any]) -> dict[str, Any] | None:
    return next((f for f in _fields(item) if f.get("type") in OTP_TYPES), None)


def _url(item: dict[str, Any]) -> str:
    urls = [u for u in item.get("urls") or [] if isinstance(u, dict) and isinstance(u.get("href"), str)]
    primary = next((u for u in urls if u.get("primary")), urls[0] if urls else None)
    return str(primary["href"]) if primary else ""


def summary(vault_id: str, doc: dict[str, Any]) -> SourceSummary | None:
    """An Item summary from a vault listing; None for archived / deleted ones or unreadable entries."""
    if doc.get("state") in {"ARCHIVED", "DELETED"} or not isinstance(doc.get("id"), str):
        return None
    return SourceSummary(vault_id=vault_id, item_id=str(doc["id"]), title=str(doc.get("title") or ""),
                         version=int(doc.get("version") or 0))


def _labels(fields: Sequence[dict[str, Any]]) -> str:
    return ", ".join(repr(str(f.get("label") or f.get("id"))) for f in fields)


def source_item(vault_id: str, doc: dict[str, Any], fingerprint: Callable[[Secret], str]) -> SourceItem:
    """Catalogue metadata of one FullItem. The password is only fingerprinted; no value leaves."""
    passwords = password_fields(doc)
    problem = warning = ""
    revision = ""
    if not passwords or not any(f.get("value") for f in passwords):
        problem = "has no password field" if not passwords else "has an empty password field"
    elif len(passwords) > 1:
        problem = (f"has {len(passwords)} password fields ({_labels(passwords)}); jitpass does not guess which "
                   "one to reveal: keep one field with the password purpose")
    else:
        revision = fingerprint(Secret(str(passwords[0]["value"])))
    otp = _otp_field(doc)
    has_totp = False
    if otp is not None:
        try:
            parse_totp(str(otp.get("value") or ""))
            has_totp = True
        except InputError:
            warning = "has a one-time password field that is not a valid otpauth:// value; it is served without a code"
    tags = tuple(str(t) for t in doc.get("tags") or () if isinstance(t, str))
    return SourceItem(vault_id=vault_id, item_id=str(doc.get("id")), title=str(doc.get("title") or ""),
                      category=str(doc.get("category") or ""), version=int(doc.get("version") or 0),
                      username=_username(doc), url=_url(doc), tags=tags, has_password=bool(revision),
                      has_totp=has_totp, revision=revision, problem=problem, warning=warning)


def code_of(doc: dict[str, Any], now: datetime) -> CodeView | None:
    """The one-time code valid now: Connect's `totp` when given, else computed in memory from the otpauth
    value (the seed is dropped when this returns). None when the item has no usable OTP field."""
    otp = _otp_field(doc)
    if otp is None:
        return None
    value = str(otp.get("value") or "")
    try:
        seed = parse_totp(value)
    except InputError:
        seed = None
    given = otp.get("totp")
    if isinstance(given, str) and given.isdigit():
        period = totp_spec(seed).period if seed is not None else 30
        epoch = int(now.timestamp())
        return CodeView(code=given, seconds_left=period - epoch % period, period=period)
    return current_code(seed, now) if seed is not None else None
