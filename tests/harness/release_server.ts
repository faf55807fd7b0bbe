// Local stand-in for the release host and usepod.ai used by the installer tests (issue 5): serves
// fixed files by path on 127.0.0.1, 404 for anything else, and records every request path.

/** A file the server returns, and optionally a gate the response waits on before it is sent. */
export interface ServedFile {
  body: Uint8Array<ArrayBuffer> | string;
  /** When set, the response is held until this promise settles (to interrupt a download). */
  hold?: Promise<void>;
}

/** A running release server. */
export interface ReleaseServer {
  /** Base URL, e.g. `http://127.0.0.1:40123`, without a trailing slash. */
  url: string;
  /** Paths requested so far, in order, e.g. `/releases/v0.4.0/usepod-agent-linux-x64`. */
  requests: string[];
  /** Resolves when the path is first requested. */
  requested(path: string): Promise<void>;
  /** Stops the server and waits for open connections to finish. */
  close(): Promise<void>;
}

/**
 * Starts a server on 127.0.0.1 with an ephemeral port serving `files` by exact path.
 *
 * @example
 * ```ts
 * const server = startReleaseServer(new Map([["/agent-latest", { body: "v0.4.1\n" }]]));
 * const text = await (await fetch(`${server.url}/agent-latest`)).text(); // "v0.4.1\n"
 * await server.close();
 * ```
 */
export function startReleaseServer(files: Map<string, ServedFile>): ReleaseServer {
  const requests: string[] = [];
  const waiters = new Map<string, () => void>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    requests.push(path);
    waiters.get(path)?.();
    const file = files.get(path);
    if (file === undefined || req.method !== "GET") {
      return new Response("Not Found\n", { status: 404 });
    }
    if (file.hold !== undefined) await file.hold;
    return new Response(file.body, {
      headers: { "content-type": "application/octet-stream" },
    });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    requested(path) {
      if (requests.includes(path)) return Promise.resolve();
      return new Promise((resolve) => waiters.set(path, resolve));
    },
    close: () => server.shutdown(),
  };
}
