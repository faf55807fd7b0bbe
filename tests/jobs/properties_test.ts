// Property tests (fast-check) added by issue 6 beside those in protocol_test, usage_test and
// config_test: the WebSocket frame parser of ws.ts under any TCP segmentation and any bytes, and
// config validation for arbitrary TOML documents (any tables, keys and values).

import assert from "node:assert/strict";
import fc from "fast-check";
import { stringify } from "smol-toml";
import { ConfigError, parseConfig } from "../../src/config/config.ts";
import { setSink } from "../../src/log.ts";
import { WsClient, type WsEvent } from "../../src/link/ws.ts";
import { encodeFrame, OP } from "../harness/raw_ws_server.ts";

// ---- the WebSocket frame parser ----------------------------------------------------------------

/** A socket that hands the client `segments` one read at a time, then the end of the stream. */
class ScriptedConn {
  readonly written: Uint8Array[] = [];
  #segments: Uint8Array[];
  constructor(segments: Uint8Array[]) {
    this.#segments = segments;
  }
  read(into: Uint8Array): Promise<number | null> {
    const next = this.#segments.shift();
    if (next === undefined) return Promise.resolve(null);
    const n = Math.min(next.length, into.length);
    into.set(next.subarray(0, n));
    if (n < next.length) this.#segments.unshift(next.subarray(n));
    return Promise.resolve(n);
  }
  write(data: Uint8Array): Promise<number> {
    this.written.push(data.slice());
    return Promise.resolve(data.length);
  }
  close(): void {}
}

/** Opcodes of the frames a client wrote (unmasking not needed for that). */
function clientOpcodes(chunks: Uint8Array[]): number[] {
  const b = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) b.set(c, off), off += c.length;
  const ops: number[] = [];
  for (let i = 0; i + 2 <= b.length;) {
    let len = b[i + 1]! & 0x7f, h = 2;
    if (len === 126) len = (b[i + 2]! << 8) | b[i + 3]!, h = 4;
    else if (len === 127) len = Number(new DataView(b.buffer, i + 2, 8).getBigUint64(0)), h = 10;
    ops.push(b[i]! & 0x0f);
    i += h + 4 + len;
  }
  return ops;
}

/** Small enough to make oversized messages cheap, or above the client's 128 KiB read buffer. */
const MAX_MESSAGES = [4096, 300_000];
const LENGTHS = [0, 1, 125, 126, 127, 4096, 4097, 65535, 65536, 140_000, 300_001];

/** One server message: its payload, how it is fragmented, and pings between the fragments. */
const message = fc.record({
  binary: fc.boolean(),
  payload: fc.oneof(
    fc.string({ unit: "binary", maxLength: 300 }).map((s) => new TextEncoder().encode(s)),
    fc.uint8Array({ maxLength: 300 }),
    fc.constantFrom(...LENGTHS).map((n) => new Uint8Array(n).fill(0x61)),
  ),
  cuts: fc.array(fc.nat(), { maxLength: 4 }),
  pings: fc.array(fc.boolean(), { maxLength: 4 }),
});
type Message = typeof message extends fc.Arbitrary<infer T> ? T : never;

/** The frames of one message, and the event the client must deliver for it. */
function framesOf(
  m: Message,
  maxMessage: number,
): { frames: Uint8Array[]; event: WsEvent; pings: number } {
  const p = m.payload;
  const at = [...new Set(m.cuts.map((c) => c % (p.length + 1)))].sort((a, b) => a - b);
  const parts = [0, ...at].map((from, i) => p.subarray(from, at[i] ?? p.length));
  const frames: Uint8Array[] = [];
  let pings = 0;
  parts.forEach((part, i) => {
    const last = i === parts.length - 1;
    frames.push(encodeFrame({
      opcode: i === 0 ? (m.binary ? OP.binary : OP.text) : OP.cont,
      payload: part,
      fin: last,
    }));
    if (!last && m.pings[i]) {
      frames.push(encodeFrame({ opcode: OP.ping, payload: "p" }));
      pings++;
    }
  });
  let event: WsEvent;
  if (p.length > maxMessage) event = { kind: "oversized", size: p.length };
  else if (m.binary) event = { kind: "binary", size: p.length };
  else {
    try {
      event = { kind: "text", text: new TextDecoder("utf-8", { fatal: true }).decode(p) };
    } catch {
      event = { kind: "invalid_utf8", size: p.length };
    }
  }
  return { frames, event, pings };
}

/** Cuts `bytes` at the given points (deduplicated). */
function segments(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  return [0, ...at].map((from, i) => bytes.subarray(from, at[i] ?? bytes.length))
    .filter((s) => s.length > 0);
}

function join(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) out.set(p, off), off += p.length;
  return out;
}

