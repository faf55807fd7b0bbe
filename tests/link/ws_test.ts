// Tests for src/link/ws.ts, the agent's own RFC 6455 client: against Deno.serve + upgradeWebSocket
// (an independent implementation) for round trips, and against a hand-written server
// (tests/harness/raw_ws_server.ts) for the frames Deno's server never sends.

import assert from "node:assert/strict";
import { connectWs, HandshakeError, type WsClient, type WsEvent } from "../../src/link/ws.ts";
import {
  closePayload,
  encodeFrame,
  OP,
  type RawFrame,
  type RawPeer,
  startRawServer,
} from "../harness/raw_ws_server.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A Deno.serve WebSocket server on 127.0.0.1 that echoes every message back. */
function startEcho(onOpen?: (socket: WebSocket) => void) {
  const closes: Promise<CloseEvent>[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    closes.push(new Promise((resolve) => (socket.onclose = resolve)));
    socket.onmessage = (e) => socket.send(e.data);
    socket.onerror = () => {};
    if (onOpen) socket.onopen = () => onOpen(socket);
    return response;
  });
  return {
    url: new URL(`ws://127.0.0.1:${server.addr.port}/ws`),
    /** The server side's close events, one per connection. */
    closes,
    async close() {
      await Promise.all(closes);
      await server.shutdown();
    },
  };
}

/** Deterministic printable text of `n` bytes, different at every offset mod 4. */
function asciiText(n: number, seed = 0): string {
  let s = "";
  const chunk = 4096;
  for (let i = 0; i < n; i += chunk) {
    const len = Math.min(chunk, n - i);
    s += String.fromCharCode(
      ...Array.from(
        { length: len },
        (_, j) => 33 + ((i + j) * 7 + seed * 13 + ((i + j) >> 3)) % 94,
      ),
    );
  }
  return s;
}

async function nextEvent(ws: WsClient): Promise<WsEvent> {
  const e = await ws.next();
  assert.ok(e !== null, "expected an event, the connection ended");
  return e;
}

async function nextText(ws: WsClient): Promise<string> {
  const e = await nextEvent(ws);
  assert.equal(e.kind, "text", `expected text, got ${JSON.stringify(e)}`);
  return e.kind === "text" ? e.text : "";
}

/** A promise with its resolver, for handler ↔ test hand-offs. */
function deferred<T = void>() {
  return Promise.withResolvers<T>();
}

/** Reads frames until end of stream. */
async function readAll(peer: RawPeer): Promise<RawFrame[]> {
  const frames: RawFrame[] = [];
  for (let f = await peer.readFrame(); f !== null; f = await peer.readFrame()) frames.push(f);
  return frames;
}

function closeCode(f: RawFrame): number | undefined {
  return f.payload.length >= 2 ? (f.payload[0]! << 8) | f.payload[1]! : undefined;
}

async function echoRoundTrip(messages: string[]): Promise<void> {
  const echo = startEcho();
  const ws = await connectWs({ url: echo.url });
  try {
    for (const m of messages) ws.send(m);
    for (const m of messages) {
      const got = await nextText(ws);
      assert.equal(got.length, m.length);
      assert.ok(got === m, `echo of a ${encoder.encode(m).length}-byte message differs`);
    }
  } finally {
    await ws.close();
    await ws.settled();
    await echo.close();
  }
}

// ---------------------------------------------------------------------------
// Round trips through Deno's server

Deno.test("small text messages (7-bit length) echo back intact", async () => {
  await echoRoundTrip(["", "a", "ab", "abc", "abcd", "hello", asciiText(124), asciiText(125)]);
});

Deno.test("messages of 126 to 65535 bytes (16-bit length) echo back intact", async () => {
  await echoRoundTrip([126, 127, 1000, 4097, 65534, 65535].map((n, i) => asciiText(n, i)));
});

Deno.test("messages over 65535 bytes (64-bit length) echo back intact", async () => {
  await echoRoundTrip([65536, 65537, 70001, 1024 * 1024 + 3].map((n, i) => asciiText(n, i)));
});

Deno.test("a 3 MiB frame is masked correctly end to end (Deno's server unmasks it)", async () => {
  const big = asciiText(3 * 1024 * 1024 + 3, 5);
  await echoRoundTrip([big]);
});

