// The soak (issue 6): thousands of jobs of random sizes through the real agent (main.ts as a
// subprocess, so its RSS is its own) between the test coordinator and two plan backends, with
// cancels, deadlines, unknown models and backend failures. Checks every job as it ends.

import { concatBytes } from "../../src/bytes.ts";
import { type CoordSession, type Frame, TestCoordinator } from "./coordinator.ts";
import {
  type Expected,
  expectedOf,
  type Plan,
  type PlanBackend,
  prng,
  startPlanBackend,
} from "./plan_backend.ts";
import { AgentProcess, agentToml, within } from "./agent_process.ts";

export interface SoakOptions {
  /** Jobs measured (after the warm-up). */
  jobs: number;
  /** Jobs run first, checked the same way, before the RSS baseline is taken (default 0). */
  warmup?: number;
  seed?: number;
  /** The agent's limits.max_concurrent (default 16). */
  maxConcurrent?: number;
  /** Measured jobs after which RSS is the baseline (default 1,000, or a tenth of a short run). */
  baselineAfter?: number;
  /** Called every `progressEvery` dispatched jobs (default 1,000). */
  onProgress?: (done: number, rss: number) => void;
  progressEvery?: number;
  /** Extra environment for the agent process (e.g. DENO_V8_FLAGS). */
  agentEnv?: Record<string, string>;
}

export interface SoakReport {
  jobs: number;
  seconds: number;
  /** Jobs by how they ended: job_done, an error code, or "cancelled" (no terminal frame). */
  outcomes: Record<string, number>;
  cancelsSent: number;
  /** job_done jobs whose relayed bytes equal what the backend sent, and all of them. */
  exact: number;
  done: number;
  relayedBytes: number;
  warmup: number;
  /** RSS after the first `baselineAfter` jobs of the run (cold: before any warm-up). */
  rssCold: number;
  /** RSS after the first `baselineAfter` measured jobs (after the warm-up). */
  rssBaseline: number;
  baselineAfter: number;
  rssEnd: number;
  rssPeak: number;
  /** Broken invariants, one line each (empty when the soak passed). */
  violations: string[];
}

type Mode = NonNullable<Plan["mode"]>;

interface JobRecord {
  id: string;
  n: number;
  model: string;
  plan: Plan;
  deadlineMs: number;
  /** A deadline tight enough that job_done or backend_timeout may both happen. */
  racy: boolean;
  cancel: "none" | "at_once" | "after_first_chunk" | "after_ms";
  cancelled: boolean;
  pieces: Uint8Array[];
  bytes: number;
  terminal: Frame | undefined;
  terminals: number;
  afterTerminal: number;
  settle: () => void;
}

const MODELS = ["soak-a", "soak-b", "soak-shared"];

/** Picks a job: model, plan, deadline and cancel, from the soak's seeded PRNG. */
function pick(rnd: () => number, n: number, seed: number): Omit<JobRecord, "id" | "settle"> {
  const r = rnd();
  const mode: Mode = r < 0.80
    ? "ok"
    : r < 0.84
    ? "http500"
    : r < 0.88
    ? "break"
    : r < 0.91
    ? "error_event"
    : r < 0.95
    ? "stall"
    : "hang";
  const big = rnd() < 0.02;
  const deltas = big ? 2000 + Math.floor(rnd() * 4000) : Math.floor(rnd() * 300);
  const plan: Plan = {
    seed: seed * 1_000_003 + n,
    deltas,
    maxDelta: big ? 200 : 40,
    mode,
    at: Math.floor(rnd() * (deltas + 1)),
    ...(big ? { maxPiece: 16384 } : {}),
  };
  const model = rnd() < 0.01 ? "soak-unknown" : MODELS[Math.floor(rnd() * MODELS.length)]!;
  const waits = mode === "stall" || mode === "hang";
  const racy = mode === "ok" && rnd() < 0.03;
  const deadlineMs = waits
    ? 100 + Math.floor(rnd() * 200)
    : racy
    ? 1 + Math.floor(rnd() * 30)
    : 60_000;
  const c = rnd();
  const cancel = c < 0.02
    ? "at_once"
    : c < 0.05
    ? "after_first_chunk"
    : c < 0.07
    ? "after_ms"
    : "none";
  return {
    n,
    model,
    plan,
    deadlineMs,
    racy,
    cancel,
    cancelled: false,
    pieces: [],
    bytes: 0,
    terminal: undefined,
    terminals: 0,
    afterTerminal: 0,
  };
}

