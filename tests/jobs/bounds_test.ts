// Bounded state under a hostile coordinator or backend (issue 14): jobs naming thousands of models
// the agent does not serve, through the real agent over loopback, leave /metrics, /status and
// memory flat; long model ids and error bodies are clipped; a ping flood queues one pong at a
// time; the agent still serves a real job afterwards.

import assert from "node:assert/strict";
import v8 from "node:v8";
import vm from "node:vm";
import { startStatusServer } from "../../src/status/server.ts";
import { agentSource, type StatusDoc } from "../../src/status/snapshot.ts";
import {
  MAX_MODEL_LABELS,
  modelLabel,
  RECENT_MAX,
  Stats,
  UNADVERTISED,
} from "../../src/jobs/stats.ts";
import type { FinishedJob } from "../../src/jobs/job.ts";
import { clip, MAX_ERROR_TEXT, MAX_SHOWN_MODEL } from "../../src/text.ts";
import type { CoordSession } from "../harness/coordinator.ts";
import { type Stack, withSession } from "../harness/stack.ts";
import { within } from "../harness/agent_process.ts";
import { encodeFrame, OP, startRawServer } from "../harness/raw_ws_server.ts";
import { connectWs, MAX_UNSENT_PONGS } from "../../src/link/ws.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";
const TOTAL = 10_000;
const BATCH = 500;

/** Heap in use after a full garbage collection (V8's gc exposed through node:v8). */
function heapAfterGc(): number {
  v8.setFlagsFromString("--expose-gc");
  (vm.runInNewContext("gc") as () => void)();
  return Deno.memoryUsage().heapUsed;
}

/** Sends jobs `from`…`to - 1`, each naming its own unknown model, BATCH at a time. */
async function flood(s: CoordSession, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i += BATCH) {
    let last = "";
    for (let j = i; j < Math.min(to, i + BATCH); j++) {
      last = s.sendJob({ model_id: `unknown/model-${j}` });
    }
    // Jobs are answered in order: the batch's last terminal frame means the batch is done.
    await within(
      s.waitFor((f) => f.job_id === last && f.type === "job_error"),
      20_000,
      `the refusal of job ${last}`,
    );
    // The coordinator keeps what it saw; drop it so only the agent's memory is measured.
    s.frames.length = 0;
  }
}

interface Figures {
  series: number;
  statusBytes: number;
  heap: number;
  rss: number;
}

async function figures(stack: Stack, base: string): Promise<Figures> {
  await stack.agent.ledger.close(); // receipts still queued are not state that stays
  const metrics = await (await fetch(`${base}/metrics`)).text();
  const status = await (await fetch(`${base}/status`)).text();
  return {
    series: metrics.split("\n").filter((l) => l !== "" && !l.startsWith("#")).length,
    statusBytes: status.length,
    heap: heapAfterGc(),
    rss: Deno.memoryUsage().rss,
  };
}

const mb = (n: number) => `${(n / 1048576).toFixed(1)} MB`;

