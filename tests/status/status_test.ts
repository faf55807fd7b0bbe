// The status server (issue 3): the Hono app through app.request (no socket) for its routes and
// guards (Host, token, methods, no CORS, no secrets), one real Deno.serve on 127.0.0.1 beside a real
// agent stack with jobs in flight, the run command's server, and `usepod-agent status` exit codes.

import assert from "node:assert/strict";
import { createStatusApp, type StatusAppOptions } from "../../src/status/app.ts";
import { checkStatusBind, isLoopbackHost, startStatusServer } from "../../src/status/server.ts";
import {
  agentSource,
  redact,
  shownUrl,
  type StatusDoc,
  type StatusSource,
} from "../../src/status/snapshot.ts";
import { summary } from "../../src/cli/status.ts";
import { ConfigError } from "../../src/config/config.ts";
import { Stats } from "../../src/jobs/stats.ts";
import { type Stack, type StackOptions, startStack } from "../harness/stack.ts";
import type { CoordSession } from "../harness/coordinator.ts";
import { TestCoordinator } from "../harness/coordinator.ts";
import { startFakeBackend } from "../harness/fake_backend.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";
const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const PORT = 9090;
const BASE = `http://127.0.0.1:${PORT}`;

/** A complete /status document for app tests, with `coordinator` fields overridable. */
function fakeDoc(coordinator: Partial<StatusDoc["coordinator"]> = {}): StatusDoc {
  return {
    "agent": "usepod-agent-deno",
    "version": "0.4.0",
    "pid": 4242,
    "started_at": "2026-01-02T03:04:05.000Z",
    "uptime_s": 61,
    "time": "2026-01-02T03:05:06.000Z",
    "public_key": "W8MoZTOAC81R6bz94eMr+S2/ckDRZ8j+whSsutd69Ug=",
    "provider_id": "prov-1",
    "coordinator": {
      "url": "wss://api.usepod.ai/provider/connect",
      "state": "authenticated",
      "state_since": "2026-01-02T03:04:06.000Z",
      "next_retry_at": null,
      "last_auth_at": "2026-01-02T03:04:06.000Z",
      "reconnects": 0,
      "consecutive_failures": 0,
      "last_error": null,
      ...coordinator,
    },
    "draining": false,
    "limits": { "max_concurrent": 8, "max_tokens_per_minute": null, "in_flight": 0 },
    "backends": [],
    "models": [],
    "jobs_in_flight": [],
    "recent_jobs": [],
    "counters": {
      "jobs": 0,
      "job_done": 0,
      "errors": 0,
      "refused": 0,
      "cancelled": 0,
      "input_tokens": 0,
      "output_tokens": 0,
      "earned_micro_usdc": 0,
      "earned_usdc": "0.000000",
      "by_model": [],
    },
  };
}

function fakeSource(doc: () => StatusDoc = () => fakeDoc(), secrets: string[] = []): StatusSource {
  return { status: doc, histograms: () => new Stats().histograms, secrets: () => secrets };
}

function app(opts: Partial<StatusAppOptions> = {}, source = fakeSource()) {
  return createStatusApp(source, { hostname: "127.0.0.1", port: PORT, ...opts });
}

function assertNoCors(res: Response): void {
  for (const [name] of res.headers) assert.ok(!name.startsWith("access-control-"), name);
}

