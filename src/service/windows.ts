// Windows side of `usepod-agent service` (issue 4): the SCM service `ai.usepod.agent` made with
// sc.exe, its log file named by USEPOD_AGENT_LOG_FILE in the service's registry environment.

import {
  agentArgs,
  checkInstallInputs,
  mustRun,
  type Runner,
  SERVICE_LABEL,
  type ServiceAction,
  type ServiceContext,
  ServiceError,
  type ServiceOutcome,
} from "./common.ts";

/** Where the agent writes its log when run as a service. */
export const WINDOWS_LOG_FILE = "C:\\ProgramData\\usepod-agent\\agent.log";
/** The service's registry key; its `Environment` value feeds the agent's environment. */
export const WINDOWS_SERVICE_KEY = `HKLM\\SYSTEM\\CurrentControlSet\\Services\\${SERVICE_LABEL}`;
/** sc.exe's exit code for "The specified service does not exist as an installed service". */
const NOT_INSTALLED = 1060;

/**
 * The service's command line as sc.exe's `binPath=` takes it: the binary and the config path in
 * double quotes (Windows paths cannot contain `"`), so spaces are safe.
 *
 * @example
 * ```ts
 * windowsBinPath({ execPath: "C:\\Program Files\\usepod\\usepod-agent.exe" });
 * // "\"C:\\Program Files\\usepod\\usepod-agent.exe\""
 * ```
 */
export function windowsBinPath(
  opts: { execPath: string; configPath?: string; logLevel?: string },
): string {
  const quote = (s: string) => `"${s}"`;
  const args = agentArgs(opts.configPath, opts.logLevel);
  const words = args.map((a, i) => args[i - 1] === "--config" || /\s/.test(a) ? quote(a) : a);
  return [quote(opts.execPath), ...words].join(" ");
}

/**
 * The commands `install` runs before starting the service, each as `[command, ...args]`: create
 * (or, with `update`, reconfigure) the service, describe it, restart it 5 s after a failure, and
 * set USEPOD_AGENT_LOG_FILE in its registry environment.
 *
 * @example
 * ```ts
 * for (const [cmd, ...args] of windowsServiceCommands({ execPath: "C:\\usepod\\usepod-agent.exe" })) {
 *   console.log(cmd, args);
 * }
 * ```
 */
export function windowsServiceCommands(
  opts: {
    execPath: string;
    configPath?: string;
    logLevel?: string;
    logFile?: string;
    update?: boolean;
  },
): string[][] {
  return [
    [
      "sc.exe",
      opts.update ? "config" : "create",
      SERVICE_LABEL,
      "binPath=",
      windowsBinPath(opts),
      "start=",
      "auto",
      "DisplayName=",
      "Use Pod agent",
    ],
    [
      "sc.exe",
      "description",
      SERVICE_LABEL,
      "Use Pod provider agent: serves this machine's AI models to the Use Pod network",
    ],
    [
      "sc.exe",
      "failure",
      SERVICE_LABEL,
      "reset=",
      "86400",
      "actions=",
      "restart/5000/restart/5000/restart/5000",
    ],
    [
      "reg.exe",
      "add",
      WINDOWS_SERVICE_KEY,
      "/v",
      "Environment",
      "/t",
      "REG_MULTI_SZ",
      "/d",
      `USEPOD_AGENT_LOG_FILE=${opts.logFile ?? WINDOWS_LOG_FILE}`,
      "/f",
    ],
  ];
}

function powerShell(script: string): [string, string[]] {
  return ["powershell.exe", ["-NoProfile", "-NonInteractive", "-Command", script]];
}

/** Runs `sc.exe query`; tells whether the service exists, or throws when sc.exe itself fails. */
async function query(runner: Runner): Promise<{ installed: boolean; text: string }> {
  const r = await runner.run("sc.exe", ["query", SERVICE_LABEL]);
  const text = `${r.stdout}${r.stderr}`.trimEnd();
  if (r.code === 0) return { installed: true, text };
  if (r.code === NOT_INSTALLED) return { installed: false, text };
  throw new ServiceError(`sc.exe query ${SERVICE_LABEL} failed (exit ${r.code}): ${text}`, 1);
}

