// Money counters (issue 8, "Money, visible"): earnings of finished jobs at the advertised prices
// and the revenue refused or failed jobs would have brought, per model and reason, by UTC day;
// persisted in a small state file next to the identity (atomic rewrite every few seconds).

import type { ModelPrice } from "../config/config.ts";
import type { FinishedJob } from "../jobs/job.ts";
import { atomicWrite } from "../fsutil.ts";
import { log } from "../log.ts";
import { sleep } from "../timers.ts";
import { percentile } from "../jobs/stats.ts";

/**
 * Why revenue was missed: the PROTOCOL §5 codes that lose a job, everything else as `other`;
 * `backend_busy` is an out_of_capacity the backend's own slots or queue caused (§5 extension).
 */
export const MISS_REASONS = [
  "out_of_capacity",
  "backend_busy",
  "model_not_loaded",
  "backend_unreachable",
  "backend_timeout",
  "other",
] as const;
export type MissReason = typeof MISS_REASONS[number];

/** Counters of one model (or a sum) over some period. Money in micro-USDC. */
export interface Counters {
  /** Jobs that ended in job_done (the ones that earn). */
  jobs: number;
  inputTokens: number;
  outputTokens: number;
  earnedMicroUsdc: number;
  /** Jobs refused or failed with job_error. */
  missedJobs: number;
  missedMicroUsdc: number;
  missedByReason: Record<MissReason, { jobs: number; microUsdc: number }>;
}

/** What {@link Earnings.record} counted for one job: earned, or missed and why. */
export interface Counted {
  earnedMicroUsdc: number;
  missedMicroUsdc: number;
  reason: MissReason | undefined;
}

/** Counters with the reason that lost the most revenue (by jobs when nothing was priced). */
export interface Totals extends Counters {
  topMissedReason: MissReason | null;
}

/** What the status server shows: four periods, summed and per model. */
export interface EarningsSummary {
  /** RFC 3339: when the summary was taken, when this process started, when counting began. */
  at: string;
  startedAt: string;
  since: string;
  /** The current UTC day; the 7 UTC days ending today; this process; since `since`. */
  today: Totals;
  last7d: Totals;
  sinceStart: Totals;
  allTime: Totals;
  byModel: Record<string, { today: Totals; last7d: Totals; sinceStart: Totals; allTime: Totals }>;
}

export interface EarningsOptions {
  /** The state file (`earnings.json` next to the identity); undefined keeps counters in memory. */
  path?: string;
  /** How often {@link Earnings.run} writes changed counters. Default 5 s. */
  flushMs?: number;
  now?: () => number;
}

const DAYS_KEPT = 8;
const SAMPLES = 50;
const MAX_MODELS = 256;
const MAX_MODEL_LENGTH = 200;
/** Where models beyond {@link MAX_MODELS} are counted (a coordinator may send any model id). */
export const OTHER_MODELS = "(other models)";

type ByModel = Map<string, Counters>;
type Sample = [input: number, output: number];

/** Micro-USDC for tokens at a price per million. */
export function microUsdc(inputTokens: number, outputTokens: number, price: ModelPrice): number {
  return (inputTokens * price.inputPer1m + outputTokens * price.outputPer1m) / 1e6;
}

/** The missed-revenue reason of a job_error code (`backend_busy` when the backend was full). */
export function missReason(code: string, backendBusy = false): MissReason {
  if (backendBusy && code === "out_of_capacity") return "backend_busy";
  return (MISS_REASONS as readonly string[]).includes(code) ? code as MissReason : "other";
}

/** The UTC day of a time, `YYYY-MM-DD`. */
export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

function zero(): Counters {
  const missedByReason = {} as Counters["missedByReason"];
  for (const r of MISS_REASONS) missedByReason[r] = { jobs: 0, microUsdc: 0 };
  return {
    jobs: 0,
    inputTokens: 0,
    outputTokens: 0,
    earnedMicroUsdc: 0,
    missedJobs: 0,
    missedMicroUsdc: 0,
    missedByReason,
  };
}

function add(into: Counters, c: Counters): void {
  into.jobs += c.jobs;
  into.inputTokens += c.inputTokens;
  into.outputTokens += c.outputTokens;
  into.earnedMicroUsdc += c.earnedMicroUsdc;
  into.missedJobs += c.missedJobs;
  into.missedMicroUsdc += c.missedMicroUsdc;
  for (const r of MISS_REASONS) {
    into.missedByReason[r].jobs += c.missedByReason[r].jobs;
    into.missedByReason[r].microUsdc += c.missedByReason[r].microUsdc;
  }
}

function totals(parts: Iterable<Counters>): Totals {
  const sum = zero();
  for (const c of parts) add(sum, c);
  let top: MissReason | null = null;
  for (const r of MISS_REASONS) {
    const m = sum.missedByReason[r];
    if (m.jobs === 0) continue;
    const best = top === null ? undefined : sum.missedByReason[top];
    if (
      !best || m.microUsdc > best.microUsdc ||
      (m.microUsdc === best.microUsdc && m.jobs > best.jobs)
    ) {
      top = r;
    }
  }
  return { ...sum, topMissedReason: top };
}

