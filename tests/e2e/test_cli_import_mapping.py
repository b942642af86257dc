"""`jitpass items import` maps rows to vaults, updates existing items and counts what it did (real processes)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.e2e.test_cli import Cli

POLICY = """
[approvers]
slack = ["U0LEAD"]
[vaults.acme]
[vaults.globex]
"""

HEADER = "Title,Url,Username,Password,OTPAuth,Favorite,Archived,Tags,Notes\n"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    (tmp_path / "policy.toml").write_text(POLICY, encoding="utf-8")
    cli.env["JITPASS_POLICY"] = str(tmp_path / "policy.toml")
    return cli


def _csv(cli: Cli, rows: str, name: str = "export.csv", header: str = HEADER) -> str:
    path = cli.tmp / name
    path.write_text(header + rows, encoding="utf-8")
    return str(path)


def _vaults(cli: Cli) -> dict[str, str]:
    done = cli("items", "list", "--json")
    assert done.returncode == 0, done.stderr
    return {row["name"]: row["vault"] for row in json.loads(done.stdout)}


def test_vault_from_tag_places_each_row_in_the_policy_vault_its_tag_names(cli: Cli) -> None:
    path = _csv(cli, "Acme Zendesk,https://acme.example,ann,pw-1,,false,false,acme;support,\n"
                     "Globex AWS,,bob,pw-2,,false,false,cloud;Globex,\n")
    done = cli("items", "import", path, "--vault-from-tag")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("imported 2, updated 0, unchanged 0, skipped 0")
    assert _vaults(cli) == {"acme-zendesk": "acme", "globex-aws": "globex"}


def test_vault_from_tag_names_rows_with_no_or_several_vault_tags_and_imports_nothing(cli: Cli) -> None:
    path = _csv(cli, "Acme Zendesk,,ann,pw-1,,false,false,acme,\n"
                     "Shared VPN,,bob,pw-2,,false,false,vpn,\n"
                     "Both Jira,,cat,pw-3,,false,false,acme;globex,\n")
    done = cli("items", "import", path, "--vault-from-tag")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "line 3 ('Shared VPN'): no vault for it: no tag names a policy vault" in done.stderr
    assert "line 4 ('Both Jira'): its tags name several vaults (acme, globex, by policy vaults)" in done.stderr
    assert "pw-" not in done.stderr
    assert cli("items", "list", "--json").returncode == 2  # nothing stored, not even a store
    # --vault catches the untagged row; two vault tags stay an error (fail closed), --skip-bad skips it.
    done = cli("items", "import", path, "--vault-from-tag", "--vault", "internal", "--skip-bad")
    assert done.returncode == 0, done.stderr
    assert "skipped: line 4 ('Both Jira'): its tags name several vaults" in done.stderr
    assert done.stdout.strip().endswith("imported 2, updated 0, unchanged 0, skipped 1")
    assert _vaults(cli) == {"acme-zendesk": "acme", "shared-vpn": "internal"}


def test_vault_map_maps_1password_vault_names_then_tags(cli: Cli) -> None:
    (cli.tmp / "map.toml").write_text('[vaults]\n"Acme Corp" = "acme"\n[tags]\nglobex = "globex"\n', "utf-8")
    path = _csv(cli, "Acme Zendesk,,ann,pw-1,,false,false,support,,Acme Corp\n"
                     "Globex AWS,,bob,pw-2,,false,false,GLOBEX,,Other Vault\n"
                     "Loose One,,cat,pw-3,,false,false,,,\n",
                header=HEADER.rstrip("\n") + ",Vault\n")
    done = cli("items", "import", path, "--vault-map", str(cli.tmp / "map.toml"))
    assert done.returncode == 2
    assert "line 4 ('Loose One'): no vault for it: neither its vault nor its tags are in the vault map" in done.stderr
    done = cli("items", "import", path, "--vault-map", str(cli.tmp / "map.toml"), "--vault", "misc")
    assert done.returncode == 0, done.stderr
    assert _vaults(cli) == {"acme-zendesk": "acme", "globex-aws": "globex", "loose-one": "misc"}


def test_a_bad_vault_map_is_refused_with_what_is_wrong(cli: Cli) -> None:
    path = _csv(cli, "Acme Zendesk,,ann,pw-1,,false,false,acme,\n")
    (cli.tmp / "map.toml").write_text('[vaults]\n"Acme Corp" = "Not A Vault"\n', "utf-8")
    done = cli("items", "import", path, "--vault-map", str(cli.tmp / "map.toml"))
    assert done.returncode == 2 and "[vaults] 'Acme Corp' must name a jitpass vault" in done.stderr
    (cli.tmp / "map.toml").write_text('[vault]\n"Acme Corp" = "acme"\n', "utf-8")
    done = cli("items", "import", path, "--vault-map", str(cli.tmp / "map.toml"))
    assert done.returncode == 2 and "unknown table(s) vault" in done.stderr and "Traceback" not in done.stderr


def test_reimport_without_update_names_the_existing_rows_and_skip_bad_skips_them(cli: Cli) -> None:
    first = _csv(cli, "Acme Zendesk,,ann,pw-1,,false,false,acme,\n")
    assert cli("items", "import", first, "--vault", "acme").returncode == 0
    again = _csv(cli, "Acme Zendesk,,ann,pw-1,,false,false,acme,\nAcme Jira,,bob,pw-2,,false,false,acme,\n",
                 name="again.csv")
    done = cli("items", "import", again, "--vault", "acme")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "line 2 ('Acme Zendesk'): an item named 'acme-zendesk' already exists (use --update to change it)" \
        in done.stderr
    assert set(_vaults(cli)) == {"acme-zendesk"}
    done = cli("items", "import", again, "--vault", "acme", "--skip-bad")
    assert done.returncode == 0, done.stderr
    assert "skipped: line 2 ('Acme Zendesk'): an item named 'acme-zendesk' already exists" in done.stderr
    assert done.stdout.strip().endswith("imported 1, updated 0, unchanged 0, skipped 1")
    assert set(_vaults(cli)) == {"acme-zendesk", "acme-jira"}


def test_update_changes_fields_in_place_audited_and_leaves_unchanged_rows(cli: Cli) -> None:
    first = _csv(cli, "Acme Zendesk,https://old.example,ann,pw-1,,false,false,acme,old notes\n"
                      "Acme Jira,,bob,pw-2,,false,false,acme,\n")
    assert cli("items", "import", first, "--vault-from-tag").returncode == 0
    cipher_before = _ciphertext(cli, "acme-zendesk")
    changed = _csv(cli, "Acme Zendesk,https://new.example,ann,pw-1-rotated,,false,false,globex,old notes\n"
                        "Acme Jira,,bob,pw-2,,false,false,acme,\n"
                        "Acme Wiki,,cat,pw-3,,false,false,acme,\n", name="changed.csv")
    done = cli("items", "import", changed, "--vault-from-tag", "--update")
    assert done.returncode == 0, done.stderr
    assert "updated: acme-zendesk (vault, url, tags, password)" in done.stdout
    assert done.stdout.strip().endswith("imported 1, updated 1, unchanged 1, skipped 0")
    shown = json.loads(cli("items", "show", "acme-zendesk", "--json").stdout)
    assert (shown["vault"], shown["url"], shown["tags"]) == ("globex", "https://new.example", ["globex"])
    assert _ciphertext(cli, "acme-zendesk") != cipher_before
    updates = [e for e in cli.events() if e["type"] == "item.updated"]
    assert len(updates) == 1 and updates[0]["item"] == "acme-zendesk"
    details = updates[0]["details"]
    assert isinstance(details, dict)
    assert details["changed"] == ["vault", "url", "tags", "password"] and details["from_vault"] == "acme"
    assert "pw-1" not in json.dumps(updates)


def test_update_leaves_an_unchanged_file_unchanged_and_audits_nothing(cli: Cli) -> None:
    path = _csv(cli, "Acme Zendesk,,ann,pw-1,,false,false,acme,\n")
    assert cli("items", "import", path, "--vault-from-tag").returncode == 0
    before = len(cli.events())
    done = cli("items", "import", path, "--vault-from-tag", "--update")
    assert done.returncode == 0 and done.stdout.strip().endswith("imported 0, updated 0, unchanged 1, skipped 0")
    assert len(cli.events()) == before


def test_duplicates_inside_one_file_are_reported_with_both_row_numbers(cli: Cli) -> None:
    path = _csv(cli, "Acme Zendesk,,ann,pw-1,,false,false,acme,\nacme zendesk,,bob,pw-2,,false,false,acme,\n")
    done = cli("items", "import", path, "--update")
    assert done.returncode == 2
    assert "line 3 ('acme zendesk'): duplicate: the name 'acme-zendesk' is already used by line 2 of this file" \
        in done.stderr


def _ciphertext(cli: Cli, name: str) -> bytes:
    with closing(sqlite3.connect(cli.tmp / "jitpass.db")) as conn:
        row = conn.execute("SELECT ciphertext FROM items WHERE name = ?", (name,)).fetchone()
    return bytes(row[0])


def test_update_from_a_row_without_secrets_keeps_the_stored_password_and_seed(cli: Cli) -> None:
    seed = "otpauth://totp/Acme:ann?secret=JBSWY3DPEHPK3PXP&issuer=Acme"
    path = _csv(cli, f"Acme Zendesk,,ann,pw-1,{seed},false,false,acme,\n")
    assert cli("items", "import", path, "--vault-from-tag").returncode == 0
    cipher_before = _ciphertext(cli, "acme-zendesk")
    bare = _csv(cli, "Acme Zendesk,,ann-new,,,false,false,acme,\n", name="bare.csv")
    done = cli("items", "import", bare, "--vault-from-tag", "--update")
    assert done.returncode == 0, done.stderr
    assert "updated: acme-zendesk (username)" in done.stdout
    shown = json.loads(cli("items", "show", "acme-zendesk", "--json").stdout)
    assert (shown["username"], shown["has_password"], shown["has_totp"]) == ("ann-new", True, True)
    assert _ciphertext(cli, "acme-zendesk") != cipher_before  # re-sealed, with the same secrets inside
