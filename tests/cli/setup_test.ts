// `usepod-agent setup` (PROTOCOL §8, issue 4) end to end against the test coordinator's pairing
// endpoints (tests/harness/pairing.ts, the same code the dev coordinator serves) and fake backends:
// detection, the pair code box, polling, approval, expiry, Ctrl-C and every file written.

import assert from "node:assert/strict";
import { ExitError, UsageError } from "../../src/cli/command.ts";
import { parseConfig } from "../../src/config/config.ts";
import {
  detectBackends,
  type ProbeTarget,
  WELL_KNOWN_BACKENDS,
} from "../../src/backends/detect.ts";
import { loadIdentity } from "../../src/identity/identity.ts";
import { coordinatorUrls } from "../../src/identity/pairing.ts";
import { EXIT_CANCELLED, pairBox, setup, type SetupOptions } from "../../src/cli/setup.ts";
import { AgentProcess, runCli, within } from "../harness/agent_process.ts";
import { TestCoordinator } from "../harness/coordinator.ts";
import { type FakeBackend, startFakeBackend } from "../harness/fake_backend.ts";
import { type PairingOptions, PairingService } from "../harness/pairing.ts";

const WAIT_MS = 20_000;
const WINDOWS = Deno.build.os === "windows";

/** A port nothing listens on (bound, then released). */
function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

interface Rig {
  coord: TestCoordinator;
  pairing: PairingService;
  base: string;
  dir: string;
  configPath: string;
  keyPath: string;
  vllm: FakeBackend;
  ollama: FakeBackend;
  /** vLLM and Ollama fakes plus a llama.cpp address where nothing listens. */
  probes: ProbeTarget[];
  lines: string[];
  /** Options for setup() against this rig, with `over` applied. */
  options(over?: Partial<SetupOptions>): SetupOptions;
}

