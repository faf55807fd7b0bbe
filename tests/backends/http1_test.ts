// The raw-socket HTTP/1.1 client (src/backends/http1.ts) against real servers on loopback:
// Deno.serve for ordinary responses, one-connection Deno.listen servers for the odd cases.

import assert from "node:assert/strict";
import { request, type StreamResponse } from "../../src/backends/http1.ts";
import { BackendError, type ErrorCode } from "../../src/errors.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const hasIpv6 = (() => {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
})();

interface RawServer {
  url: URL;
  /** Settles once the handler finished and the connection and listener are closed. */
  done: Promise<void>;
}

/** Accepts exactly one connection and hands it to `handle`; closes everything afterwards. */
function rawServer(
  handle: (conn: Deno.TcpConn) => Promise<void>,
  hostname = "127.0.0.1",
): RawServer {
  const listener = Deno.listen({ hostname, port: 0 });
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  const url = new URL(`http://${host}:${listener.addr.port}/v1/chat/completions?x=1`);
  const done = (async () => {
    const conn = await listener.accept();
    listener.close();
    try {
      await handle(conn);
    } finally {
      conn.close();
    }
  })();
  return { url, done };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let sent = 0; sent < bytes.length;) sent += await conn.write(bytes.subarray(sent));
}

/** Reads the request head (GET, no body) and returns it as text. */
async function readRequestHead(conn: Deno.Conn): Promise<string> {
  const buf = new Uint8Array(16 * 1024);
  let text = "";
  while (!text.includes("\r\n\r\n")) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("client closed before sending its request");
    text += decoder.decode(buf.subarray(0, n));
  }
  return text;
}

/** Resolves when the peer has closed the connection (end of stream or reset). */
async function waitClosed(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(1024);
  try {
    while (await conn.read(buf) !== null) { /* discard */ }
  } catch {
    // A reset is a close too.
  }
}

/** Fails instead of hanging when `promise` does not settle within `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function withServe(
  handler: (req: Request) => Response | Promise<Response>,
  fn: (url: URL) => Promise<void>,
): Promise<void> {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  try {
    await fn(new URL(`http://127.0.0.1:${server.addr.port}/v1/chat/completions`));
  } finally {
    await server.shutdown();
  }
}

function get(url: URL, signal = new AbortController().signal): Promise<StreamResponse> {
  return request({ method: "GET", url, headers: {}, signal });
}

async function drain(res: StreamResponse): Promise<{ body: string; pieces: number }> {
  const parts: Uint8Array[] = [];
  for (let piece = await res.read(); piece !== null; piece = await res.read()) parts.push(piece);
  const body = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    assert.ok(p.length > 0, "read() never returns an empty piece");
    body.set(p, at);
    at += p.length;
  }
  return { body: decoder.decode(body), pieces: parts.length };
}

function isBackendError(code: ErrorCode, message?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof BackendError, `expected BackendError, got ${err}`);
    assert.equal(err.code, code);
    if (message) assert.match(err.message, message);
    return true;
  };
}

function sse(i: number): string {
  return `data: {"choices":[{"index":0,"delta":{"content":"tok${i} é"}}]}\n\n`;
}

function chunked(parts: string[], trailer = ""): string {
  return parts.map((p) => `${encoder.encode(p).length.toString(16)}\r\n${p}\r\n`).join("") +
    `0\r\n${trailer}\r\n`;
}

/** Small deterministic generator so random splits are reproducible. */
function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("a streaming Deno.serve response decodes byte-exactly from its chunks", async () => {
  const deltas = Array.from({ length: 40 }, (_, i) => sse(i));
  let i = 0;
  const stream = () =>
    new ReadableStream<Uint8Array>({
      pull(controller) {
        if (i < deltas.length) controller.enqueue(encoder.encode(deltas[i++]));
        else controller.close();
      },
    });
  await withServe(
    () => new Response(stream(), { headers: { "content-type": "text/event-stream" } }),
    async (url) => {
      const res = await get(url);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("transfer-encoding"), "chunked");
      assert.equal(res.headers.get("Content-Type"), "text/event-stream");
      assert.equal((await drain(res)).body, deltas.join(""));
    },
  );
});

