// `usepod-agent doctor`: a preflight a new operator runs before pairing (issue 8). Checks the
// config, the identity file, each backend (reachable, models, usage reported in a 1-token
// completion), clock skew, the coordinator (TLS, auth_challenge), the status port and the service.

import { openCompletion } from "../backends/client.ts";
import { type Config, ConfigError } from "../config/config.ts";
import { loadMergedConfig } from "../config/env.ts";
import { splitHostPort } from "../config/fields.ts";
import { Discovery } from "../backends/discovery.ts";
import { loadIdentity } from "../identity/identity.ts";
import { IdentityError } from "../identity/file.ts";
import { parseInbound } from "../link/protocol.ts";
import { statusUrl } from "./reload.ts";
import { LAUNCHD_PLIST_PATH, SYSTEMD_UNIT_PATH } from "../service/service.ts";
import { UsageMeter } from "../jobs/usage.ts";
import { type Level, setLevel } from "../log.ts";
import { connectWs } from "../link/ws.ts";

export type Verdict = "ok" | "warn" | "fail";

/** One line of the report: what was checked, the verdict, and what to do about it. */
export interface Check {
  verdict: Verdict;
  what: string;
  detail: string;
}

export interface DoctorOptions {
  configPath: string | undefined;
  allowInsecure: boolean;
  env?: (name: string) => string | undefined;
  /** Time allowed for each network step. */
  timeoutMs?: number;
  /** Where the service definition would be (tests point it into a temp dir). */
  servicePath?: string;
  now?: () => number;
}

/**
 * Runs every check and yields each line as soon as it is known. Never throws: a failure is a
 * `fail` line saying what to do.
 *
 * @example
 * ```ts
 * for await (const c of doctor({ configPath, allowInsecure: false })) print(c);
 * ```
 */
export async function* doctor(opts: DoctorOptions): AsyncGenerator<Check> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  let config: Config;
  try {
    const merged = await loadMergedConfig({
      path: opts.configPath,
      allowInsecure: opts.allowInsecure,
    });
    config = merged.config;
    yield { verdict: "ok", what: "config", detail: `${config.path} is valid` };
  } catch (err) {
    const msg = err instanceof ConfigError ? err.message : String(err);
    yield { verdict: "fail", what: "config", detail: `${msg} (fix it, then run doctor again)` };
    return;
  }
  yield* checkIdentity(config);
  yield* checkBackends(config, opts, timeoutMs);
  yield* checkCoordinator(config, timeoutMs, opts.now ?? Date.now);
  yield await checkStatusPort(config);
  yield await checkService(opts.servicePath);
}

async function* checkIdentity(config: Config): AsyncGenerator<Check> {
  const path = config.identity.keyPath;
  try {
    const { identity, warnings } = await loadIdentity(path);
    yield {
      verdict: "ok",
      what: "identity",
      detail: `${path}: public key ${identity.publicKeyB64}, provider_id ${
        identity.providerId ?? "<not yet enrolled>"
      }`,
    };
    for (const w of warnings) {
      yield { verdict: "warn", what: "identity", detail: `${w} (run: chmod 600 ${path})` };
    }
  } catch (err) {
    if (err instanceof IdentityError && !(await exists(path))) {
      yield {
        verdict: "warn",
        what: "identity",
        detail: `${path} does not exist yet: it is created on the first run (or by setup)`,
      };
    } else {
      yield { verdict: "fail", what: "identity", detail: (err as Error).message };
    }
  }
}

