// The history behind the status page charts (issue 15): USDC per hour over 24 h and tokens per
// second over the last hour from finished jobs, spread over the time they streamed; the state
// file (history.json) reloaded after a restart, bounded, set aside when corrupt; failed writes
// counted and logged once; the agent's money counters by label for /metrics.

import assert from "node:assert/strict";
import { History, HOURS, MINUTES } from "../../src/books/history.ts";
import { setLevel } from "../../src/log.ts";
import { captureLogs } from "../harness/logs.ts";
import { withSession } from "../harness/stack.ts";

const HOUR = 3_600_000;
const MINUTE = 60_000;
/** 12:00:30 UTC: half a minute into the current minute. */
const NOW = Date.UTC(2026, 4, 10, 12, 0, 30);

const job = (finishedAt: number, outputTokens: number, durationMs = 1000, firstChunkMs = 0) => ({
  finishedAt,
  durationMs,
  firstChunkMs,
  outputTokens,
});

Deno.test("earnings land in the hour their job ended, in USDC, the last 24 hours only", () => {
  let now = NOW;
  const h = new History({ now: () => now });
  h.record(job(NOW, 0), 1_500_000);
  h.record(job(NOW - HOUR, 0), 250_000);
  h.record(job(NOW - HOUR - 1, 0), 250_000);
  h.record(job(NOW - 23 * HOUR, 0), 1);
  h.record(job(NOW - 24 * HOUR, 0), 999); // already outside the window
  const s = h.series(NOW);
  assert.equal(s.earningsPerHour.length, HOURS);
  assert.equal(s.earningsPerHour.at(-1)!.t, Date.UTC(2026, 4, 10, 12));
  assert.equal(s.earningsPerHour.at(-1)!.v, 1.5);
  assert.equal(s.earningsPerHour.at(-2)!.v, 0.5);
  assert.equal(s.earningsPerHour[0]!.v, 0.000001);
  assert.equal(s.earningsPerHour.reduce((n, p) => n + p.v, 0), 2.000001);
  // An hour later the oldest hour has left the window.
  now = NOW + HOUR;
  assert.equal(h.series().earningsPerHour.reduce((n, p) => n + p.v, 0), 2);
});

Deno.test("tokens are spread over the minutes their job streamed; the current minute over its seconds", () => {
  const h = new History({ now: () => NOW });
  // 120 tokens streamed from 11:59:30 to 12:00:30 (first chunk after 1 s): 60 in each minute.
  h.record(job(NOW, 120, 61_000, 1_000), 0);
  // 600 tokens in 2 s, all in the previous minute.
  h.record(job(NOW - 40_000, 600, 2_000, 0), 0);
  const s = h.series(NOW);
  assert.equal(s.tokensPerSecond.length, MINUTES);
  assert.equal(s.tokensPerSecond.at(-1)!.t, Date.UTC(2026, 4, 10, 12, 0));
  assert.equal(s.tokensPerSecond.at(-1)!.v, 60 / 30); // 30 s of the current minute so far
  assert.equal(s.tokensPerSecond.at(-2)!.v, (60 + 600) / 60);
  assert.equal(s.tokensPerSecond.at(-3)!.v, 0);
  // An hour on, every bucket is old.
  assert.ok(h.series(NOW + HOUR).tokensPerSecond.every((p) => p.v === 0));
});

Deno.test("the history survives a restart through history.json, which stays small", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-history-" });
  try {
    const path = `${dir}/history.json`;
    const a = new History({ path, now: () => NOW });
    // Three days of a job a minute: the file keeps 24 hours and 60 minutes at most.
    for (let t = NOW - 3 * 24 * HOUR; t <= NOW; t += MINUTE) a.record(job(t, 10), 100);
    await a.flush();
    const before = a.series(NOW);
    const b = new History({ path, now: () => NOW });
    assert.deepEqual(b.series(NOW), before);
    assert.equal(before.earningsPerHour.at(-2)!.v, 0.006); // 60 jobs × 100 µUSDC
    const state = JSON.parse(await Deno.readTextFile(path));
    assert.ok(state.hours.length <= HOURS && state.minutes.length <= MINUTES, "bounded");
    assert.ok((await Deno.stat(path)).size < 4096);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["history.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a job that earned nothing and streamed nothing leaves the file alone", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-history-" });
  try {
    const path = `${dir}/history.json`;
    const h = new History({ path, now: () => NOW });
    h.record(job(NOW, 0), 0);
    await h.flush();
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
    h.record(job(NOW, 1), 0);
    await h.flush();
    assert.deepEqual(JSON.parse(await Deno.readTextFile(path)).minutes, [[
      Math.floor(NOW / MINUTE),
      1,
    ]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a corrupt history file is set aside with a warning and the history starts empty", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-history-" });
  try {
    const path = `${dir}/history.json`;
    await Deno.writeTextFile(path, '{"version":1,"hours":"nope"}');
    await captureLogs(async (lines) => {
      const h = new History({ path, now: () => NOW });
      assert.ok(h.series(NOW).earningsPerHour.every((p) => p.v === 0));
      assert.ok(lines.some((l) => l.includes("history state corrupt")), lines.join("\n"));
      await Deno.stat(`${path}.corrupt`);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("failed writes are counted, logged once, and retried until one succeeds", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-history-" });
  try {
    const path = `${dir}/missing/history.json`;
    const h = new History({ path, now: () => NOW });
    await captureLogs(async (lines) => {
      h.record(job(NOW, 5), 10);
      await h.flush();
      await h.flush();
      assert.equal(h.writeFailures, 2);
      assert.equal(lines.filter((l) => l.includes("history state write failed")).length, 1);
      await Deno.mkdir(`${dir}/missing`);
      await h.flush();
      assert.equal(h.writeFailures, 2);
      assert.equal(JSON.parse(await Deno.readTextFile(path)).hours.length, 1);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the agent keeps money by label and history for real jobs, and saves history.json", async () => {
  setLevel("error");
  await withSession({}, async (stack, s) => {
    const model = "meta-llama/Llama-3.3-70B-Instruct";
    for (let i = 0; i < 3; i++) {
      assert.equal((await s.collect(s.sendJob({ model_id: model }))).terminal.type, "job_done");
    }
    assert.equal((await s.collect(s.sendJob({ model_id: "nope" }))).terminal.type, "job_error");
    // 11 + 5 tokens at 0.5 / 0.75 USDC per million, three times.
    const own = stack.agent.money.byLabel.get(model);
    assert.equal(own?.earnedMicroUsdc, 27.75);
    const other = stack.agent.money.byLabel.get("(unadvertised)");
    assert.equal(other?.earnedMicroUsdc, 0);
    assert.equal(other?.missedMicroUsdc.model_not_loaded, 9.25);
    const series = stack.agent.history.series();
    assert.equal(series.earningsPerHour.at(-1)!.v + series.earningsPerHour.at(-2)!.v, 0.00002775);
    assert.ok(series.tokensPerSecond.some((p) => p.v > 0));
    await stack.agent.history.flush();
    const saved = JSON.parse(await Deno.readTextFile(`${stack.dir}/history.json`));
    assert.equal(saved.version, 1);
    assert.equal(saved.minutes.reduce((n: number, p: number[]) => n + p[1]!, 0), 15);
  });
});