Deno.test("multi-byte UTF-8 messages echo back intact, across the length boundaries", async () => {
  const mixed = "é€😀中" + "ü".repeat(60) + "𝄞";
  await echoRoundTrip([
    "héllo wörld",
    "😀",
    "中文字符",
    "€".repeat(42), // 126 bytes
    "€".repeat(21845), // 65535 bytes
    "😀".repeat(16385), // 65540 bytes
    mixed.repeat(500),
  ]);
});

Deno.test("a binary message is reported as binary with its size", async () => {
  const echo = startEcho((socket) => socket.send(new Uint8Array(300)));
  const ws = await connectWs({ url: echo.url });
  try {
    assert.deepEqual(await nextEvent(ws), { kind: "binary", size: 300 });
  } finally {
    await ws.close();
    await ws.settled();
    await echo.close();
  }
});

Deno.test("a message over 4 MiB is reported oversized and the next message is delivered", async () => {
  const big = "x".repeat(5 * 1024 * 1024);
  const echo = startEcho((socket) => {
    socket.send(big);
    socket.send("after the big one");
  });
  const ws = await connectWs({ url: echo.url });
  try {
    assert.deepEqual(await nextEvent(ws), { kind: "oversized", size: big.length });
    assert.equal(await nextText(ws), "after the big one");
  } finally {
    await ws.close();
    await ws.settled();
    await echo.close();
  }
});

Deno.test("ping() gets a pong that advances lastInboundAt", async () => {
  const echo = startEcho();
  const ws = await connectWs({ url: echo.url });
  try {
    const before = ws.lastInboundAt;
    ws.ping();
    // No event surfaces for a pong: wait (bounded) for the read side to see it.
    for (let i = 0; i < 400 && ws.lastInboundAt === before; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.ok(ws.lastInboundAt > before, "the pong was read");
    ws.send("still text");
    assert.equal(await nextText(ws), "still text", "the pong did not surface as an event");
  } finally {
    await ws.close();
    await ws.settled();
    await echo.close();
  }
});

Deno.test("close() sends Close with the code and reason and resolves after the server's answer", async () => {
  const echo = startEcho();
  const ws = await connectWs({ url: echo.url });
  const closed = await ws.close(1001, "agent shutting down");
  assert.deepEqual(closed, { code: 1001, reason: "agent shutting down", closeFrame: true });
  const serverSide = await echo.closes[0]!;
  assert.equal(serverSide.code, 1001);
  assert.equal(serverSide.reason, "agent shutting down");
  assert.equal(ws.open, false);
  assert.equal(ws.send("too late"), false);
  assert.equal(await ws.next(), null);
  await ws.settled();
  await echo.close();
});

// ---------------------------------------------------------------------------
// The raw server: what the client sends

Deno.test("every frame the client sends is masked with a fresh key, and unmasks to the payload", async () => {
  const got = deferred<RawFrame[]>();
  const ready = deferred();
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send({ opcode: OP.ping, payload: "srv-ping" });
    ready.resolve();
    const frames: RawFrame[] = [];
    for (let f = await peer.readFrame(); f !== null; f = await peer.readFrame()) {
      frames.push(f);
      if (f.opcode === OP.close) {
        await peer.send({ opcode: OP.close, payload: f.payload });
        break;
      }
    }
    got.resolve(frames);
  });
  const ws = await connectWs({ url: server.url });
  await ready.promise;
  const texts = ["a", asciiText(126), asciiText(70000, 3), "é😀"];
  for (const t of texts) ws.send(t);
  ws.ping();
  const closed = await ws.close(1000, "bye");
  assert.equal(closed.closeFrame, true);
  const frames = await got.promise;
  for (const f of frames) {
    assert.ok(f.masked, `opcode ${f.opcode} frame not masked`);
    assert.equal(f.maskKey?.length, 4);
    assert.equal(f.rsv, 0);
    assert.equal(f.fin, true);
  }
  assert.deepEqual(
    frames.map((f) => f.opcode),
    [OP.pong, OP.text, OP.text, OP.text, OP.text, OP.ping, OP.close],
  );
  assert.equal(decoder.decode(frames[0]!.payload), "srv-ping");
  texts.forEach((t, i) => assert.ok(decoder.decode(frames[i + 1]!.payload) === t));
  assert.equal(frames[5]!.payload.length, 0);
  assert.equal(closeCode(frames[6]!), 1000);
  assert.equal(decoder.decode(frames[6]!.payload.subarray(2)), "bye");
  const keys = new Set(frames.map((f) => f.maskKey!.toHex()));
  assert.ok(keys.size >= frames.length - 1, "mask keys are not reused");
  await ws.settled();
});

