// Linux side of `usepod-agent service` (issue 4): the hardened systemd system unit, the dedicated
// `usepod` user and its state dir, and the systemctl / journalctl commands behind each action.

import {
  agentArgs,
  checkInstallInputs,
  mustRun,
  type ServiceAction,
  type ServiceContext,
  ServiceError,
  type ServiceOutcome,
  shellWord,
} from "./common.ts";

/** The unit's name for systemctl and journalctl. */
export const SYSTEMD_UNIT = "usepod-agent";
/** Where `install` writes the unit. */
export const SYSTEMD_UNIT_PATH = "/etc/systemd/system/usepod-agent.service";
/** Home and working directory of the `usepod` user; the identity key lives under it. */
export const SYSTEMD_STATE_DIR = "/var/lib/usepod-agent";
/** The system user the service runs as. */
export const SERVICE_USER = "usepod";

/** Directories the unit's ProtectHome=true and PrivateTmp=true hide from the service. */
const HIDDEN_DIRS = ["/home", "/root", "/run/user", "/tmp", "/var/tmp"];

/** Resolves `.` and `..` in an absolute POSIX path, textually. */
function normalize(p: string): string {
  const parts: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return "/" + parts.join("/");
}

function dirname(p: string): string {
  const n = normalize(p);
  return n.slice(0, n.lastIndexOf("/")) || "/";
}

function isUnder(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir + "/");
}

/**
 * One word of a unit setting: bare when safe, else double-quoted with `\` and `"` escaped, `%`
 * doubled (specifiers) and, in command lines, `$` doubled (variable expansion).
 */
function unitWord(s: string, commandLine: boolean): string {
  if (/^[A-Za-z0-9_\/.:,+=@-]+$/.test(s)) return s;
  let q = s.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("%", "%%");
  if (commandLine) q = q.replaceAll("$", "$$$$");
  return `"${q}"`;
}

/**
 * The systemd unit for the agent: runs as `usepod` in `stateDir` (also its HOME, so the default
 * identity path `~/.usepod-agent/identity.key` lands there), hardened, restarted always.
 * `--log-level info` is left out, being the default.
 *
 * @example
 * ```ts
 * systemdUnit({ execPath: "/usr/local/bin/usepod-agent", configPath: "/etc/usepod-agent/agent.toml",
 *   stateDir: "/var/lib/usepod-agent" });
 * ```
 */
