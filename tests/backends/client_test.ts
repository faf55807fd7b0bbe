// deno-lint-ignore-file camelcase
// The backend client (src/backends/client.ts, PROTOCOL §4–5, BACKENDS.md) against fake servers on
// loopback: the forwarded body, paths and auth headers per kind, the wire code of every refusal,
// and cancellation closing the backend request. Plain http:// only (the raw HTTP/1.1 transport).

import assert from "node:assert/strict";
import {
  type BodyStream,
  forwardedBody,
  openCompletion,
  statusError,
  type Target,
} from "../../src/backends/client.ts";
import { KINDS } from "../../src/backends/kinds.ts";
import type { BackendKind } from "../../src/config/config.ts";
import { BackendError, type ErrorCode } from "../../src/errors.ts";
import type { WireFormat } from "../../src/link/protocol.ts";
import { DEFAULT_MODELS, withFakeBackend } from "../harness/fake_backend.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const decoder = new TextDecoder();
const MESSAGES = [{ role: "user", content: "hi" }];

function targetOf(kind: BackendKind, base: string, apiKey?: string): Target {
  return { spec: KINDS[kind], base, apiKey };
}

/** Reads a body to its end and closes it. */
async function drain(body: BodyStream): Promise<string> {
  let text = "";
  try {
    for (let piece; (piece = await body.read()) !== null;) {
      text += decoder.decode(piece, { stream: true });
    }
  } finally {
    body.close();
  }
  return text + decoder.decode();
}

/** Opens a completion that must succeed, reads it all, and returns the text. */
async function complete(
  target: Target,
  model: string,
  request: Record<string, unknown>,
  format: WireFormat = "openai",
): Promise<string> {
  const body = await openCompletion(target, model, request, format, new AbortController().signal);
  return await drain(body);
}