function median(values: number[]): number {
  return percentile(values.toSorted((a, b) => a - b), 50);
}

/**
 * The money counters. Fed every finished job with the price it was advertised at; read as
 * snapshots with {@link summary}. A refused or failed job "would have brought" its tokens at
 * that price, its size estimated as the median of the last 50 job_done of the same model (of
 * all models when it has none; nothing when no job has succeeded yet), never less than what
 * it had already streamed.
 *
 * @example
 * ```ts
 * const earnings = new Earnings({ path: `${dir}/earnings.json` });
 * agent.onJobFinished((j) => earnings.record(j, priceOf(config, j.model)));
 * earnings.summary().today.earnedMicroUsdc;
 * ```
 */
export class Earnings {
  readonly path: string | undefined;
  readonly startedAt: number;
  #now: () => number;
  #flushMs: number;
  #since: number;
  #days = new Map<string, ByModel>();
  #all: ByModel = new Map();
  #session: ByModel = new Map();
  #samples = new Map<string, Sample[]>();
  #recent: Sample[] = [];
  #dirty = false;
  #failing = false;
  /** Failed writes of the state file since start (for /metrics). */
  writeFailures = 0;
  #writing: Promise<void> = Promise.resolve();

  /** Loads the state file when there is one (a small synchronous read, once). */
  constructor(opts: EarningsOptions = {}) {
    this.path = opts.path;
    this.#now = opts.now ?? Date.now;
    this.#flushMs = opts.flushMs ?? 5_000;
    this.startedAt = this.#now();
    this.#since = this.startedAt;
    if (this.path !== undefined) this.#load(this.path);
  }

