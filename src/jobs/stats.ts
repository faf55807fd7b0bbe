// Rolling job statistics: the real heartbeat values of PROTOCOL §3, counters since start,
// histograms of time to first chunk and duration, and the recent jobs the status server shows.
// Fed once per finished job; read as snapshots. Every table here has a fixed bound, whatever
// model ids or messages a coordinator or backend sends (the label rule is {@link modelLabel}).

import type { FinishedJob, Outcome } from "./job.ts";
import type { ErrorCode } from "../errors.ts";
import type { HeartbeatValues } from "../link/protocol.ts";
import { clip, MAX_ERROR_TEXT, MAX_SHOWN_MODEL } from "../text.ts";

/** How far back latency and tokens/s percentiles look. */
const WINDOW_MS = 5 * 60_000;
/** Jobs kept for the heartbeat percentiles (the newest; older ones leave the window anyway). */
export const WINDOW_MAX = 2000;
/** Finished jobs the status server lists (the newest), model and message clipped. */
export const RECENT_MAX = 50;

/** The label value every model that is not advertised shares in stats, /metrics and /status. */
export const UNADVERTISED = "(unadvertised)";

/**
 * Distinct model labels a per-model table holds (stats counters, histograms, and so /metrics
 * series and /status `by_model`): a model advertised after that many is counted as
 * {@link UNADVERTISED}. Jobs name any model a coordinator likes; only advertised models, which
 * come from the operator's backends, get their own label.
 */
export const MAX_MODEL_LABELS = 256;

/**
 * The label a job's model is counted under: its own id when it is already in `known` (the
 * table's keys) or when it is advertised and the table has room, else {@link UNADVERTISED}.
 * The one rule for stats, /metrics and /status (and any other per-model table).
 *
 * @example
 * ```ts
 * const advertised = (m: string) => discovery.current.byId.has(m);
 * modelLabel("llama3.2:latest", advertised, stats.byModel); // "llama3.2:latest"
 * modelLabel("no/such-model", advertised, stats.byModel); // "(unadvertised)"
 * ```
 */
export function modelLabel(
  model: string,
  advertised: (model: string) => boolean,
  known?: { has(key: string): boolean; readonly size: number },
): string {
  if (known?.has(model)) return model;
  if (!advertised(model)) return UNADVERTISED;
  if (known && known.size >= MAX_MODEL_LABELS) return UNADVERTISED;
  return model;
}

/** What the heartbeat window keeps of a job (no strings a peer chose). */
interface WindowEntry {
  finishedAt: number;
  firstChunkMs: number | undefined;
  durationMs: number;
  outputTokens: number;
  outcome: Outcome;
}

/** Per-model counters since start. */
export interface ModelCounters {
  jobs: Record<string, number>; // by outcome
  inputTokens: number;
  outputTokens: number;
  /** Tokens of jobs that ended in job_done (what the coordinator bills). */
  doneInputTokens: number;
  doneOutputTokens: number;
}

/** Upper bounds (seconds) of the time-to-first-chunk histogram buckets. */
export const FIRST_CHUNK_BOUNDS: readonly number[] = [
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];
/** Upper bounds (seconds) of the job duration histogram buckets. */
export const DURATION_BOUNDS: readonly number[] = [
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  120,
  300,
  600,
];

/**
 * A fixed-bucket histogram (Prometheus semantics): `counts[i]` observations in
 * (bounds[i-1], bounds[i]], the last slot above every bound; `sum` in the observed unit.
 *
 * @example
 * ```ts
 * const h = new Histogram([0.1, 1]);
 * h.observe(0.5); // counts [0, 1, 0], sum 0.5, count 1
 * ```
 */
export class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(v: number): void {
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}

/** Per-model histograms since start (admitted jobs only; refusals have no timing). */
export interface ModelHistograms {
  /** Seconds from job receipt to the first chunk sent (jobs that sent one). */
  firstChunk: Histogram;
  /** Seconds from job receipt to the end of the stream. */
  duration: Histogram;
}

/** Nearest-rank percentile of an ascending list; 0 when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Whether a finished job counts toward the error rate (it got a terminal frame that is a fault). */
function terminal(j: Pick<FinishedJob, "outcome">): boolean {
  return j.outcome !== "cancelled" && j.outcome !== "disconnected" &&
    j.outcome !== "out_of_capacity";
}

/**
 * Collects finished jobs and derives what the heartbeat and status report.
 *
 * @example
 * ```ts
 * const stats = new Stats();
 * executorOptions.onFinished = (j) => stats.record(j);
 * ws.send(wire.heartbeat(stats.heartbeat(executor.inFlight)));
 * ```
 */
export class Stats {
  readonly startedAt: number;
  #now: () => number;
  #advertised: (model: string) => boolean;
  #window: WindowEntry[] = [];
  #recent: FinishedJob[] = [];
  #lastError: { at: number; code: ErrorCode } | undefined;
  /** Keyed by {@link modelLabel}: at most {@link MAX_MODEL_LABELS} + 1 entries. */
  readonly byModel = new Map<string, ModelCounters>();
  /** Keyed by {@link modelLabel}: at most {@link MAX_MODEL_LABELS} + 1 entries. */
  readonly histograms = new Map<string, ModelHistograms>();
  readonly totals = {
    jobs: 0,
    done: 0,
    errors: 0,
    cancelled: 0,
    refused: 0,
    inputTokens: 0,
    outputTokens: 0,
  };

