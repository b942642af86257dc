"""Items: the catalogue and its sealed secrets, written together with their audit events."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from bot.domain.audit import verify_chain
from bot.domain.errors import Conflict, NotFound
from bot.domain.model import ONEPASSWORD, ExternalRef, RotationDue
from bot.ports import Store
from tests.support.stores import ANN, BOB, START, FakeClock, draft, make_sealed


async def _event_types(store: Store) -> list[str]:
    return [e.type async for e in store.events()]


async def test_added_items_are_listed_by_name_and_read_back_with_their_sealed_secret(store: Store) -> None:
    due = RotationDue(since=START, seen_by=(ANN, BOB), request_ids=("R1",))
    db = make_sealed("db-admin", username="sa", url="https://db.example", notes="primary", tags=("sql", "prod"),
                     has_totp=True, created_at=START, updated_at=START, password_rotated_at=START,
                     rotation_due=due, ciphertext=b"\x00\xffsecret-bytes")
    aws = make_sealed("aws-root", vault="cloud")
    await store.add_items([db, aws], [draft("item.added", item="db-admin"), draft("item.added", item="aws-root")])

    assert [i.name for i in await store.list_items()] == ["aws-root", "db-admin"]
    assert (await store.list_items())[1] == db.item
    assert await store.get_item("db-admin") == db
    assert [s.item.name for s in await store.list_sealed_items()] == ["aws-root", "db-admin"]
    assert await store.get_item("nope") is None
    assert await _event_types(store) == ["item.added", "item.added"]


async def test_adding_items_is_all_or_nothing_when_one_name_already_exists(store: Store) -> None:
    await store.add_items([make_sealed("db-admin")], [draft("item.added", item="db-admin")])

    with pytest.raises(Conflict, match="db-admin"):
        await store.add_items([make_sealed("aws-root"), make_sealed("db-admin")],
                              [draft("item.added", item="aws-root"), draft("item.added", item="db-admin")])

    assert [i.name for i in await store.list_items()] == ["db-admin"]
    assert await store.count_events() == 1


async def test_adding_the_same_name_twice_in_one_batch_is_a_conflict(store: Store) -> None:
    with pytest.raises(Conflict):
        await store.add_items([make_sealed("db-admin"), make_sealed("db-admin")], [])
    assert await store.list_items() == []


async def test_replacing_an_item_overwrites_metadata_and_ciphertext(store: Store, clock: FakeClock) -> None:
    original = make_sealed("db-admin", username="sa")
    await store.add_items([original], [])
    changed = replace(original, item=replace(original.item, username="admin", updated_at=clock.advance(hours=1)),
                      ciphertext=b"new-ciphertext")

    await store.replace_item(changed, draft("item.updated", item="db-admin"))
    await store.replace_item(replace(changed, key_id="k1"), None)

    assert await store.get_item("db-admin") == changed
    assert await _event_types(store) == ["item.updated"]


async def test_replacing_or_removing_a_missing_item_is_not_found_and_records_nothing(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.replace_item(make_sealed("ghost"), draft("item.updated", item="ghost"))
    with pytest.raises(NotFound):
        await store.remove_item("ghost", draft("item.removed", item="ghost"))
    assert await store.count_events() == 0


async def test_rewrapping_replaces_key_material_of_every_item_or_of_none(store: Store) -> None:
    await store.add_items([make_sealed("a"), make_sealed("b")], [])
    rewrapped = [replace(make_sealed(n, key_id="k2", ciphertext=b"re-" + n.encode()), wrapped_key=b"w2")
                 for n in ("a", "b")]

    with pytest.raises(NotFound):
        await store.rewrap_items([*rewrapped, make_sealed("ghost", key_id="k2")], draft("key.rotated"))
    assert {s.key_id for s in await store.list_sealed_items()} == {"k1"}
    assert await store.count_events() == 0

    await store.rewrap_items(rewrapped, draft("key.rotated", details={"items": 2}))
    assert await store.list_sealed_items() == rewrapped
    assert await _event_types(store) == ["key.rotated"]


async def test_removing_an_item_deletes_it_and_records_the_removal(store: Store) -> None:
    await store.add_items([make_sealed("db-admin")], [draft("item.added", item="db-admin")])

    await store.remove_item("db-admin", draft("item.removed", item="db-admin"))

    assert await store.get_item("db-admin") is None
    assert await _event_types(store) == ["item.added", "item.removed"]
    assert (await verify_chain(store.events())).ok


async def test_metadata_values_are_stored_and_replaced(store: Store) -> None:
    assert await store.get_meta("key_check") is None
    await store.set_meta("key_check", "v1")
    await store.set_meta("key_check", "v2")
    assert await store.get_meta("key_check") == "v2"


async def test_describe_names_the_kind_and_schema_version(store: Store) -> None:
    await store.append_event(draft())
    described = await store.describe()
    assert described["kind"] == store.kind
    assert described["schema_version"] >= 1
    assert described["last_seq"] == 1


async def test_an_item_update_with_a_time_in_another_zone_reads_back_as_the_same_instant(store: Store) -> None:
    from datetime import timezone

    paris = timezone(timedelta(hours=1))
    sealed = make_sealed("db-admin", created_at=START.astimezone(paris))
    await store.add_items([sealed], [])
    got = await store.get_item("db-admin")
    assert got is not None and got.item.created_at == START


async def test_an_item_read_from_1password_keeps_its_reference_and_no_secret(store: Store) -> None:
    ref = ExternalRef(vault_id="v" * 26, item_id="i" * 26, vault_title="Acme", version=7, revision="v1:k:abc")
    zendesk = make_sealed("acme-zendesk", vault="acme", username="admin", source=ONEPASSWORD, category="LOGIN",
                          external=ref, ciphertext=b"")
    builtin = make_sealed("db-admin")
    await store.add_items([zendesk, builtin], [draft("item.added", item="acme-zendesk")])

    listed = {i.name: i for i in await store.list_items()}
    assert listed["acme-zendesk"] == zendesk.item
    assert (listed["db-admin"].source, listed["db-admin"].external) == ("builtin", None)
    assert await store.get_item("acme-zendesk") == zendesk
    moved = replace(zendesk, item=replace(zendesk.item, external=replace(ref, version=8, vault_title="Acme EU")))
    await store.replace_item(moved, None)
    assert (await store.get_item("acme-zendesk")) == moved
