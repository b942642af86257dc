"""The HTML report laid out by real headless Chromium (playwright-core, driven by node) at 1280 and 800 px.

tests/support/report_layout.js opens the file at each width, saves a full-page screenshot to the test's tmp
dir and measures what a reader sees: the page's scroll width, every drawn text's size on screen (SVG text
times its chart's scale), the tiles' and charts' boxes. This test asserts on those figures and compares the
two layouts. The report is the fixed trail plus pending requests, failed deliveries and hostile long names,
so every section has rows. Needs node, playwright-core (`./dev test` installs it with the Playground's
node packages) and Chromium; without them the tests are skipped with the reason (in CI, `CI=true`, they fail).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.domain.report_data import AccessRow
from bot.reports.build import build_report
from bot.reports.html import render_html
from tests.e2e.test_report_html import CHROMIUM, NO_CHROMIUM
from tests.unit.test_reports_trail import (
    NOW,
    SINCE,
    UNTIL,
    add_delivery_failures,
    add_pending,
    build_trail,
    policy,
)

SUPPORT = Path(__file__).resolve().parents[1] / "support"
SCRIPT = SUPPORT / "report_layout.js"
NODE = shutil.which("node")
MISSING = NO_CHROMIUM or ("node is not installed" if NODE is None else "") or (
    "" if (SUPPORT / "playground" / "node_modules" / "playwright-core").is_dir()
    else "playwright-core is not installed (./dev test runs npm ci in tests/support/playground)")
pytestmark = pytest.mark.skipif(bool(MISSING) and not os.environ.get("CI"), reason=f"browser unavailable: {MISSING}")

WIDE, NARROW = 1280, 800
TILES = 11
LONG_VAULT = "customer-with-a-rather-long-vault-name-for-the-chart"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    import asyncio

    directory = tmp_path_factory.mktemp("report-layout")

    async def render() -> str:
        trail = await build_trail(directory)
        try:
            await add_pending(trail)
            await add_delivery_failures(trail)
            report = await build_report(trail.source, policy(), NOW, SINCE, UNTIL)
        finally:
            await trail.store.close()
        # What people type is unbounded: a vault name longer than any label, a reason without a space.
        vaults = (AccessRow("vault", LONG_VAULT, requests=1, reveals=1), *report.data.by_vault)
        pending = (replace(report.data.pending[0], reason="x" * 300, item="an-item-name-" * 8),
                   *report.data.pending[1:])
        return render_html(replace(report, data=replace(report.data, by_vault=vaults, pending=pending)))

    page = directory / "report.html"
    page.write_text(asyncio.run(render()), encoding="utf-8")
    done = subprocess.run([str(NODE), str(SCRIPT), str(page), str(directory), str(WIDE), str(NARROW)],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "CHROMIUM": CHROMIUM})
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    return {int(width): measured for width, measured in found.items()}


@pytest.mark.parametrize("width", [WIDE, NARROW])
def test_nothing_overflows_the_window_and_no_text_is_under_11px(layout: dict[int, dict[str, Any]],
                                                                 width: int) -> None:
    page = layout[width]
    assert page["innerWidth"] == width
    assert page["scrollWidth"] <= page["innerWidth"], page["overflowing"]
    assert page["overflowing"] == []  # every element ends inside the window (wide tables scroll in their box)
    assert len(page["texts"]) > 400  # every cell, label and heading was measured
    small = [t for t in page["texts"] if t["px"] < 11]
    assert small == [], small[:10]
    chart_text = [t for t in page["texts"] if t["tag"] == "text"]
    assert chart_text and min(t["px"] for t in chart_text) >= 11  # SVG labels, at their size on screen
    assert page["requests"] == [Path(page["screenshot"]).parent.joinpath("report.html").as_uri()]


def test_at_1280_the_tiles_are_one_row_and_the_small_charts_side_by_side(layout: dict[int, dict[str, Any]]) -> None:
    page = layout[WIDE]
    tiles = page["tiles"]
    assert len(tiles) == TILES
    assert len({round(t["y"]) for t in tiles}) == 1  # one row
    assert all(later["x"] > earlier["x"] for earlier, later in itertools.pairwise(tiles))
    charts = page["charts"]
    vaults, latency = charts["chart-vaults"], charts["chart-latency"]
    assert round(vaults["y"]) == round(latency["y"]) and latency["x"] > vaults["x"] + vaults["width"]


def test_at_800_the_same_report_reflows_instead_of_shrinking(layout: dict[int, dict[str, Any]]) -> None:
    wide, narrow = layout[WIDE], layout[NARROW]
    # Tiles wrap into rows of equal width, each row inside the window.
    rows = sorted({round(t["y"]) for t in narrow["tiles"]})
    assert len(narrow["tiles"]) == TILES and len(rows) == 2
    assert max(t["x"] + t["width"] for t in narrow["tiles"]) <= NARROW
    # The small charts stack, at the very size they have at 1280 (text size does not depend on the screen).
    vaults, latency = narrow["charts"]["chart-vaults"], narrow["charts"]["chart-latency"]
    assert latency["y"] >= vaults["y"] + vaults["height"] and round(latency["x"]) == round(vaults["x"])
    for chart in ("chart-timeline", "chart-vaults", "chart-latency"):
        assert round(narrow["charts"][chart]["width"]) == round(wide["charts"][chart]["width"]), chart
    assert wide["charts"]["chart-vaults"]["width"] == 520
    # So the page gets longer, not wider; both screenshots are whole pages at their window's width.
    assert narrow["scrollHeight"] > wide["scrollHeight"]
    for width, page in layout.items():
        shot = Path(page["screenshot"])
        assert png_size(shot) == (width, page["scrollHeight"]), shot
    assert png_size(Path(narrow["screenshot"]))[1] > png_size(Path(wide["screenshot"]))[1]


def test_the_chart_labels_are_the_same_size_at_both_widths(layout: dict[int, dict[str, Any]]) -> None:
    def chart_sizes(width: int) -> list[float]:
        return [t["px"] for t in layout[width]["texts"] if t["tag"] == "text"]

    assert chart_sizes(WIDE) == chart_sizes(NARROW)
    assert {t["text"] for t in layout[WIDE]["texts"] if t["tag"] == "text"} >= {"acme", "customer-with-a-ra…"}