Deno.test("10,000 jobs naming 10,000 unknown models keep /metrics, /status and memory flat; a real job is served after", async () => {
  await withSession({}, async (stack: Stack, s: CoordSession) => {
    const server = startStatusServer(agentSource(stack.agent), { prometheusAddr: "127.0.0.1:0" });
    const base = `http://${server.addr}`;
    try {
      const started = performance.now();
      await flood(s, 0, 1_000);
      const early = await figures(stack, base);
      await flood(s, 1_000, TOTAL);
      const late = await figures(stack, base);
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      console.log(
        `after 1,000 / ${TOTAL} unknown models (${seconds} s): /metrics ${early.series} / ` +
          `${late.series} series, /status ${early.statusBytes} / ${late.statusBytes} bytes, ` +
          `heap ${mb(early.heap)} / ${mb(late.heap)}, RSS ${mb(early.rss)} / ${mb(late.rss)}`,
      );
      assert.equal(late.series, early.series, "metric series grew with new model names");
      assert.ok(late.series < 150, `${late.series} series`);
      assert.ok(late.statusBytes <= early.statusBytes + 512, "/status grew with new model names");
      assert.ok(late.heap - early.heap < 3 * 1048576, `heap grew ${mb(late.heap - early.heap)}`);

      const unadvertised = stack.agent.stats.byModel.get(UNADVERTISED);
      assert.equal(unadvertised?.jobs["model_not_loaded"], TOTAL);
      assert.ok(stack.agent.stats.byModel.size <= MAX_MODEL_LABELS + 1);
      const doc = await (await fetch(`${base}/status`)).json() as StatusDoc;
      assert.deepEqual(doc.counters.by_model.map((m) => m.model), [UNADVERTISED]);
      assert.equal(doc.recent_jobs.length, RECENT_MAX);
      const metrics = await (await fetch(`${base}/metrics`)).text();
      assert.match(
        metrics,
        /usepod_agent_jobs_total\{model="\(unadvertised\)",outcome="model_not_loaded"\} 10000/,
      );

      const real = await within(s.collect(s.sendJob({ model_id: MODEL })), 10_000, "a real job");
      assert.equal(real.terminal.type, "job_done");
      assert.ok(real.bytes.length > 0);
      assert.equal(stack.agent.stats.byModel.get(MODEL)?.jobs["job_done"], 1);
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("a 1 MB model id and a long backend error are clipped in the refusal, status and logs", async () => {
  await withSession({}, async (stack, s) => {
    const huge = "m".repeat(1 << 20);
    const id = s.sendJob({ model_id: huge });
    const err = await within(s.collect(id), 10_000, "the refusal");
    assert.equal(err.terminal.type, "job_error");
    assert.equal(err.terminal.error_code, "model_not_loaded");
    const message = err.terminal.message as string;
    assert.ok(message.length <= MAX_ERROR_TEXT, `message of ${message.length} characters`);
    assert.ok(message.includes(clip(huge, MAX_SHOWN_MODEL)));
    const recent = stack.agent.stats.recent().at(-1)!;
    assert.equal(recent.jobId, id);
    assert.equal(recent.model.length, MAX_SHOWN_MODEL);
    assert.ok(recent.model.endsWith("…"));
  });
});

Deno.test("modelLabel: advertised models get their own label up to the cap, others share (unadvertised)", () => {
  const advertised = (m: string) => m.startsWith("ad/");
  const known = new Map<string, number>();
  assert.equal(modelLabel("ad/one", advertised, known), "ad/one");
  assert.equal(modelLabel("nope", advertised, known), UNADVERTISED);
  for (let i = 0; i < MAX_MODEL_LABELS; i++) known.set(`ad/${i}`, 1);
  assert.equal(modelLabel("ad/new", advertised, known), UNADVERTISED);
  assert.equal(modelLabel("ad/3", advertised, known), "ad/3", "a known label stays");
});

Deno.test("Stats keeps at most MAX_MODEL_LABELS + 1 labels and clips recent models and messages", () => {
  let t = 1_000_000;
  const stats = new Stats(() => t);
  const job = (model: string, message?: string): FinishedJob => ({
    jobId: crypto.randomUUID(),
    model,
    backend: "vllm",
    format: "openai",
    outcome: message ? "internal" : "job_done",
    message,
    inputTokens: 1,
    outputTokens: 2,
    usageReported: true,
    firstChunkMs: 5,
    durationMs: 10,
    bytes: 3,
    receivedAt: t,
    finishedAt: ++t,
    admitted: true,
  });
  for (let i = 0; i < 3 * MAX_MODEL_LABELS; i++) stats.record(job(`model-${i}`));
  assert.equal(stats.byModel.size, MAX_MODEL_LABELS + 1);
  assert.equal(stats.histograms.size, MAX_MODEL_LABELS + 1);
  assert.equal(stats.byModel.get(UNADVERTISED)?.jobs["job_done"], 2 * MAX_MODEL_LABELS);
  stats.record(job("x".repeat(10_000), "e".repeat(100_000)));
  const last = stats.recent().at(-1)!;
  assert.equal(last.model.length, MAX_SHOWN_MODEL);
  assert.equal(last.message!.length, MAX_ERROR_TEXT);
  assert.ok(stats.recent().length <= RECENT_MAX);
});

Deno.test("a coordinator that floods pings and reads nothing gets at most MAX_UNSENT_PONGS pongs held, not one per ping", async () => {
  const PINGS = 200_000; // 125-byte payloads: 25 MB of pings, far beyond the kernel's buffers
  const sentAll = Promise.withResolvers<void>();
  const readNow = Promise.withResolvers<void>();
  let pongs = 0;
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    const ping = encodeFrame({ opcode: OP.ping, payload: new Uint8Array(125).fill(0x70) });
    const burst = new Uint8Array(ping.length * 1000);
    for (let i = 0; i < 1000; i++) burst.set(ping, i * ping.length);
    for (let i = 0; i < PINGS / 1000; i++) await peer.write(burst);
    await peer.send({ opcode: OP.text, payload: "end" });
    sentAll.resolve();
    await readNow.promise;
    for (let f = await peer.readFrame(); f !== null; f = await peer.readFrame()) {
      if (f.opcode === OP.pong) pongs++;
      if (f.opcode === OP.close) break;
    }
  });
  const ws = await connectWs({ url: server.url });
  try {
    const ev = await within(ws.next(), 20_000, "the text after the pings");
    assert.deepEqual(ev, { kind: "text", text: "end" });
    await sentAll.promise;
    // What the agent holds is at most MAX_UNSENT_PONGS pongs (131 bytes each), whatever the flood.
    const held = ws.bufferedAmount;
    assert.ok(held <= MAX_UNSENT_PONGS * 131, `${held} bytes held for ${PINGS} pings`);
  } finally {
    readNow.resolve();
    await ws.close(1000, "done");
  }
  assert.ok(pongs >= 1, "pings are still answered");
});

Deno.test("a backend error body of 8 MB ends the job with a message clipped to MAX_ERROR_TEXT", async () => {
  const upstream = "e".repeat(8 << 20);
  await withSession({
    backends: [{
      kind: "vllm",
      defaultScript: { status: 500, errorBody: JSON.stringify({ error: { message: upstream } }) },
    }],
  }, async (stack, s) => {
    const r = await within(s.collect(s.sendJob({ model_id: MODEL })), 10_000, "the job_error");
    assert.equal(r.terminal.type, "job_error");
    assert.equal(r.terminal.error_code, "internal");
    const message = r.terminal.message as string;
    assert.ok(message.length <= MAX_ERROR_TEXT, `message of ${message.length} characters`);
    assert.match(message, /HTTP 500/);
    assert.ok(stack.agent.stats.recent().at(-1)!.message!.length <= MAX_ERROR_TEXT);
    // The agent goes on: the next job is served.
    stack.fakes[0]!.setDefaultScript({ deltas: 3 });
    const ok = await within(s.collect(s.sendJob({ model_id: MODEL })), 10_000, "the next job");
    assert.equal(ok.terminal.type, "job_done");
  });
});
