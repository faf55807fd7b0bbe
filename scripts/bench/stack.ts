// The benchmark's processes for one run (scripts/bench.ts): fake backends, the coordinator and the
// direct client as helpers, agents spawned from a written agent.toml (a Fleet), and one round of
// jobs through an agent or of direct reads, with CPU readings around it.

import { AGENT_V8_FLAGS } from "../build.ts";
import { nowEpoch, type Reply } from "./common.ts";
import { Child } from "./procs.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const MAIN = `${ROOT}main.ts`;
const FAKE = `${ROOT}tests/harness/fake_backend_main.ts`;
const COORDINATOR = `${ROOT}scripts/bench/coordinator.ts`;
const DIRECT = `${ROOT}scripts/bench/direct.ts`;
export const MODELS = [
  "bench-burst",
  "bench-paced",
  "bench-slow",
  "bench-long",
  "bench-job",
] as const;

/** What one run does; FULL is issue 7's scenario, QUICK a smoke-test version of it. */
export interface Sizes {
  burstJobs: number;
  burstDeltas: number;
  /** Counted burst rounds per run, each agent, direct fetch, direct raw HTTP/1.1 (after a warm-up). */
  rounds: number;
  pacedJobs: number;
  pacedDeltas: number;
  delayMs: number;
  slowJobs: number;
  slowDeltas: number;
  stallMs: number;
  /** Bytes the agent must have sent through the proxy before the stall starts. */
  stallAfterBytes: number;
  longDeltas: number;
  settleMs: number;
  /** One-delta jobs of the per-job round, and how many run at a time. */
  oneDeltaJobs: number;
  oneDeltaConcurrency: number;
}

export const READY_MS = 30_000;

/** The helper processes of one run: fake backends, coordinator, direct client. */
export interface Helpers {
  backends: Record<(typeof MODELS)[number], { child: Child; url: string }>;
  coord: Child;
  coordUrl: string;
  coordPort: number;
  direct: Child;
  all: Child[];
}

export async function startHelpers(s: Sizes): Promise<Helpers> {
  const fake = (model: string, deltas: number, extra: string[] = []) =>
    new Child(`backend ${model}`, {
      args: [
        FAKE,
        "--kind",
        "vllm",
        "--port",
        "0",
        "--deltas",
        `${deltas}`,
        "--models",
        model,
        ...extra,
      ],
      probe: true,
    });
  const paced = ["--delay-ms", `${s.delayMs}`];
  const children = {
    "bench-burst": fake("bench-burst", s.burstDeltas),
    "bench-paced": fake("bench-paced", s.pacedDeltas, [...paced, "--timestamps"]),
    "bench-slow": fake("bench-slow", s.slowDeltas, paced),
    "bench-long": fake("bench-long", s.longDeltas),
    "bench-job": fake("bench-job", 1),
  };
  const coord = new Child("coordinator", { args: [COORDINATOR] });
  const direct = new Child("direct", { args: [DIRECT] });
  const all = [...Object.values(children), coord, direct];
  try {
    const backends = {} as Helpers["backends"];
    for (const m of MODELS) {
      const ready = JSON.parse(await children[m].nextLine(READY_MS)) as { url: string };
      backends[m] = { child: children[m], url: ready.url };
    }
    const c = JSON.parse(await coord.nextLine(READY_MS)) as { url: string; port: number };
    await direct.nextLine(READY_MS);
    return { backends, coord, coordUrl: c.url, coordPort: c.port, direct, all };
  } catch (err) {
    await Promise.all(all.map((c) => c.stop("SIGTERM", 2000)));
    throw err;
  }
}

export async function stopHelpers(h: Helpers): Promise<void> {
  await Promise.all([
    h.coord.stop("quit", 5000),
    h.direct.stop("quit", 5000),
    ...Object.values(h.backends).map((b) => b.child.stop("SIGTERM", 5000)),
  ]);
}

