// Identity file faults through the real CLI (PROTOCOL §7, issue 6): unreadable, truncated or
// inconsistent files stop `run` with one line and exit 1; a world-readable one warns and runs;
// several processes writing provider_id or creating the file at once never leave a partial file.

import assert from "node:assert/strict";
import { loadIdentity } from "../../src/identity/identity.ts";
import { parseIdentityText } from "../../src/identity/file.ts";
import { TestCoordinator } from "../harness/coordinator.ts";
import { AgentProcess, agentToml, within } from "../harness/agent_process.ts";

const WAIT = 15_000;
const WINDOWS = Deno.build.os === "windows";
const IDENTITY_TS = new URL("../../src/identity/identity.ts", import.meta.url).href;
const BEGIN = "-----BEGIN USEPOD AGENT KEY-----";
const END = "-----END USEPOD AGENT KEY-----";
// RFC 8032 test 1: a seed and its public key; test 2's public key for a mismatch.
const SEED1 = Uint8Array.fromHex(
  "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
);
const PUB1 = Uint8Array.fromHex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
const PUB2 = Uint8Array.fromHex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");

function keyFile(pub: Uint8Array = PUB1): string {
  return [
    BEGIN,
    "version: 1",
    "created: 2026-01-02T03:04:05.678901Z",
    `secret: ${SEED1.toBase64()}`,
    `public: ${pub.toBase64()}`,
    END,
    "",
  ].join("\n");
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "usepod-identity-faults-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs the agent on an identity path prepared by `prepare`; returns the process once exited. */
async function runWith(
  dir: string,
  prepare: (keyPath: string) => Promise<void>,
  coordinatorUrl = "ws://127.0.0.1:9/provider/connect",
): Promise<AgentProcess> {
  const keyPath = `${dir}/identity.key`;
  await prepare(keyPath);
  const configPath = `${dir}/agent.toml`;
  await Deno.writeTextFile(configPath, agentToml({ coordinatorUrl, keyPath, drainTimeoutS: 5 }));
  return new AgentProcess(["run", "--config", configPath, "--allow-insecure"]);
}

/** The run exits 1 with exactly one line: `error: identity file <path>: …` matching `re`. */
async function assertRefusedByCli(agent: AgentProcess, keyPath: string, re: RegExp) {
  const status = await agent.reap(WAIT);
  const lines = agent.lines.filter((l) => l.trim() !== "");
  assert.equal(status.code, 1, agent.tail());
  assert.equal(lines.length, 1, `one line, got:\n${agent.tail()}`);
  assert.ok(lines[0]!.startsWith(`error: identity file ${keyPath}`), lines[0]);
  assert.match(lines[0]!, re);
  assert.ok(!lines[0]!.includes(SEED1.toBase64()), "the secret is never printed");
}

Deno.test("run with an identity file it cannot read exits 1 with one line naming the file", async () => {
  await withDir(async (dir) => {
    const root = Deno.uid() === 0 || WINDOWS;
    const agent = await runWith(dir, async (path) => {
      if (root) return await Deno.mkdir(path); // root reads any mode: not a regular file instead
      await Deno.writeTextFile(path, keyFile(), { mode: 0o000 });
      await Deno.chmod(path, 0o000);
    });
    await assertRefusedByCli(
      agent,
      `${dir}/identity.key`,
      root ? /not a regular file/ : /permission denied/,
    );
  });
});

Deno.test("run with a truncated identity file exits 1 with one line saying so", async () => {
  await withDir(async (dir) => {
    const full = keyFile();
    const agent = await runWith(dir, async (path) => {
      await Deno.writeTextFile(path, full.slice(0, full.indexOf("public:")), { mode: 0o600 });
    });
    await assertRefusedByCli(agent, `${dir}/identity.key`, /truncated/);
  });
});

Deno.test("run with an identity file whose public key does not match its secret exits 1 with one line", async () => {
  await withDir(async (dir) => {
    const agent = await runWith(dir, async (path) => {
      await Deno.writeTextFile(path, keyFile(PUB2), { mode: 0o600 });
    });
    await assertRefusedByCli(agent, `${dir}/identity.key`, /public does not match/);
  });
});

Deno.test({
  name: "run with a world-readable identity file warns with the chmod to run, then authenticates",
  ignore: WINDOWS,
  fn: async () => {
    await using coord = await TestCoordinator.start();
    await withDir(async (dir) => {
      const agent = await runWith(dir, async (path) => {
        await Deno.writeTextFile(path, keyFile(), { mode: 0o644 });
        await Deno.chmod(path, 0o644);
      }, coord.url);
      try {
        const warn = await agent.waitForLine(/accessible by group or others/, WAIT);
        assert.match(warn, /WARN/);
        assert.match(warn, /mode 0644/);
        assert.match(warn, /chmod 600/);
        const s = await within(coord.authenticated(0), WAIT, "authenticated");
        assert.equal(s.authResponse!.pubkey, PUB1.toBase64());
      } finally {
        assert.equal((await agent.stop("SIGTERM")).code, 0, agent.tail());
      }
    });
  },
});

/** `deno eval` of `code` (identity.ts imported as `id`) in a child process. */
function child(code: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", `import * as id from "${IDENTITY_TS}";\n${code}`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function finish(p: Deno.ChildProcess): Promise<string> {
  const out = await p.output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return text;
}

Deno.test("provider_id written by 4 processes at once: every read sees a whole, valid file, and one writer wins", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/identity.key`;
    await Deno.writeTextFile(path, keyFile(), { mode: 0o600 });
    await Deno.chmod(path, 0o600);
    const writers = [0, 1, 2, 3].map((w) =>
      child(`
        const { identity } = await id.loadIdentity(${JSON.stringify(path)});
        for (let i = 0; i < 25; i++) await id.saveProviderId(identity, "prov-${w}-" + i);
      `)
    );
    const exited = Promise.all(writers.map(finish));
    let done = false;
    void exited.finally(() => (done = true)).catch(() => {});
    const seen = new Set<string>();
    const started = performance.now();
    let reads = 0;
    for (; !done && reads < 20_000 && performance.now() - started < WAIT; reads++) {
      const text = await Deno.readTextFile(path);
      const fields = parseIdentityText(text); // throws on a partial or damaged file
      fields.secret.fill(0);
      if (fields.providerId !== undefined) seen.add(fields.providerId);
    }
    await within(exited, WAIT, "writers");
    const { identity } = await loadIdentity(path);
    assert.match(identity.providerId ?? "", /^prov-[0-3]-24$/, "the file ends with a last write");
    assert.ok(reads > 0);
    assert.ok(seen.size > 1, `reads saw the file change (${seen.size} ids in ${reads} reads)`);
    if (!WINDOWS) assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["identity.key"]);
  });
});

Deno.test("4 processes creating the same identity at once end with one key that all of them use", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/nested/identity.key`;
    const outs = await Promise.all(
      [0, 1, 2, 3].map(() =>
        finish(child(`
          const { identity } = await id.loadOrCreateIdentity(${JSON.stringify(path)});
          console.log(identity.publicKeyB64);
        `))
      ),
    );
    const keys = new Set(outs.map((o) => o.trim()));
    assert.equal(keys.size, 1, `one key, got ${[...keys].join(", ")}`);
    const { identity } = await loadIdentity(path);
    assert.equal(identity.publicKeyB64, [...keys][0]);
    assert.deepEqual([...Deno.readDirSync(`${dir}/nested`)].map((e) => e.name), ["identity.key"]);
  });
});

