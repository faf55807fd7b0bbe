// Webhook alerts (issue 8, "Logs and alerts"): a JSON POST to `alerts.webhook_url` when the
// coordinator is lost for over a minute, a backend goes down, or the error rate reaches
// `alerts.error_rate_threshold`; one alert per episode, retried with backoff, off the job path.

import type { Config } from "../config/config.ts";
import type { BackendStatus } from "../backends/discovery.ts";
import type { FinishedJob } from "../jobs/job.ts";
import { log } from "../log.ts";
import type { SessionStatus } from "../link/session.ts";
import { sleep } from "../timers.ts";
import { AGENT_VERSION } from "../version.ts";

/**
 * Jobs the error-rate window keeps (the newest); above that rate the window is shorter than
 * `errorWindowMs`, and the rate is still right. Bounds memory whatever the job rate.
 */
const MAX_RATE_JOBS = 10_000;

/** A problem starting (`…_lost`, `…_down`, `…_high`) or ending. */
export type AlertEvent =
  | "coordinator_lost"
  | "coordinator_restored"
  | "backend_down"
  | "backend_up"
  | "error_rate_high"
  | "error_rate_normal";

export interface AlertsOptions {
  /** The `[alerts]` settings, read live so a reload applies. */
  config: () => Config["alerts"];
  /** Who is alerting: the agent's public key (base64) and provider_id. */
  agent: () => { pubkey: string; providerId: string | undefined };
  connection: () => Pick<SessionStatus, "state" | "lastError" | "lastAuthAt">;
  backends: () => readonly Pick<BackendStatus, "kind" | "url" | "state" | "lastError">[];
  fetch?: typeof fetch;
  now?: () => number;
  /** How often conditions are checked. Default 5 s. */
  tickMs?: number;
  /** How long the coordinator may be gone before an alert. Default 60 s. */
  lostAfterMs?: number;
  /** Error-rate window and the fewest jobs in it that can raise an alert. Default 60 s, 5. */
  errorWindowMs?: number;
  minJobs?: number;
  /** Delivery attempts per alert, first retry delay (doubling), per-attempt timeout. */
  attempts?: number;
  retryBaseMs?: number;
  timeoutMs?: number;
}

/**
 * Watches the connection, the backends and the jobs, and posts an alert once per episode.
 * {@link jobFinished} only records; everything else happens on {@link run}'s own timer.
 *
 * @example
 * ```ts
 * const alerts = new Alerts({ config: () => config.alerts, agent, connection, backends });
 * agent.onJobFinished((j) => alerts.jobFinished(j));
 * await alerts.run(stopSignal);
 * ```
 */
export class Alerts {
  #o: AlertsOptions;
  #now: () => number;
  #fetch: typeof fetch;
  #stop = new AbortController();
  #deliveries = new Set<Promise<void>>();
  #lostSince: number | undefined;
  #lostAlerted = false;
  #lastAuthSeen: number | undefined;
  #downAlerted = new Set<string>();
  #jobs: { at: number; failed: boolean; code: string }[] = [];
  #rateHigh = false;
  /** Alerts delivered (2xx) and given up on, since start. */
  delivered = 0;
  undelivered = 0;

  constructor(opts: AlertsOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#fetch = opts.fetch ?? fetch;
  }

