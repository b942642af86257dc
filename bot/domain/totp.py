"""TOTP seeds: validation and normalisation of what admins paste or import, and current codes.

A stored seed is either a bare upper-case base32 string (SHA1, 6 digits, 30 s) or an
`otpauth://totp/...` URI that keeps the non-default parameters. Error messages never
contain the seed, nor the URI that carries it.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import pyotp

from bot.domain.errors import InputError
from bot.domain.model import CodeView, Secret

__all__ = [
    "ALGORITHMS",
    "DEFAULT_DIGITS",
    "DEFAULT_PERIOD",
    "MIN_SEED_BITS",
    "TotpSpec",
    "current_code",
    "parse_totp",
    "totp_spec",
]

DEFAULT_DIGITS = 6
DEFAULT_PERIOD = 30
DEFAULT_ALGORITHM = "SHA1"
MIN_SEED_BITS = 80
ALGORITHMS: dict[str, Callable[..., object]] = {
    "SHA1": hashlib.sha1,
    "SHA256": hashlib.sha256,
    "SHA512": hashlib.sha512,
}
# No example seed here: a hint must never look like (or be mistaken for) a real key.
_HINT = "paste the setup key shown under the QR code (letters A-Z, digits 2-7) or its otpauth://totp/... link"


@dataclass(frozen=True)
class TotpSpec:
    """Everything needed to compute codes: seed (base32, secret) and the RFC 6238 parameters."""

    secret: Secret
    digits: int = DEFAULT_DIGITS
    period: int = DEFAULT_PERIOD
    algorithm: str = DEFAULT_ALGORITHM
    label: str = ""
    issuer: str = ""


class _Totp(pyotp.TOTP):
    # pyotp >= 2.12 refuses seeds under 112 bits (NIST guidance for *issuing* secrets); we only
    # compute codes for seeds services already issued, and 80-bit (16-char) seeds are common.
    min_secret_length_bits: ClassVar[int] = MIN_SEED_BITS


def parse_totp(value: str) -> Secret:
    """Validate a pasted base32 seed or otpauth:// URI and return its normalised form."""
    return _normalised(_parse_spec(value))


def totp_spec(seed: Secret) -> TotpSpec:
    """The parameters of a stored (or pasted) seed."""
    return _parse_spec(seed.reveal())


def current_code(seed: Secret, at: datetime) -> CodeView:
    """The code valid at `at` (timezone-aware) and the whole seconds it stays valid."""
    if at.tzinfo is None:
        # pyotp would read a naive time as local time: a silent, timezone-dependent wrong code.
        raise ValueError("current_code needs a timezone-aware datetime")
    spec = totp_spec(seed)
    epoch = calendar.timegm(at.utctimetuple())
    code = _totp(spec).at(epoch)
    return CodeView(code=code, seconds_left=spec.period - epoch % spec.period, period=spec.period)


def _totp(spec: TotpSpec) -> pyotp.TOTP:
    return _Totp(
        spec.secret.reveal(),
        digits=spec.digits,
        digest=ALGORITHMS[spec.algorithm],
        interval=spec.period,
    )


def _parse_spec(value: str) -> TotpSpec:
    text = value.strip()
    if not text:
        raise InputError("the TOTP seed is empty", hint=_HINT)
    scheme, sep, _ = text.partition("://")
    if sep and scheme.isascii() and scheme.replace("-", "").isalpha():
        return _parse_uri(text)
    return TotpSpec(secret=Secret(_clean_seed(text)))


def _clean_seed(raw: str) -> str:
    # Authenticator setup screens group the key in blocks of four, sometimes lower-case.
    seed = "".join(raw.split()).replace("-", "").upper().rstrip("=")
    if not seed:
        raise InputError("the TOTP seed is empty", hint=_HINT)
    if any(ch not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for ch in seed):
        raise InputError(
            "the TOTP seed is not base32: it may only contain the letters A-Z and the digits 2-7",
            hint=_HINT,
        )
    try:
        decoded = base64.b32decode(seed + "=" * (-len(seed) % 8))
    except binascii.Error:
        raise InputError(
            f"the TOTP seed is not valid base32: {len(seed)} characters cannot be a complete key "
            "(a character may be missing or extra)",
            hint=_HINT,
        ) from None
    if len(decoded) * 8 < MIN_SEED_BITS:
        raise InputError(
            f"the TOTP seed is too short: {len(seed)} characters, at least 16 are needed "
            f"({MIN_SEED_BITS} bits)",
            hint=_HINT,
        )
    return seed


