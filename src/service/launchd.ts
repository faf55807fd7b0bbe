// macOS side of `usepod-agent service` (issue 4): the launchd daemon property list and the
// launchctl / tail commands behind each action. The daemon runs as root with root's home.

import {
  agentArgs,
  checkInstallInputs,
  mustRun,
  SERVICE_LABEL,
  type ServiceAction,
  type ServiceContext,
  ServiceError,
  type ServiceOutcome,
  shellWord,
} from "./common.ts";

/** Where `install` writes the property list. */
export const LAUNCHD_PLIST_PATH = "/Library/LaunchDaemons/ai.usepod.agent.plist";
/** Directory of the daemon's log file. */
export const LAUNCHD_LOG_DIR = "/Library/Logs/usepod-agent";
/** root's home: HOME and working directory of the daemon, so `~` and the config lookup work. */
const ROOT_HOME = "/var/root";
const TARGET = `system/${SERVICE_LABEL}`;

function xml(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/** The daemon's log file (stdout and stderr both go there). */
export function launchdLogFile(logDir: string = LAUNCHD_LOG_DIR): string {
  return `${logDir.replace(/\/+$/, "")}/agent.log`;
}

/**
 * The launchd property list for the agent: started at boot, kept alive (relaunched 5 s after
 * exiting), stdout and stderr appended to `<logDir>/agent.log`. `--log-level info` is left out.
 *
 * @example
 * ```ts
 * launchdPlist({ execPath: "/usr/local/bin/usepod-agent", logDir: "/Library/Logs/usepod-agent" });
 * ```
 */
export function launchdPlist(
  opts: { execPath: string; configPath?: string; logLevel?: string; logDir: string },
): string {
  const args = [opts.execPath, ...agentArgs(opts.configPath, opts.logLevel)];
  const log = xml(launchdLogFile(opts.logDir));
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" ` +
    `"http://www.apple.com/DTDs/PropertyList-1.0.dtd">`,
    `<plist version="1.0">`,
    `<dict>`,
    `  <key>Label</key>`,
    `  <string>${SERVICE_LABEL}</string>`,
    `  <key>ProgramArguments</key>`,
    `  <array>`,
    ...args.map((a) => `    <string>${xml(a)}</string>`),
    `  </array>`,
    `  <key>RunAtLoad</key>`,
    `  <true/>`,
    `  <key>KeepAlive</key>`,
    `  <true/>`,
    `  <key>ThrottleInterval</key>`,
    `  <integer>5</integer>`,
    `  <key>WorkingDirectory</key>`,
    `  <string>${ROOT_HOME}</string>`,
    `  <key>EnvironmentVariables</key>`,
    `  <dict>`,
    `    <key>HOME</key>`,
    `    <string>${ROOT_HOME}</string>`,
    `  </dict>`,
    `  <key>StandardOutPath</key>`,
    `  <string>${log}</string>`,
    `  <key>StandardErrorPath</key>`,
    `  <string>${log}</string>`,
    `</dict>`,
    `</plist>`,
    ``,
  ].join("\n");
}

