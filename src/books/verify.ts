// Reading and verifying the receipt ledger (issue 8): its files oldest first, each line parsed
// as a version-1 receipt, and the check of canonical form, Ed25519 signature and hash chain
// across rotated files that `usepod-agent receipts --verify` runs, then of the signed checkpoint
// that detects receipts cut from the end of the newest file (issue 14).

import { type Checkpoint, checkpointPath, readCheckpoint } from "./checkpoint.ts";
import {
  canonicalJson,
  GENESIS,
  type Receipt,
  RECEIPT_KEYS,
  type Scalar,
  sha256Hex,
} from "./receipt.ts";

/** The ledger's files, oldest first: `<path>.<n>` … `<path>.1`, then `<path>` (when present). */
export async function ledgerFiles(path: string): Promise<string[]> {
  const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  const dir = cut >= 0 ? path.slice(0, cut) || "/" : ".";
  const base = path.slice(cut + 1);
  const found: { n: number; file: string }[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.isFile || !e.name.startsWith(base)) continue;
      const rest = e.name.slice(base.length);
      if (rest === "") found.push({ n: 0, file: path });
      else if (/^\.[1-9]\d*$/.test(rest)) {
        found.push({ n: Number(rest.slice(1)), file: path + rest });
      }
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  // Highest number (oldest) first, the live file (0) last.
  return found.sort((a, b) => (a.n === 0 ? 1 : b.n === 0 ? -1 : b.n - a.n)).map((f) => f.file);
}

/** One stored line, parsed when it is a well-formed version-1 receipt. */
export interface LedgerLine {
  file: string;
  /** 1-based line number in `file`. */
  line: number;
  text: string;
  receipt: Receipt | undefined;
  /** Why `receipt` is undefined. */
  problem: string | undefined;
}

/**
 * Every line of the ledger, oldest first. A last line without its newline in the live file is
 * a write in progress and is skipped.
 *
 * @example
 * ```ts
 * for await (const l of readLedger(path)) if (l.receipt) console.log(l.receipt.job_id);
 * ```
 */
export async function* readLedger(path: string): AsyncGenerator<LedgerLine> {
  for (const file of await ledgerFiles(path)) {
    const text = await Deno.readTextFile(file);
    const lines = text.split("\n");
    const last = lines.pop(); // "" after a final newline; else an unfinished or cut line
    if (last !== undefined && last !== "" && file !== path) lines.push(last);
    for (let i = 0; i < lines.length; i++) {
      const parsed = parseReceipt(lines[i]!);
      yield {
        file,
        line: i + 1,
        text: lines[i]!,
        receipt: typeof parsed === "string" ? undefined : parsed,
        problem: typeof parsed === "string" ? parsed : undefined,
      };
    }
  }
}

/** A stored line as a receipt, or why it is not one. */
export function parseReceipt(text: string): Receipt | string {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    return text === "" ? "empty line" : "not JSON";
  }
  if (typeof o !== "object" || o === null || Array.isArray(o)) return "not a JSON object";
  const r = o as Record<string, unknown>;
  const keys = Object.keys(r).sort();
  if (keys.join(",") !== RECEIPT_KEYS.join(",")) return "not a version-1 receipt (its keys differ)";
  const ints = [
    "bytes",
    "duration_ms",
    "input_per_1m",
    "input_tokens",
    "output_per_1m",
    "output_tokens",
  ];
  if (r["v"] !== 1) return "not a version-1 receipt";
  for (const k of ints) if (!Number.isSafeInteger(r[k])) return `${k} is not an integer`;
  if (r["first_chunk_ms"] !== null && !Number.isSafeInteger(r["first_chunk_ms"])) {
    return "first_chunk_ms is not an integer or null";
  }
  for (const k of ["job_id", "model", "format", "outcome", "sha256", "time", "prev", "pubkey"]) {
    if (typeof r[k] !== "string") return `${k} is not a string`;
  }
  if (r["backend"] !== null && typeof r["backend"] !== "string") return "backend is not a string";
  if (typeof r["sig"] !== "string") return "sig is not a string";
  return r as unknown as Receipt;
}

/** What {@link verifyLedger} found. */
export interface VerifyResult {
  receipts: number;
  files: string[];
  /** Every public key that signed, in order of appearance. */
  pubkeys: string[];
  /** The first `prev` when the oldest kept file follows rotated-away ones (not checkable). */
  anchor: string | undefined;
  /** The first line that fails, and why; undefined when the whole ledger checks out. */
  broken: { file: string; line: number; reason: string } | undefined;
  /** The signed checkpoint the ledger was checked against; undefined when there is none. */
  checkpoint: Checkpoint | undefined;
}

