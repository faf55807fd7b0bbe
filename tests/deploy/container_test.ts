// The container image (issue 16), built and run with podman: deploy/container/Containerfile built
// from local bases (no registry here) with a bundle made on the host, run with host networking,
// a read-only root file system, no capabilities and the identity on a read-only mount, against the
// test coordinator and a fake vLLM. It serves a job, passes its health check, keeps provider_id in
// the state volume, and `podman stop` drains a job in flight and exits 0.
// Skipped with one line without podman; failing instead when CI is set. The release path's bundle
// stage (no registry to pull its base from) is checked by bundling from exactly what it copies.

import assert from "node:assert/strict";
import { loadIdentity, loadOrCreateIdentity } from "../../src/identity/identity.ts";
import { TestCoordinator } from "../harness/coordinator.ts";
import { startFakeBackend } from "../harness/fake_backend.ts";
import { within } from "../harness/agent_process.ts";
import { localBaseImages, type Podman, podmanInstalled, startPodman } from "../harness/podman.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const CONTAINERFILE = `${ROOT}deploy/container/Containerfile`;
const IMAGE = "localhost/usepod-agent:test";
const STATE = "/var/lib/usepod-agent";
const SECRET = "/etc/usepod-agent/identity";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Builds the image as a test can: local bases, the bundle from the host. Returns build ms. */
async function buildImage(podman: Podman, dir: string): Promise<number> {
  const ctx = `${dir}/context`;
  const bundle = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/build.ts`, "bundle", "--out-dir", `${ctx}/dist`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(bundle.success, new TextDecoder().decode(bundle.stderr));
  const bases = await localBaseImages(podman);
  const t0 = performance.now();
  await podman.ok([
    "build",
    "--format",
    "docker",
    "--file",
    CONTAINERFILE,
    "--build-arg",
    `DENO_IMAGE=${bases.deno}`,
    "--build-arg",
    `RUNTIME_IMAGE=${bases.runtime}`,
    "--target",
    "runtime-prebuilt",
    "--tag",
    IMAGE,
    ctx,
  ], { timeoutMs: 300_000 });
  return performance.now() - t0;
}

/**
 * Lets the container's user 65532 use `path`: owned by it under rootful podman (which maps 65532
 * as is), else open to all (rootless podman maps it to a subordinate id).
 */
async function giveTo65532(path: string, mode: number): Promise<void> {
  if (Deno.uid() === 0) await Deno.chown(path, 65532, 65532);
  else await Deno.chmod(path, mode);
}

Deno.test("the container image serves a job as non-root on a read-only root fs, is healthy and drains on podman stop", async () => {
  if (!(await podmanInstalled())) {
    if (Deno.env.get("CI")) throw new Error("podman is missing in CI (.ci/run installs podman)");
    console.log("skipped: podman not installed (apt-get install podman runc uidmap)");
    return;
  }
  const podman = await startPodman();
  const dir = await Deno.makeTempDir({ prefix: "usepod-container-" });
  const coord = await TestCoordinator.start();
  const backend = await startFakeBackend({ kind: "vllm", defaultScript: { deltas: 5 } });
  const name = `usepod-test-${crypto.randomUUID().slice(0, 8)}`;
  const logs = async () => {
    const r = await podman.run(["logs", name]);
    return r.stdout + r.stderr;
  };
  try {
    const buildMs = await buildImage(podman, dir);
    const [config] = JSON.parse(await podman.ok(["image", "inspect", IMAGE])) as {
      Config: Record<string, unknown>;
      Healthcheck?: { Test: string[] };
      Size: number;
    }[];
    assert.ok(config);
    assert.equal(config.Config.User, "65532:65532");
    assert.deepEqual(Object.keys(config.Config.Volumes as object), [STATE]);
    assert.equal(config.Config.StopSignal, "SIGTERM");
    assert.deepEqual(config.Healthcheck?.Test.slice(-1), ["status"]);
    console.log(
      `image ${IMAGE}: ${(config.Size / 1e6).toFixed(1)} MB, built in ${Math.round(buildMs)} ms`,
    );

    // The identity as a Kubernetes Secret mounts it: read-only, readable by the agent's user.
    await Deno.mkdir(`${dir}/secret`);
    const keyPath = `${dir}/secret/identity.key`;
    const { identity } = await loadOrCreateIdentity(keyPath);
    const keyText = await Deno.readTextFile(keyPath);
    await giveTo65532(keyPath, 0o444);
    if (Deno.uid() === 0) await Deno.chmod(keyPath, 0o400);
    await Deno.mkdir(`${dir}/state`);
    await giveTo65532(`${dir}/state`, 0o777);
    const statusPort = freePort();
    const env = {
      USEPOD_COORDINATOR_URL: coord.url,
      USEPOD_BACKEND_KIND: "vllm",
      USEPOD_BACKEND_URL: backend.url,
      USEPOD_DEFAULT_INPUT_PER_1M: "500000",
      USEPOD_DEFAULT_OUTPUT_PER_1M: "750000",
      USEPOD_STATUS_ADDR: `127.0.0.1:${statusPort}`,
      USEPOD_IDENTITY_KEY_PATH: `${SECRET}/identity.key`,
      USEPOD_LOG_FORMAT: "json",
    };
    await podman.ok([
      "run",
      "--detach",
      "--name",
      name,
      "--read-only",
      "--read-only-tmpfs=false",
      "--cap-drop",
      "all",
      "--network",
      "host",
      "--volume",
      `${dir}/secret:${SECRET}:ro`,
      "--volume",
      `${dir}/state:${STATE}`,
      ...Object.entries(env).flatMap(([k, v]) => ["--env", `${k}=${v}`]),
      IMAGE,
      "run",
      "--allow-insecure",
    ]);

    const s = await within(coord.authenticated(0), 60_000, "no authenticated session")
      .catch(async (e) => {
        throw new Error(`${e.message}\n${await logs()}`);
      });
    assert.equal(s.signatureValid, true);
    assert.equal(s.authResponse?.pubkey, identity.publicKeyB64);
    const caps = await s.waitFor((f) => f.type === "capabilities");
    assert.ok((caps.models as unknown[]).length > 0, JSON.stringify(caps));
    const model = (caps.models as { model_id: string }[])[0]!.model_id;

    const done = await s.collect(s.sendJob({ model_id: model }));
    assert.equal(done.terminal.type, "job_done", JSON.stringify(done.terminal));
    assert.equal((done.terminal.tokens as { output: number }).output, 5);

    // Non-root, no capabilities, read-only root file system.
    const top = (await podman.ok(["top", name, "user", "capeff"])).trim().split("\n");
    assert.match(top[1] ?? "", /^(nonroot|65532)\s+none$/, top.join("\n"));
    const write = await podman.run([
      "exec",
      name,
      "/usr/bin/deno",
      "eval",
      "Deno.writeTextFileSync('/tmp/probe', 'x')",
    ]);
    assert.notEqual(write.code, 0);
    assert.match(write.stderr, /Read-only file system/);

    // The health check: `usepod-agent status` inside the container, through the status server.
    const health = await podman.run(["healthcheck", "run", name]);
    assert.equal(health.code, 0, `healthcheck: ${health.stdout}${health.stderr}`);

    // The identity mount is read-only: provider_id went to the state volume, the key is untouched.
    const copy = JSON.parse(await Deno.readTextFile(`${dir}/state/provider_id.json`));
    assert.deepEqual(copy, {
      public: identity.publicKeyB64,
      provider_id: `prov-${identity.publicKeyB64.slice(0, 8)}`,
    });
    assert.equal(await Deno.readTextFile(keyPath), keyText);
    assert.match(await logs(), /provider_id kept in the state directory/);

    // podman stop sends SIGTERM: the job in flight finishes, then the agent exits 0 within 10 s.
    backend.setDefaultScript({ deltas: 20, delayMs: 100 });
    const slow = s.sendJob({ model_id: model });
    await s.waitFor((f) => f.type === "job_chunk" && f.job_id === slow);
    const t0 = performance.now();
    const stopping = podman.run(["stop", "--time", "10", name], { timeoutMs: 30_000 });
    const drained = await s.collect(slow);
    const stopped = await stopping;
    const stopMs = performance.now() - t0;
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(drained.terminal.type, "job_done", JSON.stringify(drained.terminal));
    assert.equal((drained.terminal.tokens as { output: number }).output, 20);
    const exit = (await podman.ok(["inspect", "--format", "{{.State.ExitCode}}", name])).trim();
    assert.equal(exit, "0", await logs());
    assert.ok(stopMs < 10_000, `stop took ${stopMs} ms (SIGKILL after 10 s)`);
    assert.equal((await s.closed).code, 1001);
    const out = await logs();
    assert.match(out, /"msg":"draining"/);
    assert.match(out, /"msg":"stopped"/);
    console.log(`podman stop with a job in flight: ${Math.round(stopMs)} ms, exit ${exit}`);

    // A new container with the same read-only identity gets its provider_id back from the volume.
    const enroll = await podman.ok([
      "run",
      "--rm",
      "--read-only",
      "--read-only-tmpfs=false",
      "--network",
      "none",
      "--volume",
      `${dir}/secret:${SECRET}:ro`,
      "--volume",
      `${dir}/state:${STATE}`,
      ...Object.entries(env).flatMap(([k, v]) => ["--env", `${k}=${v}`]),
      IMAGE,
      "enroll",
      "--allow-insecure",
    ]);
    assert.match(enroll, new RegExp(`^provider_id: +${copy.provider_id}$`, "m"));
    assert.equal((await loadIdentity(keyPath)).identity.providerId, undefined);
  } finally {
    await podman.run(["rm", "--force", "--time", "0", name]);
    await coord.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
    await podman.close();
  }
});

Deno.test("the release stage copies everything `deno task bundle` needs, and .containerignore keeps it", async () => {
  const containerfile = await Deno.readTextFile(CONTAINERFILE);
  const stage = /^FROM deno AS bundle\n([\s\S]*?)\n\n/m.exec(containerfile)?.[1];
  assert.ok(stage, "the Containerfile has a bundle stage");
  const copies = [...stage.matchAll(/^COPY (.+) \S+$/gm)].flatMap((m) => m[1]!.split(" "));
  assert.deepEqual(copies, ["deno.json", "deno.lock", "main.ts", "src/", "scripts/build.ts"]);
  const ignore = (await Deno.readTextFile(`${ROOT}.containerignore`)).split("\n");
  for (const c of copies) assert.ok(ignore.includes(`!${c}`), `.containerignore keeps ${c}`);
  assert.equal(await Deno.readTextFile(`${ROOT}.dockerignore`), ignore.join("\n"));
  const dir = await Deno.makeTempDir({ prefix: "usepod-release-ctx-" });
  try {
    for (const c of copies) {
      const to = `${dir}/${c.replace(/\/$/, "")}`;
      await Deno.mkdir(to.slice(0, to.lastIndexOf("/")), { recursive: true });
      const cp = await new Deno.Command("cp", { args: ["-r", `${ROOT}${c}`, to] }).output();
      assert.ok(cp.success, `cp ${c}`);
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "scripts/build.ts", "bundle", "--out-dir", `${dir}/out`],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    assert.ok((await Deno.stat(`${dir}/out/usepod-agent.js`)).size > 100_000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
