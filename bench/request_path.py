"""The request path under load: a real `jitpass serve` on SQLite against a minimal slack-bolt baseline.

    .venv/bin/python bench/request_path.py            # the full run (~90 s), writes docs/benchmarks.md
    .venv/bin/python bench/request_path.py --quick    # half the durations (~45 s)
    .venv/bin/python bench/request_path.py --no-doc   # print the JSON only
    .venv/bin/python bench/request_path.py --workers 2   # instead: `serve --workers 2` vs one process

Everything runs on 127.0.0.1 with ephemeral ports, on a fresh jitpass home in a temporary directory:
the Slack Web API stand-in (tests/support/fake_slack.py, answering at once) and the Bot Connector
stand-in (tests/support/fake_connector.py) in this process; `jitpass serve` and the baseline
(bench/bolt_baseline.py: a slack-bolt AsyncApp with process_before_response=True that only acks, and
for a button press posts one message) as processes of their own, so each one's CPU time is its own
(/proc/<pid>/stat, utime + stime, measured from before a phase until the server is idle again after it).

Requests are signed with Slack's v0 HMAC, each real request by a distinct user. Phases alternate
between jitpass (A) and the baseline (B) in the same run:
- `/access help`, closed loop (20 connections), A B A B;
- real requests `/access acme-zendesk <why> for 1h`, offered at fixed rates (50, 200, 500 req/s; latency
  counted from the moment each request was due, so a late send counts), A and B at each rate; then two
  closed loops of 20 clients, A B A B each: one where each client waits for its request's outcome (the ack,
  or the follow-up a "queued" ack promised) before sending the next, one resending as soon as the ack came,
  whatever it said (the issue's wrk -c20). The baseline gets the same bodies and only acks them;
- approvals at 10 per second: approve press on the card -> the password at the stand-in, for the 15-min
  window (ephemeral, through the command's response_url), the 1-h window (DM), the App Home (the live
  code published with the grant; those requesters opened the tab first, `app_home_opened`, since the tab
  is published only to people who have opened it), and Teams (1:1 chat through the connector); baseline:
  bolt acking a press and posting one message. The real-request and 15-min requesters never open the tab.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import quantiles
from typing import Any
from urllib.parse import urlencode

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.slack.blocks import Actions
from bot.bootstrap import open_runtime
from bot.domain.model import SYSTEM
from tests.support.app import CANARY_PASSWORD, TEST_POLICY, canary_items, test_settings
from tests.support.fake_connector import (
    LEADS_CHANNEL,
    ConnectorCall,
    FakeConnector,
    TeamsUser,
    find_element,
    invoke_activity,
    message_activity,
)
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, TEAM_ID, Call, FakeSlack, sign

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- request_path:begin -->", "<!-- request_path:end -->"
WORKERS_BEGIN, WORKERS_END = "<!-- request_path_workers:begin -->", "<!-- request_path_workers:end -->"
SLACK_DEADLINE = 3.0
CLIENT_TIMEOUT = 10.0
LEAD = "ULEAD1"
TEAMS_LEAD = TeamsUser("lead-oid-1", "Lead One")
CLOSED_OUTCOME = "real request, closed loop (20), each waits for its outcome"
REQUEST_ID = re.compile(r"\b(R-[23456789A-HJ-NP-Z]{8})\b")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (utime + stime) per thread of `pid`, keyed by thread name and id."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = (task / "comm").read_text().strip()
            found[f"{name} ({task.name})"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def _tree_cpu_seconds(pid: int) -> float:
    """The CPU time of a process and its children (a `serve --workers N` supervisor and its workers)."""
    total = _cpu_seconds(pid)
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):  # a worker that just exited
                total += _cpu_seconds(int(child))
    return total


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    cuts = quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {"p50_ms": round(cuts[49] * 1000, 1), "p99_ms": round(cuts[98] * 1000, 1)}


class TimedSlack(FakeSlack):
    """The Slack stand-in, telling listeners about each call as it is recorded (no scanning of all calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[Callable[[Call], None]] = []

    async def _record(self, call: Call) -> None:
        for listener in list(self.listeners):
            listener(call)
        await super()._record(call)


class TimedConnector(FakeConnector):
    """The Bot Connector stand-in, with the same listener hook."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[Callable[[ConnectorCall], None]] = []

    async def _finish(self, call: ConnectorCall, status: int, payload: dict[str, Any]) -> Any:
        response = await super()._finish(call, status, payload)
        for listener in list(self.listeners):
            listener(call)
        return response


@dataclass
class Target:
    """A server under test: where to send, and its process (for CPU time)."""

    name: str
    url: str
    process: asyncio.subprocess.Process
    slack: FakeSlack

    def calls_since(self, mark: int) -> dict[str, int]:
        found: dict[str, int] = {}
        for call in self.slack.calls[mark:]:
            found[call.method] = found.get(call.method, 0) + 1
        return found

    tree: bool = False  # count the CPU of its children too (a `--workers` supervisor)

    @property
    def cpu(self) -> float:
        assert self.process.pid is not None
        return _tree_cpu_seconds(self.process.pid) if self.tree else _cpu_seconds(self.process.pid)

    async def idle(self, timeout: float = 20.0) -> None:
        """Wait until the server spends (almost) no CPU: the work a phase caused is done."""
        started = time.monotonic()
        quiet, last = 0, self.cpu
        while quiet < 3 and time.monotonic() - started < timeout:
            await asyncio.sleep(0.2)
            now = self.cpu
            quiet = quiet + 1 if now - last <= 0.011 else 0
            last = now


@dataclass
class Phase:
    """What one measured phase found."""

    what: str
    target: str
    sent: int = 0
    acked: int = 0  # HTTP 200 at all
    within: int = 0  # HTTP 200 within Slack's 3 s
    seconds: float = 0.0
    cpu_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)  # Slack stand-in calls the phase caused, by method
    outcomes: list[float] = field(default_factory=list)  # send -> outcome told (closed loop with follow-ups)

    @property
    def admitted(self) -> int:
        """Acked requests that do their work (all but the ones refused "busy, nothing was recorded")."""
        return self.acked - self.kinds.get("busy", 0)

    def row(self) -> dict[str, Any]:
        print(f"{self.target:8} {self.what}: {self.acked}/{self.sent}", file=sys.stderr, flush=True)
        # CPU per request counts only admitted ones: a refusal costs next to nothing and would flatter it.
        return {"what": self.what, "target": self.target, "sent": self.sent, "acked": self.acked,
                "admitted": self.admitted,
                "req_per_s": round(self.admitted / self.seconds, 1) if self.seconds else 0.0,
                "within_3s_pct": round(100 * self.within / self.sent, 1) if self.sent else 0.0,
                "cpu_ms_per_request": round(1000 * self.cpu_s / self.admitted, 2) if self.admitted else float("nan"),
                **_pct(self.latencies), "replies": self.kinds,
                **({"outcome_" + k: v for k, v in _pct(self.outcomes).items()} if self.outcomes else {}),
                "slack_calls_per_request": {m: round(n / max(self.sent, 1), 2) for m, n in sorted(self.calls.items())}}


class Slack:
    """Signed slash commands and button presses, as Slack sends them."""

    def __init__(self, fake: FakeSlack, session: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.session = session
        self._ids = itertools.count(1)

    def command(self, user_id: str, text: str) -> tuple[bytes, str]:
        n = next(self._ids)
        name = f"cmd-{n}"
        body = urlencode({"token": "ignored", "team_id": TEAM_ID, "channel_id": "CGENERAL", "channel_name": "general",
                          "user_id": user_id, "user_name": user_id.lower(), "command": "/access", "text": text,
                          "api_app_id": "A0TEST", "response_url": self.fake.response_url(name),
                          "trigger_id": f"trigger-{n}"}).encode()
        return body, name

    def press(self, user_id: str, action_id: str, value: str) -> bytes:
        n = next(self._ids)
        payload = {"type": "block_actions", "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID},
                   "api_app_id": "A0TEST", "team": {"id": TEAM_ID}, "trigger_id": f"trigger-{n}",
                   "container": {"type": "message", "channel_id": "CLEADS", "message_ts": "1.0"},
                   "channel": {"id": "CLEADS"}, "response_url": self.fake.response_url(f"press-{n}"),
                   "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": value,
                                "action_ts": str(time.time())}]}
        return urlencode({"payload": json.dumps(payload)}).encode()

    def home_opened(self, user_id: str) -> bytes:
        """The Events API callback Slack sends when `user_id` switches to the app's Home tab."""
        n = next(self._ids)
        return json.dumps({"type": "event_callback", "team_id": TEAM_ID, "api_app_id": "A0TEST",
                           "event": {"type": "app_home_opened", "user": user_id, "tab": "home",
                                     "channel": f"D{user_id}"},
                           "event_id": f"EvBench{n}", "event_time": int(time.time())}).encode()

    async def post(self, url: str, body: bytes, content_type: str = "application/x-www-form-urlencoded",
                   ) -> tuple[int, str]:
        now = int(time.time())
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": str(now),
                   "X-Slack-Signature": sign(body, now)}
        async with self.session.post(f"{url}/slack/events", data=body, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)) as reply:
            return reply.status, await reply.text()