async function* checkBackends(
  config: Config,
  opts: DoctorOptions,
  timeoutMs: number,
): AsyncGenerator<Check> {
  if (config.backends.length === 0) {
    yield { verdict: "fail", what: "backends", detail: "no [[backends]] configured: add one" };
    return;
  }
  const discovery = new Discovery(() => config, {
    timeoutMs,
    ...(opts.env ? { env: opts.env } : {}),
  });
  const result = await discovery.refresh();
  for (const b of result.backends) {
    const what = `backend ${b.kind}`;
    if (b.state === "no_api_key") {
      yield { verdict: "fail", what, detail: `${b.lastError}: export it before starting` };
      continue;
    }
    if (b.state === "loading") {
      yield { verdict: "warn", what, detail: `${b.url} is loading a model; check again soon` };
      continue;
    }
    if (b.state === "down") {
      yield { verdict: "fail", what, detail: `${b.url}: ${b.lastError}; is the server running?` };
      continue;
    }
    const models = b.models.length;
    yield {
      verdict: models > 0 ? "ok" : "warn",
      what,
      detail: `${b.url} up in ${b.latencyMs} ms, ${models} model(s)${
        models
          ? `: ${b.models.slice(0, 5).join(", ")}${models > 5 ? ", …" : ""}`
          : " (none to serve)"
      }`,
    };
    const model = b.models[0];
    const route = model
      ? result.byId.get(model)?.routes.find((r) => r.backendIndex === b.index)
      : undefined;
    if (route && model) yield await probeUsage(route.target, model, what, timeoutMs * 4);
  }
  const served = result.models.length;
  const anyUp = result.backends.some((b) => b.state === "up");
  yield {
    verdict: served > 0 ? "ok" : "fail",
    what: "models",
    detail: served > 0
      ? `${served} model(s) would be advertised`
      : `no model would be advertised (${
        anyUp ? "models priced 0/0 are not advertised" : "no backend is up"
      })`,
  };
}

/** A real 1-token completion: does the backend answer and report usage in its stream? */
async function probeUsage(
  target: Parameters<typeof openCompletion>[0],
  model: string,
  what: string,
  timeoutMs: number,
): Promise<Check> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
  try {
    const body = await openCompletion(
      target,
      model,
      {
        messages: [{ role: "user", content: "Reply with OK." }],
        "max_tokens": 1,
      },
      "openai",
      ac.signal,
    );
    const meter = new UsageMeter("openai");
    try {
      for (let piece = await body.read(); piece !== null; piece = await body.read()) {
        meter.feed(piece);
      }
    } finally {
      body.close();
    }
    const u = meter.finish();
    if (u.error) return { verdict: "fail", what, detail: `${model}: error in stream: ${u.error}` };
    return u.reported
      ? { verdict: "ok", what, detail: `${model}: 1-token completion ok, usage reported` }
      : {
        verdict: "warn",
        what,
        detail: `${model}: no usage in the stream; output tokens will be estimated from deltas`,
      };
  } catch (err) {
    return {
      verdict: "fail",
      what,
      detail: `${model}: completion failed: ${(err as Error).message}`,
    };
  } finally {
    clearTimeout(timer);
  }
}

async function* checkCoordinator(
  config: Config,
  timeoutMs: number,
  now: () => number,
): AsyncGenerator<Check> {
  const url = new URL(config.coordinator.url);
  let caCerts: string[] | undefined;
  if (config.coordinator.caFile) {
    try {
      caCerts = [await Deno.readTextFile(config.coordinator.caFile)];
    } catch (err) {
      yield {
        verdict: "fail",
        what: "coordinator",
        detail: `coordinator.ca_file: ${(err as Error).message}`,
      };
      return;
    }
  }
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
  try {
    const ws = await connectWs({ url, signal: ac.signal, ...(caCerts ? { caCerts } : {}) });
    try {
      const ev = await Promise.race([
        ws.next(),
        new Promise<null>((r) => ac.signal.addEventListener("abort", () => r(null))),
      ]);
      const frame = ev?.kind === "text" ? parseInbound(ev.text) : undefined;
      const tls = url.protocol === "wss:" ? "TLS ok, " : "";
      yield frame?.ok && frame.frame.type === "auth_challenge"
        ? {
          verdict: "ok",
          what: "coordinator",
          detail: `${url.host}: ${tls}auth_challenge received`,
        }
        : {
          verdict: "fail",
          what: "coordinator",
          detail: `${url.host}: connected but no auth_challenge came`,
        };
    } finally {
      await ws.close(1000, "doctor");
    }
  } catch (err) {
    yield {
      verdict: "fail",
      what: "coordinator",
      detail: `${url.host}: ${(err as Error).message}${
        /certificate|UnknownIssuer/i.test(String(err))
          ? " (a private CA? set coordinator.ca_file)"
          : ""
      }`,
    };
    return;
  } finally {
    clearTimeout(timer);
  }
  yield await checkClock(url, timeoutMs, now);
}

