// Tests for src/jobs/usage.ts: SSE usage accounting (PROTOCOL.md §4 token counts, BACKENDS.md streams).
// Fixtures follow the shapes each server really sends; the property test checks split-independence.

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  anthropicInput,
  errorMessageOf,
  type Usage,
  UsageMeter,
  type WireFormat,
} from "../../src/jobs/usage.ts";
import { JsonAnswerMeter } from "../../src/jobs/json_usage.ts";

const enc = new TextEncoder();

/** Feeds each piece as one read and returns the totals. */
function meter(format: WireFormat, ...pieces: (string | Uint8Array)[]): Usage {
  const m = new UsageMeter(format);
  for (const p of pieces) m.feed(typeof p === "string" ? enc.encode(p) : p);
  return m.finish();
}

/** SSE events, each `data: <json>` followed by a blank line. */
function sse(...events: (string | object)[]): string {
  return events.map((e) => `data: ${typeof e === "string" ? e : JSON.stringify(e)}\n\n`).join("");
}

function chunk(delta: object, finishReason: string | null = null): object {
  return {
    id: "chatcmpl-1",
    object: "chat.completion.chunk",
    created: 1,
    model: "m",
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
  };
}

const roleChunk = chunk({ role: "assistant", content: "" });
const stopChunk = chunk({}, "stop");
const text = (t: string) => chunk({ content: t });

