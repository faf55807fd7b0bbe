// The benchmark's figures, the targets of issues 7 and 13 for them, and the output: medians over
// runs, a table (figure, value, target, pass/fail) and the one JSON line with every figure.

import { median } from "./common.ts";

/** Every figure of one run (NaN when it could not be measured). */
export type Figures = Record<FigureKey, number>;

interface FigureSpec {
  label: string;
  unit: string;
  digits: number;
  /** Issue 7's target: the value must be ≤ (max) or ≥ (min) this. */
  max?: number;
  min?: number;
  /** How the target reads in the table when it is the bench's own reading of the issue. */
  note?: string;
  /** Measured through nginx: "nginx not installed" when it is not. */
  nginx?: true;
}

export const FIGURES = {
  jobAgentCpuUs: { label: "one-delta jobs: agent CPU per job", unit: "µs", digits: 1 },
  jobNginxCpuUs: {
    label: "one-delta jobs: nginx CPU per request",
    unit: "µs",
    digits: 1,
    nginx: true,
  },
  jobCpuRatioVsNginx: {
    label: "one-delta jobs: agent CPU ÷ nginx CPU",
    unit: "×",
    digits: 2,
    max: 4,
    nginx: true,
  },
  jobAgentMs: { label: "one-delta jobs: agent, wall time of the round", unit: "ms", digits: 1 },
  jobDenoRelayCpuUs: {
    label: "one-delta jobs: minimal Deno relay (Deno.serve + pooled raw client) CPU per request",
    unit: "µs",
    digits: 1,
  },
  jobDenoRelayRatioVsNginx: {
    label: "one-delta jobs: minimal Deno relay CPU ÷ nginx CPU (Deno's floor)",
    unit: "×",
    digits: 2,
    nginx: true,
  },
  burstAgentCpuUsPerDelta: { label: "burst: agent CPU per delta", unit: "µs", digits: 2 },
  burstNginxCpuUsPerDelta: {
    label: "burst: nginx CPU per delta",
    unit: "µs",
    digits: 2,
    nginx: true,
  },
  burstCpuRatioVsNginx: {
    label: "burst: agent CPU ÷ nginx CPU",
    unit: "×",
    digits: 2,
    max: 5,
    nginx: true,
  },
  burstDirectCpuUsPerDelta: {
    label: "burst: direct fetch client CPU per delta",
    unit: "µs",
    digits: 2,
  },
  burstCpuRatioVsDirect: { label: "burst: agent CPU ÷ direct client CPU", unit: "×", digits: 3 },
  burstThroughputRatio: {
    label: "burst: throughput vs direct fetch (best direct ms ÷ best agent ms)",
    unit: "×",
    digits: 2,
    min: 1.0,
  },
  burstAgentBestMs: { label: "burst: agent, best round, to last job_done", unit: "ms", digits: 1 },
  burstDirectBestMs: { label: "burst: direct fetch client, best round", unit: "ms", digits: 1 },
  burstAgentMedianMs: { label: "burst: agent, median round", unit: "ms", digits: 1 },
  burstDirectMedianMs: { label: "burst: direct fetch client, median round", unit: "ms", digits: 1 },
  burstHttp1BestMs: {
    label: "burst: raw HTTP/1.1 direct client, best (ceiling)",
    unit: "ms",
    digits: 1,
  },
  burstHttp1Ratio: { label: "burst: raw HTTP/1.1 client vs direct fetch", unit: "×", digits: 2 },
  burstDeltasPerFrame: { label: "burst: backend deltas per job_chunk frame", unit: "", digits: 2 },
  burstBackendBusyAgent: {
    label: "burst: fake backend CPU ÷ wall, agent rounds",
    unit: "",
    digits: 2,
  },
  burstBackendBusyDirect: {
    label: "burst: fake backend CPU ÷ wall, direct rounds",
    unit: "",
    digits: 2,
  },
  burstCoordCpuUsPerDelta: { label: "burst: coordinator CPU per delta", unit: "µs", digits: 2 },
  pacedAgentCpuUsPerDelta: { label: "paced: agent CPU per delta", unit: "µs", digits: 2 },
  pacedNginxCpuUsPerDelta: {
    label: "paced: nginx CPU per delta",
    unit: "µs",
    digits: 2,
    nginx: true,
  },
  pacedCpuRatioVsNginx: {
    label: "paced: agent CPU ÷ nginx CPU",
    unit: "×",
    digits: 2,
    max: 1.5,
    nginx: true,
  },
  pacedFloorRatioVsNginx: {
    label: "paced: raw HTTP/1.1 reader alone ÷ nginx CPU (Deno's floor)",
    unit: "×",
    digits: 2,
    nginx: true,
  },
  pacedDirectCpuUsPerDelta: {
    label: "paced: direct fetch client CPU per delta",
    unit: "µs",
    digits: 2,
  },
  pacedFloorCpuUsPerDelta: {
    label: "paced: raw HTTP/1.1 reader CPU per delta (floor: reading alone)",
    unit: "µs",
    digits: 2,
  },
  addedLatencyP50Ms: {
    label: "paced: added latency p50 (agent − direct)",
    unit: "ms",
    digits: 3,
    max: 0.3,
  },
  addedLatencyP99Ms: {
    label: "paced: added latency p99 (agent − direct)",
    unit: "ms",
    digits: 3,
    max: 2,
  },
  latencyAgentP50Ms: { label: "paced: backend write → coordinator, p50", unit: "ms", digits: 3 },
  latencyAgentP99Ms: { label: "paced: backend write → coordinator, p99", unit: "ms", digits: 3 },
  latencyDirectP50Ms: { label: "paced: backend write → direct client, p50", unit: "ms", digits: 3 },
  latencyDirectP99Ms: { label: "paced: backend write → direct client, p99", unit: "ms", digits: 3 },
  rssIdleMb: { label: "RSS idle after connect", unit: "MiB", digits: 1, max: 48 },
  rssBareDenoMb: { label: "RSS of a bare deno process, same machine", unit: "MiB", digits: 1 },
  rssPeakBurstMb: { label: "peak RSS during the burst rounds", unit: "MiB", digits: 1, max: 90 },
  rssPeakSlowMb: { label: "peak RSS, concurrent slow jobs", unit: "MiB", digits: 1, max: 120 },
  slowAgentCpuUsPerDelta: { label: "slow jobs: agent CPU per delta", unit: "µs", digits: 2 },
  startupAuthMs: {
    label: "start-up: spawn → auth_response at coordinator",
    unit: "ms",
    digits: 1,
    max: 150,
  },
  startupFirstLogMs: { label: "start-up: spawn → first log line", unit: "ms", digits: 1 },
  stallPeakRssMb: {
    label: "slow coordinator (burst, reads stop 5 s): peak RSS",
    unit: "MiB",
    digits: 1,
    max: 90,
    note: "bounded: ≤ 90 (the burst ceiling)",
  },
  stallLongDuringRssMb: {
    label: "slow coordinator, 10× the bytes: peak RSS while reads are stopped",
    unit: "MiB",
    digits: 1,
    max: 90,
    note: "bounded: ≤ 90 (the burst ceiling)",
  },
  stallLongPeakRssMb: {
    label: "slow coordinator, 10× the bytes: peak RSS incl. catch-up",
    unit: "MiB",
    digits: 1,
    max: 90,
    note: "bounded: ≤ 90 (the burst ceiling)",
  },
  longPeakRssMb: { label: "10× the burst's bytes, no stall: peak RSS", unit: "MiB", digits: 1 },
  stallMs: { label: "slow coordinator (burst): to last job_done", unit: "ms", digits: 0 },
  stallLongMs: {
    label: "slow coordinator, 10× the bytes: to last job_done",
    unit: "ms",
    digits: 0,
  },
  failedJobs: {
    label: "jobs failed or with bytes lost/out of order (all rounds, summed over runs)",
    unit: "",
    digits: 0,
    max: 0,
  },
  foreignCores: {
    label: "other processes' CPU during the run (noise; 0 is a quiet machine)",
    unit: "cores",
    digits: 2,
  },
  clockSkewMs: {
    label: "clock check: helper clocks off by more than a round trip",
    unit: "ms",
    digits: 3,
  },
} satisfies Record<string, FigureSpec>;

