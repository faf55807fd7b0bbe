// Minimal HTTP/1.1 client over a raw TCP socket: one streaming request per connection, for
// plain-http local backends (coalesced reads instead of fetch's one JS chunk per HTTP chunk).
// Owns framing, cancellation, and the backend_unreachable / internal error mapping; chunked
// decoding itself is chunked.ts's.

import { BackendError } from "../errors.ts";
import { ChunkedDecoder } from "./chunked.ts";

/** One request to a plain-http backend. */
export interface StreamRequest {
  method: "GET" | "POST";
  url: URL;
  headers: Record<string, string>;
  body?: Uint8Array;
  signal: AbortSignal;
  /**
   * When true, each `read()` returns a view into the response's own buffer, valid only until the
   * next `read()`: no allocation per piece, for a caller that consumes each piece at once (the
   * relay). Default false: every piece is a fresh copy.
   */
  transient?: boolean;
}

/** A response whose head has arrived; the body is read piece by piece. */
export interface StreamResponse {
  status: number;
  statusText: string;
  headers: Headers;
  /**
   * Next piece of the DECODED body (chunked framing removed): everything available from one
   * socket read, coalesced; null at the clean end of the body, and after `close()`. Throws
   * BackendError("internal", …) when the body breaks off early (premature close mid-body, bad
   * chunk framing), and the signal's reason once the signal has aborted.
   */
  read(): Promise<Uint8Array | null>;
  /** Reads the rest of the body up to `limit` bytes (for error bodies), as text. */
  text(limit?: number): Promise<string>;
  /** Closes the connection now (idempotent). */
  close(): void;
}

/**
 * Read buffer of each response: 4 KiB (more only for a response head over 4 KiB). Small reads are
 * the cheaper relay: a burst coalesces ~2-3 deltas per read anyway, 256 paced jobs hold 1 MiB, and
 * the strings made from a piece stay small. With 16 KiB reads, the catch-up after a 5 s
 * coordinator stall (64 streams × 5000 deltas) peaked at 140-160 MiB RSS; with 4 KiB, 85-87 MiB,
 * the same as without a stall, at no CPU cost (deno task bench).
 */
const BUFFER_SIZE = 4 * 1024;
const HEAD_LIMIT = 64 * 1024;
const TEXT_LIMIT = 64 * 1024;
/** Header names the client sets itself; a caller-supplied one is a TypeError. */
const OWNED = new Set([
  "host",
  "content-length",
  "transfer-encoding",
  "connection",
  "accept-encoding",
]);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** IPv4 as the URL parser normalises it, or IPv6 (brackets already removed). */
const STATUS_LINE = /^HTTP\/1\.\d (\d{3})(?: (.*))?$/;

const CR = 13, LF = 10;

type Framing = "chunked" | "length" | "close";
type State = "open" | "done" | "closed" | "aborted" | "failed";

/**
 * Sends one request on a fresh connection and resolves once the final response head has arrived.
 * Rejects with BackendError("backend_unreachable") when the backend cannot be reached or hangs up
 * before a complete head, BackendError("internal") for a malformed head, and `signal.reason` when
 * the signal aborts (the socket is closed at once, so the backend sees the disconnect).
 *
 * @example
 * ```ts
 * const res = await request({
 *   method: "POST",
 *   url: new URL("http://127.0.0.1:8000/v1/chat/completions"),
 *   headers: { "content-type": "application/json" },
 *   body: new TextEncoder().encode(JSON.stringify({ model: "m", stream: true, messages: [] })),
 *   signal: AbortSignal.timeout(60_000),
 * });
 * if (res.status !== 200) throw new Error(await res.text());
 * for (let piece = await res.read(); piece !== null; piece = await res.read()) {
 *   await Deno.stdout.write(piece);
 * }
 * ```
 */