function notInstalled(code: number): ServiceError {
  return new ServiceError(
    `the ${SERVICE_LABEL} service is not installed: run usepod-agent service install ` +
      "from an elevated PowerShell",
    code,
  );
}

async function install(ctx: ServiceContext): Promise<ServiceOutcome> {
  await checkInstallInputs(ctx);
  const { installed } = await query(ctx.runner);
  const commands = windowsServiceCommands({
    execPath: ctx.execPath,
    update: installed,
    ...(ctx.configPath === undefined ? {} : { configPath: ctx.configPath }),
    ...(ctx.logLevel === undefined ? {} : { logLevel: ctx.logLevel }),
  });
  for (const [cmd, ...args] of commands) await mustRun(ctx, cmd!, args);
  if (installed) {
    await mustRun(ctx, ...powerShell(`Restart-Service -Name ${SERVICE_LABEL}`));
  } else {
    await mustRun(ctx, "sc.exe", ["start", SERVICE_LABEL]);
  }
  return {
    exitCode: 0,
    message: [
      `${installed ? "reinstalled" : "installed"} and started the ${SERVICE_LABEL} service`,
      `  runs as:  LocalSystem, started at boot, restarted 5 s after a failure`,
      `  config:   ${
        ctx.configPath ??
          "%APPDATA%\\usepod-agent\\agent.toml of LocalSystem (no --config given; " +
            "reinstall with --config to use yours)"
      }`,
      `  log:      ${WINDOWS_LOG_FILE}: the agent writes there because install set ` +
      `USEPOD_AGENT_LOG_FILE in the service's environment (registry value Environment ` +
      `under ${WINDOWS_SERVICE_KEY})`,
      "check it with: usepod-agent service status, usepod-agent service logs -f",
    ].join("\n"),
  };
}

/** Carries out one service action with the Windows service manager. */
export async function windowsAction(
  action: ServiceAction,
  ctx: ServiceContext,
): Promise<ServiceOutcome> {
  if (action === "install") return await install(ctx);
  if (action === "logs") {
    const script = `Get-Content -Tail 200 ${ctx.follow ? "-Wait " : ""}` +
      `-LiteralPath '${WINDOWS_LOG_FILE}'`;
    const r = await ctx.runner.run(...powerShell(script), { inherit: true });
    return { exitCode: r.code, message: "" };
  }
  const { installed, text } = await query(ctx.runner);
  switch (action) {
    case "status":
      if (!installed) throw notInstalled(3);
      // Exit 3 when installed but not running, as systemctl status does.
      return { exitCode: /STATE\s*:\s*4\b/.test(text) ? 0 : 3, message: text };
    case "uninstall":
      if (!installed) {
        return { exitCode: 0, message: `${SERVICE_LABEL} is not installed` };
      }
      // Already stopped is fine: the point is that it no longer runs.
      await ctx.runner.run("sc.exe", ["stop", SERVICE_LABEL]);
      await mustRun(ctx, "sc.exe", ["delete", SERVICE_LABEL]);
      return {
        exitCode: 0,
        message:
          `stopped and removed the ${SERVICE_LABEL} service; kept C:\\ProgramData\\usepod-agent`,
      };
    case "start":
    case "stop":
      if (!installed) throw notInstalled(1);
      await mustRun(ctx, "sc.exe", [action, SERVICE_LABEL]);
      return {
        exitCode: 0,
        message: `${action === "start" ? "starting" : "stopping"} ${SERVICE_LABEL}`,
      };
    case "restart":
      if (!installed) throw notInstalled(1);
      // sc.exe stop returns before the service has stopped; Restart-Service waits for it.
      await mustRun(ctx, ...powerShell(`Restart-Service -Name ${SERVICE_LABEL}`));
      return { exitCode: 0, message: `restarted ${SERVICE_LABEL}` };
  }
}
