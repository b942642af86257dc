"""The HTML report in real headless Chromium: it renders, its charts are SVG, and it makes no request.

Chromium is driven over the DevTools protocol with aiohttp's websocket client (no npm needed). `./dev test`
installs Debian's `chromium` when it runs as root; otherwise the tests are skipped with the reason
`./dev` gives (JITPASS_TEST_NO_CHROMIUM) — except in CI, where a missing browser fails them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.reports.build import build_report
from bot.reports.html import render_html
from tests.unit.test_reports_trail import NOW, SINCE, UNTIL, build_trail, policy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--remote-debugging-port=0")

NO_CHROMIUM = os.environ.get("JITPASS_TEST_NO_CHROMIUM") or (
    "" if Path(CHROMIUM).exists() else "headless Chromium is not installed (apt-get install -y chromium)")
pytestmark = pytest.mark.skipif(bool(NO_CHROMIUM) and not os.environ.get("CI"),
                                reason=f"Chromium unavailable: {NO_CHROMIUM}")


class DevTools:
    """One page session over the browser's DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.loaded = asyncio.Event()
        self.session: str | None = None
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self.replies:
                self.replies.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)
                if data["method"] == "Page.loadEventFired":
                    self.loaded.set()

    async def send(self, method: str, params: dict[str, Any] | None = None, *, page: bool = True) -> dict[str, Any]:
        message_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[message_id] = future
        body: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if page and self.session:
            body["sessionId"] = self.session
        await self.ws.send_str(json.dumps(body))
        reply = await asyncio.wait_for(future, 15)
        assert "error" not in reply, reply
        return dict(reply.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result["result"]["value"]


@asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[DevTools]:
    process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and len(port_file.read_text().splitlines()) >= 2:
                break
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://127.0.0.1:{port}{path}",
                                                                   max_msg_size=0) as ws:
            tools = DevTools(ws)
            target = await tools.send("Target.createTarget", {"url": "about:blank"}, page=False)
            attached = await tools.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                        page=False)
            tools.session = attached["sessionId"]
            try:
                yield tools
            finally:
                tools.reader.cancel()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def test_the_html_report_renders_offline_with_svg_charts_and_makes_no_request(tmp_path: Path) -> None:
    trail = await build_trail(tmp_path)
    try:
        report = await build_report(trail.source, policy(), NOW, SINCE, UNTIL)
    finally:
        await trail.store.close()
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    profile = tmp_path / "profile"
    profile.mkdir()

    async with chromium(profile) as browser:
        await browser.send("Network.enable")
        await browser.send("Page.enable")
        await browser.send("Page.navigate", {"url": page.as_uri()})
        await asyncio.wait_for(browser.loaded.wait(), 15)
        seen = await browser.evaluate("""JSON.stringify({
            title: document.title,
            h1: document.querySelector('h1').textContent,
            charts: [...document.querySelectorAll('svg')].map(s => s.id),
            bars: document.querySelectorAll('#chart-timeline rect').length,
            vaultBars: document.querySelectorAll('#chart-vaults rect').length,
            latencyBars: document.querySelectorAll('#chart-latency rect').length,
            chartWidth: document.querySelector('#chart-timeline').getBoundingClientRect().width,
            scripts: document.scripts.length,
            resources: performance.getEntriesByType('resource').length,
            text: document.body.innerText,
        })""")
        requests = [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]

    found = json.loads(seen)
    assert found["title"] == "jitpass access report 2026-03-02 – 2026-03-09"
    assert found["h1"] == "jitpass access report"
    assert found["charts"] == ["chart-timeline", "chart-vaults", "chart-latency"]
    assert found["bars"] == 7 + 2  # one bar per day of the period (zero on quiet days), plus the two legend keys
    assert found["vaultBars"] == 4 * 2 + 2 and found["latencyBars"] == 6
    assert found["chartWidth"] > 300
    assert found["scripts"] == 0 and found["resources"] == 0
    assert "R2" in found["text"] and "umbrella-vpn" in found["text"] and "intact: 47 event(s)" in found["text"]
    assert requests == [page.as_uri()]  # the file itself, and nothing else
