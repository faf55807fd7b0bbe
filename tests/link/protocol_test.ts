// Tests for src/link/protocol.ts (PROTOCOL §1–5): parseInbound accepts every valid coordinator
// frame and rejects each violation with a reason; the outbound builders produce exactly the
// wire shapes. Property tests check that no input makes the parser throw or accept a bad job.
// deno-lint-ignore-file camelcase

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  authResponse,
  capabilities,
  CHUNK_TAIL,
  DEFAULT_DEADLINE_MS,
  heartbeat,
  type Inbound,
  jobChunk,
  jobChunkHead,
  jobDone,
  jobError,
  MAX_DEADLINE_MS,
  MAX_FRAME_BYTES,
  parseInbound,
  type ParseResult,
} from "../../src/link/protocol.ts";

const JOB_ID = "5b7c2a3e-1f4d-4c8e-9a6b-0d2e4f6a8c1b";
const REQUEST = { messages: [{ role: "user", content: "hi" }], max_tokens: 16 };
const MODEL = "meta-llama/Llama-3.3-70B-Instruct";

/** A job frame as the coordinator sends it, with `over` applied (undefined deletes a field). */
function jobText(over: Record<string, unknown> = {}): string {
  const f: Record<string, unknown> = {
    type: "job",
    job_id: JOB_ID,
    model_id: MODEL,
    request: REQUEST,
    format: "openai",
    deadline_ms: 60000,
  };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) delete f[k];
    else f[k] = v;
  }
  return JSON.stringify(f);
}

function accepted(r: ParseResult): Inbound {
  if (!r.ok) assert.fail(`expected the frame to be accepted, got: ${r.reason}`);
  return r.frame;
}

/** Asserts a rejection with a non-empty reason; returns the result for further checks. */
function rejected(r: ParseResult): { reason: string; jobId?: string } {
  if (r.ok) assert.fail(`expected a rejection, got ${JSON.stringify(r.frame)}`);
  assert.equal(typeof r.reason, "string");
  assert.ok(r.reason.length > 0, "a rejection carries a reason");
  return r;
}

/** A rejection that carries no job id (nothing to answer). */
function rejectedWithoutId(text: string): string {
  const r = rejected(parseInbound(text));
  assert.equal(r.jobId, undefined, `no jobId expected for ${text.slice(0, 80)}`);
  assert.ok(!("jobId" in r), "the jobId key is absent, not undefined");
  return r.reason;
}

/** A rejected job that carries its id, so the agent answers job_error internal. */
function rejectedWithId(text: string): string {
  const r = rejected(parseInbound(text));
  assert.equal(r.jobId, JOB_ID);
  return r.reason;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// ---------------------------------------------------------------------------
// §1 authentication frames

Deno.test("auth_challenge with a padded standard base64 nonce yields the decoded bytes", () => {
  const bytes = new Uint8Array([0, 1, 2, 250, 251, 252, 253, 254, 255, 62, 63]);
  const f = accepted(
    parseInbound(JSON.stringify({ type: "auth_challenge", nonce: bytes.toBase64() })),
  );
  assert.equal(f.type, "auth_challenge");
  assert.deepEqual(f.type === "auth_challenge" && [...f.nonce], [...bytes]);
});

Deno.test("auth_challenge nonces using + and / of the standard alphabet are accepted", () => {
  const bytes = new Uint8Array([0xfb, 0xff, 0xbf, 0xfe]); // "+/+/" then "/g=="
  const nonce = bytes.toBase64();
  assert.match(nonce, /[+/]/);
  const f = accepted(parseInbound(JSON.stringify({ type: "auth_challenge", nonce })));
  assert.deepEqual(f.type === "auth_challenge" && [...f.nonce], [...bytes]);
});

Deno.test("auth_challenge nonce without padding is rejected", () => {
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: "AAE" }));
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: "AA" }));
});

Deno.test("auth_challenge nonce with embedded whitespace is rejected", () => {
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: "AAAA AAE=" }));
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: "AAAA\nAAE=" }));
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: " AAE=" }));
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: "AAE= " }));
});

Deno.test("auth_challenge nonce in the url-safe alphabet is rejected", () => {
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: "-_-_" }));
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: "AAAA_w==" }));
});