Deno.test("a server ping is answered with a pong carrying the same payload", async () => {
  const pongs = deferred<RawFrame[]>();
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    const payloads = ["", "x", "ping-payload-1234", "p".repeat(125)];
    for (const p of payloads) await peer.send({ opcode: OP.ping, payload: p });
    const got: RawFrame[] = [];
    while (got.length < payloads.length) {
      const f = await peer.readFrame();
      if (f === null) break;
      got.push(f);
    }
    pongs.resolve(got);
    await peer.send({ opcode: OP.text, payload: "done" });
    await peer.drain();
  });
  const ws = await connectWs({ url: server.url });
  const got = await pongs.promise;
  assert.deepEqual(got.map((f) => f.opcode), [OP.pong, OP.pong, OP.pong, OP.pong]);
  assert.deepEqual(
    got.map((f) => decoder.decode(f.payload)),
    ["", "x", "ping-payload-1234", "p".repeat(125)],
  );
  assert.equal(await nextText(ws), "done", "pings do not surface as events");
  ws.abort();
  await ws.settled();
});

// ---------------------------------------------------------------------------
// The raw server: what the client receives

Deno.test("a fragmented text message is reassembled, with a ping between its fragments", async () => {
  const pong = deferred<RawFrame | null>();
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send({ opcode: OP.text, payload: "Hel", fin: false });
    await peer.send({ opcode: OP.ping, payload: "mid" });
    await peer.send({ opcode: OP.cont, payload: "lo, w", fin: false });
    // "é" split across two fragments: each part alone is invalid UTF-8.
    await peer.send({
      opcode: OP.cont,
      payload: new Uint8Array([0x6f, 0x72, 0x6c, 0x64, 0xc3]),
      fin: false,
    });
    await peer.send({ opcode: OP.cont, payload: new Uint8Array([0xa9]), fin: true });
    await peer.send({ opcode: OP.text, payload: "next" });
    pong.resolve(await peer.readFrame());
    await peer.drain();
  });
  const ws = await connectWs({ url: server.url });
  assert.equal(await nextText(ws), "Hello, worldé");
  assert.equal(await nextText(ws), "next");
  const p = await pong.promise;
  assert.equal(p?.opcode, OP.pong);
  assert.equal(decoder.decode(p!.payload), "mid");
  ws.abort();
  await ws.settled();
});

Deno.test("a fragmented binary message is reported as binary with its total size", async () => {
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send({ opcode: OP.binary, payload: new Uint8Array(100), fin: false });
    await peer.send({ opcode: OP.cont, payload: new Uint8Array(50), fin: true });
    await peer.send({ opcode: OP.text, payload: "after" });
    await peer.drain();
  });
  const ws = await connectWs({ url: server.url });
  assert.deepEqual(await nextEvent(ws), { kind: "binary", size: 150 });
  assert.equal(await nextText(ws), "after");
  ws.abort();
  await ws.settled();
});

Deno.test("frames arriving one byte at a time are parsed (partial headers of every length form)", async () => {
  const big = asciiText(70000, 9);
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.dribble(encodeFrame({ opcode: OP.text, payload: "tiny" }));
    await peer.dribble(encodeFrame({ opcode: OP.text, payload: asciiText(300, 1) }));
    const f = encodeFrame({ opcode: OP.text, payload: big });
    await peer.dribble(f.subarray(0, 12));
    await peer.write(f.subarray(12));
    await peer.drain();
  });
  const ws = await connectWs({ url: server.url });
  assert.equal(await nextText(ws), "tiny");
  assert.equal(await nextText(ws), asciiText(300, 1));
  assert.ok((await nextText(ws)) === big);
  ws.abort();
  await ws.settled();
});

Deno.test("a frame sent in the same packet as the handshake answer is delivered", async () => {
  await using server = startRawServer(async (peer) => {
    await peer.accept(encodeFrame({ opcode: OP.text, payload: '{"type":"auth_challenge"}' }));
    await peer.drain();
  });
  const ws = await connectWs({ url: server.url });
  assert.equal(await nextText(ws), '{"type":"auth_challenge"}');
  ws.abort();
  await ws.settled();
});

