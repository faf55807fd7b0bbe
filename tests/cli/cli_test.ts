// The command line as an operator meets it (issue 4): `main.ts` run as a subprocess for help,
// version, validate, enroll and the lifecycle commands' argument checks. Every error is one line
// on stderr with exit 1 (3 where documented) and never a stack trace.

import assert from "node:assert/strict";
import { COMMANDS } from "../../src/cli/main.ts";
import { absolutePath } from "../../src/cli/service.ts";
import { SYSTEMD_UNIT_PATH } from "../../src/service/service.ts";
import { AGENT_VERSION } from "../../src/version.ts";
import { agentToml, type CliResult, runCli } from "../harness/agent_process.ts";

/** Runs the CLI in a fresh directory whose HOME and XDG_CONFIG_HOME hold no agent.toml. */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "usepod-cli-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function cli(dir: string, args: string[]): Promise<CliResult> {
  return runCli(args, { cwd: dir, env: { HOME: `${dir}/home`, XDG_CONFIG_HOME: `${dir}/xdg` } });
}

/** One `error: …` line, exit `code`, nothing on stdout, no stack trace. */
function assertOneLineError(r: CliResult, code: number, re: RegExp): void {
  assert.equal(r.code, code, `exit ${r.code}: ${r.stderr}`);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /^error: [^\n]+\n$/, r.stderr);
  assert.match(r.stderr, re);
  assert.doesNotMatch(r.stderr, /^\s+at /m);
}

function validToml(dir: string): string {
  return agentToml({
    coordinatorUrl: "wss://api.usepod.ai/provider/connect",
    keyPath: `${dir}/identity.key`,
    backends: '[[backends]]\nkind = "vllm"\nurl = "http://localhost:8000"\n',
  });
}

Deno.test("version prints the version, the Deno version and the target", async () => {
  const r = await runCli(["version"]);
  assert.equal(r.code, 0);
  assert.equal(
    r.stdout,
    `usepod-agent ${AGENT_VERSION} (deno ${Deno.version.deno}, ${Deno.build.target})\n`,
  );
});

Deno.test("--help lists every command with its summary", async () => {
  const r = await runCli(["--help"]);
  assert.equal(r.code, 0);
  for (const [name, spec] of Object.entries(COMMANDS)) {
    assert.match(
      r.stdout,
      new RegExp(`^ {2}${name} +${spec.summary.replace(/[|()[\]]/g, "\\$&")}$`, "m"),
    );
  }
  for (const name of ["setup", "reload", "service", "upgrade"]) assert.ok(name in COMMANDS);
});

Deno.test("help for a lifecycle command shows its usage and flags", async () => {
  const setup = await runCli(["help", "setup"]);
  assert.equal(setup.code, 0);
  assert.match(setup.stdout, /^usage: usepod-agent setup \[--coordinator URL\] \[--force\]/);
  for (const flag of ["--coordinator VALUE", "--force", "--allow-no-backend"]) {
    assert.ok(setup.stdout.includes(flag), flag);
  }
  const service = await runCli(["service", "--help"]);
  assert.match(service.stdout, /install\|uninstall\|start\|stop\|restart\|status\|logs/);
  assert.match(service.stdout, /-f, --follow/);
  const upgrade = await runCli(["upgrade", "-h"]);
  assert.match(upgrade.stdout, /--version VALUE/);
});

Deno.test("an unknown command exits 1 with one line", async () => {
  assertOneLineError(await runCli(["frobnicate"]), 1, /unknown command "frobnicate"/);
});

Deno.test("an unknown flag exits 1 with one line", async () => {
  assertOneLineError(await runCli(["validate", "--bogus"]), 1, /Unknown option '--bogus'/);
  assertOneLineError(await runCli(["setup", "--forse"]), 1, /Unknown option '--forse'/);
});

Deno.test("validate prints ok for a valid file", async () => {
  await inTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/agent.toml`, validToml(dir));
    const r = await cli(dir, ["validate", "--config", `${dir}/agent.toml`]);
    assert.equal(r.code, 0, r.stderr);
    const [first, ...rest] = r.stdout.trimEnd().split("\n");
    assert.equal(
      first,
      `ok: ${dir}/agent.toml: coordinator wss://api.usepod.ai/provider/connect, 1 backend(s) (vllm), max_concurrent 8`,
    );
    assert.match(rest.join("\n"), /^ {2}limits\.max_concurrent +8 +\(file\)$/m);
    assert.match(rest.join("\n"), /^ {2}alerts\.error_rate_threshold +0\.5 +\(default\)$/m);
  });
});

