// deno-lint-ignore-file camelcase
// Fake inference backends (vLLM, llama.cpp, LM Studio, Ollama, OpenRouter, Venice) for tests, the demo
// and the benchmark: each kind answers its server's routes and streams as BACKENDS.md describes, over a
// small HTTP/1.1 server on 127.0.0.1 that can hang, break and kill connections on purpose (PROTOCOL §4).

/** The servers a fake can impersonate. */
export type FakeKind = "vllm" | "llamacpp" | "lmstudio" | "ollama" | "openrouter" | "venice";

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
  /** Verbatim body for `status` (sent as application/json). */
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

/** What a fake openrouter's `/models` reports for every model, in USD per token. */
export const OPENROUTER_PRICING = { prompt: "0.0000001", completion: "0.0000002" } as const;

/** Training context LM Studio reports as `max_context_length` when the loaded one is smaller. */
const TRAINED_CONTEXT = 131072;
const CREATED = 1_700_000_000;

interface KindSpec {
  /** Path prefix of the API base. */
  base: string;
  chat: string;
  messages: string | null;
  /** Only `Authorization: Bearer` carries the key (otherwise `x-api-key` works too). */
  bearerOnly: boolean;
  /** Discovery routes that need the key too when one is set. */
  keyed: readonly string[];
  /** Probe routes that answer 503 when the backend is dead. */
  health: readonly string[];
  /** The server's SSE keep-alive comment. */
  comment: string;
  /** Message of the server's unknown-model error. */
  unknownModel(model: string): string;
}

const KINDS: Record<FakeKind, KindSpec> = {
  vllm: {
    base: "",
    chat: "/v1/chat/completions",
    messages: "/v1/messages",
    bearerOnly: true,
    keyed: ["/v1/models"],
    health: ["/health"],
    comment: ": keep-alive\n\n",
    unknownModel: (m) => `The model \`${m}\` does not exist.`,
  },
  llamacpp: {
    base: "",
    chat: "/v1/chat/completions",
    messages: "/v1/messages",
    bearerOnly: false,
    keyed: ["/props"],
    health: ["/health"],
    comment: ": ping\n\n",
    unknownModel: (m) => `model '${m}' not found`,
  },
  lmstudio: {
    base: "",
    chat: "/v1/chat/completions",
    messages: "/v1/messages",
    bearerOnly: false,
    keyed: [],
    health: ["/v1/models", "/api/v0/models"],
    comment: ": ping\n\n",
    unknownModel: (m) => `Invalid model identifier "${m}".`,
  },
  ollama: {
    base: "",
    chat: "/v1/chat/completions",
    messages: "/v1/messages",
    bearerOnly: false,
    keyed: [],
    health: ["/", "/api/tags", "/api/version"],
    comment: ": ping\n\n",
    unknownModel: (m) => `model "${m}" not found, try pulling it first`,
  },
  openrouter: {
    base: "/api/v1",
    chat: "/chat/completions",
    messages: "/messages",
    bearerOnly: true,
    keyed: ["/models"],
    health: ["/models"],
    comment: ": OPENROUTER PROCESSING\n\n",
    unknownModel: (m) => `${m} is not a valid model ID`,
  },
  venice: {
    base: "/api/v1",
    chat: "/chat/completions",
    messages: null,
    bearerOnly: true,
    keyed: [],
    health: ["/models"],
    comment: ": ping\n\n",
    unknownModel: () => "Specified model not found",
  },
};

// ---- replies and error bodies ----------------------------------------------------------------

interface Reply {
  status: number;
  type: string;
  body: string;
  headers?: Record<string, string>;
}

const json = (status: number, value: unknown): Reply => ({
  status,
  type: "application/json",
  body: JSON.stringify(value),
});
const text = (status: number, body: string): Reply => ({
  status,
  type: "text/plain; charset=utf-8",
  body,
});

const ERROR_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  429: "rate_limit_error",
  503: "unavailable_error",
};

/** An error reply in the shape `kind` uses for `format` (BACKENDS.md "Error bodies"). */
function errorReply(kind: FakeKind, format: Format, status: number, message: string): Reply {
  const type = ERROR_TYPES[status] ?? "api_error";
  let body: unknown;
  if (kind === "vllm" && status === 401) body = { error: "Unauthorized" };
  else if (kind === "venice") body = { error: message };
  else if (kind === "llamacpp") body = { error: { code: status, message, type } };
  else if (format === "anthropic") body = { type: "error", error: { type, message } };
  else if (kind === "openrouter") body = { error: { message, code: status } };
  else body = { error: { message, type, param: null, code: status } };
  const reply = json(status, body);
  if (kind === "openrouter" && (status === 429 || status === 503)) {
    reply.headers = { "retry-after": "1" };
  }
  return reply;
}

