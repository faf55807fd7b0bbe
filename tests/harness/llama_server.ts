// A real llama.cpp `llama-server` (CPU, tiny random-weight model) as a subprocess for tests and the
// bench: free port, readiness on GET /health, slots, SIGKILL/restart on the same port, log tail.
// Deno built-ins only. Facts it relies on are measured in /work/notes/llama.md.

/** The binary and the model, from env LLAMA_SERVER and TINY_GGUF; null if either is unset. */
export function llamaPaths(): { server: string; model: string } | null {
  const server = Deno.env.get("LLAMA_SERVER");
  const model = Deno.env.get("TINY_GGUF");
  return server && model ? { server, model } : null;
}

/** One line telling how to enable the tests that need a real llama-server. */
export const LLAMA_SKIP_HINT =
  "real llama-server tests skipped: set LLAMA_SERVER=/work/shared/llama/bin/llama-server " +
  "TINY_GGUF=/work/shared/llama/tiny.gguf";

/** One entry of GET /slots (a slot that served a task also has id_task, params, next_token…). */
export interface LlamaSlot {
  id: number;
  "is_processing": boolean;
  "n_ctx"?: number;
}

/** A running llama-server; `await using` stops it. */
export interface LlamaServer {
  /** `http://127.0.0.1:<port>` (no trailing slash). */
  url: string;
  port: number;
  /** The model id it reports (`data[0].id` of /v1/models) and puts in every answer's `model`. */
  alias: string;
  /** Pid of the current process (changes on restart). */
  readonly pid: number;
  /** GET /slots. Throws while the model loads (503). */
  slots(): Promise<LlamaSlot[]>;
  /** Waits until no slot is processing; throws after `timeoutMs`. */
  waitIdle(timeoutMs: number): Promise<void>;
  /** Waits for GET /health 200 (after `ready: false`); throws with the log tail on timeout/exit. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** User+system CPU seconds the current process has used so far (Linux /proc). */
  cpuSeconds(): number;
  /** SIGKILL and reap. Clients mid-stream see the connection cut (no [DONE]). */
  kill(): Promise<void>;
  /** Starts it again on the same port (killing it first if it runs), waits for /health 200. */
  restart(): Promise<void>;
  /** SIGTERM, SIGKILL after a short grace, reap, remove the temp dir. Idempotent. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
  /** Tail of its stdout/stderr log (all starts, appended). */
  log(): string;
}

/** How {@link startLlamaServer} runs llama-server. */
export interface LlamaServerOptions {
  /** Slots, `-np` (default 4). */
  slots?: number;
  /** Total context `-c` (default 8192); per slot min(ctx / slots, tiny's n_ctx_train 2048). */
  ctx?: number;
  /** `--alias`, the model id reported (default "tiny"). */
  alias?: string;
  /** Port (default: a free one). */
  port?: number;
  /** Extra llama-server arguments, appended last. */
  extraArgs?: string[];
  /** `--metrics`: GET /metrics (Prometheus; llamacpp:requests_processing, requests_deferred). */
  metrics?: boolean;
  /** Generation threads, `-t` (default: llama's, all cores; `1` leaves a core to a bench). */
  threads?: number;
  /**
   * Make loading slow so the "503 Loading model" phase is observable: allocates a 1 Mi-token KV
   * cache (`-c 1048576`, ~600 MB RSS; ~2 s of 503 on 2 cores, on every start and restart). Per-slot
   * context stays 2048 (capped at the model's n_ctx_train). Overrides `ctx`.
   */
  slowLoad?: boolean;
  /** Wait for /health 200 before returning (default true); false: returns once spawned. */
  ready?: boolean;
  /** Readiness deadline in ms (default 20000). */
  readyTimeoutMs?: number;
}

const SLOW_LOAD_CTX = 1 << 20;
const STOP_GRACE_MS = 1000;
const TAIL_BYTES = 8192;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * Some copies of the binary's folder have the soname symlinks (`libllama.so.0` →
 * `libllama.so.0.5.0`) flattened into small text files naming the target, which the dynamic loader
 * rejects ("file too short"). Recreates them as real symlinks in `libDir`; returns whether any was
 * needed (then LD_LIBRARY_PATH points there).
 */
