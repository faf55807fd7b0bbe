// Keep-alive connections to plain-HTTP backends (issue 13), reused across jobs by the raw
// HTTP/1.1 client (http1.ts): bounded idle connections per backend, an idle timeout below common
// servers' keep-alive timeouts, `Keep-Alive: max` honoured, and a read kept pending on every idle
// connection so one the server closed leaves the pool as soon as its close arrives.
// When a connection may go back, and when a failed request is retried, is http1.ts's business
// (docs/reliability.md, "Backend connections").

/** Idle connections kept per backend (host:port). */
export const MAX_IDLE_PER_BACKEND = 32;
/**
 * How long a connection may stay idle: below llama-server's and uvicorn's (vLLM) 5 s keep-alive
 * timeouts, so the server is not the one closing it while a request is on its way.
 */
export const IDLE_TIMEOUT_MS = 3_000;
/** Margin kept under a server's own `Keep-Alive: timeout`. */
const SERVER_TIMEOUT_MARGIN_MS = 1_000;
/** Size of the buffer each idle connection reads into (the next response's buffer). */
export const READ_BUFFER_SIZE = 4 * 1024;

/** One connection that carried a response to its end and may carry the next request. */
export class PooledConn {
  /** The read pending while the connection waits in the pool; the next response awaits it. */
  pending: Promise<number | null> | undefined;
  /** What `pending` reads into: the next response's read buffer. */
  buf: Uint8Array = new Uint8Array(0);
  /** Requests the server still allows on it (`Keep-Alive: max`), Infinity when unsaid. */
  left = Infinity;
  /** Requests it has carried. */
  uses = 0;
  idleSince = 0;
  idleMs = IDLE_TIMEOUT_MS;
  #pool: ConnectionPool;
  #idle = false;
  #spare: Uint8Array | undefined;

  constructor(readonly conn: Deno.TcpConn, readonly key: string, pool: ConnectionPool) {
    this.#pool = pool;
  }

  /** True while it waits in the pool. */
  get idle(): boolean {
    return this.#idle;
  }

  /**
   * Starts waiting in the pool: a read goes pending to notice the server closing it. It reads
   * into the buffer of the response before last on this connection (long consumed), and `used`,
   * the buffer of the response that just ended (whose last piece may still be in use), becomes
   * the next one's: two buffers per connection for its lifetime, none allocated per job.
   */
  park(now: number, used?: Uint8Array): void {
    this.#idle = true;
    this.idleSince = now;
    this.buf = this.#spare ?? new Uint8Array(READ_BUFFER_SIZE);
    // A buffer grown for a long head is not kept.
    this.#spare = used?.length === READ_BUFFER_SIZE ? used : undefined;
    const pending = this.conn.read(this.buf);
    this.pending = pending;
    // While idle, any outcome (a close, a reset, or bytes nobody asked for) ends it.
    pending.then(
      () => this.#idle && this.#pool.drop(this),
      () => this.#idle && this.#pool.drop(this),
    );
  }

  /** Leaves the pool for a request; the pending read is now the response's first read. */
  unpark(): void {
    this.#idle = false;
  }