Deno.test("auth_challenge with an empty, missing or non-string nonce is rejected", () => {
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: "" }));
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge" }));
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: 12 }));
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: ["AAE="] }));
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: "not base64!" }));
  rejectedWithoutId(JSON.stringify({ type: "auth_challenge", nonce: "AAE==" }));
});

Deno.test("auth_ok with a provider_id carries it", () => {
  const f = accepted(parseInbound('{"type":"auth_ok","provider_id":"prov-123"}'));
  assert.deepEqual(f, { type: "auth_ok", providerId: "prov-123" });
});

Deno.test("auth_ok without a provider_id (absent or null) is accepted without one", () => {
  assert.deepEqual(accepted(parseInbound('{"type":"auth_ok"}')), {
    type: "auth_ok",
    providerId: undefined,
  });
  assert.deepEqual(accepted(parseInbound('{"type":"auth_ok","provider_id":null}')), {
    type: "auth_ok",
    providerId: undefined,
  });
});

Deno.test("auth_ok with a provider_id that is not a string is rejected", () => {
  rejectedWithoutId('{"type":"auth_ok","provider_id":42}');
  rejectedWithoutId('{"type":"auth_ok","provider_id":{"id":"x"}}');
});

Deno.test("auth_failed carries its reason, or a placeholder when none is given", () => {
  assert.deepEqual(accepted(parseInbound('{"type":"auth_failed","reason":"unknown key"}')), {
    type: "auth_failed",
    reason: "unknown key",
  });
  const f = accepted(parseInbound('{"type":"auth_failed"}'));
  assert.equal(f.type, "auth_failed");
  assert.ok(f.type === "auth_failed" && f.reason.length > 0);
});

// ---------------------------------------------------------------------------
// §4 jobs

Deno.test("a complete job frame is parsed into its typed fields", () => {
  const text = jobText({ format: "anthropic", deadline_ms: 1234 });
  assert.deepEqual(accepted(parseInbound(text)), {
    type: "job",
    jobId: JOB_ID,
    modelId: MODEL,
    request: REQUEST,
    format: "anthropic",
    deadlineMs: 1234,
  });
});

Deno.test("a job without format and deadline_ms gets openai and 60000", () => {
  const f = accepted(parseInbound(jobText({ format: undefined, deadline_ms: undefined })));
  assert.equal(f.type, "job");
  assert.ok(f.type === "job");
  assert.equal(f.format, "openai");
  assert.equal(f.deadlineMs, 60000);
  assert.equal(DEFAULT_DEADLINE_MS, 60000);
});

Deno.test("a job's deadline_ms bounds 1 and 3600000 are accepted", () => {
  for (const d of [1, MAX_DEADLINE_MS]) {
    const f = accepted(parseInbound(jobText({ deadline_ms: d })));
    assert.ok(f.type === "job" && f.deadlineMs === d);
  }
  assert.equal(MAX_DEADLINE_MS, 3_600_000);
});

Deno.test("a job's request object is passed through untouched", () => {
  const request = { model: "x", stream: false, nested: { a: [1, { b: null }] }, "ü": "ß" };
  const f = accepted(parseInbound(jobText({ request })));
  assert.ok(f.type === "job");
  assert.deepEqual(f.request, request);
});

Deno.test("a job without job_id is rejected without a job id", () => {
  const reason = rejectedWithoutId(jobText({ job_id: undefined }));
  assert.match(reason, /job_id/);
});

Deno.test("a job with a non-UUID job_id is rejected without a job id", () => {
  for (
    const id of [
      "job-1",
      "",
      "5b7c2a3e1f4d4c8e9a6b0d2e4f6a8c1b",
      `${JOB_ID}x`,
      ` ${JOB_ID}`,
      "5b7c2a3e-1f4d-4c8e-9a6b-0d2e4f6a8c1g",
      "{5b7c2a3e-1f4d-4c8e-9a6b-0d2e4f6a8c1b}",
    ]
  ) {
    rejectedWithoutId(jobText({ job_id: id }));
  }
  rejectedWithoutId(jobText({ job_id: 12345 }));
  rejectedWithoutId(jobText({ job_id: null }));
  rejectedWithoutId(jobText({ job_id: [JOB_ID] }));
});