// ---- discovery routes ------------------------------------------------------------------------

type Route = (req: HttpRequest) => Reply;

function discoveryRoutes(
  kind: FakeKind,
  models: readonly string[],
  ctx: number,
  loaded: ReadonlySet<string>,
): Record<string, Route> {
  const list = (extra: (id: string) => object) =>
    json(200, {
      object: "list",
      data: models.map((id) => ({ id, object: "model", created: CREATED, ...extra(id) })),
    });
  const tag = (name: string) => ({
    name,
    model: name,
    modified_at: "2025-01-01T00:00:00Z",
    size: 2019393189,
    digest: "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
    details: {
      format: "gguf",
      family: "llama",
      parameter_size: "3.2B",
      quantization_level: "Q4_K_M",
    },
  });
  switch (kind) {
    case "vllm":
      return {
        "GET /health": () => text(200, ""),
        "GET /v1/models": () =>
          list((id) => ({ owned_by: "vllm", root: id, parent: null, max_model_len: ctx })),
      };
    case "llamacpp":
      return {
        "GET /health": () => json(200, { status: "ok" }),
        "GET /v1/models": () =>
          list(() => ({
            owned_by: "llamacpp",
            meta: { vocab_type: 2, n_vocab: 128256, n_ctx_train: ctx },
          })),
        "GET /props": () =>
          json(200, {
            default_generation_settings: { n_ctx: ctx, params: { n_predict: -1 } },
            total_slots: 1,
            model_path: models[0],
            build_info: "b7000-fake",
          }),
      };
    case "lmstudio":
      return {
        "GET /v1/models": () => list(() => ({ owned_by: "organization_owner" })),
        "GET /api/v0/models": () =>
          list(() => ({
            type: "llm",
            publisher: "lmstudio-community",
            compatibility_type: "gguf",
            quantization: "Q4_K_M",
            state: "loaded",
            max_context_length: Math.max(ctx, TRAINED_CONTEXT),
            loaded_context_length: ctx,
          })),
      };
    case "ollama":
      return {
        "GET /": () => text(200, "Ollama is running"),
        "GET /api/version": () => json(200, { version: "0.14.2" }),
        "GET /api/tags": () => json(200, { models: models.map(tag) }),
        "GET /api/ps": () =>
          json(200, {
            models: models.filter((m) => loaded.has(m)).map((m) => ({
              ...tag(m),
              context_length: ctx,
            })),
          }),
        "GET /v1/models": () => list(() => ({ owned_by: "library" })),
        "POST /api/show": (req) => {
          const b = parseJson(req.body);
          const m = field(b, "model") ?? field(b, "name");
          if (typeof m !== "string" || !models.includes(m)) {
            return json(404, { error: `model '${String(m)}' not found` });
          }
          return json(200, {
            details: tag(m).details,
            model_info: { "general.architecture": "llama", "llama.context_length": ctx },
            capabilities: ["completion"],
          });
        },
      };
    case "openrouter":
      return {
        "GET /models": () =>
          json(200, {
            data: models.map((id) => ({
              id,
              name: id,
              created: CREATED,
              context_length: ctx,
              pricing: { ...OPENROUTER_PRICING, request: "0", image: "0" },
              top_provider: {
                context_length: ctx,
                max_completion_tokens: 16384,
                is_moderated: false,
              },
            })),
          }),
      };
    case "venice":
      return {
        "GET /models": () =>
          json(200, {
            object: "list",
            type: "text",
            data: models.map((id) => ({
              id,
              type: "text",
              object: "model",
              created: CREATED,
              owned_by: "venice.ai",
              model_spec: { availableContextTokens: ctx, name: id },
            })),
          }),
      };
  }
}

// ---- stream events ---------------------------------------------------------------------------

type Format = "openai" | "anthropic";

/** The events of one stream; each string is written as its own HTTP chunk. */
interface Events {
  start(): string[];
  delta(text: string): string;
  finish(outputTokens: number, elapsedMs: number): string[];
  error(): string[];
}

const ERROR_MESSAGE = "upstream exploded";
const DONE = "data: [DONE]\n\n";
const sse = (value: unknown) => `data: ${JSON.stringify(value)}\n\n`;
const event = (name: string, value: unknown) =>
  `event: ${name}\ndata: ${JSON.stringify(value)}\n\n`;

