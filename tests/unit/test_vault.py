"""Envelope encryption, the key ring and its file, rotation, and the store's key check."""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from bot.domain.errors import VaultError
from bot.domain.model import Item, SealedItem, Secret
from bot.domain.vault import (
    KeyRing,
    MasterKey,
    Vault,
    format_key_line,
    generate_key,
    key_id_for,
    load_key_ring,
    parse_key_ring,
    retire_key_lines,
)

CANARY_PASSWORD = "CANARY-password-7f3a9c"
CANARY_SEED = "CANARYSEEDJBSWY3DPEHPK3PXP"

ZENDESK = Item(name="acme-zendesk", vault="acme", username="admin@acme.example")
AWS = Item(name="acme-aws-root", vault="acme", username="root@acme.example")

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")


def key_material_forms(key: MasterKey) -> list[str]:
    """Every spelling of the key bytes that must never show up in text."""
    return [
        key.key.hex(),
        base64.b64encode(key.key).decode(),
        base64.urlsafe_b64encode(key.key).decode(),
        base64.b64encode(key.key).decode().rstrip("="),
        repr(key.key),
    ]


def assert_no_leak(text: str, *keys: MasterKey) -> None:
    assert CANARY_PASSWORD not in text
    assert CANARY_SEED not in text
    for key in keys:
        for form in key_material_forms(key):
            assert form not in text


@pytest.fixture
def key_a() -> MasterKey:
    return generate_key()


@pytest.fixture
def key_b() -> MasterKey:
    return generate_key()


@pytest.fixture
def vault(key_a: MasterKey) -> Vault:
    return Vault(KeyRing([key_a]))


# -- sealing and opening --------------------------------------------------------------------------


def test_sealed_item_opens_to_the_same_password_and_seed(vault: Vault) -> None:
    sealed = vault.seal(ZENDESK, Secret(CANARY_PASSWORD), Secret(CANARY_SEED))

    assert vault.open(sealed) == (Secret(CANARY_PASSWORD), Secret(CANARY_SEED))
    assert sealed.key_id == vault.active_key_id
    assert CANARY_PASSWORD.encode() not in sealed.ciphertext


def test_item_without_password_or_seed_round_trips_and_flags_follow_the_payload(vault: Vault) -> None:
    only_seed = vault.seal(ZENDESK, None, Secret(CANARY_SEED))
    nothing = vault.seal(AWS, None, None)

    assert vault.open(only_seed) == (None, Secret(CANARY_SEED))
    assert vault.open(nothing) == (None, None)
    assert (only_seed.item.has_password, only_seed.item.has_totp) == (False, True)
    assert (nothing.item.has_password, nothing.item.has_totp) == (False, False)


def test_unicode_and_empty_passwords_round_trip(vault: Vault) -> None:
    for value in ('pässwörd,mit "kommas" 東京', ""):
        sealed = vault.seal(ZENDESK, Secret(value), None)
        assert vault.open(sealed)[0] == Secret(value)


def test_every_seal_uses_a_fresh_data_key_and_nonce(vault: Vault) -> None:
    first = vault.seal(ZENDESK, Secret(CANARY_PASSWORD), None)
    second = vault.seal(ZENDESK, Secret(CANARY_PASSWORD), None)

    assert first.nonce != second.nonce
    assert first.wrapped_key != second.wrapped_key
    assert first.ciphertext != second.ciphertext


def test_ciphertext_swapped_between_two_items_does_not_open(vault: Vault) -> None:
    zendesk = vault.seal(ZENDESK, Secret(CANARY_PASSWORD), None)
    aws = vault.seal(AWS, Secret("aws-password"), None)
    # Only the payload moved: the data key of `aws` cannot open it, and the AAD names another item.
    payload_swapped = replace(aws, nonce=zendesk.nonce, ciphertext=zendesk.ciphertext)
    # The whole envelope moved onto another item's row.
    envelope_moved = replace(zendesk, item=AWS)

    for forged in (payload_swapped, envelope_moved):
        with pytest.raises(VaultError, match="cannot decrypt item 'acme-aws-root'") as caught:
            vault.open(forged)
        assert_no_leak(str(caught.value))


def test_item_moved_to_another_vault_does_not_open(vault: Vault) -> None:
    sealed = vault.seal(ZENDESK, Secret(CANARY_PASSWORD), None)

    with pytest.raises(VaultError, match="tampered with or moved"):
        vault.open(replace(sealed, item=replace(ZENDESK, vault="globex")))


