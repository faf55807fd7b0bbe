// Money counters (issue 8): earnings at advertised prices, missed revenue per model and reason
// with its size estimate, UTC-day periods, the state file (atomic, reloaded, set aside when
// corrupt, intact after kill -9), the agent's counters over real sockets, and their display in
// /status, `usepod-agent status` and the status page.

import { UNADVERTISED } from "../../src/jobs/stats.ts";
import assert from "node:assert/strict";
import { Earnings, OTHER_MODELS } from "../../src/books/earnings.ts";
import type { FinishedJob } from "../../src/jobs/job.ts";
import { setLevel, setSink } from "../../src/log.ts";
import { chromium } from "playwright-core";
import { startStatusServer } from "../../src/status/server.ts";
import { agentSource, type StatusDoc } from "../../src/status/snapshot.ts";
import { summary } from "../../src/cli/status.ts";
import { type Stack, startStack } from "../harness/stack.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";
const PRICE = { inputPer1m: 300_000, outputPer1m: 450_000 };
const NOW = Date.UTC(2026, 4, 10, 12, 0, 0);
const DAY = 86_400_000;

function job(over: Partial<FinishedJob> = {}): FinishedJob {
  return {
    jobId: crypto.randomUUID(),
    model: MODEL,
    backend: "vllm",
    format: "openai",
    outcome: "job_done",
    message: undefined,
    inputTokens: 100,
    outputTokens: 200,
    usageReported: true,
    firstChunkMs: 5,
    durationMs: 50,
    bytes: 100,
    receivedAt: NOW - 50,
    finishedAt: NOW,
    admitted: true,
    ...over,
  };
}

function refused(code: string, over: Partial<FinishedJob> = {}): FinishedJob {
  return job({ outcome: code as FinishedJob["outcome"], inputTokens: 0, outputTokens: 0, ...over });
}

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "usepod-earnings-" });
}

Deno.test("a finished job earns its tokens at the advertised price, in every period", () => {
  const e = new Earnings({ now: () => NOW });
  e.record(job(), PRICE); // 100 × 0.3 + 200 × 0.45 = 120 µUSDC
  const s = e.summary(NOW);
  for (const period of [s.today, s.last7d, s.sinceStart, s.allTime]) {
    assert.equal(period.jobs, 1);
    assert.equal(period.inputTokens, 100);
    assert.equal(period.outputTokens, 200);
    assert.equal(period.earnedMicroUsdc, 120);
    assert.equal(period.missedJobs, 0);
    assert.equal(period.topMissedReason, null);
  }
  assert.equal(s.byModel[MODEL]!.today.earnedMicroUsdc, 120);
  assert.equal(s.at, new Date(NOW).toISOString());
});

Deno.test("a refused job misses the median size of the model's recent jobs, per reason", () => {
  const e = new Earnings({ now: () => NOW });
  for (const [i, o] of [[100, 10], [300, 30], [200, 20]]) {
    e.record(job({ inputTokens: i!, outputTokens: o! }), PRICE);
  }
  // median 200 in, 20 out: 200 × 0.3 + 20 × 0.45 = 69 µUSDC each
  e.record(refused("out_of_capacity"), PRICE);
  e.record(refused("out_of_capacity"), PRICE);
  e.record(refused("backend_timeout"), PRICE);
  const t = e.summary(NOW).today;
  assert.equal(t.missedJobs, 3);
  assert.equal(t.missedMicroUsdc, 207);
  assert.deepEqual(t.missedByReason.out_of_capacity, { jobs: 2, microUsdc: 138 });
  assert.deepEqual(t.missedByReason.backend_timeout, { jobs: 1, microUsdc: 69 });
  assert.equal(t.topMissedReason, "out_of_capacity");
  assert.equal(t.jobs, 3);
});

Deno.test("a failed job is never estimated below what it had already streamed", () => {
  const e = new Earnings({ now: () => NOW });
  e.record(job({ inputTokens: 10, outputTokens: 10 }), PRICE);
  assert.deepEqual(e.estimate(MODEL, { inputTokens: 0, outputTokens: 500 }), {
    inputTokens: 10,
    outputTokens: 500,
  });
});

