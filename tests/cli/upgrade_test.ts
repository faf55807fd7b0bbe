// `usepod-agent upgrade` (issue 4) as a subprocess against a local HTTP server: a fake installer
// that records the environment it was run with, failures on the way, and the real install.sh
// installing a release from the same server.

import assert from "node:assert/strict";
import { checksumLine } from "../../scripts/build.ts";
import { installPrefix, releaseTag } from "../../src/cli/upgrade.ts";
import { type CliResult, runCli } from "../harness/agent_process.ts";
import { type ServedFile, startReleaseServer } from "../harness/release_server.ts";

const FAKE_INSTALLER = `#!/bin/sh
{
  echo "USEPOD_VERSION=\${USEPOD_VERSION-<unset>}"
  echo "USEPOD_PREFIX=\${USEPOD_PREFIX-<unset>}"
  echo "ARGS=$*"
} > "$UPGRADE_RECORD"
echo "fake installer ran"
exit \${FAKE_EXIT:-0}
`;

interface Upgrade extends CliResult {
  /** What the fake installer recorded, or undefined when it did not run. */
  record: Record<string, string> | undefined;
  requests: string[];
}

/** Runs `upgrade ARGS` with the installer at USEPOD_INSTALLER_URL = `<server><path>`. */
async function upgrade(
  args: string[],
  opts: { files?: Map<string, ServedFile>; path?: string; env?: Record<string, string> } = {},
): Promise<Upgrade> {
  const server = startReleaseServer(
    opts.files ?? new Map([["/install.sh", { body: FAKE_INSTALLER }]]),
  );
  const dir = await Deno.makeTempDir({ prefix: "usepod-upgrade-test-" });
  try {
    const recordPath = `${dir}/record`;
    const r = await runCli(["upgrade", ...args], {
      env: {
        USEPOD_INSTALLER_URL: `${server.url}${opts.path ?? "/install.sh"}`,
        UPGRADE_RECORD: recordPath,
        ...opts.env,
      },
    });
    let record: Record<string, string> | undefined;
    try {
      const text = await Deno.readTextFile(recordPath);
      record = Object.fromEntries(
        text.trim().split("\n").map((
          l,
        ) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
      );
    } catch {
      record = undefined;
    }
    return { ...r, record, requests: server.requests };
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("upgrade --version runs the fetched installer with sh and USEPOD_VERSION", async () => {
  const r = await upgrade(["--version", "v0.4.1", "--allow-insecure"]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.record, {
    USEPOD_VERSION: "v0.4.1",
    USEPOD_PREFIX: "<unset>", // deno running main.ts is not an installed binary
    ARGS: "",
  });
  assert.deepEqual(r.requests, ["/install.sh"]);
  assert.match(r.stdout, /fake installer ran/);
  assert.match(r.stdout, /upgrade done/);
  assert.match(r.stdout, /install prefix: the installer's default/);
});

Deno.test("upgrade without --version leaves the choice to the installer (the latest release)", async () => {
  const r = await upgrade(["--allow-insecure"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.record?.USEPOD_VERSION, "<unset>");
  assert.match(r.stdout, /running it for the latest release/);
});

Deno.test("upgrade adds the v to a bare version and passes an operator's USEPOD_PREFIX through", async () => {
  const r = await upgrade(["--version", "0.4.2", "--allow-insecure"], {
    env: { USEPOD_PREFIX: "/opt/usepod" },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.record?.USEPOD_VERSION, "v0.4.2");
  assert.equal(r.record?.USEPOD_PREFIX, "/opt/usepod");
});

Deno.test("a failing installer makes upgrade exit 1 with one line", async () => {
  const r = await upgrade(["--allow-insecure"], { env: { FAKE_EXIT: "3" } });
  assert.equal(r.code, 1);
  assert.equal(r.stderr, "error: the installer failed (exit 3); see its message above\n");
});

Deno.test("an installer URL that answers 404 exits 1 and runs nothing", async () => {
  const r = await upgrade(["--allow-insecure"], { path: "/missing.sh" });
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^error: cannot fetch the installer from http:\/\/127\.0\.0\.1:\d+\/missing\.sh: HTTP 404\n$/,
  );
  assert.equal(r.record, undefined);
});

Deno.test("an unreachable installer URL exits 1 with one line", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const r = await runCli(["upgrade", "--allow-insecure"], {
    env: { USEPOD_INSTALLER_URL: `http://127.0.0.1:${port}/install.sh` },
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: cannot fetch the installer from .*: .+\n$/);
  assert.equal(r.stderr.split("\n").length, 2);
});

Deno.test("something that is not a shell script is not run", async () => {
  const r = await upgrade(["--allow-insecure"], {
    files: new Map([["/install.sh", { body: "<html>maintenance</html>" }]]),
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /does not hold a shell script installer; nothing was run/);
});

Deno.test("a plain-http installer URL needs --allow-insecure and is not even fetched without it", async () => {
  const r = await upgrade([]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: USEPOD_INSTALLER_URL: .* is plain http .*--allow-insecure\n$/);
  assert.deepEqual(r.requests, []);
});

Deno.test("a --version that is not a tag is a usage error", async () => {
  const r = await upgrade(["--version", "1.0; rm -rf /", "--allow-insecure"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: --version: not a release tag/);
  assert.deepEqual(r.requests, []);
});

Deno.test("installPrefix makes install.sh replace the running binary, and only a usepod-agent in bin/", () => {
  assert.equal(installPrefix("/usr/local/bin/usepod-agent"), "/usr/local");
  assert.equal(installPrefix("/home/op/.local/bin/usepod-agent"), "/home/op/.local");
  assert.equal(installPrefix("/bin/usepod-agent"), "/");
  assert.equal(installPrefix("/usr/bin/deno"), undefined);
  assert.equal(installPrefix("/opt/usepod/usepod-agent"), undefined);
  assert.equal(releaseTag("0.4.1"), "v0.4.1");
  assert.equal(releaseTag("v0.4.1-rc.1"), "v0.4.1-rc.1");
});

const ASSET = Deno.build.os === "linux" || Deno.build.os === "darwin"
  ? `usepod-agent-${Deno.build.os}-${Deno.build.arch === "aarch64" ? "arm64" : "x64"}`
  : undefined;

Deno.test({
  name: "upgrade with the real install.sh installs the requested release into the prefix",
  ignore: ASSET === undefined,
  async fn() {
    const binary = "#!/bin/sh\necho 'usepod-agent 0.4.1 (fake release build)'\n";
    const files = new Map<string, ServedFile>([
      ["/install.sh", { body: await Deno.readFile(new URL("../../install.sh", import.meta.url)) }],
      [`/releases/v0.4.1/${ASSET}`, { body: binary }],
      [
        `/releases/v0.4.1/${ASSET}.sha256`,
        { body: await checksumLine(new TextEncoder().encode(binary), ASSET!) },
      ],
    ]);
    const prefix = await Deno.makeTempDir({ prefix: "usepod-upgrade-prefix-" });
    const server = startReleaseServer(files);
    try {
      const r = await runCli(["upgrade", "--version", "v0.4.1", "--allow-insecure"], {
        env: {
          USEPOD_INSTALLER_URL: `${server.url}/install.sh`,
          USEPOD_REPO: `${server.url}/releases`,
          USEPOD_PREFIX: prefix,
        },
      });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /checksum verified/);
      const installed = await new Deno.Command(`${prefix}/bin/usepod-agent`).output();
      assert.equal(
        new TextDecoder().decode(installed.stdout),
        "usepod-agent 0.4.1 (fake release build)\n",
      );
      assert.deepEqual(server.requests, [
        "/install.sh",
        `/releases/v0.4.1/${ASSET}`,
        `/releases/v0.4.1/${ASSET}.sha256`,
      ]);
    } finally {
      await server.close();
      await Deno.remove(prefix, { recursive: true });
    }
  },
});
