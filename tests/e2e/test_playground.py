"""The documented Teams walkthrough, end to end, in the real Microsoft 365 Agents Playground.

`jitpass serve --demo` (a real process, on a temporary store and key) and the Playground (the pinned
npm package in tests/support/playground, installed by ./dev) run inside a private loopback-only
network namespace (`unshare --net`, then `ip link set lo up`), so the Playground's telemetry and its
browser opening go nowhere and no port can collide with anything on the machine. Megan Bowen is the
Playground's current user: her Approve is a click in the Playground's web UI (headless Chromium through
playwright-core). Alex Wilber asks, through the Playground's custom activities, in his 1:1 chat.
See tests/support/playground/drive.js for the steps; this module asserts on what it saw, then on the
audit trail the run left behind.

Needs root (to create the namespace), `unshare`, `ip`, Node.js and Chromium; skipped with the reason
otherwise. About 20 s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_connector import card_elements, find_element

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "tests" / "support" / "playground"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
RUN_TIMEOUT = 110  # seconds, for the whole run (netns.py bounds its own parts: 15 + 15 + 75 s, then stops)


def _why_not() -> str:
    """Why the Playground test cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root to create a private network namespace (unshare --net); CI runs as root"
    for tool in ("unshare", "ip", "node"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    if not (HARNESS / "node_modules" / "@microsoft" / "m365agentsplayground").is_dir():
        return "the Playground is not installed: run ./dev setup (npm install in tests/support/playground)"
    if not Path(CHROMIUM).exists():
        return "Chromium is not installed (apt-get install -y chromium; .ci/run and ./dev do it as root)"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True, timeout=10, check=False)
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip() or probe.returncode}"
    return ""


WHY_NOT = _why_not()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "-")