def _kind(text: str) -> str:
    """What an ack said (bot/domain/wording.py): the request recorded, or the admission control's answers."""
    if "waiting for a lead" in text or "sent to" in text:
        return "sent"
    if "Working on it" in text:
        return "working"
    if "Queued" in text:  # before "busy": the queued line says jitpass is busy too
        return "queued"
    if "nothing was recorded" in text:
        return "busy"
    return "other"


async def _one(slack: Slack, target: Target, body: bytes, due: float, phase: Phase,
               ids: list[str] | None) -> str:
    """Send one request; what its ack said (`_kind`), or why there was none."""
    loop = asyncio.get_running_loop()
    try:
        status, text = await slack.post(target.url, body)
    except (aiohttp.ClientError, TimeoutError):
        return "no answer"
    elapsed = loop.time() - due
    if status != 200:
        phase.kinds[f"http {status}"] = phase.kinds.get(f"http {status}", 0) + 1
        return f"http {status}"
    phase.acked += 1
    phase.within += elapsed <= SLACK_DEADLINE
    phase.latencies.append(elapsed)
    try:
        answer = json.loads(text).get("text", "") if text else ""
    except ValueError:
        answer = text
    kind = _kind(str(answer))
    phase.kinds[kind] = phase.kinds.get(kind, 0) + 1
    if ids is not None and (found := REQUEST_ID.search(str(answer))):
        ids.append(found.group(1))
    return kind