  /** Closes the socket (idempotent); a pending read then settles with an error. */
  close(): void {
    this.#idle = false;
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** Tuning of a {@link ConnectionPool}. */
export interface PoolOptions {
  /** Idle connections kept per backend (default {@link MAX_IDLE_PER_BACKEND}). */
  maxIdlePerBackend?: number;
  /** Idle timeout in ms (default {@link IDLE_TIMEOUT_MS}). */
  idleTimeoutMs?: number;
  /** Clock (ms), for tests. */
  now?: () => number;
}

/** Counters of a pool, for tests and the bench. */
export interface PoolStats {
  /** Connections opened by requests that used this pool. */
  opened: number;
  /** Requests sent on a connection taken from the pool. */
  reused: number;
  /** Requests sent again on a fresh connection after a reused one failed before any byte. */
  retried: number;
  /** Connections waiting in the pool now. */
  idle: number;
}

/**
 * Idle keep-alive connections by backend. Most recently used first (the one least likely to have
 * been closed). Close it when done ({@link close}): every idle socket is closed.
 *
 * @example
 * ```ts
 * const pool = new ConnectionPool();
 * const res = await request({ method: "GET", url, headers: {}, signal, pool });
 * await res.text(); // read to the end: the connection goes back to the pool
 * pool.close();
 * ```
 */
export class ConnectionPool {
  readonly #idle = new Map<string, PooledConn[]>();
  readonly #max: number;
  readonly #timeoutMs: number;
  readonly #now: () => number;
  #count = 0;
  #sweep: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  readonly stats: PoolStats = { opened: 0, reused: 0, retried: 0, idle: 0 };

  constructor(opts: PoolOptions = {}) {
    this.#max = Math.max(0, opts.maxIdlePerBackend ?? MAX_IDLE_PER_BACKEND);
    this.#timeoutMs = Math.max(1, opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS);
    this.#now = opts.now ?? (() => performance.now());
  }

  /** A live idle connection to `key` (host:port), or undefined when none is left. */
  take(key: string): PooledConn | undefined {
    const list = this.#idle.get(key);
    if (list === undefined) return undefined;
    const now = this.#now();
    for (let pc = list.pop(); pc !== undefined; pc = list.pop()) {
      this.#count--;
      if (now - pc.idleSince < pc.idleMs) {
        pc.unpark();
        pc.uses++;
        this.stats.reused++;
        this.#settle(key, list);
        return pc;
      }
      pc.close();
    }
    this.#settle(key, list);
    return undefined;
  }

  /** Wraps a connection just opened so it can come back to the pool later. */
  adopt(conn: Deno.TcpConn, key: string): PooledConn {
    this.stats.opened++;
    const pc = new PooledConn(conn, key, this);
    pc.uses = 1;
    return pc;
  }

  /**
   * Puts back a connection whose response was read to its clean end; `maxRequests` and
   * `timeoutMs` are the server's `Keep-Alive` parameters when it sent them, `used` the buffer the
   * response read into (see {@link PooledConn.park}). Closed instead when
   * the pool is closed or full, or the server allows no further request.
   */
  release(pc: PooledConn, maxRequests?: number, timeoutMs?: number, used?: Uint8Array): void {
    if (maxRequests !== undefined) pc.left = maxRequests;
    else pc.left--;
    const idleMs = timeoutMs === undefined
      ? this.#timeoutMs
      : Math.min(this.#timeoutMs, timeoutMs - SERVER_TIMEOUT_MARGIN_MS);
    let list = this.#idle.get(pc.key);
    if (this.#closed || pc.left <= 0 || idleMs <= 0 || (list?.length ?? 0) >= this.#max) {
      pc.close();
      return;
    }
    if (list === undefined) this.#idle.set(pc.key, list = []);
    pc.idleMs = idleMs;
    pc.park(this.#now(), used);
    list.push(pc);
    this.#count++;
    this.stats.idle = this.#count;
    this.#armSweep();
  }

  /** Removes an idle connection that the server closed (or wrote to unasked) and closes it. */
  drop(pc: PooledConn): void {
    const list = this.#idle.get(pc.key);
    const i = list?.indexOf(pc) ?? -1;
    if (i >= 0) {
      list!.splice(i, 1);
      this.#count--;
      this.#settle(pc.key, list!);
    }
    pc.close();
  }

  /** Closes every idle connection; later releases close theirs (idempotent). */
  close(): void {
    this.#closed = true;
    for (const list of this.#idle.values()) for (const pc of list) pc.close();
    this.#idle.clear();
    this.#count = 0;
    this.stats.idle = 0;
    if (this.#sweep !== undefined) clearTimeout(this.#sweep);
    this.#sweep = undefined;
  }

  #settle(key: string, list: PooledConn[]): void {
    if (list.length === 0) this.#idle.delete(key);
    this.stats.idle = this.#count;
  }

  /** One timer for the whole pool, while it holds idle connections; it never keeps Deno alive. */
  #armSweep(): void {
    if (this.#sweep !== undefined) return;
    const sweep = setTimeout(() => {
      this.#sweep = undefined;
      const now = this.#now();
      for (const [key, list] of this.#idle) {
        for (const pc of list.filter((c) => now - c.idleSince >= c.idleMs)) {
          list.splice(list.indexOf(pc), 1);
          this.#count--;
          pc.close();
        }
        this.#settle(key, list);
      }
      if (this.#count > 0) this.#armSweep();
    }, Math.max(50, this.#timeoutMs / 4));
    Deno.unrefTimer(sweep);
    this.#sweep = sweep;
  }
}
