// `usepod-agent status [--json] [--addr HOST:PORT]`: asks the running agent's local status server
// (observability.prometheus_addr, with the status token when configured) and prints a short
// summary. Exit 0 authenticated, 1 running but not connected, 3 no agent answers.

import { type CommandContext, UsageError } from "./command.ts";
import { type Config, ConfigError } from "../config/config.ts";
import { loadMergedConfig } from "../config/env.ts";
import { splitHostPort } from "../config/fields.ts";
import type { EarningsDoc, PeriodDoc } from "../status/earnings_doc.ts";
import type { StatusDoc } from "../status/doc.ts";

/** Exit code when no agent answers at the address. */
export const NO_AGENT = 3;

/** Where to connect for a listen address: a wildcard bind is reached on loopback. */
export function statusUrl(addr: string): URL {
  const hp = splitHostPort(addr);
  if (!hp) throw new UsageError(`--addr: expected HOST:PORT, e.g. 127.0.0.1:9090 (got "${addr}")`);
  if (hp.port === 0) {
    throw new UsageError(
      `observability.prometheus_addr ${addr} picks a free port at start: pass --addr HOST:PORT ` +
        `(the agent logs "status server listening addr=…")`,
    );
  }
  let host = hp.hostname;
  if (host === "0.0.0.0") host = "127.0.0.1";
  else if (host === "::" || /^[0:]+$/.test(host)) host = "::1";
  return new URL(`http://${host.includes(":") ? `[${host}]` : host}:${hp.port}/status`);
}

function ago(iso: string | null, now: number): string {
  if (iso === null) return "never";
  return `${duration((now - Date.parse(iso)) / 1000)} ago`;
}

/**
 * A duration in seconds as people read it.
 *
 * @example
 * ```ts
 * duration(3725); // "1h 2m"
 * ```
 */