def _parse_uri(uri: str) -> TotpSpec:
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise InputError("the otpauth link cannot be read", hint=_HINT) from None
    scheme = parts.scheme.lower()
    if scheme == "otpauth-migration":
        raise InputError(
            "this is a Google Authenticator export link (otpauth-migration://), which bundles several "
            "accounts; export each account's otpauth://totp/ link or setup key instead",
            hint=_HINT,
        )
    if scheme != "otpauth":
        raise InputError("a TOTP link must start with otpauth://totp/", hint=_HINT)
    kind = parts.netloc.lower()
    if kind == "hotp":
        raise InputError(
            "HOTP (counter-based, otpauth://hotp/) codes are not supported; only time-based "
            "otpauth://totp/ links are",
            hint=_HINT,
        )
    if kind != "totp":
        raise InputError("a TOTP link must start with otpauth://totp/", hint=_HINT)
    try:
        params = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    except ValueError:
        raise InputError("the otpauth link's parameters cannot be read", hint=_HINT) from None
    params = {key.lower(): values for key, values in params.items()}
    for key, values in params.items():
        if len(values) > 1:
            raise InputError(f"the otpauth link repeats the {key!r} parameter", hint=_HINT)
    secret_values = params.get("secret")
    if not secret_values or not secret_values[0].strip():
        raise InputError("the otpauth link has no secret= parameter", hint=_HINT)
    return TotpSpec(
        secret=Secret(_clean_seed(secret_values[0])),
        digits=_int_param(params, "digits", DEFAULT_DIGITS, 6, 8),
        period=_int_param(params, "period", DEFAULT_PERIOD, 15, 120),
        algorithm=_algorithm_param(params),
        label=unquote(parts.path.lstrip("/")),
        issuer=params.get("issuer", [""])[0].strip(),
    )


def _int_param(params: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    values = params.get(name)
    if not values or not values[0].strip():
        return default
    text = values[0].strip()
    if not text.isdecimal() or not low <= int(text) <= high:
        raise InputError(f"the otpauth link's {name} must be a whole number from {low} to {high}", hint=_HINT)
    return int(text)


def _algorithm_param(params: dict[str, list[str]]) -> str:
    values = params.get("algorithm")
    if not values or not values[0].strip():
        return DEFAULT_ALGORITHM
    name = values[0].strip().upper().replace("-", "")
    if name not in ALGORITHMS:
        raise InputError(f"the otpauth link's algorithm must be one of {', '.join(ALGORITHMS)}", hint=_HINT)
    return name


def _normalised(spec: TotpSpec) -> Secret:
    seed = spec.secret.reveal()
    if not spec.label and not spec.issuer and _has_default_parameters(spec):
        return Secret(seed)
    query: list[tuple[str, str]] = [("secret", seed)]
    if spec.issuer:
        query.append(("issuer", spec.issuer))
    if spec.algorithm != DEFAULT_ALGORITHM:
        query.append(("algorithm", spec.algorithm))
    if spec.digits != DEFAULT_DIGITS:
        query.append(("digits", str(spec.digits)))
    if spec.period != DEFAULT_PERIOD:
        query.append(("period", str(spec.period)))
    label = quote(spec.label, safe="@:")
    return Secret(f"otpauth://totp/{label}?{urlencode(query, quote_via=quote)}")


def _has_default_parameters(spec: TotpSpec) -> bool:
    return (spec.digits, spec.period, spec.algorithm) == (DEFAULT_DIGITS, DEFAULT_PERIOD, DEFAULT_ALGORITHM)
