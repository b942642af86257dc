// Measures the HTML report's layout in headless Chromium (playwright-core, the copy pinned for the
// Playground tests in tests/support/playground) at the widths given, and saves a full-page screenshot
// of each. Run by tests/e2e/test_report_layout.py: `node report_layout.js FILE OUT_DIR WIDTH...`.
// It only measures; the test asserts. Prints one JSON object: {"<width>": {...}, ...}.
"use strict";

const path = require("path");
const { chromium } = require(require.resolve("playwright-core", { paths: [path.join(__dirname, "playground")] }));

const [file, outDir, ...widths] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

// In the page: what the eye gets. The size of SVG text is its font-size times the chart's scale on screen.
function measure() {
  const rect = (el) => {
    const r = el.getBoundingClientRect();
    return { x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height };
  };
  const texts = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest("title")) continue; // tooltips are not drawn
    const own = [...el.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    if (!own.length) continue;
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden") continue;
    let px = parseFloat(style.fontSize);
    if (el instanceof SVGElement) {
      const ctm = el.getScreenCTM();
      px *= ctm ? Math.hypot(ctm.a, ctm.b) : 1;
    }
    texts.push({ tag: el.tagName.toLowerCase(), text: own.map((n) => n.textContent.trim()).join(" ").slice(0, 40),
                 px: Math.round(px * 100) / 100 });
  }
  const overflowing = [...document.body.querySelectorAll("*")]
    .filter((el) => el.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5
                    && !el.closest(".scroll"))
    .map((el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : el.className ? "." + el.className : ""));
  return {
    innerWidth: window.innerWidth,
    clientWidth: document.documentElement.clientWidth,
    scrollWidth: document.documentElement.scrollWidth,
    scrollHeight: document.documentElement.scrollHeight,
    texts,
    overflowing,
    tiles: [...document.querySelectorAll(".cards .card")].map(rect),
    charts: Object.fromEntries([...document.querySelectorAll("svg")].map((s) => [s.id, rect(s)])),
    tables: [...document.querySelectorAll(".scroll")].map((s) => ({ client: s.clientWidth, scroll: s.scrollWidth })),
  };
}

(async () => {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  const found = {};
  try {
    for (const width of widths.map(Number)) {
      const page = await browser.newPage({ viewport: { width, height: 900 } });
      const requests = [];
      page.on("request", (r) => requests.push(r.url()));
      await page.goto("file://" + path.resolve(file), { waitUntil: "load", timeout: 15000 });
      const shot = path.join(outDir, `report-${width}.png`);
      await page.screenshot({ path: shot, fullPage: true });
      found[width] = { ...(await page.evaluate(measure)), requests, screenshot: shot };
      await page.close();
    }
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(found) + "\n");
})().catch((err) => {
  process.stderr.write(String(err && err.stack || err) + "\n");
  process.exit(1);
});
