// Micro-benchmark of src/jobs/usage.ts, the per-token cost of usage accounting on the relay path.
// Run: deno run scripts/usage_bench.ts — prints ns per content delta for realistic read sizes.

import { UsageMeter, type WireFormat } from "../src/jobs/usage.ts";

const STREAMS = 64, DELTAS = 500, READ = 64 * 1024, ROUNDS = 30;
const enc = new TextEncoder();
const mixed = [" the", " token", " stream", "ing", " relay", ",", " café", " 日本語", " 🚀", "\n"];
const ascii = [" the", " token", " stream", "ing", " relay", ",", " cafe", " of", " a", "\n"];

/** One vLLM-shaped OpenAI stream, as one byte array per event. */
function openai(seed: number, words: string[]): Uint8Array[] {
  const head =
    `{"id":"chatcmpl-${seed.toString(16).padStart(24, "0")}","object":"chat.completion.chunk",` +
    `"created":1735000000,"model":"meta-llama/Llama-3.3-70B-Instruct"`;
  const chunk = (delta: string, finish: string | null) =>
    `data: ${head},"choices":[{"index":0,"delta":${delta},"logprobs":null,` +
    `"finish_reason":${JSON.stringify(finish)}}]}\n\n`;
  const events = [chunk('{"role":"assistant","content":""}', null)];
  for (let i = 0; i < DELTAS; i++) {
    events.push(chunk(`{"content":${JSON.stringify(words[(seed + i * 7) % words.length])}}`, null));
  }
  events.push(chunk("{}", "stop"));
  events.push(
    `data: ${head},"choices":[],"usage":{"prompt_tokens":812,"total_tokens":1312,` +
      `"completion_tokens":${DELTAS}}}\n\n`,
  );
  events.push("data: [DONE]\n\n");
  return events.map((e) => enc.encode(e));
}

/** One Anthropic messages stream, as one byte array per event. */
function anthropic(seed: number, words: string[]): Uint8Array[] {
  const event = (name: string, data: object) =>
    `event: ${name}\ndata: ${JSON.stringify({ type: name, ...data })}\n\n`;
  const events = [
    event("message_start", {
      message: {
        id: `msg_${seed}`,
        type: "message",
        role: "assistant",
        content: [],
        usage: { input_tokens: 812, output_tokens: 1 },
      },
    }),
    event("content_block_start", { index: 0, content_block: { type: "text", text: "" } }),
  ];
  for (let i = 0; i < DELTAS; i++) {
    const text = words[(seed + i * 7) % words.length];
    events.push(event("content_block_delta", { index: 0, delta: { type: "text_delta", text } }));
  }
  events.push(event("content_block_stop", { index: 0 }));
  events.push(
    event("message_delta", {
      delta: { stop_reason: "end_turn" },
      usage: { output_tokens: DELTAS },
    }),
  );
  events.push(event("message_stop", {}));
  return events.map((e) => enc.encode(e));
}

function coalesce(events: Uint8Array[]): Uint8Array[] {
  const all = new Uint8Array(events.reduce((n, e) => n + e.length, 0));
  let at = 0;
  for (const e of events) {
    all.set(e, at);
    at += e.length;
  }
  const reads = [];
  for (let i = 0; i < all.length; i += READ) reads.push(all.subarray(i, i + READ));
  return reads;
}

/** The per-event JSON.parse approach the module replaces, for comparison. */
function naive(reads: Uint8Array[]): number {
  const dec = new TextDecoder();
  let carry = "", deltas = 0;
  for (const r of reads) {
    const lines = (carry + dec.decode(r, { stream: true })).split("\n");
    carry = lines.pop() ?? "";
    for (const line of lines) {
      if (!line.startsWith("data: {")) continue;
      const obj = JSON.parse(line.slice(6));
      if (obj.choices?.[0]?.delta?.content) deltas++;
    }
  }
  return deltas;
}

function decodeOnly(reads: Uint8Array[]): number {
  const dec = new TextDecoder();
  let n = 0;
  for (const r of reads) n += dec.decode(r, { stream: true }).length;
  return n;
}

const meter = (format: WireFormat) => (reads: Uint8Array[]): number => {
  const m = new UsageMeter(format);
  for (const r of reads) m.feed(r);
  const u = m.finish();
  if (u.output !== DELTAS || u.deltas !== DELTAS || !u.completed) throw new Error("wrong totals");
  return u.deltas;
};

function bench(name: string, workload: Uint8Array[][], run: (reads: Uint8Array[]) => number) {
  const times: number[] = [];
  let sink = 0;
  for (let round = 0; round < ROUNDS + 5; round++) {
    const t0 = performance.now();
    for (const reads of workload) sink += run(reads);
    const ns = (performance.now() - t0) * 1e6 / (STREAMS * DELTAS);
    if (round >= 5) times.push(ns); // the first rounds warm up the JIT
  }
  times.sort((a, b) => a - b);
  const [best, median] = [times[0]!, times[ROUNDS >> 1]!].map((t) => t.toFixed(0).padStart(5));
  console.log(`${name.padEnd(44)} ${median} ns/delta median, ${best} best${sink < 0 ? "!" : ""}`);
}

const streams = (make: (seed: number, words: string[]) => Uint8Array[], words: string[]) =>
  Array.from({ length: STREAMS }, (_, i) => make(i, words));
const oa = streams(openai, mixed), oaAscii = streams(openai, ascii), an = streams(anthropic, mixed);
console.log(`${STREAMS} streams x ${DELTAS} deltas; text mixes ASCII, Latin-1, CJK and emoji`);
bench("openai, one delta per read", oa, meter("openai"));
bench("openai, 64 KiB reads", oa.map(coalesce), meter("openai"));
bench("openai, ASCII-only text, one delta per read", oaAscii, meter("openai"));
bench("openai, ASCII-only text, 64 KiB reads", oaAscii.map(coalesce), meter("openai"));
bench("anthropic, one delta per read", an, meter("anthropic"));
bench("anthropic, 64 KiB reads", an.map(coalesce), meter("anthropic"));
bench("baseline: TextDecoder alone, per read", oa, decodeOnly);
bench("baseline: TextDecoder alone, 64 KiB", oa.map(coalesce), decodeOnly);
bench("baseline: JSON.parse every event, per read", oa, naive);
bench("baseline: JSON.parse every event, 64 KiB", oa.map(coalesce), naive);