def test_tampered_ciphertext_is_refused(vault: Vault) -> None:
    sealed = vault.seal(ZENDESK, Secret(CANARY_PASSWORD), None)
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]

    for forged in (
        replace(sealed, ciphertext=flipped),
        replace(sealed, wrapped_key=sealed.wrapped_key[:-1] + bytes([sealed.wrapped_key[-1] ^ 1])),
        replace(sealed, wrapped_key=sealed.wrapped_key[:20]),
        replace(sealed, nonce=b"short"),
    ):
        with pytest.raises(VaultError, match="cannot decrypt item 'acme-zendesk'"):
            vault.open(forged)


def test_item_sealed_with_a_key_missing_from_the_ring_names_that_key(
    key_a: MasterKey, key_b: MasterKey
) -> None:
    sealed = Vault(KeyRing([key_a])).seal(ZENDESK, Secret(CANARY_PASSWORD), Secret(CANARY_SEED))

    with pytest.raises(VaultError) as caught:
        Vault(KeyRing([key_b])).open(sealed)

    message = str(caught.value)
    assert f"sealed with master key {key_a.key_id}, which is not in the key ring" in message
    assert key_b.key_id in message
    assert_no_leak(message, key_a, key_b)


def test_wrong_master_key_under_the_same_id_gives_a_clear_error_without_secrets(
    key_a: MasterKey, key_b: MasterKey
) -> None:
    sealed = Vault(KeyRing([key_a])).seal(ZENDESK, Secret(CANARY_PASSWORD), Secret(CANARY_SEED))
    # A record whose key id was edited to point at another key: the unwrap itself must fail.
    relabelled = replace(sealed, key_id=key_b.key_id)

    with pytest.raises(VaultError) as caught:
        Vault(KeyRing([key_b])).open(relabelled)

    message = str(caught.value)
    assert "the master key does not match the one it was sealed with" in message
    assert_no_leak(message, key_a, key_b)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# -- rotation -------------------------------------------------------------------------------------


def test_rotation_rewraps_under_the_new_key_and_the_old_key_can_then_go(
    key_a: MasterKey, key_b: MasterKey
) -> None:
    sealed = Vault(KeyRing([key_a])).seal(ZENDESK, Secret(CANARY_PASSWORD), Secret(CANARY_SEED))

    rewrapped = Vault(KeyRing([key_a, key_b])).rewrap(sealed)

    assert rewrapped.key_id == key_b.key_id
    assert (rewrapped.nonce, rewrapped.ciphertext) == (sealed.nonce, sealed.ciphertext)
    assert Vault(KeyRing([key_b])).open(rewrapped) == (Secret(CANARY_PASSWORD), Secret(CANARY_SEED))
    with pytest.raises(VaultError, match=f"master key {key_b.key_id}, which is not in the key ring"):
        Vault(KeyRing([key_a])).open(rewrapped)


def test_rewrap_leaves_items_already_under_the_active_key_alone(vault: Vault) -> None:
    sealed = vault.seal(ZENDESK, Secret(CANARY_PASSWORD), None)

    assert vault.rewrap(sealed) is sealed


def test_renamed_item_is_resealed_for_its_new_name(vault: Vault) -> None:
    sealed = vault.seal(ZENDESK, Secret(CANARY_PASSWORD), Secret(CANARY_SEED))
    renamed = replace(ZENDESK, name="acme-zendesk-admin", vault="support")

    with pytest.raises(VaultError):
        vault.open(replace(sealed, item=renamed))
    resealed = vault.reseal(sealed, renamed)

    assert resealed.item.name == "acme-zendesk-admin"
    assert vault.open(resealed) == (Secret(CANARY_PASSWORD), Secret(CANARY_SEED))


def test_reseal_moves_an_old_item_onto_the_active_key(key_a: MasterKey, key_b: MasterKey) -> None:
    sealed = Vault(KeyRing([key_a])).seal(ZENDESK, Secret(CANARY_PASSWORD), None)

    resealed = Vault(KeyRing([key_a, key_b])).reseal(sealed, ZENDESK)

    assert resealed.key_id == key_b.key_id


# -- key check ------------------------------------------------------------------------------------


def test_key_check_passes_with_the_key_the_store_was_set_up_with(vault: Vault) -> None:
    token = vault.key_check()

    vault.verify_key_check(token)
    assert token.startswith(f"v1:{vault.active_key_id}:")


def test_key_check_still_passes_while_the_old_key_is_in_the_ring(key_a: MasterKey, key_b: MasterKey) -> None:
    token = Vault(KeyRing([key_a])).key_check()

    Vault(KeyRing([key_a, key_b])).verify_key_check(token)