/**
 * Writes an agent.toml for the helpers in a directory of its own (the run command holds a pid
 * file beside the identity), with a copy of the one identity key and the status server on a
 * free port; `coordUrl` differs for the agent behind the stalling proxy.
 */
export async function agentConfig(dir: string, h: Helpers, coordUrl: string): Promise<string> {
  const home = await Deno.makeTempDir({ dir, prefix: "agent-" });
  await Deno.copyFile(`${dir}/identity.key`, `${home}/identity.key`);
  const backends = MODELS.map((m) => `[[backends]]\nkind = "vllm"\nurl = "${h.backends[m].url}"\n`)
    .join("\n");
  const path = `${home}/agent.toml`;
  await Deno.writeTextFile(
    path,
    `[coordinator]\nurl = "${coordUrl}"\n\n[identity]\nkey_path = "${home}/identity.key"\n\n` +
      `${backends}\n[pricing]\ndefault_input_per_1m = 500000\ndefault_output_per_1m = 750000\n\n` +
      `[limits]\nmax_concurrent = 256\ndrain_timeout_s = 5\n\n` +
      `[observability]\nprometheus_addr = "127.0.0.1:0"\n`,
  );
  return path;
}

export function spawnAgent(
  name: string,
  config: string,
  level: "warn" | "info",
  probe: boolean,
  denoFlags: string[] = AGENT_V8_FLAGS,
): Child {
  return new Child(name, {
    args: [MAIN, "--config", config, "--allow-insecure", "--log-level", level],
    probe,
    denoFlags,
  });
}

/** Waits until agent connection `n` advertises every model; returns its auth_response time. */
export async function connected(h: Helpers, n: number, agent: Child): Promise<number> {
  let r: Reply;
  try {
    r = await h.coord.request(
      { cmd: "agent", n, models: [...MODELS], timeoutMs: READY_MS },
      READY_MS + 5000,
    );
  } catch (err) {
    const st = await agent.status();
    throw new Error(
      `${agent.name} (${st ? `exited ${st.code}` : "running"}) did not connect: ${
        (err as Error).message
      }\n  ${agent.stderrTail.slice(-10).join("\n  ")}`,
    );
  }
  if (r.signatureValid !== true) throw new Error(`agent connection ${n}: bad signature`);
  return r.authResponseAt as number;
}

export interface RoundOut {
  ms: number;
  failed: number;
  failures: string[];
  frames: number;
  bytesMin: number;
  cpuUs: number;
  latency?: { p50: number; p99: number; n: number };
  /** CPU µs of the agent (agent rounds) or of nginx (rounds through it), and of the backend. */
  agentCpuUs: number;
  backendCpuUs: number;
}

function roundOut(r: Reply, agentCpuUs: number, backendCpuUs: number): RoundOut {
  const out = { ...(r as unknown as RoundOut), agentCpuUs, backendCpuUs };
  if (typeof out.ms !== "number") out.ms = NaN; // JSON turned a failed round's NaN into null
  return out;
}

function timeoutFor(deltas: number, delayMs: number): number {
  return 120_000 + deltas * delayMs * 2;
}

/** One round of `jobs` jobs through agent connection `n`. */
export async function agentRound(
  h: Helpers,
  agent: Child,
  n: number,
  model: (typeof MODELS)[number],
  jobs: number,
  deltas: number,
  opts: { timestamps?: boolean; expectBytes?: number; delayMs?: number; concurrency?: number } = {},
): Promise<RoundOut> {
  const backend = h.backends[model].child;
  const timeoutMs = timeoutFor(deltas, opts.delayMs ?? 0);
  const [a0, b0] = await Promise.all([agent.cpuUs(), backend.cpuUs()]);
  const r = await h.coord.request({
    cmd: "round",
    n,
    model,
    jobs,
    deltas,
    timestamps: opts.timestamps === true,
    ...(opts.expectBytes !== undefined ? { expectBytes: opts.expectBytes } : {}),
    ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
    timeoutMs,
  }, timeoutMs + 60_000);
  const [a1, b1] = await Promise.all([agent.cpuUs(), backend.cpuUs()]);
  return roundOut(r, a1 - a0, b1 - b0);
}