Deno.test("a message over maxMessageBytes is skipped as oversized and the next one delivered", async () => {
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send({ opcode: OP.text, payload: asciiText(1024) });
    await peer.send({ opcode: OP.text, payload: asciiText(1025) });
    await peer.send({ opcode: OP.text, payload: "€".repeat(400) }); // 400 chars, 1200 bytes
    await peer.send({ opcode: OP.text, payload: asciiText(100_000) });
    await peer.send({ opcode: OP.text, payload: "next" });
    await peer.drain();
  });
  const ws = await connectWs({ url: server.url, maxMessageBytes: 1024 });
  assert.equal(await nextText(ws), asciiText(1024), "exactly the limit is delivered");
  assert.deepEqual(await nextEvent(ws), { kind: "oversized", size: 1025 });
  assert.deepEqual(await nextEvent(ws), { kind: "oversized", size: 1200 }, "the limit is in bytes");
  assert.deepEqual(await nextEvent(ws), { kind: "oversized", size: 100_000 });
  assert.equal(await nextText(ws), "next");
  ws.abort();
  await ws.settled();
});

Deno.test("an oversized fragmented message is skipped as one, control frames in it still answered", async () => {
  const pong = deferred<RawFrame | null>();
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send({ opcode: OP.text, payload: asciiText(600), fin: false });
    await peer.send({ opcode: OP.cont, payload: asciiText(600), fin: false });
    await peer.send({ opcode: OP.ping, payload: "in-skip" });
    await peer.send({ opcode: OP.cont, payload: asciiText(600), fin: true });
    await peer.send({ opcode: OP.text, payload: "next" });
    pong.resolve(await peer.readFrame());
    await peer.drain();
  });
  const ws = await connectWs({ url: server.url, maxMessageBytes: 1024 });
  assert.deepEqual(await nextEvent(ws), { kind: "oversized", size: 1800 });
  assert.equal(await nextText(ws), "next");
  const p = await pong.promise;
  assert.equal(p?.opcode, OP.pong);
  assert.equal(decoder.decode(p!.payload), "in-skip");
  ws.abort();
  await ws.settled();
});

Deno.test("a fragmented message under the limit is delivered after an oversized message", async () => {
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send({ opcode: OP.text, payload: asciiText(2000) });
    await peer.send({ opcode: OP.text, payload: "ab", fin: false });
    await peer.send({ opcode: OP.cont, payload: "cd", fin: true });
    await peer.send({ opcode: OP.text, payload: asciiText(500), fin: false });
    await peer.send({ opcode: OP.cont, payload: asciiText(524), fin: true });
    await peer.drain();
  });
  const ws = await connectWs({ url: server.url, maxMessageBytes: 1024 });
  assert.deepEqual(await nextEvent(ws), { kind: "oversized", size: 2000 });
  assert.deepEqual(await nextEvent(ws), { kind: "text", text: "abcd" });
  assert.deepEqual(await nextEvent(ws), { kind: "text", text: asciiText(500) + asciiText(524) });
  ws.abort();
  await ws.settled();
});

Deno.test("a frame announcing 1 TiB is skipped as it streams, never allocated", async () => {
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send({ opcode: OP.text, payload: new Uint8Array(1024 * 1024), length: 2 ** 40 });
    // End the TCP stream mid-frame: the client was skipping, not buffering.
  });
  const ws = await connectWs({ url: server.url });
  assert.equal(await ws.next(), null);
  const closed = await ws.closed;
  assert.deepEqual(closed, { code: 1006, reason: "", closeFrame: false });
  await ws.settled();
});

Deno.test("invalid UTF-8 in a text message is reported and the connection goes on", async () => {
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send({ opcode: OP.text, payload: new Uint8Array([0x68, 0x69, 0xff, 0xfe]) });
    await peer.send({ opcode: OP.text, payload: new Uint8Array([0xed, 0xa0, 0x80]) }); // surrogate
    await peer.send({ opcode: OP.text, payload: "fine" });
    await peer.drain();
  });
  const ws = await connectWs({ url: server.url });
  assert.deepEqual(await nextEvent(ws), { kind: "invalid_utf8", size: 4 });
  assert.deepEqual(await nextEvent(ws), { kind: "invalid_utf8", size: 3 });
  assert.equal(await nextText(ws), "fine");
  ws.abort();
  await ws.settled();
});