def test_key_check_with_another_master_key_names_the_expected_key(key_a: MasterKey, key_b: MasterKey) -> None:
    token = Vault(KeyRing([key_a])).key_check()

    with pytest.raises(VaultError) as caught:
        Vault(KeyRing([key_b])).verify_key_check(token)

    message = str(caught.value)
    assert f"the master key does not match this store (it was set up with key {key_a.key_id}" in message
    assert_no_leak(message, key_a, key_b)


def test_tampered_or_malformed_key_check_is_refused(vault: Vault) -> None:
    token = vault.key_check()
    version, key_id, blob = token.split(":")
    tampered = f"{version}:{key_id}:{blob[:-4]}AAAA"

    with pytest.raises(VaultError, match="does not open the store's key check"):
        vault.verify_key_check(tampered)
    for malformed in ("", "garbage", "v2:abc:def", f"v1:{key_id}:"):
        with pytest.raises(VaultError, match="malformed"):
            vault.verify_key_check(malformed)


# -- nothing secret in repr/str -------------------------------------------------------------------


def test_repr_and_str_never_show_secrets_or_key_bytes(vault: Vault, key_a: MasterKey) -> None:
    sealed = vault.seal(ZENDESK, Secret(CANARY_PASSWORD), Secret(CANARY_SEED))
    ring = vault.ring

    for thing in (Secret(CANARY_PASSWORD), Secret(CANARY_SEED), key_a, ring, sealed, vault):
        for text in (repr(thing), str(thing), f"{thing}", f"{thing!r}"):
            assert_no_leak(text, key_a)
            assert "ciphertext=" not in text and "wrapped_key=" not in text
    assert key_a.key_id in repr(ring)
    assert key_a.key_id in repr(key_a)


def test_sealed_item_bytes_are_out_of_its_repr(vault: Vault) -> None:
    sealed = vault.seal(ZENDESK, Secret(CANARY_PASSWORD), None)

    assert repr(sealed.ciphertext) not in repr(sealed)
    assert isinstance(sealed, SealedItem)


# -- keys and key rings ---------------------------------------------------------------------------


def test_generated_keys_are_32_random_bytes_with_a_derived_id() -> None:
    first, second = generate_key(), generate_key()

    assert len(first.key) == 32 and first.key != second.key
    assert first.key_id == key_id_for(first.key) and len(first.key_id) == 12
    int(first.key_id, 16)


def test_master_key_refuses_wrong_length_or_mismatched_id(key_a: MasterKey) -> None:
    with pytest.raises(VaultError, match="32 bytes, not 16"):
        MasterKey.from_bytes(b"x" * 16)
    with pytest.raises(VaultError, match="does not match its key material"):
        MasterKey("000000000000", key_a.key)


def test_the_last_key_in_the_ring_is_active(key_a: MasterKey, key_b: MasterKey) -> None:
    ring = KeyRing([key_a, key_b])

    assert ring.active == key_b
    assert ring.get(key_a.key_id) == key_a
    assert ring.key_ids == (key_a.key_id, key_b.key_id)
    assert key_a.key_id in ring and "nope" not in ring
    with pytest.raises(VaultError, match="empty"):
        KeyRing([])


def test_key_line_round_trips_through_parse(key_a: MasterKey, key_b: MasterKey) -> None:
    text = "\n".join([format_key_line(key_a), format_key_line(key_b)])

    ring = parse_key_ring(text)

    assert ring.key_ids == (key_a.key_id, key_b.key_id)
    assert ring.active.key == key_b.key


def test_parse_key_ring_accepts_comments_blank_lines_and_any_base64_spelling(
    key_a: MasterKey, key_b: MasterKey
) -> None:
    key_c = generate_key()
    text = "\n".join(
        [
            "# old key, keep until every item is re-wrapped",
            "",
            base64.b64encode(key_a.key).decode(),
            "   " + base64.urlsafe_b64encode(key_b.key).decode().rstrip("=") + "   ",
            "# active",
            f"{key_c.key_id.upper()}:{base64.b64encode(key_c.key).decode()}",
        ]
    )

    ring = parse_key_ring(text)

    assert ring.key_ids == (key_a.key_id, key_b.key_id, key_c.key_id)
    assert ring.active == key_c