Deno.test("a job with a UUID but no model_id is rejected with its job id", () => {
  assert.match(rejectedWithId(jobText({ model_id: undefined })), /model_id/);
  assert.match(rejectedWithId(jobText({ model_id: "" })), /model_id/);
  assert.match(rejectedWithId(jobText({ model_id: 7 })), /model_id/);
  assert.match(rejectedWithId(jobText({ model_id: null })), /model_id/);
});

Deno.test("a job whose request is not an object is rejected with its job id", () => {
  for (const request of [undefined, "hi", 1, true, null, [], [REQUEST]]) {
    assert.match(rejectedWithId(jobText({ request })), /request/);
  }
});

Deno.test("a job with an unknown format is rejected with its job id", () => {
  for (const format of ["gemini", "OpenAI", "", 1, null, ["openai"]]) {
    assert.match(rejectedWithId(jobText({ format })), /format/);
  }
});

Deno.test("a job's deadline_ms of 0 is rejected with its job id, never clamped", () => {
  assert.match(rejectedWithId(jobText({ deadline_ms: 0 })), /deadline_ms/);
});

Deno.test("a job's deadline_ms of 3600001 is rejected with its job id, never truncated", () => {
  assert.match(rejectedWithId(jobText({ deadline_ms: 3_600_001 })), /deadline_ms/);
});

Deno.test("a job's fractional deadline_ms 1.5 is rejected with its job id", () => {
  assert.match(rejectedWithId(jobText({ deadline_ms: 1.5 })), /deadline_ms/);
});

Deno.test('a job\'s deadline_ms given as the string "60000" is rejected with its job id', () => {
  assert.match(rejectedWithId(jobText({ deadline_ms: "60000" })), /deadline_ms/);
});

Deno.test("a job's negative, huge or non-numeric deadline_ms is rejected with its job id", () => {
  for (const d of [-1, -60000, 1e21, null, true, [60000], { ms: 60000 }]) {
    rejectedWithId(jobText({ deadline_ms: d }));
  }
  // Literals JSON.stringify cannot produce: exponent forms of out-of-range values.
  const raw = (lit: string) =>
    `{"type":"job","job_id":"${JOB_ID}","model_id":"m","request":{},"deadline_ms":${lit}}`;
  for (const lit of ["1e400", "-0.5", "3.6000001e6", "0.0"]) rejectedWithId(raw(lit));
  // 6e4 is the integer 60000 and is fine.
  const f = accepted(parseInbound(raw("6e4")));
  assert.ok(f.type === "job" && f.deadlineMs === 60000);
});

Deno.test("job_cancel with a UUID is parsed", () => {
  assert.deepEqual(accepted(parseInbound(`{"type":"job_cancel","job_id":"${JOB_ID}"}`)), {
    type: "job_cancel",
    jobId: JOB_ID,
  });
});

Deno.test("job_cancel without a UUID job_id is rejected without a job id", () => {
  rejectedWithoutId('{"type":"job_cancel"}');
  rejectedWithoutId('{"type":"job_cancel","job_id":"job-1"}');
  rejectedWithoutId('{"type":"job_cancel","job_id":42}');
  rejectedWithoutId('{"type":"job_cancel","job_id":null}');
});

Deno.test("an unknown type is accepted as other with its name", () => {
  assert.deepEqual(accepted(parseInbound('{"type":"config_update","max_concurrent":4}')), {
    type: "other",
    name: "config_update",
  });
  assert.deepEqual(accepted(parseInbound('{"type":""}')), { type: "other", name: "" });
  // Outbound frame types echoed back are not inbound frames either.
  assert.deepEqual(accepted(parseInbound('{"type":"heartbeat"}')), {
    type: "other",
    name: "heartbeat",
  });
});

// ---------------------------------------------------------------------------
// Frames that are not frames

Deno.test("invalid JSON is rejected", () => {
  for (const t of ["", "{", "{type:job}", '{"type":"job",}', "undefined", "NaN", "\u0000", "'x'"]) {
    rejectedWithoutId(t);
  }
});

Deno.test("JSON arrays, null, numbers, strings and booleans are rejected as not objects", () => {
  for (const t of ["[]", '[{"type":"job"}]', "null", "0", "42", "-1.5", '"job"', "true", "false"]) {
    rejectedWithoutId(t);
  }
});

