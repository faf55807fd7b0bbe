// The text of HTTP/1.1 message heads for the raw client (http1.ts): the request head it writes
// (headers checked, latin-1), the response head it reads (status line, headers, framing, whether
// the connection may carry another request) and the short wording of socket errors.

import { BackendError } from "../errors.ts";

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
const STATUS_LINE = /^HTTP\/1\.(\d) (\d{3})(?: (.*))?$/;

/**
 * Request line and headers (latin-1) followed by the body, in one buffer for one write.
 * `keepAlive` false asks the server to close the connection after the response.
 */
export function encodeHead(
  method: string,
  url: URL,
  where: string,
  headers: Record<string, string>,
  body: Uint8Array | undefined,
  keepAlive: boolean,
): Uint8Array {
  let text = `${method} ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${where}\r\n`;
  for (const name in headers) {
    const value = headers[name]!;
    if (!TOKEN.test(name)) {
      throw new TypeError(`http1: invalid header name ${JSON.stringify(name)}`);
    }
    if (OWNED.has(name.toLowerCase())) {
      throw new TypeError(`http1: header ${name} is set by the client`);
    }
    if (!FIELD_VALUE.test(value)) throw new TypeError(`http1: invalid value for header ${name}`);
    text += `${name}: ${value}\r\n`;
  }
  if (body !== undefined || method === "POST") {
    text += `Content-Length: ${body?.length ?? 0}\r\n`;
  }
  text += keepAlive
    ? "Accept-Encoding: identity\r\n\r\n"
    : "Accept-Encoding: identity\r\nConnection: close\r\n\r\n";
  const out = new Uint8Array(text.length + (body?.length ?? 0));
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  if (body !== undefined) out.set(body, text.length);
  return out;
}

/** Short, stable wording for socket errors. */
export function describe(err: unknown): string {
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

const ascii = new TextDecoder();

/** Bytes as latin-1 text; all-ASCII heads (nearly all) take the native decoder. */
function latin1(bytes: Uint8Array): string {
  let high = false;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i]! > 0x7f) {
      high = true;
      break;
    }
  }
  if (!high) return ascii.decode(bytes);
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return s;
}

/**
 * A response's header fields, read the way `Headers.get` reads them (case-insensitive names,
 * repeated fields joined with ", ") without building a `Headers` for every response.
 */
export class HeaderList {
  readonly #names: string[] = [];
  readonly #values: string[] = [];

  /** Adds a field; throws TypeError for a name that is not a token or a value with NUL/CR/LF. */
  append(name: string, value: string): void {
    if (!TOKEN.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
    const v = value.replace(/^[ \t]+|[ \t]+$/g, "");
    if (/[\0\r\n]/.test(v)) throw new TypeError(`invalid value for header ${name}`);
    this.#names.push(name.toLowerCase());
    this.#values.push(v);
  }

  /** The field's value (repeated fields joined with ", "), or null. */
  get(name: string): string | null {
    const key = name.toLowerCase();
    let out: string | null = null;
    for (let i = 0; i < this.#names.length; i++) {
      if (this.#names[i] === key) {
        out = out === null ? this.#values[i]! : `${out}, ${this.#values[i]}`;
      }
    }
    return out;
  }

  has(name: string): boolean {
    return this.#names.includes(name.toLowerCase());
  }

  /** [name, value] pairs, names in lower case, in arrival order. */
  *[Symbol.iterator](): IterableIterator<[string, string]> {
    for (let i = 0; i < this.#names.length; i++) yield [this.#names[i]!, this.#values[i]!];
  }
}

/** How the body of a response is delimited. */
export type Framing = "chunked" | "length" | "close";

/** A parsed response head. */
export interface Head {
  status: number;
  statusText: string;
  headers: HeaderList;
  framing: Framing;
  /** Body bytes (length framing). */
  length: number;
  /**
   * The server lets the connection carry another request after this response: HTTP/1.1, no
   * `Connection: close`, a delimited body, and a `Keep-Alive: max` (if any) above 0.
   */
  keepAlive: boolean;
  /** `Keep-Alive: max=N` and `timeout=S` (in ms) when the server sent them. */
  maxRequests: number | undefined;
  timeoutMs: number | undefined;
}

/**
 * Parses one response head (status line to the empty line, inclusive).
 *
 * @throws {BackendError} "internal" naming what is malformed or unsupported.
 */
export function parseHead(bytes: Uint8Array, where: string): Head {
  const lines = latin1(bytes).split("\n");
  const first = lines[0] ?? "";
  const status = STATUS_LINE.exec(first.endsWith("\r") ? first.slice(0, -1) : first);
  if (status === null || Number(status[2]) < 100) {
    throw new BackendError("internal", `${where}: malformed status line`);
  }
  const headers = new HeaderList();
  for (let i = 1; i < lines.length; i++) {
    const raw = lines[i]!;
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line === "") continue;
    const colon = line.indexOf(":");
    try {
      if (colon <= 0) throw new TypeError("no header name");
      headers.append(line.slice(0, colon), line.slice(colon + 1));
    } catch (err) {
      throw new BackendError("internal", `${where}: malformed response header`, { cause: err });
    }
  }
  const code = Number(status[2]);
  const head: Head = {
    status: code,
    statusText: status[3] ?? "",
    headers,
    framing: "close",
    length: 0,
    keepAlive: false,
    maxRequests: undefined,
    timeoutMs: undefined,
  };
  if (code >= 200) frame(head, where);
  const connection = headers.get("connection")?.toLowerCase() ?? "";
  const keepAlive = headers.get("keep-alive");
  if (keepAlive !== null) {
    const max = /(?:^|[,;\s])max\s*=\s*(\d+)/i.exec(keepAlive);
    const timeout = /(?:^|[,;\s])timeout\s*=\s*(\d+)/i.exec(keepAlive);
    if (max) head.maxRequests = Number(max[1]);
    if (timeout) head.timeoutMs = Number(timeout[1]) * 1000;
  }
  head.keepAlive = status[1] === "1" && head.framing !== "close" &&
    !/(?:^|,)\s*close\s*(?:,|$)/.test(connection) && head.maxRequests !== 0;
  return head;
}

/** Chooses the body's framing from Transfer-Encoding and Content-Length (RFC 9112 §6.3). */
function frame(head: Head, where: string): void {
  const te = head.headers.get("transfer-encoding");
  const cl = head.headers.get("content-length");
  if (head.status === 204 || head.status === 304) {
    head.framing = "length";
  } else if (te !== null) {
    if (te.trim().toLowerCase() !== "chunked") {
      throw new BackendError("internal", `${where}: unsupported transfer-encoding ${te}`);
    }
    head.framing = "chunked";
  } else if (cl !== null) {
    const values = new Set(cl.split(",").map((v) => v.trim()));
    const [value] = values;
    if (values.size !== 1 || !/^\d{1,15}$/.test(value ?? "")) {
      throw new BackendError("internal", `${where}: invalid content-length`);
    }
    head.framing = "length";
    head.length = Number(value);
  }
}
