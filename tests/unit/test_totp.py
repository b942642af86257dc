"""TOTP seeds as admins paste them, and the codes requesters see."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pyotp
import pytest

from bot.domain.errors import InputError
from bot.domain.model import Secret
from bot.domain.totp import current_code, parse_totp, totp_spec

SEED_160 = "YTZVJ7MP2AOPHXJFUMFOXQ2HJCAEQADR"  # 32 chars: what most services issue today
SEED_80 = "JBSWY3DPEHPK3PXP"  # 16 chars: the shortest seed still accepted
# RFC 6238 appendix B seeds: ASCII "1234567890" repeated to the digest's size.
RFC_SHA1 = base64.b32encode(b"12345678901234567890").decode()
RFC_SHA256 = base64.b32encode(b"12345678901234567890123456789012").decode()
RFC_SHA512 = base64.b32encode(b"1234567890" * 6 + b"1234").decode()


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def reference_code(
    seed: str, epoch: int, *, digits: int = 6, period: int = 30, digest: Callable[..., object] = hashlib.sha1
) -> str:
    """RFC 6238 written out, for seeds pyotp's own minimum length refuses."""
    key = base64.b32decode(seed + "=" * (-len(seed) % 8))
    mac = hmac.new(key, struct.pack(">Q", epoch // period), digest).digest()  # type: ignore[arg-type]
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


# -- codes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("epoch", [0, 59, 1_111_111_109, 1_234_567_890, 2_000_000_000, 1_700_000_029])
def test_code_is_the_one_pyotp_verifies_at_that_moment(epoch: int) -> None:
    view = current_code(Secret(SEED_160), at(epoch))

    assert pyotp.TOTP(SEED_160).verify(view.code, for_time=at(epoch), valid_window=0)
    assert len(view.code) == 6 and view.period == 30


def test_code_for_a_short_80_bit_seed_matches_rfc_6238() -> None:
    epoch = 1_700_000_000

    assert current_code(Secret(SEED_80), at(epoch)).code == reference_code(SEED_80, epoch)


@pytest.mark.parametrize(
    ("seed", "algorithm", "epoch", "expected"),
    [
        (RFC_SHA1, "SHA1", 59, "94287082"),
        (RFC_SHA256, "SHA256", 59, "46119246"),
        (RFC_SHA512, "SHA512", 59, "90693936"),
        (RFC_SHA1, "SHA1", 1_111_111_109, "07081804"),
        (RFC_SHA256, "SHA256", 1_234_567_890, "91819424"),
        (RFC_SHA512, "SHA512", 20_000_000_000, "47863826"),
    ],
)
def test_eight_digit_codes_match_the_rfc_6238_test_vectors(
    seed: str, algorithm: str, epoch: int, expected: str
) -> None:
    stored = parse_totp(f"otpauth://totp/RFC?secret={seed}&digits=8&algorithm={algorithm}")

    assert current_code(stored, at(epoch)).code == expected


def test_sixty_second_sha256_code_matches_pyotp_and_counts_down_a_minute() -> None:
    stored = parse_totp(f"otpauth://totp/Globex:jsmith?secret={SEED_160}&algorithm=SHA256&digits=8&period=60")
    moment = at(1_700_000_010)  # 1_700_000_010 % 60 == 30

    view = current_code(stored, moment)

    expected = pyotp.TOTP(SEED_160, digits=8, digest=hashlib.sha256, interval=60).at(moment)
    assert (view.code, view.seconds_left, view.period) == (expected, 30, 60)


@pytest.mark.parametrize(
    ("offset", "seconds_left"),
    [(0, 30), (0.999, 30), (1, 29), (29, 1), (29.999, 1), (30, 30)],
)
def test_seconds_left_counts_down_to_the_period_boundary(offset: float, seconds_left: int) -> None:
    start = 1_700_000_010  # a multiple of 30

    assert current_code(Secret(SEED_160), at(start + offset)).seconds_left == seconds_left


def test_code_changes_exactly_at_the_boundary() -> None:
    start = 1_700_000_010
    seed = Secret(SEED_160)

    assert current_code(seed, at(start)).code == current_code(seed, at(start + 29.999)).code
    assert current_code(seed, at(start + 29)).code != current_code(seed, at(start + 30)).code


def test_any_timezone_gives_the_same_code_but_naive_times_are_refused() -> None:
    utc = at(1_700_000_000)
    tokyo = utc.astimezone(timezone(timedelta(hours=9)))

    assert current_code(Secret(SEED_160), tokyo) == current_code(Secret(SEED_160), utc)
    with pytest.raises(ValueError, match="timezone-aware"):
        current_code(Secret(SEED_160), utc.replace(tzinfo=None))


# -- parsing seeds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pasted",
    [
        "JBSWY3DPEHPK3PXP",
        "jbswy3dpehpk3pxp",
        "jbsw y3dp ehpk 3pxp",
        "JBSW-Y3DP-EHPK-3PXP",
        "  JBSWY3DPEHPK3PXP\n",
        "JBSWY3DPEHPK3PXP======",
    ],
)
def test_pasted_seed_is_normalised_to_upper_case_base32(pasted: str) -> None:
    assert parse_totp(pasted) == Secret("JBSWY3DPEHPK3PXP")


def test_unpadded_seed_of_an_odd_length_is_accepted() -> None:
    seed = base64.b32encode(b"0123456789abc").decode().rstrip("=")  # 21 characters, 104 bits

    assert parse_totp(seed.lower()) == Secret(seed)


def test_otpauth_uri_keeps_its_non_default_parameters() -> None:
    stored = parse_totp(
        f"otpauth://totp/Globex:jsmith%40globex.example?secret={SEED_160.lower()}"
        "&issuer=Globex%20Inc&algorithm=sha256&digits=8&period=60"
    )

    assert stored.reveal() == (
        f"otpauth://totp/Globex:jsmith@globex.example?secret={SEED_160}"
        "&issuer=Globex%20Inc&algorithm=SHA256&digits=8&period=60"
    )
    spec = totp_spec(stored)
    assert (spec.digits, spec.period, spec.algorithm) == (8, 60, "SHA256")
    assert (spec.label, spec.issuer) == ("Globex:jsmith@globex.example", "Globex Inc")


def test_otpauth_uri_drops_default_parameters_and_reparses_to_itself() -> None:
    stored = parse_totp(
        f"OTPAUTH://TOTP/Zendesk:admin?secret={SEED_160}&issuer=Zendesk&digits=6&period=30&algorithm=SHA1"
    )

    assert stored.reveal() == f"otpauth://totp/Zendesk:admin?secret={SEED_160}&issuer=Zendesk"
    assert parse_totp(stored.reveal()) == stored


def test_otpauth_uri_with_nothing_but_a_secret_becomes_the_bare_seed() -> None:
    assert parse_totp(f"otpauth://totp/?secret={SEED_160}") == Secret(SEED_160)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("JBSWY3DPEHPK3PX1", "not base32"),
        ("JBSWY3DP_EHPK3PXP", "not base32"),
        ("JBSWY3DPEHPK", "too short: 12 characters, at least 16"),
        ("JBSWY3DPEHPK3PXPA", "17 characters cannot be a complete key"),
        ("   ", "empty"),
        (f"otpauth://hotp/Acme:alice?secret={SEED_160}&counter=1", "HOTP"),
        (f"otpauth://totp/Acme?secret={SEED_160}&digits=9", "digits must be a whole number from 6 to 8"),
        (f"otpauth://totp/Acme?secret={SEED_160}&digits=5", "digits must be"),
        (f"otpauth://totp/Acme?secret={SEED_160}&digits=six", "digits must be"),
        (f"otpauth://totp/Acme?secret={SEED_160}&period=10", "period must be a whole number from 15 to 120"),
        (f"otpauth://totp/Acme?secret={SEED_160}&period=300", "period must be"),
        (
            f"otpauth://totp/Acme?secret={SEED_160}&algorithm=MD5",
            "algorithm must be one of SHA1, SHA256, SHA512",
        ),
        (f"otpauth://totp/Acme?secret={SEED_160}&secret={SEED_80}", "repeats the 'secret' parameter"),
        ("otpauth://totp/Acme?issuer=Acme", "no secret= parameter"),
        ("otpauth://totp/Acme?secret=JBSWY3DPEHPK", "too short"),
        (f"otpauth-migration://offline?data={SEED_160}", "Google Authenticator export"),
        (f"https://example.com/?secret={SEED_160}", "must start with otpauth://totp/"),
        (f"otpauth://steam/Acme?secret={SEED_160}", "must start with otpauth://totp/"),
    ],
)
def test_invalid_seeds_are_refused_without_repeating_the_value(value: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        parse_totp(value)

    shown = caught.value.user_message()
    assert "otpauth://totp/" in caught.value.hint  # every refusal says what to paste instead
    for secret_part in {value.strip(), SEED_160, SEED_80, "JBSWY3DPEHPK", "JBSWY3DPEHPK3PX1"}:
        if secret_part:
            assert secret_part not in shown
