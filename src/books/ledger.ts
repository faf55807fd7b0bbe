// Signed job receipts (issue 8): one line per terminal frame in `receipts.jsonl` next to the
// identity file, hash-chained across size-rotated files. Appends only queue; one background writer
// encodes, signs and appends in batches and group-commits (fsync, then a signed checkpoint) at most
// ~1 s after a write, and on close (issue 14). The line format itself is receipt.ts's.

import type { Identity } from "../identity/identity.ts";
import { concatBytes } from "../bytes.ts";
import { log } from "../log.ts";
import { writeCheckpoint } from "./checkpoint.ts";
import { type LedgerHead, readHead, rotate } from "./ledger_files.ts";
import { type ReceiptBody, receiptBody, sha256Hex, signReceipt } from "./receipt.ts";
import type { ModelPrice } from "../config/config.ts";
import type { FinishedJob } from "../jobs/job.ts";

export {
  canonicalJson,
  earnedMicroUsdc,
  GENESIS,
  hasTerminal,
  type Receipt,
  RECEIPT_KEYS,
  type ReceiptBody,
  receiptBody,
  receiptLine,
  type Scalar,
  sha256Hex,
  signReceipt,
} from "./receipt.ts";

/**
 * The durability window: a receipt is fsynced, and the checkpoint names it, at most this long
 * after it was written (and at once on close). A power loss can cost the receipts of the last
 * window; `receipts --verify` detects a cut before the last checkpoint.
 */
export const GROUP_COMMIT_MS = 1_000;

/** A job whose receipt fields the writer takes when it gets to it. */
interface PendingJob {
  job: FinishedJob;
  price: ModelPrice;
}

/** Receipts taken from the queue per write (one append, one encoding pass). */
const BATCH = 512;

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
  /** Longest time between a write and its fsync + checkpoint. Default {@link GROUP_COMMIT_MS}. */
  commitMs?: number;
  /** Schedules a group commit (tests fire it by hand); returns a canceller. Default setTimeout. */
  schedule?: (fn: () => void, ms: number) => () => void;
}

function defaultSchedule(fn: () => void, ms: number): () => void {
  const t = setTimeout(fn, ms);
  return () => clearTimeout(t);
}

/**
 * The append-only receipt ledger. {@link append} only queues; one writer signs and appends in
 * batches, so the job path never waits on the disk, and commits (fsync + checkpoint) at most
 * {@link GROUP_COMMIT_MS} later. A failed write is logged once per run of failures; the agent
 * goes on.
 *
 * @example
 * ```ts
 * const ledger = new Ledger({ path: `${dir}/receipts.jsonl`, identity: () => id });
 * agent.onJobFinished((j) => hasTerminal(j) && ledger.append(receiptBody(j, price)));
 * await ledger.close(); // written, fsynced, checkpointed
 * ```
 */
export class Ledger {
  readonly path: string;
  #o: LedgerOptions;
  #queue: (ReceiptBody | PendingJob)[] = [];
  #writer: Promise<void> | undefined;
  #head: LedgerHead | undefined;
  #file: Deno.FsFile | undefined;
  #failing = false;
  #commitFailing = false;
  #dropping = false;
  /** Bytes appended since the last commit; a commit is due or scheduled while true. */
  #unsynced = false;
  #commitDue = false;
  #cancelTimer: (() => void) | undefined;
  /** Receipts written since start, and receipts lost (queue full or a failed write). */
  written = 0;
  lost = 0;
  /** Failed write attempts since start (for /metrics). */
  writeFailures = 0;
  /** Group commits done (fsync + checkpoint) since start. */
  commits = 0;

  constructor(opts: LedgerOptions) {
    this.#o = opts;
    this.path = opts.path;
  }

  /**
   * Queues the receipt of a job that got a terminal frame; its fields are taken in the writer's
   * batch, off the job path. Returns at once.
   */
  appendJob(job: FinishedJob, price: ModelPrice): void {
    this.append({ job, price });
  }

