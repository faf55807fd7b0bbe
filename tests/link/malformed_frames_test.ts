// Malformed coordinator frames over a real session (PROTOCOL §4): the agent behind the test
// coordinator drops what it cannot use, answers a malformed job carrying a valid UUID with
// exactly one job_error internal, ignores duplicates, and keeps serving on the same session.

import assert from "node:assert/strict";
import type { CoordSession, Frame } from "../harness/coordinator.ts";
import { type Stack, type StackOptions, startStack } from "../harness/stack.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";
const SLOW = "slow-model";
const REQUEST = { messages: [{ role: "user", content: "hi" }] };
const MAX_FRAME = 4 * 1024 * 1024;

/** vLLM serving MODEL (fast) and SLOW (a stream of about a second, to overlap with other frames). */
const BACKENDS: StackOptions = {
  backends: [{
    kind: "vllm",
    models: [MODEL, SLOW],
    scripts: { [SLOW]: { deltas: 8, delayMs: 120 } },
  }],
};

async function withSession(
  fn: (stack: Stack, s: CoordSession) => Promise<void>,
): Promise<void> {
  const stack = await startStack(BACKENDS);
  try {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    await fn(stack, s);
    // Still the one session: no reconnect, the coordinator's socket never closed.
    assert.equal(stack.coord.sessions.length, 1, "the agent did not reconnect");
    assert.equal(stack.agent.session.status.reconnects, 0);
    assert.equal(stack.agent.session.status.state, "authenticated");
    assert.equal(s.socket.readyState, WebSocket.OPEN);
  } finally {
    await stack.stop();
  }
}

/** Frames the agent sent in answer to something (everything but heartbeats and capabilities). */
function answers(s: CoordSession): Frame[] {
  return s.frames.filter((f) => f.type !== "heartbeat" && f.type !== "capabilities");
}

/**
 * Sends a normal job and waits for its job_done. The agent reads frames in order and answers
 * a malformed one synchronously, so once this returns every earlier frame has been handled.
 */
async function serveOne(s: CoordSession): Promise<string> {
  const id = s.sendJob({ model_id: MODEL });
  const r = await s.collect(id);
  assert.equal(r.terminal.type, "job_done", `expected job_done, got ${JSON.stringify(r.terminal)}`);
  assert.ok(r.chunks > 0);
  assert.ok(new TextDecoder().decode(r.bytes).includes("[DONE]"));
  return id;
}

/** The frames of a job that ran normally: chunks, then exactly one job_done. */
function assertServed(s: CoordSession, id: string): void {
  const frames = s.framesFor(id);
  assert.ok(frames.length >= 2, `job ${id} produced ${frames.length} frames`);
  const last = frames.at(-1)!;
  assert.equal(last.type, "job_done");
  for (const f of frames.slice(0, -1)) assert.equal(f.type, "job_chunk");
}

function assertMalformedAnswer(s: CoordSession, id: string): void {
  const frames = s.framesFor(id);
  assert.equal(frames.length, 1, `expected exactly one answer for ${id}, got ${frames.length}`);
  const f = frames[0]!;
  assert.equal(f.type, "job_error");
  assert.equal(f.error_code, "internal");
  assert.equal(f.tokens_emitted, 0);
  assert.equal(typeof f.message, "string");
  assert.deepEqual(Object.keys(f).sort(), [
    "error_code",
    "job_id",
    "message",
    "tokens_emitted",
    "type",
  ]);
}

/** Asserts the answers are exactly: one job_error per id in `errored`, and the served jobs. */
function assertOnlyAnswers(s: CoordSession, errored: string[], served: string[]): void {
  for (const id of errored) assertMalformedAnswer(s, id);
  for (const id of served) assertServed(s, id);
  const known = new Set([...errored, ...served]);
  const stray = answers(s).filter((f) => !known.has(f.job_id as string));
  assert.deepEqual(stray, [], "no other frame got an answer");
}

function job(fields: Record<string, unknown>): Record<string, unknown> {
  return {
    type: "job",
    job_id: crypto.randomUUID(),
    model_id: MODEL,
    request: REQUEST,
    ...fields,
  };
}

/** Printable garbage that is not JSON (a fixed pseudo-random sequence). */
function garbage(n: number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz{}[]:,\"' \\0123456789\t";
  let x = 0x2545f491;
  let s = "<";
  for (let i = 1; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    s += alphabet[(x >>> 0) % alphabet.length];
  }
  return s;
}

// ---------------------------------------------------------------------------