Deno.test("an object without a string type is rejected", () => {
  for (
    const t of [
      "{}",
      `{"job_id":"${JOB_ID}"}`,
      '{"type":null}',
      '{"type":1}',
      '{"type":["job"]}',
      '{"type":{"name":"job"}}',
      '{"type":true}',
      '{"Type":"job"}',
    ]
  ) {
    rejectedWithoutId(t);
  }
});

Deno.test("a frame over MAX_FRAME_BYTES is rejected unparsed, one at the limit is parsed", () => {
  assert.equal(MAX_FRAME_BYTES, 4 * 1024 * 1024);
  const head = '{"type":"config_update","pad":"';
  const tail = '"}';
  const atLimit = head + "x".repeat(MAX_FRAME_BYTES - head.length - tail.length) + tail;
  assert.equal(atLimit.length, MAX_FRAME_BYTES);
  assert.deepEqual(accepted(parseInbound(atLimit)), { type: "other", name: "config_update" });
  const over = head + "x".repeat(MAX_FRAME_BYTES - head.length - tail.length + 1) + tail;
  assert.match(rejectedWithoutId(over), /frame over/);
  // An oversized job with a valid id is not answered: it is dropped unparsed.
  const bigJob = jobText({ request: { pad: "x".repeat(MAX_FRAME_BYTES) } });
  rejectedWithoutId(bigJob);
});

Deno.test("JSON with __proto__ keys cannot smuggle fields into a job", () => {
  // JSON.parse makes __proto__ an own key, never the prototype: the frame lacks model_id.
  const t = `{"type":"job","job_id":"${JOB_ID}","__proto__":{"model_id":"m"},"request":{}}`;
  assert.match(rejectedWithId(t), /model_id/);
});

// ---------------------------------------------------------------------------
// Properties

/** §4: what an accepted job frame must satisfy, checked on the raw JSON object. */
function satisfiesJobSpec(o: Record<string, unknown>): boolean {
  const isObj = (v: unknown) => typeof v === "object" && v !== null && !Array.isArray(v);
  const d = o.deadline_ms;
  return typeof o.job_id === "string" && UUID_RE.test(o.job_id) &&
    typeof o.model_id === "string" && o.model_id !== "" &&
    isObj(o.request) &&
    (o.format === undefined || o.format === "openai" || o.format === "anthropic") &&
    (d === undefined || (typeof d === "number" && Number.isInteger(d) && d >= 1 && d <= 3_600_000));
}

/** The invariants every parse result must keep, whatever the input. */
function checkResult(text: string, r: ParseResult): void {
  assert.equal(typeof r.ok, "boolean");
  if (!r.ok) {
    assert.equal(typeof r.reason, "string");
    assert.ok(r.reason.length > 0);
    if (r.jobId !== undefined) {
      assert.match(r.jobId, UUID_RE);
      const o = JSON.parse(text);
      assert.equal(o.type, "job", "only a job rejection carries a job id");
      assert.equal(o.job_id, r.jobId);
    }
    return;
  }
  const o = JSON.parse(text);
  assert.ok(typeof o === "object" && o !== null && !Array.isArray(o));
  assert.equal(typeof o.type, "string");
  const f = r.frame;
  switch (f.type) {
    case "job":
      assert.equal(o.type, "job");
      assert.ok(satisfiesJobSpec(o), `accepted a job violating §4: ${text}`);
      assert.match(f.jobId, UUID_RE);
      assert.equal(f.jobId, o.job_id);
      assert.ok(typeof f.modelId === "string" && f.modelId.length > 0);
      assert.equal(f.modelId, o.model_id);
      assert.ok(typeof f.request === "object" && f.request !== null && !Array.isArray(f.request));
      assert.ok(f.format === "openai" || f.format === "anthropic");
      assert.ok(Number.isInteger(f.deadlineMs) && f.deadlineMs >= 1 && f.deadlineMs <= 3_600_000);
      break;
    case "job_cancel":
      assert.equal(o.type, "job_cancel");
      assert.match(f.jobId, UUID_RE);
      break;
    case "auth_challenge":
      assert.equal(o.type, "auth_challenge");
      assert.ok(f.nonce.length > 0);
      assert.match(o.nonce, /^[A-Za-z0-9+/]*={0,2}$/, "only the standard alphabet, padded");
      assert.equal(o.nonce.length % 4, 0);
      assert.deepEqual([...f.nonce], [...Uint8Array.fromBase64(o.nonce)]);
      break;
    case "auth_ok":
      assert.ok(f.providerId === undefined || typeof f.providerId === "string");
      break;
    case "auth_failed":
      assert.equal(typeof f.reason, "string");
      break;
    case "other":
      assert.equal(f.name, o.type);
      assert.ok(
        !["job", "job_cancel", "auth_challenge", "auth_ok", "auth_failed"].includes(f.name),
      );
  }
}

