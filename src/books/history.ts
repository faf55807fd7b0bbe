// The recent past for the status page charts (issue 15): USDC earned per hour over the last 24 h
// and output tokens per second over the last hour, in fixed buckets fed by finished jobs and
// persisted beside earnings.json (`history.json`, atomic rewrite) so a restart keeps the picture.

import type { FinishedJob } from "../jobs/job.ts";
import { log } from "../log.ts";
import { sleep } from "../timers.ts";
import { atomicWrite } from "../fsutil.ts";

const HOUR_MS = 3_600_000;
const MINUTE_MS = 60_000;
/** Hourly earnings buckets kept (the current hour and the 23 before it). */
export const HOURS = 24;
/** Per-minute token buckets kept (the current minute and the 59 before it). */
export const MINUTES = 60;

/** One bucket of a series: its start (epoch ms) and its value. */
export interface Point {
  t: number;
  v: number;
}

/** Both series, oldest bucket first, every bucket present (zero when nothing happened). */
export interface HistorySeries {
  /** USDC earned by job_done jobs that finished in each hour; {@link HOURS} points. */
  earningsPerHour: Point[];
  /**
   * Mean output tokens per second in each minute ({@link MINUTES} points); a job's tokens are
   * spread evenly over the time it was streaming, and the current minute is divided by the
   * seconds it has had so far.
   */
  tokensPerSecond: Point[];
}

export interface HistoryOptions {
  /** The state file (`history.json` next to the identity); undefined keeps it in memory. */
  path?: string;
  /** How often {@link History.run} writes changed buckets. Default 5 s. */
  flushMs?: number;
  now?: () => number;
}

interface StateFile {
  version: 1;
  /** [hour number since the epoch, micro-USDC]. */
  hours: [number, number][];
  /** [minute number since the epoch, output tokens]. */
  minutes: [number, number][];
}

/**
 * Hourly earnings and per-minute tokens, at most {@link HOURS} + {@link MINUTES} buckets.
 *
 * @example
 * ```ts
 * const history = new History({ path: `${dir}/history.json` });
 * agent.onJobFinished((j) => history.record(j, earnedMicroUsdc));
 * history.series().earningsPerHour.at(-1)?.v; // USDC earned this hour
 * ```
 */
export class History {
  readonly path: string | undefined;
  #now: () => number;
  #flushMs: number;
  #hours = new Map<number, number>();
  #minutes = new Map<number, number>();
  #dirty = false;
  #failing = false;
  #writing: Promise<void> = Promise.resolve();
  /** Failed writes of the state file since start (for /metrics). */
  writeFailures = 0;

  /** Loads the state file when there is one (a small synchronous read, once). */
  constructor(opts: HistoryOptions = {}) {
    this.path = opts.path;
    this.#now = opts.now ?? Date.now;
    this.#flushMs = opts.flushMs ?? 5_000;
    if (this.path !== undefined) this.#load(this.path);
  }

