"""`jitpass items sync` as a real process against the Connect and Events API stand-ins."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.test_cli import Cli
from tests.support.fake_onepassword import CONNECT_TOKEN, EVENTS_TOKEN, FakeOnePassword, running
from tests.support.onepassword import OP_CANARY_PASSWORD, OP_CANARY_SEED, OP_POLICY, OnePasswordAccount, seed_account


@pytest.fixture
async def account() -> AsyncIterator[OnePasswordAccount]:
    async with running(FakeOnePassword()) as fake:
        yield seed_account(fake)


def _cli(tmp_path: Path, account: OnePasswordAccount, **env: str) -> Cli:
    cli = Cli(tmp_path)
    (tmp_path / "policy.toml").write_text(OP_POLICY)
    cli.env.update({"JITPASS_POLICY": str(tmp_path / "policy.toml"), "OP_CONNECT_HOST": account.fake.connect_url,
                    "OP_CONNECT_TOKEN": CONNECT_TOKEN, "OP_EVENTS_URL": account.fake.events_url,
                    "OP_EVENTS_TOKEN": EVENTS_TOKEN, **env})
    return cli


async def test_items_sync_prints_what_changed_and_names_what_it_cannot_serve(
        tmp_path: Path, account: OnePasswordAccount) -> None:
    account.fake.add_login(account.initech, "Two passwords", password="a", extra_passwords=("b",))
    cli = _cli(tmp_path, account)

    done = await asyncio.to_thread(cli, "items", "sync")
    listed = await asyncio.to_thread(cli, "items", "list", "--json")

    assert done.returncode == 0, done.stderr
    assert "added: initech-portal-admin" in done.stdout and "added: acme-op-billing" in done.stdout
    assert "1Password sync: 2 added, 0 updated, 0 removed, 0 unchanged, 1 not served" in done.stdout
    assert "not served: 1Password item 'Two passwords' in vault 'Initech' has 2 password fields" in done.stderr
    assert "note: 1Password vault 'Finance' is not mapped in the policy" in done.stderr
    assert "1Password item usage: 0 read, 0 without a grant" in done.stdout
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert sorted(rows) == ["acme-op-billing", "initech-portal-admin"]
    assert rows["initech-portal-admin"]["source"] == "1password"
    assert rows["initech-portal-admin"]["onepassword_vault"] == "Initech"
    for output in (done.stdout, done.stderr, listed.stdout):
        assert OP_CANARY_PASSWORD not in output and OP_CANARY_SEED not in output
    assert CONNECT_TOKEN not in done.stdout + done.stderr


async def test_items_sync_without_connect_or_with_a_wrong_token_says_what_to_fix(
        tmp_path: Path, account: OnePasswordAccount) -> None:
    unconfigured = _cli(tmp_path, account, OP_CONNECT_HOST="", OP_CONNECT_TOKEN="")
    half = _cli(tmp_path, account, OP_CONNECT_TOKEN="")
    wrong = _cli(tmp_path, account, OP_CONNECT_TOKEN="token-of-another-account")

    none_done = await asyncio.to_thread(unconfigured, "items", "sync")
    half_done = await asyncio.to_thread(half, "items", "sync")
    wrong_done = await asyncio.to_thread(wrong, "items", "sync")

    assert none_done.returncode != 0 and "set OP_CONNECT_HOST and OP_CONNECT_TOKEN" in none_done.stderr
    assert half_done.returncode != 0 and "OP_CONNECT_TOKEN is not set" in half_done.stderr
    assert wrong_done.returncode != 0 and "refused jitpass's Connect token" in wrong_done.stderr
    for done in (none_done, half_done, wrong_done):
        assert "Traceback" not in done.stderr
    assert "token-of-another-account" not in wrong_done.stderr


async def test_items_sync_reports_the_sync_even_when_the_events_token_is_refused(
        tmp_path: Path, account: OnePasswordAccount) -> None:
    cli = _cli(tmp_path, account, OP_EVENTS_TOKEN="expired-events-token")

    done = await asyncio.to_thread(cli, "items", "sync")

    assert done.returncode == 1
    assert "1Password sync: 2 added" in done.stdout
    assert "1Password item usage was not read: the Events API refused OP_EVENTS_TOKEN" in done.stderr
    assert "expired-events-token" not in done.stdout + done.stderr
