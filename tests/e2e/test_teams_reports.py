"""Teams: `report 30d` — admins get the summary and one-time download links (CSV, HTML) in a 1:1 chat."""

from __future__ import annotations

import csv
import io
import logging
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from adapters.teams import TeamsAdapter
from bot.domain.config import Settings
from bot.domain.errors import InputError
from tests.e2e.test_teams import LEAD, REQUESTER, TEAM_CHANNEL, Teams
from tests.support.app import CANARY_PASSWORD, CANARY_SEED, FakeClock, running_app, test_settings
from tests.support.fake_connector import ConnectorCall, FakeConnector, TeamsUser, card_elements, validate_cards

ADMIN = TeamsUser("admin-oid", "Ad Min")
PUBLIC_URL = "https://jitpass.example.com"
CSV_HEADER = ["section", "key", "label", "vault", "metric", "value"]


@pytest.fixture
async def teams(tmp_path: Path, connector: FakeConnector, clock: FakeClock) -> AsyncIterator[Teams]:
    settings = test_settings(tmp_path, public_url=PUBLIC_URL)
    async with running_app(tmp_path, settings=settings, clock=clock) as running:
        yield Teams(running, connector)


async def _one_approved_request(teams: Teams, clock: FakeClock) -> str:
    """One request, approved two minutes later; the report comes ten minutes after that."""
    request_id = await teams.request()
    clock.advance(timedelta(minutes=2))
    await teams.press(LEAD, "approve", request_id)
    # A period ends at "now" (exclusive): the report must come later than the events it counts.
    clock.advance(timedelta(minutes=10))
    return request_id


async def _report(teams: Teams, user: TeamsUser = ADMIN, text: str = "report 30d") -> ConnectorCall:
    before = len(teams.connector.calls)
    await teams.say(user, text)
    return await teams.connector.wait_for(lambda c: c.conversation_id == user.personal_chat, after=before)


def _links(call: ConnectorCall) -> dict[str, str]:
    assert call.card is not None, call.text
    return {a["title"]: a["url"] for a in card_elements(call.card) if a["type"] == "Action.OpenUrl"}


