// The signed receipt format (issue 8): the fields of one receipt line, the canonical encoding
// (sorted keys, no whitespace, RFC 8785 string escaping, integers only), the hash chain's `prev`
// and the Ed25519 signature. docs/receipts.md describes it for third parties.

import type { ModelPrice } from "../config/config.ts";
import type { FinishedJob } from "../jobs/job.ts";
import type { Identity } from "../identity/identity.ts";
import { Sha256 } from "../jobs/sha256.ts";
import { clip, MAX_SHOWN_MODEL } from "../text.ts";

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
    "model": clip(job.model, MAX_SHOWN_MODEL),
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

/** A string member `"key":"value"` as canonicalJson writes it. */
const str = (v: string) => JSON.stringify(v);
/** An integer member's value; RangeError for anything canonicalJson would refuse. */
function int(key: string, v: number): string {
  if (!Number.isSafeInteger(v)) {
    throw new RangeError(`canonical receipt field ${key}: ${v} is not a safe integer`);
  }
  return String(v);
}

/**
 * The canonical encoding of a receipt, with `sig` when given: the same bytes as
 * {@link canonicalJson} of its fields, written in the fixed key order without sorting.
 */
export function receiptLine(body: ReceiptBody, prev: string, pubkey: string, sig?: string): string {
  const head = `{"backend":${body.backend === null ? "null" : str(body.backend)}` +
    `,"bytes":${int("bytes", body.bytes)}` +
    `,"duration_ms":${int("duration_ms", body.duration_ms)}` +
    `,"first_chunk_ms":${
      body.first_chunk_ms === null ? "null" : int("first_chunk_ms", body.first_chunk_ms)
    }` +
    `,"format":${str(body.format)}` +
    `,"input_per_1m":${int("input_per_1m", body.input_per_1m)}` +
    `,"input_tokens":${int("input_tokens", body.input_tokens)}` +
    `,"job_id":${str(body.job_id)}` +
    `,"model":${str(body.model)}` +
    `,"outcome":${str(body.outcome)}` +
    `,"output_per_1m":${int("output_per_1m", body.output_per_1m)}` +
    `,"output_tokens":${int("output_tokens", body.output_tokens)}` +
    `,"prev":${str(prev)},"pubkey":${str(pubkey)},"sha256":${str(body.sha256)}`;
  const end = `,"time":${str(body.time)},"v":${int("v", body.v)}}`;
  return sig === undefined ? head + end : `${head},"sig":${str(sig)}${end}`;
}

/**
 * Signs a body chained to `prev`; returns the stored line (the canonical encoding with `sig`).
 *
 * @example
 * ```ts
 * const line = await signReceipt(body, GENESIS, identity);
 * const next = sha256Hex(line); // the next receipt's prev
 * ```
 */
export async function signReceipt(
  body: ReceiptBody,
  prev: string,
  identity: Pick<Identity, "publicKeyB64" | "sign">,
): Promise<string> {
  const unsigned = receiptLine(body, prev, identity.publicKeyB64);
  const sig = await identity.sign(utf8.encode(unsigned));
  return receiptLine(body, prev, identity.publicKeyB64, sig.toBase64());
}
