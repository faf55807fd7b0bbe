// What one benchmark run does (issue 7's scenario, or --quick's tiny one): the one-delta-job,
// burst, paced, slow-jobs, start-up and slow-coordinator phases over fresh helpers and agents, with
// nginx relaying the same streams where it is installed (issue 13), turned into the figures of
// report.ts; and --profile, the agent under --cpu-prof for one phase.

import { median } from "./common.ts";
import { findNginx, Nginx } from "./nginx.ts";
import { AGENT_V8_FLAGS } from "../build.ts";
import { Child, PeakRss } from "./procs.ts";
import { summarise } from "./profile.ts";
import { StallProxy } from "./proxy.ts";
import { FIGURES, type Figures } from "./report.ts";
import {
  agentRound,
  clockSkew,
  directRound,
  Fleet,
  type Helpers,
  MODELS,
  READY_MS,
  type RoundOut,
  type Sizes,
  startHelpers,
  stopHelpers,
} from "./stack.ts";

const encoder = new TextEncoder();
const DENO_RELAY = new URL("./deno_relay.ts", import.meta.url).pathname;

export const FULL: Sizes = {
  burstJobs: 64,
  burstDeltas: 500,
  rounds: 5,
  pacedJobs: 16,
  pacedDeltas: 500,
  delayMs: 20,
  slowJobs: 256,
  slowDeltas: 150,
  stallMs: 5000,
  stallAfterBytes: 1024 * 1024,
  longDeltas: 5000,
  settleMs: 1000,
  oneDeltaJobs: 512,
  oneDeltaConcurrency: 16,
};

export const QUICK: Sizes = {
  burstJobs: 8,
  burstDeltas: 50,
  rounds: 1,
  pacedJobs: 4,
  pacedDeltas: 20,
  delayMs: 20,
  slowJobs: 16,
  slowDeltas: 10,
  stallMs: 300,
  stallAfterBytes: 4096,
  longDeltas: 500,
  settleMs: 200,
  oneDeltaJobs: 32,
  oneDeltaConcurrency: 8,
};

