// Starts the status server on observability.prometheus_addr with Deno.serve (always with an
// explicit hostname): refuses a non-loopback bind without observability.status_token, and loads
// Hono and the app only when the first request arrives, so start-up never waits for them.

import { ConfigError, splitHostPort } from "../config/fields.ts";
import { log } from "../log.ts";
import type { StatusSource } from "./snapshot.ts";

export interface StatusServer {
  /** The bound address, `host:port` (IPv6 in brackets), with the real port when 0 was asked. */
  readonly addr: string;
  readonly hostname: string;
  readonly port: number;
  /** Stops listening; resolves once open requests are answered. */
  shutdown(): Promise<void>;
}

/**
 * Whether a listen host is a loopback address (127.0.0.0/8, ::1 or localhost).
 *
 * @example
 * ```ts
 * isLoopbackHost("127.0.0.1"); // true
 * isLoopbackHost("0.0.0.0"); // false
 * ```
 */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase();
  if (h === "localhost" || /^127(\.\d{1,3}){3}$/.test(h)) return true;
  return URL.parse(`http://[${h}]/`)?.hostname === "[::1]";
}

/**
 * Checks the status server settings before anything listens: a non-loopback address needs
 * `observability.status_token`.
 *
 * @throws {ConfigError} naming the field.
 * @example
 * ```ts
 * checkStatusBind({ prometheusAddr: "0.0.0.0:9090" }); // throws: observability.status_token: required …
 * ```
 */
export function checkStatusBind(
  obs: { prometheusAddr: string; statusToken?: string | undefined },
): { hostname: string; port: number } {
  const hp = splitHostPort(obs.prometheusAddr);
  if (!hp) {
    throw new ConfigError(`observability.prometheus_addr: not "host:port" (${obs.prometheusAddr})`);
  }
  if (!isLoopbackHost(hp.hostname) && obs.statusToken === undefined) {
    throw new ConfigError(
      `observability.status_token: required when observability.prometheus_addr binds a ` +
        `non-loopback address (${obs.prometheusAddr}); set a token or use 127.0.0.1`,
    );
  }
  return hp;
}

/**
 * Listens on `observability.prometheus_addr` and serves the status app for `source`.
 *
 * @throws {ConfigError} when the address needs a token it lacks, or cannot be bound.
 * @example
 * ```ts
 * const server = startStatusServer(agentSource(agent), config.observability);
 * log.info("status server listening", { addr: server.addr });
 * await server.shutdown();
 * ```
 */
export function startStatusServer(
  source: StatusSource,
  obs: { prometheusAddr: string; statusToken?: string | undefined },
): StatusServer {
  const { hostname, port } = checkStatusBind(obs);
  let handler: Promise<(req: Request) => Response | Promise<Response>> | undefined;
  let bound = port;
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname,
      port,
      onListen: () => {},
      onError: (err) => {
        log.error("status server error", { error: err });
        return new Response("internal error", { status: 500 });
      },
    }, (req) => {
      handler ??= import("./app.ts").then(({ createStatusApp }) => {
        const app = createStatusApp(source, { hostname, port: bound, token: obs.statusToken });
        return (r: Request) => app.fetch(r);
      });
      return handler.then((h) => h(req));
    });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new ConfigError(
      `observability.prometheus_addr: cannot listen on ${obs.prometheusAddr}: ${why}`,
      { cause: err },
    );
  }
  bound = server.addr.port;
  const addr = `${hostname.includes(":") ? `[${hostname}]` : hostname}:${bound}`;
  return {
    addr,
    hostname,
    port: bound,
    shutdown: () => server.shutdown(),
  };
}