Deno.test("GET /status answers the snapshot as JSON, not cached, without CORS headers", async () => {
  const res = await app().request(`${BASE}/status`, {
    headers: { origin: "https://evil.example" },
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
  assert.equal(res.headers.get("cache-control"), "no-store");
  assertNoCors(res);
  assert.deepEqual(await res.json(), fakeDoc());
});

Deno.test("GET /healthz is 200 {ok:true} while authenticated and 503 with the reason otherwise", async () => {
  let doc = fakeDoc();
  const a = app({}, fakeSource(() => doc));
  let res = await a.request(`${BASE}/healthz`);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { ok: true });
  const cases: [Partial<StatusDoc["coordinator"]>, RegExp][] = [
    [{ state: "connecting" }, /^connecting to the coordinator$/],
    [
      { state: "backoff", last_error: "auth_failed: bad key", next_retry_at: "2026-01-02T03:06Z" },
      /^not connected to the coordinator \(auth_failed: bad key\); next retry at 2026-01-02T03:06Z$/,
    ],
    [{ state: "draining" }, /^draining: the agent is shutting down$/],
    [{ state: "stopped" }, /stopped/],
  ];
  for (const [coordinator, reason] of cases) {
    doc = fakeDoc(coordinator);
    res = await a.request(`${BASE}/healthz`);
    assert.equal(res.status, 503);
    const body = await res.json();
    assert.equal(body.ok, false);
    assert.equal(body.state, coordinator.state);
    assert.match(body.reason, reason);
  }
});

Deno.test("a Host other than the bound address, localhost, 127.0.0.1 or [::1] with the port is refused", async () => {
  const a = app();
  for (const host of ["127.0.0.1:9090", "localhost:9090", "LOCALHOST:9090", "[::1]:9090"]) {
    const res = await a.request(`${BASE}/status`, { headers: { host } });
    assert.equal(res.status, 200, host);
    await res.body?.cancel();
  }
  const refused = [
    "evil.example:9090",
    "localhost.evil.example:9090",
    "127.0.0.1.nip.io:9090",
    "localhost:9091",
    "127.0.0.1",
    "localhost",
    "10.0.0.5:9090",
    "",
  ];
  for (const host of refused) {
    for (const path of ["/status", "/healthz", "/metrics", "/"]) {
      const res = await a.request(`${BASE}${path}`, { headers: { host } });
      assert.equal(res.status, 403, `${host} ${path}`);
      assert.equal((await res.json()).error, "host not allowed");
    }
  }
  // A specific non-loopback bind also accepts its own address.
  const lan = app({ hostname: "10.0.0.5", token: "t0ken-for-lan" });
  const res = await lan.request(`${BASE}/healthz`, {
    headers: { host: "10.0.0.5:9090", authorization: "Bearer t0ken-for-lan" },
  });
  assert.equal(res.status, 200);
  await res.body?.cancel();
});

Deno.test("on a wildcard bind an IP literal with the port passes the Host check, a DNS name does not", async () => {
  const a = app({ hostname: "0.0.0.0", token: "wildcard-token" });
  const auth = { authorization: "Bearer wildcard-token" };
  for (const host of ["192.168.1.20:9090", "[fd00::5]:9090", "localhost:9090"]) {
    const res = await a.request(`${BASE}/healthz`, { headers: { host, ...auth } });
    assert.equal(res.status, 200, host);
    await res.body?.cancel();
  }
  for (const host of ["gpu-box.example:9090", "192.168.1.20:80", "999.1.1.1:9090"]) {
    const res = await a.request(`${BASE}/healthz`, { headers: { host, ...auth } });
    assert.equal(res.status, 403, host);
    await res.body?.cancel();
  }
});

Deno.test("methods other than GET and HEAD get 405 with Allow, and a preflight gets no CORS headers", async () => {
  const a = app();
  for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) {
    for (const path of ["/status", "/healthz", "/metrics", "/", "/nope"]) {
      const res = await a.request(`${BASE}${path}`, {
        method,
        headers: {
          origin: "https://evil.example",
          "access-control-request-method": "GET",
        },
      });
      assert.equal(res.status, 405, `${method} ${path}`);
      assert.equal(res.headers.get("allow"), "GET, HEAD");
      assertNoCors(res);
      await res.body?.cancel();
    }
  }
});

Deno.test("HEAD answers like GET without a body", async () => {
  const res = await app().request(`${BASE}/status`, { method: "HEAD" });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
  assert.equal(await res.text(), "");
});

