// deno-lint-ignore-file camelcase
// The events of the fake backends' completion streams, per format: OpenAI chat.completion.chunk
// and Anthropic messages events, with each kind's quirks (BACKENDS.md "Streaming").

import type { FakeKind } from "./fake_kinds.ts";

/** The events of one stream; each string is written as its own HTTP chunk. */
interface Events {
  start(): string[];
  delta(text: string): string;
  finish(outputTokens: number, elapsedMs: number): string[];
  error(): string[];
}

const ERROR_MESSAGE = "upstream exploded";
const DONE = "data: [DONE]\n\n";
const sse = (value: unknown) => `data: ${JSON.stringify(value)}\n\n`;
const event = (name: string, value: unknown) =>
  `event: ${name}\ndata: ${JSON.stringify(value)}\n\n`;

/** chat.completion.chunk events as vLLM and llama.cpp emit them (BACKENDS.md "Streaming"). */
export function openaiEvents(kind: FakeKind, model: string, usage: boolean, input: number): Events {
  const id = `${kind === "openrouter" ? "gen-" : "chatcmpl-"}${crypto.randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const chunk = (choices: unknown[], extra: object = {}) =>
    sse({ id, object: "chat.completion.chunk", created, model, choices, ...extra });
  const choice = (delta: object, finish_reason: string | null) => ({
    index: 0,
    delta,
    logprobs: null,
    finish_reason,
  });
  return {
    start: () => [chunk([choice({ role: "assistant", content: "" }, null)])],
    delta: (content) => chunk([choice({ content }, null)]),
    finish: (n, ms) => [
      chunk(
        [choice({}, "stop")],
        kind === "llamacpp"
          ? {
            timings: {
              prompt_n: input,
              predicted_n: n,
              predicted_ms: ms,
              predicted_per_second: n / (ms / 1000),
            },
          }
          : {},
      ),
      ...(usage
        ? [
          chunk([], {
            usage: { prompt_tokens: input, completion_tokens: n, total_tokens: input + n },
          }),
        ]
        : []),
      DONE,
    ],
    error: () =>
      kind === "openrouter"
        ? [
          chunk([choice({ content: "" }, "error")], {
            error: { message: ERROR_MESSAGE, code: 500 },
          }),
        ]
        : [
          sse({ error: { message: ERROR_MESSAGE, code: 500 } }),
          ...(kind === "vllm" ? [DONE] : []),
        ],
  };
}

/** Anthropic messages events (BACKENDS.md "Streaming (Anthropic messages)"). */
export function anthropicEvents(
  kind: FakeKind,
  model: string,
  usage: boolean,
  input: number,
): Events {
  const message = {
    id: `msg_${crypto.randomUUID().replaceAll("-", "")}`,
    type: "message",
    role: "assistant",
    model,
    content: [],
    stop_reason: null,
    stop_sequence: null,
  };
  return {
    start: () => [
      event("message_start", {
        type: "message_start",
        message: usage ? { ...message, usage: { input_tokens: input, output_tokens: 1 } } : message,
      }),
      event("content_block_start", {
        type: "content_block_start",
        index: 0,
        content_block: { type: "text", text: "" },
      }),
      event("ping", { type: "ping" }),
    ],
    delta: (text) =>
      event("content_block_delta", {
        type: "content_block_delta",
        index: 0,
        delta: { type: "text_delta", text },
      }),
    finish: (n) => [
      event("content_block_stop", { type: "content_block_stop", index: 0 }),
      event("message_delta", {
        type: "message_delta",
        delta: { stop_reason: "end_turn", stop_sequence: null },
        // vLLM puts both counts here; the others only the output count.
        ...(usage
          ? {
            usage: kind === "vllm"
              ? { input_tokens: input, output_tokens: n }
              : { output_tokens: n },
          }
          : {}),
      }),
      event("message_stop", { type: "message_stop" }),
      ...(kind === "vllm" ? [DONE] : []), // vLLM appends a stray [DONE].
    ],
    error: () => [
      event("error", { type: "error", error: { type: "api_error", message: ERROR_MESSAGE } }),
    ],
  };
}