async function install(ctx: ServiceContext, plistPath: string): Promise<ServiceOutcome> {
  await checkInstallInputs(ctx);
  const plist = launchdPlist({
    execPath: ctx.execPath,
    logDir: LAUNCHD_LOG_DIR,
    ...(ctx.configPath === undefined ? {} : { configPath: ctx.configPath }),
    ...(ctx.logLevel === undefined ? {} : { logLevel: ctx.logLevel }),
  });
  const reinstall = await ctx.exists(plistPath);
  await mustRun(ctx, "mkdir", ["-p", LAUNCHD_LOG_DIR]);
  // A loaded daemon must be unloaded before its new definition can be bootstrapped; it may
  // already be stopped, so a failure here is fine.
  if (reinstall) await ctx.runner.run("launchctl", ["bootout", TARGET]);
  try {
    await ctx.writeFile(plistPath, plist, 0o644);
  } catch (err) {
    throw new ServiceError(`cannot write ${plistPath}: ${(err as Error).message}`, 1, {
      cause: err,
    });
  }
  await mustRun(ctx, "launchctl", ["bootstrap", "system", plistPath]);
  const config = ctx.configPath ??
    `${ROOT_HOME}/Library/Application Support/usepod-agent/agent.toml (no --config given; ` +
      `pair with sudo -H ${shellWord(ctx.execPath)} setup)`;
  return {
    exitCode: 0,
    message: [
      `${reinstall ? "reinstalled" : "installed"} and started the ${SERVICE_LABEL} launchd daemon`,
      `  plist:    ${plistPath}`,
      `  runs as:  root, HOME and working dir ${ROOT_HOME}`,
      `  config:   ${config}`,
      `  log:      ${launchdLogFile()}`,
      "check it with: usepod-agent service status, usepod-agent service logs -f",
    ].join("\n"),
  };
}

async function requireInstalled(ctx: ServiceContext, plistPath: string, code: number) {
  if (!(await ctx.exists(plistPath))) {
    throw new ServiceError(
      `the ${SERVICE_LABEL} daemon is not installed (no ${plistPath}): ` +
        "run sudo usepod-agent service install",
      code,
    );
  }
}

/** Carries out one service action with launchd. */
export async function launchdAction(
  action: ServiceAction,
  ctx: ServiceContext,
): Promise<ServiceOutcome> {
  const plistPath = ctx.paths?.plistPath ?? LAUNCHD_PLIST_PATH;
  switch (action) {
    case "install":
      return await install(ctx, plistPath);
    case "uninstall":
      if (!(await ctx.exists(plistPath))) {
        return { exitCode: 0, message: `${SERVICE_LABEL} is not installed (no ${plistPath})` };
      }
      // Already stopped is fine: the point is that it no longer runs.
      await ctx.runner.run("launchctl", ["bootout", TARGET]);
      await ctx.removeFile(plistPath);
      return {
        exitCode: 0,
        message: `stopped ${SERVICE_LABEL} and removed ${plistPath}\n` +
          `kept ${LAUNCHD_LOG_DIR} and ${ROOT_HOME}/.usepod-agent (identity key)`,
      };
    case "start":
      await requireInstalled(ctx, plistPath, 1);
      try {
        await mustRun(ctx, "launchctl", ["bootstrap", "system", plistPath]);
      } catch (err) {
        throw new ServiceError(
          `${(err as Error).message}\n(already running? see usepod-agent service status)`,
          1,
          { cause: err },
        );
      }
      return { exitCode: 0, message: `started ${SERVICE_LABEL}` };
    case "stop":
      await requireInstalled(ctx, plistPath, 1);
      await mustRun(ctx, "launchctl", ["bootout", TARGET]);
      return {
        exitCode: 0,
        message: `stopped ${SERVICE_LABEL} (it starts again at boot; uninstall to prevent that)`,
      };
    case "restart":
      await requireInstalled(ctx, plistPath, 1);
      await mustRun(ctx, "launchctl", ["kickstart", "-k", TARGET]);
      return { exitCode: 0, message: `restarted ${SERVICE_LABEL}` };
    case "status": {
      await requireInstalled(ctx, plistPath, 3);
      const r = await ctx.runner.run("launchctl", ["print", TARGET]);
      if (r.code !== 0) {
        return {
          exitCode: 3,
          message: `${SERVICE_LABEL} is installed but not loaded (stopped): ` +
            "start it with sudo usepod-agent service start",
        };
      }
      return { exitCode: 0, message: `${r.stdout}${r.stderr}`.trimEnd() };
    }
    case "logs": {
      const args = ["-n", "200"];
      if (ctx.follow) args.push("-f");
      args.push(launchdLogFile());
      const r = await ctx.runner.run("tail", args, { inherit: true });
      return { exitCode: r.code, message: "" };
    }
  }
}
