// Debian's Prometheus tools for the tests (issue 15): find promtool and prometheus (a missing
// tool skips the test with one line, and fails it under CI=1), run promtool, and run a real
// prometheus server on a free loopback port with its own temp dir, asked over its HTTP API.

import { within } from "./agent_process.ts";

/** The absolute path of `name` on PATH (or /usr/bin), or undefined. */
export function findTool(name: string): string | undefined {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/bin"].filter((d) => d !== "");
  for (const dir of dirs) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * `{ ignore }` for a test needing `name`: false when it is installed; when it is missing, one
 * line saying so and true, except under CI (`CI` set), where the test must run and fail.
 */
export function needs(name: string, test: string): { ignore: boolean } {
  if (findTool(name) !== undefined || Deno.env.get("CI")) return { ignore: false };
  console.error(`${test}: ${name} not found, skipped (apt-get install -y prometheus)`);
  return { ignore: true };
}

/** Runs promtool with `args` (and `stdin`); its exit code and both outputs. */
export async function promtool(
  args: string[],
  stdin?: string,
): Promise<{ code: number; out: string }> {
  const path = findTool("promtool");
  if (path === undefined) throw new Error("promtool is missing: apt-get install -y prometheus");
  const child = new Deno.Command(path, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const r = await child.output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** One result of an instant query: its labels and value. */
export interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

/** A running prometheus server. */
export interface Prometheus {
  readonly url: string;
  /** Output so far, for failure messages. */
  output(): string;
  /** GET an API path (`/api/v1/...`); the parsed body, which must say "success". */
  api(path: string): Promise<unknown>;
  /** An instant query (vector results only); throws with Prometheus's error when it fails. */
  query(expr: string): Promise<Sample[]>;
  stop(): Promise<void>;
}

/**
 * Starts `prometheus` with `config` (YAML; `files` are written beside it) in its own temp dir
 * on a free port of 127.0.0.1, and waits until it answers /-/ready.
 */
export async function startPrometheus(
  config: string,
  files: Record<string, string> = {},
  readyMs = 30_000,
): Promise<Prometheus> {
  const path = findTool("prometheus");
  if (path === undefined) throw new Error("prometheus is missing: apt-get install -y prometheus");
  const dir = await Deno.makeTempDir({ prefix: "usepod-prometheus-" });
  await Deno.writeTextFile(`${dir}/prometheus.yml`, config);
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/${name}`, text);
  }
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = new Deno.Command(path, {
    args: [
      `--config.file=${dir}/prometheus.yml`,
      `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const reading = Promise.all([child.stdout, child.stderr].map(async (s) => {
    for await (const t of s.pipeThrough(new TextDecoderStream())) lines.push(t);
  }));
  let exited = false;
  const status = child.status.then((s) => (exited = true, s));
  const output = () => lines.join("");

  const api = async (p: string): Promise<unknown> => {
    const res = await fetch(`${url}${p}`, { signal: AbortSignal.timeout(10_000) });
    const body = await res.json() as { status: string; error?: string; data?: unknown };
    if (body.status !== "success") throw new Error(`${p}: ${body.error ?? res.status}`);
    return body.data;
  };
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    try {
      await status;
      await reading;
    } finally {
      clearTimeout(timer);
      await Deno.remove(dir, { recursive: true });
    }
  };

  try {
    await within(
      (async () => {
        for (let i = 0; !exited; i++) {
          const ok = await fetch(`${url}/-/ready`).then(
            (r) => (r.body?.cancel(), r.ok),
            () => false,
          );
          if (ok) return;
          await new Promise((r) => setTimeout(r, Math.min(50 * 2 ** i, 500)));
        }
        throw new Error(`prometheus exited:\n${output()}`);
      })(),
      readyMs,
      "prometheus was not ready",
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url,
    output,
    api,
    async query(expr: string) {
      const data = await api(`/api/v1/query?query=${encodeURIComponent(expr)}`) as {
        resultType: string;
        result: Sample[];
      };
      if (data.resultType !== "vector") throw new Error(`${expr}: a ${data.resultType}`);
      return data.result;
    },
    stop,
  };
}

/**
 * Polls `probe` until it returns a value (not undefined), with a growing pause between tries
 * (50 ms up to 500 ms), for at most `ms`; the last error or a timeout otherwise.
 */
export async function pollUntil<T>(
  what: string,
  ms: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (let i = 0; Date.now() < deadline; i++) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
      last = undefined;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, Math.min(50 * 2 ** i, 500)));
  }
  throw new Error(`${what} within ${ms} ms${last ? `: ${(last as Error).message}` : ""}`);
}
