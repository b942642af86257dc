"""Shared test helpers for stores: a settable clock, small builders, and worker processes.

Run as `python -m tests.support.stores <command> ...` it is a second process on a SQLite file,
used by the contract suite to prove that appends and transitions are safe across processes.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.domain.model import AccessRequest, EventDraft, Identity, Item, SealedItem, Status, Window

__all__ = ["ANN", "BOB", "START", "FakeClock", "draft", "make_request", "make_sealed"]

START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
ANN = Identity("slack", "U0ANN", "Ann", frozenset({"dba"}))
BOB = Identity("teams", "29:bob", "Bob")


@dataclass
class FakeClock:
    """A clock that stands still until told to move."""

    at: datetime = START

    def now(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


def make_sealed(name: str, vault: str = "prod", *, key_id: str = "k1", ciphertext: bytes = b"\x00ct",
                **meta: Any) -> SealedItem:
    """An item with fake key material (the store never opens it)."""
    item = Item(name=name, vault=vault, **meta)
    return SealedItem(item=item, key_id=key_id, wrapped_key=b"\x01wrapped", nonce=b"\x02nonce",
                      ciphertext=ciphertext)


def make_request(request_id: str, *, item: str = "db-admin", requester: Identity = ANN, at: datetime = START,
                 status: Status = Status.PENDING, **fields: Any) -> AccessRequest:
    """A pending request for one hour, timing out after 30 minutes, unless told otherwise."""
    values: dict[str, Any] = {
        "id": request_id, "item": item, "vault": "prod", "requester": requester,
        "reason": "fix the nightly job",
        "window": Window(duration=timedelta(hours=1)), "status": status, "created_at": at, "updated_at": at,
        "timeout_at": at + timedelta(minutes=30), "platform": requester.platform,
    }
    values.update(fields)
    return AccessRequest(**values)


def draft(event_type: str = "report.generated", actor: Identity | None = ANN, **fields: Any) -> EventDraft:
    """An audit event draft."""
    return EventDraft(type=event_type, actor=actor, **fields)


class _SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


async def _append_worker(kind: str, where: str, db_name: str, count: int, who: str) -> None:
    store = _store_at(kind, where, db_name)
    await store.open()
    print("ready", flush=True)
    sys.stdin.readline()  # start together with the other process
    actor = Identity("cli", who)
    for i in range(count):
        await store.append_event(EventDraft("report.generated", actor, details={"i": i}))
    await store.close()
    print("done", flush=True)


async def _approve_worker(kind: str, where: str, db_name: str, request_id: str, who: str) -> None:
    store = _store_at(kind, where, db_name)
    await store.open()
    print("ready", flush=True)
    sys.stdin.readline()
    actor = Identity("cli", who)
    changes = {"status": Status.APPROVED, "decided_by": actor, "decided_at": datetime.now(UTC)}
    updated = await store.transition(request_id, {Status.PENDING}, changes,
                                     EventDraft("request.approved", actor, request_id=request_id))
    await store.close()
    print("won" if updated is not None else "lost", flush=True)


def _store_at(kind: str, where: str, db_name: str) -> Any:
    if kind == "sqlite":
        from storage.sqlite import SqliteStore

        return SqliteStore(Path(where), _SystemClock())
    from storage.mongo import MongoStore

    # mongodb-standalone: the development-only mode the parent test chose on purpose.
    return MongoStore(where, _SystemClock(), db_name=db_name, allow_standalone=kind == "mongodb-standalone")


async def _claims_worker(command: str, kind: str, where: str, db_name: str, who: str, items: list[str]) -> None:
    """Race the other process for `items`: open a request for each (`open-requests`), or start this
    process's approved grant of each (`activate`). Prints how many the store let this process win."""
    from bot.domain.errors import ClaimTaken

    store = _store_at(kind, where, db_name)
    await store.open()
    print("ready", flush=True)
    sys.stdin.readline()
    won = 0
    now = datetime.now(UTC)
    for item in items:
        request_id = f"{who}-{item}"
        try:
            if command == "open-requests":
                await store.create_request(make_request(request_id, item=item, requester=Identity("slack", who),
                                                        person="person:shared"),
                                           EventDraft("request.created", request_id=request_id))
                won += 1
            else:
                changes = {"status": Status.ACTIVE, "starts_at": now, "ends_at": now + timedelta(hours=1),
                           "exclusive": True}
                won += await store.transition(request_id, {Status.APPROVED}, changes,
                                              EventDraft("grant.activated", request_id=request_id,
                                                         item=item)) is not None
        except ClaimTaken:
            pass
    await store.close()
    print(won, flush=True)


async def _rate_worker(kind: str, where: str, db_name: str, key: str, count: int, attempts: int, who: str) -> None:
    """Take `attempts` tokens for `key` (limit `count` per hour) as fast as the store answers; print how
    many were granted to this process."""
    store = _store_at(kind, where, db_name)
    await store.open()
    print("ready", flush=True)
    sys.stdin.readline()
    actor = Identity("slack", who)
    granted = 0
    for _ in range(attempts):
        taken = await store.take_rate_token(key, count, timedelta(hours=1), datetime.now(UTC), actor)
        granted += taken.granted
    await store.close()
    print(granted, flush=True)


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "append":  # append KIND WHERE DB COUNT WHO
        asyncio.run(_append_worker(argv[1], argv[2], argv[3], int(argv[4]), argv[5]))
    elif command == "approve":  # approve KIND WHERE DB REQUEST_ID WHO
        asyncio.run(_approve_worker(argv[1], argv[2], argv[3], argv[4], argv[5]))
    elif command in {"open-requests", "activate"}:
        asyncio.run(_claims_worker(command, argv[1], argv[2], argv[3], argv[4], argv[5:]))
    elif command == "rate-tokens":  # rate-tokens KIND WHERE DB KEY COUNT ATTEMPTS WHO
        asyncio.run(_rate_worker(argv[1], argv[2], argv[3], argv[4], int(argv[5]), int(argv[6]), argv[7]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
