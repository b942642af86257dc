"""Reading 1Password CSV exports and jitpass JSON files into items, and refusing bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.domain.errors import ImportFileError, InputError
from bot.domain.model import Secret
from bot.domain.totp import parse_totp
from bot.services.importers import (
    ImportResult,
    ItemInput,
    VaultRules,
    is_valid_name,
    read_import,
    read_vault_map,
    slugify,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HEADER = "Title,Url,Username,Password,OTPAuth,Favorite,Archived,Tags,Notes"
SEED = "YTZVJ7MP2AOPHXJFUMFOXQ2HJCAEQADR"
CANARY_PASSWORD = "CANARY-password-7f3a9c"
CANARY_SEED_SHORT = "CANARYSEED"  # valid base32, too short: refused


def write(tmp_path: Path, name: str, text: str, *, newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline=newline)
    return path


def by_name(result: ImportResult) -> dict[str, ItemInput]:
    return {item.name: item for item in result.items}


def read_csv(tmp_path: Path, *rows: str, skip_bad: bool = False) -> ImportResult:
    return read_import(
        write(tmp_path, "export.csv", "\n".join((HEADER, *rows)) + "\n"),
        default_vault="shared",
        skip_bad=skip_bad,
    )


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("Acme Zendesk (admin)", "acme-zendesk-admin"),
        ("  GitHub.com  ", "github.com"),
        ("Globex, Inc. VPN", "globex-inc-vpn"),
        ("Café Müller – Kasse", "cafe-muller-kasse"),
        ("东京 Office Wi-Fi", "office-wi-fi"),
        ("db_admin @ prod", "db_admin-prod"),
        ("...leading dots", "leading-dots"),
        ("日本語", ""),
        ("x" * 80, "x" * 64),
        ("a" * 63 + " b", "a" * 63),
    ],
)
def test_titles_become_item_names(title: str, name: str) -> None:
    assert slugify(title) == name
    assert name == "" or is_valid_name(name)


# -- 1Password CSV --------------------------------------------------------------------------------


def test_1password_export_is_read_into_items_with_secrets_kept_apart() -> None:
    result = read_import(FIXTURES / "1password-export.csv", default_vault="shared", skip_bad=False)

    items = by_name(result)
    assert list(items) == [
        "acme-zendesk-admin",
        "acme-aws-root",
        "cafe-muller-kasse",
        "globex-inc-vpn",
        "initech-printer",
        "umbrella-dns-registrar",
        "office-wi-fi",
        "soylent-corp-slack-bot",
    ]
    assert result.skipped == ["line 11 ('Old Hooli SSO'): archived in 1Password; not imported"]
    assert {item.vault for item in result.items} == {"shared"}


def test_1password_row_fields_quoting_and_multi_line_notes() -> None:
    items = by_name(read_import(FIXTURES / "1password-export.csv", default_vault="shared", skip_bad=False))

    zendesk = items["acme-zendesk-admin"]
    assert zendesk.source_row == 2
    assert (zendesk.username, zendesk.url) == ("admin@acme.example", "https://acme.zendesk.com")
    assert zendesk.password == Secret('Zx9!q,w"e7')
    assert zendesk.totp == Secret(f"otpauth://totp/Zendesk:admin@acme.example?secret={SEED}&issuer=Zendesk")
    assert zendesk.tags == ("acme", "support")
    assert zendesk.notes == "Shared support admin.\nRotate after each use, please."

    aws = items["acme-aws-root"]
    assert aws.source_row == 4
    assert aws.notes.splitlines()[-1] == "  2. do the thing, carefully"
    assert aws.tags == ("acme", "cloud", "break-glass")

    assert items["cafe-muller-kasse"].password == Secret("pässwörd,mit,kommas")
    assert items["cafe-muller-kasse"].source_row == 8
    assert items["umbrella-dns-registrar"].password == Secret('p@ss "quoted" word')
    assert items["umbrella-dns-registrar"].tags == ("umbrella", "dns")
    assert items["office-wi-fi"].tags == ("東京", "office")
    assert items["office-wi-fi"].source_row == 13
    assert items["soylent-corp-slack-bot"].source_row == 15


def test_empty_password_and_otp_cells_mean_none() -> None:
    items = by_name(read_import(FIXTURES / "1password-export.csv", default_vault="shared", skip_bad=False))

    printer = items["initech-printer"]
    assert (printer.password, printer.totp) == (None, None)
    assert (printer.to_item().has_password, printer.to_item().has_totp) == (False, False)
    globex = items["globex-inc-vpn"]
    assert globex.totp == parse_totp(
        "otpauth://totp/Globex:jsmith?secret=JBSWY3DPEHPK3PXP&issuer=Globex&algorithm=SHA256&digits=8&period=60"
    )
    assert (globex.to_item().has_password, globex.to_item().has_totp) == (True, True)


def test_columns_in_any_order_and_case_with_extra_columns_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "export.csv",
        "NOTES,type,password,TITLE,username,Favorite,url\n"
        "a note,Login,s3cret,Acme Jira,jira-admin,true,https://jira.acme.example\n",
    )

    (item,) = read_import(path, default_vault="shared", skip_bad=False).items

    assert (item.name, item.username, item.url, item.notes) == (
        "acme-jira",
        "jira-admin",
        "https://jira.acme.example",
        "a note",
    )
    assert item.password == Secret("s3cret")
    assert (item.totp, item.tags) == (None, ())


def test_1password_7_vault_column_picks_the_vault_and_blank_falls_back(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "export.csv",
        "Title,Vault,Password,Type\nAcme Jira,Acme Support,one,Login\nTeam Wi-Fi,,two,Wireless Router\n",
    )

    items = by_name(read_import(path, default_vault="shared", skip_bad=False))

    assert items["acme-jira"].vault == "acme-support"
    assert items["team-wi-fi"].vault == "shared"


def test_windows_line_endings_byte_order_mark_and_blank_lines(tmp_path: Path) -> None:
    text = "\ufeff" + HEADER + '\n\nAcme Jira,,,pw,,,,,"two\nlines"\nAcme Wiki,,,pw2,,,,,\n'
    path = write(tmp_path, "export.csv", text, newline="\r\n")

    items = by_name(read_import(path, default_vault="shared", skip_bad=False))

    assert items["acme-jira"].source_row == 3
    assert items["acme-jira"].notes == "two\nlines"
    assert items["acme-wiki"].source_row == 5


def test_bad_csv_rows_reject_the_whole_file_and_say_where(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError) as caught:
        read_csv(
            tmp_path,
            f"Acme Jira,,,{CANARY_PASSWORD},,,,,",  # line 2: fine
            f",https://nameless.example,,{CANARY_PASSWORD},,,,,",  # line 3: no title
            f"Acme Wiki,,,{CANARY_PASSWORD},otpauth://totp/x?secret={CANARY_SEED_SHORT},,,,",  # line 4
            f"acme jira,,,{CANARY_PASSWORD},,,,,",  # line 5: same name as line 2
            f"Acme Mail,,,{CANARY_PASSWORD},,,,,notes,extra",  # line 6: shifted columns
            f"日本語,,,{CANARY_PASSWORD},,,,,",  # line 7: no name can be made
        )

    error = caught.value
    assert str(error).startswith(
        "import rejected: 5 bad rows; nothing was imported (use --skip-bad to import the rest)"
    )
    assert error.problems == [
        "line 3: no title (and no name): every item needs one",
        "line 4 ('Acme Wiki'): TOTP: the TOTP seed is too short: 10 characters, at least 16 are needed "
        "(80 bits)",
        "line 5 ('acme jira'): duplicate: the name 'acme-jira' is already used by line 2 of this file",
        "line 6 ('Acme Mail'): the row has 10 fields but the header has 9; a value with a comma is probably "
        "not quoted",
        "line 7 ('日本語'): the title has no letters or digits to make an item name from; "
        "give the item a name",
    ]
    assert CANARY_PASSWORD not in str(error) and CANARY_SEED_SHORT not in str(error)


def test_skip_bad_imports_the_good_rows_and_lists_the_rest(tmp_path: Path) -> None:
    result = read_csv(
        tmp_path,
        "Acme Jira,,,pw1,,,,,",
        f"Acme Wiki,,,pw2,{CANARY_SEED_SHORT}!,,,,",
        "Old Thing,,,pw3,,,true,,",
        "Acme Mail,,,pw4,,,,,",
        skip_bad=True,
    )

    assert [item.name for item in result.items] == ["acme-jira", "acme-mail"]
    assert result.skipped == [
        "line 3 ('Acme Wiki'): TOTP: the TOTP seed is not base32: it may only contain the letters A-Z and "
        "the digits 2-7",
        "line 4 ('Old Thing'): archived in 1Password; not imported",
    ]


def test_one_bad_row_is_counted_in_the_singular(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r"^import rejected: 1 bad row; nothing was imported"):
        read_csv(tmp_path, "Acme Jira,,,pw,,,,,", "Acme Jira,,,pw,,,,,")


def test_a_csv_without_a_title_header_is_refused_without_echoing_its_first_row(tmp_path: Path) -> None:
    path = write(tmp_path, "export.csv", f"Acme Jira,admin,{CANARY_PASSWORD}\nAcme Wiki,admin,pw\n")

    with pytest.raises(
        InputError, match="is not a 1Password CSV export: the first row must be a header"
    ) as caught:
        read_import(path, default_vault="shared", skip_bad=True)
    assert CANARY_PASSWORD not in caught.value.user_message()


def test_an_unterminated_quote_is_refused_instead_of_swallowing_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path, "export.csv", f'{HEADER}\nAcme Jira,,,"{CANARY_PASSWORD},,,,,\nAcme Wiki,,,pw,,,,,\n'
    )

    expected = r"cannot be read as CSV: unexpected end of data in the row starting on line 2"
    with pytest.raises(InputError, match=expected) as caught:
        read_import(path, default_vault="shared", skip_bad=True)
    assert CANARY_PASSWORD not in str(caught.value)


# -- jitpass JSON ---------------------------------------------------------------------------------


def test_json_items_with_names_titles_and_defaults() -> None:
    result = read_import(FIXTURES / "items.json", default_vault="shared", skip_bad=False)

    items = by_name(result)
    assert list(items) == ["acme-zendesk", "globex-payroll-finance", "initech-printer"]
    assert result.skipped == []
    zendesk = items["acme-zendesk"]
    assert (zendesk.vault, zendesk.tags, zendesk.source_row) == ("acme", ("acme", "support"), 1)
    assert zendesk.password == Secret('Zx9!q,w"e7')
    assert zendesk.notes == "Shared support admin.\nRotate after each use."
    payroll = items["globex-payroll-finance"]
    assert (payroll.vault, payroll.totp, payroll.source_row) == ("globex", Secret("JBSWY3DPEHPK3PXP"), 2)
    printer = items["initech-printer"]
    assert (printer.vault, printer.password, printer.totp, printer.tags) == ("shared", None, None, ())


def test_bad_json_items_are_reported_by_number_without_their_secrets(tmp_path: Path) -> None:
    items: list[object] = [
        {"name": "acme-jira", "password": CANARY_PASSWORD},
        {"name": "Acme Wiki", "password": CANARY_PASSWORD},
        {"name": "acme-mail", "passwrod": CANARY_PASSWORD},
        {"name": "acme-pin", "password": 1234},
        {"username": "nobody", "password": CANARY_PASSWORD},
        {"name": "acme-vpn", "vault": "Acme VPN", "password": CANARY_PASSWORD},
        {"title": "Acme Jira", "password": CANARY_PASSWORD},
        {"name": "acme-otp", "totp": f"otpauth://hotp/x?secret={CANARY_SEED_SHORT}"},
        {"name": "acme-tags", "tags": [1, 2]},
        "not an object",
    ]
    path = write(tmp_path, "items.json", json.dumps({"items": items}))

    with pytest.raises(ImportFileError) as caught:
        read_import(path, default_vault="shared", skip_bad=False)

    assert caught.value.problems == [
        "item 2 ('Acme Wiki'): the name 'Acme Wiki' is not valid: use 1-64 lowercase letters, digits, "
        "'.', '_' or '-', starting with a letter or digit (e.g. 'acme-wiki')",
        "item 3 ('acme-mail'): unknown field(s) 'passwrod'; known fields are name, notes, password, tags, "
        "title, totp, url, username, vault",
        "item 4 ('acme-pin'): 'password' must be a string, not a number (put it in quotes)",
        "item 5: no title (and no name): every item needs one",
        "item 6 ('acme-vpn'): the vault 'Acme VPN' is not a valid vault name: use 1-64 lowercase letters, "
        "digits, '.', '_' or '-', starting with a letter or digit",
        "item 7 ('Acme Jira'): duplicate: the name 'acme-jira' is already used by item 1 of this file",
        "item 8 ('acme-otp'): TOTP: HOTP (counter-based, otpauth://hotp/) codes are not supported; only "
        "time-based otpauth://totp/ links are",
        "item 9 ('acme-tags'): 'tags' must be a list of strings or a ';'-separated string",
        "item 10: each item must be a JSON object",
    ]
    assert CANARY_PASSWORD not in str(caught.value) and "1234" not in str(caught.value)


def test_json_list_at_top_level_and_tags_as_text_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "items.json", json.dumps([{"title": "Acme Jira", "tags": "a; b,a"}]))

    (item,) = read_import(path, default_vault="shared", skip_bad=False).items

    assert (item.name, item.tags, item.password) == ("acme-jira", ("a", "b"), None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"items": [', "is not valid JSON: Expecting value at line 1, column 12"),
        ('{"things": []}', 'is not a jitpass import file: expected {"items": \\[...\\]}'),
        ('"just a string"', "is not a jitpass import file"),
    ],
)
def test_unreadable_json_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_import(write(tmp_path, "items.json", text), default_vault="shared", skip_bad=True)


# -- files ----------------------------------------------------------------------------------------


def test_files_without_a_known_extension_are_sniffed(tmp_path: Path) -> None:
    as_json = write(tmp_path, "export.txt", '  {"items": [{"name": "acme-jira"}]}')
    as_csv = write(tmp_path, "export", f"{HEADER}\nAcme Wiki,,,pw,,,,,\n")

    assert [i.name for i in read_import(as_json, default_vault="shared", skip_bad=False).items] == [
        "acme-jira"
    ]
    assert [i.name for i in read_import(as_csv, default_vault="shared", skip_bad=False).items] == [
        "acme-wiki"
    ]


def test_a_sniffed_file_that_is_neither_format_says_what_was_expected(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.txt", "just some text\n")

    with pytest.raises(InputError, match="is not a 1Password CSV export or a jitpass JSON file"):
        read_import(path, default_vault="shared", skip_bad=False)


def test_missing_empty_binary_and_non_utf8_files_are_refused(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(f"{HEADER}\nCafé,,,pw,,,,,\n".encode("latin-1"))
    binary = tmp_path / "export.csv"
    binary.write_bytes(b"PK\x03\x04\x00\x00binary")

    cases = [
        (tmp_path / "absent.csv", "does not exist"),
        (tmp_path, "is a directory"),
        (write(tmp_path, "empty.csv", " \n\n"), "is empty"),
        (latin1, r"is not UTF-8 text \(invalid byte at offset 68\); export it again as UTF-8"),
        (binary, "is a binary file"),
    ]
    for path, message in cases:
        with pytest.raises(InputError, match=message):
            read_import(path, default_vault="shared", skip_bad=True)


def test_an_invalid_default_vault_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="the default vault 'Shared Stuff' is not a valid vault name"):
        read_import(FIXTURES / "items.json", default_vault="Shared Stuff", skip_bad=False)


# -- vault mapping ------------------------------------------------------------------------------


def test_json_rows_follow_the_vault_map_before_their_own_vault_and_tags_without_case(tmp_path: Path) -> None:
    path = write(tmp_path, "items.json", json.dumps({"items": [
        {"name": "a", "vault": "Acme Corp", "password": "p"},
        {"name": "b", "vault": "elsewhere", "tags": ["Globex"], "password": "p"},
        {"name": "c", "vault": "own", "password": "p"},
        {"name": "d", "tags": ["acme"], "password": "p"},
    ]}))
    rules = VaultRules(default="misc", by_vault={"acme corp": "acme"}, by_tag={"globex": "globex"},
                       tag_vaults=frozenset({"acme"}))
    vaults = {name: item.vault for name, item in by_name(read_import(path, skip_bad=False, rules=rules)).items()}
    assert vaults == {"a": "acme", "b": "globex", "c": "own", "d": "acme"}


def test_tags_mapping_to_two_vaults_are_a_row_error_even_with_a_default(tmp_path: Path) -> None:
    path = write(tmp_path, "items.json", json.dumps({"items": [{"name": "a", "tags": ["x", "y"], "password": "p"}]}))
    rules = VaultRules(default="misc", by_tag={"x": "acme", "y": "globex"})
    with pytest.raises(ImportFileError) as caught:
        read_import(path, skip_bad=False, rules=rules)
    assert caught.value.problems == ["item 1 ('a'): its tags name several vaults (acme, globex, by the vault "
                                     "map's [tags]); keep one such tag, or map the row in --vault-map"]
    # Two tags naming the SAME vault are not a conflict.
    same = VaultRules(default=None, by_tag={"x": "acme", "y": "acme"})
    assert by_name(read_import(path, skip_bad=False, rules=same))["a"].vault == "acme"


def test_read_vault_map_reads_both_tables_and_refuses_an_empty_one(tmp_path: Path) -> None:
    path = write(tmp_path, "map.toml", '[vaults]\n"Acme Corp" = "acme"\n[tags]\nGlobex = "globex"\n')
    assert read_vault_map(path) == ({"acme corp": "acme"}, {"globex": "globex"})
    with pytest.raises(InputError, match="maps nothing"):
        read_vault_map(write(tmp_path, "empty.toml", "# nothing\n[vaults]\n"))
    with pytest.raises(InputError, match="is not valid TOML"):
        read_vault_map(write(tmp_path, "bad.toml", "[vaults\n"))
