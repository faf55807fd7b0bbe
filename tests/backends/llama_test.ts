// The agent against a real inference engine: llama.cpp's `llama-server` (CPU, tiny random-weight
// model) from LLAMA_SERVER and TINY_GGUF — discovery, streamed OpenAI and Anthropic jobs with
// whole-prompt billing (PROTOCOL §4), cancel, deadline, the engine's own slots (§5), doctor,
// a killed and restarted server, and one still loading. Skipped with one line when unset; in CI
// (CI set) a missing server fails every test instead.

import assert from "node:assert/strict";
import { doctor } from "../../src/cli/doctor.ts";
import { loadOrCreateIdentity } from "../../src/identity/identity.ts";
import { TestCoordinator } from "../harness/coordinator.ts";
import type { CoordSession, Frame } from "../harness/coordinator.ts";
import {
  LLAMA_SKIP_HINT,
  llamaPaths,
  type LlamaServer,
  type LlamaServerOptions,
  startLlamaServer,
} from "../harness/llama_server.ts";
import { type Stack, type StackOptions, withSession } from "../harness/stack.ts";

const AVAILABLE = llamaPaths() !== null;
const IN_CI = Deno.env.get("CI") !== undefined;
if (!AVAILABLE && !IN_CI) console.warn(`llama_test: ${LLAMA_SKIP_HINT}`);

type Json = Record<string, unknown>;
const PROMPT = "Tell me a story about a lighthouse keeper and a storm.";

/** A test that needs the real server: skipped without it, failed without it in CI. */
function llamaTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, ignore: !AVAILABLE && !IN_CI }, async () => {
    if (!AVAILABLE) throw new Error(`CI is set but ${LLAMA_SKIP_HINT}`);
    await fn();
  });
}

