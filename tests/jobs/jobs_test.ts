// Jobs end to end (PROTOCOL §4–5): the real agent between the test coordinator and fake
// backends over loopback sockets — relay, usage, routing, capacity, cancel, deadline, errors.

import assert from "node:assert/strict";
import { backendToml, withSession } from "../harness/stack.ts";
import type { Frame } from "../harness/coordinator.ts";

const VLLM_MODEL = "meta-llama/Llama-3.3-70B-Instruct";

function text(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}

/** A vLLM-shaped server that answers completions with exactly these byte pieces. */
function exactBackend(pieces: Uint8Array[]) {
  const closed = Promise.withResolvers<void>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/health") return new Response(null);
    if (path === "/v1/models") {
      return Response.json({ data: [{ id: "exact-model", max_model_len: 4096 }] });
    }
    let i = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (i < pieces.length) c.enqueue(pieces[i++]!);
        else c.close();
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  });
  return { server, url: `http://127.0.0.1:${server.addr.port}`, closed };
}

Deno.test("a 40-delta stream is relayed byte-exact, split anywhere, with usage as tokens", async () => {
  // 40 deltas with multi-byte characters, CRLF endings, a comment, then usage and [DONE];
  // cut into pieces at odd offsets (inside UTF-8 sequences and between \r and \n).
  let sse = ": keep-alive\r\n\r\n";
  for (let i = 0; i < 40; i++) {
    const chunk = { choices: [{ index: 0, delta: { content: `tök${i} ☃ 😀` } }] };
    sse += `data: ${JSON.stringify(chunk)}\r\n\r\n`;
  }
  sse += `data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\n`;
  sse +=
    `data: {"choices":[],"usage":{"prompt_tokens":17,"completion_tokens":23,"total_tokens":40}}\r\n\r\n`;
  sse += "data: [DONE]\r\n\r\n";
  const all = new TextEncoder().encode(sse);
  const pieces: Uint8Array[] = [];
  for (let at = 0, step = 1; at < all.length; at += step, step = (step * 7 + 3) % 97 + 1) {
    pieces.push(all.slice(at, at + step));
  }
  const backend = exactBackend(pieces);
  try {
    await withSession({
      backends: [],
      backendsToml: () => `[[backends]]\nkind = "vllm"\nurl = "${backend.url}"\n`,
    }, async (_stack, s) => {
      const id = s.sendJob({ model_id: "exact-model" });
      const r = await s.collect(id);
      assert.deepEqual(r.bytes, all);
      assert.equal(r.terminal.type, "job_done");
      assert.deepEqual(r.terminal.tokens, {
        input: 17,
        output: 23,
        input_tokens: 17,
        output_tokens: 23,
      });
      assert.ok(typeof r.terminal.duration_ms === "number" && r.terminal.duration_ms >= 0);
    });
  } finally {
    await backend.server.shutdown();
  }
});

Deno.test("the forwarded request pins the model, forces streaming and include_usage", async () => {
  await withSession({ backends: [{ kind: "vllm" }] }, async (stack, s) => {
    const id = s.sendJob({
      model_id: VLLM_MODEL,
      request: {
        model: "some-cheaper-model",
        stream: false,
        stream_options: { continuous_usage_stats: true },
        messages: [{ role: "user", content: "hello" }],
        temperature: 0.2,
      },
    });
    const r = await s.collect(id);
    assert.equal(r.terminal.type, "job_done");
    const req = stack.fakes[0]!.requests[0]!;
    assert.equal(req.path, "/v1/chat/completions");
    const body = req.body as Record<string, unknown>;
    assert.equal(body.model, VLLM_MODEL);
    assert.equal(body.stream, true);
    assert.deepEqual(body.stream_options, { continuous_usage_stats: true, include_usage: true });
    assert.equal(body.temperature, 0.2);
    assert.deepEqual(body.messages, [{ role: "user", content: "hello" }]);
    assert.equal(req.headers.get("x-conversation-id"), null);
  });
});