Deno.test("a Content-Length response ends at its length without waiting for the server to close", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    await writeAll(
      conn,
      encoder.encode("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"),
    );
    await waitClosed(conn); // the server never closes first: the client must
  });
  const res = await get(server.url);
  assert.deepEqual(await drain(res), { body: "hello world", pieces: 1 });
  await within(server.done, 5000, "server sees the client close");
});

Deno.test("a chunked response ends at its terminator without waiting for the server to close", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    const body = chunked(["data: a\n\n", "data: [DONE]\n\n"]);
    await writeAll(
      conn,
      encoder.encode(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${body}`),
    );
    await waitClosed(conn);
  });
  assert.equal((await drain(await get(server.url))).body, "data: a\n\ndata: [DONE]\n\n");
  await within(server.done, 5000, "server sees the client close");
});

Deno.test("the request line, Host and Connection headers are sent as HTTP/1.1 expects", async () => {
  let head = "";
  const server = rawServer(async (conn) => {
    head = await readRequestHead(conn);
    await writeAll(conn, encoder.encode("HTTP/1.1 204 No Content\r\n\r\n"));
  });
  const res = await request({
    method: "GET",
    url: server.url,
    headers: { authorization: "Bearer k" },
    signal: new AbortController().signal,
  });
  assert.equal(res.status, 204);
  assert.equal(await res.read(), null);
  await server.done;
  const lines = head.split("\r\n");
  assert.equal(lines[0], "GET /v1/chat/completions?x=1 HTTP/1.1");
  assert.ok(lines.includes(`Host: 127.0.0.1:${server.url.port}`));
  assert.ok(lines.includes("Connection: close"));
  assert.ok(lines.includes("authorization: Bearer k"));
});

Deno.test("a POST body arrives intact with its Content-Length", async () => {
  const payload = { model: "m", stream: true, messages: [{ role: "user", content: "héllo ✓" }] };
  await withServe(async (req) => {
    const got = await req.json();
    return Response.json({ got, length: req.headers.get("content-length"), method: req.method });
  }, async (url) => {
    const body = encoder.encode(JSON.stringify(payload));
    const res = await request({
      method: "POST",
      url,
      headers: { "content-type": "application/json" },
      body,
      signal: new AbortController().signal,
    });
    assert.equal(res.status, 200);
    assert.deepEqual(JSON.parse(await res.text()), {
      got: payload,
      length: String(body.length),
      method: "POST",
    });
  });
});

Deno.test("a close-delimited response is read until the server closes", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    await writeAll(
      conn,
      encoder.encode("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, "),
    );
    await writeAll(conn, encoder.encode("part two"));
  });
  const res = await get(server.url);
  assert.equal((await drain(res)).body, "part one, part two");
  assert.equal(await res.read(), null, "read() after the end stays null");
  await server.done;
});

const SPLIT_RESPONSE = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" +
  "Transfer-Encoding: chunked\r\n\r\n" +
  chunked([sse(1), sse(2), "x", sse(3)], "X-Trailer: t\r\n").replace("1\r\nx", '1;ext="a b"\r\nx');
const SPLIT_BODY = sse(1) + sse(2) + "x" + sse(3);

/**
 * Serves `pieces` one per client socket read: Deno.connect is wrapped so the server learns when
 * the client is reading again, and writes the next piece only then. Every split really reaches
 * the decoder as a separate read.
 */
async function serveInPieces(pieces: Uint8Array[]): Promise<string> {
  let reads = 0;
  let wake = () => {};
  const connect = Deno.connect;
  Reflect.set(Deno, "connect", async (options: Deno.ConnectOptions) => {
    const conn = await connect(options);
    const read = conn.read.bind(conn);
    conn.read = (p) => {
      reads++;
      wake();
      return read(p);
    };
    return conn;
  });
  try {
    const server = rawServer(async (conn) => {
      conn.setNoDelay(true);
      await readRequestHead(conn);
      for (const [i, piece] of pieces.entries()) {
        while (reads <= i) await new Promise<void>((resolve) => wake = resolve);
        await writeAll(conn, piece);
      }
      await waitClosed(conn);
    });
    const fetched = get(server.url).then(drain);
    const { body } = await within(fetched, 5000, "split response");
    await server.done;
    assert.ok(reads >= pieces.length, `${reads} client reads for ${pieces.length} pieces`);
    return body;
  } finally {
    Reflect.set(Deno, "connect", connect);
  }
}

Deno.test("a response written one byte per write decodes exactly", async () => {
  const bytes = encoder.encode(SPLIT_RESPONSE);
  const pieces = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
  assert.equal(await serveInPieces(pieces), SPLIT_BODY);
});

Deno.test("a response split at every byte position decodes exactly", async () => {
  const bytes = encoder.encode(SPLIT_RESPONSE);
  for (let cut = 1; cut < bytes.length; cut++) {
    const body = await serveInPieces([bytes.subarray(0, cut), bytes.subarray(cut)]);
    assert.equal(body, SPLIT_BODY, `split at ${cut}`);
  }
});

Deno.test("a response split at random positions decodes exactly", async () => {
  const bytes = encoder.encode(SPLIT_RESPONSE);
  const random = mulberry32(42);
  for (let round = 0; round < 30; round++) {
    const cuts = Array.from(
      { length: 1 + Math.floor(random() * 12) },
      () => 1 + Math.floor(random() * (bytes.length - 1)),
    ).sort((a, b) => a - b);
    const pieces = [0, ...cuts].map((from, i) => bytes.subarray(from, [...cuts, bytes.length][i]));
    assert.equal(
      await serveInPieces(pieces.filter((p) => p.length > 0)),
      SPLIT_BODY,
      `cuts ${cuts}`,
    );
  }
});

Deno.test("chunk extensions, upper- and lower-case hex sizes and trailers are handled", async () => {
  const body = 'A;name=value;q="x; y"\r\n0123456789\r\n' +
    "1a \t;e\r\nabcdefghijklmnopqrstuvwxyz\r\n" +
    "0;last\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n";
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    await writeAll(
      conn,
      encoder.encode(`HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n${body}`),
    );
    await waitClosed(conn);
  });
  assert.equal((await drain(await get(server.url))).body, "0123456789abcdefghijklmnopqrstuvwxyz");
  await server.done;
});

Deno.test("a 100 Continue interim response is skipped for the final 200", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    await writeAll(
      conn,
      encoder.encode(
        "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n" +
          "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: 1\r\n\r\nok",
      ),
    );
    await waitClosed(conn);
  });
  const res = await get(server.url);
  assert.equal(res.status, 200);
  assert.equal(res.statusText, "OK");
  assert.equal(res.headers.get("x-interim"), null);
  assert.equal(res.headers.get("x-final"), "1");
  assert.equal(await res.text(), "ok");
  await server.done;
});

Deno.test("repeated response headers keep every value", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    await writeAll(
      conn,
      encoder.encode("HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a:2\r\nContent-Length: 0\r\n\r\n"),
    );
  });
  const res = await get(server.url);
  assert.equal(res.headers.get("X-A"), "1, 2");
  assert.equal(await res.read(), null);
  await server.done;
});

Deno.test("error statuses carry their JSON bodies through text()", async () => {
  const cases = [
    { status: 401, body: { error: "Unauthorized" } },
    { status: 404, body: { error: { message: "model not found", code: 404 } } },
    { status: 500, body: { object: "error", message: "engine died" } },
  ];
  await withServe((req) => {
    const c = cases.find((c) => req.url.endsWith(`/${c.status}`))!;
    return Response.json(c.body, { status: c.status });
  }, async (url) => {
    for (const c of cases) {
      const res = await get(new URL(`/${c.status}`, url));
      assert.equal(res.status, c.status);
      assert.deepEqual(JSON.parse(await res.text()), c.body);
    }
  });
});

Deno.test("text() stops at its limit and closes the connection", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    await writeAll(conn, encoder.encode("HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\n"));
    await writeAll(conn, encoder.encode("é".repeat(500)));
    await waitClosed(conn);
  });
  const res = await get(server.url);
  assert.equal(res.statusText, "Oops");
  assert.equal(await res.text(7), "ééé", "a character cut by the limit is dropped");
  assert.equal(await res.read(), null);
  await within(server.done, 5000, "server sees the client close");
});

Deno.test("a refused connection is backend_unreachable", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  await assert.rejects(
    get(new URL(`http://127.0.0.1:${port}/health`)),
    isBackendError(
      "backend_unreachable",
      new RegExp(`^127\\.0\\.0\\.1:${port}: connection refused`),
    ),
  );
});