function say(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

const mib = (kb: number) => kb / 1024;

/** Collects the failures of every round for the report (and the count for the figure). */
class Failures {
  count = 0;
  readonly lines: string[] = [];
  add(what: string, r: RoundOut): void {
    if (r.failed > 0 || !Number.isFinite(r.ms)) {
      this.count += Math.max(r.failed, 1);
      this.lines.push(`${what}: ${r.failed} failed; ${r.failures.join("; ")}`);
    }
  }
}

/** nginx relaying `/<model>/` to each fake backend, or undefined when it is not installed. */
async function startNginx(h: Helpers, dir: string): Promise<Nginx | undefined> {
  const bin = findNginx();
  if (bin === undefined) return undefined;
  return await Nginx.start(bin, dir, Object.fromEntries(MODELS.map((m) => [m, h.backends[m].url])));
}

/**
 * One-delta jobs, `oneDeltaConcurrency` at a time: through the agent (a warm-up round, then the
 * counted one), then the same requests through nginx from the direct client (keep-alive fetch).
 */
async function oneDeltaJobs(
  s: Sizes,
  h: Helpers,
  agent: Child,
  n: number,
  nginx: Nginx | undefined,
  f: Figures,
  fails: Failures,
): Promise<void> {
  say(`one-delta jobs: ${s.oneDeltaJobs}, ${s.oneDeltaConcurrency} at a time`);
  await denoRelayJobs(s, h, f, fails);
  const J = { concurrency: s.oneDeltaConcurrency };
  const warm = Math.min(s.oneDeltaJobs, 64);
  fails.add("one-delta warm-up agent", await agentRound(h, agent, n, "bench-job", warm, 1, J));
  const a = await agentRound(h, agent, n, "bench-job", s.oneDeltaJobs, 1, J);
  fails.add("one-delta agent", a);
  f.jobAgentCpuUs = a.agentCpuUs / s.oneDeltaJobs;
  f.jobAgentMs = a.ms;
  if (nginx === undefined) return;
  const N = { ...J, url: nginx.url("bench-job"), relayCpuUs: () => nginx.cpuUs() };
  fails.add("one-delta warm-up nginx", await directRound(h, "bench-job", warm, 1, N));
  const x = await directRound(h, "bench-job", s.oneDeltaJobs, 1, N);
  fails.add("one-delta nginx", x);
  f.jobNginxCpuUs = x.agentCpuUs / s.oneDeltaJobs;
  f.jobCpuRatioVsNginx = f.jobAgentCpuUs / f.jobNginxCpuUs;
  f.jobDenoRelayRatioVsNginx = f.jobDenoRelayCpuUs / f.jobNginxCpuUs;
}

/** The smallest relay Deno can be (deno_relay.ts), driven like nginx: the floor for a Deno agent. */
async function denoRelayJobs(s: Sizes, h: Helpers, f: Figures, fails: Failures): Promise<void> {
  const relay = new Child("minimal Deno relay", {
    args: [DENO_RELAY, h.backends["bench-job"].url],
    probe: true,
    denoFlags: AGENT_V8_FLAGS,
  });
  try {
    const { url } = JSON.parse(await relay.nextLine(READY_MS)) as { url: string };
    const R = { concurrency: s.oneDeltaConcurrency, url, relayCpuUs: () => relay.cpuUs() };
    const warm = Math.min(s.oneDeltaJobs, 64);
    fails.add("one-delta warm-up Deno relay", await directRound(h, "bench-job", warm, 1, R));
    const x = await directRound(h, "bench-job", s.oneDeltaJobs, 1, R);
    fails.add("one-delta Deno relay", x);
    f.jobDenoRelayCpuUs = x.agentCpuUs / s.oneDeltaJobs;
  } finally {
    await relay.stop("quit", 5000);
  }
}

/** --per-job: the one-delta-job figures alone (fresh helpers, one agent, nginx). */
export async function perJobOnce(
  s: Sizes,
  dir: string,
  run: number,
): Promise<{ f: Figures; notes: string[] }> {
  const f = Object.fromEntries(Object.keys(FIGURES).map((k) => [k, NaN])) as Figures;
  const fails = new Failures();
  const h = await startHelpers(s);
  const fleet = new Fleet(h, dir, run);
  let nginx: Nginx | undefined;
  try {
    nginx = await startNginx(h, dir);
    const { agent, n } = await fleet.start("agent", {});
    await new Promise((r) => setTimeout(r, s.settleMs));
    f.rssIdleMb = mib(agent.rssKb());
    await oneDeltaJobs(s, h, agent, n, nginx, f, fails);
    await fleet.retire(agent);
    f.failedJobs = fails.count;
    return { f, notes: [...fleet.notes, ...fails.lines.map((l) => `run ${run}: ${l}`)] };
  } finally {
    await Promise.all(fleet.all.map((a) => a.stop("SIGTERM", 10_000)));
    await nginx?.stop();
    await stopHelpers(h);
  }
}

/** One full run: fresh helpers and agents; every figure of issues 7 and 13. */
export async function runOnce(
  s: Sizes,
  dir: string,
  run: number,
): Promise<{ f: Figures; notes: string[] }> {
  const f = Object.fromEntries(Object.keys(FIGURES).map((k) => [k, NaN])) as Figures;
  const fails = new Failures();
  const h = await startHelpers(s);
  const fleet = new Fleet(h, dir, run);
  let proxy: StallProxy | undefined;
  let nginx: Nginx | undefined;
  try {
    f.clockSkewMs = await clockSkew(h);
    nginx = await startNginx(h, dir);
    const viaNginx = (model: (typeof MODELS)[number]) =>
      nginx && { client: "http1", url: nginx.url(model), relayCpuUs: () => nginx!.cpuUs() };

    // 3 (idle RSS), 1 and 2 on the main agent: warn level, CPU probe preloaded.
    const { agent, n: main } = await fleet.start("agent", {});
    await new Promise((r) => setTimeout(r, s.settleMs));
    f.rssIdleMb = mib(agent.rssKb());
    f.rssBareDenoMb = await bareDenoRssMb();

    // Issue 13: one-delta jobs, the per-job cost.
    await oneDeltaJobs(s, h, agent, main, nginx, f, fails);

    // 1: burst; agent, direct fetch and direct raw HTTP/1.1 alternate after a warm-up of each.
    say(`run ${run}: burst ${s.burstJobs} × ${s.burstDeltas}, ${s.rounds} rounds each`);
    const B = { jobs: s.burstJobs, deltas: s.burstDeltas };
    const peakBurst = new PeakRss(agent);
    const warmDirect = await directRound(h, "bench-burst", B.jobs, B.deltas);
    fails.add("burst warm-up direct", warmDirect);
    const expectBytes = warmDirect.bytesMin;
    const viaAgent: RoundOut[] = [];
    const viaDirect: RoundOut[] = [];
    const viaHttp1: RoundOut[] = [];
    const viaNginxRounds: RoundOut[] = [];
    const burstNginx = viaNginx("bench-burst");
    for (let i = 0; i <= s.rounds; i++) {
      const what = i === 0 ? "warm-up" : `round ${i}`;
      const a = await agentRound(h, agent, main, "bench-burst", B.jobs, B.deltas, { expectBytes });
      fails.add(`burst agent ${what}`, a);
      const d = await directRound(h, "bench-burst", B.jobs, B.deltas, { expectBytes });
      fails.add(`burst direct ${what}`, d);
      const r = await directRound(h, "bench-burst", B.jobs, B.deltas, {
        expectBytes,
        client: "http1",
      });
      fails.add(`burst raw HTTP/1.1 ${what}`, r);
      const x = burstNginx &&
        await directRound(h, "bench-burst", B.jobs, B.deltas, { expectBytes, ...burstNginx });
      if (x) fails.add(`burst nginx ${what}`, x);
      if (i === 0) continue;
      viaAgent.push(a);
      viaDirect.push(d);
      viaHttp1.push(r);
      if (x) viaNginxRounds.push(x);
    }
    f.rssPeakBurstMb = mib(peakBurst.stop().peakKb);
    const deltas = s.rounds * B.jobs * B.deltas;
    const sum = (xs: RoundOut[], k: (r: RoundOut) => number) => xs.reduce((n, r) => n + k(r), 0);
    const times = (xs: RoundOut[]) => xs.map((r) => r.ms).filter(Number.isFinite);
    const best = (xs: RoundOut[]) => times(xs).length ? Math.min(...times(xs)) : NaN;
    f.burstAgentBestMs = best(viaAgent);
    f.burstDirectBestMs = best(viaDirect);
    f.burstAgentMedianMs = median(times(viaAgent));
    f.burstDirectMedianMs = median(times(viaDirect));
    f.burstThroughputRatio = f.burstDirectBestMs / f.burstAgentBestMs;
    f.burstAgentCpuUsPerDelta = sum(viaAgent, (r) => r.agentCpuUs) / deltas;
    f.burstDirectCpuUsPerDelta = sum(viaDirect, (r) => r.cpuUs) / deltas;
    f.burstCpuRatioVsDirect = f.burstAgentCpuUsPerDelta / f.burstDirectCpuUsPerDelta;
    if (burstNginx) {
      f.burstNginxCpuUsPerDelta = sum(viaNginxRounds, (r) => r.agentCpuUs) / deltas;
      f.burstCpuRatioVsNginx = f.burstAgentCpuUsPerDelta / f.burstNginxCpuUsPerDelta;
    }
    f.burstCoordCpuUsPerDelta = sum(viaAgent, (r) => r.cpuUs) / deltas;
    f.burstDeltasPerFrame = deltas / sum(viaAgent, (r) => r.frames);
    const busy = (xs: RoundOut[]) => sum(xs, (r) => r.backendCpuUs) / 1000 / sum(xs, (r) => r.ms);
    f.burstBackendBusyAgent = busy(viaAgent);
    f.burstBackendBusyDirect = busy(viaDirect);
    f.burstHttp1BestMs = best(viaHttp1);
    f.burstHttp1Ratio = f.burstDirectBestMs / f.burstHttp1BestMs;

    // 2: paced, timestamped deltas; agent then direct.
    say(`run ${run}: paced ${s.pacedJobs} × ${s.pacedDeltas}, a delta every ${s.delayMs} ms`);
    const P = { jobs: s.pacedJobs, deltas: s.pacedDeltas, delayMs: s.delayMs, timestamps: true };
    const pa = await agentRound(h, agent, main, "bench-paced", P.jobs, P.deltas, P);
    fails.add("paced agent", pa);
    const pd = await directRound(h, "bench-paced", P.jobs, P.deltas, P);
    fails.add("paced direct", pd);
    // The floor: the same paced streams read by the raw HTTP/1.1 client and nothing else.
    const pf = await directRound(h, "bench-paced", P.jobs, P.deltas, { ...P, client: "http1" });
    fails.add("paced raw HTTP/1.1 direct", pf);
    const pacedNginx = viaNginx("bench-paced");
    if (pacedNginx) {
      const px = await directRound(h, "bench-paced", P.jobs, P.deltas, { ...P, ...pacedNginx });
      fails.add("paced nginx", px);
      f.pacedNginxCpuUsPerDelta = px.agentCpuUs / (P.jobs * P.deltas);
      f.pacedCpuRatioVsNginx = pa.agentCpuUs / px.agentCpuUs;
      f.pacedFloorRatioVsNginx = pf.cpuUs / px.agentCpuUs;
    }
    f.pacedAgentCpuUsPerDelta = pa.agentCpuUs / (P.jobs * P.deltas);
    f.pacedDirectCpuUsPerDelta = pd.cpuUs / (P.jobs * P.deltas);
    f.pacedFloorCpuUsPerDelta = pf.cpuUs / (P.jobs * P.deltas);
    f.latencyAgentP50Ms = pa.latency?.p50 ?? NaN;
    f.latencyAgentP99Ms = pa.latency?.p99 ?? NaN;
    f.latencyDirectP50Ms = pd.latency?.p50 ?? NaN;
    f.latencyDirectP99Ms = pd.latency?.p99 ?? NaN;
    f.addedLatencyP50Ms = f.latencyAgentP50Ms - f.latencyDirectP50Ms;
    f.addedLatencyP99Ms = f.latencyAgentP99Ms - f.latencyDirectP99Ms;
    await fleet.retire(agent);

    // 3: many slow jobs at once, on a fresh agent (the burst's heap would otherwise count).
    say(`run ${run}: ${s.slowJobs} slow jobs × ${s.slowDeltas}, a delta every ${s.delayMs} ms`);
    const slowAgent = await fleet.start("agent for slow jobs", {});
    const peakSlow = new PeakRss(slowAgent.agent);
    const slow = await agentRound(
      h,
      slowAgent.agent,
      slowAgent.n,
      "bench-slow",
      s.slowJobs,
      s.slowDeltas,
      { delayMs: s.delayMs },
    );
    fails.add("slow jobs", slow);
    f.rssPeakSlowMb = mib(peakSlow.stop().peakKb);
    f.slowAgentCpuUsPerDelta = slow.agentCpuUs / (s.slowJobs * s.slowDeltas);
    await fleet.retire(slowAgent.agent);

    // 4: start-up of a fresh agent at info level (for its first log line), without the probe.
    const fresh = await fleet.start("agent start-up", { level: "info", probe: false });
    f.startupAuthMs = fresh.authMs;
    f.startupFirstLogMs = (fresh.agent.firstStderrAt ?? NaN) - fresh.agent.spawnedAt;
    await fleet.retire(fresh.agent);

    // 5: slow coordinator: a proxy stops reading from the agent; fresh agents, and a control
    // with the same bytes and no stall.
    say(`run ${run}: slow coordinator, reads stop for ${s.stallMs} ms`);
    proxy = new StallProxy(h.coordPort);
    const viaProxy = h.coordUrl.replace(`:${h.coordPort}/`, `:${proxy.port}/`);
    const memoryRound = async (
      name: string,
      model: "bench-burst" | "bench-long",
      deltas: number,
      stall: boolean,
    ) => {
      const a = await fleet.start(name, stall ? { coordUrl: viaProxy } : {});
      const peak = new PeakRss(a.agent);
      const stalls = proxy!.stalls.length;
      let duringMb = NaN;
      if (stall) {
        // Never settles when the stall does not start: it holds no timer.
        void proxy!.arm(s.stallAfterBytes, s.stallMs).then(() => {
          duringMb = mib(peak.peekKb());
        });
      }
      const r = await agentRound(h, a.agent, a.n, model, s.burstJobs, deltas, {
        ...(model === "bench-burst" ? { expectBytes } : {}),
      });
      fails.add(name, r);
      const peakMb = mib(peak.stop().peakKb);
      if (stall && proxy!.stalls.length === stalls) {
        fleet.notes.push(`run ${run}: ${name}: the stall never started (round too small)`);
      }
      await fleet.retire(a.agent);
      return { ms: r.ms, peakMb, duringMb };
    };
    const short = await memoryRound("agent, stalled burst", "bench-burst", s.burstDeltas, true);
    f.stallPeakRssMb = short.peakMb;
    f.stallMs = short.ms;
    const long = await memoryRound("agent, stalled 10× burst", "bench-long", s.longDeltas, true);
    f.stallLongPeakRssMb = long.peakMb;
    f.stallLongDuringRssMb = long.duringMb;
    f.stallLongMs = long.ms;
    const control = await memoryRound("agent, 10× burst", "bench-long", s.longDeltas, false);
    f.longPeakRssMb = control.peakMb;

    f.failedJobs = fails.count;
    return { f, notes: [...fleet.notes, ...fails.lines.map((l) => `run ${run}: ${l}`)] };
  } finally {
    await Promise.all(fleet.all.map((a) => a.stop("SIGTERM", 10_000)));
    await proxy?.close();
    await nginx?.stop();
    await stopHelpers(h);
  }
}

/** --profile: the main agent under --cpu-prof for the burst, paced or one-delta-job phase only. */
export async function profileRun(s: Sizes, dir: string, phase: string, out: string): Promise<void> {
  const h = await startHelpers(s);
  let agent: Child | undefined;
  try {
    await Deno.mkdir(out, { recursive: true });
    const fleet = new Fleet(h, dir, 1);
    ({ agent } = await fleet.start("agent", {
      denoFlags: ["--cpu-prof", `--cpu-prof-dir=${out}`],
    }));
    if (phase === "paced") {
      const P = { delayMs: s.delayMs, timestamps: true };
      await agentRound(h, agent, 0, "bench-paced", s.pacedJobs, s.pacedDeltas, P);
    } else if (phase === "job") {
      const J = { concurrency: s.oneDeltaConcurrency };
      for (let i = 0; i < 6; i++) await agentRound(h, agent, 0, "bench-job", s.oneDeltaJobs, 1, J);
    } else {
      for (let i = 0; i <= s.rounds; i++) {
        await agentRound(h, agent, 0, "bench-burst", s.burstJobs, s.burstDeltas);
      }
    }
    await agent.stop("SIGTERM");
  } finally {
    await agent?.stop("SIGTERM");
    await stopHelpers(h);
  }
  const files = [];
  for await (const e of Deno.readDir(out)) if (e.name.endsWith(".cpuprofile")) files.push(e.name);
  const latest = files.sort().at(-1);
  if (latest === undefined) throw new Error(`no .cpuprofile written to ${out}`);
  console.log(`${out}/${latest} (${phase}):`);
  console.log(summarise(JSON.parse(await Deno.readTextFile(`${out}/${latest}`)), 25));
}

/** RSS of a bare `deno` process that only waits: what any Deno program starts from here. */
async function bareDenoRssMb(): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "await new Promise((r) => setTimeout(r, 1500))"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await new Promise((r) => setTimeout(r, 1000));
  let kb = NaN;
  try {
    const status = await Deno.readTextFile(`/proc/${child.pid}/status`);
    kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
  } finally {
    await child.status;
  }
  return mib(kb);
}
