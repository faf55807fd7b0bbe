// Shared vocabulary of `usepod-agent service` (issue 4): actions, the injected command runner and
// file operations, the error that carries an exit code, and checks the three platforms share.

/** The subcommands of `usepod-agent service`. */
export type ServiceAction =
  | "install"
  | "uninstall"
  | "start"
  | "stop"
  | "restart"
  | "status"
  | "logs";

/** Every {@linkcode ServiceAction}, in `--help` order. */
export const SERVICE_ACTIONS: readonly ServiceAction[] = [
  "install",
  "uninstall",
  "start",
  "stop",
  "restart",
  "status",
  "logs",
];

/**
 * Is `s` a service action? For the CLI's argument check.
 *
 * @example
 * ```ts
 * isServiceAction("restart"); // true
 * ```
 */
export function isServiceAction(s: string): s is ServiceAction {
  return (SERVICE_ACTIONS as readonly string[]).includes(s);
}

/** What a finished command left behind (stdout/stderr are empty when inherited). */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs outside commands; injected so tests never touch the machine's real services. */
export interface Runner {
  run(
    cmd: string,
    args: string[],
    opts?: { inherit?: boolean /* stream to the terminal, e.g. logs -f */ },
  ): Promise<CommandResult>;
}

/** Where the service definition and state live; tests override these. */
export interface ServicePaths {
  /** systemd unit file (Linux). */
  unitPath: string;
  /** launchd property list (macOS). */
  plistPath: string;
  /** Home and working directory of the `usepod` user (Linux). */
  stateDir: string;
}

/** Everything `runService` needs from the outside world. */
export interface ServiceContext {
  os: "linux" | "darwin" | "windows";
  /** The agent binary the service will run (`Deno.execPath()` when compiled). */
  execPath: string;
  /** `--config` given around the service command, already absolute. */
  configPath: string | undefined;
  /** `--log-level`; dropped when it is the default `info`. */
  logLevel: string | undefined;
  /** Running as root / administrator. */
  isElevated: boolean;
  runner: Runner;
  writeFile(path: string, text: string, mode?: number): Promise<void>;
  removeFile(path: string): Promise<void>;
  exists(path: string): Promise<boolean>;
  paths?: Partial<ServicePaths>;
  /** `logs -f`. */
  follow?: boolean;
}

/**
 * A service command that cannot go on, with the exit code the CLI should end with.
 *
 * @example
 * ```ts
 * throw new ServiceError("usepod-agent service is not installed", 3);
 * ```
 */
export class ServiceError extends Error {
  override name = "ServiceError";
  constructor(message: string, readonly exitCode: number, options?: ErrorOptions) {
    super(message, options);
  }
}

/** What the CLI prints and exits with after a service action. */
export interface ServiceOutcome {
  exitCode: number;
  message: string;
}

/** launchd label and Windows service name. */
export const SERVICE_LABEL = "ai.usepod.agent";

/** Actions that change the machine and so need root / administrator. */
export const PRIVILEGED_ACTIONS: ReadonlySet<ServiceAction> = new Set<ServiceAction>([
  "install",
  "uninstall",
  "start",
  "stop",
  "restart",
]);

/** The agent's arguments inside a service definition: `--config`, and `--log-level` unless `info`. */
export function agentArgs(configPath: string | undefined, logLevel: string | undefined): string[] {
  const args: string[] = [];
  if (configPath !== undefined) args.push("--config", configPath);
  if (logLevel !== undefined && logLevel !== "info") args.push("--log-level", logLevel);
  return args;
}

/** Runs a command and throws a ServiceError (exit 1) naming it when it fails. */
export async function mustRun(
  ctx: ServiceContext,
  cmd: string,
  args: string[],
): Promise<CommandResult> {
  const result = await ctx.runner.run(cmd, args);
  if (result.code !== 0) {
    const said = `${result.stderr}\n${result.stdout}`.trim();
    throw new ServiceError(
      `${[cmd, ...args].join(" ")} failed (exit ${result.code})${said ? `: ${said}` : ""}`,
      1,
    );
  }
  return result;
}

/** A word for a POSIX shell, quoted only when it needs to be. */
export function shellWord(s: string): string {
  return /^[A-Za-z0-9_\/.:,+=@%-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/** A word for PowerShell, quoted only when it needs to be. */
export function powerShellWord(s: string): string {
  return /^[A-Za-z0-9_\\\/.:,+=@-]+$/.test(s) ? s : `'${s.replaceAll("'", "''")}'`;
}

/** The command line to run again with sudo or from an elevated PowerShell. */
function rerunLine(action: ServiceAction, ctx: ServiceContext): string {
  const args = [...agentArgs(ctx.configPath, ctx.logLevel), "service", action];
  if (ctx.os === "windows") {
    return `& ${[ctx.execPath, ...args].map(powerShellWord).join(" ")}`;
  }
  return `sudo ${[ctx.execPath, ...args].map(shellWord).join(" ")}`;
}

/** Refuses a privileged action when not root / administrator, before anything runs. */
export function requireElevated(action: ServiceAction, ctx: ServiceContext): void {
  if (!PRIVILEGED_ACTIONS.has(action) || ctx.isElevated) return;
  const rerun = rerunLine(action, ctx);
  throw new ServiceError(
    ctx.os === "windows"
      ? `service ${action} needs an administrator: run it from an elevated PowerShell ` +
        `("Run as administrator"): ${rerun}`
      : `service ${action} needs root: run it with sudo: ${rerun}`,
    1,
  );
}

function isAbsolute(os: ServiceContext["os"], p: string): boolean {
  return os === "windows" ? /^([A-Za-z]:[\\/]|\\\\)/.test(p) : p.startsWith("/");
}

/**
 * Checks what `install` will write into the service definition: the binary is the agent (not
 * `deno` running main.ts), and both paths are absolute, printable and, for the config, present.
 */
export async function checkInstallInputs(ctx: ServiceContext): Promise<void> {
  const base = ctx.execPath.split(/[\\/]/).pop()?.toLowerCase();
  if (base === "deno" || base === "deno.exe") {
    throw new ServiceError(
      `service install needs the usepod-agent binary, not deno running main.ts (${ctx.execPath}); ` +
        "install it with install.sh or build it with deno task compile, then run its service install",
      1,
    );
  }
  for (const [what, p] of [["agent binary", ctx.execPath], ["config", ctx.configPath]] as const) {
    if (p === undefined) continue;
    if (!isAbsolute(ctx.os, p)) {
      throw new ServiceError(`the ${what} path must be absolute: ${p}`, 1);
    }
    // deno-lint-ignore no-control-regex
    if (/[\x00-\x1f\x7f]/.test(p) || (ctx.os === "windows" && p.includes('"'))) {
      throw new ServiceError(
        `the ${what} path has a character a service definition cannot hold`,
        1,
      );
    }
  }
  if (ctx.configPath !== undefined && !(await ctx.exists(ctx.configPath))) {
    throw new ServiceError(`config file not found: ${ctx.configPath}`, 1);
  }
}
