// The coordinator restarting 50 times in a row (issue 6, PROTOCOL §6): connections dying before
// the challenge, mid-handshake, after auth, with and without a Close frame, with a job in flight,
// and a coordinator gone entirely. Backoff per §6; no growth in open fds, timers or heap.

import assert from "node:assert/strict";
import v8 from "node:v8";
import vm from "node:vm";
import { Backoff } from "../../src/link/backoff.ts";
import { setSink } from "../../src/log.ts";
import type { ConnScript } from "../harness/coordinator.ts";
import { withProxiedStack } from "../harness/proxied_stack.ts";
import { within } from "../harness/agent_process.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";
const WAIT = 10_000;

/** A Backoff that records every delay it hands out and the failure count behind it. */
class RecordingBackoff extends Backoff {
  readonly given: { failures: number; delay: number; r: number }[] = [];
  #randoms: number[];
  #i = 0;
  constructor(baseMs: number, capMs: number, randoms: number[]) {
    let next = 0;
    super({ baseMs, capMs, random: () => randoms[next++ % randoms.length]! });
    this.#randoms = randoms;
  }
  override delay(): number {
    const r = this.#randoms[this.#i++ % this.#randoms.length]!;
    const delay = super.delay();
    this.given.push({ failures: this.failures, delay, r });
    return delay;
  }
}

/** §6: base doubling per consecutive pre-auth failure, capped, times a factor in [0.8, 1.2). */
function expectedDelay(failures: number, r: number, baseMs: number, capMs: number): number {
  const raw = Math.min(capMs, baseMs * 2 ** Math.max(0, failures - 1));
  return Math.round(raw * (0.8 + 0.4 * r));
}

/** Live timers and intervals, counted by wrapping the global timer functions. */
class TimerCount {
  readonly live = new Set<unknown>();
  #saved = {
    setTimeout: globalThis.setTimeout,
    setInterval: globalThis.setInterval,
    clearTimeout: globalThis.clearTimeout,
    clearInterval: globalThis.clearInterval,
  };

  install(): void {
    const s = this.#saved;
    const live = this.live;
    // deno-lint-ignore no-explicit-any
    const g = globalThis as any;
    g.setTimeout = (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
      const id = s.setTimeout(
        (...a: unknown[]) => {
          live.delete(id);
          fn(...a);
        },
        ms,
        ...args,
      );
      live.add(id);
      return id;
    };
    g.setInterval = (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
      const id = s.setInterval(fn, ms, ...args);
      live.add(id);
      return id;
    };
    g.clearTimeout = (id: unknown) => {
      live.delete(id);
      s.clearTimeout(id as number);
    };
    g.clearInterval = (id: unknown) => {
      live.delete(id);
      s.clearInterval(id as number);
    };
  }

  uninstall(): void {
    Object.assign(globalThis, this.#saved);
  }
}

function openFds(): number | undefined {
  try {
    return [...Deno.readDirSync("/proc/self/fd")].length;
  } catch {
    return undefined; // not Linux
  }
}

function heapAfterGc(): number {
  v8.setFlagsFromString("--expose-gc");
  (vm.runInNewContext("gc") as () => void)();
  return Deno.memoryUsage().heapUsed;
}

/**
 * How connection n ends. Pre-auth: the coordinator's scripts, or the proxy killing the link as
 * the challenge passes. After auth: a Close 1011, a drain (1001), a kill without Close, a kill
 * with a job in flight.
 */
type Ending =
  | { pre: ConnScript | "killed_mid_handshake" }
  | { post: "close_1011" | "drain" | "killed" | "killed_with_job" };
const CYCLE: Ending[] = [
  { post: "close_1011" },
  { pre: "close_before_challenge" },
  { post: "killed" },
  { pre: "auth_failed" },
  { pre: "bad_nonce" },
  { post: "drain" },
  { pre: "wrong_first_frame" },
  { pre: "killed_mid_handshake" },
  { pre: "silent" },
  { post: "killed_with_job" },
];
const RESTARTS = 50;
const endingOf = (n: number): Ending | undefined =>
  n < RESTARTS ? CYCLE[n % CYCLE.length] : undefined;