function fixFlattenedLibs(binDir: string, libDir: string): boolean {
  let fixed = false;
  for (const entry of Deno.readDirSync(binDir)) {
    if (!entry.isFile || !/\.so(\.\d+)*$/.test(entry.name)) continue;
    const path = `${binDir}/${entry.name}`;
    const size = Deno.statSync(path).size;
    if (size === 0 || size > 255) continue;
    const target = new TextDecoder().decode(Deno.readFileSync(path)).trim();
    if (!/^[\w.+-]+$/.test(target) || target === entry.name) continue;
    try {
      if (!Deno.statSync(`${binDir}/${target}`).isFile) continue;
    } catch {
      continue;
    }
    Deno.mkdirSync(libDir, { recursive: true });
    Deno.symlinkSync(`${binDir}/${target}`, `${libDir}/${entry.name}`);
    fixed = true;
  }
  return fixed;
}

function childEnv(libDir: string | null, logPath: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    // LLAMA_ARG_* / LLAMA_API_KEY would silently change the server's flags.
    if (!k.startsWith("LLAMA_ARG_") && k !== "LLAMA_API_KEY") env[k] = v;
  }
  if (libDir) {
    const prev = env["LD_LIBRARY_PATH"];
    env["LD_LIBRARY_PATH"] = prev ? `${libDir}:${prev}` : libDir;
  }
  env["LLAMA_HARNESS_LOG"] = logPath;
  return env;
}

function readTail(path: string): string {
  try {
    const file = Deno.openSync(path, { read: true });
    try {
      const size = file.statSync().size;
      const start = Math.max(0, size - TAIL_BYTES);
      file.seekSync(start, Deno.SeekMode.Start);
      const buf = new Uint8Array(size - start);
      let off = 0;
      while (off < buf.length) {
        const n = file.readSync(buf.subarray(off));
        if (n === null) break;
        off += n;
      }
      return new TextDecoder().decode(buf.subarray(0, off));
    } finally {
      file.close();
    }
  } catch {
    return "";
  }
}

/** GET with a per-request timeout; the body is always consumed. */
async function get(url: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const res = await fetch(url, { signal: ac.signal });
    return { status: res.status, body: await res.text() };
  } finally {
    clearTimeout(timer);
  }
}

class Server implements LlamaServer {
  readonly url: string;
  #child: Deno.ChildProcess | null = null;
  #status: Promise<Deno.CommandStatus> | null = null;
  #exited: Deno.CommandStatus | null = null;
  #stopped = false;
  #finalLog = "";

  constructor(
    readonly port: number,
    readonly alias: string,
    private readonly server: string,
    private readonly args: string[],
    private readonly dir: string,
    private readonly libDir: string | null,
  ) {
    this.url = `http://127.0.0.1:${port}`;
  }

