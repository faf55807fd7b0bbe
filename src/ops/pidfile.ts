// The running agent's pid file (`agent.pid` in the state directory), held under an exclusive
// advisory lock for the life of the process so a stale file is never mistaken for a live agent.
// Written by `run`; read by `usepod-agent reload` when the status server does not answer.

import { log } from "../log.ts";
import { pidFilePath, type StatePlace } from "../paths.ts";

/** A pid file this process holds; `release()` removes it. */
export interface HeldPidFile {
  readonly path: string;
  release(): void;
}

/**
 * Writes this process's pid to `path` and keeps the file locked until `release()`. Returns
 * undefined when another live process holds the lock (another agent with the same identity).
 *
 * @example
 * ```ts
 * const held = await holdPidFile(pidFilePath(config.identity.keyPath));
 * try { await agent.run(); } finally { held?.release(); }
 * ```
 */
export async function holdPidFile(path: string): Promise<HeldPidFile | undefined> {
  const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o644 });
  try {
    if (!(await file.tryLock(true))) {
      file.close();
      return undefined;
    }
    await file.truncate(0);
    const bytes = new TextEncoder().encode(`${Deno.pid}\n`);
    let off = 0;
    while (off < bytes.length) off += await file.write(bytes.subarray(off));
  } catch (err) {
    file.close();
    throw err;
  }
  let released = false;
  return {
    path,
    release() {
      if (released) return;
      released = true;
      try {
        Deno.removeSync(path);
      } catch {
        // already gone: nothing to clean up
      }
      file.close();
    },
  };
}

/**
 * The pid of the live process holding the pid file at `path`; undefined when there is no file,
 * it is not locked (left behind by a process that died), or it holds no pid.
 *
 * @example
 * ```ts
 * const pid = await readLivePid(pidFilePath(config.identity.keyPath));
 * ```
 */
export async function readLivePid(path: string): Promise<number | undefined> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
  try {
    if (await file.tryLock(false)) return undefined; // nobody holds it: stale
    const text = new TextDecoder().decode(await readAll(file));
    const pid = Number(text.trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } finally {
    file.close();
  }
}

async function readAll(file: Deno.FsFile): Promise<Uint8Array> {
  const buf = new Uint8Array(64);
  let n = 0;
  while (n < buf.length) {
    const got = await file.read(buf.subarray(n));
    if (got === null) break;
    n += got;
  }
  return buf.subarray(0, n);
}

/**
 * `run`'s pid file in the state directory, or undefined (with a warning logged) when it cannot
 * be held: another agent with the same identity holds it, or the directory is not writable.
 * Not used on Windows, which has no SIGHUP to send.
 *
 * @example
 * ```ts
 * const pidFile = await holdAgentPidFile(config.identity);
 * try { await agent.run(); } finally { pidFile?.release(); }
 * ```
 */
export async function holdAgentPidFile(place: StatePlace): Promise<HeldPidFile | undefined> {
  if (Deno.build.os === "windows") return undefined;
  const path = pidFilePath(place);
  try {
    const held = await holdPidFile(path);
    if (held === undefined) {
      log.warn(
        "another agent with this identity holds the pid file; usepod-agent reload " +
          "signals that one",
        { path, pid: await readLivePid(path) },
      );
    }
    return held;
  } catch (err) {
    log.warn("cannot write the pid file; usepod-agent reload needs the status server", {
      path,
      error: err,
    });
    return undefined;
  }
}
