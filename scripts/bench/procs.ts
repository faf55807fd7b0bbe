// The benchmark's view of its child processes: spawning (optionally with the CPU probe
// preloaded), JSON-line requests, CPU readings (probe µs or /proc clock ticks), RSS from
// /proc/<pid>/status with peak tracking, and a stop that always ends the process.

import { type Command, lines, nowEpoch, type Reply, withTimeout } from "./common.ts";

const PROBE = new URL("./cpu_probe.ts", import.meta.url).pathname;
const STDERR_TAIL = 40;
const encoder = new TextEncoder();

/** How to start a child. */
export interface SpawnOptions {
  /** Arguments after `deno run`. */
  args: string[];
  /** Preload scripts/bench/cpu_probe.ts so {@link Child.cpuUs} works. */
  probe?: boolean;
  /** Extra flags before the script (e.g. --cpu-prof). */
  denoFlags?: string[];
  env?: Record<string, string>;
}

/** Every child spawned so far, for the CPU the benchmark itself used on the machine. */
export const spawned: Child[] = [];

/** One child process of the benchmark. */
export class Child {
  readonly spawnedAt: number;
  readonly pid: number;
  /** Epoch ms of the first stderr line (the first log line of an agent). */
  firstStderrAt: number | undefined;
  /** utime + stime in ms just before it was told to stop. */
  cpuMsAtStop: number | undefined;
  readonly stderrTail: string[] = [];
  stderrLines = 0;
  readonly #proc: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #pumps: Promise<void>[];
  #plain: string[] = [];
  #plainWaiter: (() => void) | undefined;
  #cpuWaiters: ((us: number) => void)[] = [];
  #replies = new Map<number, (r: Reply) => void>();
  #nextId = 1;
  #stdinClosed = false;