export function duration(s: number): string {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

const n = (v: number) => v.toLocaleString("en-US");
const perM = (micro: number) => (micro / 1e6).toFixed(4);

/**
 * The human summary of a /status document, like `tailscale status`: one line per fact.
 *
 * @example
 * ```ts
 * for (const line of summary(doc, Date.now())) console.log(line);
 * ```
 */
export function summary(s: StatusDoc, now: number): string[] {
  const c = s.coordinator;
  let state = c.state;
  if (c.state === "authenticated") state += ` (since ${ago(c.state_since, now)})`;
  if (c.state === "backoff" && c.next_retry_at) {
    state += ` (retry in ${duration((Date.parse(c.next_retry_at) - now) / 1000)})`;
  }
  const up = s.backends.filter((b) => b.health === "up").length;
  const k = s.counters;
  const lines = [
    `usepod-agent ${s.version} (pid ${s.pid}), up ${duration(s.uptime_s)}`,
    `state:        ${state}`,
    `coordinator:  ${c.url}, last auth ${ago(c.last_auth_at, now)}, ${n(c.reconnects)} reconnects`,
  ];
  if (c.state !== "authenticated" && c.last_error) lines.push(`last error:   ${c.last_error}`);
  lines.push(
    `provider_id:  ${s.provider_id ?? "<not yet enrolled>"}`,
    `public key:   ${s.public_key}`,
    `backends:     ${up} up, ${s.backends.length - up} down`,
  );
  for (const b of s.backends) {
    const detail = b.health === "up"
      ? `${b.latency_ms ?? "?"} ms, ${b.models.length} model(s)`
      : (b.last_error ?? "");
    lines.push(`  ${b.kind.padEnd(10)} ${b.url.padEnd(28)} ${b.health.padEnd(6)} ${detail}`);
  }
  lines.push(`models:       ${s.models.length} advertised (USDC per 1M tokens in/out)`);
  for (const m of s.models) {
    lines.push(
      `  ${m.model_id}  ${perM(m.input_per_1m)}/${perM(m.output_per_1m)}  ` +
        `${m.slots_in_use}/${m.max_concurrent} slots${m.paused ? "  paused" : ""}`,
    );
  }
  lines.push(
    `jobs:         ${n(s.limits.in_flight)} in flight, ${n(k.job_done)} done, ${
      n(k.errors)
    } failed, ` +
      `${n(k.refused)} refused, ${n(k.cancelled)} cancelled`,
    `tokens:       ${n(k.input_tokens)} in, ${
      n(k.output_tokens)
    } out; earned ${k.earned_usdc} USDC`,
  );
  if (s.earnings) lines.push(...money(s.earnings));
  return lines;
}

/** The money table: today (UTC), 7 days and since start, in columns. */
function money(e: EarningsDoc): string[] {
  const cols = [e.today, e.last_7d, e.since_start];
  // Columns of 21: two spaces at least before a 19-character reason or a long token pair.
  const cellsOf = (cells: string[]) => cells.map((c) => `  ${c.padStart(19)}`).join("");
  const row = (label: string, cell: (p: PeriodDoc) => string) =>
    `  ${label.padEnd(12)}${cellsOf(cols.map(cell))}`;
  return [
    `${"money:".padEnd(14)}${cellsOf(["today (UTC)", "7 days", "since start"])}`,
    row("jobs", (p) => n(p.jobs)),
    row("tokens", (p) => `${n(p.input_tokens)}/${n(p.output_tokens)}`),
    row("earned USDC", (p) => p.earned_usdc),
    row("missed USDC", (p) => p.missed_usdc),
    row("missed jobs", (p) => n(p.missed_jobs)),
    row("top reason", (p) => p.top_missed_reason ?? "-"),
  ];
}

async function configFor(ctx: CommandContext): Promise<Config | undefined> {
  try {
    // Only the status address and token are read: a ws:// coordinator URL is no reason to refuse.
    // The environment counts (USEPOD_STATUS_ADDR, USEPOD_STATUS_TOKEN): a container's health check.
    return (await loadMergedConfig({ path: ctx.configPath, allowInsecure: true })).config;
  } catch (err) {
    // With --addr and no config file at the default places, go on without a token.
    if (
      err instanceof ConfigError && ctx.configPath === undefined &&
      typeof ctx.flags.addr === "string" && err.message.startsWith("no agent.toml found")
    ) return undefined;
    throw err;
  }
}

/** Runs `usepod-agent status`; resolves with the exit code. */
export async function statusCommand(ctx: CommandContext): Promise<number> {
  const config = await configFor(ctx);
  const addr = typeof ctx.flags.addr === "string"
    ? ctx.flags.addr
    : (config?.observability.prometheusAddr ?? "127.0.0.1:9090");
  const url = statusUrl(addr);
  const token = config?.observability.statusToken;
  const headers: Record<string, string> = token ? { "authorization": `Bearer ${token}` } : {};
  let res: Response;
  try {
    res = await fetch(url, { headers, signal: AbortSignal.timeout(3000) });
  } catch (err) {
    let message = "";
    for (let e: unknown = err, i = 0; e !== undefined && i < 4; e = (e as Error).cause, i++) {
      message += ` ${e instanceof Error ? e.message : String(e)}`;
    }
    const why = err instanceof DOMException && err.name === "TimeoutError"
      ? "no answer within 3 s"
      : /connection refused/i.test(message)
      ? "connection refused"
      : message.trim();
    ctx.out(`no agent answers at ${url.host} (${why})`);
    return NO_AGENT;
  }
  const text = await res.text();
  if (res.status === 401) {
    ctx.out(`the agent at ${url.host} refused the request: check observability.status_token`);
    return 1;
  }
  let doc: StatusDoc | undefined;
  try {
    const parsed = JSON.parse(text);
    if (res.ok && typeof parsed?.coordinator?.state === "string") doc = parsed as StatusDoc;
  } catch {
    // not an agent's answer
  }
  if (!doc) {
    ctx.out(`no usepod-agent answers at ${url.host} (HTTP ${res.status} from something else)`);
    return NO_AGENT;
  }
  if (ctx.flags.json === true) ctx.out(JSON.stringify(doc, null, 2));
  else for (const line of summary(doc, Date.now())) ctx.out(line);
  return doc.coordinator.state === "authenticated" ? 0 : 1;
}