  /** Counts one finished job: what it earned (micro-USDC) and the tokens it streamed. */
  record(
    job: Pick<FinishedJob, "finishedAt" | "durationMs" | "firstChunkMs" | "outputTokens">,
    earnedMicroUsdc: number,
  ): void {
    if (!(earnedMicroUsdc > 0) && !(job.outputTokens > 0)) return; // refusals change nothing
    if (earnedMicroUsdc > 0) {
      add(this.#hours, Math.floor(job.finishedAt / HOUR_MS), earnedMicroUsdc);
    }
    if (job.outputTokens > 0) {
      // The tokens flowed from the first chunk to the end of the stream.
      const span = Math.max(0, job.durationMs - (job.firstChunkMs ?? 0));
      const end = job.finishedAt;
      const start = end - span;
      const first = Math.floor(start / MINUTE_MS);
      const last = Math.floor(end / MINUTE_MS);
      if (span === 0 || first === last) add(this.#minutes, last, job.outputTokens);
      else {
        for (let m = Math.max(first, last - MINUTES); m <= last; m++) {
          const from = Math.max(start, m * MINUTE_MS);
          const to = Math.min(end, (m + 1) * MINUTE_MS);
          if (to > from) add(this.#minutes, m, (job.outputTokens * (to - from)) / span);
        }
      }
    }
    // A new bucket past the window's size means an old one is due to go.
    if (this.#hours.size > HOURS || this.#minutes.size > MINUTES) this.#prune(this.#now());
    this.#dirty = true;
  }

  /** Both series as of `now`, every bucket present. */
  series(now = this.#now()): HistorySeries {
    this.#prune(now);
    const hour = Math.floor(now / HOUR_MS);
    const minute = Math.floor(now / MINUTE_MS);
    const earningsPerHour: Point[] = [];
    for (let h = hour - HOURS + 1; h <= hour; h++) {
      earningsPerHour.push({ t: h * HOUR_MS, v: (this.#hours.get(h) ?? 0) / 1e6 });
    }
    const tokensPerSecond: Point[] = [];
    for (let m = minute - MINUTES + 1; m <= minute; m++) {
      const seconds = m === minute ? Math.max(1, (now - m * MINUTE_MS) / 1000) : 60;
      tokensPerSecond.push({ t: m * MINUTE_MS, v: (this.#minutes.get(m) ?? 0) / seconds });
    }
    return { earningsPerHour, tokensPerSecond };
  }

  /** Writes the buckets every `flushMs` while they change, until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await sleep(this.#flushMs, signal);
      if (!signal.aborted) await this.flush();
    }
  }

  /** Writes the buckets now if they changed (temp file, fsync, rename, fsync of the directory). */
  flush(): Promise<void> {
    this.#writing = this.#writing.then(() => this.#write());
    return this.#writing;
  }

  async #write(): Promise<void> {
    if (!this.#dirty || this.path === undefined) return;
    this.#prune(this.#now());
    const state: StateFile = {
      version: 1,
      hours: [...this.#hours].sort((a, b) => a[0] - b[0]),
      minutes: [...this.#minutes].sort((a, b) => a[0] - b[0]),
    };
    this.#dirty = false;
    try {
      await atomicWrite(this.path, JSON.stringify(state));
      this.#failing = false;
    } catch (err) {
      this.#dirty = true;
      this.writeFailures++;
      if (!this.#failing) log.error("history state write failed", { path: this.path, error: err });
      this.#failing = true;
    }
  }

  /** Drops buckets older than the kept window, and any in the future (a clock set back). */
  #prune(now: number): void {
    const hour = Math.floor(now / HOUR_MS);
    const minute = Math.floor(now / MINUTE_MS);
    for (const h of this.#hours.keys()) if (h <= hour - HOURS || h > hour) this.#hours.delete(h);
    for (const m of this.#minutes.keys()) {
      if (m <= minute - MINUTES || m > minute) this.#minutes.delete(m);
    }
  }

  #load(path: string): void {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        log.warn("history state unreadable; starting empty", { path, error: err });
      }
      return;
    }
    try {
      const s = JSON.parse(text) as Partial<StateFile>;
      if (s.version !== 1) throw new SyntaxError(`version ${s.version} is not 1`);
      readPairs(s.hours, this.#hours, HOURS);
      readPairs(s.minutes, this.#minutes, MINUTES);
      this.#prune(this.#now());
    } catch (err) {
      log.warn("history state corrupt; set aside, starting empty", { path, error: err });
      this.#hours.clear();
      this.#minutes.clear();
      try {
        Deno.renameSync(path, `${path}.corrupt`);
      } catch {
        // keep going: the next flush replaces it
      }
    }
  }
}

function add(m: Map<number, number>, key: number, v: number): void {
  m.set(key, (m.get(key) ?? 0) + v);
}

/** The newest `max` well-formed [integer, non-negative number] pairs of a state file field. */
function readPairs(raw: unknown, into: Map<number, number>, max: number): void {
  if (raw === undefined) return;
  if (!Array.isArray(raw)) throw new SyntaxError("a series is not a list");
  for (const p of raw.slice(-max)) {
    if (
      Array.isArray(p) && p.length === 2 && Number.isSafeInteger(p[0]) &&
      typeof p[1] === "number" && Number.isFinite(p[1]) && p[1] >= 0
    ) {
      into.set(p[0], p[1]);
    }
  }
}
