// Signed job receipts (issue 8): one JSON line per terminal frame in `receipts.jsonl` next to the
// identity file. Canonical encoding, Ed25519 signature, a hash chain that continues across
// size-rotated files, an append queue kept off the job path, and verification of it all.

import type { ModelPrice } from "../config/config.ts";
import type { FinishedJob } from "../jobs/job.ts";
import type { Identity } from "../identity/identity.ts";
import { log } from "../log.ts";
import { Sha256 } from "../jobs/sha256.ts";

/** `prev` of the first receipt of a ledger: 64 zeros. */
export const GENESIS = "0".repeat(64);

/** A receipt as stored: one line of the ledger, every key listed in {@link RECEIPT_KEYS}. */
export interface Receipt {
  "v": 1;
  "job_id": string;
  "model": string;
  "backend": string | null;
  "format": string;
  "outcome": string;
  "input_tokens": number;
  "output_tokens": number;
  "first_chunk_ms": number | null;
  "duration_ms": number;
  "bytes": number;
  "sha256": string;
  "input_per_1m": number;
  "output_per_1m": number;
  "time": string;
  "prev": string;
  "pubkey": string;
  "sig": string;
}

/** The fields a job contributes; the ledger adds `prev`, `pubkey` and `sig`. */
export type ReceiptBody = Omit<Receipt, "prev" | "pubkey" | "sig">;

/** Every key of a version-1 receipt, sorted (the canonical order). */
export const RECEIPT_KEYS: readonly string[] = [
  "backend",
  "bytes",
  "duration_ms",
  "first_chunk_ms",
  "format",
  "input_per_1m",
  "input_tokens",
  "job_id",
  "model",
  "outcome",
  "output_per_1m",
  "output_tokens",
  "prev",
  "pubkey",
  "sha256",
  "sig",
  "time",
  "v",
];

/** A value a receipt field may hold. */
export type Scalar = string | number | null;

/**
 * The canonical encoding: a JSON object with its members sorted by key, no whitespace, strings
 * escaped as `JSON.stringify` does (RFC 8785), integers in plain decimal. Throws RangeError on
 * anything else (floats, nested values), so a receipt has exactly one encoding.
 *
 * @example
 * ```ts
 * canonicalJson({ b: 1, a: "x" }); // '{"a":"x","b":1}'
 * ```
 */
export function canonicalJson(fields: Readonly<Record<string, Scalar>>): string {
  const parts: string[] = [];
  for (const key of Object.keys(fields).sort()) {
    const value = fields[key];
    if (typeof value === "number" && !Number.isSafeInteger(value)) {
      throw new RangeError(`canonical receipt field ${key}: ${value} is not a safe integer`);
    }
    if (value !== null && typeof value !== "string" && typeof value !== "number") {
      throw new RangeError(`canonical receipt field ${key}: unsupported ${typeof value}`);
    }
    parts.push(`${JSON.stringify(key)}:${JSON.stringify(value)}`);
  }
  return `{${parts.join(",")}}`;
}

const utf8 = new TextEncoder();

/** Lowercase hex SHA-256 of a string's UTF-8 bytes. */
export function sha256Hex(text: string): string {
  return new Sha256().update(utf8.encode(text)).hex();
}

/** Whether a finished job got a terminal frame (and so a receipt): not cancels or lost links. */
export function hasTerminal(job: FinishedJob): boolean {
  return job.outcome !== "cancelled" && job.outcome !== "disconnected";
}

/**
 * The receipt fields of a job that got a terminal frame, at the price advertised for it.
 *
 * @example
 * ```ts
 * ledger.append(receiptBody(job, { inputPer1m: 300_000, outputPer1m: 450_000 }));
 * ```
 */
export function receiptBody(job: FinishedJob, price: ModelPrice): ReceiptBody {
  return {
    "v": 1,
    "job_id": job.jobId,
    "model": job.model,
    "backend": job.backend ?? null,
    "format": job.format,
    "outcome": job.outcome,
    "input_tokens": job.inputTokens,
    "output_tokens": job.outputTokens,
    "first_chunk_ms": job.firstChunkMs ?? null,
    "duration_ms": job.durationMs,
    "bytes": job.bytes,
    "sha256": job.sha256 ?? sha256Hex(""),
    "input_per_1m": price.inputPer1m,
    "output_per_1m": price.outputPer1m,
    "time": new Date(job.finishedAt).toISOString(),
  };
}

/** Micro-USDC a receipt earned: its tokens at its prices when it is `job_done`, else 0. */
export function earnedMicroUsdc(r: Receipt): number {
  if (r.outcome !== "job_done") return 0;
  return (r.input_tokens * r.input_per_1m + r.output_tokens * r.output_per_1m) / 1e6;
}

/** Signs a body chained to `prev`; returns the stored line (the canonical encoding with `sig`). */
export async function signReceipt(
  body: ReceiptBody,
  prev: string,
  identity: Pick<Identity, "publicKeyB64" | "sign">,
): Promise<string> {
  const unsigned: Record<string, Scalar> = {
    ...body,
    "prev": prev,
    "pubkey": identity.publicKeyB64,
  };
  const sig = await identity.sign(new TextEncoder().encode(canonicalJson(unsigned)));
  return canonicalJson({ ...unsigned, "sig": sig.toBase64() });
}