Deno.test("writers of provider_id killed with SIGKILL mid-write never leave a partial identity file", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/identity.key`;
    await Deno.writeTextFile(path, keyFile(), { mode: 0o600 });
    const writers = [0, 1, 2, 3].map((w) =>
      child(`
        const { identity } = await id.loadIdentity(${JSON.stringify(path)});
        for (let i = 0; i < 100_000; i++) await id.saveProviderId(identity, "prov-${w}-" + i);
      `)
    );
    // Kill them while they write: once the file has been rewritten a few dozen times.
    const started = performance.now();
    const seen = new Set<string>();
    for (let n = 0; n < 100_000 && seen.size < 40 && performance.now() - started < WAIT; n++) {
      const f = parseIdentityText(await Deno.readTextFile(path));
      f.secret.fill(0);
      if (f.providerId) seen.add(f.providerId);
    }
    for (const w of writers) w.kill("SIGKILL");
    for (const w of writers) {
      const out = await w.output();
      assert.equal(out.signal, "SIGKILL");
    }
    assert.ok(seen.size >= 40, `the writers were writing (${seen.size} ids seen)`);
    const { identity } = await loadIdentity(path);
    assert.match(identity.providerId ?? "", /^prov-[0-3]-\d+$/);
    assert.equal(identity.publicKeyB64, PUB1.toBase64());
    // A killed writer may leave its temp file behind; the identity file itself is whole.
    const others = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) =>
      n !== "identity.key"
    );
    assert.ok(others.every((n) => n.startsWith("identity.key.tmp-")), others.join(", "));
  });
});
