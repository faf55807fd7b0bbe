// Benchmark direct-client process: the "1×" baseline of issue 7. Reads the same backend streams
// the agent relays (same forwarded request body), N at once, with a plain `fetch` + `for await`
// reader (or the agent's raw HTTP/1.1 client, as a ceiling), timing and verifying every stream.

import { concatBytes } from "../../src/bytes.ts";
import process from "node:process";
import { forwardedBody } from "../../src/backends/client.ts";
import { request } from "../../src/backends/http1.ts";
import {
  type Command,
  latencyOf,
  nowEpoch,
  type Received,
  serveCommands,
  stampLatencies,
  streamProblem,
  withTimeout,
} from "./common.ts";

const HEADERS = { "content-type": "application/json", accept: "text/event-stream" };
const MAX_PIECES = 10_000_000;

/** The job request the coordinator sends, as the agent forwards it to the backend. */
function body(model: string): Uint8Array<ArrayBuffer> {
  return forwardedBody({ messages: [{ role: "user", content: "hi" }] }, model, "openai");
}

async function viaFetch(url: URL, model: string, stamp: boolean, signal: AbortSignal) {
  const res = await fetch(url, { method: "POST", headers: HEADERS, body: body(model), signal });
  if (res.status !== 200 || res.body === null) throw new Error(`HTTP ${res.status}`);
  const r: Received = { pieces: [], arrivals: [] };
  for await (const piece of res.body) {
    r.pieces.push(piece);
    if (stamp) r.arrivals.push(nowEpoch());
    if (r.pieces.length > MAX_PIECES) throw new Error("stream too long");
  }
  return r;
}

async function viaHttp1(url: URL, model: string, stamp: boolean, signal: AbortSignal) {
  const res = await request({ method: "POST", url, headers: HEADERS, body: body(model), signal });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
  const r: Received = { pieces: [], arrivals: [] };
  for (let p = await res.read(); p !== null; p = await res.read()) {
    r.pieces.push(p);
    if (stamp) r.arrivals.push(nowEpoch());
    if (r.pieces.length > MAX_PIECES) throw new Error("stream too long");
  }
  return r;
}

/**
 * Reads `streams` streams, all at once or `concurrency` at a time; times from the first request
 * to the last byte.
 */
async function runRound(cmd: Command): Promise<Record<string, unknown>> {
  const url = new URL(`${cmd.url as string}/v1/chat/completions`);
  const model = cmd.model as string;
  const streams = cmd.streams as number;
  const deltas = cmd.deltas as number;
  const stamp = cmd.timestamps === true;
  const expectBytes = cmd.expectBytes as number | undefined;
  const read = cmd.client === "http1" ? viaHttp1 : viaFetch;
  const signal = AbortSignal.timeout(cmd.timeoutMs as number);
  const cpu0 = process.cpuUsage();
  const t0 = nowEpoch();
  // `streams` requests at once, or `concurrency` at a time, the next as one ends.
  const width = Math.min(streams, Math.max(1, Number(cmd.concurrency ?? streams) || streams));
  let started = 0;
  const done: Promise<{ r: Received; at: number }>[] = [];
  const one = async () => {
    const r = await read(url, model, stamp, signal);
    return { r, at: nowEpoch() };
  };
  const lane = async () => {
    while (started < streams) {
      const p = one();
      done[started++] = p;
      await p.catch(() => {});
    }
  };
  await withTimeout(
    Promise.all(Array.from({ length: width }, lane)),
    cmd.timeoutMs as number,
    "round",
  ).catch(() => {});
  const results = await Promise.allSettled(done);
  const t1 = Math.max(...results.map((x) => x.status === "fulfilled" ? x.value.at : NaN));
  const cpu1 = process.cpuUsage();
  const failures: string[] = [];
  const bytes: number[] = [];
  const latencies: number[] = [];
  let pieces = 0;
  for (const x of results) {
    if (x.status === "rejected") {
      failures.push(String(x.reason));
      continue;
    }
    const { r } = x.value;
    const all = concatBytes(r.pieces);
    pieces += r.pieces.length;
    bytes.push(all.length);
    const problem = expectBytes !== undefined && all.length !== expectBytes
      ? `${all.length} bytes read, ${expectBytes} expected`
      : streamProblem(all, deltas, stamp);
    if (problem !== undefined) failures.push(problem);
    if (stamp) latencies.push(...stampLatencies(r));
  }
  return {
    ms: failures.length ? NaN : t1 - t0,
    streams,
    failures: failures.slice(0, 5),
    failed: failures.length,
    pieces,
    bytesMin: Math.min(...bytes),
    bytesMax: Math.max(...bytes),
    bytesTotal: bytes.reduce((a, b) => a + b, 0),
    cpuUs: cpu1.user - cpu0.user + cpu1.system - cpu0.system,
    ...(stamp ? { latency: latencyOf(latencies) } : {}),
  };
}

console.log(JSON.stringify({ ready: true }));
await serveCommands((cmd) => {
  switch (cmd.cmd) {
    case "round":
      return runRound(cmd);
    case "clock":
      return Promise.resolve({ t: nowEpoch() });
    default:
      return Promise.reject(new Error(`unknown command ${cmd.cmd}`));
  }
});
Deno.exit(0);