Deno.test("an unknown model's refusal is sized from all models; with no history it is counted at 0", () => {
  const e = new Earnings({ now: () => NOW });
  e.record(refused("model_not_loaded", { model: "first/unknown" }), {
    inputPer1m: 1e6,
    outputPer1m: 1e6,
  });
  let t = e.summary(NOW).today;
  assert.equal(t.missedJobs, 1);
  assert.equal(t.missedMicroUsdc, 0);
  assert.equal(t.topMissedReason, "model_not_loaded");
  e.record(job({ inputTokens: 40, outputTokens: 60 }), PRICE);
  e.record(refused("model_not_loaded", { model: "other/unknown" }), {
    inputPer1m: 1e6,
    outputPer1m: 1e6,
  });
  t = e.summary(NOW).today;
  assert.equal(t.missedMicroUsdc, 100);
  assert.equal(e.summary(NOW).byModel["other/unknown"]!.today.missedMicroUsdc, 100);
});

Deno.test("error codes map to reasons, everything else to other; cancels and lost links count nowhere", () => {
  const e = new Earnings({ now: () => NOW });
  e.record(job(), PRICE);
  for (const code of ["backend_unreachable", "internal", "auth_rejected_by_backend"]) {
    e.record(refused(code), PRICE);
  }
  e.record(job({ outcome: "cancelled" }), PRICE);
  e.record(job({ outcome: "disconnected" }), PRICE);
  const t = e.summary(NOW).today;
  assert.equal(t.jobs, 1);
  assert.equal(t.missedJobs, 3);
  assert.equal(t.missedByReason.backend_unreachable.jobs, 1);
  assert.equal(t.missedByReason.other.jobs, 2);
  assert.equal(t.topMissedReason, "other");
});

Deno.test("out_of_capacity from the backend's own capacity is missed as backend_busy", () => {
  const e = new Earnings({ now: () => NOW });
  e.record(job(), PRICE);
  e.record(refused("out_of_capacity"), PRICE); // the agent's own limit, a drain or a pause
  e.record(refused("out_of_capacity", { backendBusy: true }), PRICE); // its slots were full
  e.record(refused("out_of_capacity", { backendBusy: true, admitted: true }), PRICE); // a 503
  e.record(refused("internal", { backendBusy: true }), PRICE); // only out_of_capacity is busy
  const t = e.summary(NOW).today;
  assert.deepEqual(
    [t.missedByReason.out_of_capacity.jobs, t.missedByReason.backend_busy.jobs],
    [1, 2],
  );
  assert.equal(t.missedByReason.other.jobs, 1);
  assert.equal(t.topMissedReason, "backend_busy");
  assert.ok(t.missedByReason.backend_busy.microUsdc > 0, "priced like any missed job");
});

Deno.test("today is the UTC day, last7d the 7 UTC days ending today, older days drop out", () => {
  const e = new Earnings({ now: () => NOW });
  e.record(job({ finishedAt: NOW }), PRICE);
  e.record(job({ finishedAt: NOW - DAY }), PRICE);
  e.record(job({ finishedAt: NOW - 6 * DAY }), PRICE);
  e.record(job({ finishedAt: NOW - 7 * DAY }), PRICE);
  const s = e.summary(NOW);
  assert.equal(s.today.jobs, 1);
  assert.equal(s.last7d.jobs, 3);
  assert.equal(s.sinceStart.jobs, 4);
  assert.equal(s.allTime.jobs, 4);
  // Just after midnight UTC the previous day is no longer "today".
  const tomorrow = Date.UTC(2026, 4, 11, 0, 0, 1);
  assert.equal(e.summary(tomorrow).today.jobs, 0);
  assert.equal(e.summary(tomorrow).last7d.jobs, 2);
});

