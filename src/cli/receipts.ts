// The `receipts` command (issue 8): lists the signed job receipts of the local ledger as a
// table or JSON lines, and with --verify checks every signature and the hash chain across
// rotated files and the signed checkpoint, naming the first broken line (exit 1).

import { type CommandContext, loadForCommand, UsageError } from "./command.ts";
import { earnedMicroUsdc, type Receipt } from "../books/ledger.ts";
import { stateFile } from "../paths.ts";
import { checkpointPath } from "../books/checkpoint.ts";
import { readLedger, verifyLedger } from "../books/verify.ts";

/** Parses --since: a UTC date `YYYY-MM-DD` or an RFC 3339 time; returns epoch ms. */
export function parseSince(text: string): number {
  const ms = /^\d{4}-\d\d-\d\d$/.test(text) ? Date.parse(`${text}T00:00:00Z`) : Date.parse(text);
  if (!Number.isFinite(ms)) {
    throw new UsageError(
      `--since: expected a date (2026-01-31) or an RFC 3339 time, got "${text}"`,
    );
  }
  return ms;
}

/**
 * Runs `usepod-agent receipts [--since DATE] [--verify] [--json] [--file PATH] [--pubkey KEY]`.
 *
 * @example
 * ```ts
 * const code = await receiptsCommand(ctx); // 0, or 1 when --verify finds a broken line
 * ```
 */
export async function receiptsCommand(ctx: CommandContext): Promise<number> {
  const f = ctx.flags;
  const since = typeof f.since === "string" ? parseSince(f.since) : undefined;
  const path = typeof f.file === "string"
    ? f.file
    : stateFile((await loadForCommand(ctx)).identity, "receipts.jsonl");
  if (f.verify === true) {
    return await verify(ctx, path, typeof f.pubkey === "string" ? f.pubkey : undefined);
  }
  const rows: Receipt[] = [];
  let unreadable = 0;
  for await (const l of readLedger(path)) {
    if (!l.receipt) unreadable++;
    else if (since === undefined || Date.parse(l.receipt.time) >= since) {
      if (f.json === true) ctx.out(l.text);
      else rows.push(l.receipt);
    }
  }
  if (f.json !== true) table(ctx, path, rows);
  if (unreadable > 0 && f.json !== true) {
    ctx.out(`${unreadable} unreadable line(s) skipped: run usepod-agent receipts --verify`);
  }
  return 0;
}

async function verify(ctx: CommandContext, path: string, pubkey?: string): Promise<number> {
  const r = await verifyLedger(path, pubkey === undefined ? {} : { pubkey });
  if (ctx.flags.json === true) {
    ctx.out(JSON.stringify({ "ok": r.broken === undefined, ...r }));
    return r.broken ? 1 : 0;
  }
  if (r.broken) {
    const b = r.broken;
    ctx.out(`broken: ${b.file} line ${b.line}: ${b.reason}`);
    ctx.out(`(${r.receipts} receipt(s) before it verified)`);
    return 1;
  }
  if (r.receipts === 0) {
    ctx.out(`ok: no receipts yet (${path})`);
    return 0;
  }
  ctx.out(
    `ok: ${r.receipts} receipt(s) in ${r.files.length} file(s): every signature and the chain ` +
      `verify; signed by ${r.pubkeys.join(", ")}`,
  );
  if (r.checkpoint !== undefined) {
    ctx.out(
      `ok: the signed checkpoint of ${r.checkpoint.time} (${r.checkpoint.lines} receipt(s) in ` +
        `the newest file) is present: nothing was cut before it`,
    );
  } else {
    ctx.out(
      `note: no checkpoint beside the ledger (${checkpointPath(path)}): a cut at the end of ` +
        `the newest file cannot be detected`,
    );
  }
  if (r.anchor !== undefined) {
    ctx.out(`note: the oldest kept file continues receipts rotated away (prev ${r.anchor})`);
  }
  return 0;
}

function table(ctx: CommandContext, path: string, rows: Receipt[]): void {
  if (rows.length === 0) {
    ctx.out(`no receipts (${path})`);
    return;
  }
  const lines = [["time", "job", "model", "outcome", "in", "out", "earned µUSDC"]];
  let earned = 0;
  let done = 0;
  for (const r of rows) {
    const e = earnedMicroUsdc(r);
    earned += e;
    if (r.outcome === "job_done") done++;
    lines.push([
      r.time.replace(/\.\d+Z$/, "Z"),
      printable(r.job_id),
      printable(r.model),
      printable(r.outcome),
      String(r.input_tokens),
      String(r.output_tokens),
      e.toFixed(2),
    ]);
  }
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  const numeric = new Set([4, 5, 6]);
  for (const l of lines) {
    ctx.out(
      l.map((c, i) => numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)).join("  ")
        .trimEnd(),
    );
  }
  ctx.out(
    `${rows.length} receipt(s), ${done} job_done, earned ${earned.toFixed(2)} µUSDC ` +
      `(${(earned / 1e6).toFixed(6)} USDC)`,
  );
}

/** Text from the ledger as a terminal may show it: control characters become U+FFFD. */
function printable(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, "\ufffd");
}
