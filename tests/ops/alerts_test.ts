// Webhook alerts (issue 8) against a local HTTP receiver: backend down/up, coordinator lost/
// restored, error rate high/normal over the real agent; one alert per episode, the payload,
// retries with backoff, no retry on 4xx, nothing holding up jobs, the URL never in the logs.

import assert from "node:assert/strict";
import { Alerts, type AlertsOptions, scrubUrls } from "../../src/ops/alerts.ts";
import { Backoff } from "../../src/link/backoff.ts";
import { setLevel, setSink } from "../../src/log.ts";
import { AGENT_VERSION } from "../../src/version.ts";
import { type ConnScript } from "../harness/coordinator.ts";
import { startStack } from "../harness/stack.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";
const TOKEN = "SECRET-WEBHOOK-TOKEN-42";

interface Post {
  at: number;
  url: URL;
  headers: Headers;
  body: {
    event: string;
    at: string;
    agent: { pubkey: string; "provider_id": string | null; version: string };
    detail: Record<string, unknown>;
  };
}

/** A webhook receiver on loopback; `respond` answers the n-th (1-based) post. */
function receiver(
  respond: (n: number, req: Request) => Response | Promise<Response> = () => new Response("ok"),
) {
  const posts: Post[] = [];
  const waiters: { n: number; resolve: (p: Post) => void }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const post = {
      at: performance.now(),
      url: new URL(req.url),
      headers: req.headers,
      body: await req.json(),
    };
    posts.push(post);
    for (const w of waiters.filter((w) => w.n === posts.length)) w.resolve(post);
    return await respond(posts.length, req);
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/hook?token=${TOKEN}`,
    posts,
    /** The n-th (1-based) post, once it has arrived. */
    post(n: number): Promise<Post> {
      if (posts[n - 1]) return Promise.resolve(posts[n - 1]!);
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    close: () => server.shutdown(),
  };
}

/** A raw TCP receiver that reads requests and never answers; `request` resolves on the first. */
function silentReceiver() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const first = Promise.withResolvers<void>();
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      void conn.read(new Uint8Array(4096)).then(() => first.resolve(), () => {});
    }
  })();
  return {
    url: `http://127.0.0.1:${listener.addr.port}/hook?token=${TOKEN}`,
    request: first.promise,
    async close() {
      listener.close();
      for (const c of conns) c.close();
      await accepting.catch(() => {});
    },
  };
}

/** Captures log lines; `line(text)` resolves with the first line containing `text`. */
function capture() {
  const logs: string[] = [];
  const waiters: { text: string; resolve: (l: string) => void }[] = [];
  const previous = setSink((l) => {
    logs.push(l);
    for (const w of waiters.filter((w) => l.includes(w.text))) w.resolve(l);
  });
  setLevel("debug");
  return {
    logs,
    line(text: string): Promise<string> {
      const seen = logs.find((l) => l.includes(text));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ text, resolve }));
    },
    restore: () => {
      setSink(previous);
      setLevel("info");
    },
  };
}

function alertsToml(url: string, threshold = 0.5): string {
  return `[alerts]\nwebhook_url = "${url}"\nerror_rate_threshold = ${threshold}\n`;
}

/** An Alerts on a fixed, healthy world, with one backend whose state the test sets. */
function unitAlerts(url: string, over: Partial<AlertsOptions> = {}) {
  let state: "up" | "down" = "up";
  const alerts = new Alerts({
    config: () => ({ webhookUrl: url, errorRateThreshold: 0.5 }),
    agent: () => ({ pubkey: "cHVia2V5", providerId: undefined }),
    connection: () => ({ state: "authenticated", lastError: undefined, lastAuthAt: 1 }),
    backends: () => [{ kind: "vllm", url: "http://127.0.0.1:1", state, lastError: "refused" }],
    retryBaseMs: 20,
    ...over,
  });
  return { alerts, down: () => (state = "down") };
}

