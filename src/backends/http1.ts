// Minimal HTTP/1.1 client over a raw TCP socket: streaming requests to plain-http local backends
// (coalesced reads instead of fetch's one JS chunk per HTTP chunk), on a fresh connection or a
// pooled keep-alive one (pool.ts). Owns framing, cancellation, when a connection may be reused
// and when a request is retried, and the backend_unreachable / internal error mapping; head text
// is http1_head.ts's, chunked decoding chunked.ts's.

import { BackendError } from "../errors.ts";
import { ChunkedDecoder } from "./chunked.ts";
import { describe, encodeHead, type Framing, HeaderList, parseHead } from "./http1_head.ts";
import { type ConnectionPool, type PooledConn, READ_BUFFER_SIZE } from "./pool.ts";

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
  /** Keep-alive connections to reuse and to put this one back into (default: none). */
  pool?: ConnectionPool;
}

/** A response whose head has arrived; the body is read piece by piece. */
export interface StreamResponse {
  status: number;
  statusText: string;
  /** The final response's header fields (`get` reads them like `Headers.get`). */
  headers: HeaderList;
  /**
   * Next piece of the DECODED body (chunked framing removed): everything available from one
   * socket read, coalesced; null at the clean end of the body, and after `close()`. Throws
   * BackendError("internal", …) when the body breaks off early (premature close mid-body, bad
   * chunk framing), and the signal's reason once the signal has aborted.
   */
  read(): Promise<Uint8Array | null>;
  /** Reads the rest of the body up to `limit` bytes (for error bodies), as text. */
  text(limit?: number): Promise<string>;
  /**
   * Ends the response (idempotent): after its clean end, a pooled connection goes back to the
   * pool (it already has); before it, the connection is closed now.
   */
  close(): void;
}

const HEAD_LIMIT = 64 * 1024;
const TEXT_LIMIT = 64 * 1024;
const CR = 13, LF = 10;

type State = "open" | "done" | "closed" | "aborted" | "failed";

