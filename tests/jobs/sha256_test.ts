// The incremental SHA-256 (src/jobs/sha256.ts) against WebCrypto's, for lengths around the block and
// padding boundaries and for every way of splitting the input.

import assert from "node:assert/strict";
import fc from "fast-check";
import { Sha256 } from "../../src/jobs/sha256.ts";

async function reference(data: Uint8Array<ArrayBuffer>): Promise<string> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data)).toHex();
}

Deno.test("the digest matches WebCrypto's at block and padding boundaries", async () => {
  for (const n of [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 65536]) {
    const data = crypto.getRandomValues(new Uint8Array(n));
    assert.equal(new Sha256().update(data).hex(), await reference(data), `length ${n}`);
  }
  assert.equal(
    new Sha256().update(new TextEncoder().encode("abc")).hex(),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("any split of the input gives the same digest", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ maxLength: 700 }),
      fc.array(fc.nat({ max: 700 }), { maxLength: 12 }),
      async (bytes, cuts) => {
        const data = new Uint8Array(bytes);
        const h = new Sha256();
        let at = 0;
        for (const c of [...cuts].sort((a, b) => a - b)) {
          const to = Math.min(c, data.length);
          if (to < at) continue;
          h.update(data.subarray(at, to));
          at = to;
        }
        h.update(data.subarray(at));
        assert.equal(h.hex(), await reference(data));
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("a finished hash refuses more input", () => {
  const h = new Sha256();
  h.hex();
  assert.throws(() => h.update(new Uint8Array(1)), TypeError);
  assert.equal(h.hex(), new Sha256().hex(), "digest is stable");
});