  /**
   * Counts one finished job (cancels and lost links are neither earned nor missed) and returns
   * what it counted, for /metrics.
   */
  record(job: FinishedJob, price: ModelPrice): Counted | undefined {
    if (job.outcome === "cancelled" || job.outcome === "disconnected") return undefined;
    const model = this.#modelKey(job.model);
    let day = this.#days.get(dayOf(job.finishedAt));
    if (!day) this.#days.set(dayOf(job.finishedAt), day = new Map());
    const targets = [day, this.#all, this.#session].map((m) => counters(m, model));
    if (job.outcome === "job_done") {
      const earned = microUsdc(job.inputTokens, job.outputTokens, price);
      for (const c of targets) {
        c.jobs++;
        c.inputTokens += job.inputTokens;
        c.outputTokens += job.outputTokens;
        c.earnedMicroUsdc += earned;
      }
      const s: Sample = [job.inputTokens, job.outputTokens];
      let ring = this.#samples.get(model);
      if (!ring) this.#samples.set(model, ring = []);
      for (const r of [ring, this.#recent]) if (r.push(s) > SAMPLES) r.shift();
      this.#dirty = true;
      return { earnedMicroUsdc: earned, missedMicroUsdc: 0, reason: undefined };
    } else {
      const reason = missReason(job.outcome, job.backendBusy);
      const size = this.estimate(model, job);
      const missed = microUsdc(size.inputTokens, size.outputTokens, price);
      for (const c of targets) {
        c.missedJobs++;
        c.missedMicroUsdc += missed;
        c.missedByReason[reason].jobs++;
        c.missedByReason[reason].microUsdc += missed;
      }
      this.#dirty = true;
      return { earnedMicroUsdc: 0, missedMicroUsdc: missed, reason };
    }
  }

  /** The size a refused or failed job of `model` is assumed to have had. */
  estimate(
    model: string,
    job: Pick<FinishedJob, "inputTokens" | "outputTokens">,
  ): { inputTokens: number; outputTokens: number } {
    const own = this.#samples.get(this.#modelKey(model));
    const samples = own && own.length > 0 ? own : this.#recent;
    return {
      inputTokens: Math.max(job.inputTokens, median(samples.map((s) => s[0]))),
      outputTokens: Math.max(job.outputTokens, median(samples.map((s) => s[1]))),
    };
  }

  /** Today, the last 7 days, this process and all time, summed and per model. */
  summary(now = this.#now()): EarningsSummary {
    this.#prune(now);
    const week = new Set<string>();
    for (let i = 0; i < 7; i++) week.add(dayOf(now - i * 86_400_000));
    const today = this.#days.get(dayOf(now)) ?? new Map<string, Counters>();
    const weekDays = [...this.#days].filter(([d]) => week.has(d)).map(([, m]) => m);
    const pick = (m: ByModel, model?: string) =>
      model === undefined ? [...m.values()] : (m.has(model) ? [m.get(model)!] : []);
    const period = (model?: string) => ({
      today: totals(pick(today, model)),
      last7d: totals(weekDays.flatMap((m) => pick(m, model))),
      sinceStart: totals(pick(this.#session, model)),
      allTime: totals(pick(this.#all, model)),
    });
    const byModel: EarningsSummary["byModel"] = {};
    for (const model of [...this.#all.keys()].sort()) byModel[model] = period(model);
    return {
      at: new Date(now).toISOString(),
      startedAt: new Date(this.startedAt).toISOString(),
      since: new Date(this.#since).toISOString(),
      ...period(),
      byModel,
    };
  }

  /** Writes the counters every `flushMs` while they change, until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await sleep(this.#flushMs, signal);
      if (!signal.aborted) await this.flush();
    }
  }

  /** Writes the counters now if they changed (temp file, fsync, rename, directory fsync). */
  flush(): Promise<void> {
    this.#writing = this.#writing.then(() => this.#write());
    return this.#writing;
  }

  async #write(): Promise<void> {
    if (!this.#dirty || this.path === undefined) return;
    this.#prune(this.#now());
    const text = JSON.stringify(this.#state());
    this.#dirty = false;
    try {
      await atomicWrite(this.path, text);
      this.#failing = false;
    } catch (err) {
      this.#dirty = true;
      this.writeFailures++;
      if (!this.#failing) log.error("earnings state write failed", { path: this.path, error: err });
      this.#failing = true;
    }
  }

  #modelKey(model: string): string {
    const key = model.length > MAX_MODEL_LENGTH ? model.slice(0, MAX_MODEL_LENGTH) + "…" : model;
    return this.#all.has(key) || this.#all.size < MAX_MODELS ? key : OTHER_MODELS;
  }

  #prune(now: number): void {
    const oldest = dayOf(now - (DAYS_KEPT - 1) * 86_400_000);
    for (const d of this.#days.keys()) if (d < oldest) this.#days.delete(d);
  }

  #state(): StateFile {
    const obj = (m: ByModel) => Object.fromEntries(m);
    return {
      version: 1,
      since: new Date(this.#since).toISOString(),
      days: Object.fromEntries([...this.#days].map(([d, m]) => [d, obj(m)])),
      all: obj(this.#all),
      samples: Object.fromEntries(this.#samples),
      recent: this.#recent,
    };
  }

  #load(path: string): void {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        log.warn("earnings state unreadable; counting from zero", { path, error: err });
      }
      return;
    }
    try {
      const s = JSON.parse(text) as Partial<StateFile>;
      if (s.version !== 1) throw new SyntaxError(`version ${s.version} is not 1`);
      const since = Date.parse(s.since ?? "");
      if (Number.isFinite(since)) this.#since = since;
      for (const [d, m] of Object.entries(s.days ?? {})) {
        if (/^\d{4}-\d\d-\d\d$/.test(d)) this.#days.set(d, readModels(m));
      }
      this.#all = readModels(s.all ?? {});
      for (const [model, ring] of Object.entries(s.samples ?? {})) {
        this.#samples.set(model, readSamples(ring));
      }
      this.#recent = readSamples(s.recent ?? []);
    } catch (err) {
      log.warn("earnings state corrupt; set aside, counting from zero", { path, error: err });
      this.#days.clear();
      this.#all.clear();
      this.#samples.clear();
      this.#recent = [];
      try {
        Deno.renameSync(path, `${path}.corrupt`);
      } catch {
        // keep going: the next flush replaces it
      }
    }
  }
}

interface StateFile {
  version: 1;
  since: string;
  days: Record<string, Record<string, Counters>>;
  all: Record<string, Counters>;
  samples: Record<string, Sample[]>;
  recent: Sample[];
}

function counters(m: ByModel, model: string): Counters {
  let c = m.get(model);
  if (!c) m.set(model, c = zero());
  return c;
}

function num(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : 0;
}

/** Counters from the state file, every field checked (a hand-edited file loads what it can). */
function readModels(raw: unknown): ByModel {
  const m: ByModel = new Map();
  if (typeof raw !== "object" || raw === null) return m;
  for (const [model, v] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof v !== "object" || v === null || m.size >= MAX_MODELS) continue;
    const o = v as Record<string, unknown>;
    const c = zero();
    c.jobs = num(o.jobs);
    c.inputTokens = num(o.inputTokens);
    c.outputTokens = num(o.outputTokens);
    c.earnedMicroUsdc = num(o.earnedMicroUsdc);
    c.missedJobs = num(o.missedJobs);
    c.missedMicroUsdc = num(o.missedMicroUsdc);
    const by = (typeof o.missedByReason === "object" && o.missedByReason !== null
      ? o.missedByReason
      : {}) as Record<string, { jobs?: unknown; microUsdc?: unknown } | undefined>;
    for (const r of MISS_REASONS) {
      c.missedByReason[r] = { jobs: num(by[r]?.jobs), microUsdc: num(by[r]?.microUsdc) };
    }
    m.set(model, c);
  }
  return m;
}

function readSamples(raw: unknown): Sample[] {
  if (!Array.isArray(raw)) return [];
  return raw.filter((s): s is Sample => Array.isArray(s) && s.length === 2)
    .map((s) => [num(s[0]), num(s[1])] as Sample).slice(-SAMPLES);
}