/** Asserts that `p` rejects with a BackendError of `code` whose message matches `message`. */
async function rejectsWith(
  p: Promise<unknown>,
  code: ErrorCode,
  message?: RegExp,
): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof BackendError, `expected a BackendError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

function decodeJson(bytes: Uint8Array): Json {
  return JSON.parse(decoder.decode(bytes));
}

// ---- the forwarded body ----------------------------------------------------------------------

Deno.test("forwardedBody pins model, forces stream and include_usage, keeps other stream_options", () => {
  const request = {
    model: "something-cheaper",
    stream: false,
    stream_options: { include_usage: false, continuous_usage_stats: true },
    messages: MESSAGES,
    temperature: 0.2,
  };
  const copy = structuredClone(request);
  assert.deepEqual(decodeJson(forwardedBody(request, "org/priced", "openai")), {
    model: "org/priced",
    stream: true,
    stream_options: { include_usage: true, continuous_usage_stats: true },
    messages: MESSAGES,
    temperature: 0.2,
  });
  assert.deepEqual(request, copy, "the job's request is not modified");
});

Deno.test("forwardedBody adds stream_options when absent or not an object", () => {
  for (const so of [undefined, null, "yes", [1]]) {
    const request: Record<string, unknown> = { messages: MESSAGES };
    if (so !== undefined) request["stream_options"] = so;
    assert.deepEqual(decodeJson(forwardedBody(request, "m", "openai"))["stream_options"], {
      include_usage: true,
    });
  }
});

Deno.test("forwardedBody for anthropic pins model and stream and adds no stream_options", () => {
  const request = { model: "x", max_tokens: 64, messages: MESSAGES, system: "be brief" };
  assert.deepEqual(decodeJson(forwardedBody(request, "claude-local", "anthropic")), {
    model: "claude-local",
    max_tokens: 64,
    messages: MESSAGES,
    system: "be brief",
    stream: true,
  });
});

Deno.test("the backend receives the pinned request intact and the stream comes back verbatim", async () => {
  const model = DEFAULT_MODELS.vllm[0]!;
  await withFakeBackend(
    { kind: "vllm", defaultScript: { deltas: ["Hel", "lo"] } },
    async (fake) => {
      const text = await complete(targetOf("vllm", fake.url), model, {
        model: "some/other-model",
        stream: false,
        stream_options: { continuous_usage_stats: true },
        messages: MESSAGES,
        temperature: 0,
        max_tokens: 16,
        tools: [{ type: "function", function: { name: "f", parameters: {} } }],
      });
      const req = fake.requests[0]!;
      assert.equal(req.method, "POST");
      assert.equal(req.path, "/v1/chat/completions");
      assert.deepEqual(req.body, {
        model,
        stream: true,
        stream_options: { continuous_usage_stats: true, include_usage: true },
        messages: MESSAGES,
        temperature: 0,
        max_tokens: 16,
        tools: [{ type: "function", function: { name: "f", parameters: {} } }],
      });
      assert.equal(req.headers.get("content-type"), "application/json");
      assert.equal(req.headers.get("accept"), "text/event-stream");
      assert.equal(req.headers.get("x-conversation-id"), null);
      assert.match(text, /"content":"Hel"/);
      assert.match(text, /"content":"lo"/);
      assert.match(text, /"usage":\{"prompt_tokens":11,"completion_tokens":2/);
      assert.ok(text.endsWith("data: [DONE]\n\n"));
    },
  );
});

Deno.test("venice keeps venice_parameters as sent", async () => {
  const model = DEFAULT_MODELS.venice[0]!;
  await withFakeBackend({ kind: "venice", apiKey: "sk-venice" }, async (fake) => {
    const venice = { include_venice_system_prompt: false, character_slug: "x" };
    await complete(targetOf("venice", fake.url, "sk-venice"), model, {
      messages: MESSAGES,
      venice_parameters: venice,
    });
    assert.equal(fake.requests[0]!.path, "/api/v1/chat/completions");
    assert.deepEqual((fake.requests[0]!.body as Json)["venice_parameters"], venice);
  });
});

// ---- paths and auth headers ------------------------------------------------------------------

Deno.test("anthropic jobs go to /v1/messages on local kinds", async () => {
  const model = DEFAULT_MODELS.llamacpp[0]!;
  await withFakeBackend({ kind: "llamacpp" }, async (fake) => {
    const text = await complete(
      targetOf("llamacpp", fake.url),
      model,
      { max_tokens: 32, messages: MESSAGES },
      "anthropic",
    );
    const req = fake.requests[0]!;
    assert.equal(req.path, "/v1/messages");
    assert.equal(req.headers.get("anthropic-version"), "2023-06-01");
    assert.deepEqual(req.body, { max_tokens: 32, messages: MESSAGES, model, stream: true });
    assert.match(text, /event: message_stop/);
  });
});

Deno.test("openrouter anthropic jobs go to /api/v1/messages with the key", async () => {
  const model = DEFAULT_MODELS.openrouter[0]!;
  await withFakeBackend({ kind: "openrouter", apiKey: "sk-or" }, async (fake) => {
    await complete(targetOf("openrouter", fake.url, "sk-or"), model, {
      max_tokens: 32,
      messages: MESSAGES,
    }, "anthropic");
    const req = fake.requests[0]!;
    assert.equal(req.path, "/api/v1/messages");
    assert.equal(req.headers.get("authorization"), "Bearer sk-or");
  });
});

Deno.test("venice refuses the anthropic format with model_not_loaded and sends nothing", async () => {
  await withFakeBackend({ kind: "venice" }, async (fake) => {
    await rejectsWith(
      openCompletion(
        targetOf("venice", fake.url, "sk-venice"),
        DEFAULT_MODELS.venice[0]!,
        { max_tokens: 8, messages: MESSAGES },
        "anthropic",
        new AbortController().signal,
      ),
      "model_not_loaded",
      /does not accept the anthropic format/,
    );
    assert.equal(fake.requests.length, 0);
  });
});

Deno.test("a remote kind without an API key is auth_rejected_by_backend and sends nothing", async () => {
  for (const kind of ["openrouter", "venice"] as const) {
    await withFakeBackend({ kind }, async (fake) => {
      for (const key of [undefined, ""]) {
        await rejectsWith(
          openCompletion(
            targetOf(kind, fake.url, key),
            DEFAULT_MODELS[kind][0]!,
            { messages: MESSAGES },
            "openai",
            new AbortController().signal,
          ),
          "auth_rejected_by_backend",
          /API key/,
        );
      }
      assert.equal(fake.requests.length, 0);
    });
  }
});

Deno.test("the API key goes to openrouter and venice as a Bearer token", async () => {
  for (const kind of ["openrouter", "venice"] as const) {
    await withFakeBackend({ kind, apiKey: `sk-${kind}` }, async (fake) => {
      await complete(targetOf(kind, fake.url, `sk-${kind}`), DEFAULT_MODELS[kind][0]!, {
        messages: MESSAGES,
      });
      assert.equal(fake.requests[0]!.headers.get("authorization"), `Bearer sk-${kind}`);
      assert.equal(fake.requests[0]!.path, "/api/v1/chat/completions");
    });
  }
});

Deno.test("local kinds get no Authorization header without a key", async () => {
  for (const kind of ["vllm", "llamacpp", "lmstudio", "ollama"] as const) {
    await withFakeBackend({ kind }, async (fake) => {
      await complete(targetOf(kind, fake.url), DEFAULT_MODELS[kind][0]!, { messages: MESSAGES });
      const h = fake.requests[0]!.headers;
      assert.equal(h.get("authorization"), null, kind);
      assert.equal(h.get("x-api-key"), null, kind);
    });
  }
});

Deno.test("LM Studio anthropic requests carry a non-empty x-api-key", async () => {
  // The fake refuses /v1/messages without one, as LM Studio does.
  await withFakeBackend({ kind: "lmstudio" }, async (fake) => {
    const text = await complete(
      targetOf("lmstudio", fake.url),
      DEFAULT_MODELS.lmstudio[0]!,
      { max_tokens: 8, messages: MESSAGES },
      "anthropic",
    );
    assert.match(text, /event: message_stop/);
    const key = fake.requests[0]!.headers.get("x-api-key");
    assert.ok(key !== null && key.length > 0);
    assert.equal(fake.requests[0]!.headers.get("authorization"), null);
  });
});

Deno.test("vLLM gets its key as Bearer only, never as x-api-key", async () => {
  await withFakeBackend({ kind: "vllm", apiKey: "sk-vllm" }, async (fake) => {
    await complete(targetOf("vllm", fake.url, "sk-vllm"), DEFAULT_MODELS.vllm[0]!, {
      max_tokens: 8,
      messages: MESSAGES,
    }, "anthropic");
    const h = fake.requests[0]!.headers;
    assert.equal(h.get("authorization"), "Bearer sk-vllm");
    assert.equal(h.get("x-api-key"), null);
  });
});

// ---- refusals and their wire codes -----------------------------------------------------------

Deno.test("statusError maps 401 and 403 to auth_rejected_by_backend", () => {
  for (const status of [401, 403]) {
    const e = statusError(status, `{"error":"Unauthorized"}`, "vllm 127.0.0.1:8000");
    assert.equal(e.code, "auth_rejected_by_backend");
    assert.equal(e.message, `vllm 127.0.0.1:8000: HTTP ${status}: Unauthorized`);
  }
});

Deno.test("statusError maps 404 to model_not_loaded", () => {
  const e = statusError(404, `{"error":{"message":"model 'x' not found"}}`, "ollama h");
  assert.equal(e.code, "model_not_loaded");
  assert.match(e.message, /model 'x' not found/);
});

Deno.test("statusError maps LM Studio's 400 No models loaded to model_not_loaded", () => {
  const body = JSON.stringify({
    error: {
      message:
        "No models loaded. Please load a model in the developer page or use the `lms load` command.",
      type: "invalid_request_error",
      param: "model",
      code: "model_not_found",
    },
  });
  assert.equal(statusError(400, body, "lmstudio h").code, "model_not_loaded");
  assert.equal(
    statusError(400, `{"error":"No model loaded"}`, "lmstudio h").code,
    "model_not_loaded",
  );
  assert.equal(statusError(400, `{"error":"bad request"}`, "lmstudio h").code, "internal");
});

Deno.test("statusError maps 429/503 to out_of_capacity, others to internal, with the upstream message", () => {
  const cases: [number, string, string, string][] = [
    [
      500,
      `{"error":{"message":"CUDA out of memory","code":500}}`,
      "CUDA out of memory",
      "internal",
    ],
    [503, `{"error":"server busy"}`, "server busy", "out_of_capacity"],
    [
      500,
      `{"object":"error","message":"engine crashed","type":"InternalServerError"}`,
      "engine crashed",
      "internal",
    ],
    [
      429,
      `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`,
      "slow down",
      "out_of_capacity",
    ],
  ];
  for (const [status, body, message, code] of cases) {
    const e = statusError(status, body, "vllm h");
    assert.equal(e.code, code);
    assert.equal(e.message, `vllm h: HTTP ${status}: ${message}`);
  }
  const html = statusError(502, "<html>bad gateway</html>", "vllm h");
  assert.equal(html.code, "internal");
  assert.equal(html.message, "vllm h: HTTP 502");
});

Deno.test("a backend answering 401 is auth_rejected_by_backend", async () => {
  await withFakeBackend({ kind: "vllm", apiKey: "right" }, async (fake) => {
    await rejectsWith(
      complete(targetOf("vllm", fake.url, "wrong"), DEFAULT_MODELS.vllm[0]!, {
        messages: MESSAGES,
      }),
      "auth_rejected_by_backend",
      /HTTP 401: Unauthorized/,
    );
  });
});

Deno.test("a backend answering 403 is auth_rejected_by_backend", async () => {
  await withFakeBackend({ kind: "openrouter", defaultScript: { status: 403 } }, async (fake) => {
    await rejectsWith(
      complete(targetOf("openrouter", fake.url, "k"), DEFAULT_MODELS.openrouter[0]!, {
        messages: MESSAGES,
      }),
      "auth_rejected_by_backend",
      /HTTP 403/,
    );
  });
});

Deno.test("a backend that does not know the model is model_not_loaded with its message", async () => {
  await withFakeBackend({ kind: "ollama" }, async (fake) => {
    await rejectsWith(
      complete(targetOf("ollama", fake.url), "not-pulled:latest", { messages: MESSAGES }),
      "model_not_loaded",
      /HTTP 404: model "not-pulled:latest" not found, try pulling it first/,
    );
  });
});

Deno.test("LM Studio's 400 No models loaded is model_not_loaded", async () => {
  const errorBody = JSON.stringify({
    error: {
      message: "No models loaded. Please load a model in the developer page.",
      type: "invalid_request_error",
      param: "model",
      code: "model_not_found",
    },
  });
  await withFakeBackend(
    { kind: "lmstudio", defaultScript: { status: 400, errorBody } },
    async (fake) => {
      await rejectsWith(
        complete(targetOf("lmstudio", fake.url), DEFAULT_MODELS.lmstudio[0]!, {
          messages: MESSAGES,
        }),
        "model_not_loaded",
        /HTTP 400: No models loaded/,
      );
    },
  );
});

Deno.test("500 is internal, 429 and 503 out_of_capacity, with the upstream message of every body shape", async () => {
  const shapes: [number, string, string, ErrorCode][] = [
    [
      500,
      `{"error":{"message":"object-shaped failure","code":500}}`,
      "object-shaped failure",
      "internal",
    ],
    [503, `{"error":"string-shaped failure"}`, "string-shaped failure", "out_of_capacity"],
    [
      500,
      `{"object":"error","message":"flat failure","type":"x","code":500}`,
      "flat failure",
      "internal",
    ],
    [
      429,
      `{"error":{"message":"too many requests","code":429}}`,
      "too many requests",
      "out_of_capacity",
    ],
  ];
  for (const [status, errorBody, message, code] of shapes) {
    await withFakeBackend({ kind: "vllm", defaultScript: { status, errorBody } }, async (fake) => {
      await rejectsWith(
        complete(targetOf("vllm", fake.url), DEFAULT_MODELS.vllm[0]!, { messages: MESSAGES }),
        code,
        new RegExp(`^vllm 127\\.0\\.0\\.1:${fake.port}: HTTP ${status}: ${message}$`),
      );
    });
  }
});

Deno.test("a loading llama.cpp's 503 is out_of_capacity with its message", async () => {
  await withFakeBackend({ kind: "llamacpp", state: "loading" }, async (fake) => {
    await rejectsWith(
      complete(targetOf("llamacpp", fake.url), DEFAULT_MODELS.llamacpp[0]!, {
        messages: MESSAGES,
      }),
      "out_of_capacity",
      /HTTP 503: Loading model/,
    );
  });
});

Deno.test("connection refused is backend_unreachable", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  await rejectsWith(
    complete(targetOf("vllm", `http://127.0.0.1:${port}`), "m", { messages: MESSAGES }),
    "backend_unreachable",
    /connection refused/,
  );
});