async def fixed_rate(slack: Slack, target: Target, bodies: Callable[[int], tuple[bytes, str]], rate: float,
                     seconds: float,
                     what: str, ids: list[str] | None = None) -> Phase:
    """Offer `rate` requests per second for `seconds`; each latency counts from when the request was due."""
    phase = Phase(what, target.name)
    loop = asyncio.get_running_loop()
    cpu, mark = target.cpu, len(target.slack.calls)
    start = loop.time() + 0.05
    tasks = []
    for i in range(int(rate * seconds)):
        due = start + i / rate
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(slack, target, bodies(i)[0], due, phase, ids)))
    phase.sent = len(tasks)
    await asyncio.gather(*tasks)
    await _finish(phase, target, start, cpu, mark)
    return phase


async def _finish(phase: Phase, target: Target, start: float, cpu: float, mark: int) -> None:
    """Wait until the server is idle; the phase lasted until its last ack or the last Slack call it caused
    (a queued request's card and follow-up come after its ack), and cost the CPU spent meanwhile."""
    phase.seconds = asyncio.get_running_loop().time() - start
    await target.idle()
    last = max((call.at for call in target.slack.calls[mark:]), default=start)
    phase.seconds = max(phase.seconds, last - start)
    phase.cpu_s, phase.calls = target.cpu - cpu, target.calls_since(mark)


@dataclass
class Deliveries:
    """From `expect` (an approve pressed, a command sent) to the moment the stand-in received what the person
    waits for, by key: ("dm", user), ("told", response_url name), ..."""

    waiting: dict[tuple[str, str], tuple[float, asyncio.Future[float]]] = field(default_factory=dict)

    def expect(self, key: tuple[str, str]) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[key] = (time.monotonic(), future)
        return future

    def arrived(self, key: tuple[str, str]) -> None:
        found = self.waiting.pop(key, None)
        if found is not None and not found[1].done():
            found[1].set_result(time.monotonic() - found[0])

    def forget(self, key: tuple[str, str]) -> None:
        self.waiting.pop(key, None)


async def closed_loop(slack: Slack, target: Target, bodies: Callable[[int], tuple[bytes, str]], seconds: float,
                      what: str, connections: int = 20, ids: list[str] | None = None,
                      told: Deliveries | None = None) -> Phase:
    """`connections` clients each sending the next request as soon as the last was answered. With `told`
    (fed by `_slack_listener`), "answered" means the outcome: the ack when it carried it, else (an ack saying
    "queued" or "working") the follow-up through the command's response_url, as a person waits for it; the
    phase's `outcomes` are those times, from the send."""
    phase = Phase(what, target.name)
    loop = asyncio.get_running_loop()
    counter = itertools.count()
    cpu, mark = target.cpu, len(target.slack.calls)
    start = loop.time()
    end = start + seconds

    async def client() -> None:
        while loop.time() < end:
            phase.sent += 1
            body, name = bodies(next(counter))
            follow_up = told.expect(("told", name)) if told is not None else None
            sent = loop.time()
            kind = await _one(slack, target, body, sent, phase, ids)
            if follow_up is None or told is None:
                continue
            if kind in ("queued", "working"):
                try:
                    phase.outcomes.append(await asyncio.wait_for(follow_up, CLIENT_TIMEOUT))
                except TimeoutError:
                    phase.kinds["never told"] = phase.kinds.get("never told", 0) + 1
            elif kind == "sent":
                phase.outcomes.append(loop.time() - sent)
            told.forget(("told", name))

    await asyncio.gather(*(client() for _ in range(connections)))
    await _finish(phase, target, start, cpu, mark)
    return phase


def _slack_listener(deliveries: Deliveries, ephemeral: dict[str, str]) -> Callable[[Call], None]:
    def heard(call: Call) -> None:
        if not call.ok:
            return
        if call.method == "response_url" and call.key in ephemeral and CANARY_PASSWORD in call.dump():
            deliveries.arrived(("ephemeral", ephemeral[call.key or ""]))
        elif call.method == "response_url":  # a follow-up a "queued" or "working" ack promised
            deliveries.arrived(("told", call.key or ""))
        elif call.method == "chat.postMessage":
            text = call.dump()
            if CANARY_PASSWORD in text:
                deliveries.arrived(("dm", str(call.args.get("channel", ""))[1:]))
            elif "baseline delivery for " in text:  # keyed by the request id pressed
                deliveries.arrived(("baseline", str(call.args.get("text", "")).rsplit(" ", 1)[-1]))
        elif call.method == "views.publish" and "recorded in the audit trail" in call.text():
            deliveries.arrived(("home", str(call.args.get("user_id", ""))))
    return heard


async def _arrival(phase: Phase, waited: Awaitable[float], deadline: float) -> None:
    """Count one expected delivery: its latency if it arrives before `deadline` (loop time), else a miss."""
    phase.sent += 1
    with contextlib.suppress(TimeoutError):
        phase.latencies.append(await asyncio.wait_for(waited, max(0.0, deadline - asyncio.get_running_loop().time())))
        phase.acked += 1
        phase.within += 1