Deno.test("usage from the stream becomes job_done tokens; without usage output is estimated", async () => {
  await withSession({
    backends: [{
      kind: "vllm",
      models: ["with-usage", "no-usage"],
      scripts: {
        "with-usage": { deltas: 12, inputTokens: 31 },
        "no-usage": { deltas: 9, usage: false },
      },
    }],
  }, async (_stack, s) => {
    const a = await s.collect(s.sendJob({ model_id: "with-usage" }));
    assert.deepEqual(a.terminal.tokens, {
      input: 31,
      output: 12,
      input_tokens: 31,
      output_tokens: 12,
    });
    const b = await s.collect(s.sendJob({ model_id: "no-usage" }));
    assert.equal(b.terminal.type, "job_done");
    assert.deepEqual(b.terminal.tokens, { input: 0, output: 9, input_tokens: 0, output_tokens: 9 });
  });
});

Deno.test("an anthropic job goes to /v1/messages and its usage is read from message events", async () => {
  await withSession({
    backends: [{ kind: "llamacpp", defaultScript: { deltas: 7, inputTokens: 25 } }],
  }, async (stack, s) => {
    const id = s.sendJob({
      model_id: "llama-3.2-3b-instruct",
      format: "anthropic",
      request: { max_tokens: 64, messages: [{ role: "user", content: "hi" }] },
    });
    const r = await s.collect(id);
    assert.equal(r.terminal.type, "job_done");
    assert.equal(stack.fakes[0]!.requests[0]!.path, "/v1/messages");
    assert.equal((stack.fakes[0]!.requests[0]!.body as Record<string, unknown>).stream, true);
    assert.ok(text(r.bytes).includes("event: message_stop"));
    assert.deepEqual(r.terminal.tokens, {
      input: 25,
      output: 7,
      input_tokens: 25,
      output_tokens: 7,
    });
  });
});

Deno.test("a kind that does not speak the format answers model_not_loaded saying so", async () => {
  await withSession({ backends: [{ kind: "venice" }] }, async (stack, s) => {
    const r = await s.collect(s.sendJob({ model_id: "llama-3.3-70b", format: "anthropic" }));
    assert.equal(r.terminal.error_code, "model_not_loaded");
    assert.match(String(r.terminal.message), /anthropic/);
    assert.equal(stack.fakes[0]!.requests.length, 0);
  });
});

Deno.test("an unknown model gets model_not_loaded and no backend request", async () => {
  await withSession({ backends: [{ kind: "vllm" }] }, async (stack, s) => {
    const r = await s.collect(s.sendJob({ model_id: "no-such-model" }));
    assert.equal(r.terminal.type, "job_error");
    assert.equal(r.terminal.error_code, "model_not_loaded");
    assert.equal(r.terminal.tokens_emitted, 0);
    assert.equal(stack.fakes[0]!.requests.length, 0);
  });
});

Deno.test("a third job on two slots gets out_of_capacity, and the slot is free afterwards", async () => {
  await withSession({
    backends: [{ kind: "vllm", defaultScript: { hang: "after-headers" } }],
    limits: "[limits]\nmax_concurrent = 2",
  }, async (stack, s) => {
    const fake = stack.fakes[0]!;
    const a = s.sendJob({ model_id: VLLM_MODEL });
    const b = s.sendJob({ model_id: VLLM_MODEL });
    await fake.waitForRequests(2);
    // Capacity is checked before the model lookup: even an unknown model is out_of_capacity.
    const c = await s.collect(s.sendJob({ model_id: "unknown-model" }));
    assert.equal(c.terminal.error_code, "out_of_capacity");
    const d = await s.collect(s.sendJob({ model_id: VLLM_MODEL }));
    assert.equal(d.terminal.error_code, "out_of_capacity");
    s.cancel(a);
    await fake.waitForClose(1);
    fake.setDefaultScript({ deltas: 3 });
    const e = await s.collect(s.sendJob({ model_id: VLLM_MODEL }));
    assert.equal(e.terminal.type, "job_done");
    s.cancel(b);
    await fake.waitForClose(2);
  });
});