Deno.test("a backend that goes down raises one backend_down; recovery one backend_up", async () => {
  const hook = receiver();
  const stack = await startStack({ toml: alertsToml(hook.url) });
  try {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    const agent = stack.agent;
    agent.alerts.check();
    stack.fakes[0]!.setState("dead");
    await agent.discovery.refresh();
    agent.alerts.check();
    agent.alerts.check();
    const down = await hook.post(1);
    assert.equal(down.body.event, "backend_down");
    assert.match(down.body.at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.deepEqual(down.body.agent, {
      pubkey: agent.identity.publicKeyB64,
      provider_id: agent.identity.providerId ?? null,
      version: AGENT_VERSION,
    });
    assert.equal(down.body.detail.kind, "vllm");
    assert.equal(down.body.detail.url, stack.fakes[0]!.url);
    assert.equal(down.url.searchParams.get("token"), TOKEN);
    assert.equal(down.headers.get("content-type"), "application/json");
    stack.fakes[0]!.setState("ready");
    await agent.discovery.refresh();
    agent.alerts.check();
    agent.alerts.check();
    const up = await hook.post(2);
    assert.equal(up.body.event, "backend_up");
    assert.equal(up.body.detail.state, "up");
    await stack.stop();
    assert.equal(hook.posts.length, 2);
  } finally {
    await stack.stop();
    await hook.close();
  }
});

Deno.test("a coordinator gone for over a minute raises one alert; reconnecting ends the episode", async () => {
  const hook = receiver();
  // Connection 1 is accepted but never challenged: the agent sits "connecting" until told.
  const script = (n: number): ConnScript => (n === 1 ? "silent" : "normal");
  const stack = await startStack({
    toml: alertsToml(hook.url),
    coordinator: { script },
    session: { backoff: new Backoff({ baseMs: 10, capMs: 20, random: () => 0.5 }) },
  });
  try {
    const first = await stack.coord.authenticated(0);
    await first.waitFor((f) => f.type === "capabilities");
    first.close(1011, "gone");
    const silent = await stack.coord.session(1);
    const t0 = Date.now();
    stack.agent.alerts.check(t0);
    stack.agent.alerts.check(t0 + 59_000);
    stack.agent.alerts.check(t0 + 61_000);
    stack.agent.alerts.check(t0 + 120_000);
    const lost = await hook.post(1);
    assert.equal(lost.body.event, "coordinator_lost");
    assert.equal(lost.body.detail.since, new Date(t0).toISOString());
    silent.close(1011, "come back");
    await (await stack.coord.authenticated(1)).waitFor((f) => f.type === "capabilities");
    stack.agent.alerts.check(t0 + 125_000);
    const back = await hook.post(2);
    assert.equal(back.body.event, "coordinator_restored");
    assert.equal(back.body.detail.lost_s, 125);
    await stack.stop();
    assert.equal(hook.posts.length, 2);
  } finally {
    await stack.stop();
    await hook.close();
  }
});

Deno.test("an error rate at the threshold raises one alert until it drops below", async () => {
  const hook = receiver();
  const stack = await startStack({
    backends: [{ kind: "vllm", scripts: { [MODEL]: { status: 500 } } }],
    toml: alertsToml(hook.url, 0.5),
  });
  try {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    const run = async (n: number) => {
      for (let i = 0; i < n; i++) await s.collect(s.sendJob({ model_id: MODEL }));
    };
    await run(4);
    stack.agent.alerts.check(); // 4 jobs: fewer than the 5 an alert needs
    await run(2);
    stack.agent.alerts.check();
    stack.agent.alerts.check();
    const high = await hook.post(1);
    assert.equal(high.body.event, "error_rate_high");
    assert.deepEqual(
      { ...high.body.detail },
      {
        rate: 1,
        threshold: 0.5,
        jobs: 6,
        failed: 6,
        window_s: 60,
        last_error_code: "internal",
      },
    );
    stack.fakes[0]!.setScript(MODEL, { deltas: 2 });
    await run(6); // 6 of 12 failed: still at the threshold
    stack.agent.alerts.check();
    await run(1); // 6 of 13
    stack.agent.alerts.check();
    const normal = await hook.post(2);
    assert.equal(normal.body.event, "error_rate_normal");
    assert.equal(normal.body.detail.jobs, 13);
    await stack.stop();
    assert.equal(hook.posts.length, 2);
  } finally {
    await stack.stop();
    await hook.close();
  }
});

Deno.test("a failed delivery is retried with doubling delays until it succeeds", async () => {
  const hook = receiver((n) => new Response(null, { status: n < 3 ? 503 : 204 }));
  const cap = capture();
  const stop = new AbortController();
  const { alerts, down } = unitAlerts(hook.url, { tickMs: 3_600_000 });
  const running = alerts.run(stop.signal);
  try {
    down();
    alerts.check();
    const third = await hook.post(3);
    const [a, b] = [hook.posts[0]!, hook.posts[1]!];
    assert.ok(b.at - a.at >= 18, `first retry after ${b.at - a.at} ms`);
    assert.ok(third.at - b.at >= 38, `second retry after ${third.at - b.at} ms`);
    assert.deepEqual(hook.posts.map((p) => p.body.event), [
      "backend_down",
      "backend_down",
      "backend_down",
    ]);
    assert.match(await cap.line("alert delivered"), /attempt=3/);
  } finally {
    cap.restore();
    stop.abort();
    await running;
    await hook.close();
  }
  assert.equal(alerts.delivered, 1);
});

Deno.test("deliveries give up after the attempts; a 4xx is not retried; the log names no URL", async () => {
  for (const [status, expected] of [[500, 3], [404, 1]] as const) {
    const hook = receiver(() => new Response(null, { status }));
    const cap = capture();
    const stop = new AbortController();
    const { alerts, down } = unitAlerts(hook.url, { attempts: 3, tickMs: 3_600_000 });
    const running = alerts.run(stop.signal);
    try {
      down();
      alerts.check();
      await cap.line("alert not delivered");
      assert.equal(hook.posts.length, expected);
      assert.equal(alerts.undelivered, 1);
      const gaveUp = cap.logs.filter((l) => l.includes("alert not delivered"));
      assert.equal(gaveUp.length, 1);
      assert.ok(gaveUp[0]!.includes(`HTTP ${status}`));
      assert.ok(
        cap.logs.every((l) => !l.includes(TOKEN) && !l.includes("/hook")),
        cap.logs.join("\n"),
      );
    } finally {
      cap.restore();
      stop.abort();
      await running;
      await hook.close();
    }
  }
});

Deno.test("an unreachable webhook is logged without its URL or token", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close(); // nothing listens there any more
  const url = `http://127.0.0.1:${port}/hook?token=${TOKEN}`;
  const cap = capture();
  const stop = new AbortController();
  const { alerts, down } = unitAlerts(url, { attempts: 2, retryBaseMs: 1, tickMs: 3_600_000 });
  const running = alerts.run(stop.signal);
  try {
    down();
    alerts.check();
    await cap.line("alert not delivered");
    assert.equal(alerts.undelivered, 1);
    assert.ok(
      cap.logs.every((l) => !l.includes(TOKEN) && !l.includes(`:${port}`)),
      cap.logs.join("\n"),
    );
  } finally {
    cap.restore();
    stop.abort();
    await running;
  }
});