function anthropic(...events: [string, object][]): string {
  return events.map(([name, data]) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`).join("");
}

const textDelta = (t: string): [string, object] => [
  "content_block_delta",
  { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: t } },
];

Deno.test("openai usage chunk with empty choices gives the reported counts", () => {
  const usage = {
    id: "chatcmpl-1",
    object: "chat.completion.chunk",
    choices: [],
    usage: { prompt_tokens: 17, completion_tokens: 23, total_tokens: 40 },
  };
  const u = meter("openai", sse(roleChunk, text("Hel"), text("lo"), stopChunk, usage, "[DONE]"));
  assert.deepEqual(u, {
    input: 17,
    output: 23,
    reported: true,
    deltas: 2,
    completed: true,
    error: undefined,
  });
});

Deno.test("openai usage with input_tokens/output_tokens key names is read too", () => {
  const usage = { choices: [], usage: { input_tokens: 5, output_tokens: 9 } };
  const u = meter("openai", sse(text("a"), stopChunk, usage, "[DONE]"));
  assert.equal(u.input, 5);
  assert.equal(u.output, 9);
  assert.equal(u.reported, true);
});

Deno.test('openai "usage":null on normal chunks is ignored and the last usage wins', () => {
  const withNull = { ...text("x") as Record<string, unknown>, usage: null };
  const first = { choices: [], usage: { prompt_tokens: 1, completion_tokens: 1 } };
  const last = { choices: [], usage: { prompt_tokens: 3, completion_tokens: 4 } };
  const u = meter("openai", sse(withNull, withNull, first, last, "[DONE]"));
  assert.deepEqual([u.input, u.output, u.deltas], [3, 4, 2]);
});

Deno.test("openai stream without usage estimates output from content-carrying chunks", () => {
  const u = meter(
    "openai",
    sse(roleChunk, text("one"), text(" two"), text(" 3"), stopChunk, "[DONE]"),
  );
  assert.deepEqual(u, {
    input: 0,
    output: 3,
    reported: false,
    deltas: 3,
    completed: true,
    error: undefined,
  });
});

Deno.test("reasoning_content and reasoning deltas are counted", () => {
  const u = meter(
    "openai",
    sse(
      roleChunk,
      chunk({ reasoning_content: "think", content: null }),
      chunk({ reasoning: "more" }),
      chunk({ content: "answer", reasoning: null }),
      stopChunk,
      "[DONE]",
    ),
  );
  assert.equal(u.deltas, 3);
  assert.equal(u.output, 3);
});

Deno.test("tool_calls argument deltas are counted, the empty first one is not", () => {
  const call = (args: string) =>
    chunk({ tool_calls: [{ index: 0, function: { arguments: args } }] });
  const head = chunk({
    tool_calls: [{
      index: 0,
      id: "call_1",
      type: "function",
      function: { name: "f", arguments: "" },
    }],
  });
  const u = meter("openai", sse(head, call('{"loc'), call('ation":"Paris"}'), stopChunk, "[DONE]"));
  assert.equal(u.deltas, 2);
  assert.equal(u.completed, true);
});

Deno.test("anthropic stream takes input from message_start and output from message_delta", () => {
  const u = meter(
    "anthropic",
    anthropic(
      ["message_start", {
        type: "message_start",
        message: {
          id: "msg_1",
          type: "message",
          role: "assistant",
          content: [],
          usage: { input_tokens: 25, output_tokens: 1 },
        },
      }],
      ["content_block_start", {
        type: "content_block_start",
        index: 0,
        content_block: { type: "text", text: "" },
      }],
      ["ping", { type: "ping" }],
      textDelta("Hello"),
      textDelta(" world"),
      ["content_block_delta", {
        type: "content_block_delta",
        index: 1,
        delta: { type: "input_json_delta", partial_json: '{"a"' },
      }],
      ["content_block_delta", {
        type: "content_block_delta",
        index: 2,
        delta: { type: "thinking_delta", thinking: "hm" },
      }],
      ["content_block_stop", { type: "content_block_stop", index: 0 }],
      ["message_delta", {
        type: "message_delta",
        delta: { stop_reason: "end_turn" },
        usage: { output_tokens: 42 },
      }],
      ["message_stop", { type: "message_stop" }],
    ),
  );
  assert.deepEqual(u, {
    input: 25,
    output: 42,
    reported: true,
    deltas: 4,
    completed: true,
    error: undefined,
  });
});

Deno.test("anthropic vLLM-style: both counts in message_delta, stray [DONE] ignored", () => {
  const u = meter(
    "anthropic",
    anthropic(
      ["message_start", {
        type: "message_start",
        message: { type: "message", usage: { input_tokens: 0, output_tokens: 0 } },
      }],
      textDelta("hi"),
      ["message_delta", {
        type: "message_delta",
        delta: { stop_reason: "end_turn" },
        usage: { input_tokens: 30, output_tokens: 7 },
      }],
      ["message_stop", { type: "message_stop" }],
    ),
    "data: [DONE]\n\n",
  );
  assert.deepEqual([u.input, u.output, u.reported, u.completed], [30, 7, true, true]);
});

Deno.test("anthropic llama.cpp-style: input only in message_start, keys sorted, no event lines", () => {
  // nlohmann::json sorts keys, so the nested delta type comes before the event type.
  const u = meter(
    "anthropic",
    sse(
      '{"message":{"content":[],"type":"message","usage":{"input_tokens":12,"output_tokens":0}},"type":"message_start"}',
      '{"delta":{"text":"a","type":"text_delta"},"index":0,"type":"content_block_delta"}',
      '{"delta":{"text":"b","type":"text_delta"},"index":0,"type":"content_block_delta"}',
      '{"delta":{"stop_reason":"end_turn"},"type":"message_delta","usage":{"output_tokens":2}}',
      '{"type":"message_stop"}',
    ),
  );
  assert.deepEqual([u.input, u.output, u.deltas, u.completed], [12, 2, 2, true]);
});

Deno.test("anthropic input is the whole prompt: llama.cpp's prompt-cache hit bills all 29 tokens", () => {
  // What llama-server sends on /v1/messages when a slot reuses 28 cached tokens of a 29-token prompt.
  const u = meter(
    "anthropic",
    sse(
      '{"message":{"content":[],"type":"message","usage":{"cache_read_input_tokens":28,"input_tokens":1,"output_tokens":0}},"type":"message_start"}',
      '{"delta":{"text":"a","type":"text_delta"},"index":0,"type":"content_block_delta"}',
      '{"delta":{"stop_reason":"max_tokens"},"type":"message_delta","usage":{"output_tokens":1}}',
      '{"type":"message_stop"}',
    ),
  );
  assert.deepEqual([u.input, u.output, u.completed], [29, 1, true]);
});

Deno.test("anthropic input adds cache_creation_input_tokens, in message_start or message_delta", () => {
  const start = meter(
    "anthropic",
    anthropic(
      ["message_start", {
        type: "message_start",
        message: {
          usage: { input_tokens: 3, cache_creation_input_tokens: 100, cache_read_input_tokens: 20 },
        },
      }],
      ["message_stop", { type: "message_stop" }],
    ),
  );
  assert.equal(start.input, 123);
  // Anthropic's own API repeats the cache counts in message_delta: the sum, not a double count.
  const delta = meter(
    "anthropic",
    anthropic(
      ["message_start", {
        type: "message_start",
        message: { usage: { input_tokens: 0, output_tokens: 0 } },
      }],
      textDelta("x"),
      ["message_delta", {
        type: "message_delta",
        usage: { input_tokens: 5, cache_read_input_tokens: 40, output_tokens: 1 },
      }],
      ["message_stop", { type: "message_stop" }],
    ),
  );
  assert.deepEqual([delta.input, delta.output], [45, 1]);
});

Deno.test("anthropicInput sums the three input counts and ignores garbage", () => {
  assert.equal(anthropicInput({ input_tokens: 1, cache_read_input_tokens: 28 }), 29);
  assert.equal(anthropicInput({ cache_creation_input_tokens: 7 }), 7);
  assert.equal(anthropicInput({ input_tokens: -1, cache_read_input_tokens: "5" }), undefined);
  assert.equal(anthropicInput({ output_tokens: 4 }), undefined);
  assert.equal(anthropicInput(undefined), undefined);
});

Deno.test("a JSON answer (stream ignored) gives its usage, OpenAI and Anthropic", () => {
  const json = (format: WireFormat, body: unknown, cut = 7) => {
    const bytes = enc.encode(JSON.stringify(body));
    const m = new JsonAnswerMeter(format);
    for (let at = 0; at < bytes.length; at += cut) m.feed(bytes.slice(at, at + cut));
    assert.equal(m.outputSoFar, 0);
    return m.finish();
  };
  const openai = json("openai", {
    object: "chat.completion",
    choices: [{ index: 0, message: { role: "assistant", content: "héllo ☃" } }],
    usage: { prompt_tokens: 29, completion_tokens: 5, total_tokens: 34 },
  });
  assert.deepEqual(openai, {
    input: 29,
    output: 5,
    reported: true,
    deltas: 0,
    completed: true,
    error: undefined,
  });
  const messages = json("anthropic", {
    type: "message",
    content: [{ type: "text", text: "hi" }],
    usage: { cache_read_input_tokens: 28, input_tokens: 1, output_tokens: 5 },
  }, 3);
  assert.deepEqual([messages.input, messages.output, messages.completed], [29, 5, true]);
  const noUsage = json("openai", { choices: [] });
  assert.deepEqual([noUsage.input, noUsage.output, noUsage.reported], [0, 0, false]);
  assert.equal(noUsage.error, undefined);
});

Deno.test("a JSON answer that is an error, not JSON, or not a completion is an error", () => {
  const run = (format: WireFormat, text: string) => {
    const m = new JsonAnswerMeter(format);
    m.feed(enc.encode(text));
    return m.finish();
  };
  assert.equal(run("openai", '{"error":{"message":"context too long"}}').error, "context too long");
  assert.match(run("openai", "<html>oops</html>").error ?? "", /not a JSON object/);
  assert.match(run("openai", '{"id":"x"}').error ?? "", /no choices/);
  assert.match(run("anthropic", '{"choices":[]}').error ?? "", /not an Anthropic message/);
  assert.equal(
    run("anthropic", '{"type":"error","error":{"message":"overloaded"}}').error,
    "overloaded",
  );
});

Deno.test("anthropic stream cut before message_delta counts at least the deltas seen", () => {
  const m = new UsageMeter("anthropic");
  m.feed(enc.encode(anthropic(
    ["message_start", {
      type: "message_start",
      message: { usage: { input_tokens: 9, output_tokens: 1 } },
    }],
    textDelta("a"),
    textDelta("b"),
    textDelta("c"),
  )));
  assert.equal(m.outputSoFar, 3);
  const u = m.finish();
  assert.deepEqual([u.input, u.output, u.completed], [9, 3, false]);
});

Deno.test("comments are never parsed and CRLF line endings work", () => {
  const body = [
    ": OPENROUTER PROCESSING",
    "",
    ": ping",
    "",
    ":",
    "",
    `data: ${JSON.stringify(text("a"))}`,
    "",
    ': "usage":{"prompt_tokens":99,"completion_tokens":99} "error":"x" [DONE]',
    "",
    `data: ${JSON.stringify(text("b"))}`,
    "",
    `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 4, completion_tokens: 2 } })}`,
    "",
    "data: [DONE]",
    "",
    "",
  ].join("\r\n");
  const u = meter("openai", body);
  assert.deepEqual(u, {
    input: 4,
    output: 2,
    reported: true,
    deltas: 2,
    completed: true,
    error: undefined,
  });
});

Deno.test("an event name applies only to its own event, also with CRLF", () => {
  for (const eol of ["\n", "\r\n"]) {
    const body = ["event: error", "", `data: ${JSON.stringify(text("a"))}`, "", ""].join(eol);
    const u = meter("openai", body);
    assert.deepEqual([u.error, u.deltas], [undefined, 1]);
  }
});

Deno.test("openai error event with an error object sets the message", () => {
  const u = meter("openai", sse(text("a"), '{"error":{"message":"boom","code":500}}'));
  assert.equal(u.error, "boom");
  assert.equal(u.completed, false);
  assert.equal(u.output, 1);
});

Deno.test("openrouter chunk with top-level error and finish_reason error sets the message", () => {
  const orError = {
    id: "gen-1",
    object: "chat.completion.chunk",
    error: { code: "server_error", message: "Provider disconnected" },
    choices: [{ index: 0, delta: { content: "" }, finish_reason: "error" }],
  };
  const u = meter("openai", sse(text("a"), orError));
  assert.equal(u.error, "Provider disconnected");
  assert.equal(u.deltas, 1);
});

Deno.test("vLLM error event followed by [DONE] is still reported", () => {
  const u = meter("openai", sse(text("a"), '{"error":"engine dead"}', "[DONE]"));
  assert.equal(u.error, "engine dead");
  assert.equal(u.completed, true);
});

Deno.test("older vLLM flat error object in the stream sets the message", () => {
  const u = meter(
    "openai",
    sse('{"object":"error","message":"too long","type":"BadRequestError"}'),
  );
  assert.equal(u.error, "too long");
});

Deno.test("error object without a message is reported as its JSON", () => {
  const u = meter("openai", sse('{"error":{"code":500}}'));
  assert.equal(u.error, '{"code":500}');
});

Deno.test("anthropic event: error sets the message and the first error is kept", () => {
  const u = meter(
    "anthropic",
    anthropic(textDelta("a"), ["error", {
      type: "error",
      error: { type: "overloaded_error", message: "Overloaded" },
    }]),
    'event: error\ndata: {"error":{"message":"second"}}\n\n',
  );
  assert.equal(u.error, "Overloaded");
  assert.equal(u.completed, false);
});

Deno.test("anthropic error data without an event line is still an error", () => {
  const u = meter(
    "anthropic",
    sse('{"type":"error","error":{"type":"api_error","message":"oops"}}'),
  );
  assert.equal(u.error, "oops");
});

Deno.test("anthropic event names stand in for a missing type in the data", () => {
  const u = meter(
    "anthropic",
    "event: content_block_delta\ndata: {}\n\nevent: message_stop\ndata: {}\n\n",
  );
  assert.deepEqual([u.deltas, u.completed], [1, true]);
});

Deno.test("anthropic message_delta input_tokens 0 keeps message_start's input", () => {
  const u = meter(
    "anthropic",
    anthropic(
      ["message_start", {
        type: "message_start",
        message: { usage: { input_tokens: 25, output_tokens: 1 } },
      }],
      ["message_delta", { type: "message_delta", usage: { input_tokens: 0, output_tokens: 3 } }],
    ),
  );
  assert.deepEqual([u.input, u.output], [25, 3]);
});

Deno.test("an event: error whose data is not JSON still reports an error", () => {
  assert.equal(
    meter("openai", "event: error\ndata: upstream went away\n\n").error,
    "upstream went away",
  );
});

Deno.test("stream ending without [DONE] or finish_reason is not completed", () => {
  const u = meter("openai", sse(roleChunk, text("a"), text("b")));
  assert.equal(u.completed, false);
  assert.equal(u.output, 2);
});

Deno.test("finish_reason without [DONE] completes the stream", () => {
  assert.equal(meter("openai", sse(text("a"), chunk({}, "length"))).completed, true);
});

Deno.test("a final line without a newline is still accounted", () => {
  const u = meter("openai", sse(text("a")) + "data: [DONE]");
  assert.equal(u.completed, true);
});

Deno.test("model text mentioning usage, error, [DONE] or message_stop is plain content", () => {
  const tricky = [
    "usage",
    "error",
    "[DONE]",
    "message_stop",
    '"usage":{"prompt_tokens":99,"completion_tokens":99}',
    '{"error":{"message":"fake"}}',
    '"finish_reason":"stop"',
    "\ndata: [DONE]\n\n",
    '\\"error\\":\\"x\\"',
    "trailing backslash \\",
  ];
  const o = meter("openai", sse(roleChunk, ...tricky.map(text)));
  assert.deepEqual(o, {
    input: 0,
    output: tricky.length,
    reported: false,
    deltas: tricky.length,
    completed: false,
    error: undefined,
  });
  const a = meter("anthropic", anthropic(...tricky.map(textDelta)));
  assert.deepEqual(a, {
    input: 0,
    output: tricky.length,
    reported: false,
    deltas: tricky.length,
    completed: false,
    error: undefined,
  });
});

Deno.test("python-style spaced JSON is recognised", () => {
  const u = meter(
    "openai",
    'data: {"choices": [{"delta": {"content": "hi"}, "finish_reason": null}]}\n\n' +
      'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\n' +
      'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}\n\n',
  );
  assert.deepEqual([u.input, u.output, u.deltas, u.completed], [3, 1, 1, true]);
});

Deno.test("malformed JSON on a usage or error line is ignored", () => {
  const u = meter("openai", sse('{"usage":{"prompt_tokens":1,', '{"error":{', text("a"), "[DONE]"));
  assert.deepEqual([u.input, u.reported, u.error, u.deltas], [0, false, undefined, 1]);
});

Deno.test("outputSoFar follows the stream and finish is idempotent", () => {
  const m = new UsageMeter("openai");
  assert.equal(m.outputSoFar, 0);
  m.feed(enc.encode(sse(text("a"), text("b"))));
  assert.equal(m.outputSoFar, 2);
  m.feed(enc.encode(sse({ choices: [], usage: { prompt_tokens: 1, completion_tokens: 5 } })));
  assert.equal(m.outputSoFar, 5);
  const first = m.finish();
  m.feed(enc.encode(sse(text("late"))));
  assert.deepEqual(m.finish(), first);
});

Deno.test("UTF-8 characters and CRLF split across reads are reassembled", () => {
  const bytes = enc.encode(`data: ${JSON.stringify(text("é𝄞"))}\r\n\r\ndata: [DONE]\r\n\r\n`);
  const cutInChar = bytes.indexOf(0xf0) + 2;
  const cutInCrlf = bytes.indexOf(13) + 1;
  const u = meter(
    "openai",
    bytes.subarray(0, cutInChar),
    bytes.subarray(cutInChar, cutInCrlf),
    bytes.subarray(cutInCrlf),
  );
  assert.deepEqual([u.deltas, u.completed], [1, true]);
});

Deno.test("an overlong line is skipped whole and the stream goes on", () => {
  const huge = ": " + "x".repeat(1_100_000);
  const tail = `data: ${JSON.stringify(text("hidden"))}\n\n`; // still the overlong line
  const rest = sse(text("a"), text("b"), "[DONE]");
  const cut = rest.length >> 1;
  const whole = meter("openai", huge + tail + rest);
  const pieces = meter(
    "openai",
    huge.slice(0, 1000),
    huge.slice(1000),
    tail + rest.slice(0, cut),
    rest.slice(cut),
  );
  assert.deepEqual(whole, pieces);
  assert.deepEqual([whole.deltas, whole.completed], [2, true]);
});

Deno.test("garbage bytes never throw", () => {
  const junk = new Uint8Array(4096).map((_, i) => (i * 7919) % 256);
  for (const format of ["openai", "anthropic"] as const) {
    const u = meter(format, junk, 'data: {\n\ndata: "usage":{\n\nevent: error\n', junk);
    assert.equal(typeof u.output, "number");
  }
});

Deno.test("errorMessageOf reads the error body shapes and rejects garbage", () => {
  assert.equal(errorMessageOf('{"error":{"message":"bad model","code":404}}'), "bad model");
  assert.equal(errorMessageOf('{"error":"Unauthorized"}'), "Unauthorized");
  assert.equal(
    errorMessageOf('{"object":"error","message":"too long","type":"BadRequestError","code":400}'),
    "too long",
  );
  assert.equal(errorMessageOf('{"message":"plain"}'), "plain");
  assert.equal(errorMessageOf('{"detail":"Not Found"}'), "Not Found");
  assert.equal(errorMessageOf('{"type":"error","error":{"type":"x","message":"anth"}}'), "anth");
  assert.equal(errorMessageOf("<html>502 Bad Gateway</html>"), undefined);
  assert.equal(errorMessageOf(""), undefined);
  assert.equal(errorMessageOf("[1,2]"), undefined);
  assert.equal(errorMessageOf('"error"'), undefined);
  assert.equal(errorMessageOf('{"error":{"code":500}}'), undefined);
  assert.equal(errorMessageOf('{"error":{"message":'), undefined);
});

// ---- property: the totals do not depend on how the bytes were split ----

/** JSON with Python's `", "`/`": "` separators when spaced, compact otherwise. */
function toJson(v: unknown, spaced: boolean): string {
  if (Array.isArray(v)) return `[${v.map((x) => toJson(x, spaced)).join(spaced ? ", " : ",")}]`;
  if (typeof v === "object" && v !== null) {
    const entries = Object.entries(v).map(([k, x]) =>
      `${JSON.stringify(k)}${spaced ? ": " : ":"}${toJson(x, spaced)}`
    );
    return `{${entries.join(spaced ? ", " : ",")}}`;
  }
  return JSON.stringify(v);
}

const tricky = fc.constantFrom(
  "usage",
  "error",
  "[DONE]",
  "message_stop",
  '"usage":{"prompt_tokens":1}',
  '{"error":"x"}',
  "\r\n",
  "\ndata: [DONE]\n\n",
  "\\",
  "",
);
const deltaText = fc.oneof(fc.string({ unit: "binary", maxLength: 12 }), tricky);
const event = fc.oneof(
  fc.record({ kind: fc.constant("delta" as const), text: deltaText }),
  fc.record({
    kind: fc.constant("comment" as const),
    text: fc.string({ unit: "binary", maxLength: 10 }).map((s) => s.replace(/[\r\n]/g, "")),
  }),
);
const streamSpec = fc.record({
  format: fc.constantFrom<WireFormat>("openai", "anthropic"),
  eol: fc.constantFrom("\n", "\r\n"),
  spaced: fc.boolean(),
  events: fc.array(event, { maxLength: 25 }),
  usage: fc.option(fc.record({ input: fc.nat(100_000), output: fc.nat(100_000) })),
  error: fc.option(fc.string({ unit: "binary", minLength: 1, maxLength: 8 })),
  done: fc.boolean(),
});
type StreamSpec = typeof streamSpec extends fc.Arbitrary<infer T> ? T : never;

function render(s: StreamSpec): string {
  const out: string[] = [];
  const put = (...lines: string[]) => out.push(...lines, "");
  const data = (v: unknown) => `data: ${toJson(v, s.spaced)}`;
  if (s.format === "openai") {
    put(data(roleChunk));
    for (const e of s.events) {
      if (e.kind === "comment") put(`: ${e.text}`);
      else put(data(text(e.text)));
    }
    if (s.error !== null) put(data({ error: { message: s.error, code: 500 } }));
    if (s.done) put(data(stopChunk));
    if (s.usage) {
      put(
        data({
          choices: [],
          usage: { prompt_tokens: s.usage.input, completion_tokens: s.usage.output },
        }),
      );
    }
    if (s.done) put("data: [DONE]");
  } else {
    const usage = s.usage ? { usage: { input_tokens: s.usage.input, output_tokens: 0 } } : {};
    put(
      "event: message_start",
      data({ type: "message_start", message: { type: "message", ...usage } }),
    );
    for (const e of s.events) {
      if (e.kind === "comment") put(`: ${e.text}`);
      else {
        const [name, d] = textDelta(e.text);
        put(`event: ${name}`, data(d));
      }
    }
    put("event: ping", data({ type: "ping" }));
    if (s.error !== null) {
      put("event: error", data({ type: "error", error: { type: "api_error", message: s.error } }));
    }
    if (s.usage) {
      put(
        "event: message_delta",
        data({ type: "message_delta", usage: { output_tokens: s.usage.output } }),
      );
    }
    if (s.done) put("event: message_stop", data({ type: "message_stop" }));
  }
  return out.join(s.eol);
}

function expected(s: StreamSpec): Usage {
  const deltas =
    s.events.filter((e) => e.kind === "delta" && (s.format === "anthropic" || e.text !== ""))
      .length;
  return {
    input: s.usage?.input ?? 0,
    output: s.usage?.output ?? deltas,
    reported: s.usage !== null,
    deltas,
    completed: s.done,
    error: s.error ?? undefined,
  };
}

Deno.test("property: totals are the same whole, byte by byte and split at random points", () => {
  fc.assert(
    fc.property(streamSpec, fc.array(fc.nat(), { maxLength: 24 }), (spec, cuts) => {
      const bytes = enc.encode(render(spec));
      const want = expected(spec);
      assert.deepEqual(meter(spec.format, bytes), want);

      const byByte = new UsageMeter(spec.format);
      for (let i = 0; i < bytes.length; i++) byByte.feed(bytes.subarray(i, i + 1));
      assert.deepEqual(byByte.finish(), want);

      const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
      const pieces = [0, ...at].map((from, i) => bytes.subarray(from, at[i] ?? bytes.length));
      assert.deepEqual(meter(spec.format, ...pieces), want);
    }),
    { numRuns: 200 },
  );
});