async function withRig(
  pairingOpts: PairingOptions,
  fn: (rig: Rig) => Promise<void>,
): Promise<void> {
  const pairing = new PairingService(pairingOpts);
  const coord = await TestCoordinator.start({ http: (req) => pairing.handle(req) });
  const vllm = await startFakeBackend({ kind: "vllm" });
  const ollama = await startFakeBackend({
    kind: "ollama",
    models: ["qwen3:8b", "llama3.2:latest"],
  });
  const dir = await Deno.makeTempDir({ prefix: "usepod-setup-" });
  const lines: string[] = [];
  const rig: Rig = {
    coord,
    pairing,
    base: `http://127.0.0.1:${coord.port}`,
    dir,
    configPath: `${dir}/config/agent.toml`,
    keyPath: `${dir}/state/identity.key`,
    vllm,
    ollama,
    probes: [
      { kind: "vllm", url: vllm.url },
      { kind: "llamacpp", url: `http://127.0.0.1:${closedPort()}` },
      { kind: "ollama", url: ollama.url },
    ],
    lines,
    options: (over = {}) => ({
      coordinator: rig.base,
      configPath: rig.configPath,
      keyPath: rig.keyPath,
      force: false,
      allowInsecure: true,
      allowNoBackend: false,
      probes: rig.probes,
      out: (l) => lines.push(l),
      ...over,
    }),
  };
  try {
    await fn(rig);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- setup output ---\n${lines.join("\n")}`, {
      cause: err,
    });
  } finally {
    await coord.close();
    await vllm.close();
    await ollama.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs setup and approves its code once it has been polled `polls` times. */
async function pairWithApproval(rig: Rig, over: Partial<SetupOptions> = {}, polls = 1) {
  const running = setup(rig.options(over));
  const record = await within(rig.pairing.issued(0), WAIT_MS, "no pair code issued");
  await within(rig.pairing.polled(record, polls), WAIT_MS, "not polled");
  assert.equal(rig.pairing.approve(record.pair_code), true);
  return { code: await running, record };
}

async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

function mode(path: string): number {
  return (Deno.statSync(path).mode ?? 0) & 0o777;
}

Deno.test("setup pairs end to end: detected backends polled, approved code, a valid 0600 agent.toml, provider_id and host token stored", async () => {
  await withRig({}, async (rig) => {
    const { code, record } = await pairWithApproval(rig);
    assert.equal(code, 0);

    // What the coordinator was told while polling.
    const caps = record.polls.at(-1)!;
    assert.deepEqual(caps.backends, [
      { kind: "vllm", url: rig.vllm.url, models: ["meta-llama/Llama-3.3-70B-Instruct"] },
      { kind: "ollama", url: rig.ollama.url, models: ["llama3.2:latest", "qwen3:8b"] },
    ]);
    assert.match(String(caps.agent_version), /^\d+\.\d+\.\d+/);

    // agent.toml: complete, valid, priced from model_config, mode 0600.
    const text = await Deno.readTextFile(rig.configPath);
    const cfg = parseConfig(text, rig.configPath, { allowInsecure: true });
    assert.equal(cfg.coordinator.url, `ws://127.0.0.1:${rig.coord.port}/provider/connect`);
    assert.equal(cfg.identity.keyPath, rig.keyPath);
    assert.deepEqual(cfg.backends, [
      { kind: "vllm", url: rig.vllm.url },
      { kind: "ollama", url: rig.ollama.url },
    ]);
    assert.deepEqual({ ...cfg.pricing.models }, {
      "llama3.2:latest": { inputPer1m: 500_000, outputPer1m: 750_000 },
      "meta-llama/Llama-3.3-70B-Instruct": { inputPer1m: 500_000, outputPer1m: 750_000 },
      "qwen3:8b": { inputPer1m: 500_000, outputPer1m: 750_000 },
    });
    assert.equal(cfg.limits.maxConcurrent, 4);
    if (!WINDOWS) assert.equal(mode(rig.configPath), 0o600);
    assert.doesNotMatch(text, /host_token|hst_/);

    // provider_id in the identity file; host token beside it, 0600, never printed.
    const { identity } = await loadIdentity(rig.keyPath);
    assert.equal(identity.providerId, record.provider_id);
    assert.equal(identity.publicKeyB64, record.agent_pubkey);
    const tokenPath = `${rig.dir}/state/host_token`;
    assert.equal(await Deno.readTextFile(tokenPath), `${record.host_token}\n`);
    if (!WINDOWS) assert.equal(mode(tokenPath), 0o600);
    assert.ok(!rig.lines.join("\n").includes(record.host_token), "host token printed");

    // What the operator saw.
    const out = rig.lines.join("\n");
    assert.match(out, /✓ {2}vllm/);
    assert.match(out, /- {2}llamacpp .* not running/);
    assert.match(out, /✓ {2}ollama .* 2 models: llama3\.2:latest, qwen3:8b/);
    assert.ok(out.includes(`Pair code:     ${record.pair_code}`));
    assert.ok(out.includes(`Enter it at    ${rig.base}/host/pair`));
    assert.match(out, /Expires at {5}\d\d:\d\d:\d\d \(in 10 min\)/);
    assert.ok(out.includes(`paired: provider_id ${record.provider_id}`));
  });
});

