"""One store shared by two real processes: appends and transitions stay correct across them.

On every store of the contract suite: a SQLite file, MongoDB with transactions, and MongoDB without
(the development-only standalone path, where the unique seq `_id` and the compare-and-set alone keep it right).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bot.domain.audit import verify_chain
from bot.domain.model import Status
from tests.contract.conftest import Harness
from tests.support.stores import draft, make_request

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def _workers(*commands: list[str]) -> Iterator[list[subprocess.Popen[str]]]:
    """Start one worker per command, wait until each has opened the store, then let all go at once."""
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.support.stores", *command], cwd=ROOT, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for command in commands
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            ready = proc.stdout.readline().strip()
            assert ready == "ready", proc.communicate(timeout=30)[1]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out.strip()


def _at(harness: Harness) -> list[str]:
    """Where a worker opens the harness's store (opened, so created, before the workers race for it)."""
    return [harness.kind, harness.url, harness.db_name or "-"]


@pytest.mark.same_without_transactions  # append_event never runs in a transaction
async def test_two_processes_appending_at_once_build_one_contiguous_chain(harness: Harness) -> None:
    store = harness.store
    with _workers(["append", *_at(harness), "300", "alpha"], ["append", *_at(harness), "300", "beta"]) as procs:
        assert [_finish(p) for p in procs] == ["done", "done"]

    events = [e async for e in store.events()]
    assert [e.seq for e in events] == list(range(1, 601))
    assert sorted({e.actor.user_id for e in events if e.actor}) == ["alpha", "beta"]
    report = await verify_chain(store.events())
    assert report.ok, report.problem
    # This process wrote nothing meanwhile; its next append still lands at the true tail.
    assert (await store.append_event(draft())).seq == 601
    assert (await verify_chain(store.events())).ok


async def test_two_processes_racing_one_transition_apply_it_once_with_one_event(harness: Harness) -> None:
    store = harness.store
    await store.create_request(make_request("R1"), draft("request.created", request_id="R1"))
    with _workers(["approve", *_at(harness), "R1", "lead-a"], ["approve", *_at(harness), "R1", "lead-b"]) as procs:
        outcomes = [_finish(p) for p in procs]

    assert sorted(outcomes) == ["lost", "won"]
    approved = [e async for e in store.events(types={"request.approved"})]
    assert len(approved) == 1
    request = await store.get_request("R1")
    assert request is not None
    assert (request.status, request.version) == (Status.APPROVED, 1)
    winner = ["lead-a", "lead-b"][outcomes.index("won")]
    assert request.decided_by is not None and request.decided_by.user_id == winner
    assert approved[0].actor is not None and approved[0].actor.user_id == winner
