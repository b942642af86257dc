"""The [onepassword] policy table and the OP_* settings: bad input is named with its key and line."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from bot.domain.config import Settings, parse_policy
from bot.domain.errors import InputError, PolicyError
from bot.domain.model import Identity

GOOD = """
[onepassword]
sync_every = "10m"
notify_leads = false
[onepassword.vaults."Acme Customer"]
vault = "acme"
prefix = "acme-"
[onepassword.vaults.abcdefghijklmnopqrstuvwxyz]
vault = "globex"
[onepassword.people]
"Ann@Acme.example" = ["slack:U0ANN", "teams:ann-oid"]
"""


def test_served_vaults_map_by_name_or_id_and_people_by_e_mail() -> None:
    config = parse_policy(GOOD).onepassword

    assert config.sync_every == timedelta(minutes=10) and config.notify_leads is False
    by_name = config.mapping_for("zzzzzzzzzzzzzzzzzzzzzzzzzz", "Acme Customer")
    by_id = config.mapping_for("abcdefghijklmnopqrstuvwxyz", "Renamed vault")
    assert by_name is not None and (by_name.vault, by_name.prefix) == ("acme", "acme-")
    assert by_id is not None and by_id.vault == "globex"
    assert config.mapping_for("other", "Finance") is None
    assert config.is_person("ann@acme.example", Identity("slack", "U0ANN"))
    assert config.is_person("ANN@acme.example", Identity("teams", "ann-oid"))
    assert not config.is_person("ann@acme.example", Identity("slack", "U0BOB"))
    assert config.is_person("bob@acme.example", Identity("teams", "bob@acme.example"))


@pytest.mark.parametrize(("text", "words"), [
    ('[onepassword]\nsync = "5m"\n', "onepassword.sync (line 2): unknown key"),
    ('[onepassword.vaults."Acme"]\nvault = "Acme Corp"\n', "onepassword.vaults.Acme.vault (line 2): must name the"),
    ('[onepassword.vaults."Acme"]\nvault = "acme"\nprefix = "Acme "\n', "prefix (line 3): must be lower-case"),
    ('[onepassword.vaults."Acme"]\nvault = "acme"\nteam = "x"\n', "unknown key; expected vault or prefix"),
    ('[onepassword.people]\n"ann" = ["slack:U1"]\n', "must be a 1Password account e-mail address"),
    ('[onepassword.people]\n"ann@x.example" = ["U1"]\n', "'U1' is not 'slack:<user id>' or 'teams:<id>'"),
    ('[onepassword]\nsync_every = "often"\n', "onepassword.sync_every (line 2)"),
])
def test_a_bad_onepassword_table_is_named(text: str, words: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(words)):
        parse_policy(text)


def test_connect_settings_need_both_host_and_token_and_an_http_url() -> None:
    env = {"JITPASS_DOTENV": "/nonexistent.env"}
    settings = Settings.from_env({**env, "OP_CONNECT_HOST": "http://op-connect:8080/", "OP_CONNECT_TOKEN": "t0k"})
    assert settings.op_connect_host == "http://op-connect:8080" and settings.op_events_url.endswith("1password.com")
    assert "t0k" not in repr(settings)
    with pytest.raises(InputError, match="OP_CONNECT_TOKEN is not set"):
        Settings.from_env({**env, "OP_CONNECT_HOST": "http://op-connect:8080"})
    with pytest.raises(InputError, match="OP_CONNECT_HOST is not set"):
        Settings.from_env({**env, "OP_CONNECT_TOKEN": "t0k"})
    with pytest.raises(InputError, match="OP_EVENTS_URL='ftp://x' is not an http"):
        Settings.from_env({**env, "OP_EVENTS_URL": "ftp://x"})