function startsWith(whole: Uint8Array, prefix: Uint8Array): boolean {
  if (prefix.length > whole.length) return false;
  for (let i = 0; i < prefix.length; i++) if (whole[i] !== prefix[i]) return false;
  return true;
}

/** What is wrong with how a job ended, or undefined. */
function verdict(j: JobRecord, relayed: Uint8Array): string | undefined {
  const t = j.terminal;
  const where =
    `job ${j.n} (${j.model}, ${j.plan.mode}, ${j.plan.deltas} deltas, cancel ${j.cancel})`;
  if (j.terminals > 1) return `${where}: ${j.terminals} terminal frames`;
  if (j.afterTerminal > 0) return `${where}: ${j.afterTerminal} frames after its terminal frame`;
  if (j.model === "soak-unknown") {
    return t?.error_code === "model_not_loaded" || t?.error_code === "out_of_capacity" ||
        (j.cancelled && !t)
      ? undefined
      : `${where}: ended ${t?.error_code ?? t?.type}, want model_not_loaded`;
  }
  const want: Expected = expectedOf(j.plan, j.model);
  if (!t) return j.cancelled ? prefixCheck() : `${where}: no terminal frame`;
  if (t.type === "job_error" && t.error_code === "out_of_capacity") {
    return relayed.length === 0 ? undefined : `${where}: out_of_capacity after relaying bytes`;
  }
  if (t.type === "job_done") {
    if (want.outcome !== "job_done") return `${where}: job_done, want ${want.outcome}`;
    if (relayed.length !== want.body.length || !startsWith(relayed, want.body)) {
      return `${where}: relayed ${relayed.length} bytes differ from the ${want.body.length} sent`;
    }
    const tokens = t.tokens as Record<string, number>;
    if (tokens.input !== want.input || tokens.output !== want.output) {
      return `${where}: tokens ${JSON.stringify(tokens)}, want ${want.input}/${want.output}`;
    }
    return undefined;
  }
  const code = t.error_code as string;
  if (j.racy && code === "backend_timeout") return prefixCheck();
  if (code !== want.outcome) return `${where}: ${code}, want ${want.outcome}`;
  if (code === "backend_timeout") return prefixCheck();
  if (relayed.length !== want.body.length || !startsWith(relayed, want.body)) {
    return `${where}: relayed ${relayed.length} bytes, want the ${want.body.length} sent`;
  }
  if (t.tokens_emitted !== want.output) {
    return `${where}: tokens_emitted ${t.tokens_emitted}, want ${want.output}`;
  }
  return undefined;

  function prefixCheck(): string | undefined {
    return startsWith(want.body, relayed)
      ? undefined
      : `${where}: relayed bytes are not a prefix of what the backend sent`;
  }
}

/**
 * Runs a soak and returns its figures; throws only when the rig itself fails (the agent never
 * authenticates, a job is never answered in time).
 *
 * @example
 * ```ts
 * const report = await runSoak({ jobs: 500 });
 * if (report.violations.length) console.error(report.violations.join("\n"));
 * ```
 */
