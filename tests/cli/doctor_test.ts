// `usepod-agent doctor` against the test coordinator and fake backends on loopback: each check's
// verdict, and the exit code of the command.

import assert from "node:assert/strict";
import { type Check, doctor, doctorCommand } from "../../src/cli/doctor.ts";
import { loadOrCreateIdentity } from "../../src/identity/identity.ts";
import { TestCoordinator } from "../harness/coordinator.ts";
import { type FakeBackend, startFakeBackend } from "../harness/fake_backend.ts";

async function setup(
  backends: FakeBackend[],
  extra = "",
): Promise<{ dir: string; coord: TestCoordinator; configPath: string }> {
  const coord = await TestCoordinator.start();
  const dir = await Deno.makeTempDir({ prefix: "usepod-doctor-" });
  const configPath = `${dir}/agent.toml`;
  await Deno.writeTextFile(
    configPath,
    `[coordinator]\nurl = "${coord.url}"\n[identity]\nkey_path = "${dir}/id.key"\n` +
      backends.map((b) => `[[backends]]\nkind = "vllm"\nurl = "${b.url}"\n`).join("") +
      `[pricing]\ndefault_input_per_1m = 1\ndefault_output_per_1m = 2\n` +
      `[observability]\nprometheus_addr = "127.0.0.1:0"\n${extra}`,
  );
  return { dir, coord, configPath };
}

async function run(configPath: string, dir: string): Promise<Check[]> {
  const checks: Check[] = [];
  for await (
    const c of doctor({
      configPath,
      allowInsecure: true,
      timeoutMs: 1000,
      servicePath: `${dir}/no-such.service`,
    })
  ) checks.push(c);
  return checks;
}

Deno.test("doctor passes a healthy setup and says which backend reports usage", async () => {
  const ok = await startFakeBackend({ kind: "vllm", models: ["with-usage"] });
  const silent = await startFakeBackend({
    kind: "vllm",
    models: ["no-usage"],
    defaultScript: { usage: false },
  });
  const { dir, coord, configPath } = await setup([ok, silent]);
  try {
    await loadOrCreateIdentity(`${dir}/id.key`);
    const checks = await run(configPath, dir);
    const by = (what: string) => checks.filter((c) => c.what === what);
    assert.equal(by("config")[0]!.verdict, "ok");
    assert.equal(by("identity")[0]!.verdict, "ok");
    const backend = by("backend vllm");
    assert.equal(backend.length, 4);
    assert.ok(
      backend.some((c) =>
        c.verdict === "ok" && /with-usage: 1-token completion ok, usage reported/.test(c.detail)
      ),
    );
    assert.ok(
      backend.some((c) =>
        c.verdict === "warn" && /no-usage: no usage in the stream/.test(c.detail)
      ),
    );
    assert.equal(ok.requests[0]!.path, "/v1/chat/completions");
    assert.equal((ok.requests[0]!.body as Record<string, unknown>)["max_tokens"], 1);
    assert.equal(by("models")[0]!.verdict, "ok");
    assert.match(by("coordinator")[0]!.detail, /auth_challenge received/);
    assert.equal(by("clock")[0]!.verdict, "ok");
    assert.equal(by("status port")[0]!.verdict, "ok");
    assert.match(by("service")[0]!.detail, /not installed/);
    assert.ok(!checks.some((c) => c.verdict === "fail"), JSON.stringify(checks));
    // The coordinator saw a connection that never authenticated.
    const s = await coord.session(0);
    await s.closed;
    assert.equal(s.authResponse, undefined);
  } finally {
    await coord.close();
    await ok.close();
    await silent.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("doctor fails an unreachable backend and coordinator, and exits 1", async () => {
  const gone = await startFakeBackend({ kind: "vllm" });
  const { dir, coord, configPath } = await setup([gone]);
  await gone.close();
  await coord.close();
  try {
    const lines: string[] = [];
    const code = await doctorCommand({
      configPath,
      allowInsecure: true,
      out: (l) => lines.push(l),
    });
    assert.equal(code, 1);
    const text = lines.join("\n");
    assert.match(text, /^fail +backend vllm .*refused.*is the server running\?/m);
    assert.match(text, /^fail +coordinator /m);
    assert.match(text, /^warn +identity .*created on the first run/m);
    assert.match(text, /check\(s\) failed$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("doctor reports a bad config as one failure naming the field", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-doctor-" });
  try {
    await Deno.writeTextFile(
      `${dir}/agent.toml`,
      `[coordinator]\nurl = "wss://x"\n[pricing]\ndefault_input_per_1m = 0\ndefault_output_per_1m = 1\n`,
    );
    const checks = await run(`${dir}/agent.toml`, dir);
    assert.equal(checks.length, 1);
    assert.equal(checks[0]!.verdict, "fail");
    assert.match(checks[0]!.detail, /pricing\.default_input_per_1m/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("doctor warns about an identity file readable by others", async () => {
  if (Deno.build.os === "windows") return;
  const b = await startFakeBackend({ kind: "vllm" });
  const { dir, coord, configPath } = await setup([b]);
  try {
    await loadOrCreateIdentity(`${dir}/id.key`);
    await Deno.chmod(`${dir}/id.key`, 0o644);
    const checks = await run(configPath, dir);
    assert.ok(
      checks.some((c) =>
        c.what === "identity" && c.verdict === "warn" && /chmod 600/.test(c.detail)
      ),
    );
  } finally {
    await coord.close();
    await b.close();
    await Deno.remove(dir, { recursive: true });
  }
});
