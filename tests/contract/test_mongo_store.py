"""What only the MongoDB store has to get right: BSON's limits, transactions or their absence, purges
in batches, and the driver options it sets. On the suite's server (transactions) and on a standalone
one (no transactions, development only); rules both stores share live in the other contract modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from bot.domain.audit import verify_chain
from bot.domain.errors import AuditWriteError, StoreError
from bot.domain.model import EffectDraft, EffectKind, EffectOutcome, EffectStatus, Status, TransitionDraft
from storage.mongo.store import ALLOW_STANDALONE_VAR, MongoStore, client_options
from tests.contract.conftest import refuse_inserts_mongo
from tests.support.mongo import new_db_name
from tests.support.stores import ANN, BOB, START, FakeClock, draft, make_request, make_sealed

pytestmark = [pytest.mark.mongodb]

Doc = dict[str, Any]


class _Opened:
    """A MongoStore on a fresh database, plus a plain client to look behind it."""

    def __init__(self, uri: str, standalone: bool, **options: Any) -> None:
        self.uri, self.clock = uri, FakeClock()
        self.db_name = new_db_name()
        self.options = {"allow_standalone": standalone, **options}
        self.store = MongoStore(uri, self.clock, db_name=self.db_name, **self.options)
        self.admin: AsyncMongoClient[Doc] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)

    @property
    def db(self) -> Any:
        return self.admin[self.db_name]

    async def reopen(self) -> None:
        await self.store.close()
        self.store = MongoStore(self.uri, self.clock, db_name=self.db_name, **self.options)
        await self.store.open()


@pytest.fixture(params=["mongodb", "mongodb-standalone"])
def server(request: pytest.FixtureRequest) -> tuple[str, bool]:
    standalone = request.param == "mongodb-standalone"
    return request.getfixturevalue("mongodb_standalone_uri" if standalone else "mongodb_uri"), standalone


@pytest.fixture
async def mongo(server: tuple[str, bool]) -> AsyncIterator[_Opened]:
    opened = _Opened(*server)
    try:
        await opened.store.open()
        yield opened
    finally:
        await opened.store.close()
        await opened.admin.drop_database(opened.db_name)
        await opened.admin.close()


# -- B1: values BSON cannot hold ---------------------------------------------------------------

UNENCODABLE = {
    "an int of 2**70": {"n": 2**70},  # OverflowError: BSON integers are 64-bit
    "a key with NUL": {"bad\x00key": 1},  # bson.errors.InvalidDocument
    "over 16 MB": {"blob": "x" * (17 * 1024 * 1024)},  # pymongo.errors.DocumentTooLarge
}


@pytest.mark.parametrize("details", UNENCODABLE.values(), ids=UNENCODABLE.keys())
async def test_an_event_bson_cannot_hold_is_refused_and_nothing_changes(mongo: _Opened, details: Doc) -> None:
    store = mongo.store
    await store.create_request(make_request("R1"), draft("request.created", request_id="R1"))

    with pytest.raises(AuditWriteError, match=r"request\.declined"):
        await store.transition("R1", {Status.PENDING}, {"status": Status.DECLINED, "decided_by": BOB},
                               draft("request.declined", BOB, request_id="R1", details=details))
    with pytest.raises(AuditWriteError, match=r"request\.created"):
        await store.create_request(make_request("R2", item="db-ro"),
                                   draft("request.created", request_id="R2", details=details))
    with pytest.raises(AuditWriteError):
        await store.append_event(draft(details=details))

    assert await store.get_request("R1") == make_request("R1")
    assert await store.get_request("R2") is None
    assert await store.count_events() == 1
    assert (await verify_chain(store.events())).ok


# -- B3: no transactions, no production ----------------------------------------------------------

async def test_a_server_without_transactions_is_refused_unless_development_allows_it(
        mongodb_standalone_uri: str) -> None:
    refused = MongoStore(mongodb_standalone_uri, FakeClock(), db_name=new_db_name())
    with pytest.raises(StoreError, match=rf"has no transactions.*replica set.*{ALLOW_STANDALONE_VAR}=true"):
        await refused.open()
    allowed = MongoStore(mongodb_standalone_uri, FakeClock(), db_name=refused.db_name, allow_standalone=True)
    await allowed.open()
    try:
        assert (await allowed.describe())["transactions"] is False
    finally:
        await allowed.close()
        admin: AsyncMongoClient[Doc] = AsyncMongoClient(mongodb_standalone_uri)
        await admin.drop_database(refused.db_name)
        await admin.close()


async def test_a_server_with_transactions_runs_every_unit_in_one(mongodb_uri: str) -> None:
    store = MongoStore(mongodb_uri, FakeClock(), db_name=new_db_name())
    await store.open()
    try:
        assert (await store.describe())["transactions"] is True
    finally:
        await store.close()
        admin: AsyncMongoClient[Doc] = AsyncMongoClient(mongodb_uri)
        await admin.drop_database(store.db_name)
        await admin.close()


# -- B2: purges in bounded batches, after their checkpoint and event -------------------------------

class _Commands(monitoring.CommandListener):
    """What the driver sends to one database, in order (PyMongo's public command monitoring)."""

    def __init__(self) -> None:
        self.db_name: str | None = None
        self.seen: list[tuple[str, Doc]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.db_name:
            self.seen.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.database_name == self.db_name and event.command_name == "delete":
            self.seen.append(("deleted", {"n": event.reply.get("n")}))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_COMMANDS = _Commands()
monitoring.register(_COMMANDS)  # clients created from now on report to it; it records one database only


@pytest.fixture
def commands() -> Iterator[_Commands]:
    yield _COMMANDS
    _COMMANDS.db_name, _COMMANDS.seen = None, []


async def test_a_purge_writes_checkpoint_and_event_first_then_deletes_in_bounded_batches(
        server: tuple[str, bool], commands: _Commands) -> None:
    opened = _Opened(*server, purge_batch=4)
    store, clock = opened.store, opened.clock
    try:
        await store.open()
        for i in range(11):
            clock.at = START + timedelta(days=i)
            await store.append_event(draft(details={"i": i}))
        commands.db_name = opened.db_name

        result = await store.purge_events(START + timedelta(days=10), draft("retention.purged", None))

        assert result.purged == 10 and result.checkpoint is not None and result.checkpoint.seq == 10
        names = [name for name, _ in commands.seen]
        event_written = max(i for i, (name, cmd) in enumerate(commands.seen)
                            if name == "insert" and cmd.get("insert") == "events")
        first_delete = names.index("delete")
        assert event_written < first_delete  # the checkpoint's event is in before anything goes
        deleted = [cmd["n"] for name, cmd in commands.seen if name == "deleted"]
        assert sum(deleted) == 10 and max(deleted) <= 4
        assert await opened.db["events"].count_documents({}) == 2  # the newest and the purge's own
    finally:
        await store.close()
        await opened.admin.drop_database(opened.db_name)
        await opened.admin.close()


async def test_a_purge_a_crash_interrupted_is_invisible_and_finished_at_the_next_open(mongo: _Opened) -> None:
    store, clock = mongo.store, mongo.clock
    for i in range(6):
        clock.at = START + timedelta(days=i)
        await store.append_event(draft(details={"i": i}))
    purged_docs = [d async for d in mongo.db["events"].find({"_id": {"$lte": 5}})]
    result = await store.purge_events(START + timedelta(days=5), draft("retention.purged", None))
    assert result.checkpoint is not None and result.checkpoint.seq == 5
    # The state a kill -9 between the checkpoint's transaction and the batch deletes leaves behind.
    await mongo.db["events"].insert_many(purged_docs)

    remaining = [e async for e in store.events()]
    assert [e.seq for e in remaining] == [6, 7]
    assert await store.count_events() == 2
    checkpoint = await store.checkpoint()
    assert checkpoint is not None
    report = await verify_chain(store.events(), start_seq=checkpoint.seq, start_hash=checkpoint.hash)
    assert report.ok, report.problem

    await mongo.reopen()

    assert await mongo.db["events"].count_documents({"_id": {"$lte": 5}}) == 0


# -- smaller ones --------------------------------------------------------------------------------

async def test_every_collection_and_index_exists_once_open(mongo: _Opened) -> None:
    # Never created for the first time inside a transaction; the report index is not left to the first report.
    assert {"items", "requests", "events", "meta", "effects"} <= set(await mongo.db.list_collection_names())
    assert "type_at" in await mongo.db["events"].index_information()


async def test_an_item_write_the_server_refuses_is_a_store_error_not_a_name_conflict(mongo: _Opened) -> None:
    await refuse_inserts_mongo(mongo.db, "items")

    with pytest.raises(StoreError) as raised:
        await mongo.store.add_items([make_sealed("db-admin"), make_sealed("db-ro")],
                                    [draft("item.added", item="db-admin"), draft("item.added", item="db-ro")])

    assert "already" not in str(raised.value) and "someone else" not in str(raised.value)
    assert await mongo.store.list_items() == []
    assert await mongo.store.count_events() == 0


async def test_when_undoing_a_removal_fails_too_the_error_says_so(mongodb_standalone_uri: str) -> None:
    opened = _Opened(mongodb_standalone_uri, True)
    store = opened.store
    try:
        await store.open()
        await store.add_items([make_sealed("db-admin")], [draft("item.added", item="db-admin")])
        await refuse_inserts_mongo(opened.db, "events")
        await refuse_inserts_mongo(opened.db, "items")  # the undo (re-inserting the item) fails as well

        with pytest.raises(AuditWriteError, match="undoing removing an item failed too"):
            await store.remove_item("db-admin", draft("item.removed", item="db-admin"))
    finally:
        await store.close()
        await opened.admin.drop_database(opened.db_name)
        await opened.admin.close()


async def test_a_url_asking_for_secondaries_still_reads_and_changes_on_the_primary(mongo: _Opened) -> None:
    uri = mongo.uri + ("&" if "?" in mongo.uri else "?") + "readPreference=secondaryPreferred"
    store = MongoStore(uri, FakeClock(), db_name=mongo.db_name, allow_standalone=mongo.options["allow_standalone"])
    await store.open()
    try:
        await store.create_request(make_request("R1"), draft("request.created", request_id="R1"))
        moved = await store.transition("R1", {Status.PENDING}, {"status": Status.DECLINED, "decided_by": ANN},
                                       draft("request.declined", ANN, request_id="R1"))
        assert moved is not None and moved.status is Status.DECLINED
    finally:
        await store.close()


def test_options_in_the_url_win_over_jitpass_defaults() -> None:
    assert client_options("mongodb://h/db") == {"serverSelectionTimeoutMS": 5000, "appname": "jitpass"}
    assert client_options("mongodb://h/db?appName=ops&serverSelectionTimeoutMS=30000") == {}
    assert client_options("mongodb://h/db?serverselectiontimeoutms=30000", 0.3) == {
        "serverSelectionTimeoutMS": 300, "appname": "jitpass"}


# -- batches of transitions in short transactions ------------------------------------------------


async def test_a_batch_longer_than_one_transaction_moves_each_once_with_its_events_chained_in_order(
        mongodb_uri: str) -> None:
    opened = _Opened(mongodb_uri, False, transition_batch=2)  # 5 drafts: three transactions
    try:
        await opened.store.open()
        store = opened.store
        for n in range(5):
            await store.create_request(make_request(f"R{n}", item=f"item-{n}"), draft("request.created",
                                                                                      request_id=f"R{n}"))
        await store.transition("R3", {Status.PENDING}, {"status": Status.CANCELLED}, None)
        drafts = [TransitionDraft(f"R{n}", frozenset({Status.PENDING}), {"status": Status.TIMED_OUT},
                                  draft("request.timed_out", request_id=f"R{n}"), (EffectDraft(EffectKind.TELL),))
                  for n in (0, 1, 2, 3, 4, 0)]  # R3 moved already; R0 twice: its second draft sees the first
        _COMMANDS.db_name, _COMMANDS.seen = opened.db_name, []
        results = await store.transition_many(drafts)
        # One bulk update of the requests per transaction: three transactions of at most two drafts.
        updates = [c for name, c in _COMMANDS.seen if name == "update" and c.get("update") == "requests"]
        assert [len(c.get("updates", [])) for c in updates] == [2, 1, 1]
        assert [r.status if r else None for r in results] == [Status.TIMED_OUT] * 3 + [None, Status.TIMED_OUT, None]
        timed_out = [e async for e in store.events(types={"request.timed_out"})]
        assert [e.request_id for e in timed_out] == ["R0", "R1", "R2", "R4"]
        assert (await verify_chain(store.events())).ok
        assert [len(await store.effects_of(f"R{n}")) for n in range(5)] == [1, 1, 1, 0, 1]
    finally:
        await opened.store.close()
        await opened.admin.drop_database(opened.db_name)
        await opened.admin.close()



# -- fewer reads per unit of work: the tail this process wrote, claims and settles not read back ----------

def _reads_of(commands: _Commands, collection: str) -> int:
    return sum(1 for name, c in commands.seen if name == "find" and c.get("find") == collection)


async def test_appends_follow_the_tail_this_process_wrote_and_another_writers_append_is_caught(
        server: tuple[str, bool], commands: _Commands) -> None:
    first, second = _Opened(*server), None
    try:
        await first.store.open()
        second = _Opened(*server)
        second.db_name = first.db_name
        second.store = MongoStore(first.uri, first.clock, db_name=first.db_name, **first.options)
        await second.store.open()
        await first.store.append_event(draft(details={"n": 1}))
        commands.db_name, commands.seen = first.db_name, []
        await first.store.append_event(draft(details={"n": 2}))
        assert _reads_of(commands, "events") == 0  # after its own committed append: no tail read
        await second.store.append_event(draft(details={"n": 3}))  # the first one's guess is now behind
        await first.store.create_request(make_request("R1"), draft("request.created", request_id="R1"))
        await first.store.append_event(draft(details={"n": 5}))
        events = [e async for e in first.store.events()]
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert [e.details.get("n") for e in events] == [1, 2, 3, None, 5]
        assert (await verify_chain(first.store.events())).ok
    finally:
        if second is not None:
            await second.store.close()
        await first.store.close()
        await first.admin.drop_database(first.db_name)
        await first.admin.close()


async def _accept_inserts(db: Any, name: str) -> None:
    """Undo `refuse_inserts_mongo`: the collection again, same documents and indexes, no validator."""
    collection = db[name]
    docs = [d async for d in collection.find({})]
    indexes = [i async for i in await collection.list_indexes() if i["name"] != "_id_"]
    await collection.drop()
    await db.create_collection(name)
    if docs:
        await collection.insert_many(docs)
    for index in indexes:
        await collection.create_index(list(index["key"].items()),
                                      **{k: v for k, v in index.items() if k not in ("key", "v", "ns")})


async def test_a_transaction_that_lost_its_append_does_not_leave_its_tail_behind(mongodb_uri: str) -> None:
    opened = _Opened(mongodb_uri, False)
    try:
        await opened.store.open()
        store = opened.store
        await store.create_request(make_request("R1"), draft("request.created", request_id="R1"))
        # An audit failure inside a transaction: the change and its event are rolled back together ...
        await refuse_inserts_mongo(opened.db, "events")
        with pytest.raises((AuditWriteError, StoreError)):
            await store.transition("R1", {Status.PENDING}, {"status": Status.DECLINED},
                                   draft("request.declined", request_id="R1"))
        await _accept_inserts(opened.db, "events")
        # ... and the next event takes seq 2, right after the one that committed.
        await store.append_event(draft(details={"n": 2}))
        assert [e.seq async for e in store.events()] == [1, 2]
        assert (await verify_chain(store.events())).ok
    finally:
        await opened.store.close()
        await opened.admin.drop_database(opened.db_name)
        await opened.admin.close()


async def test_a_claim_that_wins_all_it_chose_returns_them_leased_without_reading_them_back(
        server: tuple[str, bool], commands: _Commands) -> None:
    opened = _Opened(*server)
    store, clock = opened.store, opened.clock
    try:
        await store.open()
        for n in range(3):
            await store.create_request(make_request(f"R{n}", item=f"item-{n}"),
                                       draft("request.created", request_id=f"R{n}"), [EffectDraft(EffectKind.TELL)])
        commands.db_name, commands.seen = opened.db_name, []
        now = clock.now()
        claimed = await store.claim_effects(now, "w1", now + timedelta(seconds=30), platforms={"slack"}, limit=10)
        assert _reads_of(commands, "effects") == 2  # the due ones and their lanes' heads; nothing read back
        stored = [(await store.effects_of(f"R{n}"))[0] for n in range(3)]
        assert claimed == stored
        assert [(e.attempts, e.lease_owner, e.lease_until) for e in claimed] == [
            (1, "w1", now + timedelta(seconds=30))] * 3
    finally:
        await store.close()
        await opened.admin.drop_database(opened.db_name)
        await opened.admin.close()


async def test_a_settle_of_several_where_one_lease_was_lost_keeps_the_others(mongo: _Opened) -> None:
    store, clock = mongo.store, mongo.clock
    for n in range(2):
        await store.create_request(make_request(f"R{n}", item=f"item-{n}"),
                                   draft("request.created", request_id=f"R{n}"), [EffectDraft(EffectKind.TELL)])
    now = clock.now()
    mine = await store.claim_effects(now, "w1", now + timedelta(seconds=30), platforms={"slack"}, limit=10)
    clock.advance(seconds=31)
    now = clock.now()
    await store.claim_effects(now, "w2", now + timedelta(seconds=30), platforms={"slack"}, limit=1)  # takes R0's
    kept = await store.settle_effects([(e, EffectOutcome(EffectStatus.DONE, event=draft(
        "grant.wiped", request_id=e.request_id))) for e in mine], "w1")
    assert kept == [False, True]
    assert [e.request_id async for e in store.events(types={"grant.wiped"})] == ["R1"]
    assert [(await store.effects_of(f"R{n}"))[0].status for n in range(2)] == [EffectStatus.PENDING,
                                                                               EffectStatus.DONE]
    assert (await verify_chain(store.events())).ok