function parseChecked(text: string): ParseResult {
  let r: ParseResult;
  try {
    r = parseInbound(text);
  } catch (err) {
    assert.fail(`parseInbound threw on ${JSON.stringify(text.slice(0, 200))}: ${err}`);
  }
  checkResult(text, r);
  return r;
}

Deno.test("property: parseInbound never throws on arbitrary strings", () => {
  fc.assert(
    fc.property(fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.json()), (s) => {
      parseChecked(s);
    }),
    { numRuns: 500 },
  );
});

Deno.test("property: parseInbound never throws on arbitrary JSON values", () => {
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      parseChecked(JSON.stringify(v));
    }),
    { numRuns: 500 },
  );
});

Deno.test("property: objects with an arbitrary type and fields never make it throw", () => {
  const types = fc.constantFrom("job", "job_cancel", "auth_challenge", "auth_ok", "auth_failed");
  fc.assert(
    fc.property(
      fc.oneof(types, fc.string()),
      fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 8 }),
      (type, rest) => {
        parseChecked(JSON.stringify({ ...rest, type }));
      },
    ),
    { numRuns: 500 },
  );
});

const uuid = fc.uuid();
const validJob = fc.record({
  type: fc.constant("job"),
  job_id: uuid,
  model_id: fc.string({ minLength: 1, maxLength: 40 }),
  request: fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 2 }), {
    maxKeys: 4,
  }),
  format: fc.constantFrom("openai", "anthropic", undefined),
  deadline_ms: fc.oneof(fc.integer({ min: 1, max: 3_600_000 }), fc.constant(undefined)),
});
const validFrame = fc.oneof(
  validJob,
  fc.record({ type: fc.constant("job_cancel"), job_id: uuid }),
  fc.record({
    type: fc.constant("auth_challenge"),
    nonce: fc.uint8Array({ minLength: 1, maxLength: 48 }).map((b) => b.toBase64()),
  }),
  fc.record({ type: fc.constant("auth_ok"), provider_id: fc.option(fc.string()) }),
  fc.record({ type: fc.constant("auth_failed"), reason: fc.string() }),
  fc.record({ type: fc.constantFrom("config_update", "ping", "job_chunk"), x: fc.jsonValue() }),
);

/** Values a field is swapped to: other JSON types and near-misses of valid values. */
const swapValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(
    0,
    1,
    1.5,
    -1,
    3_600_001,
    "60000",
    "",
    "openai ",
    "ANTHROPIC",
    null,
    true,
    [],
    {},
    "not-a-uuid",
    "AAE",
    "-_-_",
  ),
  uuid.map((u) => u.toUpperCase()),
  uuid.map((u) => u.slice(1)),
);

const mutation = fc.oneof(
  fc.record({ op: fc.constant("delete" as const), key: fc.nat() }),
  fc.record({ op: fc.constant("swap" as const), key: fc.nat(), value: swapValue }),
  fc.record({ op: fc.constant("add" as const), key: fc.string(), value: fc.jsonValue() }),
);

Deno.test("property: valid frames are accepted as their own type", () => {
  fc.assert(
    fc.property(validFrame, (frame) => {
      const text = JSON.stringify(frame);
      const r = parseChecked(text);
      assert.ok(r.ok, `valid frame rejected: ${text}`);
      const expected = ["job", "job_cancel", "auth_challenge", "auth_ok", "auth_failed"]
          .includes(frame.type)
        ? frame.type
        : "other";
      assert.equal(r.frame.type, expected);
    }),
    { numRuns: 300 },
  );
});

