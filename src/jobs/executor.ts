// Jobs (PROTOCOL §4–5): admission (slots before model lookup, then the backends' own slots and
// queues), routing by model and format, deadline and cancel through one AbortController per job,
// the relay of backend bytes with backpressure, and exactly one terminal frame per job (none
// after a cancel or a lost link).

import { type BodyStream, openCompletion } from "../backends/client.ts";
import { engineSlots, type Route, type ServedModel } from "../backends/discovery.ts";
import { BackendError, type ErrorCode } from "../errors.ts";
import { log } from "../log.ts";
import * as wire from "../link/protocol.ts";
import { clip, MAX_ERROR_TEXT, MAX_SHOWN_MODEL } from "../text.ts";
import { Deadlines } from "./deadlines.ts";
import { preloadNativeHash } from "./digest.ts";
import { JsonAnswerMeter } from "./json_usage.ts";
import {
  type ActiveJob,
  EMPTY_SHA256,
  type ExecutorOptions,
  type Link,
  MIN_JOB_SHARE,
  type Outcome,
  RunningJob,
  Stop,
} from "./job.ts";

/**
 * Owns the jobs in flight. The session hands it parsed frames; everything a job does, from
 * admission to its terminal frame, happens here, and its slot is freed in one `finally`.
 *
 * @example
 * ```ts
 * const ex = new Executor({ maxConcurrent: () => 8, routes: () => discovery.current });
 * ex.submit(jobFrame, ws);
 * ```
 */
export class Executor {
  #opts: ExecutorOptions;
  #jobs = new Map<string, RunningJob>();
  #perModel = new Map<string, number>();
  #perBackend = new Map<number, number>();
  #draining = false;
  #idle: (() => void)[] = [];
  #high: number;
  #low: number;
  /** Every job's deadline on one timer instead of one timer per job (deadlines.ts). */
  #deadlines = new Deadlines();

  constructor(opts: ExecutorOptions) {
    this.#opts = opts;
    this.#high = opts.highWater ?? 8 * 1024 * 1024;
    this.#low = opts.lowWater ?? 2 * 1024 * 1024;
  }

  /** Jobs in flight. */
  get inFlight(): number {
    return this.#jobs.size;
  }