/**
 * Sends one request and resolves once the final response head has arrived. Without a pool, on a
 * fresh connection closed after the response (`Connection: close`). With one, on an idle
 * keep-alive connection to the same host:port when there is one; a response read to its clean
 * end puts its connection back. A request whose reused connection turns out closed before a
 * single byte of response is sent once more on a fresh connection (docs/reliability.md).
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
  const { url, signal, pool } = req;
  if (url.protocol !== "http:") throw new TypeError(`http1: only http: URLs, got ${url.protocol}`);
  const port = url.port === "" ? 80 : Number(url.port);
  const where = `${url.hostname}:${port}`;
  const head = encodeHead(req.method, url, where, req.headers, req.body, pool !== undefined);
  signal.throwIfAborted();
  const transient = req.transient === true;
  const reused = pool?.take(where);
  if (reused !== undefined) {
    const res = new Http1Response(reused.conn, signal, where, transient, pool, reused);
    try {
      await res.start(head);
      return res;
    } catch (err) {
      if (!res.retryable || signal.aborted) throw err;
      pool!.stats.retried++;
    }
  }
  const conn = await connect(url.hostname.replace(/^\[(.*)\]$/, "$1"), port, where, signal);
  const pc = pool?.adopt(conn, where);
  const res = new Http1Response(conn, signal, where, transient, pool, pc);
  await res.start(head);
  return res;
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

class Http1Response implements StreamResponse {
  status = 0;
  statusText = "";
  headers = new HeaderList();
  /** True when it failed before a single response byte on a reused connection. */
  retryable = false;
  #conn: Deno.TcpConn;
  #signal: AbortSignal;
  #where: string;
  #buf: Uint8Array;
  #pool: ConnectionPool | undefined;
  #pooled: PooledConn | undefined;
  /** The read an idle pooled connection had pending: the first read of this response. */
  #pending: Promise<number | null> | undefined;
  #reused: boolean;
  /** Response bytes received so far (head included). */
  #received = 0;
  #keepAlive = false;
  #maxRequests: number | undefined;
  #timeoutMs: number | undefined;
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

  constructor(
    conn: Deno.TcpConn,
    signal: AbortSignal,
    where: string,
    transient: boolean,
    pool: ConnectionPool | undefined,
    pooled: PooledConn | undefined,
  ) {
    this.#transient = transient;
    this.#conn = conn;
    this.#signal = signal;
    this.#where = where;
    this.#pool = pool;
    this.#pooled = pooled;
    this.#reused = pooled?.pending !== undefined;
    this.#pending = pooled?.pending;
    this.#buf = pooled?.pending !== undefined ? pooled.buf : new Uint8Array(READ_BUFFER_SIZE);
    if (pooled !== undefined) pooled.pending = undefined;
    if (signal.aborted) this.#finish("aborted");
    else signal.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Writes the request and reads up to the final response head. */
  async start(head: Uint8Array): Promise<void> {
    try {
      for (let sent = 0; sent < head.length;) sent += await this.#conn.write(head.subarray(sent));
    } catch (err) {
      // The request did not go out whole: the server cannot have acted on it.
      this.retryable = this.#reused && this.#received === 0;
      throw this.#fail(this.#unreachable("sending the request", err));
    }
    for (;;) {
      const end = await this.#readHead();
      try {
        const head = parseHead(this.#buf.subarray(this.#start, end), this.#where);
        this.status = head.status;
        this.statusText = head.statusText;
        this.headers = head.headers;
        this.#framing = head.framing;
        this.#left = head.length;
        this.#keepAlive = head.keepAlive;
        this.#maxRequests = head.maxRequests;
        this.#timeoutMs = head.timeoutMs;
      } catch (err) {
        throw this.#fail(err);
      }
      this.#start = end;
      if (this.status >= 200) break;
      if (this.status === 101) {
        throw this.#fail(new BackendError("internal", `${this.#where}: unexpected 101 response`));
      }
    }
    if (this.#framing === "length" && this.#left === 0) {
      if (this.#start < this.#end) this.#keepAlive = false; // bytes after an empty body
      this.#finish("done");
    }
  }

  /** The next socket read: the one an idle pooled connection left pending, first. */
  #readSocket(into: Uint8Array): Promise<number | null> {
    const pending = this.#pending;
    if (pending === undefined) return this.#conn.read(into);
    this.#pending = undefined;
    return pending;
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
        n = await this.#readSocket(this.#buf.subarray(this.#end));
      } catch (err) {
        // Reset before any byte of a response on a reused connection: see request().
        this.retryable = this.#reused && this.#received === 0 && this.#state === "open";
        throw this.#fail(this.#unreachable("waiting for the response head", err));
      }
      if (this.#state === "aborted") throw this.#signal.reason;
      if (n === null) {
        this.retryable = this.#reused && this.#received === 0;
        throw this.#fail(
          new BackendError(
            "backend_unreachable",
            `${this.#where}: connection closed before a complete response head`,
          ),
        );
      }
      this.#end += n;
      this.#received += n;
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
          n = await this.#readSocket(this.#buf);
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
        this.#received += n;
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
      // Bytes after the body: the server is out of step; the connection is not reused.
      if (take < end - r) this.#keepAlive = false;
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
    if (this.#chunked.done) {
      if (this.#chunked.unread > 0) this.#keepAlive = false;
      this.#finish("done");
    }
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

  /**
   * The one exit, once: drops the abort listener, then puts the connection back into the pool
   * when the response reached its clean end on a keep-alive connection with nothing after it;
   * closes it otherwise (cancel, deadline, error, a body not read to its end).
   */
  #finish(state: Exclude<State, "open">): void {
    if (this.#state !== "open") return;
    this.#state = state;
    this.#signal.removeEventListener("abort", this.#onAbort);
    const pc = this.#pooled;
    if (
      state === "done" && pc !== undefined && this.#keepAlive && this.#pending === undefined
    ) {
      this.#pool!.release(pc, this.#maxRequests, this.#timeoutMs, this.#buf);
      return;
    }
    try {
      this.#conn.close();
    } catch {
      // Already closed by the runtime: nothing left to release.
    }
  }
}