export async function request(req: StreamRequest): Promise<StreamResponse> {
  const { url, signal } = req;
  if (url.protocol !== "http:") throw new TypeError(`http1: only http: URLs, got ${url.protocol}`);
  const port = url.port === "" ? 80 : Number(url.port);
  const where = `${url.hostname}:${port}`;
  const head = encodeHead(req, where);
  signal.throwIfAborted();
  const conn = await connect(url.hostname.replace(/^\[(.*)\]$/, "$1"), port, where, signal);
  const res = new Http1Response(conn, signal, where, req.transient === true);
  await res.start(head);
  return res;
}

/** Request line and headers (latin-1) followed by the body, in one buffer for one write. */
function encodeHead(req: StreamRequest, where: string): Uint8Array {
  let text = `${req.method} ${req.url.pathname}${req.url.search} HTTP/1.1\r\nHost: ${where}\r\n`;
  for (const [name, value] of Object.entries(req.headers)) {
    if (!TOKEN.test(name)) {
      throw new TypeError(`http1: invalid header name ${JSON.stringify(name)}`);
    }
    if (OWNED.has(name.toLowerCase())) {
      throw new TypeError(`http1: header ${name} is set by the client`);
    }
    if (!FIELD_VALUE.test(value)) throw new TypeError(`http1: invalid value for header ${name}`);
    text += `${name}: ${value}\r\n`;
  }
  const body = req.body;
  if (body !== undefined || req.method === "POST") {
    text += `Content-Length: ${body?.length ?? 0}\r\n`;
  }
  text += "Accept-Encoding: identity\r\nConnection: close\r\n\r\n";
  const out = new Uint8Array(text.length + (body?.length ?? 0));
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  if (body !== undefined) out.set(body, text.length);
  return out;
}

/**
 * Connects to `hostname`; Deno.connect tries every address it resolves to (Happy Eyeballs), so
 * `localhost` reaches a backend bound to 127.0.0.1 or ::1. The signal aborts the attempt.
 */
async function connect(
  hostname: string,
  port: number,
  where: string,
  signal: AbortSignal,
): Promise<Deno.TcpConn> {
  try {
    return await Deno.connect({ hostname, port, transport: "tcp", signal });
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw new BackendError("backend_unreachable", `${where}: ${describe(err)}`, { cause: err });
  }
}

/** Short, stable wording for socket errors. */
function describe(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionRefused) return "connection refused";
  if (err instanceof Deno.errors.ConnectionReset) return "connection reset";
  if (err instanceof Deno.errors.ConnectionAborted) return "connection aborted";
  if (err instanceof Deno.errors.TimedOut) return "connection timed out";
  if (err instanceof Deno.errors.BrokenPipe) return "connection closed by the backend";
  const message = err instanceof Error ? err.message : String(err);
  if (/failed to lookup|Name or service not known|EAI_/i.test(message)) {
    return `name not resolved (${message})`;
  }
  return message;
}

function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return s;
}

class Http1Response implements StreamResponse {
  status = 0;
  statusText = "";
  headers = new Headers();
  #conn: Deno.TcpConn;
  #signal: AbortSignal;
  #where: string;
  #buf = new Uint8Array(BUFFER_SIZE);
  /** Undecoded bytes left in #buf after the head: [#start, #end). */
  #start = 0;
  #end = 0;
  #state: State = "open";
  #error: unknown;
  #reading = false;
  #framing: Framing = "close";
  /** Body bytes still expected (length framing). */
  #left = 0;
  readonly #chunked = new ChunkedDecoder();
  #onAbort = () => this.#finish("aborted");

  readonly #transient: boolean;

