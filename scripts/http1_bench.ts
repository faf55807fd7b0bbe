// Benchmark: fetch versus the raw-socket client of src/backends/http1.ts, reading 64 concurrent
// SSE streams of 500 small deltas from a Deno.serve backend running in a subprocess.
// Usage: deno run -A scripts/http1_bench.ts [--rounds N]   (--serve runs the backend side)

import process from "node:process";
import { request } from "../src/backends/http1.ts";

const STREAMS = 64;
const DELTAS = 500;
const encoder = new TextEncoder();

function delta(i: number): Uint8Array {
  return encoder.encode(
    `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,` +
      `"delta":{"content":"tok${i}"},"finish_reason":null}]}\n\n`,
  );
}

const DELTA_BYTES = Array.from({ length: DELTAS }, (_, i) => delta(i).length)
  .reduce((a, b) => a + b, 0);

/** Backend side: every request gets DELTAS deltas, one enqueue each, as fast as possible. */
function serve(): void {
  Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => console.log(port),
  }, () =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < DELTAS; i++) controller.enqueue(delta(i));
          controller.close();
        },
      }),
      { headers: { "content-type": "text/event-stream" } },
    ));
}

interface Tally {
  bytes: number;
  pieces: number;
}

async function viaFetch(url: URL): Promise<Tally> {
  const res = await fetch(url);
  const tally = { bytes: 0, pieces: 0 };
  for await (const piece of res.body!) {
    tally.bytes += piece.length;
    tally.pieces++;
  }
  return tally;
}

async function viaHttp1(url: URL): Promise<Tally> {
  const res = await request({
    method: "GET",
    url,
    headers: {},
    signal: new AbortController().signal,
  });
  const tally = { bytes: 0, pieces: 0 };
  for (let piece = await res.read(); piece !== null; piece = await res.read()) {
    tally.bytes += piece.length;
    tally.pieces++;
  }
  return tally;
}

interface Sample {
  wallMs: number;
  cpuUs: number;
  pieces: number;
}

async function round(url: URL, client: (url: URL) => Promise<Tally>): Promise<Sample> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const tallies = await Promise.all(Array.from({ length: STREAMS }, () => client(url)));
  const wallMs = performance.now() - t0;
  const cpu1 = process.cpuUsage();
  for (const t of tallies) {
    if (t.bytes !== DELTA_BYTES) throw new Error(`got ${t.bytes} bytes, expected ${DELTA_BYTES}`);
  }
  const cpuUs = cpu1.user - cpu0.user + cpu1.system - cpu0.system;
  return { wallMs, cpuUs, pieces: tallies.reduce((n, t) => n + t.pieces, 0) };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(rounds: number): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.filename!, "--serve"],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let line = "";
    while (!line.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("backend subprocess exited before listening");
      line += value;
    }
    await reader.cancel();
    const url = new URL(`http://127.0.0.1:${line.trim()}/v1/chat/completions`);
    const clients = { "fetch + for await": viaFetch, "http1.request + read()": viaHttp1 };
    const samples = new Map<string, Sample[]>(Object.keys(clients).map((k) => [k, []]));
    for (const client of Object.values(clients)) await round(url, client); // warm-up
    for (let r = 0; r < rounds; r++) {
      for (const [name, client] of Object.entries(clients)) {
        samples.get(name)!.push(await round(url, client));
      }
    }
    const deltas = STREAMS * DELTAS;
    console.log(
      `${STREAMS} streams x ${DELTAS} deltas (${DELTA_BYTES} bytes each stream), ` +
        `median of ${rounds} rounds, this process only:`,
    );
    for (const [name, s] of samples) {
      const wall = median(s.map((x) => x.wallMs));
      const cpu = median(s.map((x) => x.cpuUs));
      const pieces = median(s.map((x) => x.pieces));
      console.log(
        `  ${name.padEnd(24)} wall ${wall.toFixed(1).padStart(7)} ms   ` +
          `cpu ${(cpu / 1000).toFixed(1).padStart(7)} ms   ` +
          `${(cpu / deltas).toFixed(2).padStart(6)} µs cpu/delta   ` +
          `${(pieces / STREAMS).toFixed(1).padStart(6)} pieces/stream`,
      );
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}

if (Deno.args.includes("--serve")) {
  serve();
} else {
  const at = Deno.args.indexOf("--rounds");
  await main(at >= 0 ? Number(Deno.args[at + 1]) : 7);
}
