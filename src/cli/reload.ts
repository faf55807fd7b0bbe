// `usepod-agent reload` (issue 4): find the running agent — the `pid` of its status server's
// /status, else the pid file beside its identity key — and send it SIGHUP to re-read agent.toml.

import { type CommandContext, ExitError, loadForCommand } from "./command.ts";
import type { Config } from "../config/config.ts";
import { splitHostPort } from "../config/fields.ts";
import { pidFilePath } from "../paths.ts";
import { readLivePid } from "../ops/pidfile.ts";

/** Where a running agent was found, or every place tried. */
export type FoundAgent =
  | { pid: number; via: string }
  | { pid: undefined; tried: string[] };

/** Outside-world hooks for {@link findAgent}; tests pass fakes. */
export interface FindAgentOptions {
  fetch?: typeof fetch;
  /** Per request; default 1500 ms. */
  timeoutMs?: number;
}

/**
 * The status server's /status URL for a listen address: a wildcard address is asked on loopback;
 * undefined for port 0 (the agent picked a free port, only its log says which).
 *
 * @example
 * ```ts
 * statusUrl("0.0.0.0:9090"); // "http://127.0.0.1:9090/status"
 * ```
 */
export function statusUrl(prometheusAddr: string): string | undefined {
  const hp = splitHostPort(prometheusAddr);
  if (!hp || hp.port === 0) return undefined;
  let host = hp.hostname;
  if (host === "0.0.0.0" || host === "") host = "127.0.0.1";
  if (host === "::") host = "::1";
  return `http://${host.includes(":") ? `[${host}]` : host}:${hp.port}/status`;
}

async function pidFromStatus(url: string, config: Config, opts: FindAgentOptions) {
  const headers: Record<string, string> = {};
  const token = config.observability.statusToken;
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  try {
    const res = await (opts.fetch ?? fetch)(url, {
      headers,
      signal: AbortSignal.timeout(opts.timeoutMs ?? 1500),
    });
    const body: unknown = res.ok ? await res.json() : await res.body?.cancel();
    if (!res.ok) return { why: `HTTP ${res.status}` };
    const pid = (body as { pid?: unknown } | null)?.pid;
    if (typeof pid === "number" && Number.isSafeInteger(pid) && pid > 0) return { pid };
    return { why: "no pid in its answer" };
  } catch (err) {
    return { why: err instanceof Error ? err.message.split("\n")[0] : String(err) };
  }
}

/**
 * Finds the agent running with `config`: first its status server (`GET /status`, field `pid`),
 * then the locked pid file beside its identity key.
 *
 * @example
 * ```ts
 * const found = await findAgent(config);
 * if (found.pid !== undefined) Deno.kill(found.pid, "SIGHUP");
 * ```
 */
export async function findAgent(config: Config, opts: FindAgentOptions = {}): Promise<FoundAgent> {
  const tried: string[] = [];
  const url = statusUrl(config.observability.prometheusAddr);
  if (url === undefined) {
    tried.push(`status server: none at a fixed port (${config.observability.prometheusAddr})`);
  } else {
    const r = await pidFromStatus(url, config, opts);
    if (r.pid !== undefined) return { pid: r.pid, via: `status server ${url}` };
    tried.push(`status server ${url}: ${r.why}`);
  }
  const path = pidFilePath(config.identity);
  const pid = await readLivePid(path);
  if (pid !== undefined) return { pid, via: `pid file ${path}` };
  tried.push(`pid file ${path}: no running agent holds it`);
  return { pid: undefined, tried };
}

/**
 * Finds the agent running with `config` and sends it SIGHUP (re-read agent.toml and the pause
 * state). An agent that is gone counts as not found; not being allowed to signal it is an
 * ExitError naming sudo.
 */
export async function signalAgent(config: Config): Promise<FoundAgent> {
  const found = await findAgent(config);
  if (found.pid === undefined) return found;
  try {
    Deno.kill(found.pid, "SIGHUP");
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      return { pid: undefined, tried: [`pid ${found.pid} (${found.via}) is gone`] };
    }
    if (err instanceof Deno.errors.PermissionDenied) {
      throw new ExitError(
        `not allowed to signal the agent (pid ${found.pid}, another user's process): ` +
          "run the command with sudo",
      );
    }
    throw err;
  }
  return found;
}

/**
 * The `reload` command: validates agent.toml (an invalid file is reported and nothing is
 * signalled), finds the running agent and sends it SIGHUP. Exit 0 signalled, 3 no agent found,
 * 1 bad config or usage.
 */
export async function reloadCommand(ctx: CommandContext): Promise<number> {
  if (Deno.build.os === "windows") {
    throw new ExitError(
      "reload is not available on Windows (no SIGHUP): restart the agent instead " +
        "(usepod-agent service restart)",
    );
  }
  const config = await loadForCommand(ctx);
  const found = await signalAgent(config);
  if (found.pid === undefined) {
    throw new ExitError(`no running agent found; tried ${found.tried.join("; ")}`, 3);
  }
  ctx.out(
    `sent SIGHUP to the agent (pid ${found.pid}, found via ${found.via}): it re-reads its ` +
      'agent.toml and logs "config reloaded" (or why it kept the running config)',
  );
  return 0;
}
