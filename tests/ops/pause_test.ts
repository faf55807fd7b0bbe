// Pause and resume without disconnecting (issue 8): the pause state file, the agent's reaction
// (fresh capabilities, out_of_capacity for new jobs, jobs in flight finish), and the commands
// against a real agent subprocess on the same coordinator connection.

import assert from "node:assert/strict";
import {
  NOT_PAUSED,
  paused,
  pauseFilePath,
  readPauseState,
  resumed,
  writePauseState,
} from "../../src/ops/pause.ts";
import { setSink } from "../../src/log.ts";
import { AgentProcess, agentToml, runCli, within } from "../harness/agent_process.ts";
import type { Frame } from "../harness/coordinator.ts";
import { TestCoordinator } from "../harness/coordinator.ts";
import { startFakeBackend } from "../harness/fake_backend.ts";
import { backendToml, startStack } from "../harness/stack.ts";

const models = (caps: Frame) => (caps.models as { model_id: string }[]).map((m) => m.model_id);

Deno.test("pause and resume compose: one model, all, and back", () => {
  const a = paused(NOT_PAUSED, "m1");
  assert.deepEqual(a, { all: false, models: ["m1"] });
  assert.deepEqual(paused(a, "m0"), { all: false, models: ["m0", "m1"] });
  assert.deepEqual(paused(a, "m1"), a);
  const all = paused(a);
  assert.equal(all.all, true);
  assert.throws(() => resumed(all, "m1"), /every model is paused/);
  assert.deepEqual(resumed(all), NOT_PAUSED);
  assert.deepEqual(resumed(a, "m1"), NOT_PAUSED);
});

Deno.test("the pause file round-trips, disappears when nothing is paused, and a corrupt one pauses nothing", async () => {
  const dir = await Deno.makeTempDir();
  const previous = setSink(() => {});
  try {
    const path = pauseFilePath(`${dir}/state/identity.key`);
    assert.equal(path, `${dir}/state/paused.json`);
    assert.deepEqual(await readPauseState(path), NOT_PAUSED);
    await writePauseState(path, { all: false, models: ["b", "a"] });
    assert.deepEqual(await readPauseState(path), { all: false, models: ["a", "b"] });
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    await writePauseState(path, NOT_PAUSED);
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
    await Deno.writeTextFile(path, "{not json");
    assert.deepEqual(await readPauseState(path), NOT_PAUSED);
  } finally {
    setSink(previous);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a paused model leaves capabilities, new jobs get out_of_capacity, a job in flight finishes", async () => {
  const stack = await startStack({
    backends: [{
      kind: "vllm",
      models: ["keep", "rest"],
      scripts: { rest: { deltas: 30, delayMs: 5 } },
    }],
  });
  try {
    const s = await stack.coord.authenticated(0);
    assert.deepEqual(models(await s.nth("capabilities", 1)), ["keep", "rest"]);
    const inFlight = s.sendJob({ model_id: "rest" });
    await s.waitFor((f) => f.type === "job_chunk" && f.job_id === inFlight);
    stack.agent.setPaused({ all: false, models: ["rest"] });
    assert.deepEqual(models(await s.nth("capabilities", 2)), ["keep"]);
    const refused = await s.collect(s.sendJob({ model_id: "rest" }));
    assert.equal(refused.terminal.error_code, "out_of_capacity");
    assert.match(String(refused.terminal.message), /paused/);
    assert.equal((await s.collect(s.sendJob({ model_id: "keep" }))).terminal.type, "job_done");
    assert.equal((await s.collect(inFlight)).terminal.type, "job_done");
    stack.agent.setPaused({ all: true, models: [] });
    assert.deepEqual(models(await s.nth("capabilities", 3)), []);
    stack.agent.setPaused(NOT_PAUSED);
    assert.deepEqual(models(await s.nth("capabilities", 4)), ["keep", "rest"]);
    assert.equal(stack.coord.sessions.length, 1, "never reconnected");
  } finally {
    await stack.stop();
  }
});

Deno.test("usepod-agent pause and resume reach a running agent on the same connection, and a pause survives a restart", async () => {
  if (Deno.build.os === "windows") return;
  const coord = await TestCoordinator.start();
  const backend = await startFakeBackend({ kind: "vllm", models: ["alpha", "beta"] });
  const dir = await Deno.makeTempDir({ prefix: "usepod-pause-" });
  const config = `${dir}/agent.toml`;
  await Deno.writeTextFile(
    config,
    agentToml({
      coordinatorUrl: coord.url,
      keyPath: `${dir}/identity.key`,
      backends: backendToml(backend, "vllm"),
    }),
  );
  const start = () => new AgentProcess(["--config", config, "--allow-insecure"]);
  let agent = start();
  try {
    const s = await within(coord.authenticated(0), 20_000, "agent did not connect");
    assert.deepEqual(models(await s.nth("capabilities", 1)), ["alpha", "beta"]);

    const p = await runCli(["pause", "--model", "beta", "--config", config, "--allow-insecure"]);
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stdout, /paused: beta: the agent \(pid \d+\) advertises it now/);
    assert.deepEqual(models(await within(s.nth("capabilities", 2), 10_000, "no fresh caps")), [
      "alpha",
    ]);
    const r = await s.collect(s.sendJob({ model_id: "beta" }));
    assert.equal(r.terminal.error_code, "out_of_capacity");

    // Stopped and started again: still paused, from the file.
    agent.kill("SIGTERM");
    assert.equal((await agent.exited).code, 0);
    agent = start();
    const s2 = await within(coord.authenticated(1), 20_000, "agent did not reconnect");
    assert.deepEqual(models(await s2.nth("capabilities", 1)), ["alpha"]);

    const q = await runCli(["resume", "--config", config, "--allow-insecure"]);
    assert.equal(q.code, 0, q.stderr);
    assert.match(q.stdout, /nothing is paused/);
    assert.deepEqual(models(await within(s2.nth("capabilities", 2), 10_000, "no fresh caps")), [
      "alpha",
      "beta",
    ]);
    assert.equal(coord.sessions.length, 2);
  } finally {
    await agent.stop();
    await coord.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pause with no agent running records the state and says so", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-pause-" });
  try {
    const config = `${dir}/agent.toml`;
    await Deno.writeTextFile(
      config,
      agentToml({ coordinatorUrl: "ws://127.0.0.1:9/provider/connect", keyPath: `${dir}/id.key` }),
    );
    const r = await runCli(["pause", "--config", config, "--allow-insecure"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /every model is paused .*no running agent found, it applies at the next start/,
    );
    assert.deepEqual(await readPauseState(`${dir}/paused.json`), { all: true, models: [] });
    const bad = await runCli(["resume", "--model", "x", "--config", config, "--allow-insecure"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /every model is paused, not x alone/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
