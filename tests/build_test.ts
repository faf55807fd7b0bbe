// Release build tests (issue 5): scripts/build.ts refuses to produce anything that only looks like
// a binary, writes checksums `sha256sum -c` accepts, and bundles npm dependencies into one file.

import assert from "node:assert/strict";
import { AGENT_PERMISSIONS, checksumLine, executableKind, TARGETS } from "../scripts/build.ts";
import { AGENT_VERSION } from "../src/version.ts";

const BUILD = new URL("../scripts/build.ts", import.meta.url).pathname;
const HOST = Deno.build.target;
const ROOT = new URL("..", import.meta.url).pathname;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function build(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", BUILD, ...args],
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

async function listDir(dir: string): Promise<string[]> {
  const names = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

/** A temp dir holding an `out` dir and a trivial entry point, removed afterwards. */
async function withWorkDir(fn: (dir: string, entry: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "usepod-build-test-" });
  try {
    await Deno.mkdir(`${dir}/out`);
    await Deno.writeTextFile(`${dir}/entry.ts`, 'console.log("usepod-agent 0.0.0");\n');
    await fn(dir, `${dir}/entry.ts`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A port nothing listens on, used as a proxy so no runtime download can succeed, here or in CI. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

Deno.test("compile fails with a plain message when the Deno runtime cannot be downloaded, and leaves no file", async () => {
  await withWorkDir(async (dir, entry) => {
    // A stale build of the same target must not survive next to the failure.
    await Deno.writeTextFile(`${dir}/out/usepod-agent-darwin-x64`, "old build");
    await Deno.writeTextFile(`${dir}/out/usepod-agent-darwin-x64.sha256`, "old checksum");
    const proxy = `http://127.0.0.1:${closedPort()}`;
    const run = await build(
      ["compile", "--target", "x86_64-apple-darwin", "--out-dir", `${dir}/out`, "--entry", entry],
      // A fresh DENO_DIR so a runtime cached by an earlier build cannot make this succeed.
      { DENO_DIR: `${dir}/deno_dir`, HTTPS_PROXY: proxy, HTTP_PROXY: proxy, NO_PROXY: "" },
    );
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /could not download the Deno runtime \(denort\)/);
    assert.match(run.stderr, /dl\.deno\.land\/release\/v[\d.]+\/denort-x86_64-apple-darwin\.zip/);
    assert.match(run.stderr, /DENORT_BIN set to a denort binary for x86_64-apple-darwin/);
    assert.match(run.stderr, /The full `deno` binary is not a denort/);
    assert.deepEqual(await listDir(`${dir}/out`), []);
  });
});

Deno.test(
  "compile refuses the full deno CLI as DENORT_BIN",
  { ignore: !(HOST in TARGETS) },
  async () => {
    await withWorkDir(async (dir, entry) => {
      const run = await build(
        ["compile", "--target", HOST, "--out-dir", `${dir}/out`, "--entry", entry],
        { DENORT_BIN: Deno.execPath() },
      );
      assert.equal(run.code, 1, run.stderr);
      assert.match(run.stderr, /is the full deno CLI, not a denort runtime/);
      assert.deepEqual(await listDir(`${dir}/out`), []);
    });
  },
);

Deno.test("compile refuses a DENORT_BIN built for another platform", async () => {
  const other = HOST === "aarch64-apple-darwin" ? "x86_64-pc-windows-msvc" : "aarch64-apple-darwin";
  await withWorkDir(async (dir, entry) => {
    const run = await build(
      ["compile", "--target", other, "--out-dir", `${dir}/out`, "--entry", entry],
      { DENORT_BIN: Deno.execPath() },
    );
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, new RegExp(`but ${other} needs a \\w+ \\w+ denort`));
    assert.deepEqual(await listDir(`${dir}/out`), []);
  });
});

Deno.test("one DENORT_BIN cannot build every target", async () => {
  await withWorkDir(async (dir, entry) => {
    const run = await build(["compile", "--out-dir", `${dir}/out`, "--entry", entry], {
      DENORT_BIN: Deno.execPath(),
    });
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /DENORT_BIN names one runtime: pass --target/);
  });
});

Deno.test("the checksum line is accepted by sha256sum -c and rejects a changed file", async () => {
  await withWorkDir(async (dir) => {
    const bytes = crypto.getRandomValues(new Uint8Array(4096));
    await Deno.writeFile(`${dir}/usepod-agent-linux-x64`, bytes);
    const line = await checksumLine(bytes, "usepod-agent-linux-x64");
    assert.match(line, /^[0-9a-f]{64} {2}usepod-agent-linux-x64\n$/);
    await Deno.writeTextFile(`${dir}/usepod-agent-linux-x64.sha256`, line);
    const check = () =>
      new Deno.Command("sha256sum", {
        args: ["-c", "usepod-agent-linux-x64.sha256"],
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
      }).output();
    const good = await check();
    assert.ok(good.success, new TextDecoder().decode(good.stderr));
    assert.equal(new TextDecoder().decode(good.stdout), "usepod-agent-linux-x64: OK\n");
    bytes[0] = bytes[0]! ^ 0xff;
    await Deno.writeFile(`${dir}/usepod-agent-linux-x64`, bytes);
    assert.equal((await check()).success, false);
  });
});

Deno.test("executable headers are read for each release platform", async () => {
  const elf = new Uint8Array(64);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1]);
  elf[18] = 0xb7;
  assert.deepEqual(executableKind(elf), { os: "linux", arch: "arm64" });
  elf[18] = 0x3e;
  assert.deepEqual(executableKind(elf), { os: "linux", arch: "x64" });

  const macho = new Uint8Array(32);
  new DataView(macho.buffer).setUint32(0, 0xfeedfacf, true);
  new DataView(macho.buffer).setUint32(4, 0x0100000c, true);
  assert.deepEqual(executableKind(macho), { os: "darwin", arch: "arm64" });

  const pe = new Uint8Array(256);
  const view = new DataView(pe.buffer);
  view.setUint16(0, 0x5a4d, true);
  view.setUint32(0x3c, 0x80, true);
  view.setUint32(0x80, 0x00004550, true);
  view.setUint16(0x84, 0x8664, true);
  assert.deepEqual(executableKind(pe), { os: "windows", arch: "x64" });

  assert.equal(executableKind(new TextEncoder().encode("#!/bin/sh\necho fake\n")), undefined);
  assert.equal(executableKind(elf.subarray(0, 10)), undefined);
  const self = await Deno.readFile(Deno.execPath());
  const host = TARGETS[HOST];
  if (host) assert.deepEqual(executableKind(self), { os: host.os, arch: host.arch });
});

