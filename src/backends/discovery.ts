// Backend discovery (PROTOCOL §2): health → models → allow-list → pricing → de-duplication by
// kind priority. Owns the route table the executor reads and the capabilities it advertises,
// each model's max_concurrent capped by its backends' own slots when they report them (§5).

import type { BackendConfig, Config } from "../config/config.ts";
import { formatsOf, KINDS, type KindSpec } from "./kinds.ts";
import type { FetchJson, ListedModel } from "./probe.ts";
import type { Target } from "./client.ts";
import { request as http1Request } from "./http1.ts";
import { log } from "../log.ts";
import type { ModelAd, WireFormat } from "../link/protocol.ts";

export type BackendState = "up" | "down" | "loading" | "no_api_key";

/** One configured backend as last probed (read by the status server). */
export interface BackendStatus {
  index: number;
  kind: string;
  url: string;
  state: BackendState;
  latencyMs: number | undefined;
  lastError: string | undefined;
  models: string[];
  checkedAt: number;
  /** Requests the backend runs at once, when it says (llama.cpp `total_slots`). */
  slots?: number;
}

/** A way to serve a model: one backend, with the formats its kind accepts. */
export interface Route {
  backendIndex: number;
  target: Target;
  formats: readonly WireFormat[];
  contextWindow: number | undefined;
  /** The backend's own parallelism when it reports one (llama.cpp `total_slots`). */
  slots?: number;
}

/** An advertised model and every healthy backend serving it, best first. */
export interface ServedModel extends ModelAd {
  routes: Route[];
}

export interface DiscoveryResult {
  at: number;
  backends: BackendStatus[];
  /** Sorted by model id; what capabilities advertises. */
  models: ServedModel[];
  byId: ReadonlyMap<string, ServedModel>;
}

export interface DiscoveryOptions {
  env?: (name: string) => string | undefined;
  fetch?: typeof fetch;
  timeoutMs?: number;
  now?: () => number;
}

/** A healthy backend's target, listed models and reported slots. */
type Healthy = { target: Target; listed: ListedModel[]; slots?: number };

const FORMAT_ORDER: readonly WireFormat[] = ["openai", "anthropic"];
const EMPTY: DiscoveryResult = { at: 0, backends: [], models: [], byId: new Map() };

/** Base URL of a configured backend, without a trailing slash. */
export function baseOf(b: BackendConfig): string {
  return (b.url ?? KINDS[b.kind].defaultBase).replace(/\/+$/, "");
}

/**
 * Discovers what the configured backends serve and keeps the latest result.
 *
 * @example
 * ```ts
 * const d = new Discovery(() => config);
 * const { models } = await d.refresh();
 * ```
 */
export class Discovery {
  #config: () => Config;
  #env: (name: string) => string | undefined;
  #fetch: typeof fetch | undefined;
  #timeoutMs: number;
  #now: () => number;
  #current: DiscoveryResult = EMPTY;
  #running: Promise<DiscoveryResult> | undefined;
  #warned = new Set<string>();

  constructor(config: () => Config, opts: DiscoveryOptions = {}) {
    this.#config = config;
    this.#env = opts.env ?? ((n) => Deno.env.get(n));
    this.#fetch = opts.fetch;
    this.#timeoutMs = opts.timeoutMs ?? 2500;
    this.#now = opts.now ?? Date.now;
  }

  /** The latest result (empty before the first discovery). */
  get current(): DiscoveryResult {
    return this.#current;
  }

  /**
   * Runs discovery, sharing a run already in progress; with `maxAgeMs`, a result that
   * recent is returned as is.
   */
  refresh(opts: { maxAgeMs?: number } = {}): Promise<DiscoveryResult> {
    if (opts.maxAgeMs !== undefined && this.#current.at > 0) {
      if (this.#now() - this.#current.at <= opts.maxAgeMs) return Promise.resolve(this.#current);
    }
    this.#running ??= this.#run().finally(() => (this.#running = undefined));
    return this.#running;
  }

  /** Takes a backend out of the routes at once (a job found it unreachable). */
  markDown(index: number, reason: string): void {
    const cur = this.#current;
    const b = cur.backends.find((s) => s.index === index);
    if (!b || b.state !== "up") return;
    log.warn("backend down", { backend: b.kind, url: b.url, reason });
    const backends = cur.backends.map((s) =>
      s.index === index ? { ...s, state: "down" as const, lastError: reason, models: [] } : s
    );
    this.#current = assemble(this.#config(), backends, this.#routesWithout(index), cur.at);
  }

  #routesWithout(index: number): Map<number, Healthy> {
    const m = new Map<number, Healthy>();
    for (const model of this.#current.models) {
      for (const r of model.routes) {
        if (r.backendIndex === index) continue;
        const e: Healthy = m.get(r.backendIndex) ??
          { target: r.target, listed: [], ...(r.slots ? { slots: r.slots } : {}) };
        e.listed.push({ id: model.modelId, contextWindow: r.contextWindow });
        m.set(r.backendIndex, e);
      }
    }
    return m;
  }

