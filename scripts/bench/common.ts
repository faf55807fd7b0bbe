// Shared parts of the benchmark's processes (scripts/bench.ts and its helpers): the JSON-line
// command loop over stdin/stdout, epoch clocks, percentiles, and the checks that a relayed or
// directly read stream is complete (every delta, in order, usage and [DONE]) and how late it came.

import { concatBytes } from "../../src/bytes.ts";

/** Epoch milliseconds with fractions, the clock the fake backend stamps deltas with. */
export function nowEpoch(): number {
  return performance.timeOrigin + performance.now();
}

/** A command sent to a helper process; `id` matches the reply. */
export interface Command {
  id: number;
  cmd: string;
  [key: string]: unknown;
}

/** A helper's answer: the command's result fields, or `error`. */
export interface Reply {
  id: number;
  error?: string;
  [key: string]: unknown;
}

const MAX_LINES = 1_000_000;
/** A helper exits on its own after this long, whatever happens to its parent. */
const HELPER_LIFETIME_MS = 60 * 60 * 1000;

/** The lines of a byte stream (at most `max`), without their newlines. */
export async function* lines(
  stream: ReadableStream<Uint8Array>,
  max = MAX_LINES,
): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  let count = 0;
  for await (const chunk of stream) {
    buf += decoder.decode(chunk, { stream: true });
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (++count >= max) return;
    }
  }
  if (buf !== "") yield buf;
}

/**
 * Runs a helper's command loop: one JSON command per stdin line, one JSON reply per stdout line,
 * in order, until `quit` or stdin closes. A watchdog ends the process if it outlives the bench.
 */
export async function serveCommands(
  handle: (cmd: Command) => Promise<Record<string, unknown>>,
): Promise<void> {
  const watchdog = setTimeout(() => Deno.exit(3), HELPER_LIFETIME_MS);
  Deno.unrefTimer(watchdog);
  for await (const line of lines(Deno.stdin.readable)) {
    if (line.trim() === "") continue;
    const cmd = JSON.parse(line) as Command;
    if (cmd.cmd === "quit") break;
    let reply: Reply;
    try {
      reply = { ...(await handle(cmd)), id: cmd.id };
    } catch (err) {
      reply = {
        id: cmd.id,
        error: err instanceof Error ? (err.stack ?? err.message) : String(err),
      };
    }
    console.log(JSON.stringify(reply));
  }
  clearTimeout(watchdog);
}

/** Rejects with `what` timed out after `ms`; the timer never outlives the race. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The nearest-rank quantile `q` (0..1) of `xs`; NaN when empty. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

/** The median of `xs` (the mean of the middle two for an even count); NaN when empty. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Latency figures of one round, in milliseconds. */
export interface Latency {
  n: number;
  p50: number;
  p99: number;
  min: number;
  max: number;
}

export function latencyOf(samples: readonly number[]): Latency {
  return {
    n: samples.length,
    p50: quantile(samples, 0.5),
    p99: quantile(samples, 0.99),
    min: samples.length ? Math.min(...samples) : NaN,
    max: samples.length ? Math.max(...samples) : NaN,
  };
}

/** One stream as a reader received it: the pieces in order, each with its arrival time. */
export interface Received {
  pieces: Uint8Array[];
  arrivals: number[];
}

const latin1 = new TextDecoder("latin1");
const DONE = "data: [DONE]\n\n";
const TOKEN_DELTA = /"content":"tok(\d+) "/g;
const STAMP = /"content":"t=(\d+(?:\.\d+)?);"/g;

/**
 * Why a fake OpenAI stream of `deltas` content deltas is not complete, or undefined when it is:
 * every delta present once and in order (`tokN ` or, with timestamps, `t=…;`), the usage record
 * with the right completion count, and `[DONE]` last.
 */
export function streamProblem(
  bytes: Uint8Array,
  deltas: number,
  timestamps: boolean,
): string | undefined {
  const text = latin1.decode(bytes);
  if (!text.endsWith(DONE)) return `stream does not end with [DONE] (${bytes.length} bytes)`;
  if (!text.includes(`"completion_tokens":${deltas},`)) {
    return `no usage record with completion_tokens ${deltas}`;
  }
  if (timestamps) {
    const n = text.match(STAMP)?.length ?? 0;
    return n === deltas ? undefined : `${n} timestamped deltas, expected ${deltas}`;
  }
  let next = 0;
  for (const m of text.matchAll(TOKEN_DELTA)) {
    if (Number(m[1]) !== next) return `delta tok${m[1]} where tok${next} was due`;
    next++;
  }
  return next === deltas ? undefined : `${next} deltas, expected ${deltas}`;
}

/**
 * Latency samples of a timestamped stream: for each delta, (arrival of the piece holding its
 * end) − (the time the backend stamped into it), in milliseconds.
 */
export function stampLatencies(r: Received): number[] {
  const text = latin1.decode(concatBytes(r.pieces));
  const out: number[] = [];
  let piece = 0;
  let pieceEnd = r.pieces[0]?.length ?? 0;
  for (const m of text.matchAll(STAMP)) {
    const end = m.index + m[0].length;
    while (end > pieceEnd && piece + 1 < r.pieces.length) pieceEnd += r.pieces[++piece]!.length;
    out.push(r.arrivals[piece]! - Number(m[1]));
  }
  return out;
}