Deno.test("a server that closes before answering is backend_unreachable", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
  });
  await assert.rejects(get(server.url), isBackendError("backend_unreachable"));
  await server.done;
});

Deno.test("a server that closes mid-head is backend_unreachable", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    await writeAll(conn, encoder.encode("HTTP/1.1 200 OK\r\nContent-Le"));
  });
  await assert.rejects(get(server.url), isBackendError("backend_unreachable", /response head/));
  await server.done;
});

Deno.test("a server that closes mid-chunk is an internal error after the bytes it sent", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    await writeAll(
      conn,
      encoder.encode("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nhello"),
    );
  });
  const res = await get(server.url);
  assert.equal(decoder.decode((await res.read())!), "hello");
  const err = await res.read().catch((e) => e);
  assert.ok(isBackendError("internal", /stream broke.*mid-chunk/)(err));
  assert.equal(await res.read().catch((e) => e), err, "the error is sticky");
  await server.done;
});

Deno.test("a Content-Length body cut short is an internal error", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    await writeAll(conn, encoder.encode("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"));
  });
  const res = await get(server.url);
  assert.equal(decoder.decode((await res.read())!), "hello");
  await assert.rejects(res.read(), isBackendError("internal", /stream broke.*5 bytes short/));
  await server.done;
});