  /** Queues one receipt; returns at once. */
  append(body: ReceiptBody | PendingJob): void {
    if (this.#queue.length >= (this.#o.maxQueue ?? 10_000)) {
      this.lost++;
      if (!this.#dropping) log.error("receipt ledger queue full: dropping receipts", {});
      this.#dropping = true;
      return;
    }
    this.#dropping = false;
    this.#queue.push(body);
    this.#kick();
  }

  /** Resolves once every receipt queued so far is written, fsynced and checkpointed (or lost). */
  async close(): Promise<void> {
    this.#stopTimer();
    this.#commitDue = true;
    this.#kick();
    while (this.#writer) await this.#writer;
    this.#stopTimer(); // a commit that failed re-armed its retry
    this.#file?.close();
    this.#file = undefined;
  }

  #stopTimer(): void {
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
  }

  #kick(): void {
    this.#writer ??= this.#drain().finally(() => {
      this.#writer = undefined;
      if (this.#queue.length > 0 || (this.#commitDue && this.#unsynced)) this.#kick();
      else if (this.#unsynced && !this.#cancelTimer) this.#scheduleCommit();
    });
  }

  #scheduleCommit(): void {
    this.#cancelTimer = (this.#o.schedule ?? defaultSchedule)(() => {
      this.#cancelTimer = undefined;
      this.#commitDue = true;
      this.#kick();
    }, this.#o.commitMs ?? GROUP_COMMIT_MS);
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, BATCH);
      try {
        this.#head ??= await readHead(this.path);
        await this.#write(batch, this.#head);
        if (this.#failing) log.info("receipt ledger writes resumed", { path: this.path });
        this.#failing = false;
      } catch (err) {
        this.lost += batch.length;
        this.writeFailures++;
        this.#forget(); // re-read the file's tail before the next write
        if (!this.#failing) {
          log.error("receipt ledger write failed; receipts are lost until it recovers", {
            path: this.path,
            error: err,
          });
        }
        this.#failing = true;
      }
    }
    if (this.#commitDue && this.#unsynced) await this.#commit();
    this.#commitDue = false;
  }

  /** Drops the open file and the cached head (after a failure). */
  #forget(): void {
    this.#head = undefined;
    try {
      this.#file?.close();
    } catch {
      // already closed
    }
    this.#file = undefined;
  }

  async #append(bytes: Uint8Array): Promise<void> {
    if (bytes.length === 0) return;
    this.#file ??= await Deno.open(this.path, { append: true, create: true, mode: 0o600 });
    for (let off = 0; off < bytes.length;) off += await this.#file.write(bytes.subarray(off));
    this.#unsynced = true;
  }

  async #write(batch: (ReceiptBody | PendingJob)[], head: LedgerHead): Promise<void> {
    const maxBytes = this.#o.maxBytes ?? 16 * 1024 * 1024;
    const identity = this.#o.identity();
    const encoder = new TextEncoder();
    let pending: Uint8Array[] = [];
    let pendingSize = 0;
    let prev = head.prev;
    const flush = async () => {
      await this.#append(concatBytes(pending));
      head.size += pendingSize;
      head.lines += pending.length;
      head.prev = prev;
      pending = [];
      pendingSize = 0;
    };
    for (const entry of batch) {
      const body = "job" in entry ? receiptBody(entry.job, entry.price) : entry;
      const line = await signReceipt(body, prev, identity);
      const bytes = encoder.encode(line + "\n");
      if (head.size + pendingSize > 0 && head.size + pendingSize + bytes.length > maxBytes) {
        await flush();
        await this.#rotate(head);
      }
      pending.push(bytes);
      pendingSize += bytes.length;
      prev = sha256Hex(line);
    }
    await flush();
    this.written += batch.length;
  }

  /** Commits the full file, rotates it and checkpoints the empty live file at once. */
  async #rotate(head: LedgerHead): Promise<void> {
    if (this.#file) {
      await this.#file.sync();
      this.#file.close();
      this.#file = undefined;
    }
    await rotate(this.path, this.#o.keep ?? 4);
    head.size = 0;
    head.lines = 0;
    this.#unsynced = true; // the checkpoint must now name the empty live file
    await this.#commit();
  }

  /** Group commit: fsync the live file, then write the signed checkpoint naming its head. */
  async #commit(): Promise<void> {
    const head = this.#head;
    if (!head) {
      this.#unsynced = false; // the file was closed after a failure; the next write commits
      return;
    }
    try {
      await this.#file?.syncData();
      await writeCheckpoint(
        this.path,
        { head: head.prev, lines: head.lines, bytes: head.size },
        this.#o.identity(),
      );
      this.#unsynced = false;
      this.commits++;
      if (this.#commitFailing) log.info("receipt ledger commits resumed", { path: this.path });
      this.#commitFailing = false;
    } catch (err) {
      this.writeFailures++;
      if (!this.#commitFailing) {
        log.error("receipt ledger fsync or checkpoint failed; retrying at the next commit", {
          path: this.path,
          error: err,
        });
      }
      this.#commitFailing = true;
    }
  }
}