  /** Takes in a finished job for the error rate (jobs with a terminal frame that is a fault). */
  jobFinished(job: FinishedJob): void {
    const o = job.outcome;
    if (o === "cancelled" || o === "disconnected" || o === "out_of_capacity") return;
    this.#jobs.push({ at: job.finishedAt, failed: o !== "job_done", code: o });
    if (this.#jobs.length > MAX_RATE_JOBS) this.#jobs.shift();
  }

  /** Checks every condition at `now` and raises or ends episodes (run calls it every tick). */
  check(now = this.#now()): void {
    this.#checkCoordinator(now);
    this.#checkBackends();
    this.#checkErrorRate(now);
  }

  /** Checks conditions every `tickMs` until `signal` aborts; then stops retries and returns. */
  async run(signal: AbortSignal): Promise<void> {
    try {
      while (!signal.aborted) {
        this.check();
        await sleep(this.#o.tickMs ?? 5_000, signal);
      }
    } finally {
      this.#stop.abort();
      await Promise.all(this.#deliveries);
    }
  }

  #checkCoordinator(now: number): void {
    const { state, lastError, lastAuthAt } = this.#o.connection();
    // Authenticated since the last check, even briefly: a new episode starts now.
    const reconnected = lastAuthAt !== this.#lastAuthSeen;
    this.#lastAuthSeen = lastAuthAt;
    const connected = state === "authenticated" || state === "draining" || state === "stopped";
    if (connected || reconnected) {
      if (this.#lostAlerted) {
        this.#emit("coordinator_restored", {
          "lost_s": Math.round((now - this.#lostSince!) / 1000),
        });
      }
      this.#lostSince = undefined;
      this.#lostAlerted = false;
    }
    if (connected) return;
    this.#lostSince ??= now;
    if (!this.#lostAlerted && now - this.#lostSince >= (this.#o.lostAfterMs ?? 60_000)) {
      this.#lostAlerted = true;
      this.#emit("coordinator_lost", {
        "since": new Date(this.#lostSince).toISOString(),
        "last_error": lastError ?? null,
      });
    }
  }

  #checkBackends(): void {
    const seen = new Set<string>();
    for (const b of this.#o.backends()) {
      const url = withoutSecrets(b.url);
      const key = `${b.kind} ${url}`;
      seen.add(key);
      const detail = { "kind": b.kind, "url": url };
      if (b.state === "down" && !this.#downAlerted.has(key)) {
        this.#downAlerted.add(key);
        this.#emit("backend_down", { ...detail, "reason": b.lastError ?? null });
      } else if (b.state !== "down" && this.#downAlerted.delete(key)) {
        this.#emit("backend_up", { ...detail, "state": b.state });
      }
    }
    for (const key of this.#downAlerted) if (!seen.has(key)) this.#downAlerted.delete(key);
  }

  #checkErrorRate(now: number): void {
    const windowMs = this.#o.errorWindowMs ?? 60_000;
    while (this.#jobs.length > 0 && this.#jobs[0]!.at < now - windowMs) this.#jobs.shift();
    const jobs = this.#jobs.length;
    const failed = this.#jobs.filter((j) => j.failed).length;
    const rate = jobs === 0 ? 0 : failed / jobs;
    const threshold = this.#o.config().errorRateThreshold;
    const detail = {
      "rate": Math.round(rate * 1000) / 1000,
      "threshold": threshold,
      "jobs": jobs,
      "failed": failed,
      "window_s": Math.round(windowMs / 1000),
    };
    if (!this.#rateHigh && jobs >= (this.#o.minJobs ?? 5) && rate >= threshold) {
      this.#rateHigh = true;
      const last = this.#jobs.findLast((j) => j.failed);
      this.#emit("error_rate_high", { ...detail, "last_error_code": last?.code ?? null });
    } else if (this.#rateHigh && rate < threshold) {
      this.#rateHigh = false;
      this.#emit("error_rate_normal", detail);
    }
  }

  /** Logs the alert and, when a webhook is configured, posts it in the background. */
  #emit(event: AlertEvent, detail: Record<string, unknown>): void {
    const problem = event.endsWith("_lost") || event.endsWith("_down") || event.endsWith("_high");
    (problem ? log.warn : log.info)("alert", { event, ...detail });
    const url = this.#o.config().webhookUrl;
    if (url === undefined) return;
    const { pubkey, providerId } = this.#o.agent();
    const body = JSON.stringify({
      "event": event,
      "at": new Date(this.#now()).toISOString(),
      "agent": { "pubkey": pubkey, "provider_id": providerId ?? null, "version": AGENT_VERSION },
      "detail": detail,
    });
    const delivery = this.#deliver(url, event, body).finally(() => {
      this.#deliveries.delete(delivery);
    });
    this.#deliveries.add(delivery);
  }

  async #deliver(url: string, event: AlertEvent, body: string): Promise<void> {
    const attempts = this.#o.attempts ?? 5;
    const stop = this.#stop.signal;
    for (let attempt = 1; !stop.aborted; attempt++) {
      let why: string;
      let retry = true;
      try {
        const res = await this.#fetch(url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "user-agent": `usepod-agent/${AGENT_VERSION}`,
          },
          body,
          signal: AbortSignal.any([stop, AbortSignal.timeout(this.#o.timeoutMs ?? 10_000)]),
        });
        await res.body?.cancel();
        if (res.ok) {
          this.delivered++;
          log.debug("alert delivered", { event, attempt });
          return;
        }
        why = `HTTP ${res.status}`;
        retry = res.status >= 500 || res.status === 408 || res.status === 429;
      } catch (err) {
        if (stop.aborted) return;
        why = scrubUrls(err instanceof Error ? `${err.name}: ${err.message}` : String(err));
      }
      if (!retry || attempt >= attempts) {
        this.undelivered++;
        log.warn("alert not delivered", { event, attempts: attempt, error: why });
        return;
      }
      log.debug("alert delivery failed; retrying", { event, attempt, error: why });
      await sleep((this.#o.retryBaseMs ?? 1_000) * 2 ** (attempt - 1), stop);
    }
  }
}

/** Replaces every URL in an error message: the webhook URL may carry a token. */
export function scrubUrls(text: string): string {
  return text.replace(/[a-z][a-z0-9+.-]*:\/\/[^\s)]+/gi, "<url>");
}

/** A URL without user, password, query or fragment (any of which may hold a secret). */
function withoutSecrets(url: string): string {
  const u = URL.parse(url);
  if (!u) return "<invalid url>";
  return `${u.protocol}//${u.host}${u.pathname === "/" && !url.endsWith("/") ? "" : u.pathname}`;
}
