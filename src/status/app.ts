// The local status server's Hono app (issue 3): GET /status, /healthz, /metrics, the page at /
// and its charts at /charts, behind a Host check (DNS rebinding), an optional bearer token and a
// GET-only rule; no CORS. Reads the agent through a StatusSource and never changes it. Served by
// src/status/server.ts.

import { Hono } from "hono";
import { log } from "../log.ts";
import { METRICS_CONTENT_TYPE, renderMetrics } from "./metrics.ts";
import type { StatusDoc } from "./doc.ts";
import { redact, type StatusSource } from "./snapshot.ts";

export interface StatusAppOptions {
  /** The configured listen host (`127.0.0.1`, `::1`, `0.0.0.0`, `10.0.0.5`, `localhost`). */
  hostname: string;
  /** The port actually bound (never 0). */
  port: number;
  /** `observability.status_token`: when set, every request needs `Authorization: Bearer <token>`. */
  token?: string | undefined;
}

const COMMON_HEADERS = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
};

function isWildcard(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, "");
  return h === "0.0.0.0" || URL.parse(`http://[${h}]/`)?.hostname === "[::]";
}

/** `host:port` as a Host header carries it (IPv6 in brackets). */
function hostHeader(hostname: string, port: number): string {
  const h = hostname.toLowerCase();
  return `${h.includes(":") ? `[${h}]` : h}:${port}`;
}

/**
 * The Host check against DNS rebinding: the bound address, `localhost`, `127.0.0.1` or `[::1]`,
 * each with the bound port. On a wildcard bind (0.0.0.0, ::), which needs a token, any IP
 * literal with the port also passes: a rebinding page always sends its own DNS name.
 */
function hostAllowed(host: string, opts: StatusAppOptions): boolean {
  const h = host.toLowerCase();
  const allowed = [opts.hostname, "localhost", "127.0.0.1", "::1"].map((n) =>
    hostHeader(n, opts.port)
  );
  if (allowed.includes(h)) return true;
  if (opts.port === 80 && allowed.some((a) => a === `${h}:80`)) return true;
  if (!isWildcard(opts.hostname)) return false;
  const m = /^(\[[0-9a-f:.]+\]|\d{1,3}(?:\.\d{1,3}){3}):(\d+)$/.exec(h);
  if (!m || Number(m[2]) !== opts.port) return false;
  const parsed = URL.parse(`http://${m[1]}/`)?.hostname;
  return parsed !== undefined && parsed === m[1];
}

async function sha256(s: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
}

/** Compares two strings in time independent of where they differ (through their SHA-256). */
async function sameSecret(a: string, expected: Promise<Uint8Array>): Promise<boolean> {
  const [x, y] = await Promise.all([sha256(a), expected]);
  let diff = 0;
  for (let i = 0; i < y.length; i++) diff |= x[i]! ^ y[i]!;
  return diff === 0;
}

/** Why /healthz is not 200, from the connection state. */
function unhealthyReason(c: StatusDoc["coordinator"]): string {
  switch (c.state) {
    case "connecting":
      return c.last_error
        ? `connecting to the coordinator (last error: ${c.last_error})`
        : "connecting to the coordinator";
    case "backoff":
      return `not connected to the coordinator (${c.last_error ?? "connection ended"}); ` +
        `next retry at ${c.next_retry_at ?? "soon"}`;
    case "draining":
      return "draining: the agent is shutting down";
    default:
      return `not connected to the coordinator (state ${c.state})`;
  }
}

/**
 * The status server's app. Every response is scrubbed of the source's secrets.
 *
 * @example
 * ```ts
 * const app = createStatusApp(agentSource(agent), { hostname: "127.0.0.1", port: 9090 });
 * Deno.serve({ hostname: "127.0.0.1", port: 9090 }, app.fetch);
 * const res = await app.request("http://127.0.0.1:9090/healthz");
 * ```
 */
export function createStatusApp(source: StatusSource, opts: StatusAppOptions): Hono {
  const app = new Hono();
  const token = opts.token;
  const tokenHash = token === undefined ? undefined : sha256(token);
  let page: Promise<typeof import("./page.ts")> | undefined;
  let shell: Promise<{ html: (charts: string) => string; csp: string }> | undefined;

  const json = (body: unknown, status: number, extra: Record<string, string> = {}) =>
    new Response(redact(JSON.stringify(body), source.secrets()), {
      status,
      headers: { "content-type": "application/json", ...COMMON_HEADERS, ...extra },
    });

  app.use("*", async (c, next) => {
    const host = c.req.header("host") ?? new URL(c.req.url).host;
    if (!hostAllowed(host, opts)) {
      return json(
        { "error": "host not allowed", "allowed": "localhost or the bound address" },
        403,
      );
    }
    if (tokenHash !== undefined) {
      const m = /^Bearer (.+)$/i.exec(c.req.header("authorization") ?? "");
      if (!m || !(await sameSecret(m[1]!.trim(), tokenHash))) {
        return json(
          { "error": "a valid bearer token is required (observability.status_token)" },
          401,
          {
            "www-authenticate": 'Bearer realm="usepod-agent"',
          },
        );
      }
    }
    if (c.req.method !== "GET" && c.req.method !== "HEAD") {
      return json({ "error": "method not allowed" }, 405, { "allow": "GET, HEAD" });
    }
    await next();
  });

  app.get("/status", () => json(source.status(), 200));

  app.get("/healthz", () => {
    const c = source.status().coordinator;
    if (c.state === "authenticated") return json({ "ok": true }, 200);
    return json({ "ok": false, "state": c.state, "reason": unhealthyReason(c) }, 503);
  });

  app.get("/metrics", () => {
    const text = renderMetrics(source.status(), source.histograms(), source.metricsFacts?.());
    return new Response(redact(text, source.secrets()), {
      headers: { "content-type": METRICS_CONTENT_TYPE, ...COMMON_HEADERS },
    });
  });

  // The page and its charts load with the first request for either (a compiled binary keeps them).
  app.get("/", async () => {
    page ??= import("./page.ts");
    const m = await page;
    shell ??= m.statusPage();
    const { html, csp } = await shell;
    return new Response(redact(html(m.chartsSection(source.history?.())), source.secrets()), {
      headers: {
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": csp,
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
        ...COMMON_HEADERS,
      },
    });
  });

  // The charts alone, for the page's script to refresh them in place.
  app.get("/charts", async () => {
    page ??= import("./page.ts");
    const m = await page;
    return new Response(redact(m.chartsSection(source.history?.()), source.secrets()), {
      headers: { "content-type": "text/html; charset=utf-8", ...COMMON_HEADERS },
    });
  });

  app.notFound(() => json({ "error": "not found" }, 404));
  app.onError((err) => {
    log.error("status server error", { error: err });
    return json({ "error": "internal error" }, 500);
  });
  return app;
}
