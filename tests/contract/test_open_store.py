"""Choosing a store from JITPASS_STORE, and refusing what cannot be a store without leaking secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.domain.errors import StoreError
from storage import open_store
from storage.mongo.store import MongoStore, mongo_location
from storage.sqlite.store import SqliteStore
from tests.support.stores import FakeClock


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///jitpass.db", Path("jitpass.db")),
        ("sqlite:///data/jitpass.db", Path("data/jitpass.db")),
        ("sqlite:////var/lib/jitpass/jitpass.db", Path("/var/lib/jitpass/jitpass.db")),
        ("./jitpass.db", Path("jitpass.db")),
        ("/srv/jitpass.db", Path("/srv/jitpass.db")),
        ("  jitpass.db\n", Path("jitpass.db")),
    ],
)
def test_sqlite_urls_and_plain_paths_name_a_sqlite_file(url: str, path: Path) -> None:
    store = open_store(url, FakeClock())
    assert isinstance(store, SqliteStore)
    assert store.kind == "sqlite" and store.path == path


@pytest.mark.parametrize(
    ("url", "hosts", "db_name"),
    [
        ("mongodb://localhost:27017", "localhost:27017", "jitpass"),
        ("mongodb://app:s3cret@db1:27017,db2:27017/vault?replicaSet=rs0", "db1:27017,db2:27017", "vault"),
        ("mongodb+srv://app:s3cret@cluster0.example.net/prod-jitpass?retryWrites=true", "cluster0.example.net",
         "prod-jitpass"),
    ],
)
def test_mongodb_urls_name_a_mongodb_store_without_connecting(url: str, hosts: str, db_name: str) -> None:
    store = open_store(url, FakeClock())
    assert isinstance(store, MongoStore)
    assert (store.kind, store.hosts, store.db_name) == ("mongodb", hosts, db_name)


def test_an_explicit_database_name_wins_over_the_url() -> None:
    assert MongoStore("mongodb://h/a", FakeClock(), db_name="b").db_name == "b"
    assert mongo_location("mongodb://u:p@h:1/?authSource=admin") == ("h:1", None)


@pytest.mark.parametrize("url", ["postgres://admin:hunter2@db/jitpass", "sqlite://x.db", "sqlite:///", ""])
def test_an_unknown_url_lists_the_accepted_forms_and_never_echoes_credentials(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(url, FakeClock())
    message = str(caught.value)
    assert "sqlite:///relative/path.db" in message and "mongodb+srv://" in message
    assert "hunter2" not in message


async def test_an_unreachable_mongodb_is_a_store_error_naming_the_host_but_not_the_password() -> None:
    # Port 9 on loopback: nothing listens, so this needs no MongoDB server.
    store = MongoStore("mongodb://jit:p%40ss-w0rd@127.0.0.1:9/jitpass", FakeClock(), server_selection_timeout=0.3)

    with pytest.raises(StoreError) as caught:
        await store.open()

    message = str(caught.value)
    assert "127.0.0.1:9" in message
    assert "p%40ss-w0rd" not in message and "p@ss-w0rd" not in message and "jit:" not in message
    with pytest.raises(StoreError, match="not open"):
        await store.get_meta("x")