Deno.test("a malformed chunk size is an internal error", async () => {
  for (const size of ["zz", "", "-1", "1 2", "10000000000000"]) {
    const server = rawServer(async (conn) => {
      await readRequestHead(conn);
      await writeAll(
        conn,
        encoder.encode(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${size}\r\nabc\r\n`),
      );
      await waitClosed(conn);
    });
    const res = await get(server.url);
    await assert.rejects(drain(res), isBackendError("internal", /malformed chunked body/), size);
    await within(server.done, 5000, "server sees the client close");
  }
});

Deno.test("a response head over 64 KiB is an internal error", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    const big = `HTTP/1.1 200 OK\r\nX-Big: ${"a".repeat(70 * 1024)}\r\nContent-Length: 0\r\n\r\n`;
    await writeAll(conn, encoder.encode(big)).catch(() => {}); // the client may hang up first
    await waitClosed(conn);
  });
  await assert.rejects(get(server.url), isBackendError("internal", /64 KiB/));
  await server.done;
});

Deno.test("aborting while waiting for the head rejects with the reason and closes the socket", async () => {
  const { promise: asked, resolve } = Promise.withResolvers<void>();
  let closedAt = 0;
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    resolve();
    await waitClosed(conn);
    closedAt = performance.now();
  });
  const controller = new AbortController();
  const pending = get(server.url, controller.signal);
  await asked;
  const reason = new Error("job cancelled");
  const abortedAt = performance.now();
  controller.abort(reason);
  await assert.rejects(pending, (err) => err === reason);
  await within(server.done, 1000, "server sees the disconnect");
  assert.ok(closedAt - abortedAt < 1000);
});

Deno.test("aborting mid-body rejects the pending read with the reason and closes the socket", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    await writeAll(
      conn,
      encoder.encode(
        `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${chunked([sse(0)]).slice(0, -5)}`,
      ),
    );
    await waitClosed(conn);
  });
  const controller = new AbortController();
  const res = await get(server.url, controller.signal);
  assert.equal(decoder.decode((await res.read())!), sse(0));
  const pending = res.read();
  const reason = new DOMException("deadline", "TimeoutError");
  controller.abort(reason);
  await assert.rejects(pending, (err) => err === reason);
  await assert.rejects(res.read(), (err) => err === reason, "later reads give the reason too");
  await within(server.done, 1000, "server sees the disconnect");
});

Deno.test("an already aborted signal rejects before connecting", async () => {
  const controller = new AbortController();
  const reason = new Error("cancelled early");
  controller.abort(reason);
  await assert.rejects(get(new URL("http://127.0.0.1:9/"), controller.signal), (e) => e === reason);
});

Deno.test("close() ends the body: reads give null and the server sees the close", async () => {
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    await writeAll(
      conn,
      encoder.encode("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"),
    );
    await waitClosed(conn);
  });
  const controller = new AbortController();
  const res = await get(server.url, controller.signal);
  assert.equal(decoder.decode((await res.read())!), "abc");
  const pending = res.read();
  res.close();
  res.close();
  assert.equal(await pending, null);
  controller.abort(new Error("too late to matter"));
  assert.equal(await res.read(), null);
  await within(server.done, 1000, "server sees the close");
});

Deno.test("the abort listener is removed once the body ends", async () => {
  const controller = new AbortController();
  let listeners = 0;
  const signal = controller.signal;
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = (...args: Parameters<typeof add>) => {
    listeners++;
    add(...args);
  };
  signal.removeEventListener = (...args: Parameters<typeof remove>) => {
    listeners--;
    remove(...args);
  };
  await withServe(() => new Response("done"), async (url) => {
    const res = await get(url, signal);
    assert.equal(await res.text(), "done");
  });
  assert.equal(listeners, 0);
});

Deno.test("500 small chunks in one write arrive in far fewer read() pieces", async () => {
  const deltas = Array.from({ length: 500 }, (_, i) => sse(i));
  const server = rawServer(async (conn) => {
    await readRequestHead(conn);
    await writeAll(
      conn,
      encoder.encode(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${chunked(deltas)}`),
    );
    await waitClosed(conn);
  });
  const { body, pieces } = await drain(await get(server.url));
  assert.equal(body, deltas.join(""));
  assert.ok(pieces <= 20, `${pieces} pieces for 500 chunks`);
  await server.done;
});

Deno.test({
  name: "an IPv6 loopback backend is reached through its bracketed host",
  ignore: !hasIpv6,
  async fn() {
    let head = "";
    const server = rawServer(async (conn) => {
      head = await readRequestHead(conn);
      await writeAll(conn, encoder.encode("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nv6ok"));
    }, "::1");
    assert.equal(server.url.hostname, "[::1]");
    assert.equal(await (await get(server.url)).text(), "v6ok");
    await server.done;
    assert.match(head, new RegExp(`\r\nHost: \\[::1\\]:${server.url.port}\r\n`));
  },
});

Deno.test("a host name is resolved before connecting", async () => {
  await withServe(() => new Response("by name"), async (url) => {
    const res = await get(new URL(`http://localhost:${url.port}/`));
    assert.equal(await res.text(), "by name");
  });
});

Deno.test("only http: URLs and well-formed headers are accepted", async () => {
  const signal = new AbortController().signal;
  const url = new URL("http://127.0.0.1:9/");
  await assert.rejects(get(new URL("https://127.0.0.1:9/")), TypeError);
  for (
    const headers of [{ "bad name": "x" }, { "x-a": "a\r\nInjected: 1" }, { "Content-Length": "1" }]
  ) {
    await assert.rejects(request({ method: "GET", url, headers, signal }), TypeError);
  }
});

Deno.test("transient reads return views into one reused buffer, consumed byte-exactly", async () => {
  const deltas = Array.from({ length: 200 }, (_, i) => sse(i));
  let i = 0;
  const stream = () =>
    new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (i >= deltas.length) return controller.close();
        controller.enqueue(encoder.encode(deltas[i++]));
        if (i % 50 === 0) await new Promise((r) => setTimeout(r, 1)); // several reads
      },
    });
  await withServe(
    () => new Response(stream(), { headers: { "content-type": "text/event-stream" } }),
    async (url) => {
      const res = await request({
        method: "GET",
        url,
        headers: {},
        signal: new AbortController().signal,
        transient: true,
      });
      const buffers = new Set<ArrayBufferLike>();
      let body = "";
      let pieces = 0;
      for (let p = await res.read(); p !== null; p = await res.read()) {
        buffers.add(p.buffer);
        body += decoder.decode(p, { stream: true });
        pieces++;
      }
      assert.equal(body, deltas.join(""));
      assert.ok(pieces > 1, "several reads");
      // Every piece is a view into the one read buffer: nothing is allocated per piece.
      assert.equal(buffers.size, 1, `${buffers.size} buffers for ${pieces} pieces`);
    },
  );
});