Deno.test("a webhook that never answers holds up no job, and shutdown abandons the delivery", async () => {
  const hook = silentReceiver();
  const stack = await startStack({ toml: alertsToml(hook.url) });
  try {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    stack.fakes[0]!.setState("dead");
    await stack.agent.discovery.refresh();
    stack.agent.alerts.check();
    await hook.request; // the delivery now waits on an answer that never comes
    stack.fakes[0]!.setState("ready");
    await stack.agent.discovery.refresh();
    const t = performance.now();
    const r = await s.collect(s.sendJob({ model_id: MODEL }));
    assert.equal(r.terminal.type, "job_done");
    assert.ok(performance.now() - t < 2_000);
    await stack.stop(); // resolves: the pending POST is aborted, nothing leaks
  } finally {
    await stack.stop();
    await hook.close();
  }
});

Deno.test("without a webhook an alert is only logged", () => {
  const cap = capture();
  let fetched = 0;
  const alerts = new Alerts({
    config: () => ({ errorRateThreshold: 0.5 }),
    agent: () => ({ pubkey: "cHVia2V5", providerId: undefined }),
    connection: () => ({
      state: "backoff",
      lastError: "connect failed: refused",
      lastAuthAt: undefined,
    }),
    backends: () => [],
    fetch: () => (fetched++, Promise.resolve(new Response())),
  });
  try {
    alerts.check(0);
    alerts.check(60_000);
    assert.equal(fetched, 0);
    const line = cap.logs.find((l) => l.includes(" alert "));
    assert.ok(line?.includes("event=coordinator_lost"), cap.logs.join("\n"));
  } finally {
    cap.restore();
  }
});

Deno.test("a backend URL in an alert carries no user, password or query", () => {
  let posted = "";
  const alerts = new Alerts({
    config: () => ({ webhookUrl: "http://127.0.0.1:1/hook", errorRateThreshold: 0.5 }),
    agent: () => ({ pubkey: "cHVia2V5", providerId: undefined }),
    connection: () => ({ state: "authenticated", lastError: undefined, lastAuthAt: 1 }),
    backends: () => [{
      kind: "vllm",
      url: "http://op:pw-secret@127.0.0.1:8000/v1?key=q-secret",
      state: "down",
      lastError: "refused",
    }],
    fetch: (_url, init) => {
      posted = String(init?.body);
      return Promise.resolve(new Response());
    },
  });
  alerts.check();
  assert.equal(JSON.parse(posted).detail.url, "http://127.0.0.1:8000/v1");
});

Deno.test("error messages lose every URL before they are logged", () => {
  assert.equal(
    scrubUrls("error sending request for url (https://h.example/x?token=abc): refused"),
    "error sending request for url (<url>): refused",
  );
});