// ---------------------------------------------------------------------------
// Closing

Deno.test('a server Close 1001 "drain:deploy" resolves closed with it, after the client echoed a Close', async () => {
  const echoed = deferred<RawFrame[]>();
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send({ opcode: OP.text, payload: "last words" });
    await peer.send({ opcode: OP.close, payload: closePayload(1001, "drain:deploy") });
    echoed.resolve(await readAll(peer));
  });
  const ws = await connectWs({ url: server.url });
  assert.equal(await nextText(ws), "last words", "frames before the Close are delivered");
  assert.equal(await ws.next(), null);
  assert.deepEqual(await ws.closed, { code: 1001, reason: "drain:deploy", closeFrame: true });
  const frames = await echoed.promise;
  assert.equal(frames.length, 1, "exactly one frame after the Close: the echo");
  assert.equal(frames[0]!.opcode, OP.close);
  assert.ok(frames[0]!.masked);
  assert.equal(closeCode(frames[0]!), 1001);
  assert.equal(ws.send("after close"), false);
  await ws.settled();
});

Deno.test("a server Close with no payload resolves closed with code 1005", async () => {
  const echoed = deferred<RawFrame[]>();
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send({ opcode: OP.close });
    echoed.resolve(await readAll(peer));
  });
  const ws = await connectWs({ url: server.url });
  assert.equal(await ws.next(), null);
  assert.deepEqual(await ws.closed, { code: 1005, reason: "", closeFrame: true });
  const frames = await echoed.promise;
  assert.equal(frames.length, 1);
  assert.equal(frames[0]!.opcode, OP.close);
  assert.equal(frames[0]!.payload.length, 0, "the echo of an empty Close is empty");
  await ws.settled();
});

Deno.test("a TCP end without a Close frame resolves closed with closeFrame false", async () => {
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send({ opcode: OP.text, payload: "bye" });
    // The handler returns: the server drops the TCP connection.
  });
  const ws = await connectWs({ url: server.url });
  assert.equal(await nextText(ws), "bye");
  assert.equal(await ws.next(), null);
  const closed = await ws.closed;
  assert.equal(closed.closeFrame, false);
  assert.equal(closed.code, 1006);
  await ws.settled();
});

Deno.test("close() gives up waiting for a peer that never answers the Close", async () => {
  const seen = deferred<RawFrame | null>();
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    seen.resolve(await peer.readFrame());
    await peer.drain(); // never answers, ends when the client drops the socket
  });
  const ws = await connectWs({ url: server.url });
  const closed = await ws.close(1000, "done");
  assert.deepEqual(closed, { code: 1000, reason: "done", closeFrame: false });
  const f = await seen.promise;
  assert.equal(f?.opcode, OP.close);
  assert.equal(closeCode(f!), 1000);
  await ws.settled();
});

Deno.test("settled() resolves after abort(), and the server sees the TCP end", async () => {
  const ended = deferred<number>();
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send({ opcode: OP.text, payload: "hi" });
    ended.resolve(await peer.drain());
  });
  const ws = await connectWs({ url: server.url });
  assert.equal(await nextText(ws), "hi");
  const pending = ws.next();
  ws.abort("test abort");
  assert.equal(await pending, null, "a waiting next() resolves null");
  assert.deepEqual(await ws.closed, { code: 1006, reason: "test abort", closeFrame: false });
  await ws.settled();
  assert.equal(await ended.promise, 0, "no Close frame was sent by abort()");
  assert.equal(ws.open, false);
});

// ---------------------------------------------------------------------------
// Protocol errors: the connection ends with 1002

async function expectProtocolError(spec: Parameters<RawPeer["send"]>[0], why: RegExp) {
  const after = deferred<RawFrame[]>();
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await peer.send(spec);
    await peer.send({ opcode: OP.text, payload: "must not be delivered" });
    after.resolve(await readAll(peer));
  });
  const ws = await connectWs({ url: server.url });
  // Bound the wait: a client that misses the error would otherwise wait forever.
  const guard = setTimeout(() => ws.abort("test guard: no protocol error detected"), 5000);
  try {
    assert.equal(await ws.next(), null, "nothing is delivered after a protocol error");
    const closed = await ws.closed;
    assert.equal(closed.code, 1002);
    assert.equal(closed.closeFrame, false);
    assert.match(closed.reason, why);
    // The connection ended (readAll returned); anything sent before is a Close 1002.
    for (const f of await after.promise) {
      assert.equal(f.opcode, OP.close);
      assert.equal(closeCode(f), 1002);
    }
  } finally {
    clearTimeout(guard);
    ws.abort();
    await ws.settled();
  }
}