Deno.test("unknown paths answer 404 in JSON", async () => {
  const res = await app().request(`${BASE}/debug/vars`);
  assert.equal(res.status, 404);
  assert.deepEqual(await res.json(), { error: "not found" });
});

Deno.test("with a status token every endpoint needs Authorization: Bearer with that token", async () => {
  const a = app({ token: "s3cret-status-token" });
  for (const path of ["/status", "/healthz", "/metrics", "/", "/nope"]) {
    for (
      const authorization of [
        undefined,
        "Bearer wrong",
        "Bearer s3cret-status-token-and-more",
        "Bearer s3cret-status-toke",
        "Basic czNjcmV0LXN0YXR1cy10b2tlbg==",
        "s3cret-status-token",
      ]
    ) {
      const res = await a.request(`${BASE}${path}`, {
        headers: authorization === undefined ? {} : { authorization },
      });
      assert.equal(res.status, 401, `${path} ${authorization}`);
      assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer /);
      assert.ok(!(await res.text()).includes("s3cret"));
    }
    const ok = await a.request(`${BASE}${path}`, {
      headers: { authorization: "Bearer s3cret-status-token" },
    });
    assert.equal(ok.status, path === "/nope" ? 404 : 200, path);
    await ok.body?.cancel();
  }
});

