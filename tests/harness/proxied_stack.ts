// The in-process stack (stack.ts) with the agent dialling the coordinator through a TcpProxy,
// for fault injection: every connection the agent opens is kept, its terminal frames recorded as
// it sends them, and the proxy can be closed (connections refused) and reopened on its port.

import { Backoff } from "../../src/link/backoff.ts";
import type { FinishedJob } from "../../src/jobs/job.ts";
import { connectWs, type WsClient } from "../../src/link/ws.ts";
import type { CoordSession } from "./coordinator.ts";
import { TcpProxy } from "./proxy.ts";
import { type Stack, type StackOptions, startStack } from "./stack.ts";
import { within } from "./agent_process.ts";

/** A terminal frame (job_done / job_error) the agent tried to send on one of its connections. */
export interface Sent {
  /** Index of the connection in {@link ProxiedStack.links}. */
  link: number;
  type: string;
  jobId: string | undefined;
  /** Whether that connection was still open when the frame was handed to it. */
  open: boolean;
  at: number;
}

export interface ProxiedStack {
  stack: Stack;
  /** The proxy in front of the coordinator (a new one after {@link reopenProxy}). */
  readonly proxy: TcpProxy;
  terminals: Sent[];
  /** The agent's connections, in dial order. */
  links: WsClient[];
  /** Every job the agent finished or refused. */
  finished: FinishedJob[];
  /** Stops the proxy: the agent's dials are refused until {@link reopenProxy}. */
  closeProxy(): Promise<void>;
  /** A fresh proxy on the same port. */
  reopenProxy(): TcpProxy;
  stop(): Promise<void>;
}

/**
 * Starts the stack behind a proxy. Defaults: backoff base 100 ms without jitter, a drain of
 * 1 s (so a failing test does not wait out the default 30 s).
 */
export async function startProxiedStack(opts: StackOptions = {}): Promise<ProxiedStack> {
  const ready = Promise.withResolvers<void>();
  let proxy: TcpProxy | undefined;
  let port = 0;
  const terminals: Sent[] = [];
  const links: WsClient[] = [];
  const stack = await startStack({
    limits: "[limits]\nmax_concurrent = 8\ndrain_timeout_s = 1",
    ...opts,
    session: {
      backoff: new Backoff({ baseMs: 100, random: () => 0.5 }),
      ...opts.session,
      connect: async (o) => {
        await ready.promise;
        const ws = await connectWs({
          ...o,
          url: new URL(`ws://127.0.0.1:${port}/provider/connect`),
        });
        const link = links.push(ws) - 1;
        const send = ws.send.bind(ws);
        ws.send = (text: string) => {
          const m = /^\{"type":"(job_done|job_error)","job_id":"([^"]+)"/.exec(text);
          if (m) {
            terminals.push({
              link,
              type: m[1]!,
              jobId: m[2],
              open: ws.open,
              at: performance.now(),
            });
          }
          return send(text);
        };
        return ws;
      },
    },
  });
  const target = { hostname: "127.0.0.1", port: stack.coord.port };
  proxy = TcpProxy.start({ target });
  port = proxy.port;
  ready.resolve();
  const finished: FinishedJob[] = [];
  stack.agent.onJobFinished((j) => finished.push(j));
  return {
    stack,
    get proxy() {
      if (!proxy) throw new Error("the proxy is closed");
      return proxy;
    },
    terminals,
    links,
    finished,
    async closeProxy() {
      const p = proxy;
      proxy = undefined;
      await p?.close();
    },
    reopenProxy() {
      proxy = TcpProxy.start({ target, port });
      return proxy;
    },
    async stop() {
      await stack.stop();
      await proxy?.close();
    },
  };
}

/** Runs `fn` once the first session has authenticated and sent its capabilities. */
export async function withProxiedStack(
  opts: StackOptions,
  fn: (rig: ProxiedStack & { first: CoordSession }) => Promise<void>,
  waitMs = 10_000,
): Promise<void> {
  const rig = await startProxiedStack(opts);
  try {
    const first = await within(rig.stack.coord.authenticated(0), waitMs, "first auth");
    await within(first.waitFor((f) => f.type === "capabilities"), waitMs, "first capabilities");
    await fn(Object.assign(rig, { first }));
  } finally {
    await rig.stop();
  }
}
