// The single-file bundle (`deno task bundle`) run end to end, as a compiled binary would run it:
// outside the repo, without config, lock, npm or remote imports, with only the binary's
// permissions, against the test coordinator and a fake backend. Catches dynamic imports and file
// reads that would break inside `deno compile`.

import assert from "node:assert/strict";
import { AGENT_PERMISSIONS, AGENT_V8_FLAGS } from "../scripts/build.ts";
import { TestCoordinator } from "./harness/coordinator.ts";
import { startFakeBackend } from "./harness/fake_backend.ts";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("the bundled agent authenticates, serves a job and drains on SIGTERM", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-bundle-" });
  const coord = await TestCoordinator.start();
  const backend = await startFakeBackend({ kind: "ollama", defaultScript: { deltas: 12 } });
  try {
    const build = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}scripts/build.ts`, "bundle", "--out-dir", `${dir}/out`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(build.success, new TextDecoder().decode(build.stderr));
    await Deno.writeTextFile(
      `${dir}/agent.toml`,
      `[coordinator]\nurl = "${coord.url}"\n[identity]\nkey_path = "${dir}/id.key"\n` +
        `[[backends]]\nkind = "ollama"\nurl = "${backend.url}"\n` +
        `[pricing]\ndefault_input_per_1m = 1\ndefault_output_per_1m = 2\n` +
        `[observability]\nprometheus_addr = "127.0.0.1:0"\n`,
    );
    const agent = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-config",
        "--no-lock",
        "--no-npm",
        "--no-remote",
        ...AGENT_PERMISSIONS,
        ...AGENT_V8_FLAGS,
        "out/usepod-agent.js",
        "--config",
        "agent.toml",
        "--allow-insecure",
      ],
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(agent.stderr).text();
    try {
      const s = await coord.authenticated(0);
      assert.equal(s.signatureValid, true);
      const caps = await s.waitFor((f) => f.type === "capabilities");
      assert.deepEqual((caps.models as { model_id: string }[]).map((m) => m.model_id), [
        "llama3.2:latest",
      ]);
      const r = await s.collect(s.sendJob({ model_id: "llama3.2:latest" }));
      assert.equal(r.terminal.type, "job_done");
      assert.equal((r.terminal.tokens as { output: number }).output, 12);
      agent.kill("SIGTERM");
      const status = await agent.status;
      assert.equal(status.code, 0, await stderr);
      assert.equal((await s.closed).code, 1001);
    } finally {
      try {
        agent.kill("SIGKILL");
      } catch { /* exited */ }
      await agent.status;
      await stderr;
    }
  } finally {
    await coord.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task start runs the agent with the V8 flags the binary is compiled with", async () => {
  const tasks = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks;
  for (const flag of AGENT_V8_FLAGS) assert.ok(tasks.start.split(" ").includes(flag), tasks.start);
});
