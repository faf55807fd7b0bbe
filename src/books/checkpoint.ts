// The ledger's signed checkpoint (issue 14): `<ledger>.checkpoint` beside receipts.jsonl, one
// canonical JSON object naming the chain head (hash of the newest durable receipt line) and how
// many receipts the live file held, Ed25519-signed with the identity key and rewritten atomically
// at every group commit, so a cut at the end of the newest file can be detected.

import { atomicWrite } from "../fsutil.ts";
import type { Identity } from "../identity/identity.ts";
import { canonicalJson, type Scalar } from "./receipt.ts";

/** The checkpoint as stored (every key below, sorted, no whitespace, then a newline). */
export interface Checkpoint {
  "v": 1;
  /** Base name of the live ledger file the counts refer to (`receipts.jsonl`). */
  "file": string;
  /** SHA-256 (hex) of the last receipt line durable at `time`; 64 zeros when there was none. */
  "head": string;
  /** Receipt lines in the live file at `time` (0 right after a rotation). */
  "lines": number;
  /** Bytes of the live file at `time`. */
  "bytes": number;
  /** When the group commit that wrote it happened, RFC 3339 UTC. */
  "time": string;
  "pubkey": string;
  /** Base64 Ed25519 signature of the canonical encoding of every other field. */
  "sig": string;
}

/** The fields the ledger writer supplies. */
export type CheckpointBody = Pick<Checkpoint, "head" | "lines" | "bytes">;

const KEYS = "bytes,file,head,lines,pubkey,sig,time,v";

/** Where the checkpoint of a ledger lives. */
export function checkpointPath(ledgerPath: string): string {
  return `${ledgerPath}.checkpoint`;
}

function baseName(path: string): string {
  return path.slice(Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1);
}

/**
 * Signs and atomically writes the checkpoint of `ledgerPath` (temp file, fsync, rename,
 * directory fsync).
 *
 * @example
 * ```ts
 * await writeCheckpoint(path, { head, lines: 120, bytes: 61_440 }, identity);
 * ```
 */
export async function writeCheckpoint(
  ledgerPath: string,
  body: CheckpointBody,
  identity: Pick<Identity, "publicKeyB64" | "sign">,
  now = Date.now(),
): Promise<void> {
  const unsigned: Record<string, Scalar> = {
    "v": 1,
    "file": baseName(ledgerPath),
    "head": body.head,
    "lines": body.lines,
    "bytes": body.bytes,
    "time": new Date(now).toISOString(),
    "pubkey": identity.publicKeyB64,
  };
  const sig = await identity.sign(new TextEncoder().encode(canonicalJson(unsigned)));
  const text = canonicalJson({ ...unsigned, "sig": sig.toBase64() }) + "\n";
  await atomicWrite(checkpointPath(ledgerPath), text);
}

/**
 * Reads and checks the checkpoint of `ledgerPath`: undefined when there is none, else the
 * checkpoint or why it cannot be trusted (not canonical, bad fields, a signature that fails).
 *
 * @example
 * ```ts
 * const c = await readCheckpoint(path);
 * if (typeof c === "string") console.log(`checkpoint: ${c}`);
 * ```
 */
export async function readCheckpoint(ledgerPath: string): Promise<Checkpoint | string | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(checkpointPath(ledgerPath));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    return `unreadable: ${err instanceof Error ? err.message : String(err)}`;
  }
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(text);
  } catch {
    return "not JSON: the checkpoint was edited or damaged";
  }
  if (typeof o !== "object" || o === null || Object.keys(o).sort().join(",") !== KEYS) {
    return "not a version-1 checkpoint (its keys differ)";
  }
  const ints = ["lines", "bytes"].every((k) => Number.isSafeInteger(o[k]) && (o[k] as number) >= 0);
  const strs = ["file", "head", "time", "pubkey", "sig"].every((k) => typeof o[k] === "string");
  if (o["v"] !== 1 || !ints || !strs) return "not a version-1 checkpoint (bad field types)";
  const c = o as unknown as Checkpoint;
  if (canonicalJson(o as Record<string, Scalar>) + "\n" !== text) {
    return "not in canonical form: the checkpoint was edited";
  }
  const { sig, ...unsigned } = c;
  if (!(await verifies(c.pubkey, sig, canonicalJson(unsigned as Record<string, Scalar>)))) {
    return "signature does not verify: the checkpoint was edited or not signed by its pubkey";
  }
  return c;
}

async function verifies(pubkeyB64: string, sigB64: string, text: string): Promise<boolean> {
  try {
    const raw = Uint8Array.fromBase64(pubkeyB64);
    const sig = Uint8Array.fromBase64(sigB64);
    if (raw.length !== 32 || sig.length !== 64) return false;
    const key = await crypto.subtle.importKey("raw", raw, "Ed25519", false, ["verify"]);
    return await crypto.subtle.verify("Ed25519", key, sig, new TextEncoder().encode(text));
  } catch {
    return false;
  }
}
