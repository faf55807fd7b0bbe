// Fake inference backends (vLLM, llama.cpp, LM Studio, Ollama, OpenRouter, Venice) for tests, the
// demo and the bench: startFakeBackend answers a kind's routes (fake_kinds.ts) and streams
// (fake_streams.ts) as scripted, hanging, breaking or killing connections on purpose (PROTOCOL §4).

import { anthropicEvents, openaiEvents } from "./fake_streams.ts";
import {
  discoveryRoutes,
  errorReply,
  type FakeKind,
  type Format,
  KINDS,
  type KindSpec,
} from "./fake_kinds.ts";
import {
  aborted,
  ConnectionGone,
  field,
  HttpConn,
  type HttpRequest,
  parseJson,
  REASONS,
  type Reply,
  sleep,
  text,
} from "./http_server.ts";

export { type FakeKind, OPENROUTER_PRICING } from "./fake_kinds.ts";

/**
 * Health of a fake. "loading": every route answers 503 "Loading model" in the kind's error shape (what
 * llama.cpp does; the stand-in for the others' not-ready phase). "dead": the kind's health probe
 * routes answer 503 (vLLM's `/health` with an empty body) and completions 500.
 */
export type FakeState = "ready" | "loading" | "dead";

/** How a completion request ended, seen from the fake. */
export type CloseResult = "client-closed" | "completed";

/** How the fake answers a completion for one model. */
export interface Script {
  /** Content deltas: a count (default 5: "tok0 ", "tok1 ", …) or verbatim strings. */
  deltas?: number | string[];
  /** Milliseconds between deltas; 0 writes them back to back, each its own HTTP chunk. */
  delayMs?: number;
  /** Milliseconds before the first byte of the body (after the headers). */
  firstDelayMs?: number;
  /** Send usage records (default true; OpenAI only when include_usage was asked, or always on openrouter). */
  usage?: boolean;
  /** Prompt tokens reported (default 11). */
  inputTokens?: number;
  /** Answer this HTTP status with an error body in the server's shape instead of streaming. */
  status?: number;
  /**
   * Verbatim body for `status` (sent as application/json); with status 200, a backend that
   * ignored `"stream": true` and answered one JSON completion.
   */
  errorBody?: string;
  /** Kill the TCP connection after N deltas: no finish, no clean chunked end. */
  breakAfter?: number;
  /** End the body cleanly after the deltas but send no finish_reason and no [DONE] (message_stop). */
  endWithoutDone?: boolean;
  /** After N deltas send an in-stream error event, then end the body. */
  errorEventAfter?: number;
  /** Never answer, or send the headers and then nothing, until the client goes away. */
  hang?: "before-headers" | "after-headers";
  /** Send the server's SSE keep-alive comment before each delta. */
  comments?: boolean;
  /** Each delta's text is `t=<epoch ms with fractions>;` taken just before it is written. */
  timestamps?: boolean;
}

/** Configuration of one fake backend. */
export interface FakeBackendOptions {
  kind: FakeKind;
  /** Model ids served (default {@linkcode DEFAULT_MODELS} of the kind). */
  models?: string[];
  /** Context window reported the kind's way (default {@linkcode DEFAULT_CONTEXT_WINDOW}). */
  contextWindow?: number;
  /** Scripts per model id. */
  scripts?: Record<string, Script>;
  /** Script for models without their own. */
  defaultScript?: Script;
  /** Port to listen on (default 0: any free port). */
  port?: number;
  /**
   * Require this key on completion routes (401 otherwise) and where the real server also does: vLLM
   * `/v1/models`, llama.cpp `/props`, openrouter `/models`. Bearer only on vllm, openrouter and venice;
   * Bearer or `x-api-key` elsewhere.
   */
  apiKey?: string;
  /** Initial health (default "ready"). */
  state?: FakeState;
  /** llama.cpp: `total_slots` in `/props` (default 4, llama-server's own default). */
  slots?: number;
  /** Text of `GET /metrics` (Prometheus), served when set; see {@link FakeBackend.setMetrics}. */
  metrics?: string;
}

/** A completion request as the fake received it. */
export interface RecordedRequest {
  method: string;
  path: string;
  headers: Headers;
  /** Parsed JSON body, or undefined when absent or not JSON. */
  body: unknown;
  /** Arrival time, epoch ms with fractions (`performance.timeOrigin + performance.now()`). */
  at: number;
}

