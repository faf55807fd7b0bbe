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
