// HTTP/1.1 chunked transfer coding (RFC 9112 §7.1) decoded incrementally and in place, for the
// raw client of http1.ts: chunk sizes, extensions and trailers are parsed and dropped byte by byte.

const CR = 13, LF = 10, SP = 32, HT = 9, SEMI = 59;
// Chunked decoder states.
const SIZE = 0, SIZE_WS = 1, EXT = 2, SIZE_LF = 3, DATA = 4, DATA_CR = 5, DATA_LF = 6;
const TRAILER = 7, TRAILER_LINE = 8, END_LF = 9, DONE = 10;

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  const lower = c | 0x20;
  return lower >= 97 && lower <= 102 ? lower - 87 : -1;
}

/**
 * The decoding state of one chunked body, fed the bytes as they arrive.
 *
 * @example
 * ```ts
 * const d = new ChunkedDecoder();
 * const buf = new TextEncoder().encode("5\r\nhello\r\n0\r\n\r\n");
 * const n = d.decode(buf, 0, buf.length); // 5: buf.subarray(0, n) is "hello"
 * d.done; // true
 * ```
 */
export class ChunkedDecoder {
  #state = SIZE;
  /** Data bytes left in the current chunk, or the chunk size being read. */
  #left = 0;
  #digits = 0;
  /** Bytes of the last `decode` input left after the end of the body (0 while it goes on). */
  unread = 0;

  /** The terminating chunk and the trailer section have been read. */
  get done(): boolean {
    return this.#state === DONE;
  }

  /**
   * Decodes `b[r, end)` in place: the data bytes among them are compacted to the front of `b`;
   * returns their count. Bytes after the end of the body are ignored.
   *
   * @throws {SyntaxError} naming what is malformed ("bad chunk size", …); the body is then lost.
   */
  decode(b: Uint8Array, r: number, end: number): number {
    let w = 0, st = this.#state, left = this.#left, digits = this.#digits;
    while (r < end && st !== DONE) {
      if (st === DATA) {
        const n = Math.min(left, end - r);
        if (w !== r) b.copyWithin(w, r, r + n);
        w += n;
        r += n;
        left -= n;
        if (left === 0) st = DATA_CR;
        continue;
      }
      const c = b[r++]!;
      switch (st) {
        case SIZE: {
          const v = hexValue(c);
          if (v >= 0 && left <= 0xfffffffffff) {
            left = left * 16 + v;
            digits++;
            continue;
          }
          if (digits === 0 || v >= 0) throw new SyntaxError("bad chunk size");
          st = SIZE_WS;
        }
        // falls through: c is the first byte after the size digits
        case SIZE_WS:
          if (c === SP || c === HT) continue;
          if (c !== SEMI && c !== CR && c !== LF) throw new SyntaxError("bad chunk size line");
        // falls through
        case EXT:
          if (c === CR) st = SIZE_LF;
          else if (c !== LF) st = EXT;
          else {
            st = left === 0 ? TRAILER : DATA;
            digits = 0;
          }
          continue;
        case SIZE_LF:
          if (c !== LF) throw new SyntaxError("bad chunk size line");
          st = left === 0 ? TRAILER : DATA;
          digits = 0;
          continue;
        case DATA_CR:
          if (c === CR) st = DATA_LF;
          else if (c === LF) st = SIZE;
          else throw new SyntaxError("missing CRLF after chunk data");
          continue;
        case DATA_LF:
          if (c !== LF) throw new SyntaxError("missing CRLF after chunk data");
          st = SIZE;
          continue;
        case TRAILER:
          st = c === CR ? END_LF : c === LF ? DONE : TRAILER_LINE;
          continue;
        case TRAILER_LINE:
          if (c === LF) st = TRAILER;
          continue;
        case END_LF:
          if (c !== LF) throw new SyntaxError("bad end of chunked body");
          st = DONE;
          continue;
      }
    }
    this.#state = st;
    this.#left = left;
    this.#digits = digits;
    this.unread = end - r;
    return w;
  }
}