Deno.test("property: mutated valid frames never make it throw, and a job is accepted iff it satisfies §4", () => {
  fc.assert(
    fc.property(validFrame, fc.array(mutation, { minLength: 1, maxLength: 4 }), (frame, muts) => {
      const o: Record<string, unknown> = JSON.parse(JSON.stringify(frame));
      for (const m of muts) {
        const keys = Object.keys(o);
        if (m.op === "add") o[m.key] = m.value;
        else if (keys.length > 0) {
          const k = keys[m.key % keys.length]!;
          if (m.op === "delete") delete o[k];
          else o[k] = m.value;
        }
      }
      const text = JSON.stringify(o);
      const r = parseChecked(text);
      if (o.type === "job") {
        assert.equal(r.ok, satisfiesJobSpec(o), `job acceptance disagrees with §4 for ${text}`);
        if (!r.ok) {
          const idValid = typeof o.job_id === "string" && UUID_RE.test(o.job_id);
          assert.equal(r.jobId, idValid ? o.job_id : undefined, "jobId iff the id is a UUID");
        }
      }
    }),
    { numRuns: 500 },
  );
});

// ---------------------------------------------------------------------------
// Outbound builders

/** Parses a built frame and checks its key set exactly (order-insensitive). */
function shape(text: string, keys: string[]): Record<string, unknown> {
  const o = JSON.parse(text);
  assert.deepEqual(Object.keys(o).sort(), [...keys].sort());
  return o;
}

Deno.test("auth_response without an enrollment code has exactly type, pubkey, signature, agent_version", () => {
  const o = shape(authResponse("PUB=", "SIG==", "0.1.0"), [
    "type",
    "pubkey",
    "signature",
    "agent_version",
  ]);
  assert.deepEqual(o, {
    type: "auth_response",
    pubkey: "PUB=",
    signature: "SIG==",
    agent_version: "0.1.0",
  });
});

Deno.test("auth_response with an enrollment code adds enrollment_code", () => {
  assert.deepEqual(JSON.parse(authResponse("P", "S", "0.1.0", "POD-ENROLL-7K9X4LM2")), {
    type: "auth_response",
    pubkey: "P",
    signature: "S",
    agent_version: "0.1.0",
    enrollment_code: "POD-ENROLL-7K9X4LM2",
  });
});

Deno.test("capabilities has the §2 shape; context_window is omitted when unknown and max_tokens_per_minute is null", () => {
  const text = capabilities(
    [
      {
        modelId: "a-model",
        inputPer1m: 300000,
        outputPer1m: 450000,
        maxConcurrent: 8,
        backend: "vllm",
        contextWindow: 131072,
        formats: ["openai", "anthropic"],
      },
      {
        modelId: "b-model",
        inputPer1m: 500000,
        outputPer1m: 750000,
        maxConcurrent: 2,
        backend: "ollama",
        contextWindow: undefined,
        formats: ["openai"],
      },
    ],
    { maxConcurrentTotal: 8, maxTokensPerMinute: null },
    { agentVersion: "0.1.0", agent: "usepod-agent-deno" },
  );
  assert.ok(!text.includes('context_window":null'), "context_window is omitted, not null");
  const o = shape(text, ["type", "models", "limits", "metadata"]);
  assert.deepEqual(o, {
    type: "capabilities",
    models: [
      {
        model_id: "a-model",
        input_per_1m: 300000,
        output_per_1m: 450000,
        max_concurrent: 8,
        backend: "vllm",
        context_window: 131072,
      },
      {
        model_id: "b-model",
        input_per_1m: 500000,
        output_per_1m: 750000,
        max_concurrent: 2,
        backend: "ollama",
      },
    ],
    limits: { max_concurrent_total: 8, max_tokens_per_minute: null },
    metadata: {
      agent_version: "0.1.0",
      agent: "usepod-agent-deno",
      formats: { "a-model": ["openai", "anthropic"], "b-model": ["openai"] },
    },
  });
  const models = o.models as Record<string, unknown>[];
  assert.ok(!("context_window" in models[1]!));
  assert.ok("max_tokens_per_minute" in (o.limits as object));
});

Deno.test("capabilities with a token limit and no models", () => {
  const o = JSON.parse(
    capabilities([], { maxConcurrentTotal: 3, maxTokensPerMinute: 200000 }, {
      agentVersion: "1.2.3",
      agent: "usepod-agent-deno",
    }),
  );
  assert.deepEqual(o, {
    type: "capabilities",
    models: [],
    limits: { max_concurrent_total: 3, max_tokens_per_minute: 200000 },
    metadata: { agent_version: "1.2.3", agent: "usepod-agent-deno", formats: {} },
  });
});

