// Tests of `usepod-agent service` (issue 4): the generated systemd unit (systemd-analyze verify),
// launchd plist (parsed as XML plist) and sc.exe commands, and every action through a fake runner.

import assert from "node:assert/strict";
import { parse as parsePlist } from "plist";
import {
  type CommandResult,
  isServiceAction,
  LAUNCHD_PLIST_PATH,
  launchdPlist,
  realFiles,
  realRunner,
  runService,
  type ServiceAction,
  type ServiceContext,
  ServiceError,
  SYSTEMD_UNIT_PATH,
  systemdUnit,
  windowsBinPath,
  windowsServiceCommands,
} from "../../src/service/service.ts";

const EXEC = "/usr/local/bin/usepod-agent";
const CONFIG = "/etc/usepod-agent/agent.toml";
const STATE = "/var/lib/usepod-agent";
const EXEC_WIN = "C:\\Program Files\\usepod\\usepod-agent.exe";
const CONFIG_WIN = "C:\\ProgramData\\usepod-agent\\agent.toml";
const TARGET = "system/ai.usepod.agent";

type Answer = Partial<CommandResult> | undefined;

interface World {
  ctx: ServiceContext;
  /** Every command run, as `[cmd, ...args]`, in order. */
  calls: string[][];
  /** Whether each call asked for inherited output. */
  inherited: boolean[];
  files: Map<string, { text: string; mode: number | undefined }>;
}

/** A context whose runner records commands and answers from `answer`, with files in memory. */
function world(opts: {
  os: ServiceContext["os"];
  elevated?: boolean;
  files?: string[];
  answer?: (argv: string[]) => Answer;
  execPath?: string;
  configPath?: string | undefined;
  logLevel?: string;
  follow?: boolean;
}): World {
  const win = opts.os === "windows";
  const files = new Map<string, { text: string; mode: number | undefined }>();
  for (const f of opts.files ?? []) files.set(f, { text: "", mode: undefined });
  const calls: string[][] = [];
  const inherited: boolean[] = [];
  const ctx: ServiceContext = {
    os: opts.os,
    execPath: opts.execPath ?? (win ? EXEC_WIN : EXEC),
    configPath: "configPath" in opts ? opts.configPath : (win ? CONFIG_WIN : CONFIG),
    logLevel: opts.logLevel,
    isElevated: opts.elevated ?? true,
    runner: {
      run(cmd, args, runOpts) {
        calls.push([cmd, ...args]);
        inherited.push(runOpts?.inherit === true);
        const a = opts.answer?.([cmd, ...args]) ?? {};
        return Promise.resolve({
          code: a.code ?? 0,
          stdout: a.stdout ?? "",
          stderr: a.stderr ?? "",
        });
      },
    },
    writeFile(path, text, mode) {
      files.set(path, { text, mode });
      return Promise.resolve();
    },
    removeFile(path) {
      files.delete(path);
      return Promise.resolve();
    },
    exists(path) {
      return Promise.resolve(files.has(path));
    },
    follow: opts.follow ?? false,
  };
  return { ctx, calls, inherited, files };
}

async function serviceError(p: Promise<unknown>): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ServiceError) return err;
    throw err;
  }
  assert.fail("expected a ServiceError");
}

/** `id usepod` fails: the user does not exist yet. */
const noUser = (argv: string[]): Answer => argv[0] === "id" ? { code: 1 } : undefined;
/** sc.exe query: 1060 when not installed, else RUNNING. */
const scQuery = (installed: boolean, state = "4  RUNNING") => (argv: string[]): Answer =>
  argv[0] === "sc.exe" && argv[1] === "query"
    ? installed
      ? {
        code: 0,
        stdout: `SERVICE_NAME: ai.usepod.agent\n        STATE              : ${state}\n`,
      }
      : { code: 1060, stdout: "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:" }
    : undefined;

// ---- the systemd unit ----