export interface LedgerOptions {
  /** The live file; rotated ones are `<path>.1` (newest) … `<path>.<keep>`. */
  path: string;
  identity: () => Pick<Identity, "publicKeyB64" | "sign">;
  /** Rotate before a line would take the live file past this size. Default 16 MiB. */
  maxBytes?: number;
  /** Rotated files kept. Default 4. */
  keep?: number;
  /** Receipts waiting to be written beyond which new ones are dropped. Default 10,000. */
  maxQueue?: number;
}

/**
 * The append-only receipt ledger. {@link append} only queues; one writer signs and appends in
 * batches, so the job path never waits on the disk. A failed write is logged once per run of
 * failures; the agent goes on.
 *
 * @example
 * ```ts
 * const ledger = new Ledger({ path: `${dir}/receipts.jsonl`, identity: () => id });
 * agent.onJobFinished((j) => hasTerminal(j) && ledger.append(receiptBody(j, price)));
 * await ledger.close();
 * ```
 */
export class Ledger {
  readonly path: string;
  #o: LedgerOptions;
  #queue: ReceiptBody[] = [];
  #writer: Promise<void> | undefined;
  #head: { prev: string; size: number } | undefined;
  #failing = false;
  #dropping = false;
  /** Receipts written since start, and receipts lost (queue full or a failed write). */
  written = 0;
  lost = 0;
  /** Failed write attempts since start (for /metrics). */
  writeFailures = 0;

  constructor(opts: LedgerOptions) {
    this.#o = opts;
    this.path = opts.path;
  }

  /** Queues one receipt; returns at once. */
  append(body: ReceiptBody): void {
    if (this.#queue.length >= (this.#o.maxQueue ?? 10_000)) {
      this.lost++;
      if (!this.#dropping) log.error("receipt ledger queue full: dropping receipts", {});
      this.#dropping = true;
      return;
    }
    this.#dropping = false;
    this.#queue.push(body);
    this.#writer ??= this.#drain().finally(() => (this.#writer = undefined));
  }

  /** Resolves once every receipt queued so far is written (or lost). */
  async close(): Promise<void> {
    while (this.#writer) await this.#writer;
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, 512);
      try {
        this.#head ??= await readHead(this.path);
        await this.#write(batch, this.#head);
        if (this.#failing) log.info("receipt ledger writes resumed", { path: this.path });
        this.#failing = false;
      } catch (err) {
        this.lost += batch.length;
        this.writeFailures++;
        this.#head = undefined; // re-read the file's tail before the next write
        if (!this.#failing) {
          log.error("receipt ledger write failed; receipts are lost until it recovers", {
            path: this.path,
            error: err,
          });
        }
        this.#failing = true;
      }
    }
  }

  async #write(batch: ReceiptBody[], head: { prev: string; size: number }): Promise<void> {
    const maxBytes = this.#o.maxBytes ?? 16 * 1024 * 1024;
    const encoder = new TextEncoder();
    let pending: Uint8Array[] = [];
    let pendingSize = 0;
    let prev = head.prev;
    for (const body of batch) {
      const line = await signReceipt(body, prev, this.#o.identity());
      const bytes = encoder.encode(line + "\n");
      if (head.size + pendingSize > 0 && head.size + pendingSize + bytes.length > maxBytes) {
        await appendAll(this.path, pending);
        await rotate(this.path, this.#o.keep ?? 4);
        head.size = 0;
        pending = [];
        pendingSize = 0;
      }
      pending.push(bytes);
      pendingSize += bytes.length;
      prev = sha256Hex(line);
    }
    await appendAll(this.path, pending);
    head.size += pendingSize;
    head.prev = prev;
    this.written += batch.length;
  }
}

async function appendAll(path: string, chunks: Uint8Array[]): Promise<void> {
  if (chunks.length === 0) return;
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) all.set(c, (at += c.length) - c.length);
  await Deno.writeFile(path, all, { append: true, create: true, mode: 0o600 });
}

/** `<path>` → `<path>.1` → … → `<path>.<keep>`; the oldest beyond `keep` is removed. */
async function rotate(path: string, keep: number): Promise<void> {
  await Deno.remove(`${path}.${keep}`).catch(() => {});
  for (let i = keep - 1; i >= 1; i--) {
    await Deno.rename(`${path}.${i}`, `${path}.${i + 1}`).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }
  if (keep >= 1) await Deno.rename(path, `${path}.1`);
  else await Deno.remove(path);
}

/**
 * Where the chain continues: the hash of the last complete line of the live file (or of the
 * newest rotated file when the live one is empty), and the live file's size. A partial last
 * line (the process died mid-write) is cut off first.
 */
async function readHead(path: string): Promise<{ prev: string; size: number }> {
  const live = await lastLine(path, true);
  if (live.line !== undefined) return { prev: sha256Hex(live.line), size: live.size };
  const rotated = await lastLine(`${path}.1`, false);
  return { prev: rotated.line === undefined ? GENESIS : sha256Hex(rotated.line), size: live.size };
}

async function lastLine(
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
