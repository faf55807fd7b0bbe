// A hand-written WebSocket server (RFC 6455) on Deno.listen, 127.0.0.1, for the frames Deno's
// own server never sends: fragments, masked server frames, reserved bits, unknown opcodes,
// huge length headers, pings, Close without payload, TCP end without Close, bad handshakes.
// Each connection is handed to a test-written handler that reads and writes raw frames.

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const encoder = new TextEncoder();

export const OP = { cont: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

/** One frame as it came off the wire (payload already unmasked). */
export interface RawFrame {
  fin: boolean;
  /** The three reserved bits, as a number 0..7. */
  rsv: number;
  opcode: number;
  masked: boolean;
  maskKey: Uint8Array | undefined;
  payload: Uint8Array;
}

export interface FrameSpec {
  opcode: number;
  payload?: Uint8Array | string;
  fin?: boolean;
  /** Reserved bits 0..7 (RSV1 = 4). */
  rsv?: number;
  /** Mask the payload with this key (servers must not). */
  mask?: Uint8Array;
  /** Announce this payload length instead of the real one (the payload is still written). */
  length?: number;
}

/**
 * Encodes one frame.
 *
 * @example
 * ```ts
 * peer.write(encodeFrame({ opcode: OP.text, payload: "hi", fin: false }));
 * ```
 */
export function encodeFrame(spec: FrameSpec): Uint8Array {
  const payload = typeof spec.payload === "string"
    ? encoder.encode(spec.payload)
    : spec.payload ?? new Uint8Array(0);
  const len = spec.length ?? payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const maskLen = spec.mask ? 4 : 0;
  const out = new Uint8Array(2 + ext + maskLen + payload.length);
  out[0] = ((spec.fin ?? true) ? 0x80 : 0) | ((spec.rsv ?? 0) << 4) | spec.opcode;
  const maskBit = spec.mask ? 0x80 : 0;
  if (ext === 0) out[1] = maskBit | len;
  else if (ext === 2) {
    out[1] = maskBit | 126;
    out[2] = len >> 8;
    out[3] = len & 0xff;
  } else {
    out[1] = maskBit | 127;
    const view = new DataView(out.buffer);
    view.setBigUint64(2, BigInt(len));
  }
  let at = 2 + ext;
  if (spec.mask) {
    out.set(spec.mask, at);
    at += 4;
  }
  out.set(payload, at);
  if (spec.mask) {
    for (let i = 0; i < payload.length; i++) out[at + i] = out[at + i]! ^ spec.mask[i % 4]!;
  }
  return out;
}

/** A Close payload: the code in network order, then the UTF-8 reason. */
export function closePayload(code: number, reason = ""): Uint8Array {
  const r = encoder.encode(reason);
  const p = new Uint8Array(2 + r.length);
  p[0] = code >> 8;
  p[1] = code & 0xff;
  p.set(r, 2);
  return p;
}

/** The Sec-WebSocket-Accept value for a Sec-WebSocket-Key. */
export async function acceptKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", encoder.encode(key + GUID));
  return new Uint8Array(digest).toBase64();
}

