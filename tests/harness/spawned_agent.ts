// The real CLI as an operator runs it, for the reliability tests and the soak:
// `deno run -A <release V8 flags> main.ts run --config …` as a subprocess, its stderr collected
// line by line (bounded waits on it), its RSS read from /proc (or ps), a stop that always reaps.

import { AGENT_V8_FLAGS } from "../../scripts/build.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

export interface SpawnOptions {
  configPath: string;
  /** Arguments after `run --config PATH` (default `--allow-insecure`). */
  args?: string[];
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** `deno run` flags before main.ts (default: the V8 flags the release is compiled with). */
  denoArgs?: string[];
}

/** A running agent process. */
export class SpawnedAgent {
  readonly child: Deno.ChildProcess;
  /** Every stderr line so far. */
  readonly lines: string[] = [];
  readonly exited: Promise<Deno.CommandStatus>;
  #waiters: { re: RegExp; resolve: (l: string | undefined) => void }[] = [];
  #reading: Promise<void>;

  constructor(opts: SpawnOptions) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        ...(opts.denoArgs ?? AGENT_V8_FLAGS),
        MAIN,
        "run",
        "--config",
        opts.configPath,
        ...(opts.args ?? ["--allow-insecure"]),
      ],
      env: { NO_COLOR: "1", ...opts.env },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#reading = this.#read();
    this.exited = this.child.status;
  }

  get pid(): number {
    return this.child.pid;
  }

  async #read(): Promise<void> {
    let rest = "";
    for await (const piece of this.child.stderr.pipeThrough(new TextDecoderStream())) {
      rest += piece;
      for (let i = rest.indexOf("\n"); i >= 0; i = rest.indexOf("\n")) {
        this.#line(rest.slice(0, i));
        rest = rest.slice(i + 1);
      }
    }
    if (rest) this.#line(rest);
    for (const w of this.#waiters) w.resolve(undefined);
    this.#waiters = [];
  }

  #line(line: string): void {
    this.lines.push(line);
    this.#waiters = this.#waiters.filter((
      w,
    ) => (w.re.test(line) ? (w.resolve(line), false) : true));
  }

  /**
   * The first stderr line (so far or later) matching `re`; rejects after `timeoutMs`, or when
   * the process ends without printing one.
   */
  async waitForLine(re: RegExp, timeoutMs = 10_000): Promise<string> {
    const seen = this.lines.find((l) => re.test(l));
    if (seen !== undefined) return seen;
    const found = new Promise<string | undefined>((resolve) => this.#waiters.push({ re, resolve }));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no line matching ${re} within ${timeoutMs} ms:\n${this.tail()}`)),
        timeoutMs,
      );
    });
    try {
      const line = await Promise.race([found, late]);
      if (line === undefined) {
        throw new Error(`the agent exited without a line matching ${re}:\n${this.tail()}`);
      }
      return line;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The last stderr lines, for failure messages. */
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

  /**
   * Sends `signal` (default SIGTERM: graceful drain), waits for the exit, and sends SIGKILL
   * after `killAfterMs`. Always reaps the process and its stderr pipe.
   */
  async stop(signal: Deno.Signal = "SIGTERM", killAfterMs = 10_000): Promise<Deno.CommandStatus> {
    try {
      this.child.kill(signal);
    } catch { /* already exited */ }
    return await this.reap(killAfterMs);
  }

  /** Waits for the process to exit by itself; SIGKILL after `killAfterMs`. */
  async reap(killAfterMs = 10_000): Promise<Deno.CommandStatus> {
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch { /* already exited */ }
    }, killAfterMs);
    try {
      const status = await this.exited;
      await this.#reading;
      return status;
    } finally {
      clearTimeout(timer);
    }
  }
}

export interface AgentTomlOptions {
  coordinatorUrl: string;
  keyPath: string;
  /** [[backends]] entries, verbatim. */
  backends?: string;
  caFile?: string;
  maxConcurrent?: number;
  logLevel?: string;
}

/** An agent.toml as an operator would write it. */
export function agentToml(o: AgentTomlOptions): string {
  return `[coordinator]
url = "${o.coordinatorUrl}"
${o.caFile ? `ca_file = "${o.caFile}"` : ""}

[identity]
key_path = "${o.keyPath}"

${o.backends ?? ""}

[pricing]
default_input_per_1m = 500_000
default_output_per_1m = 750_000

[limits]
max_concurrent = ${o.maxConcurrent ?? 8}
drain_timeout_s = 5

[observability]
prometheus_addr = "127.0.0.1:0"
log_level = "${o.logLevel ?? "info"}"
`;
}

/** Rejects with `what` when `p` has not settled within `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
