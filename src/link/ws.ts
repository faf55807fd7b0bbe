// A WebSocket client (RFC 6455) over Deno.connect / Deno.connectTls, owning the socket to
// the coordinator. Built instead of the runtime's WebSocket for what the agent must see:
// real send backpressure (writes wait on the socket), inbound ping/pong (dead-link
// detection), frame sizes before buffering (PROTOCOL §4), and coalesced writes.

import { concatBytes } from "../bytes.ts";
import { dialWebSocket, type WsConnectOptions } from "./handshake.ts";
import { MAX_FRAME_BYTES } from "./protocol.ts";
import { FrameWriter, OP_BIN, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT } from "./writer.ts";

export { HandshakeError, type WsConnectOptions } from "./handshake.ts";

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

/** Pongs queued but not yet written beyond which a ping gets no pong (a ping flood's bound). */
export const MAX_UNSENT_PONGS = 256;
const READ_SIZE = 64 * 1024;
const CLOSE_WAIT_MS = 1000;
const encoder = new TextEncoder();

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
  const { conn, leftover } = await dialWebSocket(opts);
  return new WsClient(conn, leftover, opts.maxMessageBytes ?? MAX_FRAME_BYTES);
}

/**
 * One open WebSocket. Reads are pulled with {@link WsClient.next}; sends are queued,
 * coalesced and written in order, and `bufferedAmount` counts bytes not yet accepted by
 * the socket (so a peer that stops reading shows up here, not as unbounded memory).
 */
export class WsClient {
  /** performance.now() of the last inbound byte (any frame, pongs included). */
  lastInboundAt = performance.now();
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
  /** Where each pong not yet sent ends (in queuedTotal), oldest first. */
  #pongEnds: number[] = [];

  #out: FrameWriter;
  #reader: Promise<void>;

  constructor(conn: Deno.Conn, leftover: Uint8Array, maxMessage: number) {
    this.#conn = conn;
    this.#out = new FrameWriter(conn, (error) => {
      this.#finish({ code: 1006, reason: "write failed", closeFrame: false, error });
    });
    this.#maxMessage = maxMessage;
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    this.#rbuf.set(leftover);
    this.#rend = leftover.length;
    this.#reader = this.#readLoop();
  }

  /** Bytes ever queued / ever written; their difference is the backlog. */
  get queuedTotal(): number {
    return this.#out.queuedTotal;
  }
  get flushedTotal(): number {
    return this.#out.flushedTotal;
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
    this.#out.text(OP_TEXT, text);
    return true;
  }

  /** Queues a ping (the coordinator's pong proves the link is alive). */
  ping(): void {
    if (this.open) this.#out.bytes(OP_PING, new Uint8Array(0));
  }

  /** Resolves once every byte queued up to `pos` is written, or the connection ended. */
  waitFlushed(pos: number): Promise<void> {
    return this.#out.waitFlushed(pos);
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
      this.#out.bytes(OP_CLOSE, payload);
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
    await Promise.allSettled([this.#reader, this.#out.writing]);
  }

  // -------------------------------------------------------------------------

  #finish(c: WsClose): void {
    if (this.#done) return;
    this.#done = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#out.stop();
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
      this.#out.bytes(OP_CLOSE, new Uint8Array([1002 >> 8, 1002 & 0xff]));
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
      // A peer that pings without reading cannot grow the queue: with MAX_UNSENT_PONGS pongs
      // still unsent, later pings get none (RFC 6455 §5.5.3 lets an endpoint skip pongs).
      const ends = this.#pongEnds;
      while (ends.length > 0 && ends[0]! <= this.#out.flushedTotal) ends.shift();
      if (!this.#closeSent && ends.length < MAX_UNSENT_PONGS) {
        this.#out.bytes(OP_PONG, payload);
        ends.push(this.#out.queuedTotal);
      }
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
      this.#out.bytes(OP_CLOSE, payload.subarray(0, Math.min(payload.length, 2)));
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
