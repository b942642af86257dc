"""`jitpass policy check` warns about policies under which requests can never be approved (real processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_cli import Cli

GUID = "6e4f3b2a-1c0d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def _check(cli: Cli, text: str, *flags: str) -> tuple[int, list[str], str]:
    path = cli.tmp / "policy.toml"
    path.write_text(text, encoding="utf-8")
    done = cli("policy", "check", str(path), *flags)
    assert "Traceback" not in done.stderr
    return done.returncode, [line for line in done.stderr.splitlines() if line.startswith("warning: ")], done.stdout


def test_a_sound_policy_has_no_warning_and_passes_strict(cli: Cli) -> None:
    text = f"""
[approvers]
slack = ["U012LEAD", "W0ABC"]
teams = ["{GUID}"]
slack_groups = ["S0LEADS"]
[leads_channel]
slack = "C0LEADS"
teams = "19:3f2a9c81@thread.tacv2"
[vaults.acme]
approvals_required = 2
"""
    code, warnings, out = _check(cli, text, "--strict")
    assert (code, warnings) == (0, []) and ": OK — 1 vault(s)" in out


def test_an_empty_policy_warns_that_nobody_can_approve_and_strict_fails(cli: Cli) -> None:
    code, warnings, _ = _check(cli, "")
    assert code == 0
    assert warnings == ["warning: [approvers]: no approvers: requests for vaults not named under [vaults] "
                        "can never be approved"]
    code, _, _ = _check(cli, "", "--strict")
    assert code == 1


def test_approvals_above_distinct_people_count_linked_accounts_once(cli: Cli) -> None:
    text = f"""
[approvers]
slack = ["U0LEAD"]
[vaults.acme]
approvals_required = 2
[vaults.acme.approvers]
slack = ["U0ANN", "U0BOB"]
teams = ["{GUID}"]
[vaults.solo]
approvals_required = 3
[people.ann]
slack = "U0ANN"
teams = "{GUID}"
"""
    code, warnings, _ = _check(cli, text, "--strict")
    assert code == 1
    # acme: three accounts but two people (ann's two accounts are one vote) -> 2 of 2 is possible.
    assert not any("vaults.acme" in w for w in warnings), warnings
    assert warnings == ["warning: [vaults.solo] (approvers from [approvers]): approvals_required = 3 but only "
                        "1 distinct approver(s): requests for vault solo can never be approved"]
    code, warnings, _ = _check(cli, text.replace("approvals_required = 2", "approvals_required = 3"))
    assert code == 0 and any(w.startswith("warning: [vaults.acme.approvers]: approvals_required = 3 but only 2 ")
                             for w in warnings), warnings


def test_admins_alone_do_not_make_a_vault_approvable(cli: Cli) -> None:
    code, warnings, _ = _check(cli, '[admins]\nslack = ["U0ADMIN"]\n[vaults.acme.approvers]\n', "--strict")
    assert code == 1
    assert "warning: [vaults.acme.approvers]: no approvers: requests for vault acme can never be approved " \
           "(admins do not approve requests)" in warnings


def test_ids_and_channels_that_cannot_be_real_are_named_with_their_field(cli: Cli) -> None:
    text = """
[approvers]
slack = ["ulead", "U0LEAD"]
teams = ["3f2a…-entra-object-id"]
slack_groups = ["leads"]
[admins]
teams = ["admin-oid"]
[leads_channel]
slack = "#leads"
[vaults.acme.leads_channel]
teams = "19:…@thread.tacv2"
"""
    code, warnings, _ = _check(cli, text, "--strict")
    assert code == 1
    fields = sorted(w.split(": ")[1] for w in warnings)
    assert fields == ["admins.teams", "approvers.slack", "approvers.slack_groups", "approvers.teams",
                      "leads_channel.slack", "vaults.acme.leads_channel.teams"], warnings
    assert any("'3f2a…-entra-object-id' cannot be a real id: expected an Entra object id" in w for w in warnings)


def test_a_policy_that_does_not_validate_exits_2_even_with_strict(cli: Cli) -> None:
    code, _, _ = _check(cli, '[approvers]\nslack = "U0LEAD"\n[vaults.acme]\napprovals_required = 0\n', "--strict")
    assert code == 2


def test_policy_check_help_documents_strict_and_the_exit_codes(cli: Cli) -> None:
    done = cli("policy", "check", "--help")
    assert done.returncode == 0
    assert "--strict" in done.stdout and "Exit codes:" in done.stdout
    assert "1    with --strict: the policy is valid but has at least one warning" in done.stdout
