// The status page in a real headless browser (Debian's chromium driven by playwright-core): it
// renders the agent's state, shows a job in flight from the test coordinator, refreshes itself
// until that job is in the recent list, and logs no console or page error (CSP included).

import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { startStatusServer } from "../../src/status/server.ts";
import { agentSource } from "../../src/status/snapshot.ts";
import { startStack } from "../harness/stack.ts";

const CHROMIUM = "/usr/bin/chromium";
const MODEL = "meta-llama/Llama-3.3-70B-Instruct";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

async function hasChromium(): Promise<boolean> {
  try {
    return (await Deno.stat(CHROMIUM)).isFile;
  } catch {
    return false;
  }
}

Deno.test("the status page shows a job in flight, refreshes itself, and logs no error", async () => {
  assert.ok(
    await hasChromium(),
    `${CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)`,
  );
  const stack = await startStack({
    backends: [{ kind: "vllm", defaultScript: { deltas: 400, delayMs: 25 } }],
    coordinator: {},
  });
  const server = startStatusServer(agentSource(stack.agent), { prometheusAddr: "127.0.0.1:0" });
  const profile = await Deno.makeTempDir({ prefix: "usepod-chromium-" });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    args: ARGS,
  });
  const problems: string[] = [];
  try {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    const job = s.sendJob({ model_id: MODEL, deadline_ms: 60_000 });
    await s.waitFor((f) => f.type === "job_chunk" && f.job_id === job);

    const page = context.pages()[0] ?? await context.newPage();
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on("pageerror", (err) => problems.push(`pageerror: ${err.message}`));
    page.on("requestfailed", (r) => problems.push(`requestfailed: ${r.url()}`));
    let statusFetches = 0;
    page.on("response", (r) => {
      if (new URL(r.url()).pathname === "/status") statusFetches++;
    });

    const res = await page.goto(`http://${server.addr}/`);
    assert.equal(res?.status(), 200);
    const row = page.locator(`#jobs tr[data-job-id="${job}"]`);
    await row.waitFor({ timeout: 10_000 });
    const cells = await row.locator("td").allTextContents();
    assert.equal(cells[0], job);
    assert.equal(cells[1], MODEL);
    assert.equal(cells[2], "vllm");
    assert.equal(await page.locator("#state .badge").textContent(), "authenticated");
    assert.equal(await page.locator("#title").textContent(), "usepod-agent 0.4.0");
    assert.equal(await page.locator("#in-flight").textContent(), "1 / 8");
    const backend = await page.locator("#backends tr td").allTextContents();
    assert.equal(backend[0], "vllm");
    assert.equal(backend[2], "up");
    const model = await page.locator("#models tr td").allTextContents();
    assert.deepEqual(model.slice(0, 4), [MODEL, "vllm", "0.5000", "0.7500"]);

    // The job ends; the page moves it to the recent jobs on its own (it polls every 2 s).
    s.cancel(job);
    await page.locator(`#recent tr[data-job-id="${job}"]`).waitFor({ timeout: 10_000 });
    await page.locator("#jobs td.dim").waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#jobs td").textContent(), "no job in flight");
    assert.ok(statusFetches >= 2, `the page fetched /status ${statusFetches} time(s)`);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
    await server.shutdown();
    await stack.stop();
    await Deno.remove(profile, { recursive: true });
  }
});

/** Where browser tests keep their screenshots (gitignored), made on demand. */
const ARTIFACTS = new URL("../../test-artifacts/", import.meta.url).pathname;

/** Counts of a chart's data points in HTML, and how many are above 0. */
function points(html: string, id: string, tag: string): { all: number; positive: number } {
  const svg = new RegExp(`<svg id="${id}"[^]*?</svg>`).exec(html)?.[0] ?? "";
  const values = [...svg.matchAll(new RegExp(`<${tag} [^>]*data-v="([^"]+)"`, "g"))].map((m) =>
    Number(m[1])
  );
  return { all: values.length, positive: values.filter((v) => v > 0).length };
}