Deno.test("the unit carries every hardening directive, restart policy and the usepod user", () => {
  const lines = systemdUnit({ execPath: EXEC, stateDir: STATE }).split("\n");
  for (
    const directive of [
      "NoNewPrivileges=true",
      "ProtectSystem=strict",
      "ProtectHome=true",
      "PrivateTmp=true",
      `ReadWritePaths=${STATE}`,
      "Restart=always",
      "RestartSec=5",
      "After=network-online.target",
      "Wants=network-online.target",
      "User=usepod",
      `WorkingDirectory=${STATE}`,
      `Environment=HOME=${STATE}`,
      `ExecStart=${EXEC}`,
      "WantedBy=multi-user.target",
    ]
  ) {
    assert.ok(lines.includes(directive), `missing ${directive}`);
  }
});

Deno.test("the unit carries --config and a non-default --log-level into ExecStart", () => {
  const unit = systemdUnit({
    execPath: EXEC,
    configPath: CONFIG,
    logLevel: "debug",
    stateDir: STATE,
  });
  assert.ok(unit.includes(`\nExecStart=${EXEC} --config ${CONFIG} --log-level debug\n`));
  assert.ok(unit.includes(`\nReadWritePaths=${STATE} /etc/usepod-agent\n`));
});

Deno.test("the unit leaves out the default log level", () => {
  const unit = systemdUnit({
    execPath: EXEC,
    configPath: CONFIG,
    logLevel: "info",
    stateDir: STATE,
  });
  assert.ok(unit.includes(`\nExecStart=${EXEC} --config ${CONFIG}\n`));
  assert.ok(!unit.includes("--log-level"));
});

Deno.test("the unit quotes paths with spaces and escapes %, $, quotes and backslashes", () => {
  const unit = systemdUnit({
    execPath: "/opt/use pod/usepod-agent",
    configPath: '/etc/use pod/a"b\\c $HOME 100%.toml',
    stateDir: STATE,
  });
  assert.ok(unit.includes(
    '\nExecStart="/opt/use pod/usepod-agent" --config "/etc/use pod/a\\"b\\\\c $$HOME 100%%.toml"\n',
  ));
  assert.ok(unit.includes(`\nReadWritePaths=${STATE} "/etc/use pod"\n`));
});

Deno.test("the unit makes the config's directory writable only when it is a dedicated one", () => {
  const inState = systemdUnit({
    execPath: EXEC,
    configPath: `${STATE}/agent.toml`,
    stateDir: STATE,
  });
  assert.ok(inState.includes(`\nReadWritePaths=${STATE}\n`));
  const inEtc = systemdUnit({ execPath: EXEC, configPath: "/etc/agent.toml", stateDir: STATE });
  assert.ok(inEtc.includes(`\nReadWritePaths=${STATE}\n`));
});

async function hasTool(cmd: string): Promise<boolean> {
  try {
    await new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" }).output();
    return true;
  } catch {
    return false;
  }
}

const haveAnalyze = await hasTool("systemd-analyze");
if (!haveAnalyze) {
  console.warn(
    "SKIPPING systemd-analyze verify tests: systemd-analyze is not installed " +
      "(apt-get install -y systemd)",
  );
}