Deno.test("the agent.toml setup writes passes `usepod-agent validate`", async () => {
  await withRig({ autoApprove: true }, async (rig) => {
    assert.equal(await setup(rig.options()), 0);
    const r = await runCli(["validate", "--config", rig.configPath, "--allow-insecure"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ok: .*2 backend\(s\) \(vllm, ollama\), max_concurrent 4\n/);
  });
});

Deno.test("setup polls every 800 ms until the code is approved", async () => {
  await withRig({}, async (rig) => {
    const times: number[] = [];
    const fetchTimed: typeof fetch = (input, init) => {
      if (String(input).endsWith("/poll")) times.push(performance.now());
      return fetch(input, init);
    };
    const { code } = await pairWithApproval(rig, { fetch: fetchTimed }, 4);
    assert.equal(code, 0);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    assert.ok(gaps.length >= 3, `${gaps.length} gaps`);
    for (const gap of gaps) assert.ok(gap >= 790 && gap < 1_500, `poll gap ${gap} ms`);
  });
});

Deno.test("an expired pair code exits 1 saying to run setup again, and writes nothing", async () => {
  await withRig({}, async (rig) => {
    const running = setup(rig.options());
    const record = await within(rig.pairing.issued(0), WAIT_MS, "no pair code");
    await within(rig.pairing.polled(record, 1), WAIT_MS, "not polled");
    rig.pairing.expire(record.pair_code);
    await assert.rejects(running, (err: unknown) => {
      assert.ok(err instanceof ExitError);
      assert.equal(err.exitCode, 1);
      assert.match(err.message, /expired.*run usepod-agent setup again/);
      return true;
    });
    assert.equal(await pathExists(rig.configPath), false);
    assert.equal(await pathExists(rig.keyPath), false, "the identity this run created stays");
    assert.equal(await pathExists(`${rig.dir}/state/host_token`), false);
  });
});

Deno.test("a code the coordinator keeps pending past its expiry ends as expired", async () => {
  await withRig({ ttlMs: -61_000 }, async (rig) => {
    // The code expired 61 s ago, yet every poll answers pending: the agent's own guard ends it.
    const pending: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (!String(input).endsWith("/poll")) return res;
      await res.body?.cancel();
      return Response.json({ status: "pending" });
    };
    await assert.rejects(setup(rig.options({ fetch: pending })), /expired/);
  });
});

Deno.test("Ctrl-C while waiting returns 130 and writes nothing", async () => {
  await withRig({}, async (rig) => {
    const ctrlC = new AbortController();
    const running = setup(rig.options({ signal: ctrlC.signal }));
    const record = await within(rig.pairing.issued(0), WAIT_MS, "no pair code");
    await within(rig.pairing.polled(record, 2), WAIT_MS, "not polled");
    ctrlC.abort();
    assert.equal(await running, EXIT_CANCELLED);
    assert.equal(rig.lines.at(-1), "setup cancelled; nothing was written");
    assert.equal(await pathExists(rig.configPath), false);
    assert.equal(await pathExists(rig.keyPath), false);
  });
});

Deno.test("an existing agent.toml is refused without --force before anything is asked", async () => {
  await withRig({ autoApprove: true }, async (rig) => {
    await Deno.mkdir(`${rig.dir}/config`);
    await Deno.writeTextFile(rig.configPath, "# mine\n");
    await assert.rejects(setup(rig.options()), (err: unknown) => {
      assert.ok(err instanceof ExitError);
      assert.equal(err.exitCode, 1);
      assert.match(err.message, /already exists: pass --force/);
      return true;
    });
    assert.equal(rig.pairing.records.length, 0);
    assert.equal(await Deno.readTextFile(rig.configPath), "# mine\n");
    assert.equal(await pathExists(rig.keyPath), false);
  });
});

Deno.test("--force replaces agent.toml and keeps the old one as agent.toml.bak (0600)", async () => {
  await withRig({ autoApprove: true }, async (rig) => {
    await Deno.mkdir(`${rig.dir}/config`);
    await Deno.writeTextFile(rig.configPath, "# the old file\n", { mode: 0o644 });
    assert.equal(await setup(rig.options({ force: true })), 0);
    assert.equal(await Deno.readTextFile(`${rig.configPath}.bak`), "# the old file\n");
    if (!WINDOWS) assert.equal(mode(`${rig.configPath}.bak`), 0o600);
    parseConfig(await Deno.readTextFile(rig.configPath), rig.configPath, { allowInsecure: true });
    assert.match(rig.lines.join("\n"), /previous file kept as .*agent\.toml\.bak/);
  });
});

Deno.test("no backend found exits 1 naming the addresses tried, before a pair code is asked", async () => {
  await withRig({ autoApprove: true }, async (rig) => {
    const nothing = [{ kind: "vllm" as const, url: `http://127.0.0.1:${closedPort()}` }];
    await assert.rejects(setup(rig.options({ probes: nothing })), (err: unknown) => {
      assert.ok(err instanceof ExitError);
      assert.equal(err.exitCode, 1);
      assert.match(
        err.message,
        /no inference server found \(tried vllm http:\/\/127\.0\.0\.1:\d+\)/,
      );
      assert.match(err.message, /--allow-no-backend/);
      return true;
    });
    assert.equal(rig.pairing.records.length, 0);
  });
});

