// The test coordinator: the server side of PROTOCOL §1–6 on a real WebSocket (Deno.serve +
// Deno.upgradeWebSocket, an implementation independent of the agent's client). Random nonces,
// signatures checked with @noble/ed25519, scripted jobs, cancels, closes and auth failures.
// Used by the tests, the demo and the dev coordinator (scripts/dev_coordinator.ts).
// deno-lint-ignore-file camelcase

import * as ed from "@noble/ed25519";

export type Frame = Record<string, unknown> & { type: string };

/** How the coordinator treats one incoming connection. */
export type ConnScript =
  | "normal"
  | "auth_failed"
  | "close_before_challenge"
  | "wrong_first_frame"
  | "bad_nonce"
  | "silent";

export interface CoordinatorOptions {
  port?: number;
  /** Script for the n-th connection (0-based); default "normal". */
  script?: (n: number) => ConnScript;
  /** provider_id sent in auth_ok; default derived from the public key. */
  providerId?: (pubkey: string) => string | undefined;
  /** Extra HTTP routes (the dev coordinator's pairing API). */
  http?: (req: Request) => Response | Promise<Response> | undefined;
}

export interface JobResult {
  bytes: Uint8Array;
  chunks: number;
  terminal: Frame;
  /** Frames for the job after its terminal frame (must stay empty). */
  extra: () => Frame[];
}

interface Waiter {
  pred: (f: Frame) => boolean;
  resolve: (f: Frame) => void;
}

/** One agent connection as the coordinator sees it. */
export class CoordSession {
  readonly frames: Frame[] = [];
  readonly connectedAt = performance.now();
  authResponse: Frame | undefined;
  signatureValid = false;
  authenticated = false;
  nonce = new Uint8Array(0);
  readonly closed: Promise<{ code: number; reason: string }>;
  #waiters: Waiter[] = [];
  #closedResolve!: (v: { code: number; reason: string }) => void;

