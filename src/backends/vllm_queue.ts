// vLLM's own queue (PROTOCOL §5 extension): while its Prometheus `/metrics` reports
// `vllm:num_requests_waiting > 0` the engine is saturated and new jobs for its models are refused
// with out_of_capacity. Read in the background about once a second, never once per job.

import { sleep } from "../timers.ts";
import type { Target } from "./client.ts";
import { request as http1Request } from "./http1.ts";
import { log } from "../log.ts";

export interface QueueWatchOptions {
  /** The vLLM backends to watch now, by backend index (read before every poll). */
  backends: () => ReadonlyMap<number, Target>;
  /** Time between polls. Default 1000 ms. */
  intervalMs?: number;
  /** Per-request timeout. Default 800 ms. */
  timeoutMs?: number;
  /** After a /metrics that fails or lacks the gauge, that backend is left alone this long. */
  retryMs?: number;
  now?: () => number;
}

const GAUGE = "vllm:num_requests_waiting";
const METRICS_LIMIT = 4 * 1024 * 1024;

/**
 * The sum of every `vllm:num_requests_waiting` sample (one per served model) in a Prometheus
 * text exposition, or undefined when there is none.
 *
 * @example
 * ```ts
 * parseWaiting('vllm:num_requests_waiting{model_name="m"} 3.0\n'); // 3
 * ```
 */
export function parseWaiting(text: string): number | undefined {
  let sum: number | undefined;
  for (const line of text.split("\n")) {
    if (!line.startsWith(GAUGE)) continue;
    const rest = line.slice(GAUGE.length);
    if (rest[0] !== "{" && rest[0] !== " ") continue;
    const value = Number(rest.slice(rest.lastIndexOf("}") + 1).trim().split(/\s+/)[0]);
    if (Number.isFinite(value) && value >= 0) sum = (sum ?? 0) + value;
  }
  return sum;
}

/**
 * Polls each vLLM backend's `/metrics` and keeps the last queue length; `busy` is what admission
 * reads (a cached value, no request).
 *
 * @example
 * ```ts
 * const watch = new QueueWatch({ backends: () => vllmTargets() });
 * const loop = watch.run(stop.signal);
 * watch.busy(0); // "vllm has 3 requests waiting" while its queue is not empty
 * ```
 */
export class QueueWatch {
  #o: QueueWatchOptions;
  #now: () => number;
  #waiting = new Map<number, number>();
  #skipUntil = new Map<number, number>();
  /** Polls made since start (each one request per watched backend). */
  polls = 0;

  constructor(opts: QueueWatchOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  /** Requests waiting in the backend's queue at the last poll; undefined when not known. */
  waiting(index: number): number | undefined {
    return this.#waiting.get(index);
  }

  /** Why the backend cannot start a job now, or undefined. */
  busy(index: number): string | undefined {
    const n = this.#waiting.get(index);
    return n !== undefined && n > 0 ? `vllm has ${n} requests waiting in its queue` : undefined;
  }

  /** Polls every `intervalMs` until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.poll(signal);
      await sleep(this.#o.intervalMs ?? 1000, signal);
    }
  }

  /** One poll of every watched backend, in parallel. */
  async poll(signal?: AbortSignal): Promise<void> {
    const targets = this.#o.backends();
    for (const index of this.#waiting.keys()) {
      if (!targets.has(index)) this.#waiting.delete(index);
    }
    const now = this.#now();
    const due = [...targets].filter(([i]) => (this.#skipUntil.get(i) ?? 0) <= now);
    if (due.length === 0) return;
    this.polls++;
    await Promise.all(due.map(([index, target]) => this.#pollOne(index, target, signal)));
  }

  async #pollOne(index: number, target: Target, signal?: AbortSignal): Promise<void> {
    const timeout = AbortSignal.timeout(this.#o.timeoutMs ?? 800);
    const sig = signal ? AbortSignal.any([signal, timeout]) : timeout;
    let problem: string;
    try {
      const text = await getText(`${target.base}/metrics`, target.apiKey, sig);
      const n = text === undefined ? undefined : parseWaiting(text);
      if (n !== undefined) {
        this.#waiting.set(index, n);
        this.#skipUntil.delete(index);
        return;
      }
      problem = text === undefined ? "/metrics did not answer 200" : `/metrics has no ${GAUGE}`;
    } catch (err) {
      if (signal?.aborted) return;
      problem = `/metrics unreachable: ${(err as Error)?.message ?? err}`;
    }
    // Unknown is not busy; try again later rather than every second.
    this.#waiting.delete(index);
    if (!this.#skipUntil.has(index)) {
      log.debug("vllm queue length unknown", { backend: target.base, problem });
    }
    this.#skipUntil.set(index, this.#now() + (this.#o.retryMs ?? 30_000));
  }
}

/** GET a text body; undefined when the status is not 200. */
async function getText(
  url: string,
  apiKey: string | undefined,
  signal: AbortSignal,
): Promise<string | undefined> {
  const headers: Record<string, string> = { accept: "text/plain" };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  if (url.startsWith("http:")) {
    const res = await http1Request({ method: "GET", url: new URL(url), headers, signal });
    try {
      return res.status === 200 ? await res.text(METRICS_LIMIT) : undefined;
    } finally {
      res.close();
    }
  }
  const res = await fetch(url, { headers, signal });
  const text = await res.text();
  return res.status === 200 ? text : undefined;
}