Deno.test("--allow-no-backend pairs with an empty backend list and warns", async () => {
  await withRig({ autoApprove: true }, async (rig) => {
    const nothing = [{ kind: "vllm" as const, url: `http://127.0.0.1:${closedPort()}` }];
    assert.equal(await setup(rig.options({ probes: nothing, allowNoBackend: true })), 0);
    assert.deepEqual(rig.pairing.records[0]!.polls[0]!.backends, []);
    const cfg = parseConfig(await Deno.readTextFile(rig.configPath), rig.configPath, {
      allowInsecure: true,
    });
    assert.deepEqual(cfg.backends, []);
    assert.equal(cfg.limits.maxConcurrent, 8);
    assert.match(rig.lines.join("\n"), /warning: no inference server found/);
  });
});

Deno.test("an unreachable coordinator exits 1 with one line", async () => {
  await withRig({}, async (rig) => {
    const base = `http://127.0.0.1:${closedPort()}`;
    await assert.rejects(setup(rig.options({ coordinator: base })), (err: unknown) => {
      assert.ok(err instanceof ExitError);
      assert.equal(err.exitCode, 1);
      assert.match(err.message, new RegExp(`^cannot reach the coordinator at ${base}: `));
      assert.ok(!err.message.includes("\n"));
      return true;
    });
    assert.equal(await pathExists(rig.keyPath), false);
  });
});

Deno.test("a coordinator answering an HTTP error exits 1 naming the status", async () => {
  await withRig({ failWith: 503 }, async (rig) => {
    await assert.rejects(setup(rig.options()), /pair\/issue answered HTTP 503: scripted failure/);
  });
});

Deno.test("an unwritable config location exits 1 before pairing", async () => {
  await withRig({ autoApprove: true }, async (rig) => {
    await Deno.writeTextFile(`${rig.dir}/file`, "");
    const configPath = `${rig.dir}/file/agent.toml`; // its "directory" is a file
    await assert.rejects(setup(rig.options({ configPath })), (err: unknown) => {
      assert.ok(err instanceof ExitError);
      assert.match(err.message, /^cannot write the config at .*file\/agent\.toml: .*--config\)$/);
      return true;
    });
    assert.equal(rig.pairing.records.length, 0);
  });
});

Deno.test("failed polls are retried; an answer outside §8 exits 1 without quoting secrets", async () => {
  await withRig({ autoApprove: true }, async (rig) => {
    let polls = 0;
    const flaky: typeof fetch = async (input, init) => {
      if (String(input).endsWith("/poll") && ++polls === 1) throw new TypeError("connection reset");
      const res = await fetch(input, init);
      if (!String(input).endsWith("/poll")) return res;
      const body = await res.json();
      delete body.provider_id;
      return Response.json(body);
    };
    await assert.rejects(setup(rig.options({ fetch: flaky })), (err: unknown) => {
      assert.ok(err instanceof ExitError);
      assert.equal(err.message, 'pair/poll: "provider_id" is missing or not a single-line string');
      return true;
    });
    assert.equal(polls, 2);
    assert.equal(await pathExists(rig.configPath), false);
  });
});

Deno.test("on a terminal the wait shows a spinner and countdown, cleared at the end; otherwise one line", async () => {
  await withRig({}, async (rig) => {
    const status: string[] = [];
    await pairWithApproval(rig, { status: (s) => status.push(s) }, 2);
    assert.match(status[0]!, /^⠋ waiting for the code to be entered… expires in (10:00|9:5\d)/);
    assert.ok(new Set(status.map((s) => s[0])).size > 2, "the spinner turns");
    assert.equal(status.at(-1), "");
    assert.ok(!rig.lines.some((l) => l.includes("waiting")), "no waiting line on a terminal");
  });
  await withRig({ autoApprove: true }, async (rig) => {
    assert.equal(await setup(rig.options()), 0);
    assert.equal(rig.lines.filter((l) => l.includes("waiting for the code")).length, 1);
    // deno-lint-ignore no-control-regex
    assert.ok(!rig.lines.some((l) => /[\x00-\x1f]/.test(l)), "control characters in the output");
  });
});

