// `usepod-agent upgrade [--version TAG]` (issue 4): fetch the installer (USEPOD_INSTALLER_URL,
// default https://usepod.ai/install.sh) and run it with `sh`, passing USEPOD_VERSION and, for an
// installed binary, USEPOD_PREFIX so that the installer replaces the binary that is running.

import { type CommandContext, ExitError, UsageError } from "./command.ts";

/** Where the installer comes from unless USEPOD_INSTALLER_URL says otherwise. */
export const DEFAULT_INSTALLER_URL = "https://usepod.ai/install.sh";
const MAX_INSTALLER_BYTES = 1024 * 1024;

/**
 * The install prefix that makes install.sh (which writes `$USEPOD_PREFIX/bin/usepod-agent`)
 * replace the binary at `execPath`: its `bin` directory's parent. Undefined when `execPath` is
 * not a `usepod-agent` binary inside a `bin` directory (e.g. `deno` running main.ts).
 *
 * @example
 * ```ts
 * installPrefix("/usr/local/bin/usepod-agent"); // "/usr/local"
 * installPrefix("/usr/bin/deno"); // undefined
 * ```
 */
export function installPrefix(execPath: string): string | undefined {
  const m = /^(.*)\/bin\/usepod-agent$/.exec(execPath);
  if (!m) return undefined;
  return m[1] === "" ? "/" : m[1];
}

/**
 * Checks a `--version` value the way install.sh does (it lands in a URL) and returns it as a
 * tag with its leading `v`.
 *
 * @throws {UsageError} for anything but letters, digits, `.`, `-` and `_`.
 * @example
 * ```ts
 * releaseTag("0.4.1"); // "v0.4.1"
 * ```
 */
export function releaseTag(version: string): string {
  const tag = version.startsWith("v") ? version : `v${version}`;
  if (!/^v[A-Za-z0-9._-]+$/.test(tag)) {
    throw new UsageError(`--version: not a release tag: ${JSON.stringify(version)} (e.g. v0.4.1)`);
  }
  return tag;
}

/** The installer URL, refusing plain http unless `allowInsecure` (it is run as code). */
function installerUrl(allowInsecure: boolean): URL {
  const raw = Deno.env.get("USEPOD_INSTALLER_URL") || DEFAULT_INSTALLER_URL;
  const url = URL.parse(raw);
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    throw new UsageError(`USEPOD_INSTALLER_URL: not an http(s) URL: ${raw}`);
  }
  if (url.protocol === "http:" && !allowInsecure) {
    throw new UsageError(
      `USEPOD_INSTALLER_URL: ${raw} is plain http and the installer is run as code; ` +
        "use https:// or pass --allow-insecure",
    );
  }
  return url;
}

async function fetchInstaller(url: URL): Promise<Uint8Array> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(60_000) });
  } catch (err) {
    const why = err instanceof Error ? err.message.split("\n")[0] : String(err);
    throw new ExitError(`cannot fetch the installer from ${url.href}: ${why}`);
  }
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new ExitError(`cannot fetch the installer from ${url.href}: HTTP ${res.status}`);
  }
  const body = new Uint8Array(await res.arrayBuffer());
  const head = new TextDecoder().decode(body.subarray(0, 2));
  if (body.length > MAX_INSTALLER_BYTES || head !== "#!") {
    throw new ExitError(`${url.href} does not hold a shell script installer; nothing was run`);
  }
  return body;
}

/**
 * The `upgrade` command: fetches the installer and runs it with `sh` (stdin, stdout and stderr
 * shared, so sudo can ask for a password). Exit 0 when the installer succeeded, else 1.
 */
export async function upgradeCommand(ctx: CommandContext): Promise<number> {
  if (Deno.build.os === "windows") {
    throw new ExitError(
      "upgrade runs install.sh, which is for Linux and macOS; on Windows run in PowerShell: " +
        "irm https://usepod.ai/install.ps1 | iex",
    );
  }
  const version = ctx.flags.version;
  const tag = typeof version === "string" ? releaseTag(version) : undefined;
  const url = installerUrl(ctx.allowInsecure);
  const env: Record<string, string> = {};
  if (tag !== undefined) env.USEPOD_VERSION = tag;
  const execPath = Deno.execPath();
  const prefix = installPrefix(execPath);
  const operatorPrefix = Deno.env.get("USEPOD_PREFIX");
  if (operatorPrefix) {
    ctx.out(`install prefix: ${operatorPrefix} (from USEPOD_PREFIX)`);
  } else if (prefix !== undefined) {
    env.USEPOD_PREFIX = prefix;
    ctx.out(`install prefix: ${prefix} (replacing the running ${execPath})`);
  } else {
    ctx.out(
      `install prefix: the installer's default (${execPath} is not an installed usepod-agent ` +
        "binary in a bin/ directory; set USEPOD_PREFIX to choose)",
    );
  }
  ctx.out(`fetching the installer from ${url.href}`);
  const script = await fetchInstaller(url);
  const dir = await Deno.makeTempDir({ prefix: "usepod-upgrade-" });
  try {
    const path = `${dir}/install.sh`;
    await Deno.writeFile(path, script, { mode: 0o700 });
    ctx.out(`running it for ${tag ?? "the latest release"}`);
    let status: Deno.CommandStatus;
    try {
      status = await new Deno.Command("sh", {
        args: [path],
        env,
        stdin: "inherit",
        stdout: "inherit",
        stderr: "inherit",
      }).spawn().status;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw new ExitError("upgrade needs sh on the PATH");
      throw err;
    }
    if (status.code !== 0) {
      throw new ExitError(`the installer failed (exit ${status.code}); see its message above`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  ctx.out(
    "upgrade done; a running agent keeps the old version until it restarts " +
      "(usepod-agent service restart, when it runs as a service)",
  );
  return 0;
}