  async #run(): Promise<DiscoveryResult> {
    const config = this.#config();
    const probed = await Promise.all(config.backends.map((b, i) => this.#probe(b, i)));
    const healthy = new Map<number, Healthy>();
    for (const p of probed) if (p.healthy) healthy.set(p.status.index, p.healthy);
    this.#current = assemble(config, probed.map((p) => p.status), healthy, this.#now());
    return this.#current;
  }

  async #probe(b: BackendConfig, index: number): Promise<{
    status: BackendStatus;
    healthy?: Healthy;
  }> {
    const spec: KindSpec = KINDS[b.kind];
    const url = baseOf(b);
    const status: BackendStatus = {
      index,
      kind: b.kind,
      url,
      state: "down",
      latencyMs: undefined,
      lastError: undefined,
      models: [],
      checkedAt: this.#now(),
    };
    // Remote kinds must have a key; a local server started with --api-key may name one.
    let apiKey: string | undefined;
    if (b.apiKeyEnv !== undefined) {
      apiKey = this.#env(b.apiKeyEnv);
      const problem = !apiKey
        ? `environment variable ${b.apiKeyEnv} is empty or unset`
        : !/^[\x21-\x7e]+$/.test(apiKey)
        ? `environment variable ${b.apiKeyEnv} holds characters not allowed in an HTTP header`
        : undefined;
      if (problem) {
        status.state = "no_api_key";
        status.lastError = problem;
        this.#warnOnce(`${index}:key`, "backend skipped: unusable API key", {
          backend: b.kind,
          problem,
        });
        return { status };
      }
    }
    const started = performance.now();
    try {
      const result = await spec.probe(url, this.#fetchJson(apiKey));
      status.latencyMs = Math.round(performance.now() - started);
      if (result.state !== "ready") {
        status.state = result.state;
        status.lastError = result.detail;
        this.#warnOnce(`${index}:${result.detail}`, `backend ${result.state}`, {
          backend: b.kind,
          url,
          detail: result.detail,
        });
        return { status };
      }
      this.#warned.forEach((k) => k.startsWith(`${index}:`) && this.#warned.delete(k));
      const allow = b.models ? new Set(b.models) : undefined;
      const listed = bounded(
        result.models.filter((m) => !allow || allow.has(m.id)),
        (n) =>
          this.#warnOnce(`${index}:bounded`, "backend model list cut", {
            backend: b.kind,
            dropped: n,
            rule: `ids up to ${MAX_MODEL_ID_LENGTH} characters, ${MAX_MODELS_PER_BACKEND} models`,
          }),
      );
      status.state = "up";
      status.models = listed.map((m) => m.id);
      if (result.slots) status.slots = result.slots;
      warnUnderpriced(b, listed, this.#config());
      const target = { spec, base: url, apiKey };
      return {
        status,
        healthy: { target, listed, ...(result.slots ? { slots: result.slots } : {}) },
      };
    } catch (err) {
      status.lastError = `unreachable: ${errorText(err)}`;
      this.#warnOnce(`${index}:unreachable`, "backend unreachable, skipped", {
        backend: b.kind,
        url,
        error: errorText(err),
      });
      return { status };
    }
  }

  #warnOnce(key: string, msg: string, fields: Record<string, unknown>): void {
    if (this.#warned.has(key)) return;
    if (this.#warned.size >= MAX_WARNED) this.#warned.clear(); // a backend varying its details

    this.#warned.add(key);
    log.warn(msg, fields);
  }

  #fetchJson(apiKey: string | undefined): FetchJson {
    return async (url, init) => {
      const ac = new AbortController();
      const timer = setTimeout(
        () => ac.abort(new Error(`no answer within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
      try {
        const headers: Record<string, string> = { accept: "application/json" };
        if (apiKey) headers.authorization = `Bearer ${apiKey}`;
        if (init) headers["content-type"] = "application/json";
        if (!this.#fetch && url.startsWith("http:")) {
          // Plain-HTTP backends through the agent's own client, like their completions.
          const res = await http1Request({
            method: init?.method ?? "GET",
            url: new URL(url),
            headers,
            signal: ac.signal,
            ...(init ? { body: utf8.encode(JSON.stringify(init.body)) } : {}),
          });
          return { status: res.status, body: parseJson(await res.text(MODEL_LIST_LIMIT)) };
        }
        const res = await (this.#fetch ?? fetch)(url, {
          method: init?.method ?? "GET",
          headers,
          signal: ac.signal,
          ...(init ? { body: JSON.stringify(init.body) } : {}),
        });
        return { status: res.status, body: parseJson(await res.text()) };
      } catch (err) {
        throw ac.signal.aborted ? ac.signal.reason : err;
      } finally {
        clearTimeout(timer);
      }
    };
  }
}

/** Longest model id a backend may list (longer ones are dropped, with one warning). */
export const MAX_MODEL_ID_LENGTH = 256;
/** Models taken from one backend's list (the rest are dropped, with one warning). */
export const MAX_MODELS_PER_BACKEND = 1024;
/** Distinct "warned once" keys remembered before the memory starts afresh. */
const MAX_WARNED = 256;

/** A backend's list within {@link MAX_MODEL_ID_LENGTH} and {@link MAX_MODELS_PER_BACKEND}. */
function bounded(listed: ListedModel[], dropped: (n: number) => void): ListedModel[] {
  const kept = listed.filter((m) => m.id.length <= MAX_MODEL_ID_LENGTH)
    .slice(0, MAX_MODELS_PER_BACKEND);
  if (kept.length < listed.length) dropped(listed.length - kept.length);
  return kept;
}

const utf8 = new TextEncoder();
/** Model lists can be long (an OpenRouter-style proxy); bodies past this are cut. */
const MODEL_LIST_LIMIT = 8 * 1024 * 1024;

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** An error's message with its cause (fetch says only "fetch failed" and puts the why in cause). */
function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? err.cause.message : undefined;
  return cause && !err.message.includes(cause) ? `${err.message}: ${cause}` : err.message;
}

/** Warns when an advertised price is below the upstream cost plus the backend's markup. */
function warnUnderpriced(b: BackendConfig, listed: ListedModel[], config: Config): void {
  if (b.markup === undefined) return;
  for (const m of listed) {
    if (!m.upstreamCost) continue;
    const price = priceOf(config, m.id);
    const needIn = m.upstreamCost.input * 1e12 * (1 + b.markup); // USD/token → µUSDC per 1M
    const needOut = m.upstreamCost.output * 1e12 * (1 + b.markup);
    if (price.inputPer1m < needIn || price.outputPer1m < needOut) {
      log.warn("advertised price below upstream cost plus markup", {
        model: m.id,
        price: `${price.inputPer1m}/${price.outputPer1m}`,
        needed: `${Math.ceil(needIn)}/${Math.ceil(needOut)}`,
      });
    }
  }
}

/** The resolved price of a model: its own entry, else the defaults (PROTOCOL §2). */
export function priceOf(
  config: Config,
  modelId: string,
): { inputPer1m: number; outputPer1m: number } {
  const own = Object.hasOwn(config.pricing.models, modelId)
    ? config.pricing.models[modelId]
    : undefined;
  return own ?? {
    inputPer1m: config.pricing.defaultInputPer1m,
    outputPer1m: config.pricing.defaultOutputPer1m,
  };
}

/** Builds the advertised models and routes from the healthy backends' model lists. */
function assemble(
  config: Config,
  backends: BackendStatus[],
  healthy: Map<number, Healthy>,
  at: number,
): DiscoveryResult {
  const byId = new Map<string, ServedModel>();
  for (const [index, { target, listed, slots }] of healthy) {
    for (const m of listed) {
      const price = priceOf(config, m.id);
      if (price.inputPer1m === 0 && price.outputPer1m === 0) continue;
      const route: Route = {
        backendIndex: index,
        target,
        formats: formatsOf(target.spec),
        contextWindow: m.contextWindow,
        ...(slots ? { slots } : {}),
      };
      const served = byId.get(m.id);
      if (!served) {
        byId.set(m.id, {
          modelId: m.id,
          inputPer1m: price.inputPer1m,
          outputPer1m: price.outputPer1m,
          maxConcurrent: config.limits.maxConcurrent,
          backend: target.spec.kind,
          contextWindow: m.contextWindow,
          formats: route.formats,
          routes: [route],
        });
        continue;
      }
      served.routes.push(route);
      served.routes.sort((a, b) =>
        a.target.spec.priority - b.target.spec.priority || a.backendIndex - b.backendIndex
      );
      const best = served.routes[0]!;
      served.backend = best.target.spec.kind;
      served.contextWindow = best.contextWindow ??
        served.routes.find((r) => r.contextWindow)?.contextWindow;
      const accepted = new Set(served.routes.flatMap((r) => r.formats));
      served.formats = FORMAT_ORDER.filter((f) => accepted.has(f));
    }
  }
  for (const m of byId.values()) {
    const slots = engineSlots(m.routes);
    if (slots !== undefined) m.maxConcurrent = Math.min(m.maxConcurrent, slots);
  }
  const models = [...byId.values()].sort((a, b) =>
    a.modelId < b.modelId ? -1 : a.modelId > b.modelId ? 1 : 0
  );
  return { at, backends, models, byId };
}

/**
 * What the backends serving a model can run at once (PROTOCOL §5 extension): the sum of their
 * slots when every one reports them, else undefined (one without a limit leaves it open).
 */
export function engineSlots(routes: readonly Route[]): number | undefined {
  let sum = 0;
  for (const r of routes) {
    if (r.slots === undefined) return undefined;
    sum += r.slots;
  }
  return routes.length > 0 ? sum : undefined;
}

/** A stable key of what capabilities advertises, to tell whether it changed. */
export function adsKey(models: readonly ModelAd[]): string {
  return JSON.stringify(
    models.map((
      m,
    ) => [
      m.modelId,
      m.inputPer1m,
      m.outputPer1m,
      m.maxConcurrent,
      m.backend,
      m.contextWindow,
      m.formats,
    ]),
  );
}