export function systemdUnit(
  opts: { execPath: string; configPath?: string; logLevel?: string; stateDir: string },
): string {
  if (!/^\/[A-Za-z0-9_\/.@+-]*$/.test(opts.stateDir)) {
    throw new RangeError(`state dir must be a plain absolute path: ${opts.stateDir}`);
  }
  const stateDir = normalize(opts.stateDir);
  const exec = [opts.execPath, ...agentArgs(opts.configPath, opts.logLevel)]
    .map((w) => unitWord(w, true))
    .join(" ");
  const writable = [stateDir];
  if (opts.configPath !== undefined) {
    const dir = dirname(opts.configPath);
    // The config's own directory (e.g. /etc/usepod-agent) stays writable for an identity key kept
    // beside it; a shared top-level directory such as /etc or /opt is never opened up.
    if (!isUnder(dir, stateDir) && dir.split("/").length > 2) writable.push(dir);
  }
  return [
    "# Written by `usepod-agent service install`; `usepod-agent service uninstall` removes it.",
    "[Unit]",
    "Description=Use Pod provider agent",
    "After=network-online.target",
    "Wants=network-online.target",
    "",
    "[Service]",
    "Type=simple",
    `User=${SERVICE_USER}`,
    `Group=${SERVICE_USER}`,
    `WorkingDirectory=${stateDir}`,
    `Environment=HOME=${stateDir}`,
    `ExecStart=${exec}`,
    "Restart=always",
    "RestartSec=5",
    "NoNewPrivileges=true",
    "ProtectSystem=strict",
    "ProtectHome=true",
    "PrivateTmp=true",
    `ReadWritePaths=${writable.map((w) => unitWord(w, false)).join(" ")}`,
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

function refuseHidden(what: string, p: string): void {
  const n = normalize(p);
  const dir = HIDDEN_DIRS.find((d) => isUnder(n, d));
  if (dir === undefined) return;
  throw new ServiceError(
    `the service cannot reach the ${what} ${p}: it runs as user ${SERVICE_USER} with ` +
      `ProtectHome=true and PrivateTmp=true, which hide ${dir}; ` +
      (what === "config"
        ? "move the config (and the identity key it names) to /etc/usepod-agent/, make it " +
          `readable by ${SERVICE_USER}, and run install again`
        : "install the agent under /usr/local/bin (install.sh does) and run install again"),
    1,
  );
}

async function install(
  ctx: ServiceContext,
  unitPath: string,
  stateDir: string,
): Promise<ServiceOutcome> {
  await checkInstallInputs(ctx);
  refuseHidden("agent binary", ctx.execPath);
  if (ctx.configPath !== undefined) refuseHidden("config", ctx.configPath);
  const unit = systemdUnit({
    execPath: ctx.execPath,
    stateDir,
    ...(ctx.configPath === undefined ? {} : { configPath: ctx.configPath }),
    ...(ctx.logLevel === undefined ? {} : { logLevel: ctx.logLevel }),
  });
  const reinstall = await ctx.exists(unitPath);

  const user = SERVICE_USER;
  let userNote = `user ${user} (existing)`;
  if ((await ctx.runner.run("id", [user])).code !== 0) {
    await mustRun(ctx, "useradd", [
      "--system",
      "--user-group",
      "--home-dir",
      stateDir,
      "--shell",
      "/usr/sbin/nologin",
      user,
    ]);
    userNote = `user ${user} (created)`;
  }
  await mustRun(ctx, "install", ["-d", "-o", user, "-g", user, "-m", "0750", stateDir]);
  try {
    await ctx.writeFile(unitPath, unit, 0o644);
  } catch (err) {
    throw new ServiceError(`cannot write ${unitPath}: ${(err as Error).message}`, 1, {
      cause: err,
    });
  }
  await mustRun(ctx, "systemctl", ["daemon-reload"]);
  await mustRun(ctx, "systemctl", ["enable", "--now", SYSTEMD_UNIT]);
  if (reinstall) await mustRun(ctx, "systemctl", ["restart", SYSTEMD_UNIT]);

  const config = ctx.configPath === undefined
    ? `${stateDir}/.config/usepod-agent/agent.toml (no --config given; it must be readable ` +
      `by ${user}: pair with sudo -u ${user} -H ${shellWord(ctx.execPath)} setup)`
    : `${ctx.configPath} (must be readable by ${user})`;
  return {
    exitCode: 0,
    message: [
      `${reinstall ? "reinstalled" : "installed"} and started the usepod-agent systemd service`,
      `  unit:     ${unitPath}`,
      `  runs as:  ${userNote}, HOME and working dir ${stateDir}`,
      `  config:   ${config}`,
      `  identity: identity.key_path of the config; ~ there is ${stateDir}`,
      "check it with: usepod-agent service status, usepod-agent service logs -f",
    ].join("\n"),
  };
}

async function requireInstalled(ctx: ServiceContext, unitPath: string, code: number) {
  if (!(await ctx.exists(unitPath))) {
    throw new ServiceError(
      `the usepod-agent service is not installed (no ${unitPath}): ` +
        "run sudo usepod-agent service install",
      code,
    );
  }
}

const PAST = { start: "started", stop: "stopped", restart: "restarted" } as const;

/** Carries out one service action with systemd. */
export async function systemdAction(
  action: ServiceAction,
  ctx: ServiceContext,
): Promise<ServiceOutcome> {
  const unitPath = ctx.paths?.unitPath ?? SYSTEMD_UNIT_PATH;
  const stateDir = ctx.paths?.stateDir ?? SYSTEMD_STATE_DIR;
  switch (action) {
    case "install":
      return await install(ctx, unitPath, stateDir);
    case "uninstall": {
      if (!(await ctx.exists(unitPath))) {
        return { exitCode: 0, message: `usepod-agent service is not installed (no ${unitPath})` };
      }
      await mustRun(ctx, "systemctl", ["disable", "--now", SYSTEMD_UNIT]);
      await ctx.removeFile(unitPath);
      await mustRun(ctx, "systemctl", ["daemon-reload"]);
      return {
        exitCode: 0,
        message: `stopped usepod-agent and removed ${unitPath}\n` +
          `kept user ${SERVICE_USER} and ${stateDir} (identity key and state); to remove them ` +
          `too: sudo userdel ${SERVICE_USER} && sudo rm -r ${stateDir}`,
      };
    }
    case "start":
    case "stop":
    case "restart":
      await requireInstalled(ctx, unitPath, 1);
      await mustRun(ctx, "systemctl", [action, SYSTEMD_UNIT]);
      return { exitCode: 0, message: `${PAST[action]} usepod-agent` };
    case "status": {
      await requireInstalled(ctx, unitPath, 3);
      const r = await ctx.runner.run("systemctl", ["status", SYSTEMD_UNIT, "--no-pager"]);
      return { exitCode: r.code, message: `${r.stdout}${r.stderr}`.trimEnd() };
    }
    case "logs": {
      const args = ["-u", SYSTEMD_UNIT, "-n", "200", "--no-pager"];
      if (ctx.follow) args.push("-f");
      const r = await ctx.runner.run("journalctl", args, { inherit: true });
      return { exitCode: r.code, message: "" };
    }
  }
}