async def approvals(slack: Slack, target: Target, pool: list[tuple[str, str]], paths: tuple[str, ...],
                    deliveries: Deliveries, rate: float, what: str) -> dict[str, Phase]:
    """Press approve on each (user, request id) of `pool` at `rate` per second; time each delivery path."""
    phases = {path: Phase(f"{what} ({path})", target.name) for path in paths}
    loop = asyncio.get_running_loop()
    cpu, mark = target.cpu, len(target.slack.calls)
    start = loop.time()
    waits: list[tuple[str, Awaitable[float]]] = []
    for i, (user, request_id) in enumerate(pool):
        if (delay := start + i / rate - loop.time()) > 0:
            await asyncio.sleep(delay)
        for path in paths:
            waits.append((path, deliveries.expect((path, user))))
        waits.append(("", asyncio.create_task(slack.post(target.url, slack.press(LEAD, Actions.APPROVE,
                                                                                    request_id)))))
    deadline = loop.time() + CLIENT_TIMEOUT
    for path, waited in waits:
        if path:
            await _arrival(phases[path], waited, deadline)
    await asyncio.gather(*(w for p, w in waits if not p), return_exceptions=True)
    for phase in phases.values():
        phase.seconds = loop.time() - start
    await target.idle()
    for phase in phases.values():
        phase.cpu_s = target.cpu - cpu  # per approval, whichever path is timed
        phase.calls = target.calls_since(mark)
    return phases


async def teams_approvals(base_url: str, connector: TimedConnector, session: aiohttp.ClientSession, count: int,
                          rate: float, target: Target, prefix: str = "") -> Phase:
    """Teams requesters ask in their 1:1 chat; a lead approves on the card; time until the password card.
    The phase's calls are the Bot Connector calls per approval, by kind ("teams send", "teams update", ...)."""
    users = [TeamsUser(f"bench-oid-{prefix}{i:05d}", f"Bench {prefix}{i:05d}") for i in range(count)]
    cards: dict[str, str] = {}
    arrived: dict[str, asyncio.Future[float]] = {}
    pressed: dict[str, float] = {}
    posted = asyncio.Event()

    def heard(call: ConnectorCall) -> None:
        if call.status >= 300 or not call.card:
            return
        if call.conversation_id == LEADS_CHANNEL and call.kind == "send":
            facts = [f for e in call.card.get("body", []) if e.get("type") == "FactSet" for f in e["facts"]]
            request_id = next((str(f["value"]) for f in facts if f.get("title") == "Request"), "")
            who = next((u for u in users if u.name in call.dump()), None)
            if who is not None and request_id:
                cards[who.aad_object_id] = request_id
                posted.set()
        elif find_element(call.card, "password") is not None:
            who = next((u for u in users if call.conversation_id.endswith(u.aad_object_id)), None)
            if who is not None and who.aad_object_id in arrived and not arrived[who.aad_object_id].done():
                arrived[who.aad_object_id].set_result(time.monotonic() - pressed[who.aad_object_id])

    connector.listeners.append(heard)

    async def post(activity: dict[str, Any]) -> int:
        async with session.post(f"{base_url}/api/messages", json=activity,
                                timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)) as reply:
            await reply.read()
            return reply.status

    for user in users:  # set-up, not measured: one request each, in turn
        await post(message_activity(connector.url, user, "access acme-zendesk benchmark run for 1h"))
    deadline = time.monotonic() + 30
    while len(cards) < count and time.monotonic() < deadline:
        posted.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(posted.wait(), 1.0)
    await target.idle()
    phase = Phase("approve -> password (Teams 1:1)", target.name)
    loop = asyncio.get_running_loop()
    cpu, mark = target.cpu, len(connector.calls)
    start = loop.time()
    presses = []
    for i, user in enumerate(u for u in users if u.aad_object_id in cards):
        if (delay := start + i / rate - loop.time()) > 0:
            await asyncio.sleep(delay)
        arrived[user.aad_object_id] = loop.create_future()
        pressed[user.aad_object_id] = time.monotonic()
        presses.append(asyncio.create_task(post(invoke_activity(
            connector.url, TEAMS_LEAD, "approve", {"request_id": cards[user.aad_object_id]},
            conversation_id=LEADS_CHANNEL, conversation_type="channel"))))
    deadline = loop.time() + CLIENT_TIMEOUT
    for future in list(arrived.values()):
        await _arrival(phase, future, deadline)
    await asyncio.gather(*presses, return_exceptions=True)
    phase.seconds = loop.time() - start
    await target.idle()
    phase.cpu_s = target.cpu - cpu
    for call in connector.calls[mark:]:
        phase.calls[f"teams {call.kind}"] = phase.calls.get(f"teams {call.kind}", 0) + 1
    connector.listeners.remove(heard)
    return phase


async def _healthy(url: str, process: asyncio.subprocess.Process, path: str, timeout: float = 60) -> None:
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < timeout:
            if process.returncode is not None:
                raise RuntimeError(f"{url} exited with {process.returncode}")
            try:
                async with session.get(f"{url}{path}", timeout=aiohttp.ClientTimeout(total=1)) as reply:
                    if reply.status < 500:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not come up")


async def _start(args: list[str], env: dict[str, str], log: Path, root: Path = ROOT) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        # `python -m bot` from `root`: its own code comes first on sys.path (another checkout for --before).
        return await asyncio.create_subprocess_exec(sys.executable, *args, cwd=root,
                                                    env={**env, "PYTHONPATH": str(root)},
                                                    stdout=asyncio.subprocess.DEVNULL, stderr=out)


# The catalogue of a home served from another checkout (--before), written by that checkout's own code: a
# store created by this code may carry a schema migration the older code refuses to open.
_SEED = """
import asyncio, os, sys
from pathlib import Path
from bot.bootstrap import open_runtime
from bot.domain.model import SYSTEM
from tests.support.app import canary_items, test_settings

async def seed() -> None:
    runtime = await open_runtime(test_settings(Path(sys.argv[1]), master_key=os.environ["JITPASS_MASTER_KEY"]))
    await runtime.catalog.add(canary_items(), SYSTEM, source="bench")
    await runtime.close()

asyncio.run(seed())
"""


