// A whole stack on loopback for in-process tests: the test coordinator, fake backends, and the
// real Agent wired to them through an agent.toml written like an operator's. One call to start,
// one `stop()` that leaves no socket or timer behind.

import { Agent, type AgentOptions } from "../../src/agent.ts";
import { Backoff } from "../../src/link/backoff.ts";
import { parseConfig } from "../../src/config/config.ts";
import { loadOrCreateIdentity } from "../../src/identity/identity.ts";
import { type Level, setLevel } from "../../src/log.ts";
import { type CoordinatorOptions, type CoordSession, TestCoordinator } from "./coordinator.ts";
import { type FakeBackend, type FakeBackendOptions, startFakeBackend } from "./fake_backend.ts";

export interface StackOptions {
  backends?: FakeBackendOptions[];
  coordinator?: CoordinatorOptions;
  /** Extra TOML appended to the generated agent.toml (tables after [[backends]]). */
  toml?: string;
  /** Replaces the generated [limits] table. */
  limits?: string;
  /** Replaces the generated [[backends]] entries. */
  backendsToml?: (fakes: FakeBackend[]) => string;
  enrollmentCode?: string;
  session?: AgentOptions["session"];
  env?: Record<string, string>;
  rediscoverMs?: number;
  /** How often the agent reads vLLM queues (default its own, 1 s). */
  queueWatch?: AgentOptions["queueWatch"];
  /** Log level while the stack runs (default $TEST_LOG_LEVEL or "error"). */
  logLevel?: Level;
}

export interface Stack {
  coord: TestCoordinator;
  fakes: FakeBackend[];
  agent: Agent;
  dir: string;
  keyPath: string;
  running: Promise<void>;
  stop(): Promise<void>;
}

/** The [[backends]] entry for a fake backend. */
export function backendToml(f: FakeBackend, kind: string, extra = ""): string {
  const remote = kind === "openrouter" || kind === "venice";
  return `[[backends]]\nkind = "${kind}"\nurl = "${f.url}"\n` +
    (remote ? `api_key_env = "TEST_${kind.toUpperCase()}_KEY"\n` : "") + extra + "\n";
}

/** Starts coordinator, backends and agent; the agent is connecting when this resolves. */
export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  setLevel(opts.logLevel ?? (Deno.env.get("TEST_LOG_LEVEL") as Level | undefined) ?? "error");
  const coord = await TestCoordinator.start(opts.coordinator);
  const specs = opts.backends ?? [{ kind: "vllm" }];
  const fakes = await Promise.all(specs.map((s) => startFakeBackend(s)));
  const dir = await Deno.makeTempDir({ prefix: "usepod-test-" });
  const keyPath = `${dir}/identity.key`;
  const backends = opts.backendsToml
    ? opts.backendsToml(fakes)
    : fakes.map((f, i) => backendToml(f, specs[i]!.kind)).join("");
  const toml = `
[coordinator]
url = "${coord.url}"
${opts.enrollmentCode ? `enrollment_code = "${opts.enrollmentCode}"` : ""}

[identity]
key_path = "${keyPath}"

${backends}

[pricing]
default_input_per_1m = 500000
default_output_per_1m = 750000

${opts.limits ?? "[limits]\nmax_concurrent = 8"}

${opts.toml ?? ""}
`;
  const config = parseConfig(toml, `${dir}/agent.toml`, { allowInsecure: true });
  const { identity } = await loadOrCreateIdentity(keyPath);
  const env = opts.env ?? {
    TEST_OPENROUTER_KEY: "sk-test-openrouter",
    TEST_VENICE_KEY: "sk-test-venice",
  };
  const agent = new Agent({
    config,
    identity,
    discovery: { env: (n) => env[n] },
    session: {
      backoff: new Backoff({ random: () => 0.5 }),
      ...opts.session,
    },
    ...(opts.rediscoverMs !== undefined ? { rediscoverMs: opts.rediscoverMs } : {}),
    ...(opts.queueWatch ? { queueWatch: opts.queueWatch } : {}),
  });
  const running = agent.run();
  let stopped = false;
  return {
    coord,
    fakes,
    agent,
    dir,
    keyPath,
    running,
    async stop() {
      if (stopped) return;
      stopped = true;
      await agent.shutdown();
      await running;
      await coord.close();
      await Promise.all(fakes.map((f) => f.close()));
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Starts a stack, runs `fn`, and stops the stack whatever happens. */
export async function withStack(
  opts: StackOptions,
  fn: (stack: Stack) => Promise<void>,
): Promise<void> {
  const stack = await startStack(opts);
  try {
    await fn(stack);
  } finally {
    await stack.stop();
  }
}

/** {@link withStack}, with the first session once it authenticated and got capabilities. */
export function withSession(
  opts: StackOptions,
  fn: (stack: Stack, s: CoordSession) => Promise<void>,
): Promise<void> {
  return withStack(opts, async (stack) => {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    await fn(stack, s);
  });
}