/** What a direct round reads through, and how. */
export interface DirectOptions {
  timestamps?: boolean;
  expectBytes?: number;
  delayMs?: number;
  /** fetch (default), http1 (one connection per stream) or pool (the agent's pooled client). */
  client?: string;
  /** Read via this base URL (nginx) instead of the backend's own. */
  url?: string;
  /** At most this many streams at a time (default: all at once). */
  concurrency?: number;
  /** CPU µs of the relay in between (nginx's worker, the minimal Deno relay), read around it. */
  relayCpuUs?: () => number | Promise<number>;
}

/** One round of `streams` direct reads of the same backend (or through nginx). */
export async function directRound(
  h: Helpers,
  model: (typeof MODELS)[number],
  streams: number,
  deltas: number,
  opts: DirectOptions = {},
): Promise<RoundOut> {
  const backend = h.backends[model].child;
  const timeoutMs = timeoutFor(deltas, opts.delayMs ?? 0);
  const b0 = await backend.cpuUs();
  const r0 = await opts.relayCpuUs?.() ?? 0;
  const r = await h.direct.request({
    cmd: "round",
    url: opts.url ?? h.backends[model].url,
    ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
    model,
    streams,
    deltas,
    timestamps: opts.timestamps === true,
    client: opts.client ?? "fetch",
    ...(opts.expectBytes !== undefined ? { expectBytes: opts.expectBytes } : {}),
    timeoutMs,
  }, timeoutMs + 60_000);
  const r1 = await opts.relayCpuUs?.() ?? 0;
  const b1 = await backend.cpuUs();
  return roundOut(r, r1 - r0, b1 - b0);
}

/** Bounds how far helpers' clocks can be from the bench's (stamps must fall in the window). */
export async function clockSkew(h: Helpers): Promise<number> {
  let worst = 0;
  for (const c of [h.coord, h.direct]) {
    for (let i = 0; i < 5; i++) {
      const before = nowEpoch();
      const { t } = await c.request({ cmd: "clock" }, 5000) as unknown as { t: number };
      const after = nowEpoch();
      worst = Math.max(worst, before - t, t - after);
    }
  }
  return Math.max(0, worst);
}

/**
 * The agents of one run, each in its own process and directory, attached one at a time so the
 * coordinator's connection numbers follow spawn order; retiring one checks its exit and its log.
 */
export class Fleet {
  readonly all: Child[] = [];
  readonly notes: string[] = [];
  #next = 0;
  constructor(readonly h: Helpers, readonly dir: string, readonly run: number) {}

  async start(
    name: string,
    opts: { level?: "warn" | "info"; probe?: boolean; coordUrl?: string; denoFlags?: string[] },
  ): Promise<{ agent: Child; n: number; authMs: number }> {
    const config = await agentConfig(this.dir, this.h, opts.coordUrl ?? this.h.coordUrl);
    const agent = spawnAgent(
      name,
      config,
      opts.level ?? "warn",
      opts.probe ?? true,
      opts.denoFlags,
    );
    this.all.push(agent);
    const n = this.#next++;
    const authAt = await connected(this.h, n, agent);
    return { agent, n, authMs: authAt - agent.spawnedAt };
  }

  /** Stops an agent (SIGTERM, graceful drain); it must exit 0 and, at warn, have logged nothing. */
  async retire(agent: Child): Promise<void> {
    const st = await agent.stop("SIGTERM");
    if (st.code !== 0) this.notes.push(`run ${this.run}: ${agent.name} exited with ${st.code}`);
    if (agent.stderrLines > 0 && !agent.name.includes("start-up")) {
      this.notes.push(
        `run ${this.run}: ${agent.name} logged ${agent.stderrLines} lines, last: ` +
          agent.stderrTail.slice(-3).join(" | "),
      );
    }
  }
}
