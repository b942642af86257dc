"""The small fixed trail every report test reads, built through the real SQLite store's append_event.

Times are UTC; the policy's time zone is Europe/Amsterdam (UTC+1 in early March 2026), working hours
Mon-Fri 08:00-18:00 local = 07:00-17:00 UTC. The report period is the week of Monday 2 March 2026:
[2026-03-02T00:00Z, 2026-03-09T00:00Z), and "now" is 2026-03-10T12:00Z.

    R0 bob   acme-aws      created/approved (lee)/activated/revealed Sun 1 Mar 22:00-22:11 (before the
                           period); expired Mon 02:10 -> 2h10m of granted time inside the period
    R1 ann   acme-zendesk  created 09:00, approved (lee) 09:04 [4m], revealed 09:05, code 09:30, expired 10:04
    R2 ann   globex-db     created 09:20, self-approve refused 09:21, approval (lee) 09:30, approved (max)
                           09:50 [30m], revoked 10:20, never revealed
    R3 ann   initech-crm   created 09:40 (3rd vault within the hour: a burst), timed out 10:10
    R4 bob   acme-zendesk  created 09:30, approved (lee) 09:45 [15m], revealed 09:46, expired 10:45:
                           overlaps R1 (shared use)
    R5 bob   hooli-mail    created Tue 20:00, declined (max) 20:30
    R8 bob   globex-db     created Wed 12:00, cancelled 12:05
    R6 bob   acme-aws      created Sat 10:00, approved (max) 10:02 [2m], revealed 10:03 and 10:33 (Saturday:
                           off hours), expired 11:02
    R7 ann   acme-aws      created Sun 23:30, approved (lee) 23:40 [10m], revealed 23:41 (Mon 00:41 local: off
                           hours), expires Mon 9 Mar 00:40, after the period -> 20m inside it
    refusals: bob "approve without being an approver" Wed 13:00; ann "report without being an admin" Thu 08:00
    catalogue: six items added 2025-01-01 (2), 2025-06-01 (2), 2026-01-01, 2026-02-20; umbrella-vpn is never
               used; acme-zendesk and acme-aws are due for rotation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.bootstrap import Runtime
from bot.domain.audit import verify_chain
from bot.domain.config import parse_policy
from bot.domain.model import SYSTEM, EventDraft, Identity, Item, RotationDue, SealedItem
from bot.domain.policy import Policy
from storage.sqlite.store import SqliteStore
from tests.support.app import FakeClock, test_settings

ANN = Identity("slack", "UANN", "Ann")
BOB = Identity("slack", "UBOB", "Bob")
LEE = Identity("slack", "ULEE", "Lee")
MAX = Identity("teams", "max-oid", "Max")
ADMIN = Identity("slack", "UADMIN", "Ada Admin")

SINCE = datetime(2026, 3, 2, tzinfo=UTC)
UNTIL = datetime(2026, 3, 9, tzinfo=UTC)
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

POLICY_TEXT = """
timezone = "Europe/Amsterdam"

[approvers]
slack = ["ULEE"]
teams = ["max-oid"]

[admins]
slack = ["UADMIN"]

[working_hours]
start = "08:00"
end = "18:00"

[retention]
keep_days = 365
purge_at = "03:30"
"""

VAULTS = {"acme-zendesk": "acme", "acme-aws": "acme", "globex-db": "globex", "initech-crm": "initech",
          "hooli-mail": "hooli", "umbrella-vpn": "umbrella"}


# Lee approves on Slack and Max... is Lee on Teams: one person. Bob has a Teams account too.
PEOPLE_TEXT = """
[people.lee]
slack = "ULEE"
teams = "max-oid"