Deno.test("50 coordinator restarts in a row (mid-handshake and after auth): backoff per §6, no growth in fds, timers or heap, and the agent serves afterwards", async () => {
  const baseMs = 4, capMs = 32;
  const backoff = new RecordingBackoff(baseMs, capMs, [0, 0.5, 0.999, 0.25]);
  const timers = new TimerCount();
  timers.install();
  try {
    await withProxiedStack({
      backends: [{ kind: "vllm", defaultScript: { hang: "after-headers" } }],
      coordinator: {
        script: (n) => {
          const e = endingOf(n);
          return e && "pre" in e && e.pre !== "killed_mid_handshake" ? e.pre : "normal";
        },
      },
      session: { backoff, handshakeTimeoutMs: 100, heartbeatMs: 60_000 },
    }, async ({ stack, proxy, first, links }) => {
      const fake = stack.fakes[0]!;
      // A pre-auth death with no Close: the proxy drops the link as the challenge goes by.
      proxy.onForward = (dir, _bytes, link) => {
        const e = endingOf(link.index);
        if (dir === "down" && e && "pre" in e && e.pre === "killed_mid_handshake") link.kill();
      };
      const samples: {
        n: number;
        fds: number | undefined;
        timers: number;
        heap: number;
        external: number;
      }[] = [];
      let jobs = 0;
      // Every connection the agent opened, held weakly: once closed it must be collectable.
      const opened: WeakRef<object>[] = [];
      for (let n = 0; n < RESTARTS; n++) {
        opened.push(...links.splice(0).map((l) => new WeakRef(l)));
        const s = n === 0 ? first : await within(stack.coord.session(n), WAIT, `connection ${n}`);
        const e = endingOf(n)!;
        if ("pre" in e) {
          await within(s.closed, WAIT, `connection ${n} (${e.pre}) ends`);
          continue;
        }
        await within(s.waitFor((f) => f.type === "capabilities"), WAIT, `connection ${n} caps`);
        if (n === 15 || n === 45) {
          // The test coordinator's records of the connections so far are not the agent's memory.
          for (const old of stack.coord.sessions.slice(0, n)) old.frames.length = 0;
          const heap = heapAfterGc();
          const { external } = Deno.memoryUsage();
          samples.push({ n, fds: openFds(), timers: timers.live.size, heap, external });
        }
        const link = await proxy.link(n);
        switch (e.post) {
          case "close_1011":
            s.close(1011, "restarting");
            break;
          case "drain":
            s.close(1001, "drain:deploy");
            break;
          case "killed":
            link.kill();
            break;
          case "killed_with_job": {
            s.sendJob({ model_id: MODEL });
            await within(fake.waitForRequests(++jobs), WAIT, "job reached the backend");
            link.kill();
            assert.equal(
              await within(fake.waitForClose(jobs), 1000, "backend closed"),
              "client-closed",
            );
          }
        }
        await within(s.closed, WAIT, `connection ${n} closed`);
      }
      // Connection 50 stays: it serves a job. The 50 before it are garbage.
      opened.push(...links.splice(0).map((l) => new WeakRef(l)));
      const last = await within(stack.coord.session(RESTARTS), WAIT, "the last connection");
      await within(last.waitFor((f) => f.type === "capabilities"), WAIT, "its capabilities");
      assert.equal(last.authenticated, true);
      fake.setDefaultScript({ deltas: 3 });
      const r = await within(last.collect(last.sendJob({ model_id: MODEL })), WAIT, "a job");
      assert.equal(r.terminal.type, "job_done");
      assert.equal(stack.agent.executor.inFlight, 0);

      // §6, attempt by attempt: pre-auth failures escalate (doubling, capped), auth resets.
      const given = backoff.given.slice(0, RESTARTS);
      let failures = 0;
      given.forEach((g, n) => {
        failures = "pre" in endingOf(n)! ? failures + 1 : 0;
        assert.equal(g.failures, failures, `attempt ${n}: consecutive pre-auth failures`);
        assert.equal(g.delay, expectedDelay(failures, g.r, baseMs, capMs), `attempt ${n}: delay`);
      });
      assert.ok(given.some((g) => g.failures >= 3), "the escalation reached the cap");
      // Each reconnect came no sooner than its delay after the previous connection ended.
      const sessions = stack.coord.sessions;
      for (let n = 0; n < RESTARTS; n++) {
        const gap = sessions[n + 1]!.connectedAt - sessions[n]!.connectedAt;
        assert.ok(gap >= given[n]!.delay - 2, `gap before connection ${n + 1}: ${gap} ms`);
      }

      const [early, late] = samples;
      const kb = (b: number) => `${(b / 1024).toFixed(0)} KiB`;
      const restarts = late!.n - early!.n;
      console.log(
        `from connection ${early!.n} to ${late!.n}: fds ${early!.fds} → ${late!.fds}, ` +
          `timers ${early!.timers} → ${late!.timers}, heap ${kb(late!.heap - early!.heap)} more, ` +
          `external ${kb(late!.external - early!.external)} more`,
      );
      assert.equal(late!.fds, early!.fds, "open file descriptors");
      assert.equal(late!.timers, early!.timers, "live timers");
      // A connection leaked by the agent would keep its buffers (256 KiB of external memory).
      assert.ok(late!.external - early!.external < 128 * 1024, "external memory");
      // The test coordinator's Deno.serve keeps about 7 KiB of every upgraded connection until
      // it shuts down (its WebSocket, Request, Headers, handlers), and the proxy and this test
      // keep their records: the heap grows by that, not by anything of the agent's (below).
      const perRestart = (late!.heap - early!.heap) / restarts;
      assert.ok(perRestart < 32 * 1024, `heap grew ${kb(perRestart)} per restart`);
      await new Promise((r) => setTimeout(r, 0)); // WeakRefs made this turn are kept until it ends
      heapAfterGc();
      const alive = opened.filter((w) => w.deref() !== undefined).length;
      // (A link killed as the 101 answer passes may fail the WebSocket handshake itself.)
      assert.ok(opened.length > RESTARTS - 5, `${opened.length} connections opened`);
      assert.ok(alive <= 1, `${alive} of ${opened.length} connections still in memory`);
    });
  } finally {
    timers.uninstall();
  }
});