Deno.test("the pair code box frames the code, the page and the expiry", () => {
  const expires = new Date(2026, 0, 2, 3, 14, 15);
  const box = pairBox(
    "K7QX-42MD",
    "https://usepod.ai/host/pair",
    expires,
    expires.getTime() - 600_000,
  );
  assert.ok(box.every((l) => [...l].length === [...box[0]!].length), box.join("\n"));
  assert.match(box[0]!, /^╭─+╮$/);
  assert.match(box.at(-1)!, /^╰─+╯$/);
  assert.ok(box.some((l) => l.includes("Pair code:     K7QX-42MD")));
  assert.ok(box.some((l) => l.includes("Enter it at    https://usepod.ai/host/pair")));
  assert.ok(box.some((l) => l.includes("Expires at     03:14:15 (in 10 min)")));
});

Deno.test("coordinator URLs: wss connect URL, the production pair page, http only with --allow-insecure", () => {
  assert.deepEqual(coordinatorUrls("https://api.usepod.ai/", false), {
    base: "https://api.usepod.ai",
    connectUrl: "wss://api.usepod.ai/provider/connect",
    pairPage: "https://usepod.ai/host/pair",
  });
  assert.deepEqual(coordinatorUrls("https://coord.example/eu", false), {
    base: "https://coord.example/eu",
    connectUrl: "wss://coord.example/eu/provider/connect",
    pairPage: "https://coord.example/eu/host/pair",
  });
  assert.equal(
    coordinatorUrls("http://127.0.0.1:8787", true).connectUrl,
    "ws://127.0.0.1:8787/provider/connect",
  );
  assert.throws(() => coordinatorUrls("http://127.0.0.1:8787", false), /--allow-insecure/);
  assert.throws(() => coordinatorUrls("wss://api.usepod.ai/provider/connect", false), /https base/);
  assert.throws(() => coordinatorUrls("https://api.usepod.ai?x=1", false), /no query/);
});

Deno.test("a bad --coordinator is a usage error", async () => {
  await withRig({}, async (rig) => {
    await assert.rejects(
      setup(rig.options({ coordinator: "ftp://x", allowInsecure: false })),
      (err: unknown) => err instanceof UsageError && /^--coordinator: /.test(err.message),
    );
  });
});

Deno.test("detection probes the four well-known ports of PROTOCOL §8", () => {
  assert.deepEqual(WELL_KNOWN_BACKENDS, [
    { kind: "vllm", url: "http://localhost:8000" },
    { kind: "llamacpp", url: "http://localhost:8080" },
    { kind: "lmstudio", url: "http://localhost:1234" },
    { kind: "ollama", url: "http://localhost:11434" },
  ]);
});

Deno.test("detection lists each kind's models, and tells a silent or foreign server from a backend", async () => {
  const fakes = await Promise.all(
    (["vllm", "llamacpp", "lmstudio", "ollama"] as const).map((kind) => startFakeBackend({ kind })),
  );
  // A server that accepts and never answers, and one that is not a model server.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of silent) held.push(c);
  })();
  const foreign = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("<html>hello</html>"),
  );
  try {
    const t0 = performance.now();
    const found = await detectBackends([
      ...fakes.map((f, i) => ({
        kind: (["vllm", "llamacpp", "lmstudio", "ollama"] as const)[i]!,
        url: f.url,
      })),
      { kind: "vllm", url: `http://127.0.0.1:${(silent.addr as Deno.NetAddr).port}` },
      { kind: "llamacpp", url: `http://127.0.0.1:${foreign.addr.port}` },
    ]);
    const ms = performance.now() - t0;
    assert.deepEqual(found.slice(0, 4).map((d) => d.found && d.models), [
      ["meta-llama/Llama-3.3-70B-Instruct"],
      ["llama-3.2-3b-instruct"],
      ["qwen2.5-7b-instruct"],
      ["llama3.2:latest"],
    ]);
    assert.deepEqual(found.slice(4).map((d) => !d.found && d.why.replace(/http\S+/, "URL")), [
      "no answer in 800 ms",
      "URL did not answer JSON",
    ]);
    assert.ok(ms < 1_500, `probes run at once (${ms} ms)`);
  } finally {
    silent.close();
    await accepting.catch(() => {});
    for (const c of held) c.close();
    await foreign.shutdown();
    await Promise.all(fakes.map((f) => f.close()));
  }
});

