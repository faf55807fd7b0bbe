// A vLLM-shaped backend whose every stream is computed from a plan carried in the request
// (`plan` is forwarded untouched by the agent), so a test knows the exact bytes a job must relay
// and how it must end: ok, HTTP 500, broken, stalled, hung, or an in-stream error event.

/** How one completion is answered. */
export interface Plan {
  /** Seeds the delta texts and where the body is cut into pieces. */
  seed: number;
  /** Content deltas in a complete stream. */
  deltas: number;
  /** Longest delta text in characters (default 24; multi-byte characters included). */
  maxDelta?: number;
  mode?: "ok" | "http500" | "break" | "stall" | "hang" | "error_event";
  /** Deltas sent before a break, a stall or an error event (default deltas / 2). */
  at?: number;
  /** Milliseconds between pieces (default 0). */
  delayMs?: number;
  /** Largest piece the body is cut into (default 300 bytes). */
  maxPiece?: number;
}

/** What a plan makes the backend send, and what the agent must report. */
export interface Expected {
  /** The body bytes (complete, or up to the break / stall; empty for http500 and hang). */
  body: Uint8Array;
  /** The same bytes as the pieces written (each its own HTTP chunk). */
  pieces: Uint8Array[];
  /** "job_done" or the job_error code. */
  outcome: "job_done" | "internal" | "backend_timeout";
  /** job_done tokens, or job_error tokens_emitted as output. */
  input: number;
  output: number;
}

/** How a request's connection ended, seen from the backend. */
export type EndedBy = "client" | "backend";

export interface PlanRequest {
  plan: Plan;
  model: string;
  at: number;
  ended: Promise<EndedBy>;
}

const encoder = new TextEncoder();
const ALPHABET = ["a", "b", "c", " ", "é", "ß", "☃", "😀", "\\", '"', "\n", "\t", "z", "0"];

/** Mulberry32: a small deterministic PRNG returning [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sse = (v: unknown) => `data: ${JSON.stringify(v)}\n\n`;

/** The last few computed streams: the backend and the test ask for the same ones. */
const recent = new Map<string, Expected>();

/** The bytes and outcome a plan produces for `model` (what the agent must relay and report). */
export function expectedOf(plan: Plan, model: string): Expected {
  const key = JSON.stringify([plan, model]);
  const hit = recent.get(key);
  if (hit) return hit;
  const e = compute(plan, model);
  recent.set(key, e);
  if (recent.size > 64) recent.delete(recent.keys().next().value!);
  return e;
}

function compute(plan: Plan, model: string): Expected {
  const rnd = prng(plan.seed);
  const mode = plan.mode ?? "ok";
  const id = `chatcmpl-${plan.seed}`;
  const chunk = (choices: unknown[], extra: object = {}) =>
    sse({ id, object: "chat.completion.chunk", created: 1_700_000_000, model, choices, ...extra });
  const input = 1 + (plan.seed % 97);
  const at = Math.min(plan.at ?? Math.floor(plan.deltas / 2), plan.deltas);
  const sent = mode === "ok" ? plan.deltas : mode === "http500" || mode === "hang" ? 0 : at;
  const events: string[] = [];
  if (mode !== "http500" && mode !== "hang") {
    events.push(chunk([{ index: 0, delta: { role: "assistant", content: "" } }]));
    const max = plan.maxDelta ?? 24;
    const pool = Array.from({ length: 1024 + max }, () => ALPHABET[Math.floor(rnd() * 14)]!);
    for (let i = 0; i < sent; i++) {
      const len = 1 + Math.floor(rnd() * max);
      const from = Math.floor(rnd() * 1024);
      const text = pool.slice(from, from + len).join("");
      events.push(chunk([{ index: 0, delta: { content: text }, finish_reason: null }]));
    }
    if (mode === "ok") {
      events.push(chunk([{ index: 0, delta: {}, finish_reason: "stop" }]));
      events.push(chunk([], {
        usage: { prompt_tokens: input, completion_tokens: sent, total_tokens: input + sent },
      }));
      events.push("data: [DONE]\n\n");
    } else if (mode === "error_event") {
      events.push(sse({ error: { message: `planned failure ${plan.seed}`, code: 500 } }));
    }
  }
  const body = encoder.encode(events.join(""));
  // Cut anywhere, inside multi-byte characters and between \r and \n included.
  const pieces: Uint8Array[] = [];
  for (let off = 0; off < body.length;) {
    const n = 1 + Math.floor(rnd() * (plan.maxPiece ?? 300));
    pieces.push(body.subarray(off, off + n));
    off += n;
  }
  const outcome = mode === "ok"
    ? "job_done"
    : mode === "stall" || mode === "hang"
    ? "backend_timeout"
    : "internal";
  return { body, pieces, outcome, input: mode === "ok" ? input : 0, output: sent };
}

/** A running plan backend. */
export interface PlanBackend {
  readonly url: string;
  readonly port: number;
  readonly requests: PlanRequest[];
  /** Completion requests whose connection is still open. */
  readonly open: number;
  /** Resolves when the n-th (1-based) completion request has arrived. */
  waitForRequests(n: number): Promise<PlanRequest>;
  /** Stop listening and drop every connection at once. */
  close(): Promise<void>;
}

/**
 * Starts a plan backend on 127.0.0.1 serving `models` (vLLM discovery routes).
 *
 * @example
 * ```ts
 * const b = startPlanBackend(["m"]);
 * // a job with request { plan: { seed: 1, deltas: 10 }, messages: [] } relays expectedOf(plan, "m").body
 * await b.close();
 * ```
 */