  constructor(readonly socket: WebSocket, readonly index: number) {
    this.closed = new Promise((r) => (this.#closedResolve = r));
  }

  /** @internal */
  onFrame(f: Frame): void {
    this.frames.push(f);
    this.#waiters = this.#waiters.filter((w) => (w.pred(f) ? (w.resolve(f), false) : true));
  }

  /** @internal */
  onClose(code: number, reason: string): void {
    this.#closedResolve({ code, reason });
  }

  /** The first frame (received so far or later) matching `pred`. */
  waitFor(pred: (f: Frame) => boolean): Promise<Frame> {
    const seen = this.frames.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.#waiters.push({ pred, resolve }));
  }

  /** The n-th (1-based) frame of a type. */
  nth(type: string, n: number): Promise<Frame> {
    let count = 0;
    const pred = (f: Frame) => f.type === type && ++count === n;
    const seen = this.frames.filter((f) => f.type === type);
    if (seen.length >= n) return Promise.resolve(seen[n - 1]!);
    count = seen.length;
    return new Promise((resolve) => this.#waiters.push({ pred, resolve }));
  }

  /** Sends a job and returns its id. */
  sendJob(job: {
    model_id?: string;
    request?: unknown;
    format?: string;
    deadline_ms?: number;
    job_id?: string;
  }): string {
    const job_id = job.job_id ?? crypto.randomUUID();
    this.send({
      type: "job",
      job_id,
      model_id: job.model_id,
      request: job.request ?? { messages: [{ role: "user", content: "hi" }] },
      ...(job.format ? { format: job.format } : {}),
      ...(job.deadline_ms !== undefined ? { deadline_ms: job.deadline_ms } : {}),
    });
    return job_id;
  }

  /** Collects a job's chunks until its terminal frame. */
  async collect(jobId: string): Promise<JobResult> {
    const terminal = await this.waitFor((f) =>
      f.job_id === jobId && (f.type === "job_done" || f.type === "job_error")
    );
    const parts: Uint8Array[] = [];
    let chunks = 0;
    const idx = this.frames.indexOf(terminal);
    for (const f of this.frames.slice(0, idx)) {
      if (f.type === "job_chunk" && f.job_id === jobId) {
        parts.push(Uint8Array.fromBase64(f.data as string));
        chunks++;
      }
    }
    const total = parts.reduce((n, p) => n + p.length, 0);
    const bytes = new Uint8Array(total);
    let off = 0;
    for (const p of parts) bytes.set(p, off), off += p.length;
    return {
      bytes,
      chunks,
      terminal,
      extra: () =>
        this.frames.slice(this.frames.indexOf(terminal) + 1).filter((f) => f.job_id === jobId),
    };
  }

  /** Frames for a job so far. */
  framesFor(jobId: string): Frame[] {
    return this.frames.filter((f) => f.job_id === jobId);
  }

  cancel(jobId: string): void {
    this.send({ type: "job_cancel", job_id: jobId });
  }

  send(frame: unknown): void {
    this.socket.send(JSON.stringify(frame));
  }

  sendRaw(data: string | Uint8Array<ArrayBuffer>): void {
    this.socket.send(data);
  }

  close(code?: number, reason?: string): void {
    try {
      this.socket.close(code, reason);
    } catch {
      // already closed
    }
  }
}

/**
 * A coordinator on 127.0.0.1.
 *
 * @example
 * ```ts
 * await using coord = await TestCoordinator.start();
 * const s = await coord.session(0);
 * await s.waitFor((f) => f.type === "capabilities");
 * ```
 */
export class TestCoordinator {
  readonly sessions: CoordSession[] = [];
  #server: Deno.HttpServer<Deno.NetAddr>;
  #opts: CoordinatorOptions;
  #sessionWaiters: { n: number; resolve: (s: CoordSession) => void }[] = [];
  #authWaiters: { n: number; resolve: (s: CoordSession) => void }[] = [];
  #authCount = 0;

  private constructor(opts: CoordinatorOptions) {
    this.#opts = opts;
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: opts.port ?? 0, onListen: () => {} },
      (req) => this.#handle(req),
    );
  }

  static start(opts: CoordinatorOptions = {}): Promise<TestCoordinator> {
    return Promise.resolve(new TestCoordinator(opts));
  }

  get port(): number {
    return this.#server.addr.port;
  }

  /** The WebSocket URL agents dial. */
  get url(): string {
    return `ws://127.0.0.1:${this.port}/provider/connect`;
  }

  /** The n-th (0-based) connection, once it has been accepted. */
  session(n: number): Promise<CoordSession> {
    const s = this.sessions[n];
    if (s) return Promise.resolve(s);
    return new Promise((resolve) => this.#sessionWaiters.push({ n, resolve }));
  }

  /** The n-th (0-based) connection that authenticated successfully. */
  authenticated(n: number): Promise<CoordSession> {
    const done = this.sessions.filter((s) => s.authenticated);
    if (done[n]) return Promise.resolve(done[n]);
    return new Promise((resolve) => this.#authWaiters.push({ n, resolve }));
  }

  #handle(req: Request): Response | Promise<Response> {
    const url = new URL(req.url);
    if (url.pathname === "/provider/connect" && req.headers.get("upgrade") === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      this.#accept(socket);
      return response;
    }
    const extra = this.#opts.http?.(req);
    return extra ?? new Response("not found", { status: 404 });
  }

  #accept(socket: WebSocket): void {
    const index = this.sessions.length;
    const s = new CoordSession(socket, index);
    this.sessions.push(s);
    this.#sessionWaiters = this.#sessionWaiters.filter((w) =>
      w.n === index ? (w.resolve(s), false) : true
    );
    const script = this.#opts.script?.(index) ?? "normal";
    socket.onopen = () => {
      switch (script) {
        case "close_before_challenge":
          return socket.close(1011, "scripted");
        case "wrong_first_frame":
          return s.send({ type: "auth_ok" });
        case "bad_nonce":
          return s.send({ type: "auth_challenge", nonce: "not base64!" });
        case "silent":
          return;
      }
      s.nonce = crypto.getRandomValues(new Uint8Array(32));
      s.send({ type: "auth_challenge", nonce: s.nonce.toBase64() });
    };
    socket.onmessage = async (e) => {
      if (typeof e.data !== "string") return;
      let f: Frame;
      try {
        f = JSON.parse(e.data);
      } catch {
        return;
      }
      if (f.type === "auth_response" && !s.authResponse) {
        s.authResponse = f;
        s.signatureValid = await verify(f, s.nonce);
        if (script === "auth_failed" || !s.signatureValid) {
          s.send({ type: "auth_failed", reason: s.signatureValid ? "scripted" : "bad signature" });
          return socket.close(1008, "auth failed");
        }
        const pid = this.#opts.providerId
          ? this.#opts.providerId(f.pubkey as string)
          : `prov-${String(f.pubkey).slice(0, 8)}`;
        s.send(pid === undefined ? { type: "auth_ok" } : { type: "auth_ok", provider_id: pid });
        s.authenticated = true;
        const n = this.#authCount++;
        this.#authWaiters = this.#authWaiters.filter((w) =>
          w.n === n ? (w.resolve(s), false) : true
        );
        return;
      }
      s.onFrame(f);
    };
    socket.onclose = (e) => s.onClose(e.code, e.reason);
    socket.onerror = () => {};
  }

  /** Stops listening and closes every session (a Close frame each). */
  async close(): Promise<void> {
    for (const s of this.sessions) s.close(1001, "coordinator stopping");
    await this.#server.shutdown();
    await Promise.all(this.sessions.map((s) => s.closed));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

async function verify(f: Frame, nonce: Uint8Array): Promise<boolean> {
  try {
    const pub = Uint8Array.fromBase64(f.pubkey as string);
    const sig = Uint8Array.fromBase64(f.signature as string);
    return await ed.verifyAsync(sig, nonce, pub);
  } catch {
    return false;
  }
}
