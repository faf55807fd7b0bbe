// Usage accounting for relayed backend SSE streams, OpenAI and Anthropic wire formats
// (PROTOCOL.md §4 token counts and tokens_emitted; BACKENDS.md "Streaming" and "How streams end").
// Watches bytes on the hot path without decoding every event: only usage and error lines are parsed.

import type { WireFormat } from "../link/protocol.ts";

export type { WireFormat };

/** Totals of one stream, as returned by {@linkcode UsageMeter.finish}. */
export interface Usage {
  /** Prompt/input tokens as reported by the stream, else 0. */
  input: number;
  /** Reported output tokens, else the estimate (one token per content delta). */
  output: number;
  /** True when the stream carried a usage record for output tokens. */
  reported: boolean;
  /** Content deltas seen: content, reasoning, tool-call arguments; any Anthropic content_block_delta. */
  deltas: number;
  /** OpenAI: saw `data: [DONE]` or a non-null finish_reason. Anthropic: saw message_stop. */
  completed: boolean;
  /** Message of the first error event inside the stream, if any. */
  error: string | undefined;
}

/** What the executor feeds a job's body to: the SSE meter, or the JSON-answer one. */
export interface Meter {
  /** Watches the next piece of the body. */
  feed(bytes: Uint8Array): void;
  /** Output tokens so far, for tokens_emitted. */
  readonly outputSoFar: number;
  /** The totals once the body ended. */
  finish(): Usage;
}

const LF = "\n", CR = 13, SPACE = 32, TAB = 9, QUOTE = 34, COLON = 58, BRACE = 123;
const BACKSLASH = 92;
/** Lines longer than this (UTF-16 units) are skipped whole; no usage or delta line comes close. */
const MAX_LINE = 1 << 20;

/**
 * A JSON key, found through a short fragment of it. V8's `indexOf` builds a Boyer-Moore table
 * for patterns of 7+ characters and stops at every `"` for patterns that start with one; a
 * 5–6 letter fragment is a plain memchr scan, several times cheaper on a 200-character chunk.
 */
type Key = { id: number; quoted: string; fragment: string; offset: number };

let keyCount = 0;
function key(name: string, fragment: string): Key {
  const quoted = `"${name}"`;
  return { id: keyCount++, quoted, fragment, offset: quoted.indexOf(fragment) };
}

const CONTENT = key("content", 'ntent"');
const OTHER_DELTA_KEYS = [
  key("reasoning_content", 'ntent"'),
  key("reasoning", "soning"),
  key("arguments", 'ments"'),
];
const FINISH_REASON = key("finish_reason", "_reaso");
const USAGE = key("usage", 'usage"');
const ERROR = key("error", 'rror"');
const TYPE = key("type", 'type"');
const ANTHROPIC_TYPES = [
  "content_block_delta",
  "message_start",
  "message_delta",
  "message_stop",
  "error",
];

type Json = Record<string, unknown>;

function objectAt(v: unknown): Json | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? v as Json : undefined;
}

function parseObject(text: string): Json | undefined {
  try {
    return objectAt(JSON.parse(text));
  } catch {
    return undefined;
  }
}

function count(v: unknown): number | undefined {
  return Number.isSafeInteger(v) && (v as number) >= 0 ? v as number : undefined;
}

/**
 * The whole prompt of an Anthropic usage record (PROTOCOL §4): `input_tokens` plus the tokens an
 * engine's prompt cache read or wrote (`cache_read_input_tokens`, `cache_creation_input_tokens`),
 * so a cached prompt bills as much as in the OpenAI format. Undefined when none is present.
 *
 * @example
 * ```ts
 * anthropicInput({ input_tokens: 1, cache_read_input_tokens: 28 }); // 29
 * ```
 */
export function anthropicInput(usage: Record<string, unknown> | undefined): number | undefined {
  let sum: number | undefined;
  for (const k of ["input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"]) {
    const n = count(usage?.[k]);
    if (n !== undefined) sum = (sum ?? 0) + n;
  }
  return sum;
}

