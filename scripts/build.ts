// Release builds (issue 5): `compile` makes one executable per OS/arch with `deno compile` plus a
// `.sha256` in `sha256sum -c` format; `bundle` makes one self-contained JS file with `deno bundle`.
// Usage: deno run -A scripts/build.ts compile|bundle [--target <triple>]... [--out-dir dist] [--entry main.ts]

import { AGENT_VERSION } from "../src/version.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname);
/** Files the agent reads from its own source tree at run time; embedded when they exist. */
const STATIC_ASSETS = ["src/status_page.html"];

/**
 * Everything the compiled agent may do, and nothing more (no -A, no ffi). Read and write are not
 * narrowed to paths because the config, identity and state paths are chosen at run time (`--config`).
 */
export const AGENT_PERMISSIONS = [
  "--allow-net", // coordinator WebSocket, local backends, status server
  "--allow-read", // config, identity key, state
  "--allow-write", // identity key and state written by `setup`, service unit files
  "--allow-env", // HOME / XDG / APPDATA for default paths
  // Not narrowed to command names: Deno prints a line at every start for each named command that is
  // missing on the machine (launchctl on Linux, sc.exe outside Windows…).
  "--allow-run", // systemctl, journalctl, launchctl, sc.exe… for the service commands
  // Deno sys APIs by name; tests/build_test.ts fails when src/ calls one that is not listed here.
  "--allow-sys=uid", // Deno.uid(): `service` checks it runs as root
];

/**
 * Runtime flags the agent runs with (compiled in; `deno task start` and the container pass the
 * same). A 2 MiB young generation keeps the relay's short-lived strings from growing the heap:
 * peak RSS in the 64 × 500 burst went from ~101 to ~82 MiB with no measurable CPU cost (deno task
 * bench). No V8 code cache: its mapped cache file and deserialised code cost ~1.5 MiB of idle RSS,
 * start-up to `auth_response` is the same without it, and the relay runs warmed-up code either way
 * (docs/performance.md, "Idle RSS").
 */
export const AGENT_V8_FLAGS = ["--v8-flags=--max-semi-space-size=2", "--no-code-cache"];

type Os = "linux" | "darwin" | "windows";
type Arch = "x64" | "arm64";

/** An executable's platform as read from its file header. */
export interface ExecutableKind {
  os: Os;
  arch: Arch;
}

/** Release targets: `deno compile --target` triple → asset name and platform. */
export const TARGETS: Record<string, ExecutableKind & { asset: string }> = {
  "x86_64-unknown-linux-gnu": { asset: "usepod-agent-linux-x64", os: "linux", arch: "x64" },
  "aarch64-unknown-linux-gnu": { asset: "usepod-agent-linux-arm64", os: "linux", arch: "arm64" },
  "aarch64-apple-darwin": { asset: "usepod-agent-darwin-arm64", os: "darwin", arch: "arm64" },
  "x86_64-apple-darwin": { asset: "usepod-agent-darwin-x64", os: "darwin", arch: "x64" },
  "x86_64-pc-windows-msvc": { asset: "usepod-agent-windows-x64.exe", os: "windows", arch: "x64" },
};

/** A build step that failed with a message meant for the person running the build. */
export class BuildError extends Error {
  override name = "BuildError";
}

/**
 * One line in `sha256sum -c` format for `bytes` stored as `fileName`.
 *
 * @example
 * ```ts
 * await checksumLine(new TextEncoder().encode("abc"), "abc.txt");
 * // "ba7816bf…15ad  abc.txt\n"
 * ```
 */
export async function checksumLine(
  bytes: Uint8Array<ArrayBuffer>,
  fileName: string,
): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return `${digest.toHex()}  ${fileName}\n`;
}

/**
 * Reads the platform of an ELF, Mach-O or PE executable from its first bytes; undefined for
 * anything else (a script, a zip, a truncated file, another CPU).
 *
 * @example
 * ```ts
 * executableKind(await Deno.readFile(Deno.execPath())); // { os: "linux", arch: "x64" } on Linux x64
 * ```
 */
export function executableKind(head: Uint8Array): ExecutableKind | undefined {
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const u16 = (at: number) => at + 2 <= head.byteLength ? view.getUint16(at, true) : -1;
  const u32 = (at: number) => at + 4 <= head.byteLength ? view.getUint32(at, true) : -1;
  if (u32(0) === 0x464c457f && head[4] === 2 && head[5] === 1) { // "\x7fELF", 64-bit, little-endian
    const arch = { 0x3e: "x64", 0xb7: "arm64" }[u16(18)] as Arch | undefined;
    return arch && { os: "linux", arch };
  }
  if (u32(0) === 0xfeedfacf) { // 64-bit Mach-O, little-endian
    const arch = { 0x01000007: "x64", 0x0100000c: "arm64" }[u32(4)] as Arch | undefined;
    return arch && { os: "darwin", arch };
  }
  if (u16(0) === 0x5a4d) { // "MZ", then "PE\0\0" at e_lfanew
    const pe = u32(0x3c);
    if (pe < 0 || u32(pe) !== 0x00004550) return undefined;
    const arch = { 0x8664: "x64", 0xaa64: "arm64" }[u16(pe + 4)] as Arch | undefined;
    return arch && { os: "windows", arch };
  }
  return undefined;
}