Deno.test("a masked frame from the server is a protocol error that ends the connection", async () => {
  await expectProtocolError(
    { opcode: OP.text, payload: "masked", mask: new Uint8Array([1, 2, 3, 4]) },
    /mask/,
  );
});

Deno.test("a frame with reserved bits set is a protocol error that ends the connection", async () => {
  await expectProtocolError({ opcode: OP.text, payload: "rsv1", rsv: 4 }, /reserved/);
  await expectProtocolError({ opcode: OP.text, payload: "rsv3", rsv: 1 }, /reserved/);
});

Deno.test("an unknown data opcode is a protocol error that ends the connection", async () => {
  await expectProtocolError({ opcode: 0x3, payload: "op3" }, /opcode/);
});

Deno.test("an unknown control opcode is a protocol error that ends the connection", async () => {
  await expectProtocolError({ opcode: 0xb, payload: "op11" }, /opcode/);
});

Deno.test("a fragmented or over-125-byte control frame is a protocol error", async () => {
  await expectProtocolError({ opcode: OP.ping, payload: "frag", fin: false }, /control/);
  await expectProtocolError({ opcode: OP.ping, payload: "p".repeat(126) }, /control/);
});

Deno.test("a stray continuation frame is a protocol error", async () => {
  await expectProtocolError({ opcode: OP.cont, payload: "orphan" }, /continuation/);
});

Deno.test("a 64-bit length with the top bits set is a protocol error", async () => {
  await expectProtocolError(
    { opcode: OP.text, payload: new Uint8Array(0), length: 2 ** 63 },
    /length/,
  );
});

// ---------------------------------------------------------------------------
// Opening handshake

Deno.test("the handshake request is a WebSocket upgrade for the URL's path and host", async () => {
  const head = deferred<string>();
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    head.resolve(peer.requestHead);
    await peer.drain();
  });
  const url = new URL(`ws://127.0.0.1:${server.port}/provider/connect?v=1`);
  const ws = await connectWs({ url });
  const h = await head.promise;
  assert.match(h, /^GET \/provider\/connect\?v=1 HTTP\/1\.1\r\n/);
  assert.match(h, new RegExp(`\r\nHost: 127\\.0\\.0\\.1:${server.port}\r\n`, "i"));
  assert.match(h, /\r\nUpgrade: websocket\r\n/i);
  assert.match(h, /\r\nSec-WebSocket-Version: 13\r\n/i);
  const key = /\r\nSec-WebSocket-Key: ([^\r]+)\r\n/i.exec(h)?.[1] ?? "";
  assert.equal(Uint8Array.fromBase64(key).length, 16);
  ws.abort();
  await ws.settled();
});

Deno.test("a non-101 answer rejects with a HandshakeError naming the status", async () => {
  await using server = startRawServer(async (peer) => {
    await peer.readRequestHead();
    await peer.write(
      encoder.encode("HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden"),
    );
    await peer.drain();
  });
  await assert.rejects(
    connectWs({ url: server.url }),
    (e) => e instanceof HandshakeError && /403/.test(e.message),
  );
});

Deno.test("a bad Sec-WebSocket-Accept rejects with a HandshakeError", async () => {
  await using server = startRawServer(async (peer) => {
    await peer.readRequestHead();
    await peer.write(
      encoder.encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          "Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      ),
    );
    await peer.drain();
  });
  await assert.rejects(
    connectWs({ url: server.url }),
    (e) => e instanceof HandshakeError && /Sec-WebSocket-Accept/.test(e.message),
  );
});

Deno.test("a 101 without any Sec-WebSocket-Accept rejects with a HandshakeError", async () => {
  await using server = startRawServer(async (peer) => {
    await peer.readRequestHead();
    await peer.write(
      encoder.encode("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
    );
    await peer.drain();
  });
  await assert.rejects(connectWs({ url: server.url }), HandshakeError);
});

Deno.test("a server that hangs up during the handshake rejects with a HandshakeError", async () => {
  await using server = startRawServer(async (peer) => {
    await peer.readRequestHead();
    await peer.write(encoder.encode("HTTP/1.1 101 Switching"));
  });
  await assert.rejects(connectWs({ url: server.url }), HandshakeError);
});

Deno.test("connecting to a closed port rejects", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await assert.rejects(connectWs({ url: new URL(`ws://127.0.0.1:${port}/`) }));
});

