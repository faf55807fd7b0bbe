// Rolling job statistics: the real heartbeat values of PROTOCOL §3, counters since start and
// the recent jobs the status server shows. Fed once per finished job; read as snapshots.

import type { FinishedJob } from "./executor.ts";
import type { ErrorCode } from "./errors.ts";
import type { HeartbeatValues } from "./protocol.ts";

/** How far back latency and tokens/s percentiles look. */
const WINDOW_MS = 5 * 60_000;
const WINDOW_MAX = 2000;
const RECENT_MAX = 50;

/** Per-model counters since start. */
export interface ModelCounters {
  jobs: Record<string, number>; // by outcome
  inputTokens: number;
  outputTokens: number;
}

/** Nearest-rank percentile of an ascending list; 0 when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Whether a finished job counts toward the error rate (it got a terminal frame that is a fault). */
function terminal(j: FinishedJob): boolean {
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
  #window: FinishedJob[] = [];
  #recent: FinishedJob[] = [];
  #lastError: { at: number; code: ErrorCode } | undefined;
  readonly byModel = new Map<string, ModelCounters>();
  readonly totals = {
    jobs: 0,
    done: 0,
    errors: 0,
    cancelled: 0,
    refused: 0,
    inputTokens: 0,
    outputTokens: 0,
  };

  constructor(now: () => number = Date.now) {
    this.#now = now;
    this.startedAt = now();
  }

  /** Takes in one finished (or refused) job. */
  record(j: FinishedJob): void {
    this.#window.push(j);
    if (this.#window.length > WINDOW_MAX) this.#window.splice(0, this.#window.length - WINDOW_MAX);
    this.#recent.push(j);
    if (this.#recent.length > RECENT_MAX) this.#recent.shift();
    const t = this.totals;
    t.jobs++;
    t.inputTokens += j.inputTokens;
    t.outputTokens += j.outputTokens;
    if (j.outcome === "job_done") t.done++;
    else if (j.outcome === "cancelled" || j.outcome === "disconnected") t.cancelled++;
    else if (!j.admitted) t.refused++;
    else t.errors++;
    if (terminal(j) && j.outcome !== "job_done") {
      this.#lastError = { at: j.finishedAt, code: j.outcome as ErrorCode };
    }
    let m = this.byModel.get(j.model);
    if (!m) this.byModel.set(j.model, m = { jobs: {}, inputTokens: 0, outputTokens: 0 });
    m.jobs[j.outcome] = (m.jobs[j.outcome] ?? 0) + 1;
    m.inputTokens += j.inputTokens;
    m.outputTokens += j.outputTokens;
  }

  /** The last finished jobs, oldest first (at most 50). */
  recent(): readonly FinishedJob[] {
    return this.#recent;
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