Deno.test("the page is self-contained HTML with a CSP that allows only its own inline script and style", async () => {
  const res = await app().request(`${BASE}/`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
  const csp = res.headers.get("content-security-policy") ?? "";
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/]+=*'(;|$)/);
  assert.match(csp, /connect-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  const html = await res.text();
  assert.match(html, /^<!doctype html>/);
  assert.doesNotMatch(html, /\b(src|href)=["']?(https?:)?\/\//i, "no external asset");
  assert.match(html, /fetch\("\/status"/);
  assert.match(html, /setTimeout\(refresh, 2000\)/);
});

Deno.test("redact and shownUrl keep secrets and URL credentials out of text", () => {
  assert.equal(redact('{"e":"key sk-abc123 bad"}', ["sk-abc123"]), '{"e":"key [redacted] bad"}');
  assert.equal(redact(JSON.stringify('a"b\\c'), ['a"b\\c']), '"[redacted]"');
  assert.equal(
    shownUrl("https://user:pw@example.com:8443/v1?key=x#f"),
    "https://example.com:8443/v1",
  );
  assert.equal(shownUrl("http://127.0.0.1:8000"), "http://127.0.0.1:8000");
});

Deno.test("a non-loopback prometheus_addr without status_token is refused, naming the field", () => {
  for (const addr of ["127.0.0.1:9090", "127.1.2.3:0", "[::1]:9090", "localhost:9090"]) {
    assert.ok(isLoopbackHost(checkStatusBind({ prometheusAddr: addr }).hostname), addr);
  }
  for (const addr of ["0.0.0.0:9090", "[::]:9090", "10.0.0.5:9090", "example.com:9090"]) {
    assert.throws(
      () => checkStatusBind({ prometheusAddr: addr }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /^observability\.status_token: required when observability\.prometheus_addr/.test(
          err.message,
        ) && err.message.includes(addr),
    );
    assert.deepEqual(
      checkStatusBind({ prometheusAddr: addr, statusToken: "t" }).port,
      Number(addr.slice(addr.lastIndexOf(":") + 1)),
    );
  }
});

// ---- with a real agent ----

async function withStatusStack(
  opts: StackOptions,
  fn: (stack: Stack, base: string) => Promise<void>,
): Promise<void> {
  const stack = await startStack(opts);
  const server = startStatusServer(agentSource(stack.agent, { env: (n) => opts.env?.[n] }), {
    prometheusAddr: "127.0.0.1:0",
  });
  try {
    await fn(stack, `http://${server.addr}`);
  } finally {
    await server.shutdown();
    await stack.stop();
  }
}

async function getJson(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

/** Sends a job that streams slowly and resolves once its first chunk reached the coordinator. */
async function slowJob(s: CoordSession): Promise<string> {
  const id = s.sendJob({ model_id: MODEL, deadline_ms: 60_000 });
  await s.waitFor((f) => f.type === "job_chunk" && f.job_id === id);
  return id;
}

Deno.test("a real server on 127.0.0.1 shows a job in flight from the test coordinator, then it finished", async () => {
  await withStatusStack({
    backends: [{ kind: "vllm", defaultScript: { deltas: 400, delayMs: 25 } }],
  }, async (stack, base) => {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    const slow = await slowJob(s);
    const { status, body } = await getJson(`${base}/status`);
    assert.equal(status, 200);
    const doc = body as unknown as StatusDoc;
    assert.equal(doc.pid, Deno.pid);
    assert.equal(doc.coordinator.state, "authenticated");
    assert.equal(doc.coordinator.url, stack.coord.url);
    assert.notEqual(doc.coordinator.last_auth_at, null);
    assert.equal(doc.public_key, stack.agent.identity.publicKeyB64);
    assert.equal(doc.provider_id, stack.agent.identity.providerId);
    assert.equal(doc.backends.length, 1);
    assert.equal(doc.backends[0]!.kind, "vllm");
    assert.equal(doc.backends[0]!.health, "up");
    assert.deepEqual(doc.backends[0]!.models, [MODEL]);
    assert.equal(typeof doc.backends[0]!.latency_ms, "number");
    assert.equal(doc.models[0]!.model_id, MODEL);
    assert.equal(doc.models[0]!.input_per_1m, 500000);
    assert.equal(doc.models[0]!.slots_in_use, 1);
    assert.equal(doc.limits.in_flight, 1);
    assert.equal(doc.jobs_in_flight.length, 1);
    const job = doc.jobs_in_flight[0]!;
    assert.equal(job.job_id, slow);
    assert.equal(job.model, MODEL);
    assert.equal(job.backend, "vllm");
    assert.ok(job.bytes > 0 && job.output_tokens >= 1 && job.first_chunk_ms !== null, `${job}`);
    assert.ok(job.age_ms >= 0);

    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { ok: true });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^usepod_agent_jobs_in_flight 1$/m);
    assert.match(metrics, /^usepod_agent_connection_state\{state="authenticated"\} 1$/m);

    // Cancel the slow one; a quick one ends in job_done.
    s.cancel(slow);
    await stack.fakes[0]!.waitForClose(1);
    stack.fakes[0]!.setDefaultScript({ deltas: 3 });
    const quick = s.sendJob({ model_id: MODEL });
    assert.equal((await s.collect(quick)).terminal.type, "job_done");
    const after = (await getJson(`${base}/status`)).body as unknown as StatusDoc;
    assert.deepEqual(after.jobs_in_flight, []);
    assert.deepEqual(after.recent_jobs.map((j) => [j.job_id, j.outcome]), [
      [quick, "job_done"],
      [slow, "cancelled"],
    ]);
    const done = after.recent_jobs[0]!;
    assert.equal(done.input_tokens, 11);
    assert.equal(done.output_tokens, 3);
    assert.equal(after.counters.job_done, 1);
    assert.equal(after.counters.cancelled, 1);
    // 11 in × 500000 + 3 out × 750000 per million = 7.75 micro-USDC.
    assert.equal(after.counters.earned_micro_usdc, 7.75);
    assert.equal(after.counters.earned_usdc, "0.000008");
    const m2 = await (await fetch(`${base}/metrics`)).text();
    assert.match(m2, /^usepod_agent_job_duration_seconds_count\{model="[^"]+"\} 2$/m);
    assert.match(m2, /^usepod_agent_jobs_total\{model="[^"]+",outcome="job_done"\} 1$/m);
  });
});

Deno.test("no secret appears in the output of any endpoint", async () => {
  const apiKey = "sk-or-SECRET-api-key-0123456789";
  const upstream = await startFakeBackend({
    kind: "openrouter",
    apiKey,
    scripts: { "meta-llama/llama-3.3-70b-instruct": { deltas: 2 } },
  });
  const basicAuth = "basicpass-SECRET-987";
  const statusToken = "status-token-SECRET-42";
  const enrollment = "POD-ENROLL-SECRET99";
  try {
    await withStatusStack({
      enrollmentCode: enrollment,
      backends: [{ kind: "vllm" }],
      backendsToml: (fakes) => {
        const u = new URL(fakes[0]!.url);
        return `[[backends]]\nkind = "vllm"\nurl = "http://op:${basicAuth}@${u.host}"\n\n` +
          `[[backends]]\nkind = "openrouter"\nurl = "${upstream.url}"\napi_key_env = "OR_KEY"\n\n`;
      },
      toml: `[observability]\nprometheus_addr = "127.0.0.1:0"\nstatus_token = "${statusToken}"\n`,
      env: { OR_KEY: apiKey },
    }, async (stack, base) => {
      const hostToken = "host-token-SECRET-77";
      await Deno.writeTextFile(`${stack.dir}/host_token`, hostToken + "\n");
      const s = await stack.coord.authenticated(0);
      await s.waitFor((f) => f.type === "capabilities");
      const id = s.sendJob({ model_id: "meta-llama/llama-3.3-70b-instruct" });
      assert.equal((await s.collect(id)).terminal.type, "job_done");
      // A backend whose error text quotes the key: the status must not repeat it.
      upstream.setScript("meta-llama/llama-3.3-70b-instruct", {
        status: 401,
        errorBody: JSON.stringify({ error: { message: `Invalid key ${apiKey}` } }),
      });
      const failed = s.sendJob({ model_id: "meta-llama/llama-3.3-70b-instruct" });
      assert.equal((await s.collect(failed)).terminal.type, "job_error");
      const seed = /^secret: (.+)$/m.exec(await Deno.readTextFile(stack.keyPath))![1]!;
      const secrets = [
        apiKey,
        basicAuth,
        statusToken,
        enrollment,
        hostToken,
        seed,
        Uint8Array.fromBase64(seed).toHex(),
      ];
      // The status server was started without the token, so requests need none here; the
      // token is still a configured secret that must never be echoed.
      for (const path of ["/status", "/healthz", "/metrics", "/", "/nope"]) {
        const text = await (await fetch(`${base}${path}`)).text();
        for (const secret of secrets) assert.ok(!text.includes(secret), `${path} leaks ${secret}`);
      }
      const doc = (await getJson(`${base}/status`)).body as unknown as StatusDoc;
      assert.equal(doc.recent_jobs.length, 2);
      // The upstream's message quoted the key: it arrives scrubbed.
      assert.match(doc.recent_jobs[0]!.message ?? "", /\[redacted\]/);
      assert.ok(doc.backends.every((b) => !b.url.includes("@")));
    });
  } finally {
    await upstream.close();
  }
});

// ---- the run command and `usepod-agent status` as subprocesses ----

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function agentToml(dir: string, coordUrl: string, backendUrl: string, obs: string) {
  const path = `${dir}/agent.toml`;
  await Deno.writeTextFile(
    path,
    `[coordinator]\nurl = "${coordUrl}"\n\n[identity]\nkey_path = "${dir}/identity.key"\n\n` +
      `[[backends]]\nkind = "vllm"\nurl = "${backendUrl}"\n\n` +
      `[pricing]\ndefault_input_per_1m = 500000\ndefault_output_per_1m = 750000\n\n` +
      `[observability]\n${obs}\n`,
  );
  return path;
}

Deno.test("run refuses a non-loopback status address without status_token: exit 1 and one line naming the field", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-status-" });
  try {
    const config = await agentToml(
      dir,
      "ws://127.0.0.1:9/provider/connect",
      "http://127.0.0.1:9",
      'prometheus_addr = "0.0.0.0:0"',
    );
    const r = await cli(["run", "--config", config, "--allow-insecure"]);
    assert.equal(r.code, 1);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^error: observability\.status_token: required when /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("run logs the bound status address; /status has its pid; status exits 0 when authenticated", async () => {
  const coord = await TestCoordinator.start();
  const backend = await startFakeBackend({ kind: "vllm" });
  const dir = await Deno.makeTempDir({ prefix: "usepod-status-" });
  const config = await agentToml(dir, coord.url, backend.url, 'prometheus_addr = "127.0.0.1:0"');
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "run", "--config", config, "--allow-insecure"],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let log = "";
    let addr: string | undefined;
    for (let i = 0; i < 200 && addr === undefined; i++) {
      const { value, done } = await reader.read();
      if (done) break;
      log += value;
      addr = /status server listening addr=(\S+)/.exec(log)?.[1];
    }
    assert.ok(addr, log);
    assert.match(addr, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(addr, "127.0.0.1:0");
    const s = await coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    const { body } = await getJson(`http://${addr}/status`);
    assert.equal(body.pid, child.pid);
    assert.equal(body.version, (await import("../../src/version.ts")).AGENT_VERSION);

    const r = await cli(["status", "--config", config, "--addr", addr]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^state: +authenticated/m);
    assert.match(r.stdout, /^backends: +1 up, 0 down$/m);
    assert.match(r.stdout, new RegExp(`^  ${MODEL.replace(/\./g, "\\.")} `, "m"));
    const j = await cli(["status", "--json", "--config", config, "--addr", addr]);
    assert.equal(j.code, 0);
    assert.equal(JSON.parse(j.stdout).pid, child.pid);
  } finally {
    child.kill("SIGTERM");
    await reader.cancel();
    assert.equal((await child.status).code, 0);
    await coord.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("status exits 1 when the agent runs but is not connected, 3 when no agent answers", async () => {
  await withStatusStack({ coordinator: { script: () => "auth_failed" } }, async (stack, base) => {
    const addr = base.slice("http://".length);
    // Wait for the first failed attempt to be over (the agent backs off).
    await stack.coord.session(0).then((s) => s.closed);
    const config = `${stack.dir}/agent.toml`;
    await Deno.writeTextFile(
      config,
      `[coordinator]\nurl = "${stack.coord.url}"\n\n[pricing]\n` +
        `default_input_per_1m = 1\ndefault_output_per_1m = 1\n`,
    );
    const r = await cli(["status", "--addr", addr, "--config", config]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^state: +(backoff|connecting)/m);
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const closed = listener.addr.port;
    listener.close();
    const none = await cli(["status", "--addr", `127.0.0.1:${closed}`, "--config", config]);
    assert.equal(none.code, 3, none.stdout + none.stderr);
    assert.match(none.stdout, /^no agent answers at 127\.0\.0\.1:\d+ \(connection refused\)$/m);
  });
});

Deno.test("the status summary names state, coordinator, backends, models, jobs and earnings", () => {
  const doc = fakeDoc({ state: "backoff", next_retry_at: "2026-01-02T03:05:09.000Z" });
  doc.backends = [{
    "index": 0,
    "kind": "vllm",
    "url": "http://127.0.0.1:8000",
    "health": "down",
    "latency_ms": null,
    "last_error": "unreachable: connection refused",
    "models": [],
    "checked_at": null,
    "slots_in_use": 0,
    "slots": null,
    "queue_waiting": null,
  }];
  doc.counters["earned_usdc"] = "1.500000";
  const text = summary(doc, Date.parse("2026-01-02T03:05:06.000Z")).join("\n");
  assert.match(text, /^usepod-agent 0\.4\.0 \(pid 4242\), up 1m 1s$/m);
  assert.match(text, /^state: +backoff \(retry in 3s\)$/m);
  assert.match(text, /^backends: +0 up, 1 down$/m);
  assert.match(text, /unreachable: connection refused/);
  assert.match(text, /earned 1\.500000 USDC$/m);
});
