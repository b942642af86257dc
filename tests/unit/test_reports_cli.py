"""`jitpass report` and the chat report: admins only, audited, written in the asked format."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.bootstrap import Runtime
from bot.cli.main import build_parser, main
from bot.cli.reports import run_report
from bot.domain.errors import InputError, NotAllowed, NotFound
from bot.ports import ReportSource
from bot.reports.chat import chat_report, parse_chat_args
from storage.sqlite.store import SqliteStore
from tests.support.app import test_settings
from tests.unit.test_reports import tamper
from tests.unit.test_reports_trail import ADMIN, BOB, POLICY_TEXT, build_trail, trail_runtime

CLI = ADMIN.__class__("cli", "ops", "ops")


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with trail_runtime(tmp_path) as opened:
        yield opened


def source(runtime: Runtime) -> SqliteStore:
    assert isinstance(runtime.store, SqliteStore)
    return runtime.store


async def last_event_type_and_details(runtime: Runtime) -> tuple[str, dict[str, object], str | None]:
    last = await runtime.store.last_event()
    assert last is not None
    return last.type, last.details, last.actor.key if last.actor else None


async def test_report_writes_the_asked_format_and_records_report_generated(runtime: Runtime, tmp_path: Path) -> None:
    out_file = tmp_path / "acme.csv"
    args = build_parser().parse_args(["report", "--from", "2026-03-02", "--to", "2026-03-08", "--vault", "acme",
                                      "--format", "csv", "--out", str(out_file)])
    status = io.StringIO()
    code = await run_report(runtime, args, io.StringIO(), actor=CLI, source=source(runtime), status=status)

    assert code == 0 and f"wrote the csv report to {out_file}" in status.getvalue()
    rows = list(csv.DictReader(io.StringIO(out_file.read_text(encoding="utf-8"))))
    # 2 March 00:00 Amsterdam = 1 March 23:00 UTC, through the end of 8 March Amsterdam.
    assert [r["value"] for r in rows if r["section"] == "report" and r["metric"] in ("since", "until")] == [
        "2026-03-01T23:00:00.000000Z", "2026-03-08T23:00:00.000000Z"]
    # R1, R4 and R6; R7 was created at 23:30 UTC on the 8th, which is already the 9th in Amsterdam.
    assert {r["value"] for r in rows if r["section"] == "access_total" and r["metric"] == "requests"} == {"3"}
    event_type, details, actor = await last_event_type_and_details(runtime)
    assert (event_type, actor) == ("report.generated", "cli:ops")
    assert details == {"format": "csv", "filters": {"vault": "acme"}, "since": "2026-03-01T23:00:00.000000Z",
                       "until": "2026-03-08T23:00:00.000000Z"}


async def test_report_prints_json_to_stdout_and_exits_3_on_a_broken_chain(runtime: Runtime) -> None:
    assert isinstance(runtime.store, SqliteStore)
    tamper(runtime.store.path, "DELETE FROM events WHERE seq = 30")
    args = build_parser().parse_args(["report", "--since", "8d", "--format", "json"])
    out, status = io.StringIO(), io.StringIO()

    code = await run_report(runtime, args, out, actor=CLI, source=source(runtime), status=status)

    assert code == 3
    chain = json.loads(out.getvalue())["retention"]["chain"]
    assert (chain["ok"], chain["first_broken_seq"]) == (False, 30)
    assert "BROKEN at seq 30" in status.getvalue()


async def test_no_verify_skips_the_chain_check(runtime: Runtime) -> None:
    args = build_parser().parse_args(["report", "--since", "8d", "--no-verify"])
    out = io.StringIO()
    assert await run_report(runtime, args, out, actor=CLI, source=source(runtime), status=io.StringIO()) == 0
    assert "not verified (--no-verify)" in out.getvalue()


def test_jitpass_report_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    _env(tmp_path, monkeypatch)
    assert main(["report", "--from", "2026-03-02", "--to", "2026-03-09", "--format", "json", "--no-verify"]) == 0
    assert json.loads(capsys.readouterr().out)["access"]["total"]["requests"] == 8


def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    async def build() -> None:
        trail = await build_trail(tmp_path)
        await trail.store.close()

    asyncio.run(build())
    (tmp_path / "policy.toml").write_text(POLICY_TEXT, encoding="utf-8")
    settings = test_settings(tmp_path)
    monkeypatch.setenv("JITPASS_STORE", settings.store_url)
    monkeypatch.setenv("JITPASS_MASTER_KEY", settings.master_key or "")
    monkeypatch.setenv("JITPASS_AUDIT_KEY_FILE", str(tmp_path / "jitpass-audit.key"))
    monkeypatch.setenv("JITPASS_POLICY", str(tmp_path / "policy.toml"))
    monkeypatch.setenv("JITPASS_DOTENV", str(tmp_path / "no.env"))
    monkeypatch.setenv("JITPASS_ADMIN", "ops")


def test_the_sqlite_store_is_a_report_source() -> None:
    assert isinstance(SqliteStore.__new__(SqliteStore), ReportSource)


# -- chat ---------------------------------------------------------------------------------------------


async def test_a_non_admin_asking_for_a_report_is_refused_and_audited(runtime: Runtime) -> None:
    with pytest.raises(NotAllowed, match="Only jitpass admins"):
        await chat_report(runtime.service, BOB, "30d")
    last = await runtime.store.last_event()
    assert last is not None
    assert (last.type, last.actor, last.reason) == ("access.refused", BOB, "report without being an admin")


async def test_an_admin_gets_a_summary_and_csv_and_html_files(runtime: Runtime) -> None:
    reply = await chat_report(runtime.service, ADMIN, "8d vault:acme", source=source(runtime))

    assert reply.summary.startswith("Access report 2026-03-02 13:00 → 2026-03-10 13:00 (Europe/Amsterdam)  "
                                    "filters: vault=acme")
    assert "Requests 2: 2 approved" in reply.summary  # R6 and R7
    assert (reply.csv_filename, reply.html_filename) == ("jitpass-report-20260302-20260310.csv",
                                                         "jitpass-report-20260302-20260310.html")
    assert reply.csv.decode().startswith("section,key,label,vault,metric,value\n")
    assert reply.html.count(b"<svg") == 3
    event_type, details, actor = await last_event_type_and_details(runtime)
    assert (event_type, actor, details["format"], details["filters"]) == ("report.generated", "slack:UADMIN", "chat",
                                                                          {"vault": "acme"})


def test_chat_arguments() -> None:
    assert parse_chat_args("") == {}
    assert parse_chat_args("30d vault:acme user:slack:U1") == {"since": "30d", "vault": "acme", "user": "slack:U1"}
    assert parse_chat_args("from:2026-01-01 to:2026-01-31") == {"from": "2026-01-01", "to": "2026-01-31"}
    for bad in ("30d 60d", "color:red", "soon"):
        with pytest.raises(InputError):
            parse_chat_args(bad)


# -- filters that name nothing ------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "value", "message", "suggestion"), [
    ("--vault", "acmee", "No vault named 'acmee'", "acme"),
    ("--item", "acme-zendsk", "No item named 'acme-zendsk'", "acme-zendesk"),
    ("--user", "slack:UBOBB", "No user 'slack:UBOBB'", "slack:UBOB"),
])
def test_a_filter_naming_nothing_exits_2_with_close_names_and_records_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        flag: str, value: str, message: str, suggestion: str) -> None:
    _env(tmp_path, monkeypatch)
    store = tmp_path / "jitpass.db"
    before = _event_count(store)

    assert main(["report", "--since", "30d", flag, value, "--out", str(tmp_path / "r.csv"), "--format", "csv"]) == 2

    err = capsys.readouterr().err
    assert message in err and "Did you mean" in err and suggestion in err
    assert "Traceback" not in err
    assert _event_count(store) == before  # no report.generated
    assert not (tmp_path / "r.csv").exists()


def test_a_filter_naming_something_real_without_activity_in_the_period_is_a_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _env(tmp_path, monkeypatch)
    # umbrella-vpn is in the catalogue; ULEE is an approver in the policy: real names, whatever the period holds.
    assert main(["report", "--from", "2026-01-01", "--to", "2026-01-02", "--item", "umbrella-vpn",
                 "--format", "json", "--no-verify"]) == 0
    assert json.loads(capsys.readouterr().out)["access"]["total"]["requests"] == 0
    assert main(["report", "--from", "2026-01-01", "--to", "2026-01-02", "--user", "ULEE",
                 "--format", "json", "--no-verify"]) == 0


async def test_the_chat_report_refuses_a_vault_that_does_not_exist(runtime: Runtime) -> None:
    before = await runtime.store.last_event()
    with pytest.raises(NotFound, match="No vault named 'acmee'") as refused:
        await chat_report(runtime.service, ADMIN, "8d vault:acmee", source=source(runtime))
    assert refused.value.suggestions == ["acme"]
    assert await runtime.store.last_event() == before


def _event_count(path: Path) -> int:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