Deno.test("the charts of earnings per hour and tokens per second are drawn by the server and render in Chromium", async () => {
  assert.ok(
    await hasChromium(),
    `${CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)`,
  );
  const stack = await startStack({
    backends: [{ kind: "vllm", defaultScript: { deltas: 40, delayMs: 5 } }],
  });
  const server = startStatusServer(agentSource(stack.agent), { prometheusAddr: "127.0.0.1:0" });
  const profile = await Deno.makeTempDir({ prefix: "usepod-chromium-" });
  let context: Awaited<ReturnType<typeof chromium.launchPersistentContext>> | undefined;
  const problems: string[] = [];
  try {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    for (let i = 0; i < 3; i++) {
      const r = await s.collect(s.sendJob({ model_id: MODEL }));
      assert.equal(r.terminal.type, "job_done");
    }

    // Without JavaScript: the HTML itself carries both charts with their data points.
    const html = await (await fetch(`http://${server.addr}/`)).text();
    assert.deepEqual(points(html, "chart-earnings", "rect"), { all: 24, positive: 1 });
    const tokens = points(html, "chart-tokens", "circle");
    assert.equal(tokens.all, 60);
    assert.ok(tokens.positive >= 1, `${tokens.positive} minutes with tokens`);
    // The fragment the page refreshes them from.
    const fragment = await (await fetch(`http://${server.addr}/charts`)).text();
    assert.match(fragment, /^<div id="charts" class="charts">/);
    assert.equal(points(fragment, "chart-earnings", "rect").positive, 1);

    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      args: ARGS,
      viewport: { width: 1280, height: 900 },
    });
    const page = context.pages()[0] ?? await context.newPage();
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on("pageerror", (err) => problems.push(`pageerror: ${err.message}`));
    page.on("requestfailed", (r) => problems.push(`requestfailed: ${r.url()}`));
    const res = await page.goto(`http://${server.addr}/`);
    assert.equal(res?.status(), 200);
    await page.locator("#state .badge").waitFor({ timeout: 10_000 });

    const bars = page.locator("#chart-earnings rect.bar");
    assert.equal(await bars.count(), 24);
    // Run in the page (DOM types, which Deno's do not include, described inline).
    type Svg = { getBBox(): { height: number } };
    type Win = { getComputedStyle(e: unknown): { fill: string } };
    const heights = await bars.evaluateAll((els) =>
      els.map((e) => (e as unknown as Svg).getBBox().height)
    );
    assert.equal(heights.filter((h) => h > 0).length, 1, `bar heights ${heights}`);
    assert.equal(await page.locator("#chart-tokens circle.dot").count(), 60);
    const line = await page.locator("#chart-tokens polyline.line").getAttribute("points");
    assert.equal(line?.trim().split(" ").length, 60);
    for (const id of ["#chart-earnings", "#chart-tokens"]) {
      const box = await page.locator(id).boundingBox();
      assert.ok(
        box && box.width > 200 && box.height > 100,
        `${id} is drawn: ${JSON.stringify(box)}`,
      );
    }
    // The bar is painted in the page's colour (the inline style passed the CSP).
    const fill = await bars.first().evaluate((e) =>
      (globalThis as unknown as Win).getComputedStyle(e).fill
    );
    assert.equal(fill, "rgb(26, 127, 55)");

    // One more job; the page's refresh (every 15 s, called here at once) redraws the charts.
    type Doc = {
      querySelectorAll(s: string): ArrayLike<{ getAttribute(a: string): string | null }>;
    };
    const total = () =>
      page.evaluate(() => {
        const bars = (globalThis as unknown as { document: Doc }).document
          .querySelectorAll("#chart-earnings rect.bar");
        return Array.from(bars).reduce((n, b) => n + Number(b.getAttribute("data-v")), 0);
      });
    const before = await total();
    assert.equal((await s.collect(s.sendJob({ model_id: MODEL }))).terminal.type, "job_done");
    await page.evaluate(() => (globalThis as unknown as { refreshCharts(): void }).refreshCharts());
    await page.waitForFunction(
      (v) => {
        const bars = (globalThis as unknown as { document: Doc }).document
          .querySelectorAll("#chart-earnings rect.bar");
        return Array.from(bars).reduce((n, b) => n + Number(b.getAttribute("data-v")), 0) > v;
      },
      before,
      { timeout: 10_000 },
    );
    assert.ok(await total() > before);
    assert.equal(await page.locator("#chart-earnings rect.bar").count(), 24);

    await Deno.mkdir(ARTIFACTS, { recursive: true });
    const shot = `${ARTIFACTS}status-page-charts.png`;
    await page.locator("#charts").scrollIntoViewIfNeeded();
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok((await Deno.stat(shot)).size > 10_000);
    console.log(`status page screenshot: ${shot}`);
    assert.deepEqual(problems, []);
  } finally {
    await context?.close();
    await server.shutdown();
    await stack.stop();
    await Deno.remove(profile, { recursive: true });
  }
});