export type FigureKey = keyof typeof FIGURES;

/** The median of each figure over the runs. */
export function medians(runs: readonly Figures[]): Figures {
  const out = {} as Figures;
  for (const key of Object.keys(FIGURES) as FigureKey[]) {
    out[key] = median(runs.map((r) => r[key]).filter((v) => Number.isFinite(v)));
  }
  return out;
}

/** The figures measured through nginx (NaN, and no verdict, when it is not installed). */
export const NGINX_KEYS = (Object.keys(FIGURES) as FigureKey[]).filter((k) =>
  (FIGURES[k] as FigureSpec).nginx === true
);

export const NO_NGINX = "nginx not installed";

/**
 * Pass (true), fail (false) or no target (undefined) for one figure; nginx's figures have no
 * verdict when nginx is not installed.
 */
export function verdict(key: FigureKey, value: number, nginx = true): boolean | undefined {
  const spec: FigureSpec = FIGURES[key];
  if (spec.max === undefined && spec.min === undefined) return undefined;
  if (spec.nginx && !nginx) return undefined;
  if (!Number.isFinite(value)) return false;
  return (spec.max === undefined || value <= spec.max) &&
    (spec.min === undefined || value >= spec.min);
}

function targetText(spec: FigureSpec): string {
  if (spec.note) return spec.note;
  if (spec.max !== undefined) return `≤ ${spec.max}`;
  if (spec.min !== undefined) return `≥ ${spec.min}`;
  return "";
}

/** The table: figure, value, target, pass/fail; targeted figures first. */
export function table(
  values: Figures,
  runs: number,
  nginx = true,
  keys = Object.keys(FIGURES) as FigureKey[],
): string {
  const rows = keys.map((key) => {
    const spec: FigureSpec = FIGURES[key];
    const v = values[key];
    const pass = verdict(key, v, nginx);
    return [
      spec.label,
      spec.nginx && !nginx
        ? NO_NGINX
        : Number.isFinite(v)
        ? `${v.toFixed(spec.digits)}${spec.unit ? " " + spec.unit : ""}`
        : "n/a",
      targetText(spec),
      pass === undefined ? "" : pass ? "pass" : "FAIL",
    ];
  });
  const head = ["figure", runs > 1 ? `median of ${runs}` : "value", "target", ""];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(width[i]!)).join("  ").trimEnd();
  return [line(head), line(width.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

/** The README's Markdown rendering of the same table. */
export function markdown(values: Figures, nginx = true): string {
  const keys = Object.keys(FIGURES) as FigureKey[];
  const out = ["| figure | value | target | |", "|---|---|---|---|"];
  for (const key of keys) {
    const spec: FigureSpec = FIGURES[key];
    const v = values[key];
    const pass = verdict(key, v, nginx);
    const value = spec.nginx && !nginx
      ? NO_NGINX
      : Number.isFinite(v)
      ? `${v.toFixed(spec.digits)} ${spec.unit}`.trim()
      : "n/a";
    out.push(
      `| ${spec.label} | ${value} | ${targetText(spec)} | ${
        pass === undefined ? "" : pass ? "pass" : "**fail**"
      } |`,
    );
  }
  return out.join("\n");
}
