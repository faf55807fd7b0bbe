// Incremental SHA-256 (FIPS 180-4) in plain TypeScript, for the hash of a job's relayed bytes
// in its receipt. WebCrypto has no incremental digest, and node:crypto costs the agent ~10 MB
// of resident memory at start-up for this one use; this costs nothing until used.

const K = new Int32Array([
  0x428a2f98,
  0x71374491,
  0xb5c0fbcf,
  0xe9b5dba5,
  0x3956c25b,
  0x59f111f1,
  0x923f82a4,
  0xab1c5ed5,
  0xd807aa98,
  0x12835b01,
  0x243185be,
  0x550c7dc3,
  0x72be5d74,
  0x80deb1fe,
  0x9bdc06a7,
  0xc19bf174,
  0xe49b69c1,
  0xefbe4786,
  0x0fc19dc6,
  0x240ca1cc,
  0x2de92c6f,
  0x4a7484aa,
  0x5cb0a9dc,
  0x76f988da,
  0x983e5152,
  0xa831c66d,
  0xb00327c8,
  0xbf597fc7,
  0xc6e00bf3,
  0xd5a79147,
  0x06ca6351,
  0x14292967,
  0x27b70a85,
  0x2e1b2138,
  0x4d2c6dfc,
  0x53380d13,
  0x650a7354,
  0x766a0abb,
  0x81c2c92e,
  0x92722c85,
  0xa2bfe8a1,
  0xa81a664b,
  0xc24b8b70,
  0xc76c51a3,
  0xd192e819,
  0xd6990624,
  0xf40e3585,
  0x106aa070,
  0x19a4c116,
  0x1e376c08,
  0x2748774c,
  0x34b0bcb5,
  0x391c0cb3,
  0x4ed8aa4a,
  0x5b9cca4f,
  0x682e6ff3,
  0x748f82ee,
  0x78a5636f,
  0x84c87814,
  0x8cc70208,
  0x90befffa,
  0xa4506ceb,
  0xbef9a3f7,
  0xc67178f2,
]);
const W = new Int32Array(64);

/**
 * A running SHA-256 over pieces of a stream.
 *
 * @example
 * ```ts
 * const h = new Sha256();
 * h.update(new TextEncoder().encode("ab"));
 * h.update(new TextEncoder().encode("c"));
 * h.hex(); // "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
 * ```
 */
export class Sha256 {
  #h = new Int32Array([
    0x6a09e667,
    0xbb67ae85,
    0x3c6ef372,
    0xa54ff53a,
    0x510e527f,
    0x9b05688c,
    0x1f83d9ab,
    0x5be0cd19,
  ]);
  #block = new Uint8Array(64);
  #fill = 0;
  #length = 0;
  #done = false;

  /** Adds bytes; any split of the same stream gives the same digest. */
  update(data: Uint8Array): this {
    if (this.#done) throw new TypeError("Sha256: update after digest");
    this.#length += data.length;
    let i = 0;
    if (this.#fill > 0) {
      const take = Math.min(64 - this.#fill, data.length);
      this.#block.set(data.subarray(0, take), this.#fill);
      this.#fill += take;
      i = take;
      if (this.#fill < 64) return this;
      compress(this.#h, this.#block, 0);
      this.#fill = 0;
    }
    for (; i + 64 <= data.length; i += 64) compress(this.#h, data, i);
    if (i < data.length) {
      this.#block.set(data.subarray(i), 0);
      this.#fill = data.length - i;
    }
    return this;
  }

  /** The 32-byte digest (the hash cannot be updated afterwards). */
  digest(): Uint8Array {
    if (!this.#done) {
      this.#done = true;
      const bits = this.#length * 8;
      const b = this.#block;
      b[this.#fill++] = 0x80;
      if (this.#fill > 56) {
        b.fill(0, this.#fill);
        compress(this.#h, b, 0);
        this.#fill = 0;
      }
      b.fill(0, this.#fill, 56);
      const hi = Math.floor(bits / 2 ** 32);
      b[56] = hi >>> 24, b[57] = hi >>> 16, b[58] = hi >>> 8, b[59] = hi;
      b[60] = bits >>> 24, b[61] = bits >>> 16, b[62] = bits >>> 8, b[63] = bits;
      compress(this.#h, b, 0);
    }
    const out = new Uint8Array(32);
    for (let i = 0; i < 8; i++) {
      const v = this.#h[i]!;
      out[i * 4] = v >>> 24,
        out[i * 4 + 1] = v >>> 16,
        out[i * 4 + 2] = v >>> 8,
        out[i * 4 + 3] = v;
    }
    return out;
  }

  /** The digest as lowercase hex. */
  hex(): string {
    return this.digest().toHex();
  }
}

function compress(h: Int32Array, p: Uint8Array, o: number): void {
  let a = h[0]!, b = h[1]!, c = h[2]!, d = h[3]!, e = h[4]!, f = h[5]!, g = h[6]!, k = h[7]!;
  for (let t = 0; t < 64; t++) {
    let w: number;
    if (t < 16) {
      const i = o + t * 4;
      w = (p[i]! << 24) | (p[i + 1]! << 16) | (p[i + 2]! << 8) | p[i + 3]!;
    } else {
      const w15 = W[(t - 15) & 15]!, w2 = W[(t - 2) & 15]!;
      const s0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
      const s1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
      w = (W[t & 15]! + s0 + W[(t - 7) & 15]! + s1) | 0;
    }
    W[t & 15] = w;
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (k + S1 + ((e & f) ^ (~e & g)) + K[t]! + w) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    k = g, g = f, f = e, e = (d + t1) | 0, d = c, c = b, b = a, a = (t1 + t2) | 0;
  }
  h[0] = (h[0]! + a) | 0, h[1] = (h[1]! + b) | 0, h[2] = (h[2]! + c) | 0, h[3] = (h[3]! + d) | 0;
  h[4] = (h[4]! + e) | 0, h[5] = (h[5]! + f) | 0, h[6] = (h[6]! + g) | 0, h[7] = (h[7]! + k) | 0;
}
