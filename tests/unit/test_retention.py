"""Retention: purge what the policy no longer keeps, never under legal hold; the rest still verifies."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.bootstrap import Runtime
from bot.cli.main import build_parser, main
from bot.cli.retention import run_retention_purge
from bot.domain.audit import verify_chain
from bot.services.retention import JOB_ID, install_retention, plan_purge, purge, scheduled_purge
from storage.sqlite.store import SqliteStore
from tests.unit.test_reports import tamper
from tests.unit.test_reports_cli import CLI, _env
from tests.unit.test_reports_trail import EVENT_COUNT, NOW, build_trail, policy, trail_runtime

# keep_days = 365 at NOW (2026-03-10 12:00 UTC): the two items added on 2025-01-01 are older.
CUTOFF = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    trail = await build_trail(tmp_path)
    try:
        yield trail.store
    finally:
        await trail.store.close()


async def verify_from_checkpoint(store: SqliteStore) -> tuple[bool, int, int | None]:
    checkpoint = await store.checkpoint()
    assert checkpoint is not None
    report = await verify_chain(store.events(), start_seq=checkpoint.seq, start_hash=checkpoint.hash)
    return report.ok, report.checked, report.first_broken_seq


async def test_purge_removes_events_older_than_keep_days_and_the_rest_verifies(store: SqliteStore) -> None:
    outcome = await purge(store, policy(), NOW, CLI)

    assert (outcome.cutoff, outcome.eligible, outcome.purged) == (CUTOFF, 2, 2)
    assert outcome.checkpoint is not None and outcome.checkpoint.seq == 2
    assert outcome.message() == ("Purged 2 event(s) older than 2025-03-10T12:00:00.000000Z (365 days); the chain now "
                                 "starts after event 2.")
    assert await store.count_events() == EVENT_COUNT - 2 + 1
    last = await store.last_event()
    assert last is not None and last.type == "retention.purged" and last.actor == CLI
    assert last.details == {"before": "2025-03-10T12:00:00.000000Z", "keep_days": 365, "trigger": "cli",
                            "purged": 2, "checkpoint_seq": 2}
    assert await verify_from_checkpoint(store) == (True, EVENT_COUNT - 2 + 1, None)


async def test_tampering_after_a_purge_is_still_caught(store: SqliteStore) -> None:
    await purge(store, policy(), NOW, CLI)
    tamper(store.path, "UPDATE events SET details = '{\"password\": false}' WHERE seq = 12")
    assert await verify_from_checkpoint(store) == (False, 9, 12)
    tamper(store.path, "UPDATE events SET details = '{}' WHERE seq = 12")
    tamper(store.path, "DELETE FROM events WHERE seq = 3")  # cutting more off the front breaks the link
    assert await verify_from_checkpoint(store) == (False, 0, 3)


async def test_legal_hold_suspends_purging_with_a_clear_message(store: SqliteStore) -> None:
    outcome = await purge(store, policy("legal_hold = true"), NOW, CLI)

    assert (outcome.legal_hold, outcome.cutoff, outcome.purged) == (True, None, 0)
    assert "Legal hold is on" in outcome.message() and "nothing was deleted" in outcome.message()
    assert await store.count_events() == EVENT_COUNT and await store.checkpoint() is None


async def test_a_dry_run_only_counts(store: SqliteStore) -> None:
    outcome = await purge(store, policy(), NOW, CLI, dry_run=True)

    assert (outcome.eligible, outcome.purged, outcome.dry_run) == (2, 0, True)
    assert outcome.message() == ("Dry run: 2 event(s) older than 2025-03-10T12:00:00.000000Z (365 days) would be "
                                 "purged; nothing was deleted.")
    assert await store.count_events() == EVENT_COUNT


async def test_nothing_old_enough_or_no_keep_days_purges_nothing(store: SqliteStore) -> None:
    forever = policy().__class__()
    assert "keeps audit events forever" in (await purge(store, forever, NOW, CLI)).message()
    await purge(store, policy(), NOW, CLI)
    again = await purge(store, policy(), NOW, CLI)
    assert (again.purged, again.message()) == (0, "No events older than 2025-03-10T12:00:00.000000Z (365 days): "
                                                  "nothing to purge.")
    assert (await plan_purge(store, policy(), NOW)).eligible == 0


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with trail_runtime(tmp_path) as opened:
        yield opened


async def test_the_daily_purge_is_scheduled_at_purge_at_in_the_policy_time_zone(runtime: Runtime) -> None:
    await runtime.scheduler.start()
    install_retention(runtime.scheduler, runtime.store, runtime.policy, runtime.clock)
    job = runtime.scheduler._scheduler.get_job(JOB_ID) if runtime.scheduler._scheduler else None
    assert job is not None
    assert (str(job.trigger.fields[5]), str(job.trigger.fields[6]), str(job.trigger.timezone)) == (
        "3", "30", "Europe/Amsterdam")

    outcome = await scheduled_purge(runtime.store, runtime.policy, runtime.clock)
    assert outcome is not None and outcome.purged == 2
    last = await runtime.store.last_event()
    assert last is not None and last.details["trigger"] == "schedule" and last.actor is not None
    assert last.actor.key == "system:jitpass"


async def test_the_purge_command_prints_what_it_did(runtime: Runtime) -> None:
    out = io.StringIO()
    args = build_parser().parse_args(["retention", "purge", "--dry-run"])
    assert await run_retention_purge(runtime, args, out, actor=CLI, status=io.StringIO()) == 0
    assert out.getvalue().startswith("Dry run: 2 event(s)")


def test_audit_verify_passes_after_a_purge_and_fails_after_tampering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(tmp_path, monkeypatch)
    assert main(["retention", "purge", "--dry-run"]) == 0
    assert "would be purged; nothing was deleted" in capsys.readouterr().out
    assert main(["retention", "purge"]) == 0  # by the wall clock: at least the 2025-01-01 events are old enough
    assert capsys.readouterr().out.startswith("Purged ")
    assert main(["audit", "verify"]) == 0
    assert "from the retention checkpoint after event" in capsys.readouterr().out
    tamper(tmp_path / "jitpass.db", "UPDATE events SET reason = 'edited' WHERE seq = (SELECT max(seq) - 3 FROM events)")
    assert main(["audit", "verify"]) == 3
    assert "BROKEN" in capsys.readouterr().err