Deno.test("cancel closes the backend request and sends no terminal frame", async () => {
  await withSession(
    { backends: [{ kind: "vllm", defaultScript: { deltas: 1000, delayMs: 5 } }] },
    async (stack, s) => {
      const fake = stack.fakes[0]!;
      const id = s.sendJob({ model_id: VLLM_MODEL });
      await s.waitFor((f) => f.type === "job_chunk" && f.job_id === id);
      s.cancel(id);
      assert.equal(await fake.waitForClose(1), "client-closed");
      // A later job's terminal frame proves the agent has processed everything before it.
      fake.setDefaultScript({ deltas: 2 });
      const next = await s.collect(s.sendJob({ model_id: VLLM_MODEL }));
      assert.equal(next.terminal.type, "job_done");
      assert.equal(
        s.framesFor(id).filter((f) => f.type === "job_done" || f.type === "job_error").length,
        0,
      );
      // Cancelling again, or a finished job, is ignored.
      s.cancel(id);
      s.cancel(next.terminal.job_id as string);
      const last = await s.collect(s.sendJob({ model_id: VLLM_MODEL }));
      assert.equal(last.terminal.type, "job_done");
      assert.equal(stack.agent.executor.inFlight, 0);
    },
  );
});

for (const hang of ["before-headers", "after-headers"] as const) {
  Deno.test(`a backend that hangs ${hang} ends in backend_timeout at the deadline`, async () => {
    await withSession(
      { backends: [{ kind: "vllm", defaultScript: { hang } }] },
      async (stack, s) => {
        const t0 = performance.now();
        const r = await s.collect(s.sendJob({ model_id: VLLM_MODEL, deadline_ms: 300 }));
        const took = performance.now() - t0;
        assert.equal(r.terminal.error_code, "backend_timeout");
        assert.ok(took >= 290 && took < 300 + 500, `took ${took} ms`);
        assert.equal(await stack.fakes[0]!.waitForClose(1), "client-closed");
      },
    );
  });
}

Deno.test("a slow stream past its deadline ends in backend_timeout with tokens_emitted", async () => {
  await withSession(
    { backends: [{ kind: "vllm", defaultScript: { deltas: 100, delayMs: 20 } }] },
    async (stack, s) => {
      const r = await s.collect(s.sendJob({ model_id: VLLM_MODEL, deadline_ms: 250 }));
      assert.equal(r.terminal.error_code, "backend_timeout");
      assert.ok(r.chunks > 0);
      assert.ok(
        (r.terminal.tokens_emitted as number) > 0 && (r.terminal.tokens_emitted as number) < 100,
      );
      assert.equal(await stack.fakes[0]!.waitForClose(1), "client-closed");
    },
  );
});

Deno.test("backend HTTP errors map to their wire codes with the upstream message", async () => {
  await withSession({
    backends: [{
      kind: "vllm",
      models: ["m401", "m403", "m404", "m500", "m503"],
      scripts: {
        m401: { status: 401 },
        m403: { status: 403 },
        m404: { status: 404 },
        m500: { status: 500, errorBody: '{"error":{"message":"CUDA out of memory","code":500}}' },
        m503: { status: 503, errorBody: '{"object":"error","message":"server busy"}' },
      },
    }],
  }, async (_stack, s) => {
    const code = async (m: string) => (await s.collect(s.sendJob({ model_id: m }))).terminal;
    assert.equal((await code("m401")).error_code, "auth_rejected_by_backend");
    assert.equal((await code("m403")).error_code, "auth_rejected_by_backend");
    assert.equal((await code("m404")).error_code, "model_not_loaded");
    const e500 = await code("m500");
    assert.equal(e500.error_code, "internal");
    assert.match(String(e500.message), /CUDA out of memory/);
    const e503 = await code("m503");
    assert.equal(e503.error_code, "out_of_capacity");
    assert.match(String(e503.message), /server busy/);
  });
});

Deno.test("a stream that breaks mid-way ends in internal with the tokens emitted so far", async () => {
  await withSession(
    { backends: [{ kind: "vllm", defaultScript: { deltas: 20, breakAfter: 6 } }] },
    async (_stack, s) => {
      const r = await s.collect(s.sendJob({ model_id: VLLM_MODEL }));
      assert.equal(r.terminal.error_code, "internal");
      assert.equal(r.terminal.tokens_emitted, 6);
      assert.equal(r.extra().length, 0);
    },
  );
});

