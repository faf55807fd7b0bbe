// Keep-alive connection reuse (src/backends/pool.ts through http1.ts) against real loopback
// servers written byte by byte (Deno.listen), which close idle connections at the worst moment,
// answer `Connection: close`, limit requests, reset mid-response or send bytes nobody asked for;
// and jobs through the real agent reusing one backend connection.

import assert from "node:assert/strict";
import { request } from "../../src/backends/http1.ts";
import { ConnectionPool } from "../../src/backends/pool.ts";
import { BackendError } from "../../src/errors.ts";
import { TcpProxy } from "../harness/proxy.ts";
import { withSession } from "../harness/stack.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const WAIT_MS = 5_000;

/** One accepted connection as a scripted server sees it. */
class ServerConn {
  #buf = "";
  /** Resolves once the client closed its side (read returned EOF or failed). */
  readonly clientGone: Promise<void>;
  #gone = Promise.withResolvers<void>();
  #wake: (() => void) | undefined;
  #stopped = false;
  closed = false;

  /** `heads`: stop reading once that many request heads arrived (the rest stays unread). */
  constructor(readonly conn: Deno.TcpConn, readonly index: number, heads = Infinity) {
    this.clientGone = this.#gone.promise;
    void this.#pump(heads);
  }

  async #pump(heads: number): Promise<void> {
    const chunk = new Uint8Array(16 * 1024);
    let seen = 0;
    try {
      for (let n; seen < heads && (n = await this.conn.read(chunk)) !== null;) {
        const text = decoder.decode(chunk.subarray(0, n));
        seen += text.split("\r\n\r\n").length - 1;
        this.#buf += text;
        this.#wake?.();
      }
      if (seen >= heads) {
        this.#stopped = true; // the script reads the rest itself, or never
        return;
      }
    } catch {
      // reset, or closed by the script
    }
    this.#gone.resolve();
    this.#wake?.();
  }

  /** The next request's head and body as text, or null once the client is gone. */
  async request(): Promise<string | null> {
    for (let i = 0; i < 10_000; i++) {
      const end = this.#buf.indexOf("\r\n\r\n");
      if (end >= 0) {
        const length = Number(/content-length: (\d+)/i.exec(this.#buf.slice(0, end))?.[1] ?? 0);
        if (this.#buf.length >= end + 4 + length) {
          const req = this.#buf.slice(0, end + 4 + length);
          this.#buf = this.#buf.slice(end + 4 + length);
          return req;
        }
      }
      const more = new Promise<void>((r) => this.#wake = r);
      if (await Promise.race([more.then(() => false), this.#gone.promise.then(() => true)])) {
        if (this.#buf.indexOf("\r\n\r\n") < 0) return null;
      }
    }
    return null;
  }

  async write(text: string): Promise<void> {
    const bytes = encoder.encode(text);
    for (let off = 0; off < bytes.length;) off += await this.conn.write(bytes.subarray(off));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
    if (this.#stopped) this.#gone.resolve(); // no pump left to see the client go
  }
}

/** A server that runs `script` for every connection it accepts (in order), until closed. */
class ScriptedServer {
  readonly conns: ServerConn[] = [];
  readonly url: URL;
  readonly #listener: Deno.TcpListener;
  readonly #accepting: Promise<void>;
  readonly #tasks: Promise<void>[] = [];

  constructor(script: (c: ServerConn) => Promise<void>, heads?: (index: number) => number) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.url = new URL(`http://127.0.0.1:${listener.addr.port}/v1/chat/completions`);
    this.#accepting = (async () => {
      for (;;) {
        let conn: Deno.TcpConn;
        try {
          conn = await listener.accept();
        } catch {
          return;
        }
        const c = new ServerConn(conn, this.conns.length, heads?.(this.conns.length));
        this.conns.push(c);
        this.#tasks.push(script(c).catch(() => {}).finally(() => c.close()));
      }
    })();
  }

  async close(): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const c of this.conns) c.close();
    await Promise.all(this.#tasks);
    await Promise.all(this.conns.map((c) => c.clientGone));
  }
}

/** Answers requests on a connection with `reply(n)` (n: 0-based request on it) until it ends. */
function answering(reply: (n: number, c: ServerConn) => string | null) {
  return async (c: ServerConn) => {
    for (let n = 0;; n++) {
      if ((await c.request()) === null) return;
      const text = reply(n, c);
      if (text === null) return; // close without answering
      await c.write(text);
    }
  };
}

const ok = (body: string, extra = "") =>
  `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n${extra}\r\n${body}`;
const chunked = (parts: string[], extra = "") =>
  `HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n${extra}\r\n` +
  parts.map((p) => `${p.length.toString(16)}\r\n${p}\r\n`).join("") + "0\r\n\r\n";

async function post(url: URL, pool: ConnectionPool, signal = AbortSignal.timeout(WAIT_MS)) {
  const res = await request({
    method: "POST",
    url,
    headers: { "content-type": "application/json" },
    body: encoder.encode('{"model":"m"}'),
    signal,
    pool,
  });
  return { status: res.status, text: await res.text(), res };
}

/** Polls `cond` every 5 ms for at most `ms` (for state with no event of its own). */
async function until(cond: () => boolean, what: string, ms = WAIT_MS): Promise<void> {
  for (const t0 = performance.now(); !cond();) {
    if (performance.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function withPool(
  script: (c: ServerConn) => Promise<void>,
  fn: (srv: ScriptedServer, pool: ConnectionPool) => Promise<void>,
  opts: ConstructorParameters<typeof ConnectionPool>[0] = {},
  heads?: (index: number) => number,
): Promise<void> {
  const srv = new ScriptedServer(script, heads);
  const pool = new ConnectionPool(opts);
  try {
    await fn(srv, pool);
  } finally {
    pool.close();
    await srv.close();
  }
}

Deno.test("responses read to their end leave the connection for the next request: 6 requests, 1 connection", async () => {
  await withPool(
    answering((n) => n % 2 ? chunked(["da", "ta: ", `${n}`]) : ok(`body ${n}`)),
    async (srv, pool) => {
      for (let i = 0; i < 6; i++) {
        const r = await post(srv.url, pool);
        assert.equal(r.text, i % 2 ? `data: ${i}` : `body ${i}`);
      }
      assert.equal(srv.conns.length, 1);
      assert.deepEqual(pool.stats, { opened: 1, reused: 5, retried: 0, idle: 1 });
    },
  );
});

Deno.test("the request asks for keep-alive only with a pool; without one it says Connection: close", async () => {
  const heads: string[] = [];
  const script = async (c: ServerConn) => {
    const req = await c.request();
    if (req !== null) heads.push(req);
    await c.write(ok("x"));
  };
  await withPool(script, async (srv, pool) => {
    await post(srv.url, pool);
    const res = await request({
      method: "GET",
      url: srv.url,
      headers: {},
      signal: AbortSignal.timeout(WAIT_MS),
    });
    await res.text();
  });
  assert.doesNotMatch(heads[0]!, /connection:/i);
  assert.match(heads[1]!, /\r\nConnection: close\r\n/);
});

Deno.test("Connection: close, HTTP/1.0, a body delimited by the close, or bytes after the body: never reused", async () => {
  const cases: [string, string][] = [
    ["Connection: close", ok("a", "Connection: close\r\n")],
    ["HTTP/1.0", "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\na"],
    ["close-delimited", "HTTP/1.1 200 OK\r\n\r\na"],
    ["bytes after the body", ok("a") + "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb"],
  ];
  for (const [what, reply] of cases) {
    await withPool(
      answering((_n, c) => {
        if (what === "close-delimited") queueMicrotask(() => c.close());
        return reply;
      }),
      async (srv, pool) => {
        for (let i = 0; i < 3; i++) assert.equal((await post(srv.url, pool)).text, "a", what);
        assert.equal(srv.conns.length, 3, what);
        assert.equal(pool.stats.reused, 0, what);
        assert.equal(pool.stats.idle, 0, what);
      },
    );
  }
});

Deno.test("Keep-Alive: max is honoured: a connection carries no more requests than the server allows", async () => {
  // Like Apache: max counts down the requests still allowed after this one.
  await withPool(
    answering((n) => ok("k", `Keep-Alive: timeout=5, max=${2 - n}\r\n`)),
    async (srv, pool) => {
      for (let i = 0; i < 6; i++) assert.equal((await post(srv.url, pool)).text, "k");
      assert.equal(srv.conns.length, 2); // 3 requests each: max=2, 1, 0
      assert.equal(pool.stats.reused, 4);
    },
  );
});

Deno.test("an idle connection is closed after the idle timeout, and after the server's own Keep-Alive timeout less a margin", async () => {
  await withPool(answering(() => ok("i")), async (srv, pool) => {
    await post(srv.url, pool);
    assert.equal(pool.stats.idle, 1);
    await srv.conns[0]!.clientGone; // the pool closed it
    assert.equal(pool.stats.idle, 0);
    await post(srv.url, pool);
    assert.equal(srv.conns.length, 2);
    assert.equal(pool.stats.retried, 0);
  }, { idleTimeoutMs: 100 });
  // timeout=1 leaves 0 ms after the 1 s margin: not kept at all.
  await withPool(answering(() => ok("t", "Keep-Alive: timeout=1\r\n")), async (srv, pool) => {
    await post(srv.url, pool);
    assert.equal(pool.stats.idle, 0);
    await srv.conns[0]!.clientGone;
  });
});

Deno.test("a server closing an idle connection: the pool notices at once, the next request opens a fresh one", async () => {
  await withPool(
    async (c) => {
      if ((await c.request()) === null) return;
      await c.write(ok("a"));
      if (c.index === 0) c.close(); // the server's keep-alive timeout, between requests
      else await answering(() => ok("b"))(c);
    },
    async (srv, pool) => {
      assert.equal((await post(srv.url, pool)).text, "a");
      await until(() => pool.stats.idle === 0, "the pool to drop the closed connection");
      assert.equal((await post(srv.url, pool)).text, "a");
      assert.equal(srv.conns.length, 2);
      assert.equal(pool.stats.retried, 0);
    },
  );
});

Deno.test("closed at the worst moment (request on the reused connection, no byte back): sent once more on a fresh connection", async () => {
  // The server takes the request off the reused connection and closes without a byte
  // (eof), or with the request still unread (reset): either way no response byte arrived.
  for (const how of ["eof", "reset"] as const) {
    const seen: number[] = [];
    await withPool(
      async (c) => {
        for (let n = 0;; n++) {
          if (c.index === 0 && n === 1 && how === "reset") {
            // The pump stopped after one head: wait for a byte of the second request and close
            // with the rest of it unread, which makes the kernel answer with a reset.
            await c.conn.read(new Uint8Array(1));
            seen.push(c.index);
            return;
          }
          if ((await c.request()) === null) return;
          seen.push(c.index);
          if (c.index === 0 && n === 1) return; // read it whole, close without answering
          await c.write(ok(`r${c.index}`));
        }
      },
      async (srv, pool) => {
        assert.equal((await post(srv.url, pool)).text, "r0");
        const second = await post(srv.url, pool);
        assert.equal(second.text, "r1", how);
        assert.equal(pool.stats.retried, 1, how);
        assert.equal(srv.conns.length, 2, how);
        assert.deepEqual(seen, [0, 0, 1], how);
      },
      {},
      (index) => how === "reset" && index === 0 ? 1 : Infinity,
    );
  }
});

Deno.test("a fresh connection closed before any byte is not retried: backend_unreachable, one request", async () => {
  await withPool(answering(() => null), async (srv, pool) => {
    const err = await post(srv.url, pool).catch((e) => e);
    assert.ok(err instanceof BackendError && err.code === "backend_unreachable", String(err));
    assert.equal(srv.conns.length, 1);
    assert.equal(pool.stats.retried, 0);
  });
});

Deno.test("a reset mid-response on a reused connection is an error, never retried, and the connection is gone", async () => {
  await withPool(
    async (c) => {
      for (let n = 0;; n++) {
        if ((await c.request()) === null) return;
        if (n === 1) {
          await c.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel");
          return; // drops the socket mid-chunk
        }
        await c.write(ok("first"));
      }
    },
    async (srv, pool) => {
      assert.equal((await post(srv.url, pool)).text, "first");
      const err = await post(srv.url, pool).catch((e) => e);
      assert.ok(err instanceof BackendError && err.code === "internal", String(err));
      assert.match(err.message, /stream broke/);
      assert.equal(pool.stats.retried, 0);
      assert.equal(pool.stats.idle, 0);
      assert.equal(srv.conns.length, 1);
    },
  );
});

Deno.test("cancel mid-body, a body left unread, and an error body cut at its limit close the connection", async () => {
  await withPool(
    answering((n) =>
      n === 0 ? "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n" : ok("z")
    ),
    async (srv, pool) => {
      // 1: abort while the body is still open.
      const ac = new AbortController();
      const res = await request({
        method: "GET",
        url: srv.url,
        headers: {},
        signal: ac.signal,
        pool,
      });
      assert.equal(decoder.decode((await res.read())!), "abc");
      ac.abort(new Error("cancelled"));
      await assert.rejects(res.read(), /cancelled/);
      await srv.conns[0]!.clientGone;
      // 2: head read, body never read, closed.
      const r2 = await request({
        method: "GET",
        url: srv.url,
        headers: {},
        signal: AbortSignal.timeout(WAIT_MS),
        pool,
      });
      r2.close();
      await srv.conns[1]!.clientGone;
      // 3: an error body read only up to its limit.
      const r3 = await request({
        method: "GET",
        url: srv.url,
        headers: {},
        signal: AbortSignal.timeout(WAIT_MS),
        pool,
      });
      assert.equal(await r3.text(0), "");
      await srv.conns[2]!.clientGone;
      assert.equal(pool.stats.idle, 0);
      assert.equal(pool.stats.reused, 0);
    },
  );
});

Deno.test("idle connections are bounded per backend; close() closes every idle one", async () => {
  await withPool(answering(() => ok("p")), async (srv, pool) => {
    const open = await Promise.all(
      Array.from(
        { length: 4 },
        () =>
          request({
            method: "GET",
            url: srv.url,
            headers: {},
            signal: AbortSignal.timeout(WAIT_MS),
            pool,
          }),
      ),
    );
    assert.equal(srv.conns.length, 4);
    for (const r of open) assert.equal(await r.text(), "p");
    assert.equal(pool.stats.idle, 2);
    await Promise.all([srv.conns[2]!.clientGone, srv.conns[3]!.clientGone]);
    pool.close();
    await Promise.all(srv.conns.map((c) => c.clientGone));
    assert.equal(pool.stats.idle, 0);
  }, { maxIdlePerBackend: 2 });
});

Deno.test("jobs through the real agent reuse one backend connection across sequential jobs", async () => {
  let proxy: TcpProxy | undefined;
  await withSession({
    backends: [{ kind: "vllm", models: ["m"] }],
    backendsToml: (fakes) => {
      proxy = TcpProxy.start({ target: { hostname: "127.0.0.1", port: fakes[0]!.port } });
      return `[[backends]]\nkind = "vllm"\nurl = "http://127.0.0.1:${proxy.port}"\n`;
    },
  }, async (stack, s) => {
    try {
      const before = proxy!.links.length; // discovery's own requests
      for (let i = 0; i < 12; i++) {
        const r = await s.collect(s.sendJob({ model_id: "m" }));
        assert.equal(r.terminal.type, "job_done", JSON.stringify(r.terminal));
        assert.equal(r.extra().length, 0);
        // Pieces are views into the connection's two alternating buffers: none overwritten.
        const text = decoder.decode(r.bytes);
        const deltas = [...text.matchAll(/"content":"(tok\d+ )"/g)].map((m) => m[1]).join("");
        assert.equal(deltas, "tok0 tok1 tok2 tok3 tok4 ", `job ${i}`);
        assert.ok(text.endsWith("data: [DONE]\n\n"), `job ${i} ends with [DONE]`);
      }
      assert.equal(proxy!.links.length - before, 1, "12 jobs, one new backend connection");
      assert.equal(stack.agent.backendPool.stats.reused, 11);
    } finally {
      await proxy!.close();
    }
  });
});

Deno.test("through the real agent: a reused connection dropped right after the request went out is retried once; the job is relayed once", async () => {
  let proxy: TcpProxy | undefined;
  await withSession({
    backends: [{ kind: "vllm", models: ["m"] }],
    backendsToml: (fakes) => {
      proxy = TcpProxy.start({ target: { hostname: "127.0.0.1", port: fakes[0]!.port } });
      return `[[backends]]\nkind = "vllm"\nurl = "http://127.0.0.1:${proxy.port}"\n`;
    },
  }, async (stack, s) => {
    try {
      // The second completion request on any backend connection: forwarded, then both sockets
      // dropped before a byte of the answer (the backend got it: the worst case of the rule).
      const posts = new Map<unknown, number>();
      proxy!.onForward = (dir, bytes, link) => {
        if (dir !== "up" || !decoder.decode(bytes).includes("POST /v1/chat/completions")) return;
        const n = (posts.get(link) ?? 0) + 1;
        posts.set(link, n);
        if (n === 2) link.kill();
      };
      const a = await s.collect(s.sendJob({ model_id: "m" }));
      assert.equal(a.terminal.type, "job_done", JSON.stringify(a.terminal));
      const b = await s.collect(s.sendJob({ model_id: "m" }));
      assert.equal(b.terminal.type, "job_done", JSON.stringify(b.terminal));
      const deltas = (bytes: Uint8Array) =>
        [...decoder.decode(bytes).matchAll(/"content":"(tok\d+ )"/g)].map((m) => m[1]).join("");
      assert.equal(deltas(b.bytes), "tok0 tok1 tok2 tok3 tok4 ", "every delta, once");
      assert.equal(decoder.decode(b.bytes).split("[DONE]").length, 2, "one [DONE]");
      assert.equal(b.extra().length, 0);
      assert.equal(stack.agent.backendPool.stats.retried, 1);
      assert.equal(posts.size, 2, "job b went out on the reused connection, then on a fresh one");
    } finally {
      await proxy!.close();
    }
  });
});