Deno.test("heartbeat has exactly the §3 fields, nulls included", () => {
  const keys = [
    "type",
    "queue_depth",
    "tokens_per_sec_p50",
    "p50_latency_ms",
    "p95_latency_ms",
    "error_rate_60s",
    "last_error_at",
    "last_error_code",
  ];
  const idle = shape(
    heartbeat({
      queueDepth: 0,
      tokensPerSecP50: 0,
      p50LatencyMs: 0,
      p95LatencyMs: 0,
      errorRate60s: 0,
      lastErrorAt: null,
      lastErrorCode: null,
    }),
    keys,
  );
  assert.deepEqual(idle, {
    type: "heartbeat",
    queue_depth: 0,
    tokens_per_sec_p50: 0,
    p50_latency_ms: 0,
    p95_latency_ms: 0,
    error_rate_60s: 0,
    last_error_at: null,
    last_error_code: null,
  });
  const busy = shape(
    heartbeat({
      queueDepth: 3,
      tokensPerSecP50: 41.5,
      p50LatencyMs: 120,
      p95LatencyMs: 900,
      errorRate60s: 0.25,
      lastErrorAt: "2026-01-02T03:04:05.678Z",
      lastErrorCode: "backend_timeout",
    }),
    keys,
  );
  assert.deepEqual(busy, {
    type: "heartbeat",
    queue_depth: 3,
    tokens_per_sec_p50: 41.5,
    p50_latency_ms: 120,
    p95_latency_ms: 900,
    error_rate_60s: 0.25,
    last_error_at: "2026-01-02T03:04:05.678Z",
    last_error_code: "backend_timeout",
  });
});

Deno.test("job_chunk built from jobChunkHead + base64 + CHUNK_TAIL equals jobChunk and decodes to the bytes", () => {
  const bytes = new TextEncoder().encode('data: {"choices":[{"delta":{"content":"hé"}}]}\n\n');
  const fast = jobChunkHead(JOB_ID) + bytes.toBase64() + CHUNK_TAIL;
  assert.equal(fast, jobChunk(JOB_ID, bytes));
  const o = shape(fast, ["type", "job_id", "data"]);
  assert.equal(o.type, "job_chunk");
  assert.equal(o.job_id, JOB_ID);
  assert.deepEqual([...Uint8Array.fromBase64(o.data as string)], [...bytes]);
});

Deno.test("property: job_chunk frames are valid JSON carrying the bytes verbatim", () => {
  fc.assert(
    fc.property(uuid, fc.uint8Array({ maxLength: 300 }), (id, bytes) => {
      const text = jobChunkHead(id) + bytes.toBase64() + CHUNK_TAIL;
      assert.equal(text, jobChunk(id, bytes));
      assert.deepEqual(JSON.parse(text), { type: "job_chunk", job_id: id, data: bytes.toBase64() });
      assert.deepEqual(
        [...Uint8Array.fromBase64(JSON.parse(text).data, { lastChunkHandling: "strict" })],
        [...bytes],
      );
    }),
    { numRuns: 300 },
  );
});

Deno.test("job_done carries both token spellings and duration_ms", () => {
  const o = shape(jobDone(JOB_ID, { input: 17, output: 23 }, 1234), [
    "type",
    "job_id",
    "tokens",
    "duration_ms",
  ]);
  assert.deepEqual(o, {
    type: "job_done",
    job_id: JOB_ID,
    tokens: { input: 17, output: 23, input_tokens: 17, output_tokens: 23 },
    duration_ms: 1234,
  });
});

Deno.test("job_error has exactly job_id, error_code, message and tokens_emitted", () => {
  const o = shape(jobError(JOB_ID, "backend_timeout", 'deadline "60000" passed', 5), [
    "type",
    "job_id",
    "error_code",
    "message",
    "tokens_emitted",
  ]);
  assert.deepEqual(o, {
    type: "job_error",
    job_id: JOB_ID,
    error_code: "backend_timeout",
    message: 'deadline "60000" passed',
    tokens_emitted: 5,
  });
});