Deno.test("the dev coordinator's /host/pair form approves a code", async () => {
  await withRig({}, async (rig) => {
    const running = setup(rig.options());
    const record = await within(rig.pairing.issued(0), WAIT_MS, "no pair code");
    const page = await fetch(`${rig.base}/host/pair`);
    assert.match(await page.text(), /<form method="post">/);
    const res = await fetch(`${rig.base}/host/pair`, {
      method: "POST",
      body: new URLSearchParams({ pair_code: record.pair_code.toLowerCase() }),
    });
    assert.match(await res.text(), /Approved/);
    assert.equal(await running, 0);
  });
});

Deno.test("CLI: setup against the dev coordinator, approved over HTTP, then `run` serves with that file", async () => {
  await withRig({}, async (rig) => {
    const env = { HOME: `${rig.dir}/home`, XDG_CONFIG_HOME: `${rig.dir}/xdg` };
    const proc = new AgentProcess(
      ["setup", "--coordinator", rig.base, "--allow-insecure", "--allow-no-backend"],
      { env },
    );
    try {
      const line = await within(proc.waitForLine(/Pair code: /), WAIT_MS, "no pair code shown");
      const code = /Pair code:\s+(\S+)/.exec(line)![1]!;
      const res = await fetch(`${rig.base}/dev/pair/approve`, {
        method: "POST",
        body: JSON.stringify({ pair_code: code }),
      });
      assert.equal(res.status, 200, await res.text());
      const status = await within(proc.exited, WAIT_MS, "setup did not finish");
      assert.equal(status.code, 0, proc.output);
    } finally {
      await proc.stop();
    }
    const configPath = `${rig.dir}/xdg/usepod-agent/agent.toml`;
    const cfg = parseConfig(await Deno.readTextFile(configPath), configPath, {
      allowInsecure: true,
    });
    assert.equal(cfg.identity.keyPath, `${rig.dir}/home/.usepod-agent/identity.key`);
    assert.ok(proc.lines.includes("start the agent: usepod-agent --allow-insecure"), proc.output);

    const agent = new AgentProcess(["--allow-insecure"], { env });
    try {
      const s = await within(rig.coord.authenticated(0), WAIT_MS, "agent did not authenticate");
      assert.equal(s.signatureValid, true);
      assert.equal(s.authResponse?.pubkey, rig.pairing.records[0]!.agent_pubkey);
      await within(s.waitFor((f) => f.type === "capabilities"), WAIT_MS, "no capabilities");
    } finally {
      agent.kill("SIGTERM");
      await within(agent.exited, WAIT_MS, "agent did not stop");
    }
  });
});

Deno.test("CLI: Ctrl-C during setup exits 130 with nothing written", async () => {
  await withRig({}, async (rig) => {
    const env = { HOME: `${rig.dir}/home`, XDG_CONFIG_HOME: `${rig.dir}/xdg` };
    const proc = new AgentProcess(
      ["setup", "--coordinator", rig.base, "--allow-insecure", "--allow-no-backend"],
      { env },
    );
    try {
      await within(proc.waitForLine(/waiting for the code/), WAIT_MS, "not waiting");
      proc.kill("SIGINT");
      const status = await within(proc.exited, WAIT_MS, "setup did not stop");
      assert.equal(status.code, 130, proc.output);
      assert.equal(proc.lines.at(-1), "setup cancelled; nothing was written");
    } finally {
      await proc.stop();
    }
    assert.equal(await pathExists(`${rig.dir}/xdg/usepod-agent/agent.toml`), false);
    assert.equal(await pathExists(`${rig.dir}/home/.usepod-agent/identity.key`), false);
  });
});