[people.bob]
slack = "UBOB"
teams = "bob-oid"
"""
BOB_TEAMS = Identity("teams", "bob-oid", "Bob (Teams)")


def policy(extra: str = "", *, people: bool = False) -> Policy:
    text = POLICY_TEXT.replace("[retention]", f"[retention]\n{extra}") + (PEOPLE_TEXT if people else "")
    return parse_policy(text, "test policy")


def at(day: int, hour: int, minute: int = 0, month: int = 3, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


def sealed(name: str, created: datetime, due: RotationDue | None = None) -> SealedItem:
    item = Item(name=name, vault=VAULTS[name], created_at=created, updated_at=created, password_rotated_at=created,
                rotation_due=due)
    return SealedItem(item=item, key_id="k1", wrapped_key=b"w", nonce=b"n", ciphertext=b"c")


@dataclass
class Trail:
    store: Any  # SqliteStore, or MongoStore for the parity test
    clock: FakeClock
    path: Path

    @property
    def source(self) -> SqliteStore:
        return self.store

    async def event(self, when: datetime, event_type: str, actor: Identity | None, request_id: str | None = None,
                    item: str | None = None, reason: str = "", details: dict[str, Any] | None = None) -> None:
        self.clock.current = when
        vault = VAULTS[item] if item else None
        await self.store.append_event(EventDraft(event_type, actor, request_id, item, vault, reason, details or {}))

    async def request(self, rid: str, who: Identity, item: str, steps: list[tuple[datetime, str, Identity]]) -> None:
        for when, event_type, actor in steps:
            await self.event(when, event_type, actor, rid, item)


async def build_trail(directory: Path, open_store: Callable[[FakeClock], Any] | None = None) -> Trail:
    """The trail described in the module docstring, on a fresh SQLite file (or the store given)."""
    clock = FakeClock(datetime(2025, 1, 1, 10, 0, tzinfo=UTC))
    path = directory / "jitpass.db"
    store = open_store(clock) if open_store else SqliteStore(path, clock)
    await store.open()
    trail = Trail(store, clock, path)

    async def add(when: datetime, *names: str) -> None:
        clock.current = when
        await store.add_items([sealed(n, when) for n in names],
                              [EventDraft("item.added", ADMIN, None, n, VAULTS[n]) for n in names])

    await add(datetime(2025, 1, 1, 10, 0, tzinfo=UTC), "acme-aws", "acme-zendesk")
    await add(datetime(2025, 6, 1, 10, 0, tzinfo=UTC), "globex-db", "initech-crm")
    await add(datetime(2026, 1, 1, 10, 0, tzinfo=UTC), "hooli-mail")
    await add(datetime(2026, 2, 20, 10, 0, tzinfo=UTC), "umbrella-vpn")

    await trail.request("R0", BOB, "acme-aws", [
        (at(1, 22, 0), "request.created", BOB), (at(1, 22, 10), "request.approved", LEE),
        (at(1, 22, 10), "grant.activated", SYSTEM), (at(1, 22, 11), "grant.revealed", BOB),
        (at(2, 2, 10), "grant.expired", SYSTEM)])
    # Monday 2 March: interleaved as they would really be written.
    await trail.event(at(2, 9, 0), "request.created", ANN, "R1", "acme-zendesk")
    await trail.event(at(2, 9, 4), "request.approved", LEE, "R1", "acme-zendesk")
    await trail.event(at(2, 9, 4), "grant.activated", SYSTEM, "R1", "acme-zendesk")
    await trail.event(at(2, 9, 5), "grant.revealed", ANN, "R1", "acme-zendesk")
    await trail.event(at(2, 9, 20), "request.created", ANN, "R2", "globex-db")
    await trail.event(at(2, 9, 21), "access.refused", ANN, "R2", "globex-db", "self-approve")
    await trail.event(at(2, 9, 30), "request.created", BOB, "R4", "acme-zendesk")
    await trail.event(at(2, 9, 30), "request.approval_added", LEE, "R2", "globex-db")
    await trail.event(at(2, 9, 30), "grant.code_shown", ANN, "R1", "acme-zendesk")
    await trail.event(at(2, 9, 40), "request.created", ANN, "R3", "initech-crm")
    await trail.event(at(2, 9, 45), "request.approved", LEE, "R4", "acme-zendesk")
    await trail.event(at(2, 9, 45), "grant.activated", SYSTEM, "R4", "acme-zendesk")
    await trail.event(at(2, 9, 46), "grant.revealed", BOB, "R4", "acme-zendesk")
    await trail.event(at(2, 9, 50), "request.approved", MAX, "R2", "globex-db")
    await trail.event(at(2, 9, 50), "grant.activated", SYSTEM, "R2", "globex-db")
    await trail.event(at(2, 10, 4), "grant.expired", SYSTEM, "R1", "acme-zendesk")
    await trail.event(at(2, 10, 10), "request.timed_out", SYSTEM, "R3", "initech-crm")
    await trail.event(at(2, 10, 20), "grant.revoked", ANN, "R2", "globex-db", "ended by the holder")
    await trail.event(at(2, 10, 45), "grant.expired", SYSTEM, "R4", "acme-zendesk")
    await trail.request("R5", BOB, "hooli-mail", [
        (at(3, 20, 0), "request.created", BOB), (at(3, 20, 30), "request.declined", MAX)])
    await trail.request("R8", BOB, "globex-db", [
        (at(4, 12, 0), "request.created", BOB), (at(4, 12, 5), "request.cancelled", BOB)])
    await trail.event(at(4, 13, 0), "access.refused", BOB, "R1", "acme-zendesk", "approve without being an approver")
    await trail.event(at(5, 8, 0), "access.refused", ANN, None, None, "report without being an admin")
    await trail.request("R6", BOB, "acme-aws", [
        (at(7, 10, 0), "request.created", BOB), (at(7, 10, 2), "request.approved", MAX),
        (at(7, 10, 2), "grant.activated", SYSTEM), (at(7, 10, 3), "grant.revealed", BOB),
        (at(7, 10, 33), "grant.revealed", BOB), (at(7, 11, 2), "grant.expired", SYSTEM)])
    await trail.request("R7", ANN, "acme-aws", [
        (at(8, 23, 30), "request.created", ANN), (at(8, 23, 40), "request.approved", LEE),
        (at(8, 23, 40), "grant.activated", SYSTEM), (at(8, 23, 41), "grant.revealed", ANN),
        (at(9, 0, 40), "grant.expired", SYSTEM)])

    # What the service leaves on the items when a revealed grant ends.
    for name, due in (("acme-zendesk", RotationDue(at(2, 10, 4), (ANN, BOB), ("R1", "R4"))),
                      ("acme-aws", RotationDue(at(7, 11, 2), (BOB, ANN), ("R6", "R7")))):
        current = await store.get_item(name)
        assert current is not None
        await store.replace_item(replace(current, item=replace(current.item, rotation_due=due)), None)
    clock.current = NOW
    return trail


async def add_pending(trail: Trail) -> None:
    """Requests still open at the period's end (on top of the fixed trail; the store's clock moves on).

    R9  ann hooli-mail    created Sun 8 Mar 20:00 "quarterly audit", one approval (lee) 20:10: pending
    R10 bob umbrella-vpn  created Sun 8 Mar 21:00, approved Mon 9 Mar 00:10 (after the period): pending
    R11 bob acme-aws      created Mon 9 Mar 01:00 (after the period): not in it
    """
    await trail.event(at(8, 20, 0), "request.created", ANN, "R9", "hooli-mail", "quarterly audit")
    await trail.event(at(8, 20, 10), "request.approval_added", LEE, "R9", "hooli-mail")
    await trail.event(at(8, 21, 0), "request.created", BOB, "R10", "umbrella-vpn", "vpn broken")
    await trail.event(at(9, 0, 10), "request.approved", MAX, "R10", "umbrella-vpn")
    await trail.event(at(9, 1, 0), "request.created", BOB, "R11", "acme-aws", "later")
    trail.clock.current = NOW


async def add_delivery_failures(trail: Trail) -> None:
    """Durable chat effects that failed (on top of the fixed trail), all on Friday 6 March, as the effects
    worker records them (actor: system; details: attempt, error, final / retry_at).

    F1 ann acme-zendesk   delivery failed twice, the second time for good (channel_not_found) 10:02
    F2 bob acme-aws       delivered; wipe failed at 13:00 and 13:01, still retrying at the period's end
                          (it succeeds on Monday 9 March 01:00, after the period)
    F3 bob globex-db      delivered; wipe failed for good at 15:30 (budget spent: alert.wipe_exhausted)
    F4 ann hooli-mail     the approval card could not be posted (chat.effect_failed post_card) 16:05
    F5 bob umbrella-vpn   delivery failed once, then delivered; wipe failed once, then wiped: not listed
    """
    async def grant(rid: str, who: Identity, item: str, hour: int) -> None:
        await trail.event(at(6, hour, 0), "request.created", who, rid, item, "support")
        await trail.event(at(6, hour, 1), "request.approved", LEE, rid, item)
        await trail.event(at(6, hour, 1), "grant.activated", SYSTEM, rid, item)

    def fail(attempt: int, error: str, final: bool) -> dict[str, Any]:
        return {"attempt": attempt, "error": error, **({"final": True} if final else {"retry_at": "soon"})}

    await grant("F1", ANN, "acme-zendesk", 10)
    await trail.event(at(6, 10, 1), "grant.delivery_failed", SYSTEM, "F1", "acme-zendesk",
                      details=fail(1, "ratelimited", False))
    await trail.event(at(6, 10, 2), "grant.delivery_failed", SYSTEM, "F1", "acme-zendesk",
                      details={**fail(2, "channel_not_found", True), "permanent": True})
    await grant("F2", BOB, "acme-aws", 12)
    await trail.event(at(6, 12, 2), "grant.revealed", BOB, "F2", "acme-aws")
    await trail.event(at(6, 13, 0), "grant.expired", SYSTEM, "F2", "acme-aws")
    await trail.event(at(6, 13, 0), "grant.wipe_failed", SYSTEM, "F2", "acme-aws", details=fail(1, "timeout", False))
    await trail.event(at(6, 13, 1), "grant.wipe_failed", SYSTEM, "F2", "acme-aws", details=fail(2, "timeout", False))
    await grant("F3", BOB, "globex-db", 14)
    await trail.event(at(6, 14, 2), "grant.revealed", BOB, "F3", "globex-db")
    await trail.event(at(6, 15, 0), "grant.expired", SYSTEM, "F3", "globex-db")
    await trail.event(at(6, 15, 30), "grant.wipe_failed", SYSTEM, "F3", "globex-db",
                      details=fail(8, "internal_error", True))
    await trail.event(at(6, 15, 30), "alert.wipe_exhausted", SYSTEM, "F3", "globex-db",
                      details=fail(8, "internal_error", True))
    await trail.event(at(6, 16, 0), "request.created", ANN, "F4", "hooli-mail", "mail down")
    await trail.event(at(6, 16, 5), "chat.effect_failed", SYSTEM, "F4", "hooli-mail",
                      details={**fail(5, "not_in_channel", True), "kind": "post_card"})
    await trail.event(at(6, 17, 0), "request.timed_out", SYSTEM, "F4", "hooli-mail")
    await grant("F5", BOB, "umbrella-vpn", 18)
    await trail.event(at(6, 18, 1), "grant.delivery_failed", SYSTEM, "F5", "umbrella-vpn",
                      details=fail(1, "timeout", False))
    await trail.event(at(6, 18, 2), "grant.revealed", BOB, "F5", "umbrella-vpn")
    await trail.event(at(6, 19, 0), "grant.expired", SYSTEM, "F5", "umbrella-vpn")
    await trail.event(at(6, 19, 0), "grant.wipe_failed", SYSTEM, "F5", "umbrella-vpn",
                      details=fail(1, "timeout", False))
    await trail.event(at(6, 19, 1), "grant.wiped", SYSTEM, "F5", "umbrella-vpn", details={"attempt": 2})
    await trail.event(at(9, 1, 0), "grant.wiped", SYSTEM, "F2", "acme-aws", details={"attempt": 3})
    trail.clock.current = NOW


async def add_teams_bob(trail: Trail) -> None:
    """Bob asks once from his Teams account (for policy(people=True): still Bob).

    B1 bob (teams) hooli-mail  created Fri 6 Mar 09:00, approved (lee) 09:05, activated, revealed 09:06 (off
                               hours? no: 10:06 local), expired 09:35 -> 30m
    """
    await trail.event(at(6, 9, 0), "request.created", BOB_TEAMS, "B1", "hooli-mail", "mail export")
    await trail.event(at(6, 9, 5), "request.approved", LEE, "B1", "hooli-mail")
    await trail.event(at(6, 9, 5), "grant.activated", SYSTEM, "B1", "hooli-mail")
    await trail.event(at(6, 9, 6), "grant.revealed", BOB_TEAMS, "B1", "hooli-mail")
    await trail.event(at(6, 9, 35), "grant.expired", SYSTEM, "B1", "hooli-mail")
    await trail.event(at(6, 9, 40), "access.refused", BOB_TEAMS, "R1", "acme-zendesk",
                      "approve without being an approver")
    trail.clock.current = NOW


EVENT_COUNT = 47  # 6 item.added + 39 request/grant events + 2 refusals



@asynccontextmanager
async def opened_trail(directory: Path, *additions: Callable[[Trail], Awaitable[None]]) -> AsyncIterator[Trail]:
    """`build_trail` plus `additions` (e.g. `add_pending`), its store closed when the block ends."""
    built = await build_trail(directory)
    try:
        for add in additions:
            await add(built)
        yield built
    finally:
        await built.store.close()


@asynccontextmanager
async def trail_runtime(directory: Path) -> AsyncIterator[Runtime]:
    """The fixed trail behind a whole jitpass runtime (as the CLI and chat commands see it)."""
    from bot.bootstrap import open_runtime  # the composition root, for tests that go through it

    trail = await build_trail(directory)
    await trail.store.close()
    opened = await open_runtime(test_settings(directory), clock=FakeClock(NOW), policy=policy())
    try:
        yield opened
    finally:
        await opened.scheduler.shutdown()
        await opened.store.close()


async def test_the_fixed_trail_is_one_intact_chain_of_47_events(tmp_path: Path) -> None:
    trail = await build_trail(tmp_path)
    try:
        report = await verify_chain(trail.store.events())
        assert report.ok, report.problem
        assert report.checked == EVENT_COUNT == await trail.store.count_events()
        assert await trail.store.count_events(before=SINCE) == 6 + 4  # catalogue + R0 before Monday
        assert NOW - timedelta(days=365) > datetime(2025, 1, 1, 10, tzinfo=UTC)
    finally:
        await trail.store.close()