Deno.test("frames that are not JSON objects with a string type are dropped without an answer", async () => {
  await withSession(async (_stack, s) => {
    const id = crypto.randomUUID();
    s.sendRaw('{"type":"job","job_id":');
    s.sendRaw("[" + JSON.stringify(job({ job_id: id })) + "]");
    s.sendRaw("null");
    s.sendRaw("42");
    s.sendRaw('"job"');
    s.sendRaw("");
    const { type: _t, ...untyped } = job({ job_id: id });
    s.send(untyped);
    s.send({ ...job({ job_id: id }), type: 7 });
    s.send({ ...job({ job_id: id }), type: ["job"] });
    s.sendRaw(garbage(200_000));
    const last = await serveOne(s);
    assertOnlyAnswers(s, [], [last]);
    assert.deepEqual(s.framesFor(id), []);
  });
});

Deno.test("a job without job_id or with a non-UUID one is dropped without an answer", async () => {
  await withSession(async (stack, s) => {
    const { job_id: _j, ...noId } = job({});
    s.send(noId);
    s.send(job({ job_id: "job-1" }));
    s.send(job({ job_id: 12345 }));
    s.send(job({ job_id: "5b7c2a3e1f4d4c8e9a6b0d2e4f6a8c1b" }));
    s.send(job({ job_id: null }));
    const last = await serveOne(s);
    assertOnlyAnswers(s, [], [last]);
    assert.equal(stack.fakes[0]!.requests.length, 1, "only the normal job reached the backend");
  });
});

Deno.test("a job with a UUID but no model_id gets exactly one job_error internal", async () => {
  await withSession(async (stack, s) => {
    const { model_id: _m, ...noModel } = job({});
    s.send(noModel);
    const last = await serveOne(s);
    assertOnlyAnswers(s, [noModel.job_id as string], [last]);
    assert.equal(stack.fakes[0]!.requests.length, 1);
  });
});

Deno.test("a job whose request is a string gets exactly one job_error internal", async () => {
  await withSession(async (stack, s) => {
    const bad = job({ request: '{"messages":[]}' });
    s.send(bad);
    const last = await serveOne(s);
    assertOnlyAnswers(s, [bad.job_id as string], [last]);
    assert.equal(stack.fakes[0]!.requests.length, 1);
  });
});

Deno.test('deadline_ms 0, 3600001, 1.5 and "60000" each get one job_error internal, never a run', async () => {
  await withSession(async (stack, s) => {
    const bad = [0, 3_600_001, 1.5, "60000"].map((d) => job({ deadline_ms: d }));
    for (const b of bad) s.send(b);
    const last = await serveOne(s);
    assertOnlyAnswers(s, bad.map((b) => b.job_id as string), [last]);
    assert.equal(stack.fakes[0]!.requests.length, 1, "no out-of-range deadline was run");
  });
});

Deno.test("a job with an unknown format gets exactly one job_error internal", async () => {
  await withSession(async (stack, s) => {
    const bad = job({ format: "gemini" });
    s.send(bad);
    const last = await serveOne(s);
    assertOnlyAnswers(s, [bad.job_id as string], [last]);
    assert.equal(stack.fakes[0]!.requests.length, 1);
  });
});

Deno.test("job_cancel for an unknown job, or without a UUID, is ignored", async () => {
  await withSession(async (_stack, s) => {
    const unknown = crypto.randomUUID();
    s.cancel(unknown);
    s.send({ type: "job_cancel", job_id: "not-a-uuid" });
    s.send({ type: "job_cancel" });
    const last = await serveOne(s);
    assertOnlyAnswers(s, [], [last]);
    assert.deepEqual(s.framesFor(unknown), []);
  });
});

Deno.test("a duplicate job_id while the first is in flight is ignored; the original ends once", async () => {
  await withSession(async (stack, s) => {
    const fake = stack.fakes[0]!;
    const original = s.sendJob({ model_id: SLOW });
    await fake.waitForRequests(1); // the original is in flight now
    s.sendJob({ job_id: original, model_id: MODEL }); // same id, different model
    s.sendJob({ job_id: original, model_id: SLOW });
    // A malformed frame with the in-flight id must not be answered either: that would end it.
    s.send(job({ job_id: original, deadline_ms: 0 }));
    s.send(job({ job_id: original, model_id: "" }));
    const r = await s.collect(original);
    assert.equal(r.terminal.type, "job_done");
    assert.ok(new TextDecoder().decode(r.bytes).includes("tok7"), "the slow stream ran to its end");
    const last = await serveOne(s);
    assertOnlyAnswers(s, [], [original, last]);
    assert.deepEqual(r.extra(), []);
    assert.equal(fake.requests.length, 2, "the duplicates never reached the backend");
    assert.equal((fake.requests[0]!.body as { model?: string }).model, SLOW);
  });
});