/** Clock skew against the coordinator's HTTP `Date` header. */
async function checkClock(url: URL, timeoutMs: number, now: () => number): Promise<Check> {
  const http = new URL(url.href.replace(/^ws/, "http"));
  http.pathname = "/";
  try {
    const sent = now();
    const res = await fetch(http, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    const date = res.headers.get("date");
    if (!date) {
      return { verdict: "warn", what: "clock", detail: "the coordinator sent no Date header" };
    }
    const skew = Math.round((Date.parse(date) - (sent + now()) / 2) / 1000);
    const abs = Math.abs(skew);
    return {
      verdict: abs <= 2 ? "ok" : abs <= 60 ? "warn" : "fail",
      what: "clock",
      detail: abs <= 2
        ? "in step with the coordinator"
        : `${
          skew > 0 ? "behind" : "ahead of"
        } the coordinator by ${abs} s: enable NTP (timedatectl set-ntp true)`,
    };
  } catch (err) {
    return {
      verdict: "warn",
      what: "clock",
      detail: `could not compare: ${(err as Error).message}`,
    };
  }
}

async function checkStatusPort(config: Config): Promise<Check> {
  const addr = config.observability.prometheusAddr;
  const hp = splitHostPort(addr);
  if (!hp) return { verdict: "fail", what: "status port", detail: `bad address ${addr}` };
  if (hp.port === 0) {
    return { verdict: "ok", what: "status port", detail: `${addr}: any free port` };
  }
  try {
    const l = Deno.listen({ hostname: hp.hostname, port: hp.port });
    l.close();
    return { verdict: "ok", what: "status port", detail: `${addr} is free` };
  } catch (err) {
    if (!(err instanceof Deno.errors.AddrInUse)) {
      return { verdict: "fail", what: "status port", detail: `${addr}: ${(err as Error).message}` };
    }
    const token = config.observability.statusToken;
    const agent = await fetch(statusUrl(addr) ?? `http://${addr}/status`, {
      signal: AbortSignal.timeout(1000),
      ...(token !== undefined ? { headers: { authorization: `Bearer ${token}` } } : {}),
    })
      .then(async (r) => (r.ok ? (await r.json()) as { pid?: number } : undefined))
      .catch(() => undefined);
    return agent
      ? {
        verdict: "ok",
        what: "status port",
        detail: `${addr}: an agent is running (pid ${agent.pid})`,
      }
      : {
        verdict: "fail",
        what: "status port",
        detail: `${addr} is taken by another program: set observability.prometheus_addr`,
      };
  }
}

async function checkService(path?: string): Promise<Check> {
  const unit = path ?? (Deno.build.os === "darwin" ? LAUNCHD_PLIST_PATH : SYSTEMD_UNIT_PATH);
  if (Deno.build.os === "windows" && !path) {
    return { verdict: "ok", what: "service", detail: "check with: usepod-agent service status" };
  }
  return (await exists(unit))
    ? { verdict: "ok", what: "service", detail: `installed (${unit})` }
    : {
      verdict: "ok",
      what: "service",
      detail: "not installed (optional: usepod-agent service install)",
    };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** The `doctor` command: prints each check as it completes; exit 1 when any failed. */
export async function doctorCommand(
  ctx: {
    configPath: string | undefined;
    allowInsecure: boolean;
    logLevel?: Level | undefined;
    out: (line: string) => void;
  },
): Promise<number> {
  // Every finding is a line of the report; the agent's own warnings would say it twice.
  setLevel(ctx.logLevel ?? "error");
  let failed = 0;
  for await (const c of doctor({ configPath: ctx.configPath, allowInsecure: ctx.allowInsecure })) {
    if (c.verdict === "fail") failed++;
    ctx.out(`${c.verdict.padEnd(5)}${c.what.padEnd(18)}${c.detail}`);
  }
  ctx.out(failed === 0 ? "\nno failures" : `\n${failed} check(s) failed`);
  return failed === 0 ? 0 : 1;
}