Deno.test("the counters survive a restart through the state file; sinceStart starts over", async () => {
  const dir = await tempDir();
  try {
    const path = `${dir}/earnings.json`;
    const first = new Earnings({ path, now: () => NOW });
    first.record(job(), PRICE);
    first.record(refused("out_of_capacity"), PRICE);
    await first.flush();
    const mode = (await Deno.stat(path)).mode;
    if (mode !== null) assert.equal(mode & 0o777, 0o600);
    assert.deepEqual([...Deno.readDirSync(dir)].map((d) => d.name), ["earnings.json"]);
    const second = new Earnings({ path, now: () => NOW + 1000 });
    const s = second.summary(NOW + 1000);
    assert.equal(s.today.jobs, 1);
    assert.equal(s.today.earnedMicroUsdc, 120);
    assert.equal(s.allTime.missedMicroUsdc, 120); // sized from the persisted history
    assert.equal(s.sinceStart.jobs, 0);
    assert.equal(s.since, new Date(NOW).toISOString());
    second.record(refused("out_of_capacity"), PRICE);
    assert.equal(second.summary(NOW + 1000).today.missedMicroUsdc, 240);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a corrupt state file is set aside with a warning and counting starts from zero", async () => {
  const dir = await tempDir();
  const logs: string[] = [];
  const previous = setSink((l) => logs.push(l));
  setLevel("warn");
  try {
    const path = `${dir}/earnings.json`;
    await Deno.writeTextFile(path, '{"version":1,"days":{');
    const e = new Earnings({ path, now: () => NOW });
    assert.equal(e.summary(NOW).allTime.jobs, 0);
    assert.ok(logs.some((l) => l.includes("earnings state corrupt")));
    assert.equal(await Deno.readTextFile(`${path}.corrupt`), '{"version":1,"days":{');
  } finally {
    setSink(previous);
    setLevel("info");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("model ids beyond the cap are counted together", () => {
  const e = new Earnings({ now: () => NOW });
  for (let i = 0; i < 300; i++) {
    e.record(refused("model_not_loaded", { model: `junk/${i}` }), PRICE);
  }
  const s = e.summary(NOW);
  assert.equal(Object.keys(s.byModel).length, 257);
  assert.equal(s.byModel[OTHER_MODELS]!.today.missedJobs, 44);
});

Deno.test("run writes changed counters on its own timer", async () => {
  const dir = await tempDir();
  const watcher = Deno.watchFs(dir);
  const stop = new AbortController();
  try {
    const path = `${dir}/earnings.json`;
    const e = new Earnings({ path, flushMs: 10 });
    const running = e.run(stop.signal);
    e.record(job({ finishedAt: Date.now() }), PRICE);
    for await (const ev of watcher) {
      if (ev.paths.some((p) => p.endsWith("/earnings.json"))) break;
    }
    stop.abort();
    await running;
    await e.flush();
    assert.equal(new Earnings({ path }).summary().allTime.jobs, 1);
  } finally {
    watcher.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("after kill -9 the state file is whole and holds every flush that completed", async () => {
  const dir = await tempDir();
  try {
    const path = `${dir}/earnings.json`;
    const script = `${dir}/child.ts`;
    const earningsUrl = new URL("../../src/books/earnings.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { Earnings } from "${earningsUrl}";
const e = new Earnings({ path: ${JSON.stringify(path)}, flushMs: 5 });
void e.run(new AbortController().signal);
const price = { inputPer1m: 300000, outputPer1m: 450000 };
for (let n = 1; ; n++) {
  e.record({ jobId: "j", model: "m" + (n % 7), backend: "vllm", format: "openai", outcome: "job_done",
    message: undefined, inputTokens: 1, outputTokens: 1, usageReported: true, firstChunkMs: 1,
    durationMs: 1, bytes: 1, receivedAt: Date.now(), finishedAt: Date.now(), admitted: true }, price);
  if (n % 10 === 0) { await e.flush(); console.log("flushed " + n); }
}
`,
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    let flushed = 0;
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).values();
    let buffer = "";
    for await (const chunk of lines) {
      buffer += chunk;
      for (const m of buffer.matchAll(/flushed (\d+)\n/g)) flushed = Number(m[1]);
      buffer = buffer.slice(buffer.lastIndexOf("\n") + 1);
      if (flushed >= 300) break;
    }
    child.kill("SIGKILL");
    await lines.return?.();
    await child.status;
    const state = JSON.parse(await Deno.readTextFile(path)); // whole JSON, never a torn write
    assert.equal(state.version, 1);
    const jobs = new Earnings({ path }).summary().allTime.jobs;
    assert.ok(jobs >= flushed, `${jobs} jobs on disk, ${flushed} reported flushed`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the agent counts earnings and missed revenue of real jobs and saves them at shutdown", async () => {
  const stack = await startStack({
    backends: [{ kind: "vllm", scripts: { [MODEL]: { deltas: 3, inputTokens: 17 } } }],
    toml: `[pricing.models]\n"${MODEL}" = { input_per_1m = 300_000, output_per_1m = 450_000 }\n`,
  });
  try {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    const done = await s.collect(s.sendJob({ model_id: MODEL }));
    const tokens = done.terminal.tokens as { input: number; output: number };
    await s.collect(s.sendJob({ model_id: "not/served" }));
    const sum = stack.agent.earnings.summary();
    assert.equal(sum.today.jobs, 1);
    assert.equal(
      sum.today.earnedMicroUsdc,
      (tokens.input * 300_000 + tokens.output * 450_000) / 1e6,
    );
    assert.equal(sum.today.missedJobs, 1);
    assert.equal(sum.today.topMissedReason, "model_not_loaded");
    // Sized like the served job, priced at the defaults (500,000 / 750,000).
    assert.equal(
      sum.today.missedMicroUsdc,
      (tokens.input * 500_000 + tokens.output * 750_000) / 1e6,
    );
    await stack.agent.shutdown();
    const saved = new Earnings({ path: `${stack.dir}/earnings.json` }).summary();
    assert.equal(saved.allTime.jobs, 1);
    assert.equal(saved.allTime.missedJobs, 1);
  } finally {
    await stack.stop();
  }
});

/** A stack with a status server, one job done and one refused, each period holding both. */
async function withMoney(fn: (stack: Stack, base: string) => Promise<void>): Promise<void> {
  const stack = await startStack({
    backends: [{ kind: "vllm", scripts: { [MODEL]: { deltas: 3, inputTokens: 17 } } }],
  });
  const server = startStatusServer(agentSource(stack.agent), { prometheusAddr: "127.0.0.1:0" });
  try {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    await s.collect(s.sendJob({ model_id: MODEL }));
    await s.collect(s.sendJob({ model_id: "not/served" }));
    await fn(stack, `http://${server.addr}`);
  } finally {
    await server.shutdown();
    await stack.stop();
  }
}

Deno.test("/status and `usepod-agent status` show money for today, 7 days and since start", async () => {
  await withMoney(async (stack, base) => {
    const doc = await (await fetch(`${base}/status`)).json() as StatusDoc;
    const e = doc.earnings!;
    const expected = stack.agent.earnings.summary();
    for (
      const [p, t] of [[e.today, expected.today], [e.last_7d, expected.last7d], [
        e.since_start,
        expected.sinceStart,
      ]] as const
    ) {
      assert.equal(p.jobs, 1);
      assert.equal(p.input_tokens, 17);
      assert.equal(p.earned_micro_usdc, t.earnedMicroUsdc);
      assert.equal(p.earned_usdc, (Math.round(t.earnedMicroUsdc) / 1e6).toFixed(6));
      assert.equal(p.missed_jobs, 1);
      assert.equal(p.missed_micro_usdc, t.missedMicroUsdc);
      assert.equal(p.top_missed_reason, "model_not_loaded");
      assert.deepEqual(p.missed_by_reason.model_not_loaded, {
        jobs: 1,
        micro_usdc: t.missedMicroUsdc,
      });
    }
    // A model nobody advertised is counted under the shared label, not under its own id.
    assert.deepEqual(e.by_model.map((m) => m.model).sort(), [UNADVERTISED, MODEL]);
    const lines = summary(doc, Date.now());
    const at = lines.findIndex((l) => l.startsWith("money:"));
    assert.match(lines[at]!, /^money:\s+today \(UTC\)\s+7 days\s+since start$/);
    assert.match(lines[at + 1]!, /^ {2}jobs\s+1\s+1\s+1$/);
    const earned = e.today.earned_usdc;
    assert.equal(lines[at + 3], `  earned USDC ${`  ${earned.padStart(19)}`.repeat(3)}`);
    assert.match(
      lines[at + 6]!,
      /^ {2}top reason\s+model_not_loaded\s+model_not_loaded\s+model_not_loaded$/,
    );
  });
});

Deno.test("the status page draws the money table from /status without an error", async () => {
  await withMoney(async (_stack, base) => {
    const profile = await Deno.makeTempDir({ prefix: "usepod-chromium-" });
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium",
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
    });
    const problems: string[] = [];
    try {
      const page = context.pages()[0] ?? await context.newPage();
      page.on("pageerror", (err) => problems.push(err.message));
      page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
      await page.goto(`${base}/`);
      const row = page.locator("#money tr").first();
      await row.locator("td").nth(6).filter({ hasText: "model_not_loaded" }).waitFor({
        timeout: 10_000,
      });
      const cells = await row.locator("td").allTextContents();
      assert.equal(cells[0], "today (UTC)");
      assert.equal(cells[1], "1");
      assert.equal(cells[5], "1");
      assert.equal(await page.locator("#money tr").count(), 3);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
      await Deno.remove(profile, { recursive: true });
    }
  });
});