/** chat.completion.chunk events as vLLM and llama.cpp emit them (BACKENDS.md "Streaming"). */
function openaiEvents(kind: FakeKind, model: string, usage: boolean, input: number): Events {
  const id = `${kind === "openrouter" ? "gen-" : "chatcmpl-"}${crypto.randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const chunk = (choices: unknown[], extra: object = {}) =>
    sse({ id, object: "chat.completion.chunk", created, model, choices, ...extra });
  const choice = (delta: object, finish_reason: string | null) => ({
    index: 0,
    delta,
    logprobs: null,
    finish_reason,
  });
  return {
    start: () => [chunk([choice({ role: "assistant", content: "" }, null)])],
    delta: (content) => chunk([choice({ content }, null)]),
    finish: (n, ms) => [
      chunk(
        [choice({}, "stop")],
        kind === "llamacpp"
          ? {
            timings: {
              prompt_n: input,
              predicted_n: n,
              predicted_ms: ms,
              predicted_per_second: n / (ms / 1000),
            },
          }
          : {},
      ),
      ...(usage
        ? [
          chunk([], {
            usage: { prompt_tokens: input, completion_tokens: n, total_tokens: input + n },
          }),
        ]
        : []),
      DONE,
    ],
    error: () =>
      kind === "openrouter"
        ? [
          chunk([choice({ content: "" }, "error")], {
            error: { message: ERROR_MESSAGE, code: 500 },
          }),
        ]
        : [
          sse({ error: { message: ERROR_MESSAGE, code: 500 } }),
          ...(kind === "vllm" ? [DONE] : []),
        ],
  };
}

/** Anthropic messages events (BACKENDS.md "Streaming (Anthropic messages)"). */
function anthropicEvents(kind: FakeKind, model: string, usage: boolean, input: number): Events {
  const message = {
    id: `msg_${crypto.randomUUID().replaceAll("-", "")}`,
    type: "message",
    role: "assistant",
    model,
    content: [],
    stop_reason: null,
    stop_sequence: null,
  };
  return {
    start: () => [
      event("message_start", {
        type: "message_start",
        message: usage ? { ...message, usage: { input_tokens: input, output_tokens: 1 } } : message,
      }),
      event("content_block_start", {
        type: "content_block_start",
        index: 0,
        content_block: { type: "text", text: "" },
      }),
      event("ping", { type: "ping" }),
    ],
    delta: (text) =>
      event("content_block_delta", {
        type: "content_block_delta",
        index: 0,
        delta: { type: "text_delta", text },
      }),
    finish: (n) => [
      event("content_block_stop", { type: "content_block_stop", index: 0 }),
      event("message_delta", {
        type: "message_delta",
        delta: { stop_reason: "end_turn", stop_sequence: null },
        // vLLM puts both counts here; the others only the output count.
        ...(usage
          ? {
            usage: kind === "vllm"
              ? { input_tokens: input, output_tokens: n }
              : { output_tokens: n },
          }
          : {}),
      }),
      event("message_stop", { type: "message_stop" }),
      ...(kind === "vllm" ? [DONE] : []), // vLLM appends a stray [DONE].
    ],
    error: () => [
      event("error", { type: "error", error: { type: "api_error", message: ERROR_MESSAGE } }),
    ],
  };
}

// ---- a minimal HTTP/1.1 server connection ----------------------------------------------------

interface HttpRequest {
  method: string;
  target: string;
  headers: Headers;
  body: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const MAX_HEAD = 64 * 1024;
const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  401: "Unauthorized",
  404: "Not Found",
  429: "Too Many Requests",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/** Thrown to unwind a response whose connection is gone. */
class ConnectionGone extends Error {
  override name = "ConnectionGone";
}

/**
 * One accepted TCP connection: reads requests (Content-Length or chunked bodies), writes replies
 * and chunked streams, and notices a peer that hangs up at any time because it always keeps a read
 * pending. Closing it drops the socket, which is how streams are broken and backends killed.
 */
class HttpConn {
  readonly #conn: Deno.TcpConn;
  readonly #gone = new AbortController();
  #buf = new Uint8Array(0);
  #wake: (() => void) | undefined;
  #closed = false;
  /** The peer hung up (or the socket failed) before the fake closed it. */
  peerClosed = false;
  readonly reading: Promise<void>;

  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.reading = this.#readLoop();
  }

  /** Aborted once the socket is gone, whoever closed it. */
  get signal(): AbortSignal {
    return this.#gone.signal;
  }

  async #readLoop(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    try {
      for (let n; (n = await this.#conn.read(chunk)) !== null;) {
        const joined = new Uint8Array(this.#buf.length + n);
        joined.set(this.#buf);
        joined.set(chunk.subarray(0, n), this.#buf.length);
        this.#buf = joined;
        this.#wake?.();
      }
    } catch {
      // Reset by the peer, or closed by us.
    }
    this.#lost();
    this.#wake?.();
  }

  #lost(): void {
    if (!this.#closed) this.peerClosed = true;
    this.#gone.abort();
  }

  /** Waits for more bytes; false when none will come. */
  async #more(): Promise<boolean> {
    if (this.signal.aborted) return false;
    await new Promise<void>((resolve) => this.#wake = resolve);
    this.#wake = undefined;
    return true;
  }

  async #take(n: number): Promise<Uint8Array | null> {
    while (this.#buf.length < n) if (!(await this.#more())) return null;
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  async #line(): Promise<string | null> {
    let i;
    while ((i = indexOfCrlf(this.#buf)) < 0) {
      if (this.#buf.length > MAX_HEAD || !(await this.#more())) return null;
    }
    const line = this.#buf.subarray(0, i);
    this.#buf = this.#buf.subarray(i + 2);
    return decoder.decode(line);
  }

  /** The next request, or null when the peer is gone or sent something unreadable. */
  async readRequest(): Promise<HttpRequest | null> {
    const start = await this.#line();
    if (start === null) return null;
    const [method = "", target = "/"] = start.split(" ");
    const headers = new Headers();
    for (let line; (line = await this.#line()) !== "";) {
      if (line === null) return null;
      const colon = line.indexOf(":");
      try {
        headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
      } catch {
        return null;
      }
    }
    const body = headers.get("transfer-encoding")?.toLowerCase().includes("chunked")
      ? await this.#chunkedBody()
      : await this.#take(Number(headers.get("content-length") ?? 0) || 0);
    return body && { method, target, headers, body };
  }

  async #chunkedBody(): Promise<Uint8Array | null> {
    const parts: Uint8Array[] = [];
    for (;;) {
      const sizeLine = await this.#line();
      const size = sizeLine === null ? NaN : parseInt(sizeLine, 16);
      if (!(size >= 0)) return null;
      if (size === 0) break;
      const data = await this.#take(size + 2);
      if (!data) return null;
      parts.push(data.subarray(0, size));
    }
    for (let trailer; (trailer = await this.#line()) !== "";) if (trailer === null) return null;
    return concat(parts);
  }

  async #write(bytes: Uint8Array): Promise<void> {
    if (this.signal.aborted) throw new ConnectionGone();
    try {
      for (let off = 0; off < bytes.length;) off += await this.#conn.write(bytes.subarray(off));
    } catch (err) {
      this.#lost();
      throw new ConnectionGone("write failed", { cause: err });
    }
  }

  /** A whole reply with a Content-Length. */
  send(r: Reply): Promise<void> {
    const body = encoder.encode(r.body);
    const extra = Object.entries(r.headers ?? {}).map(([k, v]) => `${k}: ${v}\r\n`).join("");
    const head =
      `HTTP/1.1 ${r.status} ${REASONS[r.status] ?? "Status"}\r\ncontent-type: ${r.type}\r\n` +
      `content-length: ${body.length}\r\n${extra}\r\n`;
    return this.#write(concat([encoder.encode(head), body]));
  }

  /** Status line and headers of a chunked event stream. */
  streamHead(): Promise<void> {
    return this.#write(encoder.encode(
      "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n" +
        "cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
    ));
  }

  /** One HTTP chunk. */
  chunk(text: string): Promise<void> {
    const data = encoder.encode(text);
    return this.#write(concat([encoder.encode(`${data.length.toString(16)}\r\n`), data, CRLF]));
  }

  /** The clean end of a chunked body. */
  endStream(): Promise<void> {
    return this.#write(encoder.encode("0\r\n\r\n"));
  }

  /** Drops the socket at once (a broken stream, or a killed backend). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    this.#gone.abort();
  }
}

const CRLF = new Uint8Array([13, 10]);

function indexOfCrlf(buf: Uint8Array): number {
  for (let i = buf.indexOf(13); i >= 0 && i + 1 < buf.length; i = buf.indexOf(13, i + 1)) {
    if (buf[i + 1] === 10) return i;
  }
  return -1;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return bytes.length ? JSON.parse(decoder.decode(bytes)) : undefined;
  } catch {
    return undefined;
  }
}

function field(value: unknown, key: string): unknown {
  return typeof value === "object" && value !== null
    ? (value as Record<string, unknown>)[key]
    : undefined;
}

/** Resolves after `ms`, or rejects as soon as `signal` aborts (clearing the timer). */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new ConnectionGone());
    const onAbort = () => {
      clearTimeout(timer);
      reject(new ConnectionGone());
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

// ---- the fake --------------------------------------------------------------------------------

class Fake implements FakeBackend {
  readonly url: string;
  readonly port: number;
  readonly requests: RecordedRequest[] = [];
  readonly #kind: FakeKind;
  readonly #spec: KindSpec;
  readonly #models: readonly string[];
  readonly #ctx: number;
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
    const route = sub === null
      ? undefined
      : discoveryRoutes(kind, this.#models, this.#ctx, this.#loaded)[`${req.method} ${sub}`];
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