def test_several_keys_on_one_line_suit_an_environment_variable(key_a: MasterKey, key_b: MasterKey) -> None:
    ring = parse_key_ring(f"{format_key_line(key_a)},{format_key_line(key_b)}")

    assert ring.active == key_b


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no master key found"),
        ("# only a comment\n\n", "no master key found"),
        ("not~base64!!", "line 1: the key is not valid base64"),
        ("# header\n" + base64.b64encode(b"k" * 16).decode(), "line 2: the key decodes to 16 bytes"),
    ],
)
def test_parse_key_ring_errors_are_clear(text: str, expected: str) -> None:
    with pytest.raises(VaultError, match=expected):
        parse_key_ring(text)


def test_parse_key_ring_checks_the_id_prefix_and_never_echoes_the_key(
    key_a: MasterKey, key_b: MasterKey
) -> None:
    wrong_prefix = f"{key_b.key_id}:{base64.b64encode(key_a.key).decode()}"
    truncated = format_key_line(key_a)[:-6]

    with pytest.raises(VaultError, match="does not match the key") as wrong:
        parse_key_ring(wrong_prefix)
    with pytest.raises(VaultError) as short:
        parse_key_ring(truncated)

    for caught in (wrong, short):
        assert_no_leak(str(caught.value), key_a)
        assert truncated.split(":")[1] not in str(caught.value)


# -- loading the ring -----------------------------------------------------------------------------


@posix_only
def test_missing_key_file_is_created_with_mode_600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "master.key"

    ring, created = load_key_ring(env_value=None, file_path=path, create_if_missing=True)
    again, created_again = load_key_ring(env_value=None, file_path=path, create_if_missing=True)

    assert created is True and created_again is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert again.active == ring.active
    assert format_key_line(ring.active) in path.read_text()


def test_environment_value_wins_over_the_key_file(tmp_path: Path, key_a: MasterKey) -> None:
    path = tmp_path / "master.key"

    ring, created = load_key_ring(env_value=format_key_line(key_a), file_path=path, create_if_missing=True)

    assert ring.active == key_a and created is False
    assert not path.exists()


def test_blank_environment_value_counts_as_unset(tmp_path: Path, key_a: MasterKey) -> None:
    path = tmp_path / "master.key"
    path.write_text(format_key_line(key_a) + "\n")
    path.chmod(0o600)

    ring, _ = load_key_ring(env_value="  \n", file_path=path, create_if_missing=False)

    assert ring.active == key_a


@posix_only
def test_key_file_readable_by_others_is_refused_with_the_fix(tmp_path: Path, key_a: MasterKey) -> None:
    path = tmp_path / "master.key"
    path.write_text(format_key_line(key_a) + "\n")
    path.chmod(0o640)

    with pytest.raises(
        VaultError, match=r"can be read by other users \(mode 640\); run `chmod 600 "
    ) as caught:
        load_key_ring(env_value=None, file_path=path, create_if_missing=True)
    assert_no_leak(str(caught.value), key_a)


def test_missing_key_file_without_create_and_no_key_at_all_are_errors(tmp_path: Path) -> None:
    with pytest.raises(VaultError, match="does not exist"):
        load_key_ring(env_value=None, file_path=tmp_path / "absent.key", create_if_missing=False)
    with pytest.raises(VaultError, match="set JITPASS_MASTER_KEY or JITPASS_MASTER_KEY_FILE"):
        load_key_ring(env_value=None, file_path=None, create_if_missing=True)


def test_bad_key_in_the_environment_names_the_variable() -> None:
    with pytest.raises(VaultError, match="JITPASS_MASTER_KEY, line 1: the key is not valid base64"):
        load_key_ring(env_value="???", file_path=None, create_if_missing=False)


def test_retiring_keeps_comments_and_the_active_key_and_names_what_it_dropped() -> None:
    old, older, active = generate_key(), generate_key(), generate_key()
    text = ("# jitpass master key ring\n"
            f"{format_key_line(older)}\n"
            "# rotated in March\n"
            f"{format_key_line(old)}, {format_key_line(active)}\n")
    new_text, retired = retire_key_lines(text, active.key_id)
    assert retired == (older.key_id, old.key_id)
    assert new_text == ("# jitpass master key ring\n"
                        f"# retired master key {older.key_id}\n"
                        "# rotated in March\n"
                        f"# retired master key {old.key_id}\n"
                        f"{format_key_line(active)}\n")
    assert parse_key_ring(new_text).key_ids == (active.key_id,)
    assert format_key_line(old).split(":")[1] not in new_text


def test_retiring_refuses_a_ring_without_the_active_key() -> None:
    text = format_key_line(generate_key()) + "\n"
    with pytest.raises(VaultError, match="does not hold the active key"):
        retire_key_lines(text, generate_key().key_id)