async def _get(teams: Teams, url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """Fetch a link over real HTTP from this server: its public base is swapped for the local address."""
    parts = urlsplit(url)
    async with aiohttp.ClientSession() as session, \
            session.request(method, teams.running.base_url + parts.path) as response:
        return response.status, dict(response.headers), await response.read()


async def test_admin_gets_the_summary_and_two_one_time_download_links(
        teams: Teams, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await _one_approved_request(teams, clock)

    answer = await _report(teams)

    assert answer.text.startswith("📊 Access report")
    assert "Requests 1: 1 approved, 0 declined, 0 timed out, 0 cancelled; 1 reveal(s)" in answer.text
    assert "Approval latency: median 2m" in answer.text and "(1 approved)" in answer.text
    links = _links(answer)
    assert list(links) == ["Download CSV", "Download HTML"]
    assert all(url.startswith(f"{PUBLIC_URL}/reports/") for url in links.values())
    assert links["Download CSV"].endswith(".csv") and links["Download HTML"].endswith(".html")
    assert answer.card is not None and not any(url in answer.card["fallbackText"] for url in links.values())
    assert validate_cards({"report": answer.card}) == {}

    status, headers, body = await _get(teams, links["Download CSV"])
    assert status == 200
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Disposition"].startswith('attachment; filename="jitpass-report-')
    assert headers["Content-Disposition"].split(";")[1].strip().endswith('.csv"')
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"))))
    assert rows[0] == CSV_HEADER
    assert any("acme-zendesk" in row for row in rows)

    status, headers, body = await _get(teams, links["Download HTML"])
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    html = body.decode("utf-8")
    assert "<svg" in html and "acme-zendesk" in html
    assert "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\"" in html, \
        "the header and the report's own CSP meta say the same"

    for url in links.values():
        again, headers, _ = await _get(teams, url)
        assert again == 410 and headers["Cache-Control"] == "no-store"

    for text in (answer.dump(), caplog.text):
        assert CANARY_PASSWORD not in text and CANARY_SEED not in text
    for url in links.values():
        token = urlsplit(url).path.split("/")[2]
        assert token not in caplog.text, "a download token is a credential: never logged"
    assert "GET /reports/[redacted]/jitpass-report-" in caplog.text, "the access log shows the path, not the token"
    [generated] = await teams.events("report.generated")
    assert generated.actor is not None and generated.actor.user_id == ADMIN.aad_object_id


async def test_a_tampered_link_is_not_found_and_does_not_use_up_the_real_one(teams: Teams) -> None:
    links = _links(await _report(teams))
    url = links["Download CSV"]
    token = urlsplit(url).path.split("/")[2]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")

    assert (await _get(teams, url.replace(token, flipped)))[0] == 404
    assert (await _get(teams, f"{PUBLIC_URL}/reports/{token}/other-name.csv"))[0] == 404
    assert (await _get(teams, f"{PUBLIC_URL}/reports/nothing-here/x.csv"))[0] == 404
    assert (await _get(teams, url, method="HEAD"))[0] == 405, "a HEAD (link preview) must not use the link"
    assert (await _get(teams, url))[0] == 200


async def test_links_expire_after_fifteen_minutes(teams: Teams, clock: FakeClock) -> None:
    links = _links(await _report(teams))

    clock.advance(timedelta(minutes=14, seconds=59))
    assert (await _get(teams, links["Download CSV"]))[0] == 200
    clock.advance(timedelta(seconds=1))
    assert (await _get(teams, links["Download HTML"]))[0] == 410
    clock.advance(timedelta(minutes=15))
    assert (await _get(teams, links["Download HTML"]))[0] == 404, "forgotten entirely after a while"


async def test_non_admin_is_refused_audited_and_gets_no_links(teams: Teams) -> None:
    refused = await _report(teams, REQUESTER)

    assert refused.text == "Only jitpass admins can produce access reports."
    assert refused.card is None
    [refusal] = await teams.events("access.refused")
    assert refusal.actor is not None and refusal.actor.user_id == REQUESTER.aad_object_id
    assert not await teams.events("report.generated")


async def test_in_a_channel_the_admin_is_told_to_use_a_1to1_chat(teams: Teams, connector: FakeConnector) -> None:
    await teams.say(ADMIN, "report 30d", channel=f"{TEAM_CHANNEL};messageid=9")

    answer = await connector.wait_for(lambda c: c.conversation_id.endswith(";messageid=9"))
    assert "1:1 chat" in answer.text and answer.card is None
    assert not await teams.events("report.generated")


async def test_bad_arguments_get_the_reason_and_an_example(teams: Teams) -> None:
    answer = await _report(teams, text="report fortnightly")

    assert "'fortnightly' is not a period such as 30d." in answer.text
    assert "Example: report 30d vault:acme" in answer.text
    assert answer.card is None


def test_links_point_at_jitpass_public_url_or_localhost_and_the_port(tmp_path: Path) -> None:
    env: dict[str, Any] = {"JITPASS_DOTENV": str(tmp_path / "none.env")}

    assert TeamsAdapter(Settings.from_env(env | {"PORT": "8080"})).public_url == "http://localhost:8080"
    configured = Settings.from_env(env | {"JITPASS_PUBLIC_URL": "https://jitpass.example.com/"})
    assert configured.public_url == "https://jitpass.example.com"
    assert TeamsAdapter(configured).public_url == "https://jitpass.example.com"
    with pytest.raises(InputError, match="JITPASS_PUBLIC_URL"):
        Settings.from_env(env | {"JITPASS_PUBLIC_URL": "jitpass.example.com"})


async def test_the_summary_shows_the_signed_checkpoint_and_the_witness_verdict(
        tmp_path: Path, connector: FakeConnector, clock: FakeClock) -> None:
    witness = tmp_path / "witness.jsonl"
    settings = test_settings(tmp_path, environ={"JITPASS_AUDIT_WITNESS_FILE": str(witness)})
    async with running_app(tmp_path, settings=settings, clock=clock) as running:
        teams = Teams(running, connector)
        await _one_approved_request(teams, clock)
        checkpointer = running.runtime.checkpointer
        assert checkpointer is not None
        signed = await checkpointer.checkpoint("manual")
        assert signed is not None
        answer = await _report(teams)
        assert f"Signed checkpoint: seq {signed.seq} signed " in answer.text
        assert re.search(r"Witness: matches the witness file \(\d+ checkpoint\(s\) agree\)", answer.text), answer.text

        # The newest event goes from the store; the witness file still holds its checkpoint.
        signed = await checkpointer.checkpoint("manual")
        assert signed is not None
        with closing(sqlite3.connect(tmp_path / "jitpass.db")) as conn:
            conn.execute("DELETE FROM events WHERE seq = ?", (signed.seq,))
            conn.commit()
        answer = await _report(teams)
        assert re.search(r"Witness: does NOT match the witness file: truncated \(witness line \d+\)", answer.text)