Deno.test("a stream that breaks off mid-way is internal", async () => {
  await withFakeBackend(
    { kind: "vllm", defaultScript: { deltas: 5, breakAfter: 2 } },
    async (fake) => {
      await rejectsWith(
        complete(targetOf("vllm", fake.url), DEFAULT_MODELS.vllm[0]!, { messages: MESSAGES }),
        "internal",
      );
    },
  );
});

// ---- cancellation ----------------------------------------------------------------------------

Deno.test("aborting while the stream runs closes the backend request", async () => {
  await withFakeBackend(
    { kind: "vllm", defaultScript: { deltas: 1000, delayMs: 20 } },
    async (fake) => {
      const ac = new AbortController();
      const body = await openCompletion(
        targetOf("vllm", fake.url),
        DEFAULT_MODELS.vllm[0]!,
        { messages: MESSAGES },
        "openai",
        ac.signal,
      );
      try {
        assert.notEqual(await body.read(), null);
        const reason = new Error("job cancelled");
        ac.abort(reason);
        assert.equal(await fake.waitForClose(1), "client-closed");
        await assert.rejects(body.read(), (err) => err === reason);
      } finally {
        body.close();
      }
    },
  );
});

Deno.test("aborting before the backend answers rejects with the reason and closes the request", async () => {
  await withFakeBackend(
    { kind: "ollama", defaultScript: { hang: "before-headers" } },
    async (fake) => {
      const ac = new AbortController();
      const opening = openCompletion(
        targetOf("ollama", fake.url),
        DEFAULT_MODELS.ollama[0]!,
        { messages: MESSAGES },
        "openai",
        ac.signal,
      );
      await fake.waitForRequests(1);
      const reason = new Error("deadline");
      ac.abort(reason);
      await assert.rejects(opening, (err) => err === reason);
      assert.equal(await fake.waitForClose(1), "client-closed");
    },
  );
});

