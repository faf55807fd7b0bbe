// Graceful drain, shutdown and config reload of the real agent as a subprocess (issue 4):
// `deno run -A main.ts --config … --allow-insecure` against the test coordinator and a fake vLLM,
// driven by real signals (SIGTERM, SIGINT, SIGHUP) and by `usepod-agent reload`.

import assert from "node:assert/strict";
import { type CoordSession, type Frame, TestCoordinator } from "./harness/coordinator.ts";
import { type FakeBackend, type Script, startFakeBackend } from "./harness/fake_backend.ts";
import { readLivePid } from "../src/ops/pidfile.ts";
import { backendToml } from "./harness/stack.ts";
import {
  AgentProcess,
  agentToml,
  type AgentTomlOptions,
  runCli,
  within,
} from "./harness/agent_process.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";
const WAIT_MS = 20_000;

interface Rig {
  coord: TestCoordinator;
  backend: FakeBackend;
  agent: AgentProcess;
  session: CoordSession;
  configPath: string;
  dir: string;
  /** Rewrites agent.toml with these fields changed. */
  rewrite(o: Partial<AgentTomlOptions>): Promise<void>;
}

/** Coordinator, fake vLLM and the agent subprocess, authenticated with its first capabilities. */
async function withAgent(
  opts: { script?: Script; toml?: Partial<AgentTomlOptions> },
  fn: (rig: Rig) => Promise<void>,
): Promise<void> {
  const coord = await TestCoordinator.start();
  const backend = await startFakeBackend({
    kind: "vllm",
    defaultScript: opts.script ?? { deltas: 10, delayMs: 50 },
  });
  const dir = await Deno.makeTempDir({ prefix: "usepod-lifecycle-" });
  const configPath = `${dir}/agent.toml`;
  const base: AgentTomlOptions = {
    coordinatorUrl: coord.url,
    keyPath: `${dir}/identity.key`,
    backends: backendToml(backend, "vllm"),
    ...opts.toml,
  };
  const rewrite = (o: Partial<AgentTomlOptions>) =>
    Deno.writeTextFile(configPath, agentToml({ ...base, ...o }));
  await rewrite({});
  const agent = new AgentProcess(["--config", configPath, "--allow-insecure"]);
  try {
    const session = await within(coord.authenticated(0), WAIT_MS, "agent did not authenticate");
    await within(
      session.waitFor((f) => f.type === "capabilities"),
      WAIT_MS,
      "no capabilities",
    );
    await fn({ coord, backend, agent, session, configPath, dir, rewrite });
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- agent output ---\n${agent.output}`, {
      cause: err,
    });
  } finally {
    await agent.stop();
    await coord.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function capabilities(s: CoordSession): Frame[] {
  return s.frames.filter((f) => f.type === "capabilities");
}

function modelsOf(f: Frame): Record<string, unknown>[] {
  return f.models as Record<string, unknown>[];
}

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`${signal} drains: no models advertised, new jobs out_of_capacity, the job in flight finishes, close 1001, exit 0`, async () => {
    await withAgent({}, async ({ agent, session }) => {
      const inFlight = session.sendJob({ model_id: MODEL });
      await within(
        session.waitFor((f) => f.type === "job_chunk" && f.job_id === inFlight),
        WAIT_MS,
        "no first chunk",
      );
      agent.kill(signal);
      const empty = await within(session.nth("capabilities", 2), WAIT_MS, "no drain capabilities");
      assert.deepEqual(empty.models, []);
      const refused = await within(
        session.collect(session.sendJob({ model_id: MODEL })),
        WAIT_MS,
        "new job not answered",
      );
      assert.equal(refused.terminal.type, "job_error");
      assert.equal(refused.terminal.error_code, "out_of_capacity");
      const done = await within(session.collect(inFlight), WAIT_MS, "job in flight did not end");
      assert.equal(done.terminal.type, "job_done");
      assert.equal(done.chunks > 0, true);
      const close = await within(session.closed, WAIT_MS, "no close");
      assert.equal(close.code, 1001);
      const status = await within(agent.exited, WAIT_MS, "agent did not exit");
      assert.equal(status.code, 0);
      // The refusal came while the first job was still streaming: it was not a late answer.
      const frames = session.frames;
      assert.ok(frames.indexOf(refused.terminal) < frames.indexOf(done.terminal));
    });
  });
}

Deno.test('drain_timeout_s expiry ends the job still in flight with internal "agent shutting down", then close 1001 and exit 0', async () => {
  await withAgent(
    { script: { hang: "after-headers" }, toml: { drainTimeoutS: 1 } },
    async ({ agent, session, backend }) => {
      const job = session.sendJob({ model_id: MODEL, deadline_ms: 60_000 });
      await within(backend.waitForRequests(1), WAIT_MS, "backend not asked");
      const t0 = performance.now();
      agent.kill("SIGTERM");
      const end = await within(session.collect(job), WAIT_MS, "job not ended");
      assert.equal(end.terminal.type, "job_error");
      assert.equal(end.terminal.error_code, "internal");
      assert.equal(end.terminal.message, "agent shutting down");
      assert.ok(performance.now() - t0 >= 900, "aborted before the drain timeout");
      assert.equal(await within(backend.waitForClose(1), WAIT_MS, "backend"), "client-closed");
      const close = await within(session.closed, WAIT_MS, "no close");
      assert.equal(close.code, 1001);
      assert.equal((await within(agent.exited, WAIT_MS, "agent did not exit")).code, 0);
    },
  );
});

Deno.test("a second signal during the drain exits at once", async () => {
  await withAgent(
    { script: { hang: "after-headers" }, toml: { drainTimeoutS: 600 } },
    async ({ agent, session, backend }) => {
      session.sendJob({ model_id: MODEL, deadline_ms: 3_600_000 });
      await within(backend.waitForRequests(1), WAIT_MS, "backend not asked");
      agent.kill("SIGTERM");
      await within(session.nth("capabilities", 2), WAIT_MS, "not draining");
      agent.kill("SIGTERM");
      const status = await within(agent.exited, 5_000, "second signal did not exit");
      assert.notEqual(status.code, 0);
      assert.match(agent.output, /second signal: exiting now/);
    },
  );
});

const CHEAP = { input: 111_000, output: 222_000 };

/** Changes the prices in agent.toml, reloads with `how`, and checks the fresh capabilities. */
async function reloadsPrices(how: (rig: Rig) => Promise<void>): Promise<void> {
  await withAgent({ script: { deltas: 20, delayMs: 50 } }, async (rig) => {
    const { session, coord } = rig;
    const before = modelsOf(capabilities(session)[0]!);
    assert.equal(before[0]?.input_per_1m, 500_000);
    const job = session.sendJob({ model_id: MODEL });
    await within(
      session.waitFor((f) => f.type === "job_chunk" && f.job_id === job),
      WAIT_MS,
      "no first chunk",
    );
    await rig.rewrite({ defaultInput: CHEAP.input, defaultOutput: CHEAP.output });
    await how(rig);
    const fresh = await within(session.nth("capabilities", 2), WAIT_MS, "no fresh capabilities");
    assert.deepEqual(
      modelsOf(fresh).map((m) => [m.model_id, m.input_per_1m, m.output_per_1m]),
      [[MODEL, CHEAP.input, CHEAP.output]],
    );
    const done = await within(session.collect(job), WAIT_MS, "job in flight did not end");
    assert.equal(done.terminal.type, "job_done");
    assert.equal((done.terminal.tokens as Record<string, number>).output, 20);
    const body = new TextDecoder().decode(done.bytes);
    assert.ok(body.includes("tok19") && body.trimEnd().endsWith("data: [DONE]"), body);
    assert.equal(coord.sessions.length, 1, "the connection was kept");
    await within(rig.agent.waitForLine(/config reloaded/), WAIT_MS, "no reload log line");
  });
}

Deno.test("SIGHUP applies new prices with a fresh capabilities frame on the same connection; the job in flight is unaffected", async () => {
  await reloadsPrices(({ agent }) => Promise.resolve(agent.kill("SIGHUP")));
});

Deno.test("usepod-agent reload finds the agent through its pid file and reloads it", async () => {
  await reloadsPrices(async ({ configPath }) => {
    const r = await runCli(["reload", "--config", configPath, "--allow-insecure"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /sent SIGHUP to the agent \(pid \d+, found via pid file /);
  });
});

Deno.test("usepod-agent reload finds the agent through its status server's pid", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  await withAgent({ toml: { prometheusAddr: `127.0.0.1:${port}` } }, async (rig) => {
    await rig.agent.waitForLine(/status server listening/);
    await rig.rewrite({ defaultInput: CHEAP.input });
    const r = await runCli(["reload", "--config", rig.configPath, "--allow-insecure"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      new RegExp(`pid ${rig.agent.pid}, found via status server http://127\\.0\\.0\\.1:${port}/`),
    );
    const fresh = await within(rig.session.nth("capabilities", 2), WAIT_MS, "no reload");
    assert.equal(modelsOf(fresh)[0]?.input_per_1m, CHEAP.input);
  });
});