def _run(workdir: Path) -> dict[str, Any]:
    harness = subprocess.Popen(["unshare", "--net", sys.executable, str(HARNESS / "netns.py"), str(workdir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = harness.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        harness.terminate()  # netns.py stops what it started on SIGTERM
        try:
            out, err = harness.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            harness.kill()
            out, err = harness.communicate()
        pytest.fail(f"the Playground run took more than {RUN_TIMEOUT} s: {err[-3000:]}")
    done = subprocess.CompletedProcess(harness.args, harness.returncode, out, err)
    transcript_file = workdir / "transcript.json"
    assert transcript_file.exists(), f"the harness wrote no transcript: {done.stderr[-3000:]}"
    transcript: dict[str, Any] = json.loads(transcript_file.read_text())
    if transcript.get("failed") or done.returncode != 0:
        log = (workdir / "jitpass.log").read_text(errors="replace")[-4000:]
        steps = ", ".join(transcript.get("steps", {}))
        pytest.fail(f"{transcript.get('failed')} (steps done: {steps})\nbot calls: {transcript.get('http')}\n"
                    f"drive.js stderr: {transcript.get('stderr')}\nharness: {done.stderr[-2000:]}\n"
                    f"jitpass log:\n{log}")
    return transcript


def _jitpass(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JITPASS_")}
    env |= {"JITPASS_STORE": f"sqlite:///{workdir / 'store.db'}", "JITPASS_MASTER_KEY_FILE": str(workdir / "key"),
            "HOME": str(workdir / "home")}
    return subprocess.run([str(Path(sys.executable).with_name("jitpass")), *args], capture_output=True, text=True,
                          env=env, cwd=workdir, timeout=60, check=False)


def _element(card: dict[str, Any], element_id: str) -> dict[str, Any]:
    found = find_element(card, element_id)
    assert found is not None, f"no element {element_id!r} on the card"
    return found


def test_the_documented_walkthrough_works_in_agents_playground(tmp_path: Path) -> None:
    transcript = _run(tmp_path)
    steps = transcript["steps"]

    # Greeting, list and the request, as Alex in his 1:1 chat.
    assert "jitpass: just-in-time access to shared credentials" in steps["greeting"]["text"]
    # A channel message with an @mention, as the Playground builds it: answered, not refused.
    assert "`team-id`" in steps["mention"]["text"] and steps["mention"]["status"] == 202
    assert any(e.get("type") == "mention" for e in steps["mention"]["entities"] or [])
    assert "demo-zendesk" in steps["list"]["text"] and "Catalogue" in steps["list"]["text"]
    request_id = steps["request"]["request_id"]
    assert re.fullmatch(r"R-[0-9A-Z]{8}", request_id), steps["request"]
    assert "waiting for a lead" in steps["request"]["text"]

    # The approval card in My Team > Announcements.
    approval = steps["approval_card"]["text"]
    assert "Alex Wilber asks for demo-zendesk" in approval and "Waiting for a lead" in approval
    assert '"verb":"approve"' in approval and '"verb":"decline"' in approval

    # Alex's own Approve is refused, with the core's words.
    refusal = steps["self_approval"]["body"]
    assert refusal["statusCode"] == 400 and refusal["type"] == "application/vnd.microsoft.error"
    assert refusal["value"]["message"] == "You cannot approve your own request."

    # Megan clicks Approve in the web UI: the invoke came from her, the card says so.
    approved = steps["ui_approval"]
    assert approved["invoke_from"]["id"] == "user-id-1" and approved["status"] == 200
    assert "Waiting for a lead" in approved["before"] and "Approve" in approved["before"]
    assert "approved by Megan Bowen" in approved["after"]
    assert '"statusCode":200' in approved["answer"] and "approved by Megan Bowen" in approved["answer"]

    # The delivery card in Alex's 1:1 chat: username, password, current code, New code and Done.
    delivery = steps["delivery"]["card"]
    password = _element(delivery, "password")["value"]
    assert len(password) >= 16
    first_code = _element(delivery, "totp_code")["text"]
    assert re.fullmatch(r"\d{6}", first_code)
    titles = [element.get("title") for element in card_elements(delivery)]
    assert "support@demo.example" in json.dumps(delivery) and "New code" in titles and "Done" in titles

    # New code answers with a fresh delivery card (the same password, a current code).
    new_code = steps["new_code"]["body"]
    assert new_code["statusCode"] == 200, new_code
    assert _element(new_code["value"], "password")["value"] == password
    assert re.fullmatch(r"\d{6}", _element(new_code["value"], "totp_code")["text"])

    # Done: the answer and the message in Alex's chat are the "ended" card, with no secret left.
    done = steps["done"]["body"]
    assert done["statusCode"] == 200 and "Access to demo-zendesk through R-" in json.dumps(done["value"]) \
        and "has ended" in json.dumps(done["value"])
    replaced = steps["delivery_replaced"]["text"]
    assert "has ended" in replaced and password not in replaced and "totp_code" not in replaced

    # The leads' card shows the final state, in the Playground and on screen.
    final = steps["leads_final"]
    assert "Ended early by Alex Wilber" in final["text"] and "Megan Bowen" in final["text"]
    assert "Ended early by Alex Wilber" in final["ui"] and "Megan Bowen" in final["ui"]

    # Every call jitpass made to the Playground was accepted; the secret never reached the channel or the log.
    refused = [call for call in transcript["http"] if call["from"] == "User Application" and call["status"] >= 400]
    assert refused == [], refused
    assert all(password not in message for message in steps["announcements_all"])
    log = (tmp_path / "jitpass.log").read_text(errors="replace")
    assert password not in log
    assert "Traceback" not in log and "level=ERROR" not in log, log[-3000:]

    # The audit trail says what happened, in order, and is intact.
    exported = _jitpass(tmp_path, "audit", "export")
    assert exported.returncode == 0, exported.stderr
    events = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    mine = [(e["type"], e["actor"]["display"]) for e in events if e.get("request_id") == request_id]
    assert mine == [
        ("request.created", "Alex Wilber"),
        ("access.refused", "Alex Wilber"),
        ("request.approved", "Megan Bowen"),
        ("grant.activated", "jitpass"),
        ("grant.delivery_started", "jitpass"),  # before the secret left jitpass
        ("grant.revealed", "Alex Wilber"),  # once Teams took it
        ("grant.code_shown", "Alex Wilber"),
        ("grant.revoked", "Alex Wilber"),
        ("grant.wiped", "jitpass"),
    ], mine
    assert password not in exported.stdout
    verified = _jitpass(tmp_path, "audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr
