// A WebSocket client (RFC 6455) over Deno.connect / Deno.connectTls, owning the socket to
// the coordinator. Built instead of the runtime's WebSocket for what the agent must see:
// real send backpressure (writes wait on the socket), inbound ping/pong (dead-link
// detection), frame sizes before buffering (PROTOCOL §4), and coalesced writes.

import { concatBytes } from "./bytes.ts";
import { MAX_FRAME_BYTES } from "./protocol.ts";

/** What the read side delivers, in order. */
export type WsEvent =
  | { kind: "text"; text: string }
  | { kind: "binary"; size: number }
  | { kind: "oversized"; size: number }
  | { kind: "invalid_utf8"; size: number };

/** How the connection ended. `closeFrame` is false when the stream ended without one. */
export interface WsClose {
  code: number;
  reason: string;
  closeFrame: boolean;
  error?: Error;
}

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
const READ_SIZE = 64 * 1024;
const MAX_HEAD = 16 * 1024;
const CLOSE_WAIT_MS = 1000;
/**
 * Outbound frames are written into blocks of this size, queued in order and written one block
 * per socket write; a frame larger than a block gets a block of its own. Memory follows the
 * backlog (no doubling of one big buffer), and a few written blocks are kept for reuse.
 */
const BLOCK = 256 * 1024;
const BLOCKS_KEPT = 4;
const encoder = new TextEncoder();

const OP_CONT = 0x0, OP_TEXT = 0x1, OP_BIN = 0x2, OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xa;

/** Random masking keys, drawn from a pool refilled by crypto.getRandomValues. */
class MaskPool {
  #pool = new Uint8Array(4096);
  #at = this.#pool.length;
  take(into: Uint8Array, at: number): void {
    if (this.#at + 4 > this.#pool.length) {
      crypto.getRandomValues(this.#pool);
      this.#at = 0;
    }
    into.set(this.#pool.subarray(this.#at, this.#at + 4), at);
    this.#at += 4;
  }
}
const masks = new MaskPool();

/**
 * Opens a WebSocket connection and completes the opening handshake.
 *
 * @example
 * ```ts
 * const ws = await connectWs({ url: new URL("wss://api.usepod.ai/provider/connect") });
 * const first = await ws.next();
 * ```
 */
export async function connectWs(opts: WsConnectOptions): Promise<WsClient> {
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
    const leftover = await handshake(conn, url);
    return new WsClient(conn, leftover, opts.maxMessageBytes ?? MAX_FRAME_BYTES);
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

interface FlushWaiter {
  pos: number;
  resolve: () => void;
}

/**
 * One open WebSocket. Reads are pulled with {@link WsClient.next}; sends are queued,
 * coalesced and written in order, and `bufferedAmount` counts bytes not yet accepted by
 * the socket (so a peer that stops reading shows up here, not as unbounded memory).
 */
export class WsClient {
  /** performance.now() of the last inbound byte (any frame, pongs included). */
  lastInboundAt = performance.now();
  /** Bytes ever queued / ever written; their difference is the backlog. */
  queuedTotal = 0;
  flushedTotal = 0;
  readonly closed: Promise<WsClose>;

  #conn: Deno.Conn;
  #maxMessage: number;
  #resolveClosed!: (c: WsClose) => void;
  #done = false;
  #closeSent = false;
  #peerClosed = false;

  // read side
  #rbuf = new Uint8Array(READ_SIZE * 2);
  #rstart = 0;
  #rend = 0;
  #events: WsEvent[] = [];
  #eventWaiter: ((e: WsEvent | null) => void) | undefined;
  #fragments: Uint8Array[] = [];
  #fragmentSize = 0;
  #fragmentOp = 0;
  // An oversized message is discarded as it arrives, never buffered.
  #discarding = false;
  #discardTotal = 0;
  #skipRemaining = 0;
  #emitAfterSkip = false;

  // write side
  /** Blocks holding frames not yet written, oldest first; the last one is being filled. */
  #queue: { buf: Uint8Array; len: number }[] = [];
  #free: Uint8Array[] = [];
  #writer: Promise<void> | undefined;
  #writeScheduled = false;
  #waiters: FlushWaiter[] = [];
  #reader: Promise<void>;

  constructor(conn: Deno.Conn, leftover: Uint8Array, maxMessage: number) {
    this.#conn = conn;
    this.#maxMessage = maxMessage;
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    this.#rbuf.set(leftover);
    this.#rend = leftover.length;
    this.#reader = this.#readLoop();
  }

  /** Bytes queued but not yet written to the socket. */
  get bufferedAmount(): number {
    return this.queuedTotal - this.flushedTotal;
  }

  /** True until the connection has ended or a close was started. */
  get open(): boolean {
    return !this.#done && !this.#closeSent;
  }

  /** The next inbound event, or null once the connection has ended. */
  next(): Promise<WsEvent | null> {
    const e = this.#events.shift();
    if (e) return Promise.resolve(e);
    if (this.#done || this.#peerClosed) return Promise.resolve(null);
    return new Promise((resolve) => (this.#eventWaiter = resolve));
  }

  /** Queues a text frame; false when the connection is no longer open. */
  send(text: string): boolean {
    if (!this.open) return false;
    this.#frame(OP_TEXT, text);
    return true;
  }

  /** Queues a ping (the coordinator's pong proves the link is alive). */
  ping(): void {
    if (this.open) this.#frameBytes(OP_PING, new Uint8Array(0));
  }

  /** Resolves once every byte queued up to `pos` is written, or the connection ended. */
  waitFlushed(pos: number): Promise<void> {
    if (this.flushedTotal >= pos || this.#done) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ pos, resolve }));
  }

  /**
   * Starts the closing handshake: sends Close, waits briefly for the peer's Close and
   * then drops the socket. Resolves when the connection has ended.
   */
  async close(code = 1000, reason = ""): Promise<WsClose> {
    if (!this.#done && !this.#closeSent) {
      const r = encoder.encode(reason).subarray(0, 123);
      const payload = new Uint8Array(2 + r.length);
      payload[0] = code >> 8;
      payload[1] = code & 0xff;
      payload.set(r, 2);
      this.#frameBytes(OP_CLOSE, payload);
      this.#closeSent = true;
      const timer = setTimeout(
        () => this.#finish({ code, reason, closeFrame: false }),
        CLOSE_WAIT_MS,
      );
      await this.closed;
      clearTimeout(timer);
    }
    return await this.closed;
  }

  /** Drops the TCP connection at once (dead link, shutdown). */
  abort(reason = "aborted"): void {
    this.#finish({ code: 1006, reason, closeFrame: false });
  }

  /** Resolves when the read and write loops have stopped (after `closed`). */
  async settled(): Promise<void> {
    await this.closed;
    await Promise.allSettled([this.#reader, this.#writer]);
  }

  // -------------------------------------------------------------------------

  #finish(c: WsClose): void {
    if (this.#done) return;
    this.#done = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    for (const w of this.#waiters) w.resolve();
    this.#waiters = [];
    const waiter = this.#eventWaiter;
    this.#eventWaiter = undefined;
    waiter?.(null);
    this.#resolveClosed(c);
  }

  #emit(e: WsEvent): void {
    const waiter = this.#eventWaiter;
    if (waiter) {
      this.#eventWaiter = undefined;
      waiter(e);
    } else this.#events.push(e);
  }

  #frame(op: number, text: string): void {
    // Encode straight into the tail block after room for the largest header, then slide left
    // over the unused header bytes. When the text does not fit, retry in a block sized for the
    // worst case (3 bytes per UTF-16 unit).
    const guess = 14 + text.length; // exact for ASCII, e.g. every job_chunk
    let tail = this.#tail(guess <= BLOCK ? guess : 14 + text.length * 3);
    let r = encoder.encodeInto(text, tail.buf.subarray(tail.len + 14));
    if (r.read < text.length) {
      tail = this.#tail(14 + text.length * 3, true);
      r = encoder.encodeInto(text, tail.buf.subarray(tail.len + 14));
    }
    const hlen = headerLength(r.written);
    const start = tail.len;
    if (hlen < 14) tail.buf.copyWithin(start + hlen, start + 14, start + 14 + r.written);
    this.#commit(op, tail, r.written, hlen);
  }

  #frameBytes(op: number, payload: Uint8Array): void {
    const hlen = headerLength(payload.length);
    const tail = this.#tail(hlen + payload.length);
    tail.buf.set(payload, tail.len + hlen);
    this.#commit(op, tail, payload.length, hlen);
  }

  /** The block to append to, with at least `need` bytes free (a new one when `fresh`). */
  #tail(need: number, fresh = false): { buf: Uint8Array; len: number } {
    const last = this.#queue.at(-1);
    if (last && !fresh && last.buf.length - last.len >= need) return last;
    if (last && last.len === 0 && last.buf.length >= need) return last;
    const buf = need <= BLOCK ? this.#free.pop() ?? new Uint8Array(BLOCK) : new Uint8Array(need);
    const block = { buf, len: 0 };
    this.#queue.push(block);
    return block;
  }

  #commit(op: number, block: { buf: Uint8Array; len: number }, len: number, hlen: number): void {
    const out = block.buf;
    const start = block.len;
    out[start] = 0x80 | op;
    if (len < 126) {
      out[start + 1] = 0x80 | len;
    } else if (len < 65536) {
      out[start + 1] = 0x80 | 126;
      out[start + 2] = len >> 8;
      out[start + 3] = len & 0xff;
    } else {
      out[start + 1] = 0x80 | 127;
      out[start + 2] =
        out[start + 3] =
        out[start + 4] =
        out[start + 5] =
          0;
      out[start + 6] = (len >>> 24) & 0xff;
      out[start + 7] = (len >>> 16) & 0xff;
      out[start + 8] = (len >>> 8) & 0xff;
      out[start + 9] = len & 0xff;
    }
    const m = start + hlen - 4;
    masks.take(out, m);
    mask(out, start + hlen, start + hlen + len, m);
    block.len = start + hlen + len;
    this.queuedTotal += hlen + len;
    // Start writing after the frames queued in this same turn (other jobs' pieces that arrived
    // with this one): one socket write for all of them, and no timer, so no added latency.
    if (!this.#writer && !this.#writeScheduled) {
      this.#writeScheduled = true;
      queueMicrotask(() => {
        this.#writeScheduled = false;
        this.#writer ??= this.#writeLoop();
      });
    }
  }

  async #writeLoop(): Promise<void> {
    try {
      for (let block = this.#queue[0]; block && !this.#done; block = this.#queue[0]) {
        // The block leaves the queue as it is written: frames queued meanwhile start a new one.
        this.#queue.shift();
        const n = block.len;
        // Count progress per socket write, so a slow but live link shows it is moving.
        for (let off = 0; off < n;) {
          const w = await this.#conn.write(block.buf.subarray(off, n));
          off += w;
          this.flushedTotal += w;
          this.#wakeWaiters();
        }
        if (block.buf.length === BLOCK && this.#free.length < BLOCKS_KEPT) {
          this.#free.push(block.buf);
        }
      }
    } catch (err) {
      this.#finish({ code: 1006, reason: "write failed", closeFrame: false, error: err as Error });
    } finally {
      this.#writer = undefined;
    }
  }

  #wakeWaiters(): void {
    if (this.#waiters.length === 0) return;
    const flushed = this.flushedTotal;
    const still: FlushWaiter[] = [];
    for (const w of this.#waiters) w.pos <= flushed ? w.resolve() : still.push(w);
    this.#waiters = still;
  }

  async #readLoop(): Promise<void> {
    try {
      while (!this.#done) {
        this.#parse();
        if (this.#done || this.#peerClosed) return;
        if (this.#rbuf.length - this.#rend < READ_SIZE) this.#compact();
        const n = await this.#conn.read(this.#rbuf.subarray(this.#rend));
        if (n === null) {
          this.#finish({ code: 1006, reason: "", closeFrame: false });
          return;
        }
        this.lastInboundAt = performance.now();
        this.#rend += n;
      }
    } catch (err) {
      this.#finish({
        code: 1006,
        reason: this.#closeSent ? "" : "read failed",
        closeFrame: false,
        error: err as Error,
      });
    }
  }

  #compact(): void {
    const live = this.#rend - this.#rstart;
    if (this.#rstart > 0) {
      this.#rbuf.copyWithin(0, this.#rstart, this.#rend);
      this.#rstart = 0;
      this.#rend = live;
    }
    if (this.#rbuf.length - this.#rend < READ_SIZE) {
      const next = new Uint8Array(Math.max(this.#rbuf.length * 2, live + READ_SIZE));
      next.set(this.#rbuf.subarray(0, live));
      this.#rbuf = next;
    } else if (this.#rbuf.length > 4 * READ_SIZE && live < READ_SIZE) {
      this.#rbuf = this.#rbuf.slice(0, READ_SIZE * 2); // give back a large buffer
    }
  }

  #protocolError(reason: string): void {
    if (!this.#closeSent) {
      this.#frameBytes(OP_CLOSE, new Uint8Array([1002 >> 8, 1002 & 0xff]));
      this.#closeSent = true;
    }
    this.#finish({ code: 1002, reason, closeFrame: false });
  }

  /** Consumes every complete frame in the read buffer. */
  #parse(): void {
    const b = this.#rbuf;
    for (;;) {
      if (this.#skipRemaining > 0) {
        const n = Math.min(this.#skipRemaining, this.#rend - this.#rstart);
        this.#rstart += n;
        this.#skipRemaining -= n;
        if (this.#skipRemaining > 0) return;
      }
      if (this.#emitAfterSkip) {
        const size = this.#discardTotal;
        this.#emitAfterSkip = false;
        this.#discarding = false;
        this.#discardTotal = 0;
        this.#emit({ kind: "oversized", size });
      }
      const avail = this.#rend - this.#rstart;
      if (avail < 2) return;
      const s = this.#rstart;
      const b0 = b[s]!, b1 = b[s + 1]!;
      const fin = (b0 & 0x80) !== 0;
      const op = b0 & 0x0f;
      if ((b0 & 0x70) !== 0) return this.#protocolError("reserved bits set");
      if ((b1 & 0x80) !== 0) return this.#protocolError("masked frame from the server");
      let len = b1 & 0x7f;
      let hlen = 2;
      if (len === 126) {
        if (avail < 4) return;
        len = (b[s + 2]! << 8) | b[s + 3]!;
        hlen = 4;
      } else if (len === 127) {
        if (avail < 10) return;
        const hi = ((b[s + 2]! << 24) | (b[s + 3]! << 16) | (b[s + 4]! << 8) | b[s + 5]!) >>> 0;
        const lo = ((b[s + 6]! << 24) | (b[s + 7]! << 16) | (b[s + 8]! << 8) | b[s + 9]!) >>> 0;
        if (hi > 0x1fffff) return this.#protocolError("frame length out of range");
        len = hi * 2 ** 32 + lo;
        hlen = 10;
      }
      if (op >= 8) {
        if (op !== OP_CLOSE && op !== OP_PING && op !== OP_PONG) {
          return this.#protocolError(`unknown opcode ${op}`);
        }
        if (!fin || len > 125) return this.#protocolError("bad control frame");
        if (avail < hlen + len) return;
        const payload = b.slice(s + hlen, s + hlen + len);
        this.#rstart = s + hlen + len;
        this.#control(op, payload);
        if (this.#done || this.#peerClosed) return;
        continue;
      }
      const inMessage = this.#fragmentOp !== 0 || this.#discarding;
      if (op === OP_CONT ? !inMessage : inMessage) {
        return this.#protocolError(op === OP_CONT ? "stray continuation" : "interleaved message");
      }
      if (op !== OP_CONT && op !== OP_TEXT && op !== OP_BIN) {
        return this.#protocolError(`unknown opcode ${op}`);
      }
      const total = (op === OP_CONT ? this.#fragmentSize + this.#discardTotal : 0) + len;
      if (this.#discarding || total > this.#maxMessage) {
        this.#rstart = s + hlen;
        this.#skipRemaining = len;
        this.#emitAfterSkip = fin;
        this.#discarding = true;
        this.#discardTotal = total;
        this.#fragments = [];
        this.#fragmentSize = 0;
        this.#fragmentOp = 0;
        continue;
      }
      if (avail < hlen + len) {
        if (b.length - s < hlen + len) this.#compactFor(hlen + len);
        return;
      }
      const payload = b.subarray(s + hlen, s + hlen + len);
      this.#rstart = s + hlen + len;
      if (!fin) {
        this.#fragments.push(payload.slice());
        this.#fragmentSize = total;
        this.#fragmentOp ||= op;
        continue;
      }
      if (op !== OP_CONT) {
        this.#deliver(op, payload);
        continue;
      }
      this.#fragments.push(payload);
      const whole = concatBytes(this.#fragments);
      const messageOp = this.#fragmentOp;
      this.#fragments = [];
      this.#fragmentSize = 0;
      this.#fragmentOp = 0;
      this.#deliver(messageOp, whole);
    }
  }

  /** Makes room for a frame of `need` bytes that is bigger than the buffer. */
  #compactFor(need: number): void {
    const live = this.#rend - this.#rstart;
    const next = new Uint8Array(Math.max(need + READ_SIZE, this.#rbuf.length));
    next.set(this.#rbuf.subarray(this.#rstart, this.#rend));
    this.#rbuf = next;
    this.#rstart = 0;
    this.#rend = live;
  }

  #deliver(op: number, payload: Uint8Array): void {
    if (op === OP_BIN) return this.#emit({ kind: "binary", size: payload.length });
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(payload);
    } catch {
      return this.#emit({ kind: "invalid_utf8", size: payload.length });
    }
    this.#emit({ kind: "text", text });
  }

  #control(op: number, payload: Uint8Array): void {
    if (op === OP_PING) {
      if (!this.#closeSent) this.#frameBytes(OP_PONG, payload);
    } else if (op === OP_CLOSE) {
      const code = payload.length >= 2 ? (payload[0]! << 8) | payload[1]! : 1005;
      const reason = payload.length > 2 ? new TextDecoder().decode(payload.subarray(2)) : "";
      this.#peerClosed = true;
      const info: WsClose = { code, reason, closeFrame: true };
      if (this.#closeSent) {
        this.#finish(info);
        return;
      }
      // Echo the Close, let it flush, then drop the socket.
      this.#frameBytes(OP_CLOSE, payload.subarray(0, Math.min(payload.length, 2)));
      this.#closeSent = true;
      const waiter = this.#eventWaiter;
      this.#eventWaiter = undefined;
      waiter?.(null);
      const timer = setTimeout(() => this.#finish(info), CLOSE_WAIT_MS);
      void this.waitFlushed(this.queuedTotal).then(() => {
        clearTimeout(timer);
        this.#finish(info);
      });
    }
    // Pongs only refresh lastInboundAt, which the read loop already did.
  }
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * XORs `buf[from..to)` with the 4-byte key at `buf[key..key+4)` (RFC 6455 §5.3), a 32-bit word
 * at a time over the aligned middle.
 */
export function mask(buf: Uint8Array, from: number, to: number, key: number): void {
  const k = [buf[key]!, buf[key + 1]!, buf[key + 2]!, buf[key + 3]!];
  let i = from;
  // Bytes up to a 4-byte boundary of the underlying buffer.
  const abs = buf.byteOffset + i;
  const lead = LITTLE_ENDIAN && to - from >= 32 ? (4 - (abs & 3)) & 3 : to - from;
  for (const stop = Math.min(to, i + lead); i < stop; i++) buf[i] = buf[i]! ^ k[(i - from) & 3]!;
  if (i < to) {
    const r = (i - from) & 3;
    const word = (k[r]! | (k[(r + 1) & 3]! << 8) | (k[(r + 2) & 3]! << 16) |
      (k[(r + 3) & 3]! << 24)) | 0;
    const words = (to - i) >> 2;
    const w32 = new Int32Array(buf.buffer, buf.byteOffset + i, words);
    for (let j = 0; j < words; j++) w32[j] = w32[j]! ^ word;
    i += words * 4;
    for (; i < to; i++) buf[i] = buf[i]! ^ k[(i - from) & 3]!;
  }
}

function headerLength(len: number): number {
  return (len < 126 ? 2 : len < 65536 ? 4 : 10) + 4;
}
