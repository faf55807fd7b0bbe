// nginx as the bench's baseline relay (issue 13): Debian's nginx-light with one worker,
// `proxy_buffering off` and upstream keepalive, in a prefix of its own (conf, pid, logs, temp
// paths) on a free port, in the foreground; its worker's CPU read from /proc in nanoseconds.

import { withTimeout } from "./common.ts";

/** Where the bench looks for nginx (Debian's nginx-light installs /usr/sbin/nginx). */
export const NGINX_CANDIDATES = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"];

/** The nginx binary, or undefined when none is installed (NGINX overrides the search). */
export function findNginx(): string | undefined {
  const env = Deno.env.get("NGINX");
  for (const path of env ? [env] : NGINX_CANDIDATES) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A free loopback port (listen on 0, close; nginx binds it a moment later). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** The nginx.conf: one worker, a location per upstream (`/<name>/…` → upstream `…`). */
export function nginxConf(prefix: string, port: number, upstreams: Record<string, string>): string {
  const ups = Object.entries(upstreams).map(([name, url]) =>
    `  upstream up_${name} {\n    server ${new URL(url).host};\n    keepalive 64;\n  }\n`
  ).join("");
  const locs = Object.keys(upstreams).map((name) =>
    `    location /${name}/ {\n      proxy_pass http://up_${name}/;\n` +
    `      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n` +
    `      proxy_buffering off;\n    }\n`
  ).join("");
  // Running as root, the worker would switch to `nobody`; keep it the bench's own user.
  const user = Deno.uid() === 0 ? "user root;\n" : "";
  return `${user}worker_processes 1;\npid ${prefix}/nginx.pid;\nerror_log ${prefix}/error.log warn;\n` +
    `events {\n  worker_connections 4096;\n}\nhttp {\n  access_log off;\n` +
    `  client_body_temp_path ${prefix}/body;\n  proxy_temp_path ${prefix}/proxy;\n` +
    `  fastcgi_temp_path ${prefix}/fastcgi;\n  uwsgi_temp_path ${prefix}/uwsgi;\n` +
    `  scgi_temp_path ${prefix}/scgi;\n  keepalive_requests 100000;\n  keepalive_timeout 60s;\n` +
    `${ups}  server {\n    listen 127.0.0.1:${port};\n${locs}  }\n}\n`;
}

/** CPU ns a process's threads have run so far (/proc/<pid>/task/<tid>/schedstat, field 1). */
export function schedNs(pid: number): number {
  let ns = 0;
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    ns += Number(Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/schedstat`).split(" ")[0]);
  }
  return ns;
}

/** The child pids of `pid` (its main thread's children list). */
function childrenOf(pid: number): number[] {
  const text = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim();
  return text === "" ? [] : text.split(/\s+/).map(Number);
}

/** A running nginx relaying to the bench's backends. */
export class Nginx {
  private constructor(
    readonly proc: Deno.ChildProcess,
    readonly prefix: string,
    readonly port: number,
    readonly workerPid: number,
  ) {}

  /**
   * Starts nginx in a new directory under `dir`, relaying `/<name>/` to each upstream; resolves
   * once its one worker is up and the port accepts connections.
   */
  static async start(bin: string, dir: string, upstreams: Record<string, string>): Promise<Nginx> {
    const prefix = await Deno.makeTempDir({ dir, prefix: "nginx-" });
    const port = freePort();
    await Deno.writeTextFile(`${prefix}/nginx.conf`, nginxConf(prefix, port, upstreams));
    const proc = new Deno.Command(bin, {
      args: [
        "-p",
        prefix,
        "-c",
        `${prefix}/nginx.conf`,
        "-e",
        `${prefix}/error.log`,
        "-g",
        "daemon off;",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      const worker = await withTimeout(Nginx.#ready(proc.pid, port), 10_000, "nginx start");
      return new Nginx(proc, prefix, port, worker);
    } catch (err) {
      try {
        proc.kill("SIGKILL");
      } catch {
        // exited already
      }
      await proc.status;
      const log = await Deno.readTextFile(`${prefix}/error.log`).catch(() => "");
      throw new Error(`nginx did not start: ${(err as Error).message}\n${log.slice(-2000)}`);
    }
  }

  static async #ready(master: number, port: number): Promise<number> {
    for (let i = 0; i < 500; i++) {
      const kids = (() => {
        try {
          return childrenOf(master);
        } catch {
          return [];
        }
      })();
      if (kids.length === 1) {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          return kids[0]!;
        } catch {
          // not listening yet
        }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error("no worker listening after 500 tries");
  }

  /** The base URL relaying to upstream `name`. */
  url(name: string): string {
    return `http://127.0.0.1:${this.port}/${name}`;
  }

  /** CPU µs of the worker so far. */
  cpuUs(): number {
    return schedNs(this.workerPid) / 1000;
  }

  /** Stops nginx (SIGQUIT, graceful; SIGKILL after 5 s). */
  async stop(): Promise<void> {
    try {
      this.proc.kill("SIGQUIT");
    } catch {
      return;
    }
    try {
      await withTimeout(this.proc.status, 5000, "nginx stop");
    } catch {
      try {
        this.proc.kill("SIGKILL");
      } catch {
        // gone
      }
      await this.proc.status;
    }
  }
}
