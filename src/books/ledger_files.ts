// The receipt ledger on disk (issue 8, issue 14): where the chain continues after a restart (the
// hash of the last complete line, the live file's size and line count, a partial last line cut
// off) and size rotation (`<path>` → `<path>.1` → … → `<path>.<keep>`, then a directory fsync).

import { syncDir } from "../fsutil.ts";
import { log } from "../log.ts";
import { dirOf } from "../paths.ts";
import { GENESIS, sha256Hex } from "./receipt.ts";

/** Where the chain continues: `prev` for the next receipt, and the live file's bytes and lines. */
export interface LedgerHead {
  prev: string;
  size: number;
  lines: number;
}

/** `<path>` → `<path>.1` → … → `<path>.<keep>`; the oldest beyond `keep` is removed. */
export async function rotate(path: string, keep: number): Promise<void> {
  await Deno.remove(`${path}.${keep}`).catch(() => {});
  for (let i = keep - 1; i >= 1; i--) {
    await Deno.rename(`${path}.${i}`, `${path}.${i + 1}`).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }
  if (keep >= 1) await Deno.rename(path, `${path}.1`);
  else await Deno.remove(path);
  await syncDir(dirOf(path));
}

/**
 * Where the chain continues: the hash of the last complete line of the live file (or of the
 * newest rotated file when the live one is empty), the live file's size and its line count. A
 * partial last line (the process died mid-write) is cut off first.
 */
export async function readHead(path: string): Promise<LedgerHead> {
  const live = await lastLine(path, true);
  const lines = live.size === 0 ? 0 : await countLines(path);
  if (live.line !== undefined) return { prev: sha256Hex(live.line), size: live.size, lines };
  const rotated = await lastLine(`${path}.1`, false);
  return {
    prev: rotated.line === undefined ? GENESIS : sha256Hex(rotated.line),
    size: live.size,
    lines,
  };
}

/** Newlines in a file (read once at start; the writer counts from then on). */
async function countLines(path: string): Promise<number> {
  const file = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(64 * 1024);
    let n = 0;
    for (let got = await file.read(buf); got !== null; got = await file.read(buf)) {
      const read = buf.subarray(0, got);
      for (let i = read.indexOf(10); i >= 0; i = read.indexOf(10, i + 1)) n++;
    }
    return n;
  } finally {
    file.close();
  }
}

/** The last complete line of a file and its size (after cutting a partial line when `repair`). */
export async function lastLine(
  path: string,
  repair: boolean,
): Promise<{ line: string | undefined; size: number }> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true, write: repair });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { line: undefined, size: 0 };
    throw err;
  }
  try {
    let size = (await file.stat()).size;
    // Read backwards until the tail holds two newlines (the last line and the one before it).
    let from = size;
    let tail = new Uint8Array(0);
    while (from > 0 && newlines(tail) < 2) {
      const step = Math.min(from, 64 * 1024);
      from -= step;
      const buf = new Uint8Array(step + tail.length);
      await file.seek(from, Deno.SeekMode.Start);
      for (let got = 0; got < step;) {
        const n = await file.read(buf.subarray(got, step));
        if (n === null) throw new Error(`${path} shrank while being read`);
        got += n;
      }
      buf.set(tail, step);
      tail = buf;
    }
    const end = tail.lastIndexOf(10);
    if (end < tail.length - 1 && repair) {
      // Bytes after the last newline: a write the process did not finish. Cut them off.
      log.warn("receipt ledger ended in a partial line; cut it off", { path });
      size = from + end + 1;
      await file.truncate(size);
    }
    if (end < 0) return { line: undefined, size };
    const start = end === 0 ? 0 : tail.lastIndexOf(10, end - 1) + 1;
    return { line: new TextDecoder().decode(tail.subarray(start, end)), size };
  } finally {
    file.close();
  }
}

function newlines(bytes: Uint8Array): number {
  let n = 0;
  for (let i = bytes.indexOf(10); i >= 0 && n < 2; i = bytes.indexOf(10, i + 1)) n++;
  return n;
}