/**
 * Checks every line: a canonical version-1 receipt, its Ed25519 signature (by `pubkey`, which
 * must equal `opts.pubkey` when given), and `prev` = SHA-256 of the line before, across
 * rotated files. Stops at the first broken line.
 *
 * @example
 * ```ts
 * const r = await verifyLedger(`${dir}/receipts.jsonl`);
 * if (r.broken) console.log(`${r.broken.file}:${r.broken.line}: ${r.broken.reason}`);
 * ```
 */
export async function verifyLedger(
  path: string,
  opts: { pubkey?: string } = {},
): Promise<VerifyResult> {
  const result: VerifyResult = {
    receipts: 0,
    files: await ledgerFiles(path),
    pubkeys: [],
    anchor: undefined,
    broken: undefined,
    checkpoint: undefined,
  };
  const cp = await readCheckpoint(path);
  // Hashes where the checkpoint's head may be: its line of the live file, or of `.1` when the
  // live file was rotated since; the last line of `.1` for a checkpoint taken right after one.
  const newest = new Set([path, `${path}.1`]);
  const at = new Map<string, string>();
  let lastOfRotated: string | undefined;
  const keys = new Map<string, CryptoKey | undefined>();
  const encoder = new TextEncoder();
  let prev: string | undefined;
  for await (const l of readLedger(path)) {
    const fail = (reason: string) => (result.broken = { file: l.file, line: l.line, reason });
    const r = l.receipt;
    if (!r) {
      fail(l.problem ?? "unreadable");
      break;
    }
    if (canonicalJson(r as unknown as Record<string, Scalar>) !== l.text) {
      fail("not in canonical form: the line was edited");
      break;
    }
    if (opts.pubkey !== undefined && r.pubkey !== opts.pubkey) {
      fail(`signed by ${r.pubkey}, not by the expected key`);
      break;
    }
    if (!keys.has(r.pubkey)) {
      keys.set(r.pubkey, await importPublicKey(r.pubkey));
      result.pubkeys.push(r.pubkey);
    }
    const key = keys.get(r.pubkey);
    const { sig, ...unsigned } = r;
    const signed = encoder.encode(canonicalJson(unsigned as unknown as Record<string, Scalar>));
    const sigBytes = decodeBase64(sig);
    if (
      !key || sigBytes?.length !== 64 ||
      !(await crypto.subtle.verify("Ed25519", key, sigBytes, signed))
    ) {
      fail("signature does not verify: the line was edited or not signed by its pubkey");
      break;
    }
    if (prev === undefined) {
      if (r.prev !== GENESIS) {
        if (l.file === path) {
          fail("prev is not the genesis value: receipts before this one were deleted");
          break;
        }
        result.anchor = r.prev;
      }
    } else if (r.prev !== prev) {
      fail("prev does not match the line before: a line was deleted, inserted or edited");
      break;
    }
    prev = sha256Hex(l.text);
    result.receipts++;
    if (typeof cp === "object" && newest.has(l.file) && l.line === cp.lines) at.set(l.file, prev);
    if (l.file === `${path}.1`) lastOfRotated = prev;
  }
  if (result.broken || cp === undefined) return result;
  const fail = (line: number, reason: string) => {
    result.broken = { file: checkpointPath(path), line, reason };
    return result;
  };
  if (typeof cp === "string") return fail(1, `checkpoint ${cp}`);
  if (opts.pubkey !== undefined && cp.pubkey !== opts.pubkey) {
    return fail(1, `checkpoint signed by ${cp.pubkey}, not by the expected key`);
  }
  if (result.pubkeys.length > 0 && !result.pubkeys.includes(cp.pubkey)) {
    return fail(1, `checkpoint signed by ${cp.pubkey}, a key that signed no receipt`);
  }
  result.checkpoint = cp;
  const found = cp.lines === 0
    ? cp.head === GENESIS || cp.head === lastOfRotated
    : [...at.values()].includes(cp.head);
  if (!found) {
    const lines = result.files.includes(path) ? await countReceipts(path) : 0;
    result.broken = {
      file: path,
      line: lines + 1,
      reason: `the checkpoint of ${cp.time} records ${cp.lines} receipt(s) in this file ending ` +
        `with head ${cp.head}, but it holds ${lines} that do not: receipts were cut from its end ` +
        `(truncated) or it was replaced`,
    };
  }
  return result;
}

async function countReceipts(path: string): Promise<number> {
  let n = 0;
  for await (const l of readLedger(path)) if (l.file === path) n++;
  return n;
}

function decodeBase64(s: string): Uint8Array<ArrayBuffer> | undefined {
  try {
    return Uint8Array.fromBase64(s);
  } catch {
    return undefined;
  }
}

async function importPublicKey(b64: string): Promise<CryptoKey | undefined> {
  const raw = decodeBase64(b64);
  if (raw?.length !== 32) return undefined;
  try {
    return await crypto.subtle.importKey("raw", raw, "Ed25519", false, ["verify"]);
  } catch {
    return undefined;
  }
}