Deno.test("aborting after the headers, before any event, closes the backend request", async () => {
  await withFakeBackend(
    { kind: "llamacpp", defaultScript: { hang: "after-headers" } },
    async (fake) => {
      const ac = new AbortController();
      const body = await openCompletion(
        targetOf("llamacpp", fake.url),
        DEFAULT_MODELS.llamacpp[0]!,
        { messages: MESSAGES },
        "openai",
        ac.signal,
      );
      try {
        const pending = body.read();
        ac.abort(new Error("cancel"));
        await assert.rejects(pending);
        assert.equal(await fake.waitForClose(1), "client-closed");
      } finally {
        body.close();
      }
    },
  );
});

Deno.test("closing the body closes the backend request", async () => {
  await withFakeBackend(
    { kind: "vllm", defaultScript: { deltas: 1000, delayMs: 20 } },
    async (fake) => {
      const body = await openCompletion(
        targetOf("vllm", fake.url),
        DEFAULT_MODELS.vllm[0]!,
        { messages: MESSAGES },
        "openai",
        new AbortController().signal,
      );
      assert.notEqual(await body.read(), null);
      body.close();
      body.close(); // idempotent
      assert.equal(await fake.waitForClose(1), "client-closed");
      assert.equal(await body.read(), null);
    },
  );
});

Deno.test("an already aborted signal sends nothing", async () => {
  await withFakeBackend({ kind: "vllm" }, async (fake) => {
    const ac = new AbortController();
    const reason = new Error("gone");
    ac.abort(reason);
    await assert.rejects(
      openCompletion(
        targetOf("vllm", fake.url),
        DEFAULT_MODELS.vllm[0]!,
        { messages: MESSAGES },
        "openai",
        ac.signal,
      ),
      (err) => err === reason,
    );
    assert.equal(fake.requests.length, 0);
  });
});