Deno.test("validate finds ./agent.toml without --config", async () => {
  await inTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/agent.toml`, validToml(dir));
    const r = await cli(dir, ["validate"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ok: \.\/agent\.toml: /);
  });
});

Deno.test("validate errors exit 1 with one line naming the problem", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/agent.toml`;
    assertOneLineError(
      await cli(dir, ["validate"]),
      1,
      /no agent\.toml found; tried .*usepod-agent setup/,
    );
    assertOneLineError(
      await cli(dir, ["validate", "--config", `${dir}/nope.toml`]),
      1,
      /config file not found: .*nope\.toml/,
    );
    await Deno.writeTextFile(
      path,
      validToml(dir).replace("max_concurrent = 8", "max_concurrent = 999"),
    );
    assertOneLineError(
      await cli(dir, ["validate", "--config", path]),
      1,
      /^error: limits\.max_concurrent: must be between 1 and 256, got 999\n$/,
    );
    await Deno.writeTextFile(path, "[coordinator\nurl = 1\n");
    assertOneLineError(
      await cli(dir, ["validate", "--config", path]),
      1,
      /^error: agent\.toml line 1: /,
    );
    await Deno.writeTextFile(path, validToml(dir).replace("wss://", "ws://"));
    assertOneLineError(
      await cli(dir, ["validate", "--config", path]),
      1,
      /coordinator\.url: ws:\/\/ is unencrypted; use wss:\/\/ or pass --allow-insecure/,
    );
  });
});

Deno.test("enroll prints the public key, the provider_id and the enrollment code", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/agent.toml`;
    await Deno.writeTextFile(
      path,
      validToml(dir).replace(
        'url = "wss://api.usepod.ai/provider/connect"',
        'url = "wss://api.usepod.ai/provider/connect"\nenrollment_code = "POD-ENROLL-TEST"',
      ),
    );
    const r = await cli(dir, ["enroll", "--config", path]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split("\n");
    assert.match(lines[0]!, /^public key: {6}[A-Za-z0-9+/]{43}=$/);
    assert.equal(lines[1], "provider_id:     <not yet enrolled>");
    assert.equal(lines[2], "enrollment code: POD-ENROLL-TEST (sent at the next connect)");
    assert.equal(lines[3], `identity file:   ${dir}/identity.key`);
    // The identity now exists and the same key is shown again.
    const again = await cli(dir, ["enroll", "--config", path]);
    assert.equal(again.stdout.split("\n")[0], lines[0]);
  });
});

Deno.test("service needs a known action, and -f only with logs", async () => {
  assertOneLineError(
    await runCli(["service"]),
    1,
    /missing action: usepod-agent service install\|/,
  );
  assertOneLineError(await runCli(["service", "reboot"]), 1, /unknown action "reboot"/);
  assertOneLineError(
    await runCli(["service", "status", "-f"]),
    1,
    /-f\/--follow goes with service logs/,
  );
  assertOneLineError(await runCli(["service", "logs", "extra"]), 1, /unexpected argument "extra"/);
});

Deno.test("service install refuses to run from deno or without root, before touching anything", async () => {
  const r = await runCli(["service", "install"]);
  assertOneLineError(r, 1, /needs root: run it with sudo|needs the usepod-agent binary, not deno/);
});

Deno.test({
  name: "service status exits 3 when the service is not installed",
  ignore: Deno.build.os !== "linux" || (() => {
    try {
      Deno.statSync(SYSTEMD_UNIT_PATH);
      return true;
    } catch {
      return false;
    }
  })(),
  async fn() {
    assertOneLineError(await runCli(["service", "status"]), 3, /service is not installed/);
  },
});

Deno.test("the service gets the --config around it as an absolute path", () => {
  assert.equal(
    absolutePath("agent.toml", "/etc/usepod-agent", "linux"),
    "/etc/usepod-agent/agent.toml",
  );
  assert.equal(absolutePath("./conf/a.toml", "/srv/", "linux"), "/srv/conf/a.toml");
  assert.equal(absolutePath("/abs/a.toml", "/srv", "linux"), "/abs/a.toml");
  assert.equal(absolutePath("a.toml", "C:\\ops", "windows"), "C:\\ops\\a.toml");
  assert.equal(absolutePath("D:\\x\\a.toml", "C:\\ops", "windows"), "D:\\x\\a.toml");
});

Deno.test("reload without a config exits 1 with one line", async () => {
  await inTempDir(async (dir) => {
    assertOneLineError(await cli(dir, ["reload"]), 1, /no agent\.toml found/);
  });
});

Deno.test("setup with a bad --coordinator exits 1 with one line, before anything is written", async () => {
  await inTempDir(async (dir) => {
    assertOneLineError(
      await cli(dir, ["setup", "--coordinator", "http://127.0.0.1:9"]),
      1,
      /^error: --coordinator: http:\/\/127\.0\.0\.1:9 is plain http: use https:\/\/ or pass --allow-insecure\n$/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});
