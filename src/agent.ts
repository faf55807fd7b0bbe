// The running agent: wires config, identity, discovery, executor, stats, receipts, earnings,
// history, alerts and the coordinator session, owns the background loops (session, rediscovery
// every 60 s, earnings and history flush, alert checks), and implements graceful drain and
// config reload.

import { Alerts, type AlertsOptions } from "./ops/alerts.ts";
import type { Config } from "./config/config.ts";
import { adsKey, Discovery, type DiscoveryOptions, priceOf } from "./backends/discovery.ts";
import type { PauseState } from "./ops/pause.ts";
import { Earnings } from "./books/earnings.ts";
import { History } from "./books/history.ts";
import { MoneyCounters } from "./books/money_counters.ts";
import { Executor } from "./jobs/executor.ts";
import { ConnectionPool } from "./backends/pool.ts";
import type { FinishedJob } from "./jobs/job.ts";
import type { Identity } from "./identity/identity.ts";
import { persistProviderId } from "./identity/state_copy.ts";
import { hasTerminal, Ledger } from "./books/ledger.ts";
import { stateDirOf, stateFile } from "./paths.ts";
import { log } from "./log.ts";
import * as wire from "./link/protocol.ts";
import { type Advert, Session, type SessionOptions } from "./link/session.ts";
import { sleep } from "./timers.ts";
import { Stats } from "./jobs/stats.ts";
import type { Target } from "./backends/client.ts";
import { QueueWatch, type QueueWatchOptions } from "./backends/vllm_queue.ts";
import { AGENT_NAME, AGENT_VERSION } from "./version.ts";

export interface AgentOptions {
  config: Config;
  identity: Identity;
  /** CA certificates (PEM) for a wss coordinator with a private CA. */
  caCerts?: string[];
  /** Overrides for tests: discovery's env/fetch, the session's dialer, backoff and timers. */
  discovery?: DiscoveryOptions;
  session?: Partial<
    Pick<
      SessionOptions,
      "connect" | "backoff" | "heartbeatMs" | "pingMs" | "deadLinkMs" | "handshakeTimeoutMs"
    >
  >;
  rediscoverMs?: number;
  /** Overrides for tests: alert timers and fetch, the earnings flush interval. */
  alerts?: Partial<
    Pick<AlertsOptions, "fetch" | "tickMs" | "lostAfterMs" | "minJobs" | "attempts" | "retryBaseMs">
  >;
  earningsFlushMs?: number;
  /** Overrides for tests: how often vLLM queues are read. */
  queueWatch?: Partial<Pick<QueueWatchOptions, "intervalMs" | "retryMs">>;
}

/**
 * One agent process's worth of state and loops.
 *
 * @example
 * ```ts
 * const agent = new Agent({ config, identity });
 * const running = agent.run();
 * Deno.addSignalListener("SIGTERM", () => agent.shutdown());
 * await running;
 * ```
 */
export class Agent {
  /** Per-model tables label only advertised models (others share `(unadvertised)`). */
  readonly stats = new Stats(Date.now, (model) => this.discovery.current.byId.has(model));
  readonly discovery: Discovery;
  readonly executor: Executor;
  readonly session: Session;
  /** Signed receipts of every terminal frame (`receipts.jsonl` in the state directory). */
  readonly ledger: Ledger;
  /** Money counters (`earnings.json` in the state directory); `summary()` for the status. */
  readonly earnings: Earnings;
  /** Earnings per hour and tokens per second for the page's charts (`history.json`). */
  readonly history: History;
  /** Earned and missed USDC since start by the stats' model labels, for /metrics. */
  readonly money = new MoneyCounters();
  readonly alerts: Alerts;
  /** Keep-alive connections to plain-HTTP backends, reused across jobs; closed at shutdown. */
  readonly backendPool = new ConnectionPool();
  /** vLLM queue lengths (PROTOCOL §5 extension), read about once a second. */
  readonly queues: QueueWatch;
  readonly startedAt = Date.now();
  #config: Config;
  #identity: Identity;
  #rediscoverMs: number;
  #stopLoops = new AbortController();
  #shutdown: Promise<void> | undefined;
  readonly paused = new Set<string>();
  #finishedListeners: ((job: FinishedJob) => void)[] = [(job) => this.stats.record(job)];
  #pausedAll = false;