/** A running fake backend. */
export interface FakeBackend {
  /** API base for the agent's config: `http://127.0.0.1:PORT`, plus `/api/v1` for openrouter and venice. */
  readonly url: string;
  readonly port: number;
  /** Completion requests (chat and messages routes), in arrival order. */
  readonly requests: RecordedRequest[];
  setScript(model: string, s: Script): void;
  setDefaultScript(s: Script): void;
  setState(st: FakeState): void;
  /** Sets the text `GET /metrics` answers (undefined: 404, like a server without metrics). */
  setMetrics(text: string | undefined): void;
  /** `GET /metrics` requests answered so far. */
  readonly metricsHits: number;
  /** Resolves when the n-th (1-based, counting all so far) completion request has arrived. */
  waitForRequests(n: number): Promise<RecordedRequest>;
  /**
   * Resolves when the n-th completion request's response is over: "client-closed" when the client
   * went away first, "completed" when the fake ended it (finished, errored, broke it, or was closed).
   */
  waitForClose(n: number): Promise<CloseResult>;
  /** Completion requests being answered with a stream right now (including hangs). */
  readonly openStreams: number;
  /** Stop listening and kill every open connection at once, like a killed process. */
  close(): Promise<void>;
}

/** Models each kind serves when `models` is not given. */
export const DEFAULT_MODELS: Readonly<Record<FakeKind, readonly string[]>> = {
  vllm: ["meta-llama/Llama-3.3-70B-Instruct"],
  llamacpp: ["llama-3.2-3b-instruct"],
  lmstudio: ["qwen2.5-7b-instruct"],
  ollama: ["llama3.2:latest"],
  openrouter: ["meta-llama/llama-3.3-70b-instruct"],
  venice: ["llama-3.3-70b"],
};

/** Context window reported when `contextWindow` is not given. */
export const DEFAULT_CONTEXT_WINDOW = 32768;

class Fake implements FakeBackend {
  readonly url: string;
  readonly port: number;
  readonly requests: RecordedRequest[] = [];
  readonly #kind: FakeKind;
  readonly #spec: KindSpec;
  readonly #models: readonly string[];
  readonly #ctx: number;
  readonly #slots: number;
  #metrics: string | undefined;
  metricsHits = 0;
  readonly #apiKey: string | undefined;
  readonly #scripts: Map<string, Script>;
  #defaultScript: Script;
  #state: FakeState;
  readonly #listener: Deno.TcpListener;
  readonly #accepting: Promise<void>;
  readonly #conns = new Set<HttpConn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #arrivals: { n: number; resolve: (r: RecordedRequest) => void }[] = [];
  readonly #closes = new Map<number, PromiseWithResolvers<CloseResult>>();
  /** Ollama loads models lazily: the ones asked for so far, for `/api/ps`. */
  readonly #loaded = new Set<string>();
  #open = 0;

  constructor(opts: FakeBackendOptions, listener: Deno.TcpListener) {
    this.#kind = opts.kind;
    this.#spec = KINDS[opts.kind];
    this.#models = opts.models ?? DEFAULT_MODELS[opts.kind];
    this.#ctx = opts.contextWindow ?? DEFAULT_CONTEXT_WINDOW;
    this.#slots = opts.slots ?? 4;
    this.#metrics = opts.metrics;
    this.#apiKey = opts.apiKey;
    this.#scripts = new Map(Object.entries(opts.scripts ?? {}));
    this.#defaultScript = opts.defaultScript ?? {};
    this.#state = opts.state ?? "ready";
    this.#listener = listener;
    this.port = listener.addr.port;
    this.url = `http://127.0.0.1:${this.port}${this.#spec.base}`;
    this.#accepting = this.#accept();
  }

  get openStreams(): number {
    return this.#open;
  }

  setScript(model: string, s: Script): void {
    this.#scripts.set(model, s);
  }

  setDefaultScript(s: Script): void {
    this.#defaultScript = s;
  }

  setState(st: FakeState): void {
    this.#state = st;
  }

  setMetrics(text: string | undefined): void {
    this.#metrics = text;
  }