/** Writes the unit into a temp dir beside a real executable and runs systemd-analyze verify. */
async function verifyUnit(opts: { execName: string; configPath?: string; logLevel?: string }) {
  const dir = await Deno.makeTempDir({ prefix: "usepod-unit-" });
  try {
    const binDir = `${dir}/bin dir`;
    await Deno.mkdir(binDir);
    const execPath = `${binDir}/${opts.execName}`;
    await Deno.writeTextFile(execPath, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    const unitFile = `${dir}/usepod-agent.service`;
    await Deno.writeTextFile(unitFile, systemdUnit({ ...opts, execPath, stateDir: STATE }));
    const out = await new Deno.Command("systemd-analyze", {
      args: ["verify", unitFile],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    // verify exits 0 on some syntax warnings ("Failed to extract first word, ignoring"), so any
    // line about our unit counts as a failure too.
    const ours = stderr.split("\n").filter((l) => l.includes("usepod-agent"));
    assert.equal(out.code, 0, stderr);
    assert.deepEqual(ours, [], stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: haveAnalyze
    ? "the unit passes systemd-analyze verify, with a binary path that has spaces"
    : "the unit passes systemd-analyze verify (SKIPPED: systemd-analyze not installed)",
  ignore: !haveAnalyze,
  fn: () =>
    verifyUnit({
      execName: "usepod agent",
      configPath: "/etc/use pod/agent.toml",
      logLevel: "debug",
    }),
});

Deno.test({
  name: haveAnalyze
    ? "the unit without --config passes systemd-analyze verify"
    : "the unit without --config passes systemd-analyze verify (SKIPPED: systemd-analyze not installed)",
  ignore: !haveAnalyze,
  fn: () => verifyUnit({ execName: "usepod-agent" }),
});

// ---- the launchd plist and sc.exe commands ----

Deno.test("the plist parses as an XML plist with label, arguments, keep-alive and log paths", () => {
  const config = "/Users/op/Library/Application Support/usepod-agent/a&b <1>.toml";
  const parsed = parsePlist(
    launchdPlist({
      execPath: EXEC,
      configPath: config,
      logLevel: "warn",
      logDir: "/Library/Logs/usepod-agent",
    }),
  ) as Record<string, unknown>;
  assert.equal(parsed.Label, "ai.usepod.agent");
  assert.deepEqual(parsed.ProgramArguments, [EXEC, "--config", config, "--log-level", "warn"]);
  assert.equal(parsed.KeepAlive, true);
  assert.equal(parsed.RunAtLoad, true);
  assert.equal(parsed.StandardOutPath, "/Library/Logs/usepod-agent/agent.log");
  assert.equal(parsed.StandardErrorPath, "/Library/Logs/usepod-agent/agent.log");
  assert.equal(parsed.WorkingDirectory, "/var/root");
  assert.deepEqual(parsed.EnvironmentVariables, { HOME: "/var/root" });
});

Deno.test("the plist leaves out --config when not given and the default log level", () => {
  const parsed = parsePlist(
    launchdPlist({ execPath: EXEC, logLevel: "info", logDir: "/Library/Logs/usepod-agent" }),
  ) as Record<string, unknown>;
  assert.deepEqual(parsed.ProgramArguments, [EXEC]);
});

Deno.test("sc.exe binPath quotes the binary and config paths, which may hold spaces", () => {
  assert.equal(
    windowsBinPath({
      execPath: EXEC_WIN,
      configPath: "C:\\Users\\Op Name\\agent.toml",
      logLevel: "warn",
    }),
    '"C:\\Program Files\\usepod\\usepod-agent.exe" --config "C:\\Users\\Op Name\\agent.toml" --log-level warn',
  );
  assert.equal(windowsBinPath({ execPath: EXEC_WIN, logLevel: "info" }), `"${EXEC_WIN}"`);
});

Deno.test("windows install commands create, describe, set failure restarts and the log file", () => {
  assert.deepEqual(windowsServiceCommands({ execPath: EXEC_WIN, configPath: CONFIG_WIN }), [
    [
      "sc.exe",
      "create",
      "ai.usepod.agent",
      "binPath=",
      `"${EXEC_WIN}" --config "${CONFIG_WIN}"`,
      "start=",
      "auto",
      "DisplayName=",
      "Use Pod agent",
    ],
    [
      "sc.exe",
      "description",
      "ai.usepod.agent",
      "Use Pod provider agent: serves this machine's AI models to the Use Pod network",
    ],
    [
      "sc.exe",
      "failure",
      "ai.usepod.agent",
      "reset=",
      "86400",
      "actions=",
      "restart/5000/restart/5000/restart/5000",
    ],
    [
      "reg.exe",
      "add",
      "HKLM\\SYSTEM\\CurrentControlSet\\Services\\ai.usepod.agent",
      "/v",
      "Environment",
      "/t",
      "REG_MULTI_SZ",
      "/d",
      "USEPOD_AGENT_LOG_FILE=C:\\ProgramData\\usepod-agent\\agent.log",
      "/f",
    ],
  ]);
  assert.equal(windowsServiceCommands({ execPath: EXEC_WIN, update: true })[0]?.[1], "config");
});

// ---- each action on each OS, through the recording runner ----

interface Case {
  name: string;
  os: ServiceContext["os"];
  action: ServiceAction;
  files?: string[];
  answer?: (argv: string[]) => Answer;
  follow?: boolean;
  calls: string[][];
  exitCode: number;
  inherit?: boolean;
}

const PLIST = LAUNCHD_PLIST_PATH;
const UNIT = SYSTEMD_UNIT_PATH;
const USERADD = [
  "useradd",
  "--system",
  "--user-group",
  "--home-dir",
  STATE,
  "--shell",
  "/usr/sbin/nologin",
  "usepod",
];
const MKSTATE = ["install", "-d", "-o", "usepod", "-g", "usepod", "-m", "0750", STATE];
const WIN_INSTALL = windowsServiceCommands({ execPath: EXEC_WIN, configPath: CONFIG_WIN });
const WIN_UPDATE = windowsServiceCommands({
  execPath: EXEC_WIN,
  configPath: CONFIG_WIN,
  update: true,
});
const RESTART_SERVICE = [
  "powershell.exe",
  "-NoProfile",
  "-NonInteractive",
  "-Command",
  "Restart-Service -Name ai.usepod.agent",
];
const QUERY = ["sc.exe", "query", "ai.usepod.agent"];

const cases: Case[] = [
  {
    name: "linux install creates the usepod user when `id usepod` fails, then enables the unit",
    os: "linux",
    action: "install",
    files: [CONFIG],
    answer: noUser,
    calls: [
      ["id", "usepod"],
      USERADD,
      MKSTATE,
      ["systemctl", "daemon-reload"],
      ["systemctl", "enable", "--now", "usepod-agent"],
    ],
    exitCode: 0,
  },
  {
    name: "linux install skips useradd when `id usepod` succeeds",
    os: "linux",
    action: "install",
    files: [CONFIG],
    calls: [
      ["id", "usepod"],
      MKSTATE,
      ["systemctl", "daemon-reload"],
      ["systemctl", "enable", "--now", "usepod-agent"],
    ],
    exitCode: 0,
  },
  {
    name: "linux install over an installed unit restarts it on the new definition",
    os: "linux",
    action: "install",
    files: [CONFIG, UNIT],
    calls: [
      ["id", "usepod"],
      MKSTATE,
      ["systemctl", "daemon-reload"],
      ["systemctl", "enable", "--now", "usepod-agent"],
      ["systemctl", "restart", "usepod-agent"],
    ],
    exitCode: 0,
  },
  {
    name: "linux uninstall disables, removes the unit and reloads",
    os: "linux",
    action: "uninstall",
    files: [UNIT],
    calls: [["systemctl", "disable", "--now", "usepod-agent"], ["systemctl", "daemon-reload"]],
    exitCode: 0,
  },
  {
    name: "linux uninstall of a service not installed runs nothing",
    os: "linux",
    action: "uninstall",
    calls: [],
    exitCode: 0,
  },
  ...(["start", "stop", "restart"] as const).map((a): Case => ({
    name: `linux ${a} runs systemctl ${a}`,
    os: "linux",
    action: a,
    files: [UNIT],
    calls: [["systemctl", a, "usepod-agent"]],
    exitCode: 0,
  })),
  {
    name: "linux status passes systemctl status through, exit code included",
    os: "linux",
    action: "status",
    files: [UNIT],
    answer: () => ({ code: 3, stdout: "Active: inactive (dead)\n" }),
    calls: [["systemctl", "status", "usepod-agent", "--no-pager"]],
    exitCode: 3,
  },
  {
    name: "linux logs shows the last 200 journal lines on the terminal",
    os: "linux",
    action: "logs",
    calls: [["journalctl", "-u", "usepod-agent", "-n", "200", "--no-pager"]],
    exitCode: 0,
    inherit: true,
  },
  {
    name: "linux logs -f follows the journal",
    os: "linux",
    action: "logs",
    follow: true,
    calls: [["journalctl", "-u", "usepod-agent", "-n", "200", "--no-pager", "-f"]],
    exitCode: 0,
    inherit: true,
  },
  {
    name: "macos install makes the log dir and bootstraps the daemon",
    os: "darwin",
    action: "install",
    files: [CONFIG],
    calls: [
      ["mkdir", "-p", "/Library/Logs/usepod-agent"],
      ["launchctl", "bootstrap", "system", PLIST],
    ],
    exitCode: 0,
  },
  {
    name: "macos install over an installed daemon boots the old one out first",
    os: "darwin",
    action: "install",
    files: [CONFIG, PLIST],
    calls: [
      ["mkdir", "-p", "/Library/Logs/usepod-agent"],
      ["launchctl", "bootout", TARGET],
      ["launchctl", "bootstrap", "system", PLIST],
    ],
    exitCode: 0,
  },
  {
    name: "macos uninstall boots the daemon out and removes the plist",
    os: "darwin",
    action: "uninstall",
    files: [PLIST],
    answer: () => ({ code: 3 }), // already stopped is fine
    calls: [["launchctl", "bootout", TARGET]],
    exitCode: 0,
  },
  {
    name: "macos start bootstraps the plist",
    os: "darwin",
    action: "start",
    files: [PLIST],
    calls: [["launchctl", "bootstrap", "system", PLIST]],
    exitCode: 0,
  },
  {
    name: "macos stop boots the daemon out",
    os: "darwin",
    action: "stop",
    files: [PLIST],
    calls: [["launchctl", "bootout", TARGET]],
    exitCode: 0,
  },
  {
    name: "macos restart kickstarts the daemon with -k",
    os: "darwin",
    action: "restart",
    files: [PLIST],
    calls: [["launchctl", "kickstart", "-k", TARGET]],
    exitCode: 0,
  },
  {
    name: "macos status prints the daemon",
    os: "darwin",
    action: "status",
    files: [PLIST],
    answer: () => ({ stdout: "state = running\n" }),
    calls: [["launchctl", "print", TARGET]],
    exitCode: 0,
  },
  {
    name: "macos status of an installed but stopped daemon exits 3",
    os: "darwin",
    action: "status",
    files: [PLIST],
    answer: () => ({ code: 113, stderr: "Could not find service" }),
    calls: [["launchctl", "print", TARGET]],
    exitCode: 3,
  },
  {
    name: "macos logs -f follows the log file",
    os: "darwin",
    action: "logs",
    follow: true,
    calls: [["tail", "-n", "200", "-f", "/Library/Logs/usepod-agent/agent.log"]],
    exitCode: 0,
    inherit: true,
  },
  {
    name: "windows install creates the service, sets it up and starts it",
    os: "windows",
    action: "install",
    files: [CONFIG_WIN],
    answer: scQuery(false),
    calls: [QUERY, ...WIN_INSTALL, ["sc.exe", "start", "ai.usepod.agent"]],
    exitCode: 0,
  },
  {
    name: "windows install over an installed service reconfigures and restarts it",
    os: "windows",
    action: "install",
    files: [CONFIG_WIN],
    answer: scQuery(true),
    calls: [QUERY, ...WIN_UPDATE, RESTART_SERVICE],
    exitCode: 0,
  },
  {
    name: "windows uninstall stops and deletes the service",
    os: "windows",
    action: "uninstall",
    answer: scQuery(true),
    calls: [QUERY, ["sc.exe", "stop", "ai.usepod.agent"], ["sc.exe", "delete", "ai.usepod.agent"]],
    exitCode: 0,
  },
  ...(["start", "stop"] as const).map((a): Case => ({
    name: `windows ${a} runs sc.exe ${a}`,
    os: "windows",
    action: a,
    answer: scQuery(true),
    calls: [QUERY, ["sc.exe", a, "ai.usepod.agent"]],
    exitCode: 0,
  })),
  {
    name: "windows restart waits with Restart-Service",
    os: "windows",
    action: "restart",
    answer: scQuery(true),
    calls: [QUERY, RESTART_SERVICE],
    exitCode: 0,
  },
  {
    name: "windows status of a running service exits 0",
    os: "windows",
    action: "status",
    answer: scQuery(true),
    calls: [QUERY],
    exitCode: 0,
  },
  {
    name: "windows status of a stopped service exits 3",
    os: "windows",
    action: "status",
    answer: scQuery(true, "1  STOPPED"),
    calls: [QUERY],
    exitCode: 3,
  },
  {
    name: "windows logs prints the tail of the log file",
    os: "windows",
    action: "logs",
    calls: [[
      "powershell.exe",
      "-NoProfile",
      "-NonInteractive",
      "-Command",
      "Get-Content -Tail 200 -LiteralPath 'C:\\ProgramData\\usepod-agent\\agent.log'",
    ]],
    exitCode: 0,
    inherit: true,
  },
];

for (const c of cases) {
  Deno.test(c.name, async () => {
    const w = world({
      os: c.os,
      ...(c.files ? { files: c.files } : {}),
      ...(c.answer ? { answer: c.answer } : {}),
      ...(c.follow ? { follow: c.follow } : {}),
    });
    const outcome = await runService(c.action, w.ctx);
    assert.deepEqual(w.calls, c.calls);
    assert.equal(outcome.exitCode, c.exitCode);
    assert.deepEqual(w.inherited, c.calls.map(() => c.inherit === true));
  });
}

Deno.test("linux install writes the unit, mode 0644, with the surrounding flags", async () => {
  const w = world({ os: "linux", files: [CONFIG], logLevel: "debug" });
  const outcome = await runService("install", w.ctx);
  assert.deepEqual(w.files.get(UNIT), {
    text: systemdUnit({ execPath: EXEC, configPath: CONFIG, logLevel: "debug", stateDir: STATE }),
    mode: 0o644,
  });
  assert.match(outcome.message, /installed and started/);
});

Deno.test("linux uninstall removes the unit and says the user and state dir are kept", async () => {
  const w = world({ os: "linux", files: [UNIT] });
  const outcome = await runService("uninstall", w.ctx);
  assert.ok(!w.files.has(UNIT));
  assert.match(outcome.message, /kept user usepod and \/var\/lib\/usepod-agent/);
});

Deno.test("macos install writes the plist, mode 0644, that launchdPlist makes", async () => {
  const w = world({ os: "darwin", files: [CONFIG] });
  await runService("install", w.ctx);
  assert.deepEqual(w.files.get(PLIST), {
    text: launchdPlist({
      execPath: EXEC,
      configPath: CONFIG,
      logDir: "/Library/Logs/usepod-agent",
    }),
    mode: 0o644,
  });
});

Deno.test("windows install explains how the log file is set", async () => {
  const w = world({ os: "windows", files: [CONFIG_WIN], answer: scQuery(false) });
  const { message } = await runService("install", w.ctx);
  assert.match(message, /USEPOD_AGENT_LOG_FILE/);
  assert.match(message, /HKLM\\SYSTEM\\CurrentControlSet\\Services\\ai\.usepod\.agent/);
});

// ---- refusals ----

for (const os of ["linux", "darwin", "windows"] as const) {
  for (const action of ["install", "uninstall", "start", "stop", "restart"] as const) {
    Deno.test(`${os} ${action} when not elevated exits 1 with the command to rerun, running nothing`, async () => {
      const w = world({ os, elevated: false, files: [CONFIG, CONFIG_WIN, UNIT, PLIST] });
      const err = await serviceError(runService(action, w.ctx));
      assert.equal(err.exitCode, 1);
      if (os === "windows") {
        assert.match(err.message, /elevated PowerShell/);
        assert.ok(err.message.includes(`& '${EXEC_WIN}' --config ${CONFIG_WIN} service ${action}`));
      } else {
        assert.ok(err.message.startsWith(`service ${action} needs root: run it with sudo`));
        assert.ok(err.message.endsWith(`sudo ${EXEC} --config ${CONFIG} service ${action}`));
      }
      assert.deepEqual(w.calls, []);
      assert.equal(w.files.size, 4);
    });
  }
}

Deno.test("status and logs need no elevation", async () => {
  for (const action of ["status", "logs"] as const) {
    const w = world({ os: "linux", elevated: false, files: [UNIT] });
    assert.equal((await runService(action, w.ctx)).exitCode, 0);
    assert.equal(w.calls.length, 1);
  }
});

Deno.test("status when not installed exits 3 on every OS", async () => {
  for (const os of ["linux", "darwin"] as const) {
    const w = world({ os });
    const err = await serviceError(runService("status", w.ctx));
    assert.equal(err.exitCode, 3);
    assert.match(err.message, /not installed/);
    assert.deepEqual(w.calls, []);
  }
  const w = world({ os: "windows", answer: scQuery(false) });
  const err = await serviceError(runService("status", w.ctx));
  assert.equal(err.exitCode, 3);
  assert.deepEqual(w.calls, [QUERY]);
});

Deno.test("start of a service not installed says so and runs nothing", async () => {
  const w = world({ os: "linux" });
  const err = await serviceError(runService("start", w.ctx));
  assert.equal(err.exitCode, 1);
  assert.match(err.message, /not installed/);
  assert.deepEqual(w.calls, []);
});

Deno.test("install refuses a config the hardened unit would hide, before running anything", async () => {
  for (
    const config of [
      "/home/op/.config/usepod-agent/agent.toml",
      "/root/agent.toml",
      "/tmp/agent.toml",
    ]
  ) {
    const w = world({ os: "linux", files: [config], configPath: config });
    const err = await serviceError(runService("install", w.ctx));
    assert.equal(err.exitCode, 1);
    assert.match(err.message, /ProtectHome=true and PrivateTmp=true/);
    assert.deepEqual(w.calls, []);
  }
});

Deno.test("install refuses a missing or relative config and the deno binary", async () => {
  const missing = world({ os: "linux" });
  assert.match(
    (await serviceError(runService("install", missing.ctx))).message,
    /config file not found/,
  );
  const relative = world({ os: "linux", configPath: "agent.toml", files: ["agent.toml"] });
  assert.match(
    (await serviceError(runService("install", relative.ctx))).message,
    /must be absolute/,
  );
  const deno = world({ os: "darwin", execPath: "/usr/local/bin/deno", files: [CONFIG] });
  assert.match((await serviceError(runService("install", deno.ctx))).message, /not deno/);
  for (const w of [missing, relative, deno]) assert.deepEqual(w.calls, []);
});

Deno.test("install without --config runs the agent with no flags and names its default config", async () => {
  const w = world({ os: "linux", configPath: undefined });
  const { message } = await runService("install", w.ctx);
  assert.ok(w.files.get(UNIT)?.text.includes(`\nExecStart=${EXEC}\n`));
  assert.match(message, /\/var\/lib\/usepod-agent\/\.config\/usepod-agent\/agent\.toml/);
});

Deno.test("a failing command stops the action with exit 1 naming it and what it said", async () => {
  const w = world({
    os: "linux",
    files: [CONFIG],
    answer: (argv) =>
      argv[1] === "enable" ? { code: 1, stderr: "Failed to enable unit" } : undefined,
  });
  const err = await serviceError(runService("install", w.ctx));
  assert.equal(err.exitCode, 1);
  assert.equal(
    err.message,
    "systemctl enable --now usepod-agent failed (exit 1): Failed to enable unit",
  );
  assert.deepEqual(w.calls.at(-1), ["systemctl", "enable", "--now", "usepod-agent"]);
});

Deno.test("isServiceAction knows the seven actions", () => {
  assert.ok(isServiceAction("logs"));
  assert.ok(!isServiceAction("reload"));
});

// ---- the real runner and files (harmless commands, a temp dir) ----

Deno.test("realRunner captures output and exit code, and reports a missing command as 127", async () => {
  const r = await realRunner.run("sh", ["-c", "echo out; echo err >&2; exit 3"]);
  assert.deepEqual(r, { code: 3, stdout: "out\n", stderr: "err\n" });
  assert.equal((await realRunner.run("usepod-no-such-command", [])).code, 127);
  assert.deepEqual(await realRunner.run("true", [], { inherit: true }), {
    code: 0,
    stdout: "",
    stderr: "",
  });
});

Deno.test("realFiles writes with a mode, also over an existing file, and removes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-files-" });
  try {
    const file = `${dir}/unit file.service`;
    await realFiles.writeFile(file, "a", 0o600);
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    await realFiles.writeFile(file, "b", 0o644);
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o644);
    assert.equal(await Deno.readTextFile(file), "b");
    assert.ok(await realFiles.exists(file));
    await realFiles.removeFile(file);
    assert.ok(!(await realFiles.exists(file)));
    await realFiles.removeFile(file); // already gone is fine
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
