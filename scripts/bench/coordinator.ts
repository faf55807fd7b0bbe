// Benchmark coordinator process: the test coordinator (tests/harness/coordinator.ts) on its own
// event loop, driven by JSON-line commands. Sends rounds of jobs, times them to the last terminal
// frame, stamps each job_chunk's arrival, and verifies every relayed byte after the clock stops.

import { concatBytes } from "../../src/bytes.ts";
import process from "node:process";
import { type CoordSession, type Frame, TestCoordinator } from "../../tests/harness/coordinator.ts";
import {
  type Command,
  latencyOf,
  nowEpoch,
  type Received,
  serveCommands,
  stampLatencies,
  streamProblem,
  withTimeout,
} from "./common.ts";

const MAX_SESSIONS = 64;

interface Track {
  data: string[];
  arrivals: number[];
  terminal: Frame | undefined;
  terminalAt: number;
  extra: number;
}

interface Round {
  jobs: Map<string, Track>;
  stamp: boolean;
  pending: number;
  done: () => void;
  /** Sends the next job when one ends (rounds with a concurrency limit). */
  next: () => void;
}

const coord = await TestCoordinator.start();
const firstMessageAt = new Map<number, number>();
let round: Round | undefined;
/** Job ids of finished rounds: a frame for one of them afterwards is a relay bug. */
const finished = new Set<string>();
let strayFrames = 0;

function hook(s: CoordSession): void {
  const onFirst = () => {
    firstMessageAt.set(s.index, nowEpoch());
    s.socket.removeEventListener("message", onFirst);
  };
  s.socket.addEventListener("message", onFirst);
  const keep = s.onFrame.bind(s);
  s.onFrame = (f: Frame) => {
    const at = nowEpoch();
    const id = f.job_id;
    const track = typeof id === "string" ? round?.jobs.get(id) : undefined;
    if (track === undefined) {
      if (typeof id === "string" && finished.has(id)) strayFrames++;
      return keep(f);
    }
    if (track.terminal !== undefined) {
      track.extra++;
    } else if (f.type === "job_chunk") {
      track.data.push(f.data as string);
      if (round!.stamp) track.arrivals.push(at);
    } else if (f.type === "job_done" || f.type === "job_error") {
      track.terminal = f;
      track.terminalAt = at;
      if (--round!.pending === 0) round!.done();
      else round!.next();
    }
  };
}

async function watchSessions(): Promise<void> {
  for (let i = 0; i < MAX_SESSIONS; i++) hook(await coord.session(i));
}
// Runs until the process exits (it waits for connections that may never come).
void watchSessions();

async function session(n: number, timeoutMs: number): Promise<CoordSession> {
  return await withTimeout(coord.session(n), timeoutMs, `agent connection ${n}`);
}

/** Waits until agent connection `n` authenticated and advertised every one of `models`. */
async function agent(cmd: Command): Promise<Record<string, unknown>> {
  const timeoutMs = cmd.timeoutMs as number;
  const models = cmd.models as string[];
  const s = await session(cmd.n as number, timeoutMs);
  const advertises = (f: Frame) =>
    f.type === "capabilities" && Array.isArray(f.models) &&
    models.every((m) => (f.models as { model_id: string }[]).some((a) => a.model_id === m));
  await withTimeout(s.waitFor(advertises), timeoutMs, `capabilities of connection ${cmd.n}`);
  return {
    authResponseAt: firstMessageAt.get(s.index),
    signatureValid: s.signatureValid,
    capabilitiesAt: nowEpoch(),
  };
}

/**
 * Sends `jobs` jobs for `model` at once (or `concurrency` at a time, the next as one ends) and
 * waits for every terminal frame.
 */
async function runRound(cmd: Command): Promise<Record<string, unknown>> {
  const s = await session(cmd.n as number, 1000);
  const count = cmd.jobs as number;
  const deltas = cmd.deltas as number;
  const stamp = cmd.timestamps === true;
  const expectBytes = cmd.expectBytes as number | undefined;
  const timeoutMs = cmd.timeoutMs as number;
  const { promise: allDone, resolve } = Promise.withResolvers<void>();
  const ids = Array.from({ length: count }, () => crypto.randomUUID());
  let sent = 0;
  const send = () => {
    if (sent < count) {
      s.sendJob({ job_id: ids[sent++]!, model_id: cmd.model as string, deadline_ms: timeoutMs });
    }
  };
  const r: Round = { jobs: new Map(), stamp, pending: count, done: resolve, next: send };
  for (const id of ids) {
    r.jobs.set(id, { data: [], arrivals: [], terminal: undefined, terminalAt: 0, extra: 0 });
  }
  round = r;
  const straysBefore = strayFrames;
  const cpu0 = process.cpuUsage();
  const t0 = nowEpoch();
  const first = Math.min(count, Math.max(1, Number(cmd.concurrency ?? count) || count));
  for (let i = 0; i < first; i++) send();
  let timedOut = false;
  try {
    await withTimeout(allDone, timeoutMs, "round");
  } catch {
    timedOut = true;
  }
  const cpu1 = process.cpuUsage();
  round = undefined;
  for (const id of ids) finished.add(id);
  // The clock stopped at the last terminal frame; everything below is verification.
  const tracks = [...r.jobs.values()];
  const t1 = Math.max(...tracks.map((t) => t.terminalAt));
  const failures: string[] = [];
  const bytes: number[] = [];
  const latencies: number[] = [];
  let frames = 0;
  for (const [id, t] of r.jobs) {
    frames += t.data.length;
    const pieces = t.data.map((d) => Uint8Array.fromBase64(d));
    const received: Received = { pieces, arrivals: t.arrivals };
    const total = pieces.reduce((n, p) => n + p.length, 0);
    bytes.push(total);
    const f = t.terminal;
    const problem = f === undefined
      ? "no terminal frame"
      : f.type !== "job_done"
      ? `job_error ${f.error_code}: ${f.message}`
      : (f.tokens as { output: number }).output !== deltas
      ? `job_done reports ${(f.tokens as { output: number }).output} output tokens`
      : t.extra > 0
      ? `${t.extra} frames after the terminal frame`
      : expectBytes !== undefined && total !== expectBytes
      ? `${total} bytes relayed, ${expectBytes} expected`
      : streamProblem(concatBytes(pieces), deltas, stamp);
    if (problem !== undefined) failures.push(`${id}: ${problem}`);
    if (stamp) latencies.push(...stampLatencies(received));
  }
  if (strayFrames > straysBefore) {
    failures.push(`${strayFrames - straysBefore} frames for jobs of earlier rounds`);
  }
  return {
    ms: timedOut ? NaN : t1 - t0,
    timedOut,
    jobs: count,
    failures: failures.slice(0, 5),
    failed: failures.length,
    frames,
    bytesMin: Math.min(...bytes),
    bytesMax: Math.max(...bytes),
    bytesTotal: bytes.reduce((a, b) => a + b, 0),
    strayFrames,
    ...(stamp ? { latency: latencyOf(latencies) } : {}),
    cpuUs: cpu1.user - cpu0.user + cpu1.system - cpu0.system,
  };
}

console.log(JSON.stringify({ url: coord.url, port: coord.port }));
await serveCommands((cmd) => {
  switch (cmd.cmd) {
    case "agent":
      return agent(cmd);
    case "round":
      return runRound(cmd);
    case "clock":
      return Promise.resolve({ t: nowEpoch() });
    default:
      return Promise.reject(new Error(`unknown command ${cmd.cmd}`));
  }
});
await coord.close();
Deno.exit(0);
