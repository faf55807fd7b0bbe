// The WebSocket opening handshake (RFC 6455 §4): TCP or TLS dial to the coordinator, the
// upgrade request, and the check of the 101 answer and its Sec-WebSocket-Accept key. Returns the
// open socket and any bytes the server sent after the response head.

export interface WsConnectOptions {
  url: URL;
  /** Extra PEM root certificates for wss (coordinator.ca_file). */
  caCerts?: string[];
  /** Aborts the TCP connect and the opening handshake. */
  signal?: AbortSignal;
  /** Largest message delivered as text; larger ones are skipped unbuffered. */
  maxMessageBytes?: number;
}

/** A failed opening handshake (HTTP status other than 101, bad accept key, …). */
export class HandshakeError extends Error {
  override name = "HandshakeError";
}

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_HEAD = 16 * 1024;
const encoder = new TextEncoder();

/**
 * Dials `opts.url` and completes the opening handshake.
 *
 * @example
 * ```ts
 * const { conn, leftover } = await dialWebSocket({ url: new URL("ws://127.0.0.1:9/") });
 * ```
 */
export async function dialWebSocket(
  opts: WsConnectOptions,
): Promise<{ conn: Deno.Conn; leftover: Uint8Array }> {
  const { url } = opts;
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new TypeError(`not a WebSocket URL: ${url.protocol}`);
  }
  const tls = url.protocol === "wss:";
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port ? Number(url.port) : tls ? 443 : 80;
  opts.signal?.throwIfAborted();
  let conn: Deno.Conn;
  if (tls) {
    const connecting = Deno.connectTls({
      hostname,
      port,
      alpnProtocols: ["http/1.1"],
      ...(opts.caCerts ? { caCerts: opts.caCerts } : {}),
    });
    conn = await abortable(connecting, opts.signal, (c) => c.close());
  } else {
    const tcp = await Deno.connect({
      hostname,
      port,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    tcp.setNoDelay(true);
    tcp.setKeepAlive(true);
    conn = tcp;
  }
  const onAbort = () => conn.close();
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    return { conn, leftover: await handshake(conn, url) };
  } catch (err) {
    try {
      conn.close();
    } catch { /* already closed by the abort */ }
    opts.signal?.throwIfAborted();
    throw err;
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
  }
}

async function abortable<T>(
  p: Promise<T>,
  signal: AbortSignal | undefined,
  dispose: (v: T) => void,
): Promise<T> {
  if (!signal) return await p;
  const { promise, reject } = Promise.withResolvers<never>();
  const onAbort = () => reject(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    return await Promise.race([p, promise]);
  } catch (err) {
    p.then(dispose, () => {});
    throw err;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

async function handshake(conn: Deno.Conn, url: URL): Promise<Uint8Array> {
  const key = crypto.getRandomValues(new Uint8Array(16)).toBase64();
  const path = (url.pathname || "/") + url.search;
  const req = `GET ${path} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
    `User-Agent: usepod-agent\r\n\r\n`;
  await writeAll(conn, encoder.encode(req));
  const buf = new Uint8Array(MAX_HEAD);
  let len = 0;
  let headEnd = -1;
  while (headEnd < 0) {
    if (len === buf.length) throw new HandshakeError("handshake response head too large");
    const n = await conn.read(buf.subarray(len));
    if (n === null) throw new HandshakeError("connection closed during the WebSocket handshake");
    const from = Math.max(0, len - 3);
    len += n;
    for (let i = from; i + 3 < len; i++) {
      if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) {
        headEnd = i + 4;
        break;
      }
    }
  }
  const head = new TextDecoder().decode(buf.subarray(0, headEnd));
  const [statusLine = "", ...lines] = head.split("\r\n");
  const status = Number(statusLine.split(" ")[1]);
  if (status !== 101) {
    throw new HandshakeError(`coordinator answered HTTP ${status || "?"} instead of 101`);
  }
  const headers = new Map<string, string>();
  for (const line of lines) {
    const i = line.indexOf(":");
    if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  const digest = await crypto.subtle.digest("SHA-1", encoder.encode(key + GUID));
  if (headers.get("sec-websocket-accept") !== new Uint8Array(digest).toBase64()) {
    throw new HandshakeError("bad Sec-WebSocket-Accept in the handshake response");
  }
  return buf.slice(headEnd, len);
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}