/** One accepted TCP connection, seen from the server. */
export class RawPeer {
  readonly conn: Deno.Conn;
  /** The client's request head, once read. */
  requestHead = "";
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;
  #closed = false;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  /** True once {@link close} ran (reads then end with null). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Reads the HTTP request head (up to the blank line); null when the client went away. */
  async readRequestHead(): Promise<string | null> {
    for (;;) {
      const view = this.#buf.subarray(this.#start, this.#end);
      for (let i = 0; i + 3 < view.length; i++) {
        if (view[i] === 13 && view[i + 1] === 10 && view[i + 2] === 13 && view[i + 3] === 10) {
          this.requestHead = new TextDecoder().decode(view.subarray(0, i + 4));
          this.#start += i + 4;
          return this.requestHead;
        }
      }
      if (!(await this.#fill())) return null;
    }
  }

  /** A request header (case-insensitive name) from the head. */
  header(name: string): string | undefined {
    for (const line of this.requestHead.split("\r\n").slice(1)) {
      const i = line.indexOf(":");
      if (i > 0 && line.slice(0, i).trim().toLowerCase() === name.toLowerCase()) {
        return line.slice(i + 1).trim();
      }
    }
    return undefined;
  }

  /**
   * Reads the request and answers 101 with the right accept key; `after` bytes are written
   * in the same write as the answer (frames that arrive with the handshake).
   */
  async accept(after?: Uint8Array): Promise<void> {
    if ((await this.readRequestHead()) === null) throw new Error("client left before the request");
    const key = this.header("sec-websocket-key") ?? "";
    const head = encoder.encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n\r\n`,
    );
    if (!after) return await this.write(head);
    const both = new Uint8Array(head.length + after.length);
    both.set(head);
    both.set(after, head.length);
    await this.write(both);
  }

  /** Reads one client frame and unmasks it; null at end of stream. */
  async readFrame(): Promise<RawFrame | null> {
    if (!(await this.#need(2))) return null;
    const b0 = this.#buf[this.#start]!, b1 = this.#buf[this.#start + 1]!;
    const masked = (b1 & 0x80) !== 0;
    let len = b1 & 0x7f;
    let hlen = 2;
    if (len === 126) {
      if (!(await this.#need(4))) return null;
      len = (this.#buf[this.#start + 2]! << 8) | this.#buf[this.#start + 3]!;
      hlen = 4;
    } else if (len === 127) {
      if (!(await this.#need(10))) return null;
      const view = new DataView(this.#buf.buffer, this.#start + 2, 8);
      len = Number(view.getBigUint64(0));
      hlen = 10;
    }
    if (masked) hlen += 4;
    if (!(await this.#need(hlen + len))) return null;
    const s = this.#start;
    const maskKey = masked ? this.#buf.slice(s + hlen - 4, s + hlen) : undefined;
    const payload = this.#buf.slice(s + hlen, s + hlen + len);
    if (maskKey) {
      for (let i = 0; i < payload.length; i++) payload[i] = payload[i]! ^ maskKey[i & 3]!;
    }
    this.#start += hlen + len;
    return {
      fin: (b0 & 0x80) !== 0,
      rsv: (b0 >> 4) & 0x7,
      opcode: b0 & 0x0f,
      masked,
      maskKey,
      payload,
    };
  }

  /** Reads frames until one that is not a ping/pong (those are returned only when asked). */
  async readDataOrClose(): Promise<RawFrame | null> {
    for (;;) {
      const f = await this.readFrame();
      if (f === null || (f.opcode !== OP.ping && f.opcode !== OP.pong)) return f;
    }
  }

  /** Writes bytes fully. */
  async write(data: Uint8Array): Promise<void> {
    let off = 0;
    while (off < data.length) off += await this.conn.write(data.subarray(off));
  }

  /** Encodes and writes one frame. */
  async send(spec: FrameSpec): Promise<void> {
    await this.write(encodeFrame(spec));
  }

  /** Writes bytes one at a time (exercises partial header parsing). */
  async dribble(data: Uint8Array): Promise<void> {
    for (let i = 0; i < data.length; i++) await this.write(data.subarray(i, i + 1));
  }

  /** Ends the TCP connection (no Close frame). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }

  /** Reads until the client closes the TCP connection; returns the bytes that came. */
  async drain(): Promise<number> {
    let n = this.#end - this.#start;
    this.#start = this.#end = 0;
    while (await this.#fill()) {
      n += this.#end - this.#start;
      this.#start = this.#end = 0;
    }
    return n;
  }

  async #need(n: number): Promise<boolean> {
    while (this.#end - this.#start < n) {
      if (!(await this.#fill())) return false;
    }
    return true;
  }

  async #fill(): Promise<boolean> {
    if (this.#closed) return false;
    if (this.#buf.length - this.#end < 64 * 1024) {
      const live = this.#end - this.#start;
      if (this.#buf.length - live >= 64 * 1024) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        const next = new Uint8Array(Math.max(this.#buf.length * 2, live + 64 * 1024));
        next.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = next;
      }
      this.#start = 0;
      this.#end = live;
    }
    let n: number | null;
    try {
      n = await this.conn.read(this.#buf.subarray(this.#end));
    } catch (err) {
      if (this.#closed) return false;
      if (err instanceof Deno.errors.ConnectionReset || err instanceof Deno.errors.BadResource) {
        return false;
      }
      throw err;
    }
    if (n === null) return false;
    this.#end += n;
    return true;
  }
}

/** A running raw server. */
export interface RawServer {
  readonly port: number;
  /** `ws://127.0.0.1:PORT/` */
  readonly url: URL;
  /** Connections accepted so far. */
  readonly peers: RawPeer[];
  /**
   * Stops listening, ends every connection and waits for the handlers; rethrows the first
   * handler error (so assertions made inside a handler fail the test).
   */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Listens on 127.0.0.1 and runs `handler` for each connection. The handler owns the handshake
 * (`peer.accept()` for a normal one); the connection is closed when the handler returns.
 *
 * @example
 * ```ts
 * await using server = startRawServer(async (peer) => {
 *   await peer.accept();
 *   await peer.send({ opcode: OP.text, payload: "hello" });
 * });
 * ```
 */
export function startRawServer(handler: (peer: RawPeer) => Promise<void>): RawServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
  const peers: RawPeer[] = [];
  const handlers: Promise<void>[] = [];
  const errors: unknown[] = [];
  const accepting = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return; // listener closed
      }
      const peer = new RawPeer(conn);
      peers.push(peer);
      handlers.push(
        handler(peer).catch((err) => {
          if (!peer.closed) errors.push(err);
        }).finally(() => peer.close()),
      );
    }
  })();
  const port = (listener.addr as Deno.NetAddr).port;
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      listener.close();
      await accepting;
      for (const p of peers) p.close();
      await Promise.all(handlers);
      if (errors.length > 0) throw errors[0];
    })();
    return closing;
  };
  return {
    port,
    url: new URL(`ws://127.0.0.1:${port}/`),
    peers,
    close,
    [Symbol.asyncDispose]: close,
  };
}