async def _home(tmp: Path, fake: FakeSlack, root: Path = ROOT) -> dict[str, str]:
    settings = test_settings(tmp)
    if root == ROOT:
        runtime = await open_runtime(settings)
        await runtime.catalog.add(canary_items(), SYSTEM, source="bench")
        await runtime.close()
    else:
        seed = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SEED, str(tmp), cwd=root, stdout=asyncio.subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(root), "JITPASS_DOTENV": str(tmp / "no.env"),
                 "JITPASS_MASTER_KEY": settings.master_key or ""})
        if await seed.wait() != 0:
            raise RuntimeError(f"could not create the catalogue with the code in {root}")
    policy = tmp / "policy.toml"
    policy.write_text(TEST_POLICY, encoding="utf-8")
    return {"PATH": os.environ.get("PATH", ""), "JITPASS_DOTENV": str(tmp / "no.env"), "JITPASS_HOME": str(tmp),
            "JITPASS_STORE": settings.store_url, "JITPASS_MASTER_KEY": settings.master_key or "",
            "JITPASS_POLICY": str(policy), "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.url, "JITPASS_TEAMS_VALIDATE_SERVICE_URL": "false"}


PHASES = ("help", "rates", "closed", "approvals")


async def run(tmp: Path, scale: float, phases: tuple[str, ...] = PHASES,
              rates: tuple[int, ...] = (50, 200, 500), before: Path | None = None,
              approval_count: int = 0) -> dict[str, Any]:
    fake = TimedSlack()
    await fake.start()
    connector = TimedConnector()
    await connector.start()
    env = await _home(tmp, fake)
    jit_port, bolt_port = _port(), _port()
    jit = await _start(["-m", "bot", "serve", "--port", str(jit_port)], env, tmp / "jitpass.log")
    bolt = await _start([str(ROOT / "bench" / "bolt_baseline.py"), "--port", str(bolt_port), "--api-url", fake.url],
                        env, tmp / "bolt.log")
    a = Target("jitpass", f"http://127.0.0.1:{jit_port}", jit, fake)
    b = Target("bolt", f"http://127.0.0.1:{bolt_port}", bolt, fake)
    processes = [jit, bolt]
    # --before: the same server from another checkout (e.g. a worktree of main), on a home of its own,
    # alternated with the other two (A B C) in the help, fixed-rate and closed-loop phases.
    c: Target | None = None
    if before is not None:
        (tmp / "before").mkdir(exist_ok=True)
        env_c = await _home(tmp / "before", fake, before)
        c_port = _port()
        old = await _start(["-m", "bot", "serve", "--port", str(c_port)], env_c, tmp / "before.log", before)
        processes.append(old)
        c = Target("before", f"http://127.0.0.1:{c_port}", old, fake)
    abc = (a, b) if c is None else (a, b, c)
    rows: list[dict[str, Any]] = []
    users = (f"UB{i:07d}" for i in itertools.count())
    try:
        await _healthy(a.url, jit, "/healthz")
        await _healthy(b.url, bolt, "/")
        if c is not None:
            await _healthy(c.url, c.process, "/healthz")
        connector_limit = aiohttp.TCPConnector(limit=512)
        async with aiohttp.ClientSession(connector=connector_limit) as session:
            slack = Slack(fake, session)

            def help_body(_: int) -> tuple[bytes, str]:
                return slack.command("UHELP", "help")

            def real_body(_: int) -> tuple[bytes, str]:
                return slack.command(next(users), "acme-zendesk benchmark run for 1h")

            for target in abc:  # warm-up: imports, bolt's auth.test, SQLite pages
                await closed_loop(slack, target, help_body, 1.0, "warm-up", connections=4)
            for target in abc * 2 if "help" in phases else ():
                rows.append((await closed_loop(slack, target, help_body, 3 * scale,
                                               "/access help, closed loop (20)")).row())
            dm_pool: list[str] = []
            for rate in rates if "rates" in phases else ():
                for target in abc:
                    rows.append((await fixed_rate(slack, target, real_body, rate, 3 * scale,
                                                  f"real request, offered {rate}/s",
                                                  dm_pool if target is a else None)).row())
            # Closed loop, twice: each person waiting for the outcome of their request (the ack, or the
            # follow-up a "queued" ack promised), as the wrk -c20 loop waited for each answer; then
            # resending at once whatever the ack said (a retry storm: most answers are "busy" refusals).
            ephemeral: dict[str, str] = {}  # response_url name -> requester (the approvals' 15-min windows)
            deliveries = Deliveries()
            fake.listeners.append(_slack_listener(deliveries, ephemeral))
            for target in abc * 2 if "closed" in phases else ():
                rows.append((await closed_loop(slack, target, real_body, 3 * scale, CLOSED_OUTCOME,
                                               told=deliveries)).row())
            for target in abc * 2 if "closed" in phases else ():
                rows.append((await closed_loop(slack, target, real_body, 3 * scale,
                                               "real request, closed loop (20), resent at once")).row())
            if "approvals" not in phases:
                return _result(rows, scale)
            # Approvals: fresh requesters; 15-min windows deliver through the command's response_url.
            count = approval_count or max(10, int(30 * scale))

            async def slack_approvals(target: Target) -> list[dict[str, Any]]:
                short_pool: list[tuple[str, str]] = []
                for _ in range(count):
                    user = next(users)
                    body, name = slack.command(user, "acme-zendesk benchmark run for 15m")
                    ephemeral[name] = user
                    _, text = await slack.post(target.url, body)
                    if found := REQUEST_ID.search(text):
                        short_pool.append((user, found.group(1)))
                long_pool: list[tuple[str, str]] = []
                for _ in range(count):
                    user = next(users)
                    # The App Home is published only to people who opened it: these have, so that the "home"
                    # path still times the publish that carries the live code.
                    await slack.post(target.url, slack.home_opened(user), "application/json")
                    _, text = await slack.post(target.url,
                                               slack.command(user, "acme-zendesk benchmark run for 1h")[0])
                    if found := REQUEST_ID.search(text):
                        long_pool.append((user, found.group(1)))
                await target.idle()
                found = await approvals(slack, target, short_pool, ("ephemeral",), deliveries, 10,
                                        "approve -> password")
                found |= await approvals(slack, target, long_pool, ("dm", "home"), deliveries, 10,
                                         "approve -> password")
                return [p.row() for p in found.values()]

            # With --before: A C C A, each round with requesters of its own (the worse p99 of a target's rounds).
            for n, target in enumerate((a,) if c is None else (a, c, c, a)):
                rows += await slack_approvals(target)
                if n == 0:
                    base_pool = [(f"R-BASE{i:04d}", f"R-BASE{i:04d}") for i in range(count)]
                    rows += [p.row() for p in (await approvals(slack, b, base_pool, ("baseline",), deliveries, 10,
                                                               "approve -> message")).values()]
                rows.append((await teams_approvals(target.url, connector, session, count, 10, target,
                                                   prefix=f"r{n}-")).row())
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await connector.stop()
        await fake.stop()
    return _result(rows, scale)


async def run_workers(tmp: Path, scale: float, workers: int, rates: tuple[int, ...]) -> dict[str, Any]:
    """`jitpass serve --workers N` (B) against one `jitpass serve` (A), each on a store of its own, A/B
    alternated in one run: real requests at the fixed rates, then closed loop (16 connections) A B A B."""
    fake = TimedSlack()
    await fake.start()
    homes = [tmp / "one", tmp / f"workers-{workers}"]
    for home in homes:
        home.mkdir(parents=True, exist_ok=True)
    env_a, env_b = await _home(homes[0], fake), await _home(homes[1], fake)
    port_a, port_b = _port(), _port()
    one = await _start(["-m", "bot", "serve", "--port", str(port_a)], env_a, homes[0] / "jitpass.log")
    many = await _start(["-m", "bot", "serve", "--port", str(port_b), "--workers", str(workers)], env_b,
                        homes[1] / "jitpass.log")
    a = Target("1 worker", f"http://127.0.0.1:{port_a}", one, fake)
    b = Target(f"{workers} workers", f"http://127.0.0.1:{port_b}", many, fake, tree=True)
    rows: list[dict[str, Any]] = []
    users = (f"UW{i:07d}" for i in itertools.count())
    try:
        await _healthy(a.url, one, "/healthz")
        await _healthy(b.url, many, "/healthz")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as session:
            slack = Slack(fake, session)

            def real_body(_: int) -> tuple[bytes, str]:
                return slack.command(next(users), "acme-zendesk benchmark run for 1h")

            for target in (a, b):  # warm-up: imports, SQLite pages, every worker's first requests
                await closed_loop(slack, target, real_body, 1.0, "warm-up", connections=8)
            for rate in rates:
                for target in (a, b) if rate % 2 == 0 else (b, a):
                    rows.append((await fixed_rate(slack, target, real_body, rate, 3 * scale,
                                                  f"real request, offered {rate}/s")).row())
            # 16 clients: no more than one process's turns (JITPASS_MAX_RUNNING), so no request is queued
            # or refused "busy" (a refusal answers at once, and a closed loop would spin on refusals).
            for target in (a, b, a, b):
                rows.append((await closed_loop(slack, target, real_body, 3 * scale,
                                               "real request, closed loop (16)", connections=16)).row())
    finally:
        for process in (one, many):
            if process.returncode is None:
                process.terminate()  # the supervisor stops its workers
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        await fake.stop()
    return _result(rows, scale) | {"workers": workers}


def workers_markdown(result: dict[str, Any]) -> str:
    """The 2-vs-1 table: N workers beside one process of the same run, and the throughput ratio."""
    rows = _merge(result["rows"])
    many = f"{result['workers']} workers"
    base = {r["what"]: r for r in rows if r["target"] == "1 worker"}
    lines = [f"Run {result['at']} ({result['machine']}, `--scale {result['scale']}`), each on a SQLite store of "
             f"its own. Ratio: {many} ÷ 1 worker of the same run (A/B alternated).", "",
             f"| path | 1 worker req/s | ack p50 / p99 ms | acked ≤ 3 s | CPU ms/req | {many} req/s "
             f"| ack p50 / p99 ms | acked ≤ 3 s | CPU ms/req | {many} ÷ 1 (req/s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        one = base.get(row["what"])
        if row["target"] != many or one is None:
            continue
        runs = f" (runs {', '.join(str(r) for r in row['req_per_s_runs'])} vs " \
               f"{', '.join(str(r) for r in one['req_per_s_runs'])})" if "req_per_s_runs" in row else ""
        lines.append(f"| {row['what']} | {one['req_per_s']:,} | {one['p50_ms']} / {one['p99_ms']} | "
                     f"{one['within_3s_pct']}% | {one['cpu_ms_per_request']} | {row['req_per_s']:,} | "
                     f"{row['p50_ms']} / {row['p99_ms']} | {row['within_3s_pct']}% | {row['cpu_ms_per_request']} | "
                     f"{_ratio(row['req_per_s'], one['req_per_s'])}{runs} |")
    lines += ["", "Replies (sent: the ack carried the request id; working / queued: followed up; busy: refused):", ""]
    for row in rows:
        lines.append(f"- {row['target']}, {row['what']}: " +
                     ", ".join(f"{k} {v}" for k, v in sorted(row["replies"].items())))
    return "\n".join(lines)


def _result(rows: list[dict[str, Any]], scale: float) -> dict[str, Any]:
    return {"at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "scale": scale, "rows": rows,
            "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"}


async def profile(tmp: Path, out: Path, seconds: float, rate: int, what: str = "real") -> dict[str, Any]:
    """py-spy on the running server during real requests (or `help`) at a fixed rate; collapsed stacks to `out`."""
    fake = TimedSlack()
    await fake.start()
    env = await _home(tmp, fake)
    port = _port()
    jit = await _start(["-m", "bot", "serve", "--port", str(port)], env, tmp / "jitpass.log")
    target = Target("jitpass", f"http://127.0.0.1:{port}", jit, fake)
    users = (f"UP{i:07d}" for i in itertools.count())
    try:
        await _healthy(target.url, jit, "/healthz")
        async with aiohttp.ClientSession() as session:
            slack = Slack(fake, session)

            def real_body(_: int) -> tuple[bytes, str]:
                if what == "help":
                    return slack.command("UHELP", "help")
                return slack.command(next(users), "acme-zendesk benchmark run for 1h")

            await closed_loop(slack, target, real_body, 1.0, "warm-up", connections=4)
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(jit.pid), "--duration",
                str(int(seconds) + 2), "--rate", "250", "--format", "raw", "--threads", "-o", str(out),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await asyncio.sleep(1.0)
            assert jit.pid is not None
            threads = _thread_cpu(jit.pid)
            # A fixed rate under capacity: a closed loop would fill the admission queue and profile refusals.
            phase = await fixed_rate(slack, target, real_body, rate, seconds, f"{what} request, offered {rate}/s")
            await spy.wait()
            after = _thread_cpu(jit.pid)
            admitted = max(phase.admitted, 1)
            per_thread = {name: round(1000 * (after[name] - threads.get(name, 0.0)) / admitted, 2)
                          for name in after}
    finally:
        jit.kill()
        await jit.wait()
        await fake.stop()
    return {"phase": phase.row(), "cpu_ms_per_request_by_thread": per_thread, "top": summarise(out)}


def summarise(collapsed: Path, top: int = 40) -> list[tuple[str, float]]:
    """Inclusive share of samples per function of ours (and the libraries we wait in), busiest first."""
    counts: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        samples = int(n)
        frames = stack.split(";")
        if "select (selectors.py" in frames[-1] or not frames[0].startswith("thread") \
                or "MainThread" not in frames[0]:
            continue  # the event loop waiting for work; other threads (aiosqlite's) cannot be told idle from busy
        total += samples
        for name in dict.fromkeys(f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                                  if " (" in f else f for f in frames):
            counts[name] = counts.get(name, 0) + samples
    return [(name, round(100 * n / total, 1)) for name, n in sorted(counts.items(), key=lambda x: -x[1])[:top]]


def _merge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of the same phase on the same target, together (A B A B -> one A row, one B row)."""
    merged: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        merged.setdefault((row["what"], row["target"]), []).append(row)
    out = []
    for runs in merged.values():
        if len(runs) == 1:
            out.append(runs[0])
            continue
        rates = [r["req_per_s"] for r in runs]
        out.append({**runs[0], "req_per_s": round(sum(rates) / len(rates), 1),
                    "req_per_s_runs": rates,
                    "p50_ms": round(max(r["p50_ms"] for r in runs), 1),
                    "p99_ms": round(max(r["p99_ms"] for r in runs), 1),
                    "within_3s_pct": min(r["within_3s_pct"] for r in runs),
                    "cpu_ms_per_request": round(sum(r["cpu_ms_per_request"] for r in runs) / len(runs), 2),
                    "sent": sum(r["sent"] for r in runs), "acked": sum(r["acked"] for r in runs),
                    "replies": {k: sum(r["replies"].get(k, 0) for r in runs)
                                for k in sorted({k for r in runs for k in r["replies"]})},
                    **{k: round(max(r[k] for r in runs), 1) for k in ("outcome_p50_ms", "outcome_p99_ms")
                       if all(k in r for r in runs)}})
    return out


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}×" if base and value == value and base == base else ""


def _label(row: dict[str, Any]) -> str:
    return f"{row['what']}, before" if row["target"] == "before" else str(row["what"])


def markdown(result: dict[str, Any]) -> str:
    """The table for docs/benchmarks.md: jitpass rows with the same-run bolt figure and the ratio."""
    rows = _merge(result["rows"])
    bolt = {r["what"]: r for r in rows if r["target"] == "bolt"}
    baseline_press = next((r for r in rows if r["target"] == "bolt" and r["what"].startswith("approve")), None)
    lines = [f"Run {result['at']} ({result['machine']}, `--scale {result['scale']}`). Ratios: jitpass ÷ the "
             "bolt baseline of the same run (throughput: higher is better; latency and CPU: lower is better).", "",
             "| path | jitpass req/s | ack p50 / p99 ms | acked ≤ 3 s | CPU ms/req | bolt req/s | bolt p50 / p99 ms "
             "| bolt CPU ms/req | jitpass ÷ bolt (req/s, p99, CPU) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        if row["target"] not in ("jitpass", "before"):
            continue
        if row["target"] == "before":
            row = {**row, "what": _label(row)}
        base = bolt.get(row["what"].removesuffix(", before")) or (
            baseline_press if row["what"].startswith("approve") else None)
        is_delivery = row["what"].startswith("approve")
        rate = "" if is_delivery else f"{row['req_per_s']:,}"
        ack = f"{row['p50_ms']} / {row['p99_ms']}"
        within = f"{row['acked']}/{row['sent']}" if is_delivery else f"{row['within_3s_pct']}%"
        cpu = f"{row['cpu_ms_per_request']}"
        if base is None:
            lines.append(f"| {row['what']} | {rate} | {ack} | {within} | {cpu} | | | | |")
            continue
        b_rate = "" if is_delivery else f"{base['req_per_s']:,}"
        ratios = ", ".join(x for x in ("" if is_delivery else _ratio(row["req_per_s"], base["req_per_s"]),
                                       _ratio(row["p99_ms"], base["p99_ms"]),
                                       _ratio(row["cpu_ms_per_request"], base["cpu_ms_per_request"])) if x)
        lines.append(f"| {row['what']} | {rate} | {ack} | {within} | {cpu} | {b_rate} | "
                     f"{base['p50_ms']} / {base['p99_ms']} | {base['cpu_ms_per_request']} | {ratios} |")
    lines += ["", "Replies of the real-request phases (sent: the ack carried the request id; working: "
              "followed up through response_url; busy/queued: admission control):", ""]
    for row in rows:
        if row["target"] in ("jitpass", "before") and row["what"].startswith("real"):
            told = (f"; outcome told p50 / p99 {row['outcome_p50_ms']} / {row['outcome_p99_ms']} ms"
                    if "outcome_p99_ms" in row else "")
            lines.append(f"- {_label(row)}: " + ", ".join(f"{k} {v}" for k, v in sorted(row["replies"].items()))
                         + told)
    lines += ["", "Calls at the Slack stand-in (`teams …`: at the Bot Connector stand-in) per request (per approval), "
              "by method:", ""]
    for row in rows:
        calls = row.get("slack_calls_per_request")
        if row["target"] in ("jitpass", "before") and calls and not row["what"].startswith("/access"):
            lines.append(f"- {_label(row)}: " + ", ".join(f"`{k}` {v}" for k, v in calls.items()))
    return "\n".join(lines)


def write_doc(text: str, begin: str = BEGIN, end: str = END,
              heading: str = "## Request path (`bench/request_path.py`)") -> None:
    doc = DOC.read_text(encoding="utf-8")
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip() + f"\n\n{heading}\n\n" + block + "\n"
    DOC.write_text(doc, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="half the durations (--scale 0.5)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every phase's duration")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)} (default: all)")
    parser.add_argument("--rates", default="50,200,500", help="the fixed rates offered, req/s (default: 50,200,500)")
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="also run `jitpass serve` from this checkout (e.g. `git archive main | tar -x -C "
                        "/tmp/main`) as a third target, alternated with the other two: rows marked ', before'")
    parser.add_argument("--approvals", type=int, default=0, metavar="N",
                        help="approvals per delivery path and round (default: 30 × --scale, at least 10); with "
                        "--before the approval phase runs A C C A (e.g. --phases approvals --approvals 60)")
    parser.add_argument("--dir", type=Path, help="keep the jitpass home and logs here (default: a temporary one)")
    parser.add_argument("--profile", type=Path, metavar="OUT",
                        help="instead: py-spy on jitpass during 8 s of real requests offered at the first of --rates "
                        "(e.g. --rates 100); collapsed stacks to OUT")
    parser.add_argument("--profile-what", choices=("real", "help"), default="real",
                        help="with --profile: real requests (default) or `/access help`")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="instead: real requests on `jitpass serve --workers N` vs one process, A/B alternated "
                        "(--rates, default 200,500); writes its own table in docs/benchmarks.md")
    args = parser.parse_args()
    scale = 0.5 if args.quick else args.scale
    phases = tuple(p for p in args.phases.split(",") if p)
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))} (known: {', '.join(PHASES)})")
    rates = tuple(int(r) for r in args.rates.split(",") if r)
    if args.workers:
        if args.workers < 2:
            parser.error("--workers compares N >= 2 workers with one process")
        worker_rates = rates if args.rates != parser.get_default("rates") else (200, 500)
        with tempfile.TemporaryDirectory(prefix="jitpass-bench-workers-") as tmp:
            found = asyncio.run(run_workers(Path(args.dir or tmp), scale, args.workers, worker_rates))
        print(json.dumps(found, indent=2))
        text = workers_markdown(found)
        print(text)
        if not args.no_doc:
            write_doc(text, WORKERS_BEGIN, WORKERS_END, "## Several workers (`bench/request_path.py --workers 2`)")
        return
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="jitpass-profile-") as tmp:
            found = asyncio.run(profile(Path(tmp), args.profile.absolute(), 8.0, rates[0],
                                       args.profile_what))
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run(args.dir, scale, phases, rates, args.before, args.approvals))
    else:
        with tempfile.TemporaryDirectory(prefix="jitpass-bench-") as tmp:
            result = asyncio.run(run(Path(tmp), scale, phases, rates, args.before, args.approvals))
    print(json.dumps(result, indent=2))
    text = markdown(result)
    print(text)
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