export async function runSoak(opts: SoakOptions): Promise<SoakReport> {
  const seed = opts.seed ?? 1;
  const rnd = prng(seed);
  const maxConcurrent = opts.maxConcurrent ?? 16;
  const window = Math.max(1, maxConcurrent - 2);
  const warmup = opts.warmup ?? 0;
  const total = warmup + opts.jobs;
  const baselineAfter = opts.baselineAfter ?? Math.min(1000, Math.ceil(opts.jobs / 10));
  const progressEvery = opts.progressEvery ?? 1000;
  const coord = await TestCoordinator.start();
  const a: PlanBackend = startPlanBackend(["soak-a", "soak-shared"]);
  const b: PlanBackend = startPlanBackend(["soak-b", "soak-shared"]);
  const dir = await Deno.makeTempDir({ prefix: "usepod-soak-" });
  const configPath = `${dir}/agent.toml`;
  await Deno.writeTextFile(
    configPath,
    agentToml({
      coordinatorUrl: coord.url,
      keyPath: `${dir}/identity.key`,
      backends: `[[backends]]\nkind = "vllm"\nurl = "${a.url}"\n\n` +
        `[[backends]]\nkind = "vllm"\nurl = "${b.url}/"\n`,
      maxConcurrent,
      drainTimeoutS: 5,
      logLevel: "error",
    }),
  );
  const agent = new AgentProcess(
    ["run", "--config", configPath, "--allow-insecure"],
    opts.agentEnv ? { env: opts.agentEnv } : {},
  );
  const jobs = new Map<string, JobRecord>();
  const violations: string[] = [];
  const outcomes: Record<string, number> = {};
  let exact = 0, done = 0, relayedBytes = 0, cancelsSent = 0, finished = 0;
  let rssCold = 0, rssBaseline = 0, rssPeak = 0;
  const started = performance.now();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  try {
    const s: CoordSession = await within(coord.authenticated(0), 30_000, "the agent authenticates");
    await within(s.waitFor((f) => f.type === "capabilities"), 30_000, "capabilities");

    const finish = (j: JobRecord) => {
      const relayed = concatBytes(j.pieces);
      j.pieces = [];
      const bad = verdict(j, relayed);
      if (bad) violations.push(bad);
      const outcome = j.terminal
        ? (j.terminal.error_code as string | undefined) ?? "job_done"
        : "cancelled";
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      if (outcome === "job_done") {
        done++;
        if (!bad) exact++;
      }
      relayedBytes += relayed.length;
    };
    // Every frame, as it arrives (a waiter that never matches), then forgotten.
    void s.waitFor((f) => {
      const j = typeof f.job_id === "string" ? jobs.get(f.job_id) : undefined;
      if (!j) return false;
      if (j.terminal) {
        j.afterTerminal++;
        return false;
      }
      if (f.type === "job_chunk") {
        const piece = Uint8Array.fromBase64(f.data as string);
        j.pieces.push(piece);
        j.bytes += piece.length;
        if (j.cancel === "after_first_chunk" && !j.cancelled) cancelNow(j);
      } else if (f.type === "job_done" || f.type === "job_error") {
        j.terminal = f;
        j.terminals++;
        j.settle();
      }
      return false;
    });
    const cancelNow = (j: JobRecord) => {
      j.cancelled = true;
      cancelsSent++;
      s.cancel(j.id);
      j.settle();
    };

    let inFlight = 0;
    let wake: (() => void) | undefined;
    const deadlineOf = (j: JobRecord) => j.deadlineMs + 10_000;
    for (let n = 0; n < total; n++) {
      for (let spins = 0; inFlight >= window && spins < 1_000_000; spins++) {
        await within(new Promise<void>((r) => (wake = r)), 60_000, "a slot frees up");
      }
      const picked = pick(rnd, n, seed);
      const settled = Promise.withResolvers<void>();
      const id = crypto.randomUUID();
      let once = false;
      const j: JobRecord = {
        ...picked,
        id,
        settle: () => {
          if (once) return;
          once = true;
          settled.resolve();
        },
      };
      jobs.set(id, j);
      inFlight++;
      s.sendJob({
        job_id: id,
        model_id: j.model,
        deadline_ms: j.deadlineMs,
        request: { plan: j.plan, messages: [{ role: "user", content: `soak ${n}` }] },
      });
      if (j.cancel === "at_once") cancelNow(j);
      else if (j.cancel === "after_ms") {
        const t = setTimeout(() => {
          timers.delete(t);
          if (!j.terminal && !j.cancelled) cancelNow(j);
        }, Math.floor(rnd() * 40));
        timers.add(t);
      }
      void within(settled.promise, deadlineOf(j), `job ${n} answered`).then(
        () => {
          inFlight--;
          if (!j.cancelled) {
            finish(j);
            jobs.delete(j.id);
          }
          if (++finished % 100 === 0) s.frames.length = 0;
          wake?.();
        },
        (err) => {
          violations.push((err as Error).message);
          inFlight--;
          wake?.();
        },
      );
      if (finished >= baselineAfter && rssCold === 0) rssCold = await agent.rss();
      if (finished >= warmup + baselineAfter && rssBaseline === 0) rssBaseline = await agent.rss();
      if (n % progressEvery === progressEvery - 1) {
        const rss = await agent.rss();
        rssPeak = Math.max(rssPeak, rss);
        opts.onProgress?.(n + 1, rss);
      }
    }
    for (let spins = 0; inFlight > 0 && spins < 100_000; spins++) {
      await within(new Promise<void>((r) => (wake = r)), 60_000, "the last jobs end");
    }
    for (const t of timers) clearTimeout(t);
    // Barrier: a full set of quick jobs all succeed, so every slot was freed; after it, every
    // frame of the cancelled jobs has arrived.
    const barrier = Array.from({ length: maxConcurrent }, (_, i) =>
      s.collect(s.sendJob({
        model_id: "soak-a",
        request: { plan: { seed: -1 - i, deltas: 2 } },
      })));
    for (const r of await within(Promise.all(barrier), 30_000, "the barrier jobs")) {
      if (r.terminal.type !== "job_done") {
        violations.push(`barrier job ended ${r.terminal.error_code}: a slot was never freed`);
      }
    }
    for (const j of jobs.values()) finish(j); // the cancelled ones
    if (a.open + b.open > 0) violations.push(`${a.open + b.open} backend requests still open`);
    if (coord.sessions.length !== 1) {
      violations.push(`${coord.sessions.length} connections: the agent reconnected`);
    }
    const rssEnd = await agent.rss();
    rssPeak = Math.max(rssPeak, rssEnd);
    if (rssCold === 0) rssCold = rssEnd;
    if (rssBaseline === 0) rssBaseline = rssEnd;
    const status = await agent.stop("SIGTERM");
    if (status.code !== 0) violations.push(`the agent exited ${status.code}:\n${agent.tail()}`);
    return {
      jobs: total,
      seconds: (performance.now() - started) / 1000,
      outcomes,
      cancelsSent,
      exact,
      done,
      relayedBytes,
      warmup,
      rssCold,
      rssBaseline,
      baselineAfter,
      rssEnd,
      rssPeak,
      violations,
    };
  } finally {
    for (const t of timers) clearTimeout(t);
    await agent.stop("SIGKILL");
    await coord.close();
    await a.close();
    await b.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The report as a few lines for people. */
export function formatReport(r: SoakReport): string {
  const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
  const pct = (a: number, b: number) => `${((b / a - 1) * 100).toFixed(1)}%`;
  const outcomes = Object.entries(r.outcomes).sort((x, y) => y[1] - x[1])
    .map(([k, v]) => `${k} ${v}`).join(", ");
  return [
    `soak: ${r.jobs} jobs in ${r.seconds.toFixed(1)} s (${(r.jobs / r.seconds).toFixed(0)} jobs/s)`,
    `  outcomes: ${outcomes}; cancels sent ${r.cancelsSent}`,
    `  job_done byte-exact: ${r.exact}/${r.done}; relayed ${mb(r.relayedBytes)}`,
    `  agent RSS: ${mb(r.rssCold)} after the first ${r.baselineAfter} jobs (cold), ` +
    (r.warmup > 0
      ? `${mb(r.rssBaseline)} after ${r.baselineAfter} more following a ${r.warmup}-job warm-up, `
      : "") +
    `${mb(r.rssEnd)} at the end; peak ${mb(r.rssPeak)}`,
    `  RSS growth: ${pct(r.rssCold, r.rssEnd)} from cold` +
    (r.warmup > 0 ? `, ${pct(r.rssBaseline, r.rssEnd)} from the warm baseline` : ""),
    `  violations: ${r.violations.length}`,
    ...r.violations.slice(0, 20).map((v) => `    ${v}`),
  ].join("\n");
}