  /** Snapshot of the jobs in flight. */
  active(): ActiveJob[] {
    return [...this.#jobs.values()];
  }

  /** Jobs in flight for one model. */
  inFlightFor(model: string): number {
    return this.#perModel.get(model) ?? 0;
  }

  /** Jobs in flight on one backend (by its index in the config). */
  inFlightOn(backendIndex: number): number {
    return this.#perBackend.get(backendIndex) ?? 0;
  }

  /** Stops taking work: every new job is answered out_of_capacity (graceful drain). */
  set draining(on: boolean) {
    this.#draining = on;
  }
  get draining(): boolean {
    return this.#draining;
  }

  /** Resolves when no job is in flight. */
  idle(): Promise<void> {
    if (this.#jobs.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Cancels a job (job_cancel): its backend request closes, no terminal frame is sent. */
  cancel(jobId: string): boolean {
    const job = this.#jobs.get(jobId);
    if (!job) return false;
    job.controller.abort(new Stop("cancelled"));
    return true;
  }

  /**
   * Aborts every job in flight: `disconnected` sends nothing (the link is gone);
   * `shutdown` ends each with job_error internal "agent shutting down".
   */
  abortAll(kind: "disconnected" | "shutdown", link?: Link): void {
    for (const job of this.#jobs.values()) {
      if (link === undefined || job.link === link) job.controller.abort(new Stop(kind));
    }
  }

  /** Answers a job frame that was malformed but carried a valid job id. */
  rejectMalformed(jobId: string, reason: string, link: Link): void {
    if (this.#jobs.has(jobId)) return;
    link.send(wire.jobError(jobId, "internal", `malformed job: ${reason}`, 0));
  }

  /** Admits or refuses a job; an admitted job then runs on its own until its terminal frame. */
  submit(job: wire.Job, link: Link): void {
    const receivedAt = Date.now();
    if (this.#jobs.has(job.jobId)) {
      log.warn("job already in flight, duplicate ignored", { job: job.jobId });
      return;
    }
    const refuse = (code: ErrorCode, message: string, served?: ServedModel, busy = false) => {
      link.send(wire.jobError(job.jobId, code, message, 0));
      const model = clip(job.modelId, MAX_SHOWN_MODEL);
      log.info("job refused", { job: job.jobId, model, code, message });
      this.#opts.onFinished?.({
        jobId: job.jobId,
        model: job.modelId,
        backend: served?.backend,
        format: job.format,
        outcome: code,
        message,
        inputTokens: 0,
        outputTokens: 0,
        usageReported: false,
        firstChunkMs: undefined,
        durationMs: 0,
        bytes: 0,
        sha256: EMPTY_SHA256,
        receivedAt,
        finishedAt: receivedAt,
        admitted: false,
        backendBusy: busy,
      });
    };
    if (this.#draining) return refuse("out_of_capacity", "agent is shutting down");
    const max = this.#opts.maxConcurrent();
    if (this.#jobs.size >= max) {
      return refuse("out_of_capacity", `all ${max} slots are busy`);
    }
    const served = this.#opts.routes().byId.get(job.modelId);
    if (!served) {
      const shown = clip(job.modelId, MAX_SHOWN_MODEL);
      return refuse("model_not_loaded", `no healthy backend serves ${shown}`);
    }
    if (this.#opts.paused?.(job.modelId)) {
      return refuse("out_of_capacity", `${job.modelId} is paused by the operator`, served);
    }
    if (this.inFlightFor(job.modelId) >= served.maxConcurrent) {
      // The model's limit is its backends' own slots when they report fewer than the agent's.
      const slots = engineSlots(served.routes);
      const engine = slots !== undefined && slots <= served.maxConcurrent;
      return refuse(
        "out_of_capacity",
        engine
          ? `all ${slots} slots of the backends serving ${job.modelId} are busy`
          : `all ${served.maxConcurrent} slots of ${job.modelId} are busy`,
        served,
        engine,
      );
    }
    const route = this.#pickRoute(served, job.format);
    if (typeof route === "string") return refuse("out_of_capacity", route, served, true);
    if (!route) {
      return refuse(
        "model_not_loaded",
        `no backend serving ${job.modelId} accepts the ${job.format} format`,
        served,
      );
    }
    // The native hash loads with the first job (it is not needed before); until it is ready,
    // jobs hash with the TypeScript implementation.
    void preloadNativeHash();
    const running = new RunningJob(job.jobId, job.modelId, job.format, receivedAt, link);
    running.backendIndex = route.backendIndex;
    running.backend = route.target.spec.kind;
    this.#jobs.set(job.jobId, running);
    bump(this.#perModel, job.modelId, 1);
    bump(this.#perBackend, route.backendIndex, 1);
    log.debug("job accepted", { job: job.jobId, model: job.modelId, backend: running.backend });
    void this.#run(running, job, route);
  }

  /**
   * The best-priority route that speaks the format and can start the job now (a free slot of
   * its own, no queue), least busy first among equals; when every such route is saturated, why
   * (a string); undefined when none speaks the format.
   */
  #pickRoute(served: ServedModel, format: wire.WireFormat): Route | string | undefined {
    let best: Route | undefined;
    let busy: string | undefined;
    const load = (i: number) => this.#perBackend.get(i) ?? 0;
    for (const r of served.routes) {
      if (!r.formats.includes(format)) continue;
      const full = r.slots !== undefined && load(r.backendIndex) >= r.slots;
      const why = full
        ? `all ${r.slots} slots of ${r.target.spec.kind} at ${r.target.base} are busy`
        : this.#opts.backendBusy?.(r.backendIndex);
      if (why !== undefined) {
        busy ??= why;
        continue;
      }
      if (!best) {
        best = r;
        continue;
      }
      if (r.target.spec.priority > best.target.spec.priority) break;
      if (load(r.backendIndex) < load(best.backendIndex)) best = r;
    }
    return best ?? busy;
  }

  async #run(job: RunningJob, frame: wire.Job, route: Route): Promise<void> {
    const { controller, link } = job;
    const signal = controller.signal;
    const clearDeadline = this.#deadlines.add(
      frame.deadlineMs,
      () => controller.abort(new Stop("deadline")),
    );
    const stopped = new Promise<never>((_, reject) => {
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
    stopped.catch(() => {});
    let body: BodyStream | undefined;
    let terminal: string | undefined;
    let outcome: Outcome = "job_done";
    let message: string | undefined;
    let usage = { input: 0, output: 0, reported: false };
    try {
      body = await this.#open(job, frame, route, stopped);
      if (body.json) job.meter = new JsonAnswerMeter(frame.format);
      for (;;) {
        // The body rejects with the signal's reason when the job stops.
        const piece = await body.read();
        if (piece === null) break;
        if (piece.length === 0) continue;
        this.#relay(job, piece);
        if (link.bufferedAmount > this.#high) {
          await Promise.race([link.waitFlushed(link.queuedTotal - this.#low), stopped]);
        } else if (job.queued > Math.max(MIN_JOB_SHARE, this.#high / this.#jobs.size)) {
          await Promise.race([link.waitFlushed(job.lastEnd), stopped]);
        }
      }
      const u = job.meter.finish();
      usage = u;
      if (u.error !== undefined) {
        outcome = "internal";
        message = `backend error in stream: ${u.error}`;
      } else if (!u.completed) {
        outcome = "internal";
        message = frame.format === "anthropic"
          ? "stream ended without message_stop"
          : "stream ended without [DONE] or a finish_reason";
      }
    } catch (err) {
      const stop = signal.aborted ? signal.reason : undefined;
      usage = { input: 0, output: job.meter.outputSoFar, reported: false };
      if (stop instanceof Stop) {
        switch (stop.kind) {
          case "cancelled":
          case "disconnected":
            outcome = stop.kind;
            break;
          case "deadline":
            outcome = "backend_timeout";
            message = `deadline of ${frame.deadlineMs} ms passed before the stream ended`;
            break;
          case "shutdown":
            outcome = "internal";
            message = "agent shutting down";
        }
      } else if (err instanceof BackendError) {
        outcome = err.code;
        message = err.message;
      } else {
        outcome = "internal";
        message = (err as Error)?.message ?? String(err);
        log.error("job failed unexpectedly", { job: job.jobId, error: err });
      }
    } finally {
      clearDeadline();
      body?.close();
      // A cancel (or a lost link) that landed while the last read resolved still means no
      // terminal frame: cancel() already answered true for this job.
      const late = signal.aborted ? signal.reason : undefined;
      if (late instanceof Stop && (late.kind === "cancelled" || late.kind === "disconnected")) {
        outcome = late.kind;
      }
      if (!signal.aborted) controller.abort(new Stop("cancelled")); // releases `stopped`
      this.#jobs.delete(job.jobId);
      bump(this.#perModel, job.model, -1);
      bump(this.#perBackend, job.backendIndex, -1);
      const durationMs = Math.round(performance.now() - job.started);
      if (outcome === "job_done") {
        terminal = wire.jobDone(job.jobId, usage, durationMs);
      } else if (outcome !== "cancelled" && outcome !== "disconnected") {
        message = clip(message ?? outcome, MAX_ERROR_TEXT);
        terminal = wire.jobError(job.jobId, outcome, message, usage.output);
      }
      if (terminal !== undefined && link.open) link.send(terminal);
      const fields = {
        job: job.jobId,
        model: job.model,
        backend: job.backend,
        outcome,
        ms: durationMs,
        in: usage.input,
        out: usage.output,
      };
      if (outcome === "job_done") log.info("job done", fields);
      else log.info("job ended", message ? { ...fields, message } : fields);
      this.#opts.onFinished?.({
        jobId: job.jobId,
        model: job.model,
        backend: job.backend,
        format: job.format,
        outcome,
        message,
        inputTokens: usage.input,
        outputTokens: usage.output,
        usageReported: usage.reported,
        firstChunkMs: job.firstChunkMs,
        durationMs,
        bytes: job.bytes,
        sha256: job.hash.hex(),
        receivedAt: job.receivedAt,
        finishedAt: Date.now(),
        admitted: true,
        backendBusy: outcome === "out_of_capacity",
      });
      if (this.#jobs.size === 0) this.#idle.splice(0).forEach((r) => r());
    }
  }

  /**
   * Opens the completion on `route`. When that backend is unreachable (it never got the
   * request), it is reported down and the next backend serving the model in the job's format
   * is tried, so a job is not failed for a backend that died since the last discovery.
   */
  async #open(
    job: RunningJob,
    frame: wire.Job,
    route: Route,
    stopped: Promise<never>,
  ): Promise<BodyStream> {
    const signal = job.controller.signal;
    const tried = new Set<number>();
    for (let r = route;;) {
      tried.add(r.backendIndex);
      const opening = openCompletion(
        r.target,
        frame.modelId,
        frame.request,
        frame.format,
        signal,
        this.#opts.pool,
      );
      // A body that arrives after the job stopped is closed, never leaked.
      opening.then((b) => signal.aborted && b.close(), () => {});
      try {
        return await Promise.race([opening, stopped]);
      } catch (err) {
        if (!(err instanceof BackendError) || err.code !== "backend_unreachable") throw err;
        this.#opts.onBackendUnreachable?.(r.backendIndex, err.message);
        const next = this.#opts.routes().byId.get(frame.modelId)?.routes.find((x) =>
          !tried.has(x.backendIndex) && x.formats.includes(frame.format) &&
          (x.slots === undefined || (this.#perBackend.get(x.backendIndex) ?? 0) < x.slots)
        );
        if (!next || signal.aborted) throw err;
        log.info("backend unreachable: job moved to the next backend", {
          job: job.jobId,
          from: job.backend,
          to: next.target.spec.kind,
        });
        bump(this.#perBackend, job.backendIndex, -1);
        bump(this.#perBackend, next.backendIndex, 1);
        job.backendIndex = next.backendIndex;
        job.backend = next.target.spec.kind;
        r = next;
      }
    }
  }

  /** The hot path: account, frame, queue. Nothing here allocates beyond the frame text. */
  #relay(job: RunningJob, piece: Uint8Array): void {
    const link = job.link;
    job.meter.feed(piece);
    job.hash.update(piece);
    const before = link.queuedTotal;
    link.send(job.head + piece.toBase64() + wire.CHUNK_TAIL);
    if (job.firstChunkMs === undefined) {
      job.firstChunkMs = Math.round(performance.now() - job.started);
    }
    job.bytes += piece.length;
    if (link.flushedTotal >= job.lastEnd) job.queued = 0;
    job.queued += link.queuedTotal - before;
    job.lastEnd = link.queuedTotal;
  }
}

function bump<K>(m: Map<K, number>, k: K, d: number): void {
  const n = (m.get(k) ?? 0) + d;
  if (n <= 0) m.delete(k);
  else m.set(k, n);
}
