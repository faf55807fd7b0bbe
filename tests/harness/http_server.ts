// A minimal HTTP/1.1 server connection for the fake backends: reads requests (Content-Length or
// chunked bodies), writes whole replies and chunked event streams, and drops the socket on
// purpose at any moment, the hangs, breaks and kills of PROTOCOL §4.

import { concatBytes } from "../../src/bytes.ts";

/** A request as read off the connection. */
export interface HttpRequest {
  method: string;
  target: string;
  headers: Headers;
  body: Uint8Array;
}

/** A whole reply, sent with a Content-Length. */
export interface Reply {
  status: number;
  type: string;
  body: string;
  headers?: Record<string, string>;
}

/** A JSON reply. */
export const json = (status: number, value: unknown): Reply => ({
  status,
  type: "application/json",
  body: JSON.stringify(value),
});
/** A plain-text reply. */
export const text = (status: number, body: string): Reply => ({
  status,
  type: "text/plain; charset=utf-8",
  body,
});

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const MAX_HEAD = 64 * 1024;
/** Reason phrases of the statuses the fakes send. */
export const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  401: "Unauthorized",
  404: "Not Found",
  429: "Too Many Requests",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/** Thrown to unwind a response whose connection is gone. */
export class ConnectionGone extends Error {
  override name = "ConnectionGone";
}

/**
 * One accepted TCP connection: reads requests (Content-Length or chunked bodies), writes replies
 * and chunked streams, and notices a peer that hangs up at any time because it always keeps a read
 * pending. Closing it drops the socket, which is how streams are broken and backends killed.
 */
export class HttpConn {
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
    return concatBytes(parts);
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
    return this.#write(concatBytes([encoder.encode(head), body]));
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
    return this.#write(
      concatBytes([encoder.encode(`${data.length.toString(16)}\r\n`), data, CRLF]),
    );
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

/** A JSON request body, or undefined when absent or not JSON. */
export function parseJson(bytes: Uint8Array): unknown {
  try {
    return bytes.length ? JSON.parse(decoder.decode(bytes)) : undefined;
  } catch {
    return undefined;
  }
}

/** `value[key]` when `value` is an object, else undefined. */
export function field(value: unknown, key: string): unknown {
  return typeof value === "object" && value !== null
    ? (value as Record<string, unknown>)[key]
    : undefined;
}

/** Resolves after `ms`, or rejects as soon as `signal` aborts (clearing the timer). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
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

/** Resolves once `signal` aborts. */
export function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}
