// RFC 6455 masking (src/link/writer.ts `mask`): the word-at-a-time XOR equals the byte-wise definition
// for every length, buffer offset and alignment.

import assert from "node:assert/strict";
import fc from "fast-check";
import { mask } from "../../src/link/writer.ts";

function byteWise(buf: Uint8Array, from: number, to: number, key: number): void {
  for (let i = from; i < to; i++) buf[i] = buf[i]! ^ buf[key + ((i - from) & 3)]!;
}

Deno.test("masking a word at a time equals the byte-wise definition at any offset", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 4, maxLength: 400 }),
      fc.nat({ max: 7 }),
      fc.nat({ max: 9 }),
      (bytes, viewOffset, from0) => {
        const a = new Uint8Array(bytes.length + 16);
        a.set(bytes, 8);
        const b = a.slice();
        const va = new Uint8Array(a.buffer, viewOffset);
        const vb = new Uint8Array(b.buffer, viewOffset);
        const from = Math.min(4 + from0, va.length);
        mask(va, from, va.length, 0);
        byteWise(vb, from, vb.length, 0);
        assert.deepEqual(a, b);
      },
    ),
    { numRuns: 500 },
  );
});