async function readHead(path: string): Promise<Uint8Array> {
  using file = await Deno.open(path);
  const head = new Uint8Array(64 * 1024);
  const n = await file.read(head);
  return head.subarray(0, n ?? 0);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

function denortUrl(target: string): string {
  return `https://dl.deno.land/release/v${Deno.version.deno}/denort-${target}.zip`;
}

function describe(kind: ExecutableKind | undefined): string {
  return kind ? `a ${kind.os} ${kind.arch} executable` : "not an executable this build recognises";
}

/** Refuses a DENORT_BIN that is the full deno CLI or built for another platform than `target`. */
async function checkDenortBin(path: string, target: string): Promise<void> {
  const want = TARGETS[target]!;
  const stat = await Deno.stat(path).catch(() => undefined);
  if (!stat?.isFile) throw new BuildError(`DENORT_BIN=${path} is not a file.`);
  const kind = executableKind(await readHead(path));
  if (kind?.os !== want.os || kind.arch !== want.arch) {
    throw new BuildError(
      `DENORT_BIN=${path} is ${
        describe(kind)
      }, but ${target} needs a ${want.os} ${want.arch} denort ` +
        `(from ${denortUrl(target)}).`,
    );
  }
  const fullDeno = new BuildError(
    `DENORT_BIN=${path} is the full deno CLI, not a denort runtime: a program compiled with it ` +
      `starts a REPL instead of the agent. Point DENORT_BIN at the denort unzipped from ` +
      `${denortUrl(target)}.`,
  );
  if (await Deno.realPath(path) === await Deno.realPath(Deno.execPath())) throw fullDeno;
  // Only a runtime for this machine can be asked; denort has no TypeScript, deno --version names it.
  if (
    want.os === TARGETS[Deno.build.target]?.os && want.arch === TARGETS[Deno.build.target]?.arch
  ) {
    const out = await new Deno.Command(path, {
      args: ["--version"],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      signal: AbortSignal.timeout(10_000),
    }).output().catch(() => undefined);
    const text = new TextDecoder().decode(out?.stdout);
    if (/^deno \d+\.\d+\.\d+/m.test(text) && /^typescript /m.test(text)) throw fullDeno;
  }
}

async function runDeno(args: string[]): Promise<{ ok: boolean; output: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return { ok: out.success, output: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

function runtimeDownloadFailed(target: string, output: string, outDir: string): BuildError {
  const url = output.match(/https:\/\/dl\.deno\.land\/\S+?\.zip/)?.[0] ?? denortUrl(target);
  const cause = output.split("\n").find((line) =>
    /error sending request|dns error|connect/i.test(line)
  );
  return new BuildError(
    `cannot compile ${target}: deno compile could not download the Deno runtime (denort) from ${url}.\n` +
      `The build machine needs access to dl.deno.land, or DENORT_BIN set to a denort binary for ` +
      `${target} (deno ${Deno.version.deno}, unzipped from that URL on a machine that can reach it). ` +
      `The full \`deno\` binary is not a denort: a program compiled with it starts a REPL.\n` +
      `No file was written to ${outDir}.` + (cause ? `\ndeno compile said: ${cause.trim()}` : ""),
  );
}

/** Compiles `target` into `outDir/<asset>` and writes `<asset>.sha256`; nothing is left on failure. */
export async function compileTarget(
  target: string,
  outDir: string,
  entry = `${ROOT}main.ts`,
): Promise<string> {
  const want = TARGETS[target];
  if (!want) {
    throw new BuildError(`unknown target ${target}; known: ${Object.keys(TARGETS).join(", ")}`);
  }
  const final = `${outDir}/${want.asset}`;
  // An older build of this target must not stay next to a failed one and pass for it.
  await Deno.remove(final).catch(() => {});
  await Deno.remove(`${final}.sha256`).catch(() => {});
  const denortBin = Deno.env.get("DENORT_BIN");
  if (denortBin) await checkDenortBin(denortBin, target);

  const stage = await Deno.makeTempDir({ dir: outDir, prefix: ".build-" });
  try {
    const staged = `${stage}/${want.asset}`;
    const includes = [];
    for (const asset of STATIC_ASSETS) {
      if (await exists(`${ROOT}${asset}`)) includes.push("--include", asset);
    }
    const args = ["compile", "--target", target, "--output", staged, "--exclude-unused-npm"];
    const result = await runDeno([
      ...args,
      ...AGENT_PERMISSIONS,
      ...AGENT_V8_FLAGS,
      ...includes,
      entry,
    ]);
    if (!result.ok) {
      if (
        /Setting up base binary|error sending request for url \(https:\/\/dl\.deno\.land/.test(
          result.output,
        )
      ) {
        throw runtimeDownloadFailed(target, result.output, outDir);
      }
      throw new BuildError(`deno compile failed for ${target}:\n${result.output.trim()}`);
    }
    const kind = executableKind(await readHead(staged));
    if (kind?.os !== want.os || kind.arch !== want.arch) {
      throw new BuildError(`deno compile wrote ${describe(kind)} for ${target}; discarded it.`);
    }
    if (target === Deno.build.target) await smokeTest(staged);
    const bytes = await Deno.readFile(staged);
    await Deno.writeTextFile(`${staged}.sha256`, await checksumLine(bytes, want.asset));
    await Deno.rename(staged, final);
    await Deno.rename(`${staged}.sha256`, `${final}.sha256`);
    return final;
  } finally {
    await Deno.remove(stage, { recursive: true }).catch(() => {});
  }
}

/** Runs a binary built for this machine: `version` must succeed and name AGENT_VERSION. */
async function smokeTest(path: string): Promise<void> {
  const out = await new Deno.Command(path, {
    args: ["version"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).output().catch((error) => {
    throw new BuildError(`the compiled binary does not start (${error}); discarded it.`);
  });
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success || !text.includes(AGENT_VERSION)) {
    throw new BuildError(
      `the compiled binary does not run: \`${path} version\` exited ${out.code} and printed ` +
        `${JSON.stringify(text.slice(0, 200))}, expected ${AGENT_VERSION}; discarded it.`,
    );
  }
}

/** Bundles main.ts and its npm dependencies into `outDir/usepod-agent.js`; returns its path. */
export async function bundle(outDir: string, entry = `${ROOT}main.ts`): Promise<string> {
  const final = `${outDir}/usepod-agent.js`;
  const stage = await Deno.makeTempDir({ dir: outDir, prefix: ".build-" });
  try {
    const staged = `${stage}/usepod-agent.js`;
    const args = ["bundle", "--platform", "deno", "--packages", "bundle", "--output", staged];
    const result = await runDeno([...args, entry]);
    if (!result.ok) throw new BuildError(`deno bundle failed:\n${result.output.trim()}`);
    const code = await Deno.readTextFile(staged);
    const outside = code.match(/(?:\bfrom|\bimport\s*\(?)\s*["'](?:npm|jsr|https?):[^"']*["']/);
    if (outside) {
      throw new BuildError(
        `the bundle still imports ${outside[0]}; it would not be self-contained.`,
      );
    }
    await Deno.rename(staged, final);
    return final;
  } finally {
    await Deno.remove(stage, { recursive: true }).catch(() => {});
  }
}

interface Options {
  mode: "compile" | "bundle";
  targets: string[];
  outDir: string;
  entry: string;
}

function parseOptions(args: string[]): Options {
  const [mode, ...rest] = args;
  if (mode !== "compile" && mode !== "bundle") {
    throw new TypeError(`expected "compile" or "bundle", got ${JSON.stringify(mode ?? "")}`);
  }
  const options: Options = { mode, targets: [], outDir: `${ROOT}dist`, entry: `${ROOT}main.ts` };
  const absolute = (path: string) => path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  for (let i = 0; i < rest.length; i++) {
    const [flag, inline] = rest[i]!.split(/=(.*)/s, 2) as [string, string | undefined];
    const value = inline ?? rest[++i];
    if (value === undefined) throw new TypeError(`${flag} needs a value`);
    if (flag === "--target" && mode === "compile") options.targets.push(value);
    else if (flag === "--out-dir") options.outDir = absolute(value);
    else if (flag === "--entry") options.entry = absolute(value);
    else throw new TypeError(`unknown option ${flag}`);
  }
  if (options.targets.length === 0) options.targets = Object.keys(TARGETS);
  if (Deno.env.get("DENORT_BIN") && options.targets.length > 1) {
    throw new TypeError(
      "DENORT_BIN names one runtime: pass --target <triple> for the target it is",
    );
  }
  return options;
}

async function main(args: string[]): Promise<number> {
  let options: Options;
  try {
    options = parseOptions(args);
  } catch (error) {
    console.error(`build: ${(error as Error).message}`);
    console.error(
      "usage: build.ts compile|bundle [--target <triple>]... [--out-dir <dir>] [--entry <file>]",
    );
    return 2;
  }
  try {
    if (!await exists(options.entry)) {
      throw new BuildError(`entry point ${options.entry} does not exist`);
    }
    await Deno.mkdir(options.outDir, { recursive: true });
    // Staging directories of a build that was killed midway.
    for await (const entry of Deno.readDir(options.outDir)) {
      if (entry.name.startsWith(".build-")) {
        await Deno.remove(`${options.outDir}/${entry.name}`, { recursive: true });
      }
    }
    if (options.mode === "bundle") {
      const path = await bundle(options.outDir, options.entry);
      const size = (await Deno.stat(path)).size;
      console.log(`build: ${path} ${(size / 1024).toFixed(1)} KiB (${size} bytes)`);
      return 0;
    }
    for (const target of options.targets) {
      const path = await compileTarget(target, options.outDir, options.entry);
      console.log(`build: ${target} → ${path} (+ .sha256)`);
    }
    return 0;
  } catch (error) {
    if (!(error instanceof BuildError)) throw error;
    console.error(`build: ${error.message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