export function startPlanBackend(models: string[], port = 0): PlanBackend {
  return new Backend(models, port);
}

class Backend implements PlanBackend {
  readonly url: string;
  readonly port: number;
  readonly requests: PlanRequest[] = [];
  open = 0;
  #listener: Deno.TcpListener;
  #accepting: Promise<void>;
  #conns = new Set<Deno.Conn>();
  #tasks = new Set<Promise<void>>();
  #arrivals: { n: number; resolve: (r: PlanRequest) => void }[] = [];
  #models: string[];

  constructor(models: string[], port: number) {
    this.#models = models;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port });
    this.port = this.#listener.addr.port;
    this.url = `http://127.0.0.1:${this.port}`;
    this.#accepting = this.#accept();
  }

  waitForRequests(n: number): Promise<PlanRequest> {
    const r = this.requests[n - 1];
    if (r) return Promise.resolve(r);
    return new Promise((resolve) => this.#arrivals.push({ n, resolve }));
  }

  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch { /* closed already */ }
    await this.#accepting;
    for (const c of this.#conns) closeQuietly(c);
    await Promise.all(this.#tasks);
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return;
      }
      this.#conns.add(conn);
      const task: Promise<void> = this.#serve(conn).catch(() => {}).finally(() => {
        closeQuietly(conn);
        this.#conns.delete(conn);
        this.#tasks.delete(task);
      });
      this.#tasks.add(task);
    }
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const req = await readRequest(conn);
    if (!req) return;
    if (req.method === "GET" && req.path === "/health") return await reply(conn, 200, "");
    if (req.method === "GET" && req.path === "/v1/models") {
      const data = this.#models.map((id) => ({ id, object: "model", max_model_len: 8192 }));
      return await reply(conn, 200, JSON.stringify({ object: "list", data }));
    }
    if (req.method !== "POST" || req.path !== "/v1/chat/completions") {
      return await reply(conn, 404, '{"error":"not found"}');
    }
    const body = JSON.parse(new TextDecoder().decode(req.body));
    const plan: Plan = body.plan;
    const model: string = body.model;
    const ended = Promise.withResolvers<EndedBy>();
    const record = { plan, model, at: performance.now(), ended: ended.promise };
    const n = this.requests.push(record);
    this.#arrivals = this.#arrivals.filter((w) =>
      w.n <= n ? (w.resolve(this.requests[w.n - 1]!), false) : true
    );
    this.open++;
    // A pending read notices the client going away at any time.
    const gone = conn.read(new Uint8Array(1)).then(
      () => "client" as const,
      () => "client" as const,
    );
    try {
      const by = await Promise.race([gone, this.#stream(conn, plan, model)]);
      ended.resolve(by);
    } catch {
      ended.resolve("client");
    } finally {
      this.open--;
    }
  }

  async #stream(conn: Deno.Conn, plan: Plan, model: string): Promise<EndedBy> {
    const mode = plan.mode ?? "ok";
    if (mode === "http500") {
      await reply(conn, 500, '{"error":{"message":"planned 500","code":500}}');
      return "backend";
    }
    if (mode === "hang") return await new Promise<never>(() => {});
    await write(
      conn,
      encoder.encode(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n" +
          "connection: close\r\n\r\n",
      ),
    );
    for (const piece of expectedOf(plan, model).pieces) {
      const head = encoder.encode(`${piece.length.toString(16)}\r\n`);
      const framed = new Uint8Array(head.length + piece.length + 2);
      framed.set(head);
      framed.set(piece, head.length);
      framed.set([13, 10], head.length + piece.length);
      await write(conn, framed);
      if (plan.delayMs) await new Promise((r) => setTimeout(r, plan.delayMs));
    }
    if (mode === "stall") return await new Promise<never>(() => {});
    if (mode === "ok" || mode === "error_event") await write(conn, encoder.encode("0\r\n\r\n"));
    return "backend"; // "break": the connection drops here without the final chunk
  }
}

function closeQuietly(c: Deno.Conn): void {
  try {
    c.close();
  } catch { /* closed already */ }
}

async function write(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

async function reply(conn: Deno.Conn, status: number, body: string): Promise<void> {
  const b = encoder.encode(body);
  await write(
    conn,
    encoder.encode(
      `HTTP/1.1 ${status} X\r\ncontent-type: application/json\r\ncontent-length: ${b.length}\r\n` +
        `connection: close\r\n\r\n${body}`,
    ),
  );
}

async function readRequest(
  conn: Deno.Conn,
): Promise<{ method: string; path: string; body: Uint8Array } | null> {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(64 * 1024);
  let headEnd = -1;
  while (headEnd < 0) {
    const n = await conn.read(chunk);
    if (n === null) return null;
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
    for (let i = 0; i + 3 < buf.length; i++) {
      if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) {
        headEnd = i + 4;
        break;
      }
    }
    if (headEnd < 0 && buf.length > 64 * 1024) return null;
  }
  const head = new TextDecoder().decode(buf.subarray(0, headEnd));
  const [method = "", target = "/"] = head.split(" ");
  const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
  while (buf.length - headEnd < length) {
    const n = await conn.read(chunk);
    if (n === null) return null;
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
  }
  return { method, path: target.split("?")[0]!, body: buf.slice(headEnd, headEnd + length) };
}