  constructor(conn: Deno.TcpConn, signal: AbortSignal, where: string, transient: boolean) {
    this.#transient = transient;
    this.#conn = conn;
    this.#signal = signal;
    this.#where = where;
    if (signal.aborted) this.#finish("aborted");
    else signal.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Writes the request and reads up to the final response head. */
  async start(head: Uint8Array): Promise<void> {
    try {
      for (let sent = 0; sent < head.length;) sent += await this.#conn.write(head.subarray(sent));
    } catch (err) {
      throw this.#fail(this.#unreachable("sending the request", err));
    }
    for (;;) {
      const end = await this.#readHead();
      try {
        this.#parseHead(this.#buf.subarray(this.#start, end));
      } catch (err) {
        throw this.#fail(err);
      }
      this.#start = end;
      if (this.status >= 200) break;
      if (this.status === 101) {
        throw this.#fail(new BackendError("internal", `${this.#where}: unexpected 101 response`));
      }
      this.headers = new Headers();
    }
    this.#chooseFraming();
    if (this.#framing === "length" && this.#left === 0) this.#finish("done");
  }

  /** Reads until the buffer holds a complete head; returns the offset just past it. */
  async #readHead(): Promise<number> {
    let scan = this.#start;
    for (;;) {
      const b = this.#buf;
      const end = this.#end;
      for (; scan < end; scan++) {
        if (b[scan] !== LF || scan + 1 === end) continue;
        if (b[scan + 1] === LF) return scan + 2;
        if (scan + 2 < end && b[scan + 1] === CR && b[scan + 2] === LF) return scan + 3;
      }
      scan = Math.max(this.#start, this.#end - 2);
      if (this.#end - this.#start >= HEAD_LIMIT) {
        throw this.#fail(new BackendError("internal", `${this.#where}: response head over 64 KiB`));
      }
      if (this.#start > 0) {
        b.copyWithin(0, this.#start, this.#end);
        scan -= this.#start;
        this.#end -= this.#start;
        this.#start = 0;
      }
      if (this.#end === b.length) this.#grow(HEAD_LIMIT);
      let n: number | null;
      try {
        n = await this.#conn.read(this.#buf.subarray(this.#end));
      } catch (err) {
        throw this.#fail(this.#unreachable("waiting for the response head", err));
      }
      if (this.#state === "aborted") throw this.#signal.reason;
      if (n === null) {
        throw this.#fail(
          new BackendError(
            "backend_unreachable",
            `${this.#where}: connection closed before a complete response head`,
          ),
        );
      }
      this.#end += n;
    }
  }

  #parseHead(bytes: Uint8Array): void {
    const lines = latin1(bytes).split("\n").map((l) => l.endsWith("\r") ? l.slice(0, -1) : l);
    const status = STATUS_LINE.exec(lines[0] ?? "");
    if (status === null || Number(status[1]) < 100) {
      throw new BackendError("internal", `${this.#where}: malformed status line`);
    }
    this.status = Number(status[1]);
    this.statusText = status[2] ?? "";
    for (const line of lines.slice(1)) {
      if (line === "") continue;
      const colon = line.indexOf(":");
      try {
        if (colon <= 0) throw new TypeError("no header name");
        this.headers.append(line.slice(0, colon), line.slice(colon + 1));
      } catch (err) {
        throw new BackendError("internal", `${this.#where}: malformed response header`, {
          cause: err,
        });
      }
    }
  }

  #chooseFraming(): void {
    const te = this.headers.get("transfer-encoding");
    const cl = this.headers.get("content-length");
    if (this.status === 204 || this.status === 304) {
      this.#framing = "length";
    } else if (te !== null) {
      if (te.trim().toLowerCase() !== "chunked") {
        throw this.#fail(
          new BackendError("internal", `${this.#where}: unsupported transfer-encoding ${te}`),
        );
      }
      this.#framing = "chunked";
    } else if (cl !== null) {
      const values = new Set(cl.split(",").map((v) => v.trim()));
      const [value] = values;
      if (values.size !== 1 || !/^\d{1,15}$/.test(value ?? "")) {
        throw this.#fail(new BackendError("internal", `${this.#where}: invalid content-length`));
      }
      this.#framing = "length";
      this.#left = Number(value);
    }
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#reading) throw new TypeError("http1: read() is already pending");
    this.#reading = true;
    try {
      for (;;) {
        if (this.#state !== "open") return this.#ended();
        if (this.#start < this.#end) {
          const piece = this.#decode(this.#start, this.#end);
          this.#start = this.#end = 0;
          if (piece !== null) return piece;
          continue;
        }
        let n: number | null;
        try {
          n = await this.#conn.read(this.#buf);
        } catch (err) {
          if (this.#state !== "open") return this.#ended();
          throw this.#fail(
            new BackendError("internal", `stream broke: ${describe(err)} (${this.#where})`, {
              cause: err,
            }),
          );
        }
        if (this.#state !== "open") return this.#ended();
        if (n === null) {
          if (this.#framing === "close") {
            this.#finish("done");
            return null;
          }
          const detail = this.#framing === "length" ? `${this.#left} bytes short` : "mid-chunk";
          throw this.#fail(
            new BackendError(
              "internal",
              `stream broke: connection closed ${detail} (${this.#where})`,
            ),
          );
        }
        this.#start = 0;
        this.#end = n;
      }
    } finally {
      this.#reading = false;
    }
  }

  /** Doubles the read buffer (for a long response head) up to `max`, keeping what it holds. */
  #grow(max: number): void {
    if (this.#buf.length >= max) return;
    const next = new Uint8Array(Math.min(max, this.#buf.length * 2));
    next.set(this.#buf.subarray(0, this.#end));
    this.#buf = next;
  }

  async text(limit = TEXT_LIMIT): Promise<string> {
    const decoder = new TextDecoder();
    let text = "";
    let room = limit;
    for (let piece = await this.read(); piece !== null; piece = await this.read()) {
      text += decoder.decode(piece.subarray(0, room), { stream: true });
      room -= Math.min(room, piece.length);
      if (room === 0) {
        this.close();
        return text;
      }
    }
    return text + decoder.decode();
  }

  close(): void {
    this.#finish("closed");
  }

  /** Decodes buffered bytes [r, end); returns the body bytes among them, or null if none. */
  #decode(r: number, end: number): Uint8Array | null {
    if (this.#framing === "close") return this.#piece(r, end);
    if (this.#framing === "length") {
      const take = Math.min(this.#left, end - r);
      this.#left -= take;
      if (this.#left === 0) this.#finish("done");
      return take === 0 ? null : this.#piece(r, r + take);
    }
    let w: number;
    try {
      w = this.#chunked.decode(this.#buf, r, end);
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      throw this.#malformed(err.message);
    }
    if (this.#chunked.done) this.#finish("done");
    return w === 0 ? null : this.#piece(0, w);
  }

  /** Bytes [from, to) of the buffer: a view when transient, else a copy. */
  #piece(from: number, to: number): Uint8Array {
    return this.#transient ? this.#buf.subarray(from, to) : this.#buf.slice(from, to);
  }

  #malformed(what: string): unknown {
    return this.#fail(
      new BackendError("internal", `${this.#where}: malformed chunked body: ${what}`),
    );
  }

  #unreachable(during: string, err: unknown): unknown {
    if (this.#state === "aborted") return this.#signal.reason;
    return new BackendError("backend_unreachable", `${this.#where}: ${describe(err)} ${during}`, {
      cause: err,
    });
  }

  /** What read() gives once the body is no longer being read. */
  #ended(): null {
    if (this.#state === "aborted") throw this.#signal.reason;
    if (this.#state === "failed") throw this.#error;
    return null;
  }

  /** Records `err` as the response's outcome (unless it already ended) and returns it to throw. */
  #fail(err: unknown): unknown {
    if (this.#state === "aborted") return this.#signal.reason;
    if (this.#state === "open") this.#error = err;
    this.#finish("failed");
    return err;
  }

  /** The one exit: closes the socket and drops the abort listener, once. */
  #finish(state: Exclude<State, "open">): void {
    if (this.#state !== "open") return;
    this.#state = state;
    this.#signal.removeEventListener("abort", this.#onAbort);
    try {
      this.#conn.close();
    } catch {
      // Already closed by the runtime: nothing left to release.
    }
  }
}
