// Signed job receipts (issue 8): receipts written by the real agent over loopback, checked with
// an independent Ed25519 (@noble/ed25519) and canonical encoding; the chain across rotation,
// tamper detection, crash repair, write failures, and the `receipts` command.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as ed from "@noble/ed25519";
import { main } from "../../src/cli/main.ts";
import type { FinishedJob } from "../../src/jobs/job.ts";
import { loadOrCreateIdentity } from "../../src/identity/identity.ts";
import {
  canonicalJson,
  GENESIS,
  GROUP_COMMIT_MS,
  Ledger,
  type Receipt,
  receiptBody,
  receiptLine,
  type Scalar,
  sha256Hex,
} from "../../src/books/ledger.ts";
import { checkpointPath, readCheckpoint, writeCheckpoint } from "../../src/books/checkpoint.ts";
import { ledgerFiles, verifyLedger } from "../../src/books/verify.ts";
import { setLevel, setSink } from "../../src/log.ts";
import { startStack } from "../harness/stack.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";
const PRICE = { inputPer1m: 300_000, outputPer1m: 450_000 };

function sha256(bytes: Uint8Array | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

async function lines(path: string): Promise<string[]> {
  return (await Deno.readTextFile(path)).split("\n").filter((l) => l !== "");
}

/** The canonical encoding rebuilt independently: sorted keys, JSON.stringify, no whitespace. */
function independentCanonical(o: Record<string, unknown>): string {
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(o).sort()) sorted[k] = o[k];
  return JSON.stringify(sorted);
}

async function independentlyValid(line: string): Promise<boolean> {
  const r = JSON.parse(line) as Record<string, unknown>;
  const { sig, ...unsigned } = r;
  const msg = new TextEncoder().encode(independentCanonical(unsigned));
  return await ed.verifyAsync(
    Uint8Array.fromBase64(sig as string),
    msg,
    Uint8Array.fromBase64(r["pubkey"] as string),
  );
}

function finished(i: number, over: Partial<FinishedJob> = {}): FinishedJob {
  return {
    jobId: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
    model: MODEL,
    backend: "vllm",
    format: "openai",
    outcome: "job_done",
    message: undefined,
    inputTokens: 10 + i,
    outputTokens: 20 + i,
    usageReported: true,
    firstChunkMs: 5,
    durationMs: 50,
    bytes: 100,
    sha256: sha256(`job ${i}`),
    receivedAt: Date.UTC(2026, 0, 2, 3, 4, 5) + i * 1000,
    finishedAt: Date.UTC(2026, 0, 2, 3, 4, 5) + i * 1000 + 50,
    admitted: true,
    ...over,
  };
}

/** A temp dir with an identity and a ledger of `n` receipts; `maxBytes` to force rotation. */
async function ledgerWith(n: number, opts: { maxBytes?: number; keep?: number } = {}) {
  const dir = await Deno.makeTempDir({ prefix: "usepod-ledger-" });
  const { identity } = await loadOrCreateIdentity(`${dir}/identity.key`);
  const path = `${dir}/receipts.jsonl`;
  const ledger = new Ledger({ path, identity: () => identity, ...opts });
  for (let i = 0; i < n; i++) ledger.append(receiptBody(finished(i), PRICE));
  await ledger.close();
  return { dir, path, identity, ledger };
}

async function captureLogs<T>(fn: () => Promise<T>): Promise<{ result: T; logs: string[] }> {
  const logs: string[] = [];
  const previous = setSink((line) => logs.push(line));
  setLevel("debug");
  try {
    return { result: await fn(), logs };
  } finally {
    setSink(previous);
    setLevel("info");
  }
}

Deno.test("the canonical encoding sorts keys, has no whitespace and refuses non-integers", () => {
  assert.equal(canonicalJson({ b: 1, a: 'x\n"y"', c: null }), '{"a":"x\\n\\"y\\"","b":1,"c":null}');
  assert.throws(() => canonicalJson({ a: 1.5 }), RangeError);
  assert.throws(() => canonicalJson({ a: Number.NaN }), RangeError);
});

