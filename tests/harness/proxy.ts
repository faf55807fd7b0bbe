// A TCP proxy on 127.0.0.1 between the agent and the coordinator, for fault injection: it can
// freeze a link (stop reading and forwarding, keep both sockets open: a half-open or stalled
// peer), kill it (drop both sockets, no Close frame), throttle it, resume it; optionally TLS.

import { sleep } from "../../src/timers.ts";
/** "up": client (agent) → target (coordinator); "down": target → client. */
export type Direction = "up" | "down";

export interface ProxyOptions {
  /** Where links are forwarded to (plain TCP). */
  target: { hostname: string; port: number };
  /** Port to listen on (default 0: any free port). */
  port?: number;
  /** Terminate TLS on the listening side with this certificate chain and key (PEM). */
  tls?: { cert: string; key: string };
  /** Called after each piece of data was forwarded (also settable later on the proxy). */
  onForward?: ForwardHook;
}

export type ForwardHook = (dir: Direction, bytes: Uint8Array, link: ProxyLink) => void;

const READ_SIZE = 64 * 1024;
const DIRECTIONS: readonly Direction[] = ["up", "down"];
/** A throttled direction forwards in slices that take this long at its rate. */
const SLICE_MS = 10;

/** One proxied connection: the accepted client socket and its socket to the target. */
export class ProxyLink {
  readonly index: number;
  readonly acceptedAt = performance.now();
  /** Bytes forwarded so far per direction. */
  readonly forwarded: Record<Direction, number> = { up: 0, down: 0 };
  /** Why the link ended ("killed", "client closed", "target closed", an error), once it has. */
  endReason: string | undefined;
  /** Resolves when both pumps have stopped and both sockets are closed. */
  readonly done: Promise<void>;
  #client: Deno.Conn;
  #upstream: Deno.Conn | undefined;
  #frozen: Record<Direction, PromiseWithResolvers<void> | undefined> = {
    up: undefined,
    down: undefined,
  };
  #rate: Record<Direction, number | undefined> = { up: undefined, down: undefined };
  #latency: Record<Direction, number> = { up: 0, down: 0 };
  #ended = new AbortController();
  #target: { hostname: string; port: number };
  #hook: () => ForwardHook | undefined;

  constructor(
    index: number,
    client: Deno.Conn,
    target: { hostname: string; port: number },
    hook: () => ForwardHook | undefined,
    frozen: boolean,
  ) {
    this.index = index;
    this.#client = client;
    this.#target = target;
    this.#hook = hook;
    if (frozen) this.freeze();
    this.done = this.#run();
  }

  get ended(): boolean {
    return this.#ended.signal.aborted;
  }

  /** Stops reading and forwarding in one direction, or both; the sockets stay open. */
  freeze(dir?: Direction): void {
    for (const d of dir ? [dir] : DIRECTIONS) this.#frozen[d] ??= Promise.withResolvers<void>();
  }

  /** Undoes {@link freeze}. */
  resume(dir?: Direction): void {
    for (const d of dir ? [dir] : DIRECTIONS) {
      this.#frozen[d]?.resolve();
      this.#frozen[d] = undefined;
    }
  }

  /** Limits a direction to `bytesPerSecond` (undefined: full speed). */
  throttle(dir: Direction, bytesPerSecond: number | undefined): void {
    this.#rate[dir] = bytesPerSecond;
  }

  /** Holds every piece in a direction for `ms` before forwarding it (a longer round trip). */
  delay(dir: Direction, ms: number): void {
    this.#latency[dir] = ms;
  }

  /** Drops both sockets at once: each peer sees the TCP stream end, never a Close frame. */
  kill(): void {
    this.#end("killed");
  }

  #end(reason: string): void {
    if (this.#ended.signal.aborted) return;
    this.endReason = reason;
    this.#ended.abort();
    for (const c of [this.#client, this.#upstream]) {
      try {
        c?.close();
      } catch { /* closed already */ }
    }
    for (const d of DIRECTIONS) this.#frozen[d]?.resolve();
  }

  async #run(): Promise<void> {
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect(this.#target);
    } catch (err) {
      this.#end(`target unreachable: ${(err as Error).message}`);
      return;
    }
    if (this.ended) {
      upstream.close();
      return;
    }
    this.#upstream = upstream;
    await Promise.all([
      this.#pump("up", this.#client, upstream),
      this.#pump("down", upstream, this.#client),
    ]);
  }

  /** Waits while the direction is frozen; false once the link has ended. */
  async #gate(dir: Direction): Promise<boolean> {
    for (let f = this.#frozen[dir]; f && !this.ended; f = this.#frozen[dir]) await f.promise;
    return !this.ended;
  }

  async #pump(dir: Direction, from: Deno.Conn, to: Deno.Conn): Promise<void> {
    const buf = new Uint8Array(READ_SIZE);
    try {
      for (;;) {
        if (!(await this.#gate(dir))) return;
        const rate = this.#rate[dir];
        const max = rate === undefined
          ? READ_SIZE
          : Math.max(1, Math.min(READ_SIZE, Math.floor((rate * SLICE_MS) / 1000)));
        const started = performance.now();
        const n = await from.read(buf.subarray(0, max));
        if (n === null) {
          this.#end(dir === "up" ? "client closed" : "target closed");
          return;
        }
        if (this.#latency[dir] > 0) await this.#sleep(this.#latency[dir]);
        if (!(await this.#gate(dir))) return;
        const piece = buf.subarray(0, n);
        for (let off = 0; off < n;) off += await to.write(piece.subarray(off));
        this.forwarded[dir] += n;
        this.#hook()?.(dir, piece, this);
        if (rate !== undefined) {
          const due = started + (n * 1000) / rate - performance.now();
          if (due > 0) await this.#sleep(due);
        }
      }
    } catch (err) {
      this.#end(this.ended ? this.endReason ?? "killed" : (err as Error).message);
    }
  }

  #sleep(ms: number): Promise<void> {
    return sleep(ms, this.#ended.signal);
  }
}

/**
 * A proxy listening on 127.0.0.1; every accepted connection becomes a {@link ProxyLink} to the
 * target. Links accepted while the proxy is frozen start frozen.
 *
 * @example
 * ```ts
 * const proxy = TcpProxy.start({ target: { hostname: "127.0.0.1", port: coord.port } });
 * const link = await proxy.link(0);
 * link.freeze(); // the coordinator stops reading and answering, the socket stays open
 * await proxy.close();
 * ```
 */
export class TcpProxy {
  readonly links: ProxyLink[] = [];
  readonly port: number;
  /** Called after each piece of data any link forwarded. */
  onForward: ForwardHook | undefined;
  #listener: Deno.Listener;
  #accepting: Promise<void>;
  #opts: ProxyOptions;
  #frozen = false;
  #waiters: { n: number; resolve: (l: ProxyLink) => void }[] = [];

  private constructor(opts: ProxyOptions) {
    this.#opts = opts;
    this.onForward = opts.onForward;
    const addr = { hostname: "127.0.0.1", port: opts.port ?? 0 };
    this.#listener = opts.tls
      ? Deno.listenTls({ ...addr, ...opts.tls, alpnProtocols: ["http/1.1"] })
      : Deno.listen(addr);
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept();
  }

  static start(opts: ProxyOptions): TcpProxy {
    return new TcpProxy(opts);
  }

  /** The WebSocket URL an agent dials through this proxy. */
  wsUrl(host = "127.0.0.1", path = "/provider/connect"): string {
    return `${this.#opts.tls ? "wss" : "ws"}://${host}:${this.port}${path}`;
  }

  /** The n-th (0-based) accepted link, once accepted. */
  link(n: number): Promise<ProxyLink> {
    const l = this.links[n];
    if (l) return Promise.resolve(l);
    return new Promise((resolve) => this.#waiters.push({ n, resolve }));
  }

  /** The links that have not ended. */
  get open(): ProxyLink[] {
    return this.links.filter((l) => !l.ended);
  }

  /** Freezes every open link and those accepted from now on. */
  freeze(): void {
    this.#frozen = true;
    for (const l of this.open) l.freeze();
  }

  resume(): void {
    this.#frozen = false;
    for (const l of this.open) l.resume();
  }

  /** Kills every open link. */
  kill(): void {
    for (const l of this.open) l.kill();
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // listener closed
      }
      const link = new ProxyLink(
        this.links.length,
        conn,
        this.#opts.target,
        () => this.onForward,
        this.#frozen,
      );
      this.links.push(link);
      this.#waiters = this.#waiters.filter((w) =>
        w.n === link.index ? (w.resolve(link), false) : true
      );
    }
  }

  /** Stops listening and kills every link; resolves once everything is closed. */
  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch { /* closed already */ }
    await this.#accepting;
    this.kill();
    await Promise.all(this.links.map((l) => l.done));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