function messageOf(body: Json): string | undefined {
  const err = body["error"];
  if (typeof err === "string" && err !== "") return err;
  const inner = objectAt(err)?.["message"];
  if (typeof inner === "string" && inner !== "") return inner;
  for (const field of ["message", "detail"]) {
    const m = body[field];
    if (typeof m === "string" && m !== "") return m;
  }
  return undefined;
}

/**
 * The human message of a backend error body, or undefined when it has none.
 * Accepts `{"error":{"message":…}}`, `{"error":"…"}`, `{"object":"error","message":…}`,
 * `{"message":…}` and FastAPI's `{"detail":"…"}`; never throws.
 *
 * @example
 * ```ts
 * errorMessageOf('{"error":"Unauthorized"}'); // "Unauthorized"
 * errorMessageOf("<html>bad gateway</html>"); // undefined
 * ```
 */
export function errorMessageOf(body: string): string | undefined {
  const obj = parseObject(body);
  return obj === undefined ? undefined : messageOf(obj);
}

/**
 * Finds keys in one decoded buffer of SSE text without parsing it. Inside a JSON string every
 * quote is escaped, so an unescaped `"name"` is a whole string token: a key when a colon
 * follows, else a value (possibly model text: a delta that is exactly `usage`). Per key it
 * remembers where the fragment next occurs, so a key absent from a 64 KiB read costs one scan
 * of the read, not one per line.
 */
class KeyScanner {
  buf = "";
  readonly #from: number[] = new Array(keyCount).fill(Infinity);
  readonly #next: number[] = new Array(keyCount).fill(-1);

  reset(buf: string): void {
    this.buf = buf;
    this.#from.fill(Infinity);
  }

  /** Where `k`'s fragment next occurs at or after `from`, or -1. */
  #find(k: Key, from: number): number {
    const next = this.#next[k.id]!;
    if (from >= this.#from[k.id]! && (next === -1 || next >= from)) return next;
    this.#from[k.id] = from;
    return this.#next[k.id] = this.buf.indexOf(k.fragment, from);
  }

  /** Start of the first whole string token `"k"` (key or value) in `[from, end)`, or -1. */
  keyAt(k: Key, from: number, end: number): number {
    const buf = this.buf;
    for (let at = this.#find(k, from + k.offset); at !== -1; at = this.#find(k, at + 1)) {
      const s = at - k.offset;
      if (s + k.quoted.length > end) return -1;
      if (buf.startsWith(k.quoted, s) && buf.charCodeAt(s - 1) !== BACKSLASH) return s;
    }
    return -1;
  }

  /** Index of the value of the first object key `k` starting in `[from, end)`, or -1. */
  valueOf(k: Key, from: number, end: number): number {
    const buf = this.buf;
    for (let s = this.keyAt(k, from, end); s !== -1; s = this.keyAt(k, s + 1, end)) {
      let i = skipSpace(buf, s + k.quoted.length);
      if (buf.charCodeAt(i) !== COLON) continue;
      i = skipSpace(buf, i + 1);
      if (i < end) return i;
    }
    return -1;
  }

  /** True when some key `k` in `[from, end)` holds a non-empty string. */
  hasText(k: Key, from: number, end: number): boolean {
    const buf = this.buf;
    for (let v = this.valueOf(k, from, end); v !== -1; v = this.valueOf(k, v, end)) {
      if (buf.charCodeAt(v) === QUOTE && v + 1 < end && buf.charCodeAt(v + 1) !== QUOTE) {
        return true;
      }
    }
    return false;
  }

  /** The Anthropic event type named by some `"type"` string in `[from, end)`, or "". */
  anthropicType(from: number, end: number): string {
    const buf = this.buf;
    for (let v = this.valueOf(TYPE, from, end); v !== -1; v = this.valueOf(TYPE, v, end)) {
      if (buf.charCodeAt(v) !== QUOTE) continue;
      for (const t of ANTHROPIC_TYPES) {
        if (buf.startsWith(t, v + 1) && buf.charCodeAt(v + 1 + t.length) === QUOTE) return t;
      }
    }
    return "";
  }
}

