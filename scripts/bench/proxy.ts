// A TCP proxy on 127.0.0.1 between the agent and the coordinator that can stall: once armed, it
// stops reading from the agent for a while after N more bytes went up, which is a coordinator
// that stops reading its socket (Deno's server WebSocket cannot pause reading; this can).

const READ_SIZE = 64 * 1024;
const MAX_READS = 100_000_000;

/** A stall that happened: when (epoch ms), how long, and how many bytes had gone up by then. */
export interface Stall {
  at: number;
  ms: number;
  upBytes: number;
}

export class StallProxy {
  readonly #listener: Deno.TcpListener;
  readonly #target: number;
  readonly #conns = new Set<Deno.Conn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;
  #armed: { at: number; ms: number; ended: () => void } | undefined;
  #stalled: Promise<void> | undefined;
  /** Bytes forwarded agent → coordinator and back. */
  upBytes = 0;
  downBytes = 0;
  readonly stalls: Stall[] = [];

  constructor(targetPort: number) {
    this.#target = targetPort;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accepting = this.#accept();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  /**
   * After `afterBytes` more bytes from the agent, stop reading from it for `ms`. Resolves when
   * that stall is over (never, if not that many bytes come).
   */
  arm(afterBytes: number, ms: number): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#armed = { at: this.upBytes + afterBytes, ms, ended: resolve };
    return promise;
  }

  async #accept(): Promise<void> {
    for (let i = 0; i < 1000; i++) {
      let agent: Deno.TcpConn;
      try {
        agent = await this.#listener.accept();
      } catch {
        return; // closed
      }
      let coord: Deno.TcpConn;
      try {
        coord = await Deno.connect({ hostname: "127.0.0.1", port: this.#target });
      } catch {
        agent.close();
        continue;
      }
      agent.setNoDelay(true);
      coord.setNoDelay(true);
      this.#conns.add(agent).add(coord);
      const task = Promise.all([this.#pump(agent, coord, true), this.#pump(coord, agent, false)])
        .then(() => {});
      this.#tasks.add(task);
    }
  }

  async #pump(from: Deno.Conn, to: Deno.Conn, up: boolean): Promise<void> {
    const buf = new Uint8Array(READ_SIZE);
    try {
      for (let i = 0; i < MAX_READS; i++) {
        if (up && this.#stalled) await this.#stalled;
        const n = await from.read(buf);
        if (n === null) break;
        for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
        if (!up) {
          this.downBytes += n;
          continue;
        }
        this.upBytes += n;
        const armed = this.#armed;
        if (armed && this.upBytes >= armed.at) {
          this.#armed = undefined;
          this.stalls.push({
            at: performance.timeOrigin + performance.now(),
            ms: armed.ms,
            upBytes: this.upBytes,
          });
          this.#stalled = new Promise((r) => setTimeout(r, armed.ms)).then(() => {
            this.#stalled = undefined;
            armed.ended();
          });
        }
      }
    } catch {
      // one side went away
    }
    for (const c of [from, to]) {
      try {
        c.close();
      } catch {
        // closed by the other pump
      }
      this.#conns.delete(c);
    }
  }

  /** Stops listening and drops every connection. */
  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // closed before
    }
    await this.#accepting;
    for (const c of this.#conns) {
      try {
        c.close();
      } catch {
        // closed meanwhile
      }
    }
    await Promise.all(this.#tasks);
    await this.#stalled;
  }
}
