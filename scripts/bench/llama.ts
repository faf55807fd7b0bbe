// The bench row for a real engine (issue 12): the agent (a real process, release V8 flags)
// relaying llama.cpp `llama-server` streams (one generation thread, tiny model) to the test
// coordinator, beside direct clients (fetch, and the agent's raw HTTP/1.1 reader) reading the
// same streams; CPU per token of each, from /proc. Alone: `deno run -A scripts/bench/llama.ts`.

import { AGENT_V8_FLAGS } from "../build.ts";
import { request as http1Request } from "../../src/backends/http1.ts";
import { loadOrCreateIdentity } from "../../src/identity/identity.ts";
import { TestCoordinator } from "../../tests/harness/coordinator.ts";
import {
  llamaPaths,
  type LlamaServer,
  startLlamaServer,
} from "../../tests/harness/llama_server.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
export const LLAMA_MISSING = "llama-server not available (set LLAMA_SERVER and TINY_GGUF)";

export interface LlamaBenchOptions {
  /** Jobs per phase (default 8), run `slots` at a time. */
  jobs?: number;
  /** Tokens each job generates (default 256; the model's EOS is ignored). */
  tokens?: number;
  /** llama-server slots, and so jobs at once (default 2). */
  slots?: number;
}

/** CPU per generated token, in microseconds, of each reader of the same streams. */
export interface LlamaBenchResult {
  jobs: number;
  tokens: number;
  slots: number;
  agentUsPerToken: number;
  directFetchUsPerToken: number;
  directRawUsPerToken: number;
  /** The engine's own CPU per token while the agent relayed (for scale). */
  engineUsPerToken: number;
  agentTokensPerSec: number;
  directTokensPerSec: number;
}