Deno.test("an unknown type such as config_update is ignored", async () => {
  await withSession(async (_stack, s) => {
    const id = crypto.randomUUID();
    s.send({ type: "config_update", job_id: id, max_concurrent: 1 });
    s.send({ type: "job_chunk", job_id: id, data: "AAAA" });
    s.send({ type: "auth_challenge", nonce: "AAAA" });
    s.send({ type: "auth_ok", provider_id: "someone-else" });
    const last = await serveOne(s);
    assertOnlyAnswers(s, [], [last]);
    assert.deepEqual(s.framesFor(id), []);
  });
});

Deno.test("binary frames are ignored", async () => {
  await withSession(async (_stack, s) => {
    s.sendRaw(new Uint8Array(0));
    s.sendRaw(new TextEncoder().encode(JSON.stringify(job({}))));
    s.sendRaw(crypto.getRandomValues(new Uint8Array(65536)));
    const last = await serveOne(s);
    assertOnlyAnswers(s, [], [last]);
  });
});

Deno.test("a text frame over 4 MiB is dropped unparsed, even a valid job", async () => {
  await withSession(async (stack, s) => {
    const big = job({ request: { ...REQUEST, pad: "x".repeat(MAX_FRAME) } });
    const text = JSON.stringify(big);
    assert.ok(text.length > MAX_FRAME);
    s.sendRaw(text);
    const last = await serveOne(s);
    assertOnlyAnswers(s, [], [last]);
    assert.deepEqual(s.framesFor(big.job_id as string), []);
    assert.equal(stack.fakes[0]!.requests.length, 1);
  });
});

Deno.test("after every kind of malformed frame the same session serves the next job", async () => {
  await withSession(async (stack, s) => {
    const fake = stack.fakes[0]!;
    const errored: string[] = [];
    const silent: string[] = [];
    const expectError = (f: Record<string, unknown>) => {
      errored.push(f.job_id as string);
      s.send(f);
    };
    const expectSilence = (f: Record<string, unknown>) => {
      if (typeof f.job_id === "string") silent.push(f.job_id);
      s.send(f);
    };

    // A slow job in flight, so a duplicate of it can arrive meanwhile.
    const original = s.sendJob({ model_id: SLOW });
    await fake.waitForRequests(1);

    s.sendRaw("{not json"); // 1 invalid JSON
    s.sendRaw("[1,2,3]"); // 2 JSON array
    s.sendRaw("null"); // 3 null
    s.sendRaw("3.14"); // 4 number
    s.sendRaw('"a string"'); // 5 string
    const { type: _t, ...untyped } = job({});
    expectSilence(untyped); // 6 object without type
    expectSilence({ ...job({}), type: 1 }); // 7 type not a string
    const { job_id: _j, ...noId } = job({});
    expectSilence(noId); // 8 job without job_id
    expectSilence(job({ job_id: "job-42" })); // 9 non-UUID job_id
    const { model_id: _m, ...noModel } = job({});
    expectError(noModel); // 10 UUID but no model_id
    expectError(job({ request: "hello" })); // 11 request a string
    expectError(job({ deadline_ms: 0 })); // 12 deadline 0
    expectError(job({ deadline_ms: 3_600_001 })); // 13 deadline over the bound
    expectError(job({ format: "palm" })); // 14 unknown format
    expectSilence({ type: "job_cancel", job_id: crypto.randomUUID() }); // 15 cancel unknown job
    s.sendJob({ job_id: original, model_id: MODEL }); // 16 duplicate job_id in flight
    expectSilence({ type: "config_update", job_id: crypto.randomUUID() }); // 17 unknown type
    s.sendRaw(new Uint8Array([0x7b, 0x7d])); // 18 binary frame
    s.sendRaw(garbage(200 * 1024)); // 19 200 KB of garbage text
    const big = job({ request: { pad: "y".repeat(MAX_FRAME + 1) } });
    silent.push(big.job_id as string);
    s.sendRaw(JSON.stringify(big)); // 20 a frame over 4 MiB
    expectError(job({ deadline_ms: 1.5 })); // 21 fractional deadline
    expectError(job({ deadline_ms: "60000" })); // 22 deadline as a string
    expectSilence(job({ job_id: 7 })); // 23 numeric job_id

    const r = await s.collect(original);
    assert.equal(r.terminal.type, "job_done", "the original finished normally");
    const last = await serveOne(s);

    assertOnlyAnswers(s, errored, [original, last]);
    for (const id of silent) assert.deepEqual(s.framesFor(id), [], `${id} got no answer`);
    assert.equal(errored.length, 7);
    assert.equal(fake.requests.length, 2, "only the original and the last job ran");
    assert.equal(stack.agent.executor.inFlight, 0);
  });
});