Deno.test("a URL that is not ws: or wss: is a TypeError", async () => {
  await assert.rejects(connectWs({ url: new URL("http://127.0.0.1:1/") }), TypeError);
});

Deno.test("aborting during a handshake the server never answers rejects and leaks nothing", async () => {
  const gotRequest = deferred();
  const ended = deferred();
  await using server = startRawServer(async (peer) => {
    await peer.readRequestHead();
    gotRequest.resolve();
    await peer.drain(); // never answers; returns when the client drops the socket
    ended.resolve();
  });
  const ctl = new AbortController();
  const connecting = connectWs({ url: server.url, signal: ctl.signal });
  await gotRequest.promise;
  const reason = new Error("gave up on the handshake");
  ctl.abort(reason);
  await assert.rejects(connecting, (e) => e === reason);
  await ended.promise;
});

Deno.test("an already aborted signal rejects before connecting", async () => {
  await using server = startRawServer(async () => {});
  const reason = new Error("already aborted");
  await assert.rejects(
    connectWs({ url: server.url, signal: AbortSignal.abort(reason) }),
    (e) => e === reason,
  );
  assert.equal(server.peers.length, 0);
});

// ---------------------------------------------------------------------------
// Backpressure

Deno.test("a peer that stops reading backs the queue up in bufferedAmount until it reads again", async () => {
  const MSG = 64 * 1024;
  const COUNT = 512; // 32 MiB in 64 KiB messages
  const queuedAll = deferred();
  const resume = deferred();
  const received = deferred<{ count: number; bytes: number; inOrder: boolean; masked: boolean }>();
  await using server = startRawServer(async (peer) => {
    await peer.accept();
    await queuedAll.promise;
    // Still reading nothing; an inbound frame lets the client run its loops meanwhile.
    await peer.send({ opcode: OP.text, payload: "tick" });
    await resume.promise;
    let count = 0, bytes = 0, inOrder = true, masked = true;
    while (count < COUNT) {
      const f = await peer.readFrame();
      if (f === null) break;
      masked &&= f.masked;
      bytes += f.payload.length;
      if (Number(decoder.decode(f.payload.subarray(0, 6))) !== count) inOrder = false;
      count++;
    }
    received.resolve({ count, bytes, inOrder, masked });
    await peer.send({ opcode: OP.text, payload: "got all" });
    await peer.drain();
  });
  const ws = await connectWs({ url: server.url });
  const body = "x".repeat(MSG - 6);
  let last = ws.bufferedAmount;
  for (let i = 0; i < COUNT; i++) {
    assert.equal(ws.send(String(i).padStart(6, "0") + body), true);
    assert.ok(ws.bufferedAmount > last, "bufferedAmount grows with every send");
    last = ws.bufferedAmount;
  }
  const queued = ws.queuedTotal;
  assert.ok(queued >= COUNT * MSG);
  let flushed = false;
  const allFlushed = ws.waitFlushed(queued).then(() => (flushed = true));
  queuedAll.resolve();
  assert.equal(await nextText(ws), "tick");
  // Nothing read by the peer: at most the kernel's socket buffers (a few MiB) drained.
  assert.equal(flushed, false, "waitFlushed(queuedTotal) waits while the peer reads nothing");
  assert.ok(ws.flushedTotal < queued);
  assert.ok(
    ws.bufferedAmount > queued - 16 * 1024 * 1024,
    `backlog stays in bufferedAmount (${ws.bufferedAmount} of ${queued} bytes)`,
  );
  assert.ok(ws.open, "a stalled peer is not a closed connection");
  resume.resolve();
  await allFlushed;
  assert.equal(ws.flushedTotal, ws.queuedTotal);
  assert.equal(ws.flushedTotal, queued);
  assert.equal(ws.bufferedAmount, 0);
  assert.deepEqual(await received.promise, {
    count: COUNT,
    bytes: COUNT * MSG,
    inOrder: true,
    masked: true,
  });
  assert.equal(await nextText(ws), "got all");
  ws.abort();
  await ws.settled();
});