  waitForRequests(n: number): Promise<RecordedRequest> {
    const r = this.requests[n - 1];
    if (r) return Promise.resolve(r);
    return new Promise((resolve) => this.#arrivals.push({ n, resolve }));
  }

  waitForClose(n: number): Promise<CloseResult> {
    return this.#closeOf(n).promise;
  }

  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // Closed before.
    }
    await this.#accepting;
    for (const c of this.#conns) c.close();
    await Promise.all(this.#tasks);
  }

  #closeOf(n: number): PromiseWithResolvers<CloseResult> {
    let d = this.#closes.get(n);
    if (!d) this.#closes.set(n, d = Promise.withResolvers<CloseResult>());
    return d;
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // Listener closed.
      }
      conn.setNoDelay(true);
      const c = new HttpConn(conn);
      this.#conns.add(c);
      const task: Promise<void> = this.#serve(c).finally(() => {
        this.#conns.delete(c);
        this.#tasks.delete(task);
      });
      this.#tasks.add(task);
    }
  }

  async #serve(c: HttpConn): Promise<void> {
    try {
      for (let req; (req = await c.readRequest());) {
        const keepAlive = await this.#respond(c, req);
        if (!keepAlive || req.headers.get("connection")?.toLowerCase() === "close") break;
      }
    } catch (err) {
      if (!(err instanceof ConnectionGone)) throw err;
    } finally {
      c.close();
      await c.reading;
    }
  }

  /** Answers one request; false when the connection must be dropped afterwards. */
  async #respond(c: HttpConn, req: HttpRequest): Promise<boolean> {
    const path = req.target.split("?")[0] ?? "";
    const sub = path.startsWith(this.#spec.base + "/") ? path.slice(this.#spec.base.length) : null;
    if (
      req.method === "POST" && sub !== null &&
      (sub === this.#spec.chat || sub === this.#spec.messages)
    ) {
      return await this.#complete(c, req, path, sub === this.#spec.chat ? "openai" : "anthropic");
    }
    await c.send(this.#discover(req, sub));
    return true;
  }

  #discover(req: HttpRequest, sub: string | null): Reply {
    const kind = this.#kind;
    if (this.#state === "loading") return errorReply(kind, "openai", 503, "Loading model");
    if (sub === "/metrics" && req.method === "GET" && this.#metrics !== undefined) {
      this.metricsHits++;
      return text(200, this.#metrics);
    }
    const route = sub === null ? undefined : discoveryRoutes(
      kind,
      this.#models,
      this.#ctx,
      this.#loaded,
      this.#slots,
    )[`${req.method} ${sub}`];
    if (!route || sub === null) return errorReply(kind, "openai", 404, "Not Found");
    if (this.#state === "dead" && this.#spec.health.includes(sub)) {
      return kind === "vllm"
        ? text(503, "")
        : errorReply(kind, "openai", 503, "Service Unavailable");
    }
    if (this.#spec.keyed.includes(sub) && !this.#authorized(req.headers, "openai")) {
      return errorReply(kind, "openai", 401, "Invalid API Key");
    }
    return route(req);
  }

  #authorized(h: Headers, format: Format): boolean {
    const key = this.#apiKey;
    // LM Studio's messages route wants some x-api-key even when no token is configured.
    if (key === undefined) {
      return !(this.#kind === "lmstudio" && format === "anthropic" && !h.get("x-api-key"));
    }
    return h.get("authorization") === `Bearer ${key}` ||
      (!this.#spec.bearerOnly && h.get("x-api-key") === key);
  }

  async #complete(c: HttpConn, req: HttpRequest, path: string, format: Format): Promise<boolean> {
    const body = parseJson(req.body);
    const recorded = {
      method: req.method,
      path,
      headers: req.headers,
      body,
      at: performance.timeOrigin + performance.now(),
    };
    const n = this.requests.push(recorded);
    for (const w of this.#arrivals.filter((w) => w.n <= n)) {
      this.#arrivals.splice(this.#arrivals.indexOf(w), 1);
      w.resolve(this.requests[w.n - 1]!);
    }
    let streaming = false;
    try {
      const plan = this.#plan(req, body, format);
      if ("reply" in plan) {
        await c.send(plan.reply);
        return true;
      }
      streaming = true;
      this.#open++;
      if (this.#kind === "ollama") this.#loaded.add(plan.model);
      return await this.#stream(c, format, plan.model, plan.script, body);
    } catch (err) {
      if (err instanceof ConnectionGone) return false;
      throw err;
    } finally {
      if (streaming) this.#open--;
      this.#closeOf(n).resolve(c.peerClosed ? "client-closed" : "completed");
    }
  }

  /** The refusal a real server would send, or the model and script to stream. */
  #plan(
    req: HttpRequest,
    body: unknown,
    format: Format,
  ): { reply: Reply } | { model: string; script: Script } {
    const kind = this.#kind;
    if (this.#state === "loading") return { reply: errorReply(kind, format, 503, "Loading model") };
    if (this.#state === "dead") return { reply: errorReply(kind, format, 500, "engine dead") };
    if (!this.#authorized(req.headers, format)) {
      return { reply: errorReply(kind, format, 401, "Invalid API Key") };
    }
    if (typeof body !== "object" || body === null) {
      return { reply: errorReply(kind, format, 400, "request body is not a JSON object") };
    }
    const model = field(body, "model");
    if (typeof model !== "string" || !this.#models.includes(model)) {
      return { reply: errorReply(kind, format, 404, this.#spec.unknownModel(String(model))) };
    }
    const script = this.#scripts.get(model) ?? this.#defaultScript;
    if (script.status !== undefined) {
      const reply = script.errorBody !== undefined
        ? { status: script.status, type: "application/json", body: script.errorBody }
        : errorReply(
          kind,
          format,
          script.status,
          REASONS[script.status] ?? `status ${script.status}`,
        );
      return { reply };
    }
    return { model, script };
  }

  /** Streams one completion as `script` says; false when the connection must be dropped. */
  async #stream(
    c: HttpConn,
    format: Format,
    model: string,
    script: Script,
    body: unknown,
  ): Promise<boolean> {
    if (script.hang === "before-headers") {
      await aborted(c.signal);
      return false;
    }
    await c.streamHead();
    if (script.hang === "after-headers") {
      await aborted(c.signal);
      return false;
    }
    if (script.firstDelayMs) await sleep(script.firstDelayMs, c.signal);
    const usage = script.usage !== false &&
      (format === "anthropic" || this.#kind === "openrouter" ||
        field(field(body, "stream_options"), "include_usage") === true);
    const events = (format === "openai" ? openaiEvents : anthropicEvents)(
      this.#kind,
      model,
      usage,
      script.inputTokens ?? 11,
    );
    const deltas = script.deltas ?? 5;
    const count = typeof deltas === "number" ? deltas : deltas.length;
    const breakAt = script.breakAfter ?? Infinity;
    const errorAt = script.errorEventAfter ?? Infinity;
    const sent = Math.min(count, breakAt, errorAt);
    for (const e of events.start()) await c.chunk(e);
    const started = performance.now();
    for (let i = 0; i < sent; i++) {
      if (i > 0 && script.delayMs) await sleep(script.delayMs, c.signal);
      if (script.comments) await c.chunk(this.#spec.comment);
      const text = script.timestamps
        ? `t=${performance.timeOrigin + performance.now()};`
        : typeof deltas === "number"
        ? `tok${i} `
        : deltas[i]!;
      await c.chunk(events.delta(text));
    }
    if (breakAt <= Math.min(count, errorAt)) {
      c.close();
      return false;
    }
    if (errorAt <= count) {
      for (const e of events.error()) await c.chunk(e);
    } else if (!script.endWithoutDone) {
      for (const e of events.finish(count, performance.now() - started)) await c.chunk(e);
    }
    await c.endStream();
    return true;
  }
}

/**
 * Starts a fake backend on 127.0.0.1.
 *
 * @example
 * ```ts
 * const fake = await startFakeBackend({ kind: "vllm", defaultScript: { deltas: 3, delayMs: 5 } });
 * const res = await fetch(`${fake.url}/v1/chat/completions`, {
 *   method: "POST",
 *   body: JSON.stringify({ model: "meta-llama/Llama-3.3-70B-Instruct", stream: true, messages: [] }),
 * });
 * await res.text();
 * await fake.close();
 * ```
 */
export function startFakeBackend(opts: FakeBackendOptions): Promise<FakeBackend> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: opts.port ?? 0 });
  return Promise.resolve(new Fake(opts, listener));
}

/** Starts a fake backend, runs `fn`, and closes it whatever happens. */
export async function withFakeBackend(
  opts: FakeBackendOptions,
  fn: (fake: FakeBackend) => Promise<void>,
): Promise<void> {
  const fake = await startFakeBackend(opts);
  try {
    await fn(fake);
  } finally {
    await fake.close();
  }
}