/** CPU ns the threads of a process have run so far (/proc/<pid>/task/<tid>/schedstat). */
function cpuNs(pid: number | "self"): number {
  let ns = 0;
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/schedstat`).split(" ")[0]);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return ns;
}

function body(tokens: number): Record<string, unknown> {
  return {
    messages: [{ role: "user", content: "Write about a lighthouse in a storm." }],
    max_tokens: tokens,
    ignore_eos: true,
  };
}

/** Runs `n` tasks, `at` at a time. */
async function pool(n: number, at: number, task: (i: number) => Promise<number>): Promise<number> {
  let next = 0, sum = 0;
  await Promise.all(Array.from({ length: at }, async () => {
    while (next < n) {
      const got = await task(next++);
      sum += got;
    }
  }));
  return sum;
}

/** Completion tokens in an SSE body's usage record. */
function usageTokens(text: string): number {
  const m = /"completion_tokens":(\d+)/.exec(text.slice(text.lastIndexOf('"usage"')));
  if (!m) throw new Error("the stream carried no usage record");
  return Number(m[1]);
}

async function directFetch(llama: LlamaServer, tokens: number): Promise<number> {
  const res = await fetch(`${llama.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify({
      ...body(tokens),
      model: llama.alias,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!res.ok || !res.body) throw new Error(`direct fetch: HTTP ${res.status}`);
  const decoder = new TextDecoder();
  let tail = "";
  for await (const piece of res.body) tail = (tail + decoder.decode(piece)).slice(-4096);
  return usageTokens(tail);
}

async function directRaw(llama: LlamaServer, tokens: number): Promise<number> {
  const res = await http1Request({
    method: "POST",
    url: new URL(`${llama.url}/v1/chat/completions`),
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: new TextEncoder().encode(JSON.stringify({
      ...body(tokens),
      model: llama.alias,
      stream: true,
      stream_options: { include_usage: true },
    })),
    signal: AbortSignal.timeout(60_000),
    transient: true,
  });
  if (res.status !== 200) throw new Error(`direct raw: HTTP ${res.status}`);
  const decoder = new TextDecoder();
  let tail = "";
  for (let p = await res.read(); p !== null; p = await res.read()) {
    tail = (tail + decoder.decode(p, { stream: true })).slice(-4096);
  }
  return usageTokens(tail);
}

/** Measures one phase: returns tokens, own/child CPU ns used and wall ms. */
async function phase(
  pid: number | "self",
  llama: LlamaServer,
  run: () => Promise<number>,
): Promise<{ tokens: number; ns: number; engineNs: number; ms: number }> {
  const ns0 = cpuNs(pid), e0 = cpuNs(llama.pid), t0 = performance.now();
  const tokens = await run();
  return {
    tokens,
    ns: cpuNs(pid) - ns0,
    engineNs: cpuNs(llama.pid) - e0,
    ms: performance.now() - t0,
  };
}

/**
 * Runs the real-engine row; null when LLAMA_SERVER / TINY_GGUF are not set.
 *
 * @example
 * ```ts
 * const r = await llamaBench({ jobs: 8 });
 * console.log(r ? llamaRow(r) : LLAMA_MISSING);
 * ```
 */
export async function llamaBench(opts: LlamaBenchOptions = {}): Promise<LlamaBenchResult | null> {
  if (!llamaPaths()) return null;
  const jobs = opts.jobs ?? 8, tokens = opts.tokens ?? 256, slots = opts.slots ?? 2;
  const dir = await Deno.makeTempDir({ prefix: "usepod-bench-llama-" });
  const llama = await startLlamaServer({ slots, ctx: slots * 2048, threads: 1, alias: "tiny" });
  const coord = await TestCoordinator.start();
  let agent: Deno.ChildProcess | undefined;
  try {
    await loadOrCreateIdentity(`${dir}/identity.key`);
    await Deno.writeTextFile(
      `${dir}/agent.toml`,
      `[coordinator]\nurl = "${coord.url}"\n[identity]\nkey_path = "${dir}/identity.key"\n` +
        `[[backends]]\nkind = "llamacpp"\nurl = "${llama.url}"\n` +
        `[pricing]\ndefault_input_per_1m = 500000\ndefault_output_per_1m = 750000\n` +
        `[observability]\nprometheus_addr = "127.0.0.1:0"\n`,
    );
    agent = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        ...AGENT_V8_FLAGS,
        MAIN,
        "--config",
        `${dir}/agent.toml`,
        "--allow-insecure",
        "--log-level",
        "warn",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const s = await coord.authenticated(0);
    await s.waitFor((f) =>
      f.type === "capabilities" && Array.isArray(f.models) && f.models.length > 0
    );
    const viaAgent = async () => {
      const r = await s.collect(s.sendJob({ model_id: llama.alias, request: body(tokens) }));
      if (r.terminal.type !== "job_done") throw new Error(JSON.stringify(r.terminal));
      return (r.terminal.tokens as { output: number }).output;
    };
    await viaAgent(); // warm-up: JIT, the engine's first prompt
    await directRaw(llama, 8);
    await directFetch(llama, 8);
    const a = await phase(agent.pid, llama, () => pool(jobs, slots, viaAgent));
    const f = await phase("self", llama, () => pool(jobs, slots, () => directFetch(llama, tokens)));
    const r = await phase("self", llama, () => pool(jobs, slots, () => directRaw(llama, tokens)));
    const us = (p: { ns: number; tokens: number }) => p.ns / 1000 / p.tokens;
    return {
      jobs,
      tokens: a.tokens,
      slots,
      agentUsPerToken: us(a),
      directFetchUsPerToken: us(f),
      directRawUsPerToken: us(r),
      engineUsPerToken: a.engineNs / 1000 / a.tokens,
      agentTokensPerSec: a.tokens / (a.ms / 1000),
      directTokensPerSec: r.tokens / (r.ms / 1000),
    };
  } finally {
    if (agent) {
      try {
        agent.kill("SIGTERM");
      } catch { /* already gone */ }
      await agent.status;
    }
    await coord.close();
    await llama.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

/** One table row (≤ 100 characters a line). */
export function llamaRow(r: LlamaBenchResult): string {
  const f = (v: number) => v.toFixed(1);
  return `real engine: llama-server -t 1, ${r.slots} slots, ${r.jobs} jobs, ${r.tokens} tokens\n` +
    `  CPU per token: agent ${f(r.agentUsPerToken)} µs | direct fetch ` +
    `${f(r.directFetchUsPerToken)} µs | direct raw ${f(r.directRawUsPerToken)} µs\n` +
    `  (engine ${f(r.engineUsPerToken)} µs/token; ${r.agentTokensPerSec.toFixed(0)} tokens/s ` +
    `through the agent, ${r.directTokensPerSec.toFixed(0)} direct)`;
}

/** The row, or the line saying why there is none. */
export async function llamaBenchLine(opts: LlamaBenchOptions = {}): Promise<string> {
  const r = await llamaBench(opts);
  return r ? llamaRow(r) : LLAMA_MISSING;
}

if (import.meta.main) console.log(await llamaBenchLine());
