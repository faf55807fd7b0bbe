// Installer tests (issue 5): the real install.sh is piped into `sh`, as `curl | sh` does, against a
// fake release server on 127.0.0.1, with a PATH holding only the tools a case allows and a fake uname.

import assert from "node:assert/strict";
import { checksumLine } from "../scripts/build.ts";
import { AGENT_VERSION } from "../src/version.ts";
import { type ServedFile, startReleaseServer } from "./harness/release_server.ts";

const SCRIPT_PATH = new URL("../install.sh", import.meta.url);
const SCRIPT = await Deno.readFile(SCRIPT_PATH);
const ASSET = "usepod-agent-linux-x64";
const LATEST = "v0.4.1";
const NOBODY = 65534;

/** Where `name` lives on this machine's PATH (plus the sbin dirs), or undefined. */
function which(name: string): string | undefined {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/sbin", "/sbin", "/usr/bin"];
  for (const dir of dirs) {
    try {
      const info = Deno.statSync(`${dir}/${name}`);
      if (info.isFile && (info.mode ?? 0) & 0o111) return `${dir}/${name}`;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

const SH = which("sh")!;
const SHELLCHECK = which("shellcheck");
const CORE_TOOLS = ["mktemp", "rm", "mkdir", "cp", "chmod", "mv", "head", "tr", "dirname", "cat"];

function fakeBinary(version: string): string {
  return `#!/bin/sh\necho "usepod-agent ${version} (fake release build)"\n`;
}

/** Release files as the release host lays them out: `/releases/<tag>/<asset>` and `.sha256`. */
async function releaseFiles(): Promise<Map<string, ServedFile>> {
  const files = new Map<string, ServedFile>();
  const add = async (tag: string, asset: string, body: string, sumOf = body) => {
    files.set(`/releases/${tag}/${asset}`, { body });
    const line = await checksumLine(new TextEncoder().encode(sumOf), asset);
    files.set(`/releases/${tag}/${asset}.sha256`, { body: line });
  };
  files.set("/agent-latest", { body: `${LATEST}\n` });
  const platforms = ["linux-x64", "linux-arm64", "darwin-arm64", "darwin-x64"];
  for (const platform of platforms) {
    await add(LATEST, `usepod-agent-${platform}`, fakeBinary("0.4.1"));
  }
  await add("v0.4.0", ASSET, fakeBinary("0.4.0"));
  await add(`v${AGENT_VERSION}`, ASSET, fakeBinary(AGENT_VERSION));
  await add("v0.3.9", ASSET, fakeBinary("0.3.9"), "not the file that was published");
  files.set(`/releases/v0.4.2/${ASSET}`, { body: fakeBinary("0.4.2") }); // no .sha256 published
  return files;
}

interface RunOptions {
  env?: Record<string, string>;
  /** What the fake `uname -s` and `uname -m` print. */
  platform?: [string, string];
  fetcher?: "curl" | "wget" | "none";
  hasher?: "sha256sum" | "shasum";
  /** A stand-in for sudo: "ok" lets the caller write the bin dir, "fails" refuses. */
  sudo?: "none" | "ok" | "fails";
  /** Run as an unprivileged user (nobody when the tests run as root) who cannot write the bin dir. */
  lockedBin?: boolean;
  /** Called once the script is running, e.g. to signal it. */
  during?: (child: Deno.ChildProcess) => Promise<void>;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A throwaway prefix, TMPDIR, HOME and tool dir for one run; the TMPDIR must end up empty. */
class Sandbox {
  constructor(readonly root: string, readonly server: { url: string }) {}
  get prefix(): string {
    return `${this.root}/prefix`;
  }
  get bin(): string {
    return `${this.prefix}/bin`;
  }
  get target(): string {
    return `${this.bin}/usepod-agent`;
  }
  get tmp(): string {
    return `${this.root}/tmp`;
  }
  get sudoLog(): string {
    return `${this.root}/home/sudo.log`;
  }

  async placeExisting(content: string): Promise<void> {
    await Deno.mkdir(this.bin, { recursive: true });
    await Deno.writeTextFile(this.target, content, { mode: 0o755 });
  }

  async run(options: RunOptions = {}): Promise<RunResult> {
    const tools = await Deno.makeTempDir({ dir: this.root, prefix: "tools-" });
    await Deno.chmod(tools, 0o755);
    const wanted = [...CORE_TOOLS, options.hasher ?? "sha256sum"];
    if ((options.fetcher ?? "curl") !== "none") wanted.push(options.fetcher ?? "curl");
    for (const name of wanted) {
      const path = which(name);
      assert.ok(path, `this test needs ${name} on the machine`);
      await Deno.symlink(path, `${tools}/${name}`);
    }
    const [os, machine] = options.platform ?? ["Linux", "x86_64"];
    const uname = `case "$1" in -s) echo ${os} ;; -m) echo ${machine} ;; *) echo ${os} ;; esac\n`;
    await Deno.writeTextFile(`${tools}/uname`, `#!/bin/sh\n${uname}`, { mode: 0o755 });
    const sudo = options.sudo ?? "none";
    if (sudo !== "none") {
      const grant = sudo === "ok"
        ? `chmod u+w "${this.bin}" 2>/dev/null\nexec "$@"\n`
        : `echo "sudo: a password is required" >&2\nexit 1\n`;
      const body = `#!/bin/sh\necho "$*" >> "${this.sudoLog}"\n${grant}`;
      await Deno.writeTextFile(`${tools}/sudo`, body, { mode: 0o755 });
    }

    let user: { uid: number; gid: number } | undefined;
    if (options.lockedBin) {
      await Deno.mkdir(this.bin, { recursive: true });
      if (Deno.uid() === 0) {
        user = { uid: NOBODY, gid: NOBODY };
        for (const dir of [this.tmp, `${this.root}/home`, this.prefix, this.bin]) {
          await Deno.chown(dir, NOBODY, NOBODY);
        }
        await Deno.chown(this.target, NOBODY, NOBODY).catch(() => {}); // when one was placed
      }
      await Deno.chmod(this.bin, 0o555);
    }

    const child = new Deno.Command(SH, {
      clearEnv: true,
      env: {
        PATH: tools,
        HOME: `${this.root}/home`,
        TMPDIR: this.tmp,
        USEPOD_BASE_URL: this.server.url,
        USEPOD_REPO: `${this.server.url}/releases`,
        USEPOD_PREFIX: this.prefix,
        ...options.env,
      },
      cwd: this.root,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      ...user,
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(SCRIPT);
    await writer.close();
    await options.during?.(child);
    const out = await child.output();
    const decoder = new TextDecoder();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  }
}

/** Runs `fn` with a fresh sandbox and release server; afterwards checks TMPDIR was left empty. */
async function withSandbox(
  fn: (box: Sandbox, server: ReturnType<typeof startReleaseServer>) => Promise<void>,
  files?: Map<string, ServedFile>,
): Promise<void> {
  const server = startReleaseServer(files ?? await releaseFiles());
  const root = await Deno.makeTempDir({ prefix: "usepod-install-test-" });
  try {
    await Deno.chmod(root, 0o755);
    await Deno.mkdir(`${root}/tmp`);
    await Deno.mkdir(`${root}/home`);
    await Deno.mkdir(`${root}/prefix`);
    await fn(new Sandbox(root, server), server);
    const left = [];
    for await (const entry of Deno.readDir(`${root}/tmp`)) left.push(entry.name);
    assert.deepEqual(left, [], "the installer left files in TMPDIR");
  } finally {
    await Deno.chmod(`${root}/prefix/bin`, 0o755).catch(() => {});
    await Deno.remove(root, { recursive: true });
    await server.close();
  }
}

async function runVersion(path: string): Promise<string> {
  const out = await new Deno.Command(path, { args: ["version"], stdout: "piped" }).output();
  assert.ok(out.success, `${path} version failed`);
  return new TextDecoder().decode(out.stdout).trim();
}

async function binEntries(box: Sandbox): Promise<string[]> {
  const names = [];
  for await (const entry of Deno.readDir(box.bin)) names.push(entry.name);
  return names.sort();
}

function describeRun(result: RunResult): string {
  return `exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
}

Deno.test("installs the release named by agent-latest when no version is pinned", async () => {
  await withSandbox(async (box, server) => {
    const result = await box.run();
    assert.equal(result.code, 0, describeRun(result));
    const info = await Deno.stat(box.target);
    assert.equal((info.mode ?? 0) & 0o777, 0o755);
    assert.equal(await runVersion(box.target), "usepod-agent 0.4.1 (fake release build)");
    assert.deepEqual(await binEntries(box), ["usepod-agent"]);
    assert.deepEqual(server.requests, [
      "/agent-latest",
      `/releases/${LATEST}/${ASSET}`,
      `/releases/${LATEST}/${ASSET}.sha256`,
    ]);
    assert.match(result.stdout, /checksum verified/);
    assert.match(result.stdout, /usepod-agent setup/);
    assert.match(result.stdout, /--config /);
    assert.match(result.stdout, /http:\/\/127\.0\.0\.1:9090\/status/);
  });
});

Deno.test("installs a pinned USEPOD_VERSION over an existing binary without reading agent-latest", async () => {
  await withSandbox(async (box, server) => {
    await box.placeExisting(fakeBinary("0.3.0"));
    const result = await box.run({ env: { USEPOD_VERSION: "0.4.0" } });
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(await runVersion(box.target), "usepod-agent 0.4.0 (fake release build)");
    assert.deepEqual(await binEntries(box), ["usepod-agent"]);
    assert.ok(!server.requests.includes("/agent-latest"));
  });
});

Deno.test("falls back to the built-in version when agent-latest cannot be read", async () => {
  const files = await releaseFiles();
  files.delete("/agent-latest");
  await withSandbox(async (box) => {
    const result = await box.run();
    assert.equal(result.code, 0, describeRun(result));
    assert.match(result.stderr, /could not read .*agent-latest; installing built-in/);
    assert.equal(
      await runVersion(box.target),
      `usepod-agent ${AGENT_VERSION} (fake release build)`,
    );
  }, files);
});

Deno.test("the installer's built-in version is v + AGENT_VERSION", () => {
  const text = new TextDecoder().decode(SCRIPT);
  assert.equal(text.match(/^FALLBACK_VERSION="([^"]*)"$/m)?.[1], `v${AGENT_VERSION}`);
});

Deno.test("picks the asset for each supported OS and CPU", async () => {
  const cases: [string, string, string][] = [
    ["Linux", "x86_64", "usepod-agent-linux-x64"],
    ["Linux", "amd64", "usepod-agent-linux-x64"],
    ["Linux", "aarch64", "usepod-agent-linux-arm64"],
    ["Darwin", "arm64", "usepod-agent-darwin-arm64"],
    ["Darwin", "x86_64", "usepod-agent-darwin-x64"],
  ];
  for (const [os, machine, asset] of cases) {
    await withSandbox(async (box, server) => {
      const result = await box.run({ platform: [os, machine] });
      assert.equal(result.code, 0, `${os} ${machine}: ${describeRun(result)}`);
      assert.ok(server.requests.includes(`/releases/${LATEST}/${asset}`), `${os} ${machine}`);
    });
  }
});

Deno.test("a checksum mismatch installs nothing and keeps the existing binary", async () => {
  await withSandbox(async (box) => {
    const fresh = await box.run({ env: { USEPOD_VERSION: "v0.3.9" } });
    assert.notEqual(fresh.code, 0, describeRun(fresh));
    assert.match(fresh.stderr, /checksum mismatch for usepod-agent-linux-x64 v0\.3\.9/);
    await assert.rejects(Deno.stat(box.bin), Deno.errors.NotFound);

    await box.placeExisting(fakeBinary("0.3.0"));
    const over = await box.run({ env: { USEPOD_VERSION: "v0.3.9" } });
    assert.notEqual(over.code, 0, describeRun(over));
    assert.match(over.stderr, /checksum mismatch/);
    assert.equal(await Deno.readTextFile(box.target), fakeBinary("0.3.0"));
    assert.deepEqual(await binEntries(box), ["usepod-agent"]);
  });
});

Deno.test("a missing asset or checksum file fails with its URL and keeps the existing binary", async () => {
  await withSandbox(async (box, server) => {
    await box.placeExisting(fakeBinary("0.3.0"));
    const missing = await box.run({ env: { USEPOD_VERSION: "v9.9.9" } });
    assert.notEqual(missing.code, 0, describeRun(missing));
    const url = `${server.url}/releases/v9.9.9/${ASSET}`;
    assert.ok(missing.stderr.includes(`download failed: ${url} (`), describeRun(missing));

    const noSum = await box.run({ env: { USEPOD_VERSION: "v0.4.2" } });
    assert.notEqual(noSum.code, 0, describeRun(noSum));
    assert.ok(
      noSum.stderr.includes(`download failed: ${server.url}/releases/v0.4.2/${ASSET}.sha256`),
    );
    assert.equal(await Deno.readTextFile(box.target), fakeBinary("0.3.0"));
    assert.deepEqual(await binEntries(box), ["usepod-agent"]);
  });
});

Deno.test("an unsupported OS or CPU gets a clear error before any download", async () => {
  await withSandbox(async (box, server) => {
    const bsd = await box.run({ platform: ["FreeBSD", "amd64"] });
    assert.notEqual(bsd.code, 0);
    assert.match(bsd.stderr, /unsupported operating system: FreeBSD/);
    const riscv = await box.run({ platform: ["Linux", "riscv64"] });
    assert.notEqual(riscv.code, 0);
    assert.match(riscv.stderr, /unsupported CPU architecture: riscv64 on Linux/);
    assert.deepEqual(server.requests, []);
    await assert.rejects(Deno.stat(box.bin), Deno.errors.NotFound);
  });
});

Deno.test("downloads with wget and verifies with shasum when curl and sha256sum are absent", {
  ignore: !which("wget") || !which("shasum"),
}, async () => {
  await withSandbox(async (box) => {
    const result = await box.run({ fetcher: "wget", hasher: "shasum" });
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(await runVersion(box.target), "usepod-agent 0.4.1 (fake release build)");
    const bad = await box.run({
      fetcher: "wget",
      hasher: "shasum",
      env: { USEPOD_VERSION: "v0.3.9" },
    });
    assert.match(bad.stderr, /checksum mismatch/);
  });
});

Deno.test("without curl or wget the installer says so", async () => {
  await withSandbox(async (box) => {
    const result = await box.run({ fetcher: "none" });
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /neither curl nor wget is installed/);
  });
});

// The next three run as nobody when the tests run as root (root writes anywhere), so the
// installer's own writability check really sees a bin dir it cannot write.
Deno.test("an unwritable bin dir without sudo fails clearly and keeps the existing binary", async () => {
  await withSandbox(async (box) => {
    await box.placeExisting(fakeBinary("0.3.0"));
    const result = await box.run({ lockedBin: true });
    assert.notEqual(result.code, 0, describeRun(result));
    assert.match(result.stderr, /bin is not writable and sudo is not available/);
    assert.match(result.stderr, /USEPOD_PREFIX/);
    assert.equal(await Deno.readTextFile(box.target), fakeBinary("0.3.0"));
    assert.deepEqual(await binEntries(box), ["usepod-agent"]);
  });
});

Deno.test("an unwritable bin dir is written through sudo, and only the writes go through it", async () => {
  await withSandbox(async (box) => {
    const result = await box.run({ lockedBin: true, sudo: "ok" });
    assert.equal(result.code, 0, describeRun(result));
    assert.match(result.stdout, /bin is not writable; using sudo/);
    assert.equal(await runVersion(box.target), "usepod-agent 0.4.1 (fake release build)");
    const log = (await Deno.readTextFile(box.sudoLog)).trim().split("\n");
    assert.equal(log.length, 4, log.join("\n"));
    assert.equal(log[0], `mkdir -p ${box.bin}`);
    assert.match(log[1]!, new RegExp(`^cp \\S+/${ASSET} ${box.bin}/\\.usepod-agent\\.tmp\\.\\d+$`));
    assert.match(log[2]!, /^chmod 755 \S+\/\.usepod-agent\.tmp\.\d+$/);
    assert.match(log[3]!, new RegExp(`^mv -f \\S+ ${box.target}$`));
    assert.deepEqual(await binEntries(box), ["usepod-agent"]);
  });
});

Deno.test("a sudo that refuses leaves the existing binary untouched", async () => {
  await withSandbox(async (box) => {
    await box.placeExisting(fakeBinary("0.3.0"));
    const result = await box.run({ lockedBin: true, sudo: "fails" });
    assert.notEqual(result.code, 0, describeRun(result));
    assert.match(result.stderr, /sudo: a password is required/);
    assert.match(result.stderr, /could not create/);
    assert.equal(await Deno.readTextFile(box.target), fakeBinary("0.3.0"));
  });
});

Deno.test("a prefix that is a file is refused before anything is written", async () => {
  await withSandbox(async (box) => {
    const file = `${box.root}/not-a-dir`;
    await Deno.writeTextFile(file, "keep me");
    const result = await box.run({ env: { USEPOD_PREFIX: file } });
    assert.notEqual(result.code, 0, describeRun(result));
    assert.ok(result.stderr.includes(`${file} exists and is not a directory`), result.stderr);
    assert.equal(await Deno.readTextFile(file), "keep me");
  });
});

Deno.test("a TERM during the download still removes the temporary files", async () => {
  const files = await releaseFiles();
  const path = `/releases/v0.4.0/${ASSET}`;
  const { promise: gate, resolve: open } = Promise.withResolvers<void>();
  files.set(path, { body: fakeBinary("0.4.0"), hold: gate });
  await withSandbox(async (box, server) => {
    const result = await box.run({
      env: { USEPOD_VERSION: "v0.4.0" },
      async during(child) {
        await server.requested(path);
        child.kill("SIGTERM");
        open();
      },
    });
    assert.equal(result.code, 143, describeRun(result));
    await assert.rejects(Deno.stat(box.bin), Deno.errors.NotFound);
  }, files);
});

Deno.test("install.sh passes shellcheck", { ignore: SHELLCHECK === undefined }, async () => {
  const out = await new Deno.Command(SHELLCHECK!, {
    args: ["--shell=sh", SCRIPT_PATH.pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.ok(out.success, text);
});

if (SHELLCHECK === undefined) {
  console.warn(
    "install_test: shellcheck not found; the shellcheck test is skipped (apt-get install shellcheck)",
  );
}