  constructor(readonly name: string, opts: SpawnOptions) {
    const flags = ["run", "-A", ...(opts.denoFlags ?? [])];
    if (opts.probe) flags.push("--preload", PROBE);
    this.spawnedAt = nowEpoch();
    this.#proc = new Deno.Command(Deno.execPath(), {
      args: [...flags, ...opts.args],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      ...(opts.env ? { env: opts.env } : {}),
    }).spawn();
    this.pid = this.#proc.pid;
    this.#stdin = this.#proc.stdin.getWriter();
    this.#pumps = [this.#readStdout(), this.#readStderr()];
    spawned.push(this);
  }

  async #readStdout(): Promise<void> {
    for await (const line of lines(this.#proc.stdout)) {
      if (line.startsWith("@cpu ")) {
        const [, user, system] = line.split(" ");
        this.#cpuWaiters.shift()?.(Number(user) + Number(system));
        continue;
      }
      if (line.startsWith("{")) {
        try {
          const r = JSON.parse(line) as Reply;
          const waiter = typeof r.id === "number" ? this.#replies.get(r.id) : undefined;
          if (waiter) {
            this.#replies.delete(r.id);
            waiter(r);
            continue;
          }
        } catch {
          // not JSON: a plain line
        }
      }
      this.#plain.push(line);
      this.#plainWaiter?.();
    }
    this.#plainWaiter?.();
  }

  async #readStderr(): Promise<void> {
    for await (const line of lines(this.#proc.stderr)) {
      this.firstStderrAt ??= nowEpoch();
      this.stderrLines++;
      this.stderrTail.push(line);
      if (this.stderrTail.length > STDERR_TAIL) this.stderrTail.shift();
    }
  }

  /** The next stdout line that is neither a reply nor a CPU reading (a ready line). */
  async nextLine(timeoutMs: number): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    while (this.#plain.length === 0) {
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new Error(`${this.name}: no output within ${timeoutMs} ms${this.#tail()}`);
      }
      const more = new Promise<void>((r) => (this.#plainWaiter = r));
      await withTimeout(more, left, this.name).catch(() => {});
      this.#plainWaiter = undefined;
      if (this.#plain.length === 0 && (await this.#exited())) {
        throw new Error(`${this.name} exited before answering${this.#tail()}`);
      }
    }
    return this.#plain.shift()!;
  }

  async #exited(): Promise<boolean> {
    const probe = await Promise.race([this.#proc.status, Promise.resolve(undefined)]);
    return probe !== undefined;
  }

  #tail(): string {
    return this.stderrTail.length ? `\n  stderr: ${this.stderrTail.slice(-8).join("\n  ")}` : "";
  }

  /** Sends a command and waits for its reply; a reply with `error` rejects. */
  async request(cmd: Omit<Command, "id">, timeoutMs: number): Promise<Reply> {
    const id = this.#nextId++;
    const reply = new Promise<Reply>((resolve) => this.#replies.set(id, resolve));
    await this.#stdin.write(encoder.encode(JSON.stringify({ ...cmd, id }) + "\n"));
    const r = await withTimeout(reply, timeoutMs, `${this.name} ${cmd.cmd}`).finally(() =>
      this.#replies.delete(id)
    );
    if (r.error !== undefined) throw new Error(`${this.name} ${cmd.cmd}: ${r.error}`);
    return r;
  }

  /** User + system CPU µs so far, read inside the process by the preloaded probe. */
  cpuUs(timeoutMs = 5000): Promise<number> {
    const reading = new Promise<number>((resolve) => this.#cpuWaiters.push(resolve));
    Deno.kill(this.pid, "SIGUSR2");
    return withTimeout(reading, timeoutMs, `${this.name} CPU probe`);
  }

  /** User + system CPU in ms from /proc/<pid>/stat (clock-tick resolution). */
  ticksMs(): number {
    return procCpuMs(this.pid);
  }

  rssKb(): number {
    return procStatus(this.pid).rssKb;
  }

  /** Starts a new peak: VmHWM is reset to the current RSS (clear_refs 5). */
  resetPeak(): void {
    Deno.writeTextFileSync(`/proc/${this.pid}/clear_refs`, "5");
  }

  hwmKb(): number {
    return procStatus(this.pid).hwmKb;
  }

  /** The exit status, or undefined if it is still running. */
  async status(): Promise<Deno.CommandStatus | undefined> {
    return await Promise.race([this.#proc.status, Promise.resolve(undefined)]);
  }

  /**
   * Ends the process: `quit` on stdin for helpers, or a signal; SIGKILL after `graceMs`.
   * Resolves with the exit status once its pipes are drained.
   */
  async stop(how: "quit" | "SIGTERM", graceMs = 10_000): Promise<Deno.CommandStatus> {
    try {
      this.cpuMsAtStop ??= procCpuMs(this.pid);
    } catch {
      // already gone
    }
    try {
      if (how === "quit") {
        await this.#stdin.write(encoder.encode(JSON.stringify({ id: 0, cmd: "quit" }) + "\n"));
      } else {
        Deno.kill(this.pid, "SIGTERM");
      }
    } catch {
      // already gone
    }
    let status: Deno.CommandStatus;
    try {
      status = await withTimeout(this.#proc.status, graceMs, `${this.name} exit`);
    } catch {
      try {
        Deno.kill(this.pid, "SIGKILL");
      } catch {
        // exited meanwhile
      }
      status = await this.#proc.status;
    }
    await this.#closeStdin();
    await Promise.allSettled(this.#pumps);
    return status;
  }

  async #closeStdin(): Promise<void> {
    if (this.#stdinClosed) return;
    this.#stdinClosed = true;
    await this.#stdin.close().catch(() => {});
  }
}

let clockTick: number | undefined;

/** CLK_TCK from `getconf` (100 when it cannot be read). */
export async function clkTck(): Promise<number> {
  if (clockTick !== undefined) return clockTick;
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).output();
    clockTick = Number(new TextDecoder().decode(out.stdout).trim()) || 100;
  } catch {
    clockTick = 100;
  }
  return clockTick;
}

/** utime + stime of a process in ms (call {@link clkTck} once before). */
export function procCpuMs(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // After "pid (comm) ", field 3 (state) is f[0]; utime and stime are fields 14 and 15.
  return (Number(f[11]) + Number(f[12])) * 1000 / (clockTick ?? 100);
}

/** CPU ms the whole machine spent busy (all cores; /proc/stat, not idle or iowait). */
export function machineBusyMs(): number {
  const cpu = Deno.readTextFileSync("/proc/stat").split("\n")[0]!.trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = cpu.slice(1).map(Number);
  const ticks = user! + nice! + system! + irq! + softirq! + (steal ?? 0);
  return ticks * 1000 / (clockTick ?? 100);
}

/** VmRSS and VmHWM of a process in kB. */
export function procStatus(pid: number): { rssKb: number; hwmKb: number } {
  const text = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1]);
  return { rssKb: kb("VmRSS"), hwmKb: kb("VmHWM") };
}

/**
 * Samples a child's VmRSS every `everyMs` until stopped (or `maxMs` passed); the peak is the
 * larger of the samples and VmHWM since the sampler started (which resets it).
 */
export class PeakRss {
  #child: Child;
  #peakKb = 0;
  #samples = 0;
  #timer: ReturnType<typeof setInterval>;
  #until: number;

  constructor(child: Child, everyMs = 20, maxMs = 10 * 60_000) {
    this.#child = child;
    child.resetPeak();
    this.#until = performance.now() + maxMs;
    this.#timer = setInterval(() => this.#sample(), everyMs);
    this.#sample();
  }

  #sample(): void {
    if (performance.now() > this.#until) return clearInterval(this.#timer);
    try {
      this.#peakKb = Math.max(this.#peakKb, this.#child.rssKb());
      this.#samples++;
    } catch {
      clearInterval(this.#timer); // the process is gone
    }
  }

  /** The peak so far in kB (sampling goes on). */
  peekKb(): number {
    let hwm = 0;
    try {
      hwm = this.#child.hwmKb();
    } catch {
      // gone
    }
    return Math.max(this.#peakKb, hwm);
  }

  /** Stops sampling; the peak in kB and the number of samples taken. */
  stop(): { peakKb: number; samples: number } {
    clearInterval(this.#timer);
    let hwm = 0;
    try {
      hwm = this.#child.hwmKb();
    } catch {
      // gone
    }
    return { peakKb: Math.max(this.#peakKb, hwm), samples: this.#samples };
  }
}