Deno.test("bundle inlines npm dependencies into one file that runs without the import map", async () => {
  await withWorkDir(async (dir) => {
    const entry = `${dir}/uses_hono.ts`;
    await Deno.writeTextFile(
      entry,
      'import { Hono } from "hono";\n' +
        'const app = new Hono().get("/", (c) => c.text("bundled ok"));\n' +
        'console.log(await (await app.request("/")).text());\n',
    );
    const run = await build(["bundle", "--out-dir", `${dir}/out`, "--entry", entry]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /usepod-agent\.js [\d.]+ KiB \(\d+ bytes\)/);
    assert.deepEqual(await listDir(`${dir}/out`), ["usepod-agent.js"]);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-config", "--no-lock", "--no-npm", "--no-remote", "out/usepod-agent.js"],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    assert.equal(new TextDecoder().decode(out.stdout), "bundled ok\n");
  });
});

Deno.test("the bundle of main.ts runs `version` with only the compiled binary's permissions", async () => {
  await withWorkDir(async (dir) => {
    const run = await build(["bundle", "--out-dir", `${dir}/out`]);
    assert.equal(run.code, 0, run.stderr);
    // Outside the repo, without config, lock, npm or remote imports: only what is in the file.
    const flags = ["--no-config", "--no-lock", "--no-npm", "--no-remote", ...AGENT_PERMISSIONS];
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...flags, "out/usepod-agent.js", "version"],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const expected = `usepod-agent ${AGENT_VERSION} (deno ${Deno.version.deno}, ${HOST})\n`;
    assert.equal(new TextDecoder().decode(out.stdout), expected);
  });
});

Deno.test("every Deno sys API the agent calls is granted to the compiled binary", async () => {
  const granted = AGENT_PERMISSIONS.find((flag) => flag.startsWith("--allow-sys"));
  const names = granted === "--allow-sys" ? undefined : granted?.split("=")[1]?.split(",") ?? [];
  const sysApi =
    /\bDeno\.(hostname|osRelease|osUptime|loadavg|networkInterfaces|systemMemoryInfo|uid|gid)\(/g;
  const files = [`${ROOT}main.ts`];
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory) await walk(`${dir}/${entry.name}`);
      else if (entry.name.endsWith(".ts")) files.push(`${dir}/${entry.name}`);
    }
  };
  await walk(`${ROOT}src`);
  const missing = [];
  for (const file of files) {
    const text = await Deno.readTextFile(file);
    // node:os reads the same facts through the same permission; name them explicitly instead.
    assert.ok(!/from ["']node:os["']/.test(text), `${file} imports node:os`);
    for (const [, api] of text.matchAll(sysApi)) {
      if (names && !names.includes(api!)) missing.push(`${file.slice(ROOT.length)}: Deno.${api}()`);
    }
  }
  assert.deepEqual(missing, [], "add these to --allow-sys in scripts/build.ts");
});
