// Durable file writes: a file replaced atomically (temp file in the same directory, fsync,
// rename, directory fsync), so after a crash or power loss a reader finds the old file or the
// new one, whole, and the new one stays once atomicWrite has returned.

import { dirOf } from "./paths.ts";

const WINDOWS = Deno.build.os === "windows";

/**
 * Fsyncs a directory so a rename or a new file in it survives power loss. Best effort: Windows
 * and some file systems cannot open or fsync a directory.
 *
 * @example
 * ```ts
 * await Deno.rename(tmp, path);
 * await syncDir(dirOf(path));
 * ```
 */
export async function syncDir(dir: string): Promise<void> {
  if (WINDOWS) return;
  let d: Deno.FsFile;
  try {
    d = await Deno.open(dir, { read: true });
  } catch {
    return;
  }
  try {
    await d.sync();
  } catch {
    // some file systems refuse fsync on a directory; the rename itself was atomic
  } finally {
    d.close();
  }
}

/**
 * Replaces `path` with `data`: written to a fresh temp file beside it (mode 0600 unless `mode`
 * says otherwise), fsynced, renamed over `path`, then the directory fsynced. On failure the temp
 * file is removed and `path` is untouched.
 *
 * @example
 * ```ts
 * await atomicWrite("/home/op/.usepod-agent/paused.json", JSON.stringify(state) + "\n");
 * ```
 */
export async function atomicWrite(
  path: string,
  data: string | Uint8Array,
  opts: { mode?: number } = {},
): Promise<void> {
  const mode = opts.mode ?? 0o600;
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const file = await Deno.open(tmp, { write: true, createNew: true, mode });
    try {
      if (!WINDOWS) await Deno.chmod(tmp, mode); // the umask may have narrowed it
      let off = 0;
      while (off < bytes.length) off += await file.write(bytes.subarray(off));
      try {
        await file.sync();
      } catch {
        // fsync unsupported on this file system: the rename below is still atomic
      }
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  await syncDir(dirOf(path));
}
