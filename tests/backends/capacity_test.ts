// The engine's own capacity (PROTOCOL §5 extension) and JSON answers (§4 extension), end to end:
// llama.cpp total_slots caps max_concurrent and refuses the extra job at once; a vLLM queue read
// from /metrics refuses new jobs while it is not empty; 429/503 are out_of_capacity, not faults.

import assert from "node:assert/strict";
import { agentSource } from "../../src/status/snapshot.ts";
import { type Stack, withSession } from "../harness/stack.ts";
import type { CoordSession, Frame } from "../harness/coordinator.ts";
import { DEFAULT_MODELS } from "../harness/fake_backend.ts";
import { parseWaiting } from "../../src/backends/vllm_queue.ts";

const LLAMA = DEFAULT_MODELS.llamacpp[0]!;
const VLLM = DEFAULT_MODELS.vllm[0]!;
type Json = Record<string, unknown>;

/** Resolves once `cond` holds, checking every 10 ms; throws after `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function metrics(waiting: number): string {
  return `# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n` +
    `# TYPE vllm:num_requests_waiting gauge\n` +
    `vllm:num_requests_waiting{engine="0",model_name="${VLLM}"} ${waiting.toFixed(1)}\n` +
    `vllm:num_requests_running{engine="0",model_name="${VLLM}"} 2.0\n`;
}

function missedBusy(stack: Stack): number {
  return stack.agent.earnings.summary().sinceStart.missedByReason.backend_busy.jobs;
}

async function refusedAtOnce(s: CoordSession, model: string): Promise<Frame> {
  const sent = performance.now();
  const r = await s.collect(s.sendJob({ model_id: model }));
  assert.equal(r.terminal.type, "job_error");
  assert.equal(r.terminal.error_code, "out_of_capacity");
  assert.equal(r.chunks, 0);
  assert.ok(performance.now() - sent < 1000, "refused at once, not after waiting");
  return r.terminal;
}

Deno.test("llama.cpp total_slots caps max_concurrent; the job beyond its slots is refused at once", async () => {
  await withSession({
    backends: [{ kind: "llamacpp", slots: 2, defaultScript: { hang: "after-headers" } }],
    limits: "[limits]\nmax_concurrent = 8",
  }, async (stack, s) => {
    const caps = await s.nth("capabilities", 1) as Json;
    assert.deepEqual((caps.models as Json[]).map((m) => [m.model_id, m.max_concurrent]), [
      [LLAMA, 2],
    ]);
    assert.deepEqual(caps.limits, { max_concurrent_total: 8, max_tokens_per_minute: null });
    const a = s.sendJob({ model_id: LLAMA });
    const b = s.sendJob({ model_id: LLAMA });
    await stack.fakes[0]!.waitForRequests(2);
    const refused = await refusedAtOnce(s, LLAMA);
    assert.match(String(refused.message), /all 2 slots/);
    assert.equal(stack.fakes[0]!.requests.length, 2, "the extra job never reached the engine");
    assert.equal(missedBusy(stack), 1);
    assert.equal(stack.agent.stats.totals.errors, 0);
    const doc = agentSource(stack.agent).status();
    assert.equal(doc.backends[0]!.slots, 2);
    assert.equal(doc.backends[0]!.slots_in_use, 2);
    assert.equal(doc.models[0]!.max_concurrent, 2);
    s.cancel(a);
    s.cancel(b);
    await stack.agent.executor.idle();
    assert.equal(agentSource(stack.agent).status().backends[0]!.slots_in_use, 0);
  });
});

Deno.test("two llama.cpp servers of one model: slots summed, jobs spread to free slots", async () => {
  await withSession({
    backends: [
      { kind: "llamacpp", slots: 1, defaultScript: { hang: "after-headers" } },
      { kind: "llamacpp", slots: 2, defaultScript: { hang: "after-headers" } },
    ],
  }, async (stack, s) => {
    const caps = await s.nth("capabilities", 1) as Json;
    assert.equal((caps.models as Json[])[0]!.max_concurrent, 3);
    const ids = [1, 2, 3].map(() => s.sendJob({ model_id: LLAMA }));
    await stack.fakes[0]!.waitForRequests(1);
    await stack.fakes[1]!.waitForRequests(2);
    await refusedAtOnce(s, LLAMA);
    assert.deepEqual(stack.fakes.map((f) => f.requests.length), [1, 2]);
    ids.forEach((id) => s.cancel(id));
    await stack.agent.executor.idle();
  });
});

Deno.test("a backend without a slot count leaves the model's limit at limits.max_concurrent", async () => {
  await withSession({
    backends: [{ kind: "llamacpp", slots: 2 }, { kind: "ollama", models: [LLAMA] }],
    limits: "[limits]\nmax_concurrent = 5",
  }, async (_stack, s) => {
    const caps = await s.nth("capabilities", 1) as Json;
    assert.equal((caps.models as Json[])[0]!.max_concurrent, 5);
  });
});

Deno.test("backend 429 and 503 are out_of_capacity with its message, not counted as failures", async () => {
  await withSession({
    backends: [{
      kind: "vllm",
      models: ["m429", "m503"],
      scripts: {
        m429: { status: 429, errorBody: '{"error":{"message":"rate limited, retry later"}}' },
        m503: { status: 503, errorBody: '{"object":"error","message":"engine saturated"}' },
      },
    }],
  }, async (stack, s) => {
    for (const [model, text] of [["m429", /rate limited/], ["m503", /engine saturated/]] as const) {
      const r = await s.collect(s.sendJob({ model_id: model }));
      assert.equal(r.terminal.error_code, "out_of_capacity");
      assert.match(String(r.terminal.message), text);
      assert.equal(r.terminal.tokens_emitted, 0);
    }
    const stats = stack.agent.stats;
    assert.deepEqual([stats.totals.errors, stats.totals.refused], [0, 2]);
    const hb = stats.heartbeat(0);
    assert.deepEqual([hb.errorRate60s, hb.lastErrorCode], [0, null]);
    assert.equal(stack.agent.discovery.current.backends[0]!.state, "up");
    assert.equal(missedBusy(stack), 2);
    // The backend is still served: a job that fits goes through.
    stack.fakes[0]!.setScript("m429", {});
    assert.equal((await s.collect(s.sendJob({ model_id: "m429" }))).terminal.type, "job_done");
  });
});

Deno.test("vLLM with requests waiting in its queue: new jobs refused until it drains", async () => {
  await withSession({
    backends: [{ kind: "vllm", metrics: metrics(0) }],
    queueWatch: { intervalMs: 50 },
  }, async (stack, s) => {
    const fake = stack.fakes[0]!;
    const queues = stack.agent.queues;
    await until(() => queues.waiting(0) === 0, 3000, "the first /metrics read");
    assert.equal((await s.collect(s.sendJob({ model_id: VLLM }))).terminal.type, "job_done");

    fake.setMetrics(metrics(3));
    await until(() => queues.waiting(0) === 3, 3000, "the queue to be seen");
    const before = fake.requests.length;
    const refused = await refusedAtOnce(s, VLLM);
    assert.match(String(refused.message), /3 requests waiting/);
    assert.equal(fake.requests.length, before, "the refused job never reached vLLM");
    assert.equal(missedBusy(stack), 1);
    assert.equal(agentSource(stack.agent).status().backends[0]!.queue_waiting, 3);

    fake.setMetrics(metrics(0));
    await until(() => queues.waiting(0) === 0, 3000, "the queue to drain");
    assert.equal((await s.collect(s.sendJob({ model_id: VLLM }))).terminal.type, "job_done");
  });
});

Deno.test("vLLM /metrics is read about once a second, never once per job", async () => {
  await withSession({ backends: [{ kind: "vllm", metrics: metrics(0) }] }, async (stack, s) => {
    const fake = stack.fakes[0]!;
    await until(() => stack.agent.queues.waiting(0) === 0, 3000, "the first /metrics read");
    const hits = fake.metricsHits;
    const started = performance.now();
    for (let i = 0; i < 20; i++) {
      assert.equal((await s.collect(s.sendJob({ model_id: VLLM }))).terminal.type, "job_done");
    }
    const seconds = (performance.now() - started) / 1000;
    assert.ok(
      fake.metricsHits - hits <= Math.ceil(seconds) + 1,
      `${fake.metricsHits - hits} /metrics reads for 20 jobs in ${seconds.toFixed(2)} s`,
    );
  });
});

Deno.test("a vLLM without /metrics is never treated as busy", async () => {
  await withSession({ backends: [{ kind: "vllm" }], queueWatch: { intervalMs: 20 } }, async (
    stack,
    s,
  ) => {
    await stack.agent.queues.poll();
    assert.equal(stack.agent.queues.waiting(0), undefined);
    assert.equal((await s.collect(s.sendJob({ model_id: VLLM }))).terminal.type, "job_done");
  });
});

Deno.test("parseWaiting sums the gauge over models and ignores look-alikes", () => {
  assert.equal(parseWaiting(metrics(2)), 2);
  const two =
    'vllm:num_requests_waiting{model_name="a"} 1\nvllm:num_requests_waiting{model_name="b"} 4.0\n';
  assert.equal(parseWaiting(two), 5);
  assert.equal(parseWaiting("vllm:num_requests_waiting_total 9\n"), undefined);
  assert.equal(parseWaiting("vllm:num_requests_waiting 0\n"), 0);
  assert.equal(parseWaiting("# nothing here\n"), undefined);
});

for (const format of ["openai", "anthropic"] as const) {
  Deno.test(`a 200 JSON answer (stream ignored, ${format}) is relayed verbatim and ends in job_done`, async () => {
    const answer = format === "openai"
      ? JSON.stringify({
        id: "chatcmpl-1",
        object: "chat.completion",
        choices: [{ index: 0, message: { role: "assistant", content: "hé ☃" } }],
        usage: { prompt_tokens: 29, completion_tokens: 4, total_tokens: 33 },
      })
      : JSON.stringify({
        type: "message",
        role: "assistant",
        content: [{ type: "text", text: "hé ☃" }],
        usage: { cache_read_input_tokens: 28, input_tokens: 1, output_tokens: 4 },
      });
    await withSession({
      backends: [{ kind: "vllm", defaultScript: { status: 200, errorBody: answer } }],
    }, async (_stack, s) => {
      const r = await s.collect(s.sendJob({ model_id: VLLM, format }));
      assert.equal(new TextDecoder().decode(r.bytes), answer);
      assert.equal(r.terminal.type, "job_done");
      assert.deepEqual(r.terminal.tokens, {
        input: 29,
        output: 4,
        input_tokens: 29,
        output_tokens: 4,
      });
    });
  });
}

Deno.test("a 200 JSON error answer ends in internal with its message", async () => {
  await withSession({
    backends: [{
      kind: "vllm",
      defaultScript: { status: 200, errorBody: '{"error":{"message":"prompt too long"}}' },
    }],
  }, async (_stack, s) => {
    const r = await s.collect(s.sendJob({ model_id: VLLM }));
    assert.equal(r.terminal.error_code, "internal");
    assert.match(String(r.terminal.message), /prompt too long/);
  });
});