Deno.test("SIGHUP with an invalid agent.toml logs why and keeps the running config and connection", async () => {
  await withAgent({}, async ({ agent, session, coord, configPath }) => {
    await Deno.writeTextFile(configPath, "[coordinator]\nurl = 42\n");
    agent.kill("SIGHUP");
    const line = await within(
      agent.waitForLine(/config reload failed/),
      WAIT_MS,
      "no reload error logged",
    );
    assert.match(line, /coordinator\.url: expected a string/);
    const job = await within(session.collect(session.sendJob({ model_id: MODEL })), WAIT_MS, "job");
    assert.equal(job.terminal.type, "job_done");
    assert.equal(capabilities(session).length, 1, "nothing re-advertised");
    assert.equal(coord.sessions.length, 1, "the connection was kept");
    assert.doesNotMatch(agent.output, /config reloaded/);
  });
});

Deno.test("usepod-agent reload refuses an invalid agent.toml without signalling (exit 1)", async () => {
  await withAgent({}, async ({ agent, configPath }) => {
    const valid = await Deno.readTextFile(configPath);
    await Deno.writeTextFile(configPath, valid.replace("max_concurrent = 8", "max_concurrent = 0"));
    const r = await runCli(["reload", "--config", configPath, "--allow-insecure"]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, "error: limits.max_concurrent: must be between 1 and 256, got 0\n");
    assert.doesNotMatch(agent.output, /SIGHUP/);
  });
});