Deno.test("a coordinator gone entirely (connection refused) escalates the backoff 1, 2, 4, 8 × base; back on its port, the agent reconnects and serves", async () => {
  const baseMs = 20;
  const backoff = new RecordingBackoff(baseMs, 60_000, [0.5]);
  const refusals: number[] = [];
  const refused = Promise.withResolvers<void>();
  const previous = setSink((line) => {
    if (line.includes("coordinator connect failed")) {
      refusals.push(performance.now());
      if (refusals.length === 4) refused.resolve();
    }
  });
  try {
    await withProxiedStack({
      session: { backoff },
      logLevel: "warn",
    }, async ({ stack, first, closeProxy, reopenProxy }) => {
      const killedAt = performance.now();
      await closeProxy(); // the listener is gone and the link dropped without a Close
      await within(first.closed, WAIT, "first connection dropped");
      await within(refused.promise, WAIT, "4 refused dials");
      reopenProxy();
      const back = await within(stack.coord.authenticated(1), WAIT, "back");
      await within(back.waitFor((f) => f.type === "capabilities"), WAIT, "capabilities");
      const r = await within(back.collect(back.sendJob({ model_id: MODEL })), WAIT, "a job");
      assert.equal(r.terminal.type, "job_done");
      // After the authenticated session: base; then each refusal doubles it (§6).
      const after = backoff.given.map((g) => [g.failures, g.delay]);
      assert.deepEqual(after.slice(0, 5), [[0, 20], [1, 20], [2, 40], [3, 80], [4, 160]]);
      const gaps = refusals.slice(1).map((t, i) => t - refusals[i]!);
      [20, 40, 80].forEach((want, i) => {
        assert.ok(gaps[i]! >= want - 2 && gaps[i]! < want + 150, `gap ${i}: ${gaps[i]} ms`);
      });
      assert.ok(refusals[0]! - killedAt < 20 + 150);
      assert.equal(stack.agent.session.status.consecutiveFailures, 0, "reset after auth");
    });
  } finally {
    setSink(previous);
  }
});
