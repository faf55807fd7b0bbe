// The outbound side of the WebSocket client (RFC 6455 §5): frames encoded and masked straight
// into reusable blocks, queued in order and written one block per socket write, with counters
// of bytes queued and written (the link's real backpressure) and waiters on a written position.

export const OP_CONT = 0x0, OP_TEXT = 0x1, OP_BIN = 0x2;
export const OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xa;

/**
 * Outbound frames are written into blocks of this size, queued in order and written one block
 * per socket write; a frame larger than a block gets a block of its own. Memory follows the
 * backlog (no doubling of one big buffer), and a few written blocks are kept for reuse.
 */
const BLOCK = 256 * 1024;
const BLOCKS_KEPT = 4;
const encoder = new TextEncoder();

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

interface FlushWaiter {
  pos: number;
  resolve: () => void;
}

/** The frame queue of one connection; `onError` ends the connection when a write fails. */
export class FrameWriter {
  /** Bytes ever queued / ever written; their difference is the backlog. */
  queuedTotal = 0;
  flushedTotal = 0;

  #conn: Deno.Conn;
  #onError: (err: Error) => void;
  #stopped = false;
  /** Blocks holding frames not yet written, oldest first; the last one is being filled. */
  #queue: { buf: Uint8Array; len: number }[] = [];
  #free: Uint8Array[] = [];
  #writer: Promise<void> | undefined;
  #writeScheduled = false;
  #waiters: FlushWaiter[] = [];

  constructor(conn: Deno.Conn, onError: (err: Error) => void) {
    this.#conn = conn;
    this.#onError = onError;
  }

  /** The running write loop, if any (for settling). */
  get writing(): Promise<void> | undefined {
    return this.#writer;
  }

  /** Resolves once every byte queued up to `pos` is written, or the writer stopped. */
  waitFlushed(pos: number): Promise<void> {
    if (this.flushedTotal >= pos || this.#stopped) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ pos, resolve }));
  }

  /** Stops writing and releases every waiter (the connection ended). */
  stop(): void {
    this.#stopped = true;
    for (const w of this.#waiters) w.resolve();
    this.#waiters = [];
  }

  /** Queues a frame with a text payload. */
  text(op: number, text: string): void {
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

  /** Queues a frame with a binary payload (control frames). */
  bytes(op: number, payload: Uint8Array): void {
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
      for (let block = this.#queue[0]; block && !this.#stopped; block = this.#queue[0]) {
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
      this.#onError(err as Error);
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
