// The real agent as a subprocess (`deno run -A main.ts …`) for lifecycle and CLI tests (issue 4):
// run a command to completion, or spawn the agent, read its output line by line as it comes, wait
// for a line, signal it, collect its exit; and agent.toml text for the test coordinator.

import { AGENT_V8_FLAGS } from "../../scripts/build.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/**
 * This deno's cache dir, passed on to every subprocess: a test that moves HOME must not make
 * deno look for its npm packages (and download them) under the new HOME.
 */
const DENO_DIR = Deno.env.get("DENO_DIR") ??
  JSON.parse(
    new TextDecoder().decode(
      (await new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stderr: "null" })
        .output()).stdout,
    ),
  ).denoDir as string;

function childEnv(env: Record<string, string> | undefined): Record<string, string> {
  return { NO_COLOR: "1", DENO_DIR, ...env };
}

/** What a finished command printed and exited with. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `main.ts` with `args` to completion.
 *
 * @example
 * ```ts
 * const { code, stdout } = await runCli(["version"]);
 * ```
 */
export async function runCli(
  args: string[],
  opts: { env?: Record<string, string>; cwd?: string } = {},
): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...AGENT_V8_FLAGS, MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: childEnv(opts.env),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** How {@link AgentProcess} starts `main.ts`. */
export interface AgentProcessOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** `deno run` flags before main.ts (default: the V8 flags the release is compiled with). */
  denoArgs?: string[];
}

/** A running `main.ts` whose stdout and stderr are read line by line. */
export class AgentProcess {
  readonly child: Deno.ChildProcess;
  /** Every line printed so far, stdout and stderr interleaved in arrival order. */
  readonly lines: string[] = [];
  /** Resolves once the process has exited and both streams are read to their end. */
  readonly exited: Promise<Deno.CommandStatus>;
  #waiters: { re: RegExp; resolve: (line: string | undefined) => void }[] = [];

  constructor(args: string[], opts: AgentProcessOptions = {}) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ...(opts.denoArgs ?? AGENT_V8_FLAGS), MAIN, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: childEnv(opts.env),
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    }).spawn();
    const reading = Promise.all([this.#read(this.child.stdout), this.#read(this.child.stderr)]);
    this.exited = reading.then(() => {
      for (const w of this.#waiters) w.resolve(undefined);
      this.#waiters = [];
      return this.child.status;
    });
  }

  get pid(): number {
    return this.child.pid;
  }

  /**
   * The first line (printed so far or later) matching `re`. Rejects when the process ends
   * without printing one, and after `timeoutMs` when given.
   */
  async waitForLine(re: RegExp, timeoutMs?: number): Promise<string> {
    const seen = this.lines.find((l) => re.test(l));
    if (seen !== undefined) return seen;
    const found = new Promise<string | undefined>((resolve) => this.#waiters.push({ re, resolve }));
    const line =
      await (timeoutMs === undefined
        ? found
        : within(found, timeoutMs, `no line matching ${re}:\n${this.tail()}\n`));
    if (line === undefined) {
      throw new Error(`exited without a line matching ${re}:\n${this.tail()}`);
    }
    return line;
  }

  /** Sends a signal; ignored when the process is already gone. */
  kill(signal: Deno.Signal): void {
    try {
      this.child.kill(signal);
    } catch {
      // already exited
    }
  }

  /**
   * Sends `signal` (default SIGKILL, for `finally` blocks; SIGTERM drains gracefully) and
   * waits for the exit, with SIGKILL after `killAfterMs`.
   */
  stop(signal: Deno.Signal = "SIGKILL", killAfterMs = 10_000): Promise<Deno.CommandStatus> {
    this.kill(signal);
    return this.reap(killAfterMs);
  }

  /** Waits for the process to exit by itself; SIGKILL after `killAfterMs`. */
  async reap(killAfterMs = 10_000): Promise<Deno.CommandStatus> {
    const timer = setTimeout(() => this.kill("SIGKILL"), killAfterMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** All output so far, for assertion messages. */
  get output(): string {
    return this.lines.join("\n");
  }

  /** The last lines, for failure messages. */
  tail(n = 20): string {
    return this.lines.slice(-n).join("\n");
  }

  /** Resident set size of the process in bytes (Linux /proc, else ps). */
  async rss(): Promise<number> {
    try {
      const status = await Deno.readTextFile(`/proc/${this.pid}/status`);
      const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
      if (kb !== undefined) return Number(kb) * 1024;
    } catch { /* not Linux */ }
    const out = await new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(this.pid)] })
      .output();
    return Number(new TextDecoder().decode(out.stdout).trim()) * 1024;
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    let rest = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + text).split("\n");
      rest = parts.pop() ?? "";
      for (const line of parts) this.#line(line);
    }
    if (rest) this.#line(rest);
  }

  #line(line: string): void {
    this.lines.push(line);
    this.#waiters = this.#waiters.filter((
      w,
    ) => (w.re.test(line) ? (w.resolve(line), false) : true));
  }
}

/**
 * Rejects with `message` when `p` has not settled within `ms`; the timer never outlives the race.
 *
 * @example
 * ```ts
 * const status = await within(agent.exited, 5_000, "agent did not exit");
 * ```
 */
export async function within<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Fields of {@link agentToml}. */
export interface AgentTomlOptions {
  coordinatorUrl: string;
  keyPath: string;
  /** `[[backends]]` entries (see backendToml in stack.ts). */
  backends?: string;
  caFile?: string;
  defaultInput?: number;
  defaultOutput?: number;
  maxConcurrent?: number;
  drainTimeoutS?: number;
  /** Default "127.0.0.1:0": no fixed port, so parallel agents never collide. */
  prometheusAddr?: string;
  logLevel?: string;
}

/** A complete agent.toml, as an operator would write it, for a subprocess agent. */
export function agentToml(o: AgentTomlOptions): string {
  return `[coordinator]
url = "${o.coordinatorUrl}"
${o.caFile ? `ca_file = "${o.caFile}"` : ""}

[identity]
key_path = "${o.keyPath}"

${o.backends ?? ""}
[pricing]
default_input_per_1m = ${o.defaultInput ?? 500_000}
default_output_per_1m = ${o.defaultOutput ?? 750_000}

[limits]
max_concurrent = ${o.maxConcurrent ?? 8}
drain_timeout_s = ${o.drainTimeoutS ?? 30}

[observability]
prometheus_addr = "${o.prometheusAddr ?? "127.0.0.1:0"}"
log_level = "${o.logLevel ?? "info"}"
`;
}