function skipSpace(s: string, i: number): number {
  let c = s.charCodeAt(i);
  while (c === SPACE || c === TAB) c = s.charCodeAt(++i);
  return i;
}

/**
 * Incremental token accounting for one job's stream. Feed it the backend's bytes as they
 * are relayed, in any pieces; call {@linkcode UsageMeter.finish} when the stream ends.
 *
 * @example
 * ```ts
 * const meter = new UsageMeter("openai");
 * meter.feed(new TextEncoder().encode('data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'));
 * meter.feed(new TextEncoder().encode("data: [DONE]\n\n"));
 * meter.finish(); // { input: 0, output: 1, reported: false, deltas: 1, completed: true, error: undefined }
 * ```
 */
export class UsageMeter implements Meter {
  readonly #anthropic: boolean;
  readonly #decoder = new TextDecoder();
  readonly #scan = new KeyScanner();
  #carry = "";
  #overlong = false;
  #finished = false;
  #event = "";
  #input = 0;
  #output: number | undefined;
  #startOutput: number | undefined;
  #deltas = 0;
  #completed = false;
  #error: string | undefined;

  constructor(format: WireFormat) {
    this.#anthropic = format === "anthropic";
  }

  /** Watches the next piece of the stream; pieces may split lines and UTF-8 characters anywhere. */
  feed(bytes: Uint8Array): void {
    if (!this.#finished) this.#take(this.#decoder.decode(bytes, { stream: true }), false);
  }

  /**
   * Output tokens so far (reported if known, else estimated) — used for tokens_emitted in job_error.
   */
  get outputSoFar(): number {
    if (this.#output !== undefined) return this.#output;
    // message_start's count is from before the first delta: the deltas since may outnumber it
    if (this.#startOutput !== undefined) return Math.max(this.#startOutput, this.#deltas);
    return this.#deltas;
  }

  /** Flushes the trailing partial line and returns the totals. Later calls return the same. */
  finish(): Usage {
    if (!this.#finished) {
      this.#take(this.#decoder.decode(), true);
      this.#finished = true;
    }
    return {
      input: this.#input,
      output: this.outputSoFar,
      reported: this.#output !== undefined || this.#startOutput !== undefined,
      deltas: this.#deltas,
      completed: this.#completed,
      error: this.#error,
    };
  }

  /** Splits carry + text into lines; the unterminated rest is carried, or taken when `last`. */
  #take(text: string, last: boolean): void {
    let nl = text.indexOf(LF); // only new text is searched: a long line in pieces stays linear
    if (nl === -1 && !last) {
      if (!this.#overlong) this.#carry += text;
      if (this.#carry.length > MAX_LINE) this.#skipLine();
      return;
    }
    const buf = this.#carry + text;
    this.#scan.reset(buf);
    let start = 0;
    if (nl !== -1) nl += buf.length - text.length;
    while (nl !== -1) {
      if (this.#overlong) this.#overlong = false;
      else if (nl - start <= MAX_LINE) this.#line(start, nl);
      start = nl + 1;
      nl = buf.indexOf(LF, start);
    }
    const rest = buf.length - start;
    if (last) {
      if (!this.#overlong && rest > 0 && rest <= MAX_LINE) this.#line(start, buf.length);
      this.#carry = "";
    } else if (rest > MAX_LINE) this.#skipLine();
    else this.#carry = rest === 0 ? "" : buf.slice(start);
    this.#scan.reset("");
  }

  #skipLine(): void {
    this.#overlong = true;
    this.#carry = "";
  }

  /** One line `[start, end)` of the scanned buffer, without its `\n`. */
  #line(start: number, end: number): void {
    const buf = this.#scan.buf;
    if (end > start && buf.charCodeAt(end - 1) === CR) end--;
    if (end === start) this.#event = ""; // blank line: the event is over
    else if (buf.startsWith("data:", start)) this.#data(start, end);
    else if (buf.startsWith("event:", start)) this.#event = buf.slice(start + 6, end).trim();
    // anything else (`:` comments and keep-alives, id:, retry:) carries no usage
  }

  #data(start: number, end: number): void {
    const scan = this.#scan;
    if (this.#event === "error") return this.#errorEvent(start, end);
    if (this.#anthropic) return this.#anthropicData(start, end);
    if (end - start <= 16 && this.#payload(start, end).trim() === "[DONE]") {
      this.#completed = true;
      return;
    }
    if (
      scan.hasText(CONTENT, start, end) || OTHER_DELTA_KEYS.some((k) => scan.hasText(k, start, end))
    ) this.#deltas++;
    if (!this.#completed) {
      const v = scan.valueOf(FINISH_REASON, start, end);
      if (v !== -1 && scan.buf.charCodeAt(v) === QUOTE) this.#completed = true;
    }
    const v = scan.valueOf(USAGE, start, end);
    if (v !== -1 && scan.buf.charCodeAt(v) === BRACE) {
      const usage = objectAt(parseObject(this.#payload(start, end))?.["usage"]);
      const input = count(usage?.["prompt_tokens"] ?? usage?.["input_tokens"]);
      const out = count(usage?.["completion_tokens"] ?? usage?.["output_tokens"]);
      if (input !== undefined) this.#input = input;
      if (out !== undefined) this.#output = out;
    }
    if (scan.keyAt(ERROR, start, end) !== -1) this.#errorCandidate(start, end);
  }

  #anthropicData(start: number, end: number): void {
    switch (this.#scan.anthropicType(start, end) || this.#event) {
      case "content_block_delta":
        this.#deltas++;
        return;
      case "message_stop":
        this.#completed = true;
        return;
      case "error":
        return this.#errorEvent(start, end);
      case "message_start": {
        const message = objectAt(parseObject(this.#payload(start, end))?.["message"]);
        const usage = objectAt(message?.["usage"]);
        const input = anthropicInput(usage);
        const out = count(usage?.["output_tokens"]);
        if (input !== undefined) this.#input = input;
        if (out !== undefined) this.#startOutput = out;
        return;
      }
      case "message_delta": {
        const usage = objectAt(parseObject(this.#payload(start, end))?.["usage"]);
        const input = anthropicInput(usage);
        const out = count(usage?.["output_tokens"]);
        // vLLM reports input here; a 0 must not erase message_start's count.
        if (input !== undefined && (input > 0 || this.#input === 0)) this.#input = input;
        if (out !== undefined) this.#output = out;
        return;
      }
    }
    if (this.#scan.keyAt(ERROR, start, end) !== -1) this.#errorCandidate(start, end);
  }

  /** The text after `data:` of the line `[start, end)`. */
  #payload(start: number, end: number): string {
    return this.#scan.buf.slice(start + 5, end);
  }

  /** A data line with an `"error"` token: an error event only if its object says so. */
  #errorCandidate(start: number, end: number): void {
    const obj = parseObject(this.#payload(start, end));
    const err = obj?.["error"];
    if ((err !== undefined && err !== null) || obj?.["object"] === "error") this.#fail(obj!);
  }

  /** The data of an `event: error` or an Anthropic `{"type":"error"}`: always an error. */
  #errorEvent(start: number, end: number): void {
    const payload = this.#payload(start, end);
    const obj = parseObject(payload);
    if (obj !== undefined) this.#fail(obj);
    else this.#error ??= payload.trim().slice(0, 1000) || "error event in stream";
  }

  #fail(obj: Json): void {
    if (this.#error !== undefined) return;
    const err = obj["error"];
    this.#error = messageOf(obj) ??
      (err === undefined || err === null ? undefined : JSON.stringify(err)) ??
      "error event in stream";
  }
}
