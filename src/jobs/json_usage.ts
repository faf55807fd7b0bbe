// Usage of a backend that ignored `"stream": true` and answered 200 with one JSON completion
// (PROTOCOL §4 extension): its bytes are relayed as they are, kept (bounded) and read once at
// the end for `usage`, OpenAI (`prompt_tokens`/`completion_tokens`) or Anthropic (whole prompt).

import {
  anthropicInput,
  errorMessageOf,
  type Meter,
  type Usage,
  type WireFormat,
} from "./usage.ts";

/** Answers longer than this (UTF-16 units) are relayed but not read: no usage, not complete. */
const MAX_ANSWER = 16 * 1024 * 1024;

function tokens(v: unknown): number | undefined {
  return Number.isSafeInteger(v) && (v as number) >= 0 ? v as number : undefined;
}

function objectAt(v: unknown): Record<string, unknown> | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v)
    ? v as Record<string, unknown>
    : undefined;
}

/**
 * Meters a one-piece JSON completion: nothing is counted until the body has ended.
 *
 * @example
 * ```ts
 * const m = new JsonAnswerMeter("openai");
 * const usage = { prompt_tokens: 3, completion_tokens: 2 };
 * m.feed(new TextEncoder().encode(JSON.stringify({ choices: [], usage })));
 * m.finish(); // { input: 3, output: 2, reported: true, deltas: 0, completed: true, … }
 * ```
 */
export class JsonAnswerMeter implements Meter {
  readonly #format: WireFormat;
  readonly #decoder = new TextDecoder();
  #parts: string[] = [];
  #length = 0;
  #result: Usage | undefined;

  constructor(format: WireFormat) {
    this.#format = format;
  }

  feed(bytes: Uint8Array): void {
    if (this.#result || this.#length > MAX_ANSWER) return;
    const text = this.#decoder.decode(bytes, { stream: true });
    this.#parts.push(text);
    this.#length += text.length;
  }

  get outputSoFar(): number {
    return this.#result?.output ?? 0;
  }

  finish(): Usage {
    this.#result ??= this.#read();
    return this.#result;
  }

  #read(): Usage {
    const result: Usage = {
      input: 0,
      output: 0,
      reported: false,
      deltas: 0,
      completed: false,
      error: undefined,
    };
    if (this.#length > MAX_ANSWER) {
      result.error = `JSON answer longer than ${MAX_ANSWER} characters`;
      return result;
    }
    const text = this.#parts.join("") + this.#decoder.decode();
    this.#parts = [];
    let body: Record<string, unknown> | undefined;
    try {
      body = objectAt(JSON.parse(text));
    } catch {
      // not JSON: reported below
    }
    if (!body) {
      result.error = "JSON answer is not a JSON object";
      return result;
    }
    const err = body["error"];
    if (
      (err !== undefined && err !== null) || body["type"] === "error" || body["object"] === "error"
    ) {
      result.error = errorMessageOf(text) ?? "error object in the JSON answer";
      return result;
    }
    const usage = objectAt(body["usage"]);
    const anthropic = this.#format === "anthropic";
    const input = anthropic
      ? anthropicInput(usage)
      : tokens(usage?.["prompt_tokens"] ?? usage?.["input_tokens"]);
    const output = tokens(
      anthropic
        ? usage?.["output_tokens"]
        : usage?.["completion_tokens"] ?? usage?.["output_tokens"],
    );
    result.input = input ?? 0;
    result.output = output ?? 0;
    result.reported = output !== undefined;
    result.completed = anthropic ? body["type"] === "message" : Array.isArray(body["choices"]);
    if (!result.completed) {
      result.error = anthropic
        ? "JSON answer is not an Anthropic message"
        : "JSON answer has no choices";
    }
    return result;
  }
}