/** Starts llama-server with one generation thread (2 cores are shared), runs `fn`, stops it. */
async function withLlama(
  opts: LlamaServerOptions,
  fn: (llama: LlamaServer) => Promise<void>,
): Promise<void> {
  const llama = await startLlamaServer({ threads: 1, ...opts });
  try {
    await fn(llama);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- llama-server log tail ---\n${llama.log()}`, {
      cause: err,
    });
  } finally {
    await llama.stop();
  }
}

/** The agent, configured like an operator would, with llama-server as its only backend. */
function withAgent(
  llama: LlamaServer,
  opts: StackOptions,
  fn: (stack: Stack, s: CoordSession) => Promise<void>,
): Promise<void> {
  return withSession({
    backends: [],
    backendsToml: () => `[[backends]]\nkind = "llamacpp"\nurl = "${llama.url}"\n`,
    ...opts,
  }, fn);
}

/** A chat request; `ignore_eos` keeps the random model from ending early. */
function chat(maxTokens: number, prompt = PROMPT): Json {
  return { messages: [{ role: "user", content: prompt }], max_tokens: maxTokens, ignore_eos: true };
}

/** The SSE events of a body: `event:` name (if any) and `data:` text, in order. */
function sseEvents(bytes: Uint8Array): { event: string | undefined; data: string }[] {
  const text = new TextDecoder().decode(bytes);
  assert.ok(text.endsWith("\n\n"), "the stream ends with a complete event");
  return text.slice(0, -2).split("\n\n").map((block) => {
    let event: string | undefined;
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
      else assert.fail(`unexpected SSE line ${JSON.stringify(line)}`);
    }
    assert.equal(data.length, 1, `one data line per event: ${block}`);
    return { event, data: data[0]! };
  });
}

function firstChunk(s: CoordSession, id: string): Promise<Frame> {
  return s.waitFor((f) => f.type === "job_chunk" && f.job_id === id);
}

function terminalOf(s: CoordSession, id: string): Frame | undefined {
  return s.framesFor(id).find((f) => f.type === "job_done" || f.type === "job_error");
}

/** Milliseconds until no slot of the server is processing (fails past `ms`). */
async function msUntilIdle(llama: LlamaServer, ms: number): Promise<number> {
  const t0 = performance.now();
  await llama.waitIdle(ms);
  return performance.now() - t0;
}

llamaTest(
  "discovery advertises llama-server's model id, per-slot context and slot count",
  async () => {
    await withLlama({ slots: 2, ctx: 2048, alias: "tiny-under-test" }, async (llama) => {
      const slots = await llama.slots();
      assert.equal(slots.length, 2);
      const props = await (await fetch(`${llama.url}/props`)).json() as Json;
      assert.equal(props.total_slots, 2);
      await withAgent(llama, {}, async (stack, s) => {
        const caps = await s.nth("capabilities", 1) as Json;
        assert.deepEqual(caps.models, [{
          model_id: "tiny-under-test",
          input_per_1m: 500_000,
          output_per_1m: 750_000,
          max_concurrent: 2, // the engine's slots, below limits.max_concurrent = 8
          backend: "llamacpp",
          context_window: slots[0]!.n_ctx, // 2048 / 2 slots
        }]);
        assert.equal(slots[0]!.n_ctx, 1024);
        assert.deepEqual((caps.metadata as Json).formats, {
          "tiny-under-test": ["openai", "anthropic"],
        });
        const backend = stack.agent.discovery.current.backends[0]!;
        assert.deepEqual([backend.state, backend.slots], ["up", 2]);
      });
    });
  },
);

llamaTest(
  "a streamed OpenAI job is well-formed SSE to [DONE] and its tokens are the usage record",
  async () => {
    await withLlama({ slots: 1, ctx: 2048 }, async (llama) => {
      await withAgent(llama, {}, async (_stack, s) => {
        const r = await s.collect(s.sendJob({ model_id: llama.alias, request: chat(24) }));
        assert.equal(r.terminal.type, "job_done", JSON.stringify(r.terminal));
        const events = sseEvents(r.bytes);
        assert.ok(events.every((e) => e.event === undefined));
        assert.equal(events.at(-1)!.data, "[DONE]");
        assert.equal(events.filter((e) => e.data === "[DONE]").length, 1);
        const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data) as Json);
        assert.deepEqual((chunks[0]!.choices as Json[])[0]!.delta, {
          role: "assistant",
          content: null,
        });
        assert.ok(chunks.every((c) => c.model === llama.alias));
        const usage = chunks.filter((c) => c.usage).map((c) => c.usage as Json);
        assert.equal(usage.length, 1);
        assert.equal(usage[0]!.completion_tokens, 24);
        assert.ok((usage[0]!.prompt_tokens as number) > 5);
        assert.deepEqual(r.terminal.tokens, {
          input: usage[0]!.prompt_tokens,
          output: usage[0]!.completion_tokens,
          input_tokens: usage[0]!.prompt_tokens,
          output_tokens: usage[0]!.completion_tokens,
        });
        const deltas = chunks.filter((c) =>
          typeof ((c.choices as Json[])[0]?.delta as Json | undefined)?.content === "string"
        );
        // One delta per token, except where llama.cpp holds back a partial UTF-8 character.
        assert.ok(deltas.length > 12 && deltas.length <= 24, `${deltas.length} content deltas`);
      });
    });
  },
);

llamaTest(
  "an Anthropic job after a prompt-cache hit bills the whole prompt, as OpenAI does",
  async () => {
    await withLlama({ slots: 1, ctx: 2048 }, async (llama) => {
      await withAgent(llama, {}, async (stack, s) => {
        const openai = await s.collect(s.sendJob({ model_id: llama.alias, request: chat(4) }));
        assert.equal(openai.terminal.type, "job_done");
        const prompt = (openai.terminal.tokens as Json).input as number;
        // The same prompt again, now on /v1/messages: the one slot reuses its cached prefix.
        const r = await s.collect(
          s.sendJob({ model_id: llama.alias, request: chat(4), format: "anthropic" }),
        );
        assert.equal(r.terminal.type, "job_done", JSON.stringify(r.terminal));
        const events = sseEvents(r.bytes);
        assert.deepEqual(
          [events[0]!.event, events.at(-1)!.event],
          ["message_start", "message_stop"],
        );
        const start = JSON.parse(events[0]!.data) as { message: { usage: Json } };
        const usage = start.message.usage;
        assert.ok(
          (usage.cache_read_input_tokens as number) > 0,
          `a cache hit: ${JSON.stringify(usage)}`,
        );
        assert.ok(
          (usage.input_tokens as number) < prompt,
          "llama.cpp reports only the uncached part",
        );
        assert.equal(
          (usage.input_tokens as number) + (usage.cache_read_input_tokens as number),
          prompt,
        );
        assert.deepEqual(r.terminal.tokens, {
          input: prompt,
          output: 4,
          input_tokens: prompt,
          output_tokens: 4,
        });
        // Earnings (and receipts, from the same record) count the same prompt twice over.
        assert.equal(stack.agent.earnings.summary().sinceStart.inputTokens, 2 * prompt);
      });
    });
  },
);

llamaTest(
  "a job asking stream: false is still streamed from llama-server and metered",
  async () => {
    await withLlama({ slots: 1, ctx: 2048 }, async (llama) => {
      await withAgent(llama, {}, async (_stack, s) => {
        const request = { ...chat(6), stream: false, "stream_options": { "include_usage": false } };
        const r = await s.collect(s.sendJob({ model_id: llama.alias, request }));
        assert.equal(r.terminal.type, "job_done", JSON.stringify(r.terminal));
        const events = sseEvents(r.bytes);
        assert.equal(events.at(-1)!.data, "[DONE]");
        const usage = events.map((e) => e.data).filter((d) => d.includes('"usage"'));
        assert.equal(usage.length, 1, "include_usage forced on");
        assert.equal((r.terminal.tokens as Json).output, 6);
      });
    });
  },
);

llamaTest("cancel mid-stream frees the slot within 1 s and sends no terminal frame", async () => {
  await withLlama({ slots: 1, ctx: 2048 }, async (llama) => {
    await withAgent(llama, {}, async (_stack, s) => {
      const id = s.sendJob({ model_id: llama.alias, request: chat(1900) });
      await firstChunk(s, id);
      assert.deepEqual((await llama.slots()).map((x) => x.is_processing), [true]);
      s.cancel(id);
      const ms = await msUntilIdle(llama, 1000);
      assert.ok(ms < 1000, `slot freed after ${ms.toFixed(0)} ms`);
      // A later job on the same link is the barrier: the cancelled one got nothing after it.
      const next = await s.collect(s.sendJob({ model_id: llama.alias, request: chat(2) }));
      assert.equal(next.terminal.type, "job_done");
      assert.equal(terminalOf(s, id), undefined);
    });
  });
});

llamaTest("a deadline ends the job in backend_timeout and frees the slot", async () => {
  await withLlama({ slots: 1, ctx: 2048 }, async (llama) => {
    await withAgent(llama, {}, async (_stack, s) => {
      const id = s.sendJob({ model_id: llama.alias, request: chat(1900), deadline_ms: 400 });
      const r = await s.collect(id);
      assert.equal(r.terminal.error_code, "backend_timeout");
      assert.match(String(r.terminal.message), /deadline of 400 ms/);
      assert.ok((r.terminal.tokens_emitted as number) > 0 && r.chunks > 0);
      const ms = await msUntilIdle(llama, 1000);
      assert.ok(ms < 1000, `slot freed after ${ms.toFixed(0)} ms`);
    });
  });
});

llamaTest("more jobs than slots: the extras are refused out_of_capacity at once", async () => {
  await withLlama({ slots: 2, ctx: 4096 }, async (llama) => {
    await withAgent(llama, {}, async (stack, s) => {
      const ids = [1, 2, 3, 4].map(() => s.sendJob({ model_id: llama.alias, request: chat(300) }));
      const results = await Promise.all(ids.map((id) => s.collect(id)));
      const outcomes = results.map((r) => r.terminal.error_code ?? r.terminal.type);
      assert.deepEqual(outcomes, ["job_done", "job_done", "out_of_capacity", "out_of_capacity"]);
      const at = (f: Frame) => s.frames.indexOf(f);
      for (const refused of results.slice(2)) {
        assert.match(String(refused.terminal.message), /all 2 slots/);
        // Refused while both admitted jobs were still streaming, not after waiting for them.
        assert.ok(at(refused.terminal) < at(results[0]!.terminal));
        assert.ok(at(refused.terminal) < at(results[1]!.terminal));
      }
      assert.ok(results.slice(0, 2).every((r) => (r.terminal.tokens as Json).output === 300));
      const missed = stack.agent.earnings.summary().sinceStart.missedByReason;
      assert.equal(missed.backend_busy.jobs, 2);
      assert.equal(stack.agent.stats.totals.errors, 0);
    });
  });
});

llamaTest("doctor passes against llama-server", async () => {
  await withLlama({ slots: 1, ctx: 2048 }, async (llama) => {
    const coord = await TestCoordinator.start();
    const dir = await Deno.makeTempDir({ prefix: "usepod-llama-doctor-" });
    try {
      const configPath = `${dir}/agent.toml`;
      await Deno.writeTextFile(
        configPath,
        `[coordinator]\nurl = "${coord.url}"\n[identity]\nkey_path = "${dir}/id.key"\n` +
          `[[backends]]\nkind = "llamacpp"\nurl = "${llama.url}"\n` +
          `[pricing]\ndefault_input_per_1m = 1\ndefault_output_per_1m = 2\n` +
          `[observability]\nprometheus_addr = "127.0.0.1:0"\n`,
      );
      await loadOrCreateIdentity(`${dir}/id.key`);
      const checks = [];
      for await (
        const c of doctor({
          configPath,
          allowInsecure: true,
          timeoutMs: 5000,
          servicePath: `${dir}/no-such.service`,
        })
      ) checks.push(c);
      assert.ok(!checks.some((c) => c.verdict === "fail"), JSON.stringify(checks, null, 1));
      const backend = checks.filter((c) => c.what === "backend llamacpp");
      assert.ok(backend.length > 0 && backend.every((c) => c.verdict === "ok"));
      assert.ok(backend.some((c) => /tiny: 1-token completion ok, usage reported/.test(c.detail)));
    } finally {
      await coord.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
});

llamaTest(
  "llama-server killed mid-stream: job_error; restarted on its port: rediscovered and served",
  async () => {
    await withLlama({ slots: 1, ctx: 2048 }, async (llama) => {
      await withAgent(llama, { rediscoverMs: 100 }, async (_stack, s) => {
        const models = (f: Frame) => (f.models as Json[]).map((m) => m.model_id);
        assert.deepEqual(models(await s.nth("capabilities", 1)), [llama.alias]);
        const id = s.sendJob({ model_id: llama.alias, request: chat(1900) });
        await firstChunk(s, id);
        await llama.kill();
        const r = await s.collect(id);
        assert.equal(r.terminal.type, "job_error");
        assert.equal(r.terminal.error_code, "internal");
        assert.ok((r.terminal.tokens_emitted as number) > 0);
        // Rediscovery finds it gone and withdraws the model.
        assert.deepEqual(models(await s.nth("capabilities", 2)), []);
        await llama.restart();
        assert.deepEqual(models(await s.nth("capabilities", 3)), [llama.alias]);
        const again = await s.collect(s.sendJob({ model_id: llama.alias, request: chat(8) }));
        assert.equal(again.terminal.type, "job_done");
        assert.equal((again.terminal.tokens as Json).output, 8);
      });
    });
  },
);

llamaTest(
  "a llama-server still loading its model (503 on /health) is advertised only once ready",
  async () => {
    await withLlama({ slots: 1, slowLoad: true, ready: false }, async (llama) => {
      // Wait for the loading phase itself, then watch for its end while the agent discovers.
      let last503 = -1;
      let ready = false;
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline) {
        const res = await fetch(`${llama.url}/health`).catch(() => undefined);
        await res?.body?.cancel();
        if (res?.status === 503) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      const watch = (async () => {
        while (!ready && Date.now() < deadline) {
          const res = await fetch(`${llama.url}/health`);
          await res.body?.cancel();
          if (res.status === 503) last503 = performance.now();
          if (res.status === 200) ready = true;
          else await new Promise((r) => setTimeout(r, 10));
        }
      })();
      try {
        await withAgent(llama, { rediscoverMs: 100 }, async (stack, s) => {
          const first = await s.nth("capabilities", 1);
          assert.ok(last503 > 0, "the agent connected while the server was loading");
          assert.deepEqual(first.models, []);
          assert.equal(stack.agent.discovery.current.backends[0]!.state, "loading");
          const served = await s.nth("capabilities", 2);
          const servedAt = performance.now();
          assert.deepEqual((served.models as Json[]).map((m) => m.model_id), [llama.alias]);
          assert.ok(servedAt > last503, "advertised only after the last 503");
          const r = await s.collect(s.sendJob({ model_id: llama.alias, request: chat(4) }));
          assert.equal(r.terminal.type, "job_done");
        });
      } finally {
        ready = true;
        await watch;
      }
    });
  },
);