Deno.test("a stream that ends without [DONE] or finish_reason is a failure", async () => {
  await withSession({
    backends: [{
      kind: "ollama",
      defaultScript: { deltas: 4, endWithoutDone: true, usage: false },
    }],
  }, async (_stack, s) => {
    const r = await s.collect(s.sendJob({ model_id: "llama3.2:latest" }));
    assert.equal(r.terminal.error_code, "internal");
    assert.match(String(r.terminal.message), /\[DONE\]/);
    assert.equal(r.terminal.tokens_emitted, 4);
  });
});

Deno.test("an error event inside a 200 stream is relayed, then job_error internal with its message", async () => {
  await withSession({
    backends: [{ kind: "openrouter", defaultScript: { deltas: 10, errorEventAfter: 3 } }],
  }, async (_stack, s) => {
    const r = await s.collect(s.sendJob({ model_id: "meta-llama/llama-3.3-70b-instruct" }));
    assert.equal(r.terminal.error_code, "internal");
    assert.match(String(r.terminal.message), /upstream exploded/);
    assert.ok(text(r.bytes).includes("upstream exploded"), "the error event bytes are relayed");
  });
});

Deno.test("a backend that is gone gives backend_unreachable", async () => {
  await withSession({ backends: [{ kind: "vllm" }] }, async (stack, s) => {
    await stack.fakes[0]!.close();
    const r = await s.collect(s.sendJob({ model_id: VLLM_MODEL }));
    assert.equal(r.terminal.error_code, "backend_unreachable");
    assert.equal(r.terminal.tokens_emitted, 0);
  });
});

Deno.test("an empty API key env var is never sent upstream: the backend is skipped", async () => {
  await withSession({ backends: [{ kind: "openrouter" }], env: {} }, async (stack, s) => {
    const caps = await s.waitFor((f) => f.type === "capabilities");
    assert.deepEqual(caps.models, []);
    const r = await s.collect(s.sendJob({ model_id: "meta-llama/llama-3.3-70b-instruct" }));
    assert.equal(r.terminal.error_code, "model_not_loaded");
    assert.equal(stack.fakes[0]!.requests.length, 0);
  });
});

Deno.test("every job gets exactly one terminal frame, under a mix of outcomes", async () => {
  await withSession({
    backends: [{
      kind: "vllm",
      models: ["ok", "slow", "broken", "e500"],
      scripts: {
        ok: { deltas: 5 },
        slow: { deltas: 50, delayMs: 10 },
        broken: { deltas: 10, breakAfter: 2 },
        e500: { status: 500 },
      },
    }],
    limits: "[limits]\nmax_concurrent = 6",
  }, async (_stack, s) => {
    const models = ["ok", "slow", "broken", "e500", "nope", "ok", "ok", "slow", "ok", "broken"];
    const ids = models.map((m) =>
      s.sendJob({ model_id: m, deadline_ms: m === "slow" ? 100 : 60000 })
    );
    const results = await Promise.all(ids.map((id) => s.collect(id)));
    for (const r of results) assert.equal(r.extra().length, 0);
    const terminals = s.frames.filter((f: Frame) =>
      f.type === "job_done" || f.type === "job_error"
    );
    assert.equal(terminals.length, ids.length);
    assert.equal(new Set(terminals.map((f) => f.job_id)).size, ids.length);
  });
});

Deno.test("two backends of one model: the job goes to the preferred kind", async () => {
  await withSession({
    backends: [
      { kind: "ollama", models: ["shared-model"] },
      { kind: "vllm", models: ["shared-model"] },
    ],
    backendsToml: (f) => backendToml(f[0]!, "ollama") + backendToml(f[1]!, "vllm"),
  }, async (stack, s) => {
    const caps = await s.waitFor((f) => f.type === "capabilities");
    assert.equal((caps.models as Frame[])[0]!.backend, "vllm");
    const r = await s.collect(s.sendJob({ model_id: "shared-model" }));
    assert.equal(r.terminal.type, "job_done");
    assert.equal(stack.fakes[1]!.requests.length, 1);
    assert.equal(stack.fakes[0]!.requests.length, 0);
  });
});
