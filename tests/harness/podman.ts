// podman for the deploy tests (issue 16): whether it is here, the settings it needs on these
// machines (../shared/CONTAINERS.md: no default ulimits, runc, cgroupfs), and local base images
// made without a registry: a distroless-style runtime (the glibc libraries `ldd` lists for this
// deno, /etc/passwd with user 65532) and the same plus the deno binary at /usr/bin/deno.

/** What a podman command printed and exited with. */
export interface PodmanResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A podman with this machine's settings; `close()` removes the settings file. */
export interface Podman {
  run(args: string[], opts?: { timeoutMs?: number }): Promise<PodmanResult>;
  /** Like run, throwing with podman's stderr unless it exits 0. */
  ok(args: string[], opts?: { timeoutMs?: number }): Promise<string>;
  close(): Promise<void>;
}

/** Whether a `podman` binary answers `podman --version`. */
export async function podmanInstalled(): Promise<boolean> {
  try {
    return (await new Deno.Command("podman", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output()).success;
  } catch {
    return false;
  }
}

/**
 * A podman runner with the containers.conf these machines need.
 *
 * @example
 * ```ts
 * const podman = await startPodman();
 * try { await podman.ok(["image", "ls"]); } finally { await podman.close(); }
 * ```
 */
export async function startPodman(): Promise<Podman> {
  const conf = await Deno.makeTempFile({ prefix: "usepod-containers-", suffix: ".conf" });
  await Deno.writeTextFile(
    conf,
    '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n',
  );
  const run = async (args: string[], opts: { timeoutMs?: number } = {}) => {
    const out = await new Deno.Command("podman", {
      args,
      env: { CONTAINERS_CONF: conf },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(opts.timeoutMs ?? 120_000),
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  };
  return {
    run,
    async ok(args, opts) {
      const r = await run(args, opts);
      if (r.code !== 0) {
        throw new Error(`podman ${args.join(" ")} exited ${r.code}:\n${r.stderr.slice(-2000)}`);
      }
      return r.stdout;
    },
    close: () => Deno.remove(conf),
  };
}

/** The shared libraries `ldd` lists for `binary` (absolute paths, the loader included). */
async function sharedLibraries(binary: string): Promise<string[]> {
  const out = await new Deno.Command("ldd", { args: [binary], stdout: "piped" }).output();
  const libs: string[] = [];
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (m?.[1]) libs.push(m[1]);
  }
  if (libs.length === 0) throw new Error(`ldd found no libraries for ${binary}`);
  return libs;
}

async function importRootfs(podman: Podman, tag: string, files: [string, string][]) {
  const root = await Deno.makeTempDir({ prefix: "usepod-rootfs-" });
  try {
    for (const [from, to] of files) {
      const dest = `${root}${to}`;
      await Deno.mkdir(dest.slice(0, dest.lastIndexOf("/")), { recursive: true });
      await Deno.copyFile(from, dest);
    }
    await Deno.mkdir(`${root}/etc`, { recursive: true });
    await Deno.writeTextFile(
      `${root}/etc/passwd`,
      "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    );
    await Deno.writeTextFile(`${root}/etc/group`, "root:x:0:\nnonroot:x:65532:\n");
    await Deno.mkdir(`${root}/tmp`);
    await Deno.chmod(`${root}/tmp`, 0o1777);
    const tar = `${root}.tar`;
    const out = await new Deno.Command("tar", {
      args: ["--numeric-owner", "--owner=0", "--group=0", "-C", root, "-cf", tar, "."],
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`tar: ${new TextDecoder().decode(out.stderr)}`);
    try {
      await podman.ok(["import", "--quiet", tar, tag]);
    } finally {
      await Deno.remove(tar);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/**
 * Makes (once; reused by tag afterwards) the local bases of deploy/container/Containerfile:
 * `runtime` for RUNTIME_IMAGE and `deno` for DENO_IMAGE.
 */
export async function localBaseImages(podman: Podman): Promise<{ runtime: string; deno: string }> {
  const deno = Deno.execPath();
  const libs = await sharedLibraries(deno);
  const stats = await Promise.all(libs.map((l) => Deno.stat(l)));
  const key = stats.reduce((h, s, i) => (h * 31 + s.size + libs[i]!.length) % 1e9, 7);
  const size = (await Deno.stat(deno)).size;
  const runtime = `localhost/usepod-test/runtime:glibc-${key}`;
  const denoTag = `localhost/usepod-test/deno:${Deno.version.deno}-${size}-${key}`;
  const libFiles = libs.map((l): [string, string] => [l, l]);
  if ((await podman.run(["image", "exists", runtime])).code !== 0) {
    await importRootfs(podman, runtime, libFiles);
  }
  if ((await podman.run(["image", "exists", denoTag])).code !== 0) {
    await importRootfs(podman, denoTag, [...libFiles, [deno, "/usr/bin/deno"]]);
  }
  return { runtime, deno: denoTag };
}