Deno.test("property: any server messages, fragmented anyhow with pings between fragments and cut into any TCP segments, are delivered whole, in order, each pinged answered", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(message, { minLength: 1, maxLength: 6 }),
      fc.array(fc.nat(), { maxLength: 20 }),
      // Cuts near frame starts, where headers of every length form get split.
      fc.array(fc.tuple(fc.nat(), fc.nat(14)), { maxLength: 20 }),
      fc.constantFrom(...MAX_MESSAGES),
      async (messages, cuts, nearHeaders, maxMessage) => {
        const built = messages.map((m) => framesOf(m, maxMessage));
        const frames = [
          ...built.flatMap((b) => b.frames),
          encodeFrame({ opcode: OP.close, payload: new Uint8Array([0x03, 0xe8]) }),
        ];
        const starts = frames.map((_, i) => frames.slice(0, i).reduce((n, f) => n + f.length, 0));
        const stream = join(frames);
        const atHeaders = nearHeaders.map(([f, d]) => starts[f % starts.length]! + d);
        const conn = new ScriptedConn(segments(stream, [...cuts, ...atHeaders]));
        const ws = new WsClient(conn as unknown as Deno.Conn, new Uint8Array(0), maxMessage);
        const got: WsEvent[] = [];
        for (let i = 0, e = await ws.next(); e !== null && i < 100; i++, e = await ws.next()) {
          got.push(e);
        }
        assert.deepEqual(got, built.map((b) => b.event));
        const close = await ws.closed;
        assert.equal(close.code, 1000);
        assert.equal(close.closeFrame, true);
        await ws.settled();
        const ops = clientOpcodes(conn.written);
        assert.equal(
          ops.filter((o) => o === OP.pong).length,
          built.reduce((n, b) => n + b.pings, 0),
        );
        assert.equal(ops.at(-1), OP.close, "the Close is echoed");
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("property: arbitrary bytes from the server never throw out of the client: it delivers what it can and ends", async () => {
  const header = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }))
    .map(([a, b]) => new Uint8Array([a, b]));
  const noise = fc.array(fc.oneof(fc.uint8Array({ maxLength: 40 }), header), { maxLength: 20 });
  await fc.assert(
    fc.asyncProperty(noise, fc.array(fc.nat(), { maxLength: 20 }), async (parts, cuts) => {
      const conn = new ScriptedConn(segments(join(parts), cuts));
      const ws = new WsClient(conn as unknown as Deno.Conn, new Uint8Array(0), 4096);
      for (let i = 0, e = await ws.next(); e !== null && i < 1000; i++, e = await ws.next()) {
        assert.ok(["text", "binary", "oversized", "invalid_utf8"].includes(e.kind));
      }
      const close = await ws.closed;
      assert.equal(typeof close.code, "number");
      await ws.settled();
      assert.equal(ws.open, false);
    }),
    { numRuns: 500 },
  );
});

// ---- config validation -------------------------------------------------------------------------

const OPTS = { env: {}, home: "/home/op", platform: "linux" } as const;
/** Every ConfigError names a field, or the TOML line for a syntax error. */
const NAMES_A_FIELD =
  /^(agent\.toml line \d+: |(operator|coordinator|identity|backends|pricing|limits|observability|alerts)(\.|\[|: ))/;

const KEYS = [
  "operator",
  "coordinator",
  "identity",
  "backends",
  "pricing",
  "limits",
  "observability",
  "alerts",
  "url",
  "kind",
  "models",
  "api_key_env",
  "default_input_per_1m",
  "default_output_per_1m",
  "max_concurrent",
  "prometheus_addr",
  "log_level",
  "key_path",
  "ca_file",
  "__proto__",
  "constructor",
];
const key = fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 8 }));
const scalar = fc.oneof(
  fc.string({ maxLength: 16 }),
  fc.constantFrom("wss://c.test/p", "ws://c.test/p", "http://localhost:8000", "vllm", "ollama"),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.date({ noInvalidDate: true, min: new Date(0), max: new Date(4e12) }),
);
const tomlValue: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { arbitrary: scalar, weight: 4 },
    { arbitrary: fc.array(tie("value"), { maxLength: 3 }), weight: 1 },
    { arbitrary: tie("table"), weight: 2 },
  ),
  table: fc.dictionary(key, tie("value"), { maxKeys: 5 }),
})).value;
const document = fc.dictionary(key, tomlValue, { maxKeys: 8 });

function checked(text: string): "valid" | "error" {
  try {
    parseConfig(text, "agent.toml", OPTS);
    return "valid";
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    assert.match(err.message, NAMES_A_FIELD);
    return "error";
  }
}

Deno.test("property: any TOML document (random tables, keys and values) gives a Config or a ConfigError naming a field", () => {
  const previous = setSink(() => {});
  try {
    fc.assert(
      fc.property(document, (doc) => {
        let text: string;
        try {
          text = stringify(doc);
        } catch {
          return; // not representable in TOML (e.g. mixed arrays smol-toml refuses)
        }
        checked(text);
      }),
      { numRuns: 400 },
    );
  } finally {
    setSink(previous);
  }
});

Deno.test("property: arbitrary text, and valid documents damaged anywhere, give a Config or a ConfigError naming a field", () => {
  const valid = `[coordinator]\nurl = "wss://c.test/p"\n\n[[backends]]\nkind = "vllm"\n` +
    `url = "http://localhost:8000"\n\n[pricing]\ndefault_input_per_1m = 1\n` +
    `default_output_per_1m = 2\n\n[limits]\nmax_concurrent = 8\n`;
  const previous = setSink(() => {});
  try {
    assert.equal(checked(valid), "valid");
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: "binary", maxLength: 200 }),
          fc.tuple(fc.nat(), fc.nat(), fc.string({ maxLength: 6 })).map(([at, del, ins]) => {
            const i = at % (valid.length + 1);
            return valid.slice(0, i) + ins + valid.slice(Math.min(valid.length, i + (del % 8)));
          }),
        ),
        (text) => void checked(text),
      ),
      { numRuns: 500 },
    );
  } finally {
    setSink(previous);
  }
});