Deno.test("each terminal frame over real sockets appends one signed receipt; cancels append none", async () => {
  const stack = await startStack({
    backends: [{
      kind: "vllm",
      scripts: { [MODEL]: { deltas: ["COMPLETION-TEXT-1", " and more"], inputTokens: 17 } },
    }],
    limits: "[limits]\nmax_concurrent = 8",
    toml: `[pricing.models]\n"${MODEL}" = { input_per_1m = 300_000, output_per_1m = 450_000 }\n`,
  });
  try {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    const prompt = { messages: [{ role: "user", content: "PROMPT-TEXT-1" }] };
    const done = s.sendJob({ model_id: MODEL, request: prompt });
    const result = await s.collect(done);
    const refused = s.sendJob({ model_id: "no/such-model" });
    await s.collect(refused);
    // A cancelled job: a long stream, cancelled after its first chunk: no terminal frame.
    stack.fakes[0]!.setScript(MODEL, { deltas: 1000, delayMs: 5 });
    const ended = Promise.withResolvers<FinishedJob>();
    stack.agent.onJobFinished((j) => j.outcome === "cancelled" && ended.resolve(j));
    const cancelled = s.sendJob({ model_id: MODEL });
    await s.waitFor((f) => f.type === "job_chunk" && f.job_id === cancelled);
    s.cancel(cancelled);
    await ended.promise;
    await stack.agent.ledger.close();

    const path = `${stack.dir}/receipts.jsonl`;
    const text = await Deno.readTextFile(path);
    assert.ok(!text.includes("PROMPT-TEXT-1") && !text.includes("COMPLETION-TEXT-1"));
    const stored = await lines(path);
    assert.equal(stored.length, 2);
    const [a, b] = stored.map((l) => JSON.parse(l) as Receipt);
    const tokens = result.terminal.tokens as { input: number; output: number };
    assert.deepEqual(
      { ...a!, sig: "" },
      {
        "v": 1,
        "job_id": done,
        "model": MODEL,
        "backend": "vllm",
        "format": "openai",
        "outcome": "job_done",
        "input_tokens": tokens.input,
        "output_tokens": tokens.output,
        "first_chunk_ms": a!.first_chunk_ms,
        "duration_ms": result.terminal.duration_ms,
        "bytes": result.bytes.length,
        "sha256": sha256(result.bytes),
        "input_per_1m": 300_000,
        "output_per_1m": 450_000,
        "time": a!.time,
        "prev": GENESIS,
        "pubkey": stack.agent.identity.publicKeyB64,
        "sig": "",
      },
    );
    assert.equal(typeof a!.first_chunk_ms, "number");
    assert.match(a!.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(b!.job_id, refused);
    assert.equal(b!.outcome, "model_not_loaded");
    assert.equal(b!.backend, null);
    assert.equal(b!.sha256, sha256(""));
    assert.equal(b!.prev, sha256(stored[0]!));
    for (const l of stored) assert.ok(await independentlyValid(l), l);
  } finally {
    await stack.stop();
  }
});

Deno.test("a ledger that was not touched verifies: every signature and the chain", async () => {
  const { dir, path, identity } = await ledgerWith(5);
  try {
    const r = await verifyLedger(path, { pubkey: identity.publicKeyB64 });
    assert.equal(r.broken, undefined);
    assert.equal(r.receipts, 5);
    assert.deepEqual(r.pubkeys, [identity.publicKeyB64]);
    assert.equal(r.anchor, undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an edited line is reported as the first broken line", async () => {
  const { dir, path } = await ledgerWith(5);
  try {
    const stored = await lines(path);
    const edited = JSON.parse(stored[2]!) as Receipt;
    edited.output_tokens += 1000;
    stored[2] = canonicalJson(edited as unknown as Record<string, string | number | null>);
    await Deno.writeTextFile(path, stored.join("\n") + "\n");
    const r = await verifyLedger(path);
    assert.equal(r.broken?.line, 3);
    assert.match(r.broken!.reason, /signature does not verify/);
    assert.equal(r.receipts, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a line rewritten with other whitespace is reported as not canonical", async () => {
  const { dir, path } = await ledgerWith(3);
  try {
    const stored = await lines(path);
    stored[1] = JSON.stringify(JSON.parse(stored[1]!), null, 1).replaceAll("\n", "");
    await Deno.writeTextFile(path, stored.join("\n") + "\n");
    const r = await verifyLedger(path);
    assert.equal(r.broken?.line, 2);
    assert.match(r.broken!.reason, /canonical/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a deleted line breaks the chain at the line after it", async () => {
  const { dir, path } = await ledgerWith(5);
  try {
    const stored = await lines(path);
    stored.splice(1, 1);
    await Deno.writeTextFile(path, stored.join("\n") + "\n");
    const r = await verifyLedger(path);
    assert.equal(r.broken?.line, 2);
    assert.match(r.broken!.reason, /prev does not match/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deleting the first receipt of a ledger that never rotated is detected", async () => {
  const { dir, path } = await ledgerWith(3);
  try {
    const stored = await lines(path);
    await Deno.writeTextFile(path, stored.slice(1).join("\n") + "\n");
    const r = await verifyLedger(path);
    assert.equal(r.broken?.line, 1);
    assert.match(r.broken!.reason, /genesis/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rotation by size keeps the chain across files and drops the oldest beyond keep", async () => {
  // ~560-byte lines, 2 KiB files: 3 receipts a file; 20 receipts need 7 files, 4 are kept.
  const { dir, path } = await ledgerWith(20, { maxBytes: 2048, keep: 3 });
  try {
    const files = await ledgerFiles(path);
    assert.deepEqual(files, [`${path}.3`, `${path}.2`, `${path}.1`, path]);
    for (const f of files) assert.ok((await Deno.stat(f)).size <= 2048);
    const live = await lines(path);
    const newestRotated = await lines(`${path}.1`);
    assert.equal((JSON.parse(live[0]!) as Receipt).prev, sha256Hex(newestRotated.at(-1)!));
    const r = await verifyLedger(path);
    assert.equal(r.broken, undefined);
    const kept = (await Promise.all(files.map(lines))).flat();
    assert.equal(r.receipts, kept.length);
    assert.equal(r.anchor, (JSON.parse(kept[0]!) as Receipt).prev);
    assert.equal((JSON.parse(kept.at(-1)!) as Receipt).job_id, finished(19).jobId);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a rotated file that goes missing breaks the chain where it was", async () => {
  const { dir, path } = await ledgerWith(12, { maxBytes: 2048, keep: 5 });
  try {
    await Deno.remove(`${path}.2`);
    const r = await verifyLedger(path);
    assert.equal(r.broken?.file, `${path}.1`);
    assert.equal(r.broken?.line, 1);
    assert.match(r.broken!.reason, /prev does not match/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a new ledger over an old file continues its chain, after cutting a partial last line", async () => {
  const { dir, path, identity } = await ledgerWith(2);
  try {
    await Deno.writeTextFile(path, '{"v":1,"job_id":"half-writ', { append: true });
    const { logs } = await captureLogs(async () => {
      const again = new Ledger({ path, identity: () => identity });
      again.append(receiptBody(finished(7), PRICE));
      await again.close();
    });
    assert.ok(logs.some((l) => l.includes("partial line")));
    const stored = await lines(path);
    assert.equal(stored.length, 3);
    assert.equal((JSON.parse(stored[2]!) as Receipt).prev, sha256Hex(stored[1]!));
    assert.equal((await verifyLedger(path)).broken, undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("append returns at once; the writer signs later and close waits for it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-ledger-" });
  try {
    const { identity } = await loadOrCreateIdentity(`${dir}/identity.key`);
    const gate = Promise.withResolvers<void>();
    const slow = {
      publicKeyB64: identity.publicKeyB64,
      sign: async (d: Uint8Array) => (await gate.promise, identity.sign(d)),
    };
    const ledger = new Ledger({ path: `${dir}/receipts.jsonl`, identity: () => slow });
    for (let i = 0; i < 3; i++) ledger.append(receiptBody(finished(i), PRICE));
    assert.equal(ledger.written, 0);
    const closed = ledger.close();
    gate.resolve();
    await closed;
    assert.equal(ledger.written, 3);
    assert.equal((await verifyLedger(`${dir}/receipts.jsonl`)).receipts, 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a ledger that cannot be written logs one error, loses the receipts and goes on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-ledger-" });
  try {
    const { identity } = await loadOrCreateIdentity(`${dir}/identity.key`);
    await Deno.writeTextFile(`${dir}/not-a-dir`, "");
    const ledger = new Ledger({
      path: `${dir}/not-a-dir/receipts.jsonl`,
      identity: () => identity,
    });
    const { logs } = await captureLogs(async () => {
      for (let i = 0; i < 3; i++) {
        ledger.append(receiptBody(finished(i), PRICE));
        await ledger.close();
      }
    });
    assert.equal(ledger.lost, 3);
    assert.equal(logs.filter((l) => l.includes("receipt ledger write failed")).length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("receipts lists a table with earnings and filters with --since", async () => {
  const { dir, path } = await ledgerWith(3);
  try {
    const out: string[] = [];
    assert.equal(await main(["receipts", "--file", path], (l) => out.push(l)), 0);
    assert.match(out[0]!, /^time\s+job\s+model\s+outcome\s+in\s+out\s+earned µUSDC$/);
    assert.equal(out.length, 5);
    // job 0: 10 in × 0.3 + 20 out × 0.45 = 12 µUSDC
    assert.match(
      out[1]!,
      /^2026-01-02T03:04:05Z\s+\S+-000000000000\s+\S+\s+job_done\s+10\s+20\s+12\.00$/,
    );
    assert.match(out[4]!, /^3 receipt\(s\), 3 job_done, earned 38\.25 µUSDC/);
    const since: string[] = [];
    await main(
      ["receipts", "--file", path, "--since", "2026-01-02T03:04:06Z"],
      (l) => since.push(l),
    );
    assert.equal(since.length, 4); // header, 2 rows, total
    const json: string[] = [];
    await main(["receipts", "--file", path, "--json"], (l) => json.push(l));
    assert.deepEqual(json, await lines(path));
    // Without --file: the ledger beside the identity named by agent.toml.
    await Deno.writeTextFile(
      `${dir}/agent.toml`,
      `[coordinator]\nurl = "wss://coordinator.invalid/provider/connect"\n` +
        `[identity]\nkey_path = "${dir}/identity.key"\n` +
        `[pricing]\ndefault_input_per_1m = 1\ndefault_output_per_1m = 1\n`,
    );
    const viaConfig: string[] = [];
    assert.equal(await main(["receipts", "-c", `${dir}/agent.toml`], (l) => viaConfig.push(l)), 0);
    assert.deepEqual(viaConfig, out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("receipts --verify exits 0 on an intact ledger and 1 naming the first broken line", async () => {
  const { dir, path, identity } = await ledgerWith(4);
  try {
    const ok: string[] = [];
    assert.equal(await main(["receipts", "--verify", "--file", path], (l) => ok.push(l)), 0);
    assert.match(ok[0]!, /^ok: 4 receipt\(s\) in 1 file\(s\)/);
    assert.ok(ok[0]!.includes(identity.publicKeyB64));
    const stored = await lines(path);
    stored.splice(2, 1);
    await Deno.writeTextFile(path, stored.join("\n") + "\n");
    const bad: string[] = [];
    assert.equal(await main(["receipts", "--verify", "--file", path], (l) => bad.push(l)), 1);
    assert.equal(
      bad[0],
      `broken: ${path} line 3: ${"prev does not match the line before: a line was deleted, inserted or edited"}`,
    );
    const other = (await loadOrCreateIdentity(`${dir}/other.key`)).identity.publicKeyB64;
    const wrongKey: string[] = [];
    const code = await main(
      ["receipts", "--verify", "--json", "--file", path, "--pubkey", other],
      (l) => wrongKey.push(l),
    );
    assert.equal(code, 1);
    const report = JSON.parse(wrongKey[0]!);
    assert.equal(report.ok, false);
    assert.equal(report.broken.line, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("receipts shows control characters of a model id as U+FFFD, never raw", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-ledger-" });
  try {
    const { identity } = await loadOrCreateIdentity(`${dir}/identity.key`);
    const path = `${dir}/receipts.jsonl`;
    const ledger = new Ledger({ path, identity: () => identity });
    ledger.append(receiptBody(finished(0, { model: "evil\u001b[2J\tmodel" }), PRICE));
    await ledger.close();
    const out: string[] = [];
    await main(["receipts", "--file", path], (l) => out.push(l));
    assert.ok(out[1]!.includes("evil\ufffd[2J\ufffdmodel"), out[1]);
    assert.ok(!out.join("\n").includes("\u001b"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("receipts --since refuses a value that is not a date", async () => {
  const err: string[] = [];
  const code = await main(
    ["receipts", "--file", "/nonexistent", "--since", "yesterday"],
    () => {},
    (l) => err.push(l),
  );
  assert.equal(code, 1);
  assert.match(err[0]!, /--since: expected a date/);
});

// ---- durability (issue 14): group commit and the signed checkpoint ----

Deno.test("the fixed-order receipt encoding is byte for byte the canonical encoding", () => {
  const bodies = [
    receiptBody(finished(1), PRICE),
    receiptBody(finished(2, { backend: undefined, firstChunkMs: undefined }), PRICE),
    receiptBody(finished(3, { model: 'm\u0000"\\\n\u2028é😀', outcome: "internal" }), PRICE),
  ];
  for (const body of bodies) {
    const fields = { ...body, "prev": GENESIS, "pubkey": "cGs=" } as Record<string, Scalar>;
    assert.equal(receiptLine(body, GENESIS, "cGs="), canonicalJson(fields));
    assert.equal(
      receiptLine(body, GENESIS, "cGs=", "c2ln"),
      canonicalJson({ ...fields, "sig": "c2ln" }),
    );
  }
  assert.throws(() => receiptLine({ ...bodies[0]!, "bytes": 1.5 }, GENESIS, "cGs="), RangeError);
});

Deno.test("group commit: appends are fsynced and checkpointed one window later, and on close", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-ledger-" });
  try {
    const { identity } = await loadOrCreateIdentity(`${dir}/identity.key`);
    const path = `${dir}/receipts.jsonl`;
    const timers: { fn: () => void; ms: number }[] = [];
    let scheduled = Promise.withResolvers<void>();
    let cancelled = 0;
    const ledger = new Ledger({
      path,
      identity: () => identity,
      schedule: (fn, ms) => {
        timers.push({ fn, ms });
        scheduled.resolve();
        return () => cancelled++;
      },
    });
    for (let i = 0; i < 3; i++) ledger.append(receiptBody(finished(i), PRICE));
    await scheduled.promise; // written, and its commit scheduled
    assert.equal(ledger.written, 3);
    assert.equal(ledger.commits, 0, "no fsync on the job path or per append");
    assert.deepEqual(timers.map((t) => t.ms), [GROUP_COMMIT_MS]);
    assert.equal(await readCheckpoint(path), undefined);

    timers[0]!.fn(); // the window passed
    scheduled = Promise.withResolvers<void>();
    ledger.append(receiptBody(finished(3), PRICE));
    await scheduled.promise;
    assert.equal(ledger.commits, 1);
    assert.equal(timers.length, 2, "one commit scheduled per window, not per append");
    const stored = await lines(path);
    const cp = await readCheckpoint(path);
    assert.ok(typeof cp === "object");
    assert.ok(cp.lines === 3 || cp.lines === 4);
    assert.equal(cp.head, sha256Hex(stored[cp.lines - 1]!));

    await ledger.close(); // drain: the last receipt is committed at once
    assert.equal(ledger.commits, 2);
    assert.equal(cancelled, 1);
    const last = await readCheckpoint(path);
    assert.ok(typeof last === "object");
    assert.equal(last.lines, 4);
    assert.equal(last.head, sha256Hex(stored[3]!));
    assert.equal(last.pubkey, identity.publicKeyB64);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("receipts cut from the end of the newest file (a power loss) are detected by the checkpoint", async () => {
  const { dir, path } = await ledgerWith(5);
  try {
    assert.equal((await verifyLedger(path)).checkpoint?.lines, 5);
    const stored = await lines(path);
    // Whole lines lost, as when the last pages never reached the disk.
    await Deno.writeTextFile(path, stored.slice(0, 3).join("\n") + "\n");
    const r = await verifyLedger(path);
    assert.equal(r.receipts, 3, "what is left still verifies line by line");
    assert.equal(r.broken?.file, path);
    assert.equal(r.broken?.line, 4);
    assert.match(r.broken!.reason, /records 5 receipt\(s\).*holds 3.*cut from its end/);
    // Cut in the middle of a line: the partial line is not a receipt, the cut is still found.
    await Deno.writeTextFile(path, stored.slice(0, 4).join("\n") + "\n" + stored[4]!.slice(0, 40));
    assert.match((await verifyLedger(path)).broken!.reason, /holds 4/);
    const out: string[] = [];
    assert.equal(await main(["receipts", "--verify", "--file", path], (l) => out.push(l)), 1);
    assert.match(out[0]!, /^broken: .*receipts\.jsonl line 5: the checkpoint of .*\(truncated\)/);
    // An intact ledger says its checkpoint matched.
    await Deno.writeTextFile(path, stored.join("\n") + "\n");
    const ok: string[] = [];
    assert.equal(await main(["receipts", "--verify", "--file", path], (l) => ok.push(l)), 0);
    assert.match(ok[1]!, /^ok: the signed checkpoint of .* \(5 receipt\(s\) in the newest file\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an edited or foreign checkpoint is reported as tampering", async () => {
  const { dir, path } = await ledgerWith(4);
  try {
    const cpPath = checkpointPath(path);
    const original = await Deno.readTextFile(cpPath);
    // Lowering the count to hide a cut: the signature no longer verifies.
    await Deno.writeTextFile(cpPath, original.replace('"lines":4', '"lines":2'));
    const edited = await verifyLedger(path);
    assert.equal(edited.broken?.file, cpPath);
    assert.match(edited.broken!.reason, /^checkpoint signature does not verify/);
    // Whitespace added: not canonical.
    await Deno.writeTextFile(cpPath, original.replace('{"bytes"', '{ "bytes"'));
    assert.match((await verifyLedger(path)).broken!.reason, /not in canonical form/);
    // A valid checkpoint signed by another key (an attacker's) for a shorter ledger.
    const other = (await loadOrCreateIdentity(`${dir}/other.key`)).identity;
    const stored = await lines(path);
    await writeCheckpoint(path, { head: sha256Hex(stored[1]!), lines: 2, bytes: 0 }, other);
    assert.match((await verifyLedger(path)).broken!.reason, /a key that signed no receipt/);
    await Deno.remove(cpPath);
    const out: string[] = [];
    assert.equal(await main(["receipts", "--verify", "--file", path], (l) => out.push(l)), 0);
    assert.match(out[1]!, /^note: no checkpoint beside the ledger/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a rotation is committed with a checkpoint of the empty live file; the ledger verifies", async () => {
  const { dir, path } = await ledgerWith(9, { maxBytes: 2_000 });
  try {
    const files = await ledgerFiles(path);
    assert.ok(files.length > 1);
    const r = await verifyLedger(path);
    assert.equal(r.broken, undefined);
    assert.equal(r.receipts, 9);
    assert.ok(r.checkpoint !== undefined);
    // Emptying the live file after a rotation is caught too.
    const live = await lines(path);
    if (live.length > 0) {
      await Deno.writeTextFile(path, "");
      assert.ok((await verifyLedger(path)).broken !== undefined);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