  get #logPath(): string {
    return `${this.dir}/server.log`;
  }

  get pid(): number {
    if (!this.#child) throw new Error("llama-server is not running");
    return this.#child.pid;
  }

  spawn(): void {
    const stamp = `--- harness: start ${new Date().toISOString()} ${this.args.join(" ")}\n`;
    Deno.writeTextFileSync(this.#logPath, stamp, { append: true });
    // sh only redirects and execs: the child's pid is llama-server's own.
    const child = new Deno.Command("/bin/sh", {
      args: ["-c", 'exec "$0" "$@" >>"$LLAMA_HARNESS_LOG" 2>&1', this.server, ...this.args],
      env: childEnv(this.libDir, this.#logPath),
      clearEnv: true,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    this.#child = child;
    this.#exited = null;
    this.#status = child.status.then((s) => {
      if (this.#child === child) this.#exited = s;
      return s;
    });
  }

  log(): string {
    return this.#stopped ? this.#finalLog : readTail(this.#logPath);
  }

  async waitReady(timeoutMs = 20000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = "no answer yet";
    while (Date.now() < deadline) {
      if (this.#exited) {
        throw new Error(
          `llama-server exited (${
            JSON.stringify(this.#exited)
          }) before /health was 200\n${this.log()}`,
        );
      }
      try {
        const { status, body } = await get(`${this.url}/health`, 2000);
        if (status === 200) return;
        last = `${status} ${body}`;
      } catch (e) {
        last = (e as Error).message;
      }
      await sleep(10);
    }
    throw new Error(
      `llama-server not ready after ${timeoutMs} ms (last: ${last})\n${this.log()}`,
    );
  }

  async slots(): Promise<LlamaSlot[]> {
    let res;
    try {
      res = await get(`${this.url}/slots`, 5000);
    } catch {
      res = await get(`${this.url}/slots`, 5000); // a pooled connection may have just closed
    }
    if (res.status !== 200) throw new Error(`GET /slots: ${res.status} ${res.body}`);
    return JSON.parse(res.body) as LlamaSlot[];
  }

  async waitIdle(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let busy: number[] = [];
    while (true) {
      busy = (await this.slots()).filter((s) => s.is_processing).map((s) => s.id);
      if (busy.length === 0) return;
      if (Date.now() >= deadline) break;
      await sleep(5);
    }
    throw new Error(`llama-server slots ${busy.join(",")} still processing after ${timeoutMs} ms`);
  }

  cpuSeconds(): number {
    const stat = Deno.readTextFileSync(`/proc/${this.pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, USER_HZ = 100
  }

  async #signalAndReap(signal: Deno.Signal, graceMs: number): Promise<void> {
    const child = this.#child, status = this.#status;
    if (!child || !status) return;
    if (!this.#exited) {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
      if (signal !== "SIGKILL") {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timedOut = await Promise.race([
          status.then(() => false),
          new Promise<boolean>((r) => timer = setTimeout(() => r(true), graceMs)),
        ]);
        clearTimeout(timer);
        if (timedOut) {
          // Mid-stream it only exits at the next SSE ping (default 30 s): don't wait for that.
          try {
            child.kill("SIGKILL");
          } catch { /* already gone */ }
        }
      }
    }
    await status;
    this.#child = null;
    this.#status = null;
  }

  kill(): Promise<void> {
    return this.#signalAndReap("SIGKILL", 0);
  }

  async restart(): Promise<void> {
    if (this.#stopped) throw new Error("llama-server was stopped");
    await this.kill();
    for (let attempt = 1;; attempt++) {
      this.spawn();
      try {
        await this.waitReady();
        return;
      } catch (e) {
        // The old socket may linger for a moment: retry a bind failure a few times.
        if (attempt >= 5 || !/bind|address already in use/i.test(this.log())) throw e;
        await this.kill();
        await sleep(100 * attempt);
      }
    }
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    await this.#signalAndReap("SIGTERM", STOP_GRACE_MS);
    this.#finalLog = readTail(this.#logPath);
    this.#stopped = true;
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/**
 * Starts llama-server from {@link llamaPaths} on 127.0.0.1 and (unless `ready: false`) waits until
 * GET /health answers 200. Throws when LLAMA_SERVER/TINY_GGUF are unset
 * ({@link LLAMA_SKIP_HINT}).
 *
 * @example
 * ```ts
 * Deno.test({ name: "relays", ignore: !llamaPaths() }, async () => {
 *   await using llama = await startLlamaServer({ slots: 1 });
 *   const res = await fetch(`${llama.url}/v1/chat/completions`, { method: "POST", body: "…" });
 * });
 * ```
 */
export async function startLlamaServer(opts: LlamaServerOptions = {}): Promise<LlamaServer> {
  const paths = llamaPaths();
  if (!paths) throw new Error(LLAMA_SKIP_HINT);
  const slots = opts.slots ?? 4;
  const ctx = opts.slowLoad ? SLOW_LOAD_CTX : opts.ctx ?? 8192;
  const alias = opts.alias ?? "tiny";
  const port = opts.port ?? freePort();
  const args = [
    "-m",
    paths.model,
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "-c",
    String(ctx),
    "-np",
    String(slots),
    "--alias",
    alias,
    "--log-colors",
    "off",
    ...(opts.metrics ? ["--metrics"] : []),
    ...(opts.threads ? ["-t", String(opts.threads)] : []),
    ...(opts.extraArgs ?? []),
  ];
  const dir = await Deno.makeTempDir({ prefix: "llama_server_" });
  const binDir = paths.server.slice(0, Math.max(0, paths.server.lastIndexOf("/"))) || ".";
  const libDir = fixFlattenedLibs(binDir, `${dir}/lib`) ? `${dir}/lib` : null;
  const server = new Server(port, alias, paths.server, args, dir, libDir);
  server.spawn();
  if (opts.ready === false) return server;
  try {
    await server.waitReady(opts.readyTimeoutMs ?? 20000);
  } catch (e) {
    await server.stop();
    throw e;
  }
  return server;
}