  /**
   * `advertised` tells which models get their own label (default: every model, up to
   * {@link MAX_MODEL_LABELS}); the agent passes "in the latest discovery".
   */
  constructor(
    now: () => number = Date.now,
    advertised: (model: string) => boolean = () => true,
  ) {
    this.#now = now;
    this.#advertised = advertised;
    this.startedAt = now();
  }

  /** The label `model` is (or would be) counted under; see {@link modelLabel}. */
  label(model: string): string {
    return modelLabel(model, this.#advertised, this.byModel);
  }

  /** Takes in one finished (or refused) job. */
  record(j: FinishedJob): void {
    this.#window.push({
      finishedAt: j.finishedAt,
      firstChunkMs: j.firstChunkMs,
      durationMs: j.durationMs,
      outputTokens: j.outputTokens,
      outcome: j.outcome,
    });
    if (this.#window.length > WINDOW_MAX) this.#window.splice(0, this.#window.length - WINDOW_MAX);
    this.#recent.push(shown(j));
    if (this.#recent.length > RECENT_MAX) this.#recent.shift();
    const t = this.totals;
    t.jobs++;
    t.inputTokens += j.inputTokens;
    t.outputTokens += j.outputTokens;
    if (j.outcome === "job_done") t.done++;
    else if (j.outcome === "cancelled" || j.outcome === "disconnected") t.cancelled++;
    else if (!j.admitted || j.outcome === "out_of_capacity") t.refused++; // a saturated backend
    else t.errors++;
    if (terminal(j) && j.outcome !== "job_done") {
      this.#lastError = { at: j.finishedAt, code: j.outcome as ErrorCode };
    }
    const label = this.label(j.model);
    let m = this.byModel.get(label);
    if (!m) {
      m = { jobs: {}, inputTokens: 0, outputTokens: 0, doneInputTokens: 0, doneOutputTokens: 0 };
      this.byModel.set(label, m);
    }
    m.jobs[j.outcome] = (m.jobs[j.outcome] ?? 0) + 1;
    m.inputTokens += j.inputTokens;
    m.outputTokens += j.outputTokens;
    if (j.outcome === "job_done") {
      m.doneInputTokens += j.inputTokens;
      m.doneOutputTokens += j.outputTokens;
    }
    if (j.admitted) {
      let h = this.histograms.get(label);
      if (!h) {
        h = {
          firstChunk: new Histogram(FIRST_CHUNK_BOUNDS),
          duration: new Histogram(DURATION_BOUNDS),
        };
        this.histograms.set(label, h);
      }
      if (j.firstChunkMs !== undefined) h.firstChunk.observe(j.firstChunkMs / 1000);
      h.duration.observe(j.durationMs / 1000);
    }
  }

  /** The last finished jobs, oldest first (at most {@link RECENT_MAX}, texts clipped). */
  recent(): readonly FinishedJob[] {
    return this.#recent;
  }

  /** Jobs in the heartbeat window now (at most {@link WINDOW_MAX}; for bound checks). */
  get windowSize(): number {
    return this.#window.length;
  }

  /** Heartbeat values from the jobs of the last minutes (PROTOCOL §3). */
  heartbeat(queueDepth: number): HeartbeatValues {
    const now = this.#now();
    const cutoff = now - WINDOW_MS;
    while (this.#window.length > 0 && this.#window[0]!.finishedAt < cutoff) this.#window.shift();
    const latencies: number[] = [];
    const rates: number[] = [];
    let finished60 = 0;
    let failed60 = 0;
    for (const j of this.#window) {
      if (j.firstChunkMs !== undefined) latencies.push(j.firstChunkMs);
      if (j.outcome === "job_done" && j.outputTokens > 0) {
        const genMs = j.durationMs - (j.firstChunkMs ?? 0);
        const ms = genMs > 0 ? genMs : j.durationMs;
        if (ms > 0) rates.push((j.outputTokens * 1000) / ms);
      }
      if (j.finishedAt >= now - 60_000 && terminal(j)) {
        finished60++;
        if (j.outcome !== "job_done") failed60++;
      }
    }
    latencies.sort((a, b) => a - b);
    rates.sort((a, b) => a - b);
    return {
      queueDepth,
      tokensPerSecP50: Math.round(percentile(rates, 50) * 10) / 10,
      p50LatencyMs: percentile(latencies, 50),
      p95LatencyMs: percentile(latencies, 95),
      errorRate60s: finished60 === 0 ? 0 : Math.round((failed60 / finished60) * 1000) / 1000,
      lastErrorAt: this.#lastError ? new Date(this.#lastError.at).toISOString() : null,
      lastErrorCode: this.#lastError?.code ?? null,
    };
  }
}

/** A finished job as the recent list keeps it: the model id and message clipped. */
function shown(j: FinishedJob): FinishedJob {
  const model = clip(j.model, MAX_SHOWN_MODEL);
  const message = j.message === undefined ? undefined : clip(j.message, MAX_ERROR_TEXT);
  return model === j.model && message === j.message ? j : { ...j, model, message };
}
