// wss:// to a coordinator with a private CA (issue 6): the real CLI as a subprocess, a TLS
// proxy (certificates made by openssl at test time) in front of the test coordinator. Works
// with the CA from coordinator.ca_file or DENO_CERT; without it, says why and keeps retrying.

import assert from "node:assert/strict";
import { haveOpenssl, makeTestCerts, type TestCerts } from "../harness/certs.ts";
import { type CoordSession, TestCoordinator } from "../harness/coordinator.ts";
import { startFakeBackend } from "../harness/fake_backend.ts";
import { TcpProxy } from "../harness/proxy.ts";
import { backendToml } from "../harness/stack.ts";
import { AgentProcess, agentToml, within } from "../harness/agent_process.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";
const WAIT = 15_000;
const OPENSSL = await haveOpenssl();
const NEEDS = { ignore: !OPENSSL }; // CI installs openssl (.ci/run); say so when skipped
if (!OPENSSL) console.error("tls_test: openssl not found, TLS tests skipped");

interface Rig {
  certs: TestCerts;
  coord: TestCoordinator;
  proxy: TcpProxy;
  dir: string;
  /** Writes agent.toml (wss://localhost:<proxy>) and starts the agent on it. */
  start(o: { caFile?: string; env?: Record<string, string> }): AgentProcess;
}

async function withTls(fn: (rig: Rig) => Promise<void>): Promise<void> {
  const certs = await makeTestCerts();
  const coord = await TestCoordinator.start();
  const backend = await startFakeBackend({ kind: "vllm", defaultScript: { deltas: 4 } });
  const proxy = TcpProxy.start({
    target: { hostname: "127.0.0.1", port: coord.port },
    tls: { cert: certs.cert, key: certs.key },
  });
  const dir = await Deno.makeTempDir({ prefix: "usepod-tls-" });
  const agents: AgentProcess[] = [];
  try {
    await fn({
      certs,
      coord,
      proxy,
      dir,
      start: (o) => {
        const configPath = `${dir}/agent-${agents.length}.toml`;
        Deno.writeTextFileSync(
          configPath,
          agentToml({
            coordinatorUrl: proxy.wsUrl("localhost"),
            keyPath: `${dir}/identity.key`,
            backends: backendToml(backend, "vllm"),
            ...(o.caFile ? { caFile: o.caFile } : {}),
            drainTimeoutS: 5,
          }),
        );
        const agent = new AgentProcess(
          ["run", "--config", configPath],
          o.env ? { env: o.env } : {},
        );
        agents.push(agent);
        return agent;
      },
    });
  } finally {
    for (const a of agents) await a.stop("SIGTERM");
    await proxy.close();
    await coord.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
    await certs.remove();
  }
}

/** The agent's n-th authenticated session serves a job over wss, byte for byte. */
async function servesAJob(coord: TestCoordinator, n: number): Promise<CoordSession> {
  const s = await within(coord.authenticated(n), WAIT, "authenticated over wss");
  await within(s.waitFor((f) => f.type === "capabilities"), WAIT, "capabilities");
  const r = await within(s.collect(s.sendJob({ model_id: MODEL })), WAIT, "job");
  assert.equal(r.terminal.type, "job_done");
  assert.match(new TextDecoder().decode(r.bytes), /tok3 [\s\S]*data: \[DONE\]/);
  return s;
}

Deno.test({
  name: "wss with the coordinator's CA in coordinator.ca_file authenticates and serves jobs",
  ...NEEDS,
  fn: () =>
    withTls(async ({ certs, coord, start }) => {
      const agent = start({ caFile: certs.caFile });
      await servesAJob(coord, 0);
      const status = await agent.stop("SIGTERM");
      assert.equal(status.code, 0, agent.tail());
    }),
});

Deno.test({
  name: "wss with the coordinator's CA in DENO_CERT (no ca_file) authenticates and serves jobs",
  ...NEEDS,
  fn: () =>
    withTls(async ({ certs, coord, start }) => {
      const agent = start({ env: { DENO_CERT: certs.caFile } });
      await servesAJob(coord, 0);
      assert.equal((await agent.stop("SIGTERM")).code, 0, agent.tail());
    }),
});

for (const which of ["no CA at all", "an unrelated CA in ca_file"] as const) {
  Deno.test({
    name:
      `wss with ${which}: a warning naming the untrusted certificate and the fix, retried with backoff, never authenticated`,
    ...NEEDS,
    fn: () =>
      withTls(async ({ certs, coord, proxy, start }) => {
        const agent = start(which === "no CA at all" ? {} : { caFile: certs.otherCaFile });
        const line = await agent.waitForLine(/coordinator connect failed/, WAIT);
        assert.match(line, /WARN/);
        assert.match(line, /certificate/i);
        assert.match(line, /UnknownIssuer/);
        assert.match(line, /coordinator\.ca_file|DENO_CERT/, "says how to trust the CA");
        // The base backoff is 1 s: a second TLS attempt follows.
        await within(proxy.link(1), WAIT, "a second attempt");
        assert.equal(coord.sessions.length, 0, "nothing reached the coordinator");
        assert.ok(!agent.lines.some((l) => l.includes("authenticated")));
        assert.equal((await agent.stop("SIGTERM")).code, 0, agent.tail());
      }),
  });
}

Deno.test({
  name: "an unreadable coordinator.ca_file exits 1 with an error line naming it, no stack trace",
  ...NEEDS,
  fn: () =>
    withTls(async ({ dir, start }) => {
      const agent = start({ caFile: `${dir}/missing-ca.pem` });
      const status = await agent.reap(WAIT);
      assert.equal(status.code, 1);
      const last = agent.lines.filter((l) => l.trim() !== "").at(-1) ?? "";
      assert.match(last, /^error: coordinator\.ca_file: cannot read .*missing-ca\.pem/);
      assert.ok(!agent.lines.some((l) => /^\s+at /.test(l)), "no stack trace");
    }),
});