Deno.test("usepod-agent reload exits 3 when no agent runs, even with a pid file left behind", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-reload-" });
  try {
    const configPath = `${dir}/agent.toml`;
    await Deno.writeTextFile(
      configPath,
      agentToml({ coordinatorUrl: "ws://127.0.0.1:9/provider/connect", keyPath: `${dir}/id.key` }),
    );
    await Deno.writeTextFile(`${dir}/agent.pid`, `${Deno.pid}\n`); // stale: nobody holds its lock
    const r = await runCli(["reload", "--config", configPath, "--allow-insecure"]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /^error: no running agent found; tried .*pid file .*agent\.pid/);
    assert.equal(r.stderr.trim().split("\n").length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("run holds agent.pid beside the identity while it runs and removes it when it exits", async () => {
  await withAgent({}, async ({ agent, dir }) => {
    const pidPath = `${dir}/agent.pid`;
    assert.equal(await Deno.readTextFile(pidPath), `${agent.pid}\n`);
    assert.equal(await readLivePid(pidPath), agent.pid);
    agent.kill("SIGTERM");
    assert.equal((await within(agent.exited, WAIT_MS, "agent did not exit")).code, 0);
    await assert.rejects(Deno.stat(pidPath), Deno.errors.NotFound);
  });
});

Deno.test("the status server reports draining during the drain", async () => {
  await withAgent(
    { script: { hang: "after-headers" }, toml: { drainTimeoutS: 2 } },
    async ({ agent, session, backend }) => {
      const line = await within(agent.waitForLine(/status server listening/), WAIT_MS, "no status");
      const addr = /addr=(\S+)/.exec(line)![1]!;
      session.sendJob({ model_id: MODEL, deadline_ms: 60_000 });
      await within(backend.waitForRequests(1), WAIT_MS, "backend not asked");
      agent.kill("SIGTERM");
      await within(session.nth("capabilities", 2), WAIT_MS, "not draining");
      const status = await (await fetch(`http://${addr}/status`)).json();
      assert.equal(status.draining, true);
      assert.equal(status.coordinator.state, "draining");
      assert.equal(status.limits.in_flight, 1);
      assert.equal((await within(agent.exited, WAIT_MS, "agent did not exit")).code, 0);
    },
  );
});