  constructor(opts: AgentOptions) {
    this.#config = opts.config;
    this.#identity = opts.identity;
    this.#rediscoverMs = opts.rediscoverMs ?? 60_000;
    this.discovery = new Discovery(() => this.#config, opts.discovery);
    this.queues = new QueueWatch({ backends: () => this.#vllmTargets(), ...opts.queueWatch });
    this.executor = new Executor({
      maxConcurrent: () => this.#config.limits.maxConcurrent,
      routes: () => this.discovery.current,
      pool: this.backendPool,
      onBackendUnreachable: (index, reason) => {
        this.discovery.markDown(index, reason);
        this.#advertiseIfChanged();
      },
      onFinished: (job) => {
        for (const listener of this.#finishedListeners) listener(job);
      },
      paused: (model) => this.#pausedAll || this.paused.has(model),
      backendBusy: (index) => this.queues.busy(index),
    });
    this.session = new Session({
      url: new URL(opts.config.coordinator.url),
      ...(opts.caCerts ? { caCerts: opts.caCerts } : {}),
      identity: () => this.#identity,
      saveProviderId: async (id) => {
        const stateDir = stateDirOf(this.#config.identity);
        const saved = await persistProviderId(this.#identity, id, stateDir);
        this.#identity = saved.identity;
        if (saved.where !== saved.identity.path) {
          log.info("identity file not writable: provider_id kept in the state directory", {
            path: saved.where,
          });
        }
      },
      enrollmentCode: opts.config.coordinator.enrollmentCode,
      executor: this.executor,
      capabilities: async () => {
        await this.discovery.refresh({ maxAgeMs: 5_000 });
        return this.#advert();
      },
      heartbeat: () => wire.heartbeat(this.stats.heartbeat(this.executor.inFlight)),
      ...opts.session,
    });
    const state = opts.config.identity;
    this.ledger = new Ledger({
      path: stateFile(state, "receipts.jsonl"),
      identity: () => this.#identity,
    });
    this.earnings = new Earnings({
      path: stateFile(state, "earnings.json"),
      ...(opts.earningsFlushMs !== undefined ? { flushMs: opts.earningsFlushMs } : {}),
    });
    this.history = new History({
      path: stateFile(state, "history.json"),
      ...(opts.earningsFlushMs !== undefined ? { flushMs: opts.earningsFlushMs } : {}),
    });
    this.alerts = new Alerts({
      config: () => this.#config.alerts,
      agent: () => ({ pubkey: this.#identity.publicKeyB64, providerId: this.#identity.providerId }),
      connection: () => this.session.status,
      backends: () => this.discovery.current.backends,
      ...opts.alerts,
    });
    this.onJobFinished((job) => this.#account(job));
  }

  /** Receipt, money and error-rate bookkeeping of one finished job: queues, never waits. */
  #account(job: FinishedJob): void {
    const price = this.discovery.current.byId.get(job.model) ?? priceOf(this.#config, job.model);
    if (hasTerminal(job)) this.ledger.appendJob(job, price);
    // Money per model under the stats' label: models not advertised share `(unadvertised)`.
    const label = this.stats.label(job.model);
    const counted = this.earnings.record(
      label === job.model ? job : { ...job, model: label },
      price,
    );
    this.money.add(label, counted);
    this.history.record(job, counted?.earnedMicroUsdc ?? 0);
    this.alerts.jobFinished(job);
  }

  /** The vLLM backends the routes use now, by backend index. */
  #vllmTargets(): Map<number, Target> {
    const m = new Map<number, Target>();
    for (const model of this.discovery.current.models) {
      for (const r of model.routes) {
        if (r.target.spec.kind === "vllm") m.set(r.backendIndex, r.target);
      }
    }
    return m;
  }

  /** Calls `listener` once for every job that ends or is refused (after the stats). */
  onJobFinished(listener: (job: FinishedJob) => void): void {
    this.#finishedListeners.push(listener);
  }

  /** The configuration in use (replaced by a reload). */
  get config(): Config {
    return this.#config;
  }

  /** The identity in use (replaced when a provider_id is saved). */
  get identity(): Identity {
    return this.#identity;
  }

  /** True while every model is paused (`usepod-agent pause`); read by the status server. */
  get pausedAll(): boolean {
    return this.#pausedAll;
  }

  /** Runs until {@link shutdown} has finished. */
  async run(): Promise<void> {
    // Discovery starts alongside the first dial; auth_ok reuses it when it is fresh.
    const first = this.discovery.refresh().catch((err) => {
      log.error("discovery failed", { error: err });
    });
    const stop = this.#stopLoops.signal;
    await Promise.all([
      first,
      this.session.run(),
      this.#rediscoverLoop(),
      this.earnings.run(stop),
      this.history.run(stop),
      this.alerts.run(stop),
      this.queues.run(stop),
    ]);
  }

  /** The capabilities frame for the current discovery, pause and drain state. */
  #advert(): Advert & { models: number } {
    const models = this.executor.draining
      ? []
      : this.discovery.current.models.filter((m) =>
        !this.#pausedAll && !this.paused.has(m.modelId)
      );
    const frame = wire.capabilities(
      models,
      {
        maxConcurrentTotal: this.#config.limits.maxConcurrent,
        maxTokensPerMinute: this.#config.limits.maxTokensPerMinute,
      },
      { agentVersion: AGENT_VERSION, agent: AGENT_NAME },
    );
    return { frame, key: adsKey(models), models: models.length };
  }

  /** Sends a fresh capabilities frame when what it would advertise changed (or `force`). */
  #advertiseIfChanged(force = false): void {
    const ad = this.#advert();
    if (this.session.advertise(ad, force)) {
      log.info("capabilities sent", { models: ad.models });
    }
  }

  async #rediscoverLoop(): Promise<void> {
    const stop = this.#stopLoops.signal;
    while (!stop.aborted) {
      await sleep(this.#rediscoverMs, stop);
      if (stop.aborted) break;
      try {
        await this.discovery.refresh();
        this.#advertiseIfChanged();
      } catch (err) {
        log.error("rediscovery failed", { error: err });
      }
    }
  }

  /**
   * Takes models out of service without disconnecting (issue 8): they leave capabilities, new
   * jobs for them are answered out_of_capacity, jobs in flight finish.
   */
  setPaused(state: PauseState): void {
    const before = JSON.stringify([this.#pausedAll, [...this.paused].sort()]);
    this.#pausedAll = state.all;
    this.paused.clear();
    for (const m of state.models) this.paused.add(m);
    if (JSON.stringify([state.all, [...state.models].sort()]) === before) return;
    log.info(state.all ? "paused" : state.models.length ? "paused models" : "resumed", {
      models: state.all ? "all" : state.models.join(",") || "none",
    });
    this.#advertiseIfChanged(true);
  }

  /**
   * Applies a new, already validated config without dropping the connection or jobs:
   * prices, limits, backends and allow-lists; then rediscovers and advertises afresh.
   */
  async reload(next: Config): Promise<void> {
    const prev = this.#config;
    if (next.coordinator.url !== prev.coordinator.url) {
      log.warn("coordinator.url changed: takes effect after a restart", {});
      next = { ...next, coordinator: prev.coordinator };
    }
    if (
      next.identity.keyPath !== prev.identity.keyPath ||
      next.identity.stateDir !== prev.identity.stateDir
    ) {
      log.warn("identity.key_path or state_dir changed: takes effect after a restart", {});
      next = { ...next, identity: prev.identity };
    }
    this.#config = next;
    await this.discovery.refresh();
    this.#advertiseIfChanged(true);
    log.info("config reloaded", { path: next.path, backends: next.backends.length });
  }

  /**
   * Graceful shutdown: stop taking work (empty capabilities, new jobs out_of_capacity), let
   * jobs finish for up to `limits.drain_timeout_s`, abort the rest with `internal`
   * "agent shutting down", close with 1001. Idempotent.
   */
  shutdown(): Promise<void> {
    this.#shutdown ??= this.#drain();
    return this.#shutdown;
  }

  async #drain(): Promise<void> {
    const timeoutMs = this.#config.limits.drainTimeoutS * 1000;
    this.executor.draining = true;
    this.session.markDraining();
    this.#advertiseIfChanged(true);
    log.info("draining", {
      jobs: this.executor.inFlight,
      timeoutS: this.#config.limits.drainTimeoutS,
    });
    const timeUp = new AbortController();
    await Promise.race([this.executor.idle(), sleep(timeoutMs, timeUp.signal)]);
    timeUp.abort();
    if (this.executor.inFlight > 0) {
      log.warn("drain timeout: aborting jobs still in flight", { jobs: this.executor.inFlight });
      this.executor.abortAll("shutdown");
      await this.executor.idle();
    }
    this.#stopLoops.abort();
    this.backendPool.close();
    await this.session.stop(1001, "agent shutting down");
    await Promise.all([this.ledger.close(), this.earnings.flush(), this.history.flush()]);
    log.info("stopped", {});
  }
}
