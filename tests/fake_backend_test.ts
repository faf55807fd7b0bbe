// Checks that the fake backends look like the servers of BACKENDS.md: discovery routes, OpenAI and
// Anthropic streams, scripted failures (breaks, hangs, errors), keys, health states and the process entry.

import assert from "node:assert/strict";
import {
  DEFAULT_MODELS,
  type FakeKind,
  OPENROUTER_PRICING,
  startFakeBackend,
  withFakeBackend,
} from "./harness/fake_backend.ts";

/** Parsed JSON read by the assertions below. */
// deno-lint-ignore no-explicit-any
type Json = any;

const CHAT = { messages: [{ role: "user", content: "hi" }], stream: true };

function post(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
  signal?: AbortSignal,
) {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
}

async function getJson(url: string, headers: Record<string, string> = {}): Promise<[number, Json]> {
  const res = await fetch(url, { headers });
  const text = await res.text();
  return [res.status, text ? JSON.parse(text) : undefined];
}

/** SSE events of a body: `data` lines (parsed unless [DONE]), `event` names and comments. */
function events(body: string): { event?: string; data?: Json; comment?: string }[] {
  return body.split("\n\n").filter((b) => b !== "").map((block) => {
    const out: { event?: string; data?: Json; comment?: string } = {};
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) out.comment = line;
      else if (line.startsWith("event: ")) out.event = line.slice(7);
      else if (line.startsWith("data: ")) {
        const d = line.slice(6);
        out.data = d === "[DONE]" ? d : JSON.parse(d);
      }
    }
    return out;
  });
}

/** Reads a body chunk by chunk; returns the text, the chunk count and the read error, if any. */
async function readAll(res: Response): Promise<{ text: string; chunks: number; error?: unknown }> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let chunks = 0;
  try {
    for (let r; !(r = await reader.read()).done;) {
      chunks++;
      text += decoder.decode(r.value, { stream: true });
    }
    return { text, chunks };
  } catch (error) {
    return { text, chunks, error };
  }
}

Deno.test("each kind answers its discovery routes the way the real server does", async () => {
  const ctx = 4096;
  const checks: Record<FakeKind, (u: string, model: string) => Promise<void>> = {
    vllm: async (u, model) => {
      const health = await fetch(`${u}/health`);
      assert.equal(health.status, 200);
      assert.equal(await health.text(), "");
      const [, models] = await getJson(`${u}/v1/models`);
      assert.equal(models.data[0].id, model);
      assert.equal(models.data[0].max_model_len, ctx);
    },
    llamacpp: async (u, model) => {
      assert.deepEqual(await getJson(`${u}/health`), [200, { status: "ok" }]);
      const [, models] = await getJson(`${u}/v1/models`);
      assert.equal(models.data.length, 1);
      assert.equal(models.data[0].id, model);
      assert.equal(models.data[0].meta.n_ctx_train, ctx);
      const [, props] = await getJson(`${u}/props`);
      assert.equal(props.default_generation_settings.n_ctx, ctx);
    },
    lmstudio: async (u, model) => {
      assert.equal((await getJson(`${u}/v1/models`))[1].data[0].id, model);
      const [, v0] = await getJson(`${u}/api/v0/models`);
      assert.equal(v0.data[0].id, model);
      assert.equal(v0.data[0].state, "loaded");
      assert.equal(v0.data[0].loaded_context_length, ctx);
      assert.ok(v0.data[0].max_context_length >= ctx);
    },
    ollama: async (u, model) => {
      assert.equal(await (await fetch(`${u}/`)).text(), "Ollama is running");
      const [, tags] = await getJson(`${u}/api/tags`);
      assert.equal(tags.models[0].name, model);
      assert.equal(tags.models[0].model, model);
      assert.equal(typeof (await getJson(`${u}/api/version`))[1].version, "string");
      assert.equal((await getJson(`${u}/v1/models`))[1].data[0].id, model);
      const show = await post(`${u}/api/show`, { model });
      assert.equal((await show.json()).model_info["llama.context_length"], ctx);
      const missing = await post(`${u}/api/show`, { model: "nope:latest" });
      assert.equal(missing.status, 404);
      assert.equal(typeof (await missing.json()).error, "string");
    },
    openrouter: async (u, model) => {
      assert.match(u, /^http:\/\/127\.0\.0\.1:\d+\/api\/v1$/);
      const [, models] = await getJson(`${u}/models`);
      assert.equal(models.data[0].id, model);
      assert.equal(models.data[0].context_length, ctx);
      assert.equal(models.data[0].pricing.prompt, OPENROUTER_PRICING.prompt);
      assert.equal(models.data[0].pricing.completion, OPENROUTER_PRICING.completion);
    },
    venice: async (u, model) => {
      assert.match(u, /\/api\/v1$/);
      const [, models] = await getJson(`${u}/models`);
      assert.equal(models.data[0].id, model);
      assert.equal(models.data[0].model_spec.availableContextTokens, ctx);
    },
  };
  for (const [kind, check] of Object.entries(checks) as [FakeKind, typeof checks.vllm][]) {
    await withFakeBackend({ kind, contextWindow: ctx }, async (fake) => {
      await check(fake.url, DEFAULT_MODELS[kind][0]!);
      const wrong = await fetch(`${fake.url}/no/such/route`);
      assert.equal(wrong.status, 404, kind);
      await wrong.body?.cancel();
      assert.equal(fake.requests.length, 0, "discovery is not recorded as completion");
    });
  }
});

Deno.test("an OpenAI stream has a role chunk, a chunk per delta, finish_reason, usage when asked and [DONE]", async () => {
  await withFakeBackend({ kind: "vllm", models: ["m1", "m2"] }, async (fake) => {
    const res = await post(`${fake.url}/v1/chat/completions`, {
      ...CHAT,
      model: "m2",
      stream_options: { include_usage: true },
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type")!, /^text\/event-stream/);
    const { text, chunks } = await readAll(res);
    assert.ok(chunks >= 5, `each delta its own HTTP chunk, got ${chunks} chunks`);
    assert.ok(text.split("\n\n").slice(0, -1).every((e) => e.startsWith("data: ")));
    const ev = events(text).map((e) => e.data);
    assert.deepEqual(ev[0].choices[0].delta, { role: "assistant", content: "" });
    assert.deepEqual(
      ev.slice(1, 6).map((c) => c.choices[0].delta.content),
      ["tok0 ", "tok1 ", "tok2 ", "tok3 ", "tok4 "],
    );
    assert.equal(ev[6].choices[0].finish_reason, "stop");
    assert.deepEqual(ev[7].choices, []);
    assert.deepEqual(ev[7].usage, { prompt_tokens: 11, completion_tokens: 5, total_tokens: 16 });
    assert.equal(ev[8], "[DONE]");
    assert.equal(ev.length, 9);
    assert.ok(
      ev.slice(0, 8).every((c) => c.model === "m2" && c.object === "chat.completion.chunk"),
    );
    assert.equal((await fake.waitForRequests(1)).path, "/v1/chat/completions");
    assert.equal((fake.requests[0]!.body as { model: string }).model, "m2");
    assert.equal(await fake.waitForClose(1), "completed");
    assert.equal(fake.openStreams, 0);
  });
});

Deno.test("usage comes only with include_usage, except on openrouter which always sends it", async () => {
  for (const [kind, expectUsage] of [["llamacpp", false], ["openrouter", true]] as const) {
    await withFakeBackend(
      { kind, defaultScript: { deltas: ["a", "b"], comments: true } },
      async (fake) => {
        const res = await post(`${fake.url}/${kind === "llamacpp" ? "v1/" : ""}chat/completions`, {
          ...CHAT,
          model: DEFAULT_MODELS[kind][0],
        });
        const ev = events(await res.text());
        const usage = ev.filter((e) => e.data?.usage);
        assert.equal(usage.length, expectUsage ? 1 : 0, kind);
        const comments = ev.filter((e) => e.comment).map((e) => e.comment);
        assert.equal(comments.length, 2);
        if (kind === "openrouter") assert.equal(comments[0], ": OPENROUTER PROCESSING");
        else assert.ok(ev.some((e) => e.data?.timings?.predicted_n === 2), "llama.cpp timings");
        assert.deepEqual(
          ev.filter((e) => e.data?.choices?.[0]?.delta?.content).map((e) =>
            e.data.choices[0].delta.content
          ),
          ["a", "b"],
        );
      },
    );
  }
});

Deno.test("an Anthropic stream has message_start usage, text deltas, the output count and message_stop", async () => {
  await withFakeBackend(
    { kind: "llamacpp", defaultScript: { deltas: 3, inputTokens: 7 } },
    async (fake) => {
      const res = await post(`${fake.url}/v1/messages`, {
        ...CHAT,
        model: DEFAULT_MODELS.llamacpp[0],
        max_tokens: 10,
      });
      const ev = events(await res.text());
      assert.deepEqual(ev.map((e) => e.event), [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
      ]);
      assert.ok(ev.every((e) => e.data.type === e.event));
      assert.deepEqual(ev[0]!.data.message.usage, { input_tokens: 7, output_tokens: 1 });
      assert.equal(ev[0]!.data.message.model, DEFAULT_MODELS.llamacpp[0]);
      assert.deepEqual(ev[3]!.data.delta, { type: "text_delta", text: "tok0 " });
      assert.deepEqual(ev[7]!.data.usage, { output_tokens: 3 });
      assert.equal(fake.requests[0]!.path, "/v1/messages");
    },
  );
  await withFakeBackend({ kind: "vllm" }, async (fake) => {
    const res = await post(`${fake.url}/v1/messages`, { ...CHAT, model: DEFAULT_MODELS.vllm[0] });
    const ev = events(await res.text());
    const delta = ev.find((e) => e.event === "message_delta")!;
    assert.deepEqual(delta.data.usage, { input_tokens: 11, output_tokens: 5 });
    assert.equal(ev.at(-1)!.data, "[DONE]", "vLLM appends a stray [DONE]");
  });
});

Deno.test("unknown models, venice messages and scripted statuses answer error bodies in the server's shape", async () => {
  await withFakeBackend({ kind: "venice" }, async (fake) => {
    const messages = await post(`${fake.url}/messages`, {
      ...CHAT,
      model: DEFAULT_MODELS.venice[0],
    });
    assert.equal(messages.status, 404);
    await messages.body?.cancel();
    const unknown = await post(`${fake.url}/chat/completions`, { ...CHAT, model: "nope" });
    assert.equal(unknown.status, 404);
    assert.equal(typeof (await unknown.json()).error, "string");
  });
  await withFakeBackend({ kind: "vllm" }, async (fake) => {
    const unknown = await post(`${fake.url}/v1/chat/completions`, { ...CHAT, model: "nope" });
    assert.equal(unknown.status, 404);
    assert.match(unknown.headers.get("content-type")!, /application\/json/);
    assert.match((await unknown.json()).error.message, /nope/);
    fake.setScript(DEFAULT_MODELS.vllm[0]!, { status: 503 });
    const busy = await post(`${fake.url}/v1/chat/completions`, {
      ...CHAT,
      model: DEFAULT_MODELS.vllm[0],
    });
    assert.equal(busy.status, 503);
    assert.equal((await busy.json()).error.code, 503);
    fake.setDefaultScript({ status: 500, errorBody: '{"object":"error","message":"flat"}' });
    const flat = await post(`${fake.url}/v1/chat/completions`, {
      ...CHAT,
      model: DEFAULT_MODELS.vllm[0],
    });
    assert.equal(flat.status, 503, "the model's own script wins over the default");
    await flat.body?.cancel();
  });
  await withFakeBackend({
    kind: "openrouter",
    defaultScript: { status: 500, errorBody: '{"object":"error","message":"flat"}' },
  }, async (fake) => {
    const res = await post(`${fake.url}/chat/completions`, {
      ...CHAT,
      model: DEFAULT_MODELS.openrouter[0],
    });
    assert.equal(res.status, 500);
    assert.equal(await res.text(), '{"object":"error","message":"flat"}');
    assert.equal(await fake.waitForClose(1), "completed");
    assert.equal(fake.openStreams, 0);
  });
});

Deno.test("breakAfter gives the client a broken stream with no [DONE]", async () => {
  await withFakeBackend({ kind: "ollama", defaultScript: { breakAfter: 2 } }, async (fake) => {
    const res = await post(`${fake.url}/v1/chat/completions`, {
      ...CHAT,
      model: "llama3.2:latest",
    });
    assert.equal(res.status, 200);
    const { text, error } = await readAll(res);
    assert.ok(error instanceof TypeError, "the body read rejects");
    assert.match(text, /tok1 /);
    assert.doesNotMatch(text, /tok2 |\[DONE\]|finish_reason":"stop"/);
    assert.equal(await fake.waitForClose(1), "completed");
  });
});

Deno.test("errorEventAfter sends an in-stream error; endWithoutDone ends cleanly without finish or [DONE]", async () => {
  await withFakeBackend(
    { kind: "llamacpp", defaultScript: { errorEventAfter: 1 } },
    async (fake) => {
      const model = DEFAULT_MODELS.llamacpp[0];
      const openai = await readAll(
        await post(`${fake.url}/v1/chat/completions`, { ...CHAT, model }),
      );
      assert.equal(openai.error, undefined);
      const ev = events(openai.text);
      assert.deepEqual(ev.at(-1)!.data, { error: { message: "upstream exploded", code: 500 } });
      assert.equal(ev.length, 3, "role chunk, one delta, the error");
      const anthropic = await readAll(await post(`${fake.url}/v1/messages`, { ...CHAT, model }));
      const last = events(anthropic.text).at(-1)!;
      assert.equal(last.event, "error");
      assert.equal(last.data.error.message, "upstream exploded");
      fake.setDefaultScript({ endWithoutDone: true, deltas: 2 });
      const cut = await readAll(await post(`${fake.url}/v1/chat/completions`, { ...CHAT, model }));
      assert.equal(cut.error, undefined);
      assert.match(cut.text, /tok1 /);
      assert.doesNotMatch(cut.text, /\[DONE\]|"finish_reason":"stop"/);
    },
  );
});

Deno.test("a hang before headers keeps the request pending until the client aborts", async () => {
  await withFakeBackend(
    { kind: "vllm", defaultScript: { hang: "before-headers" } },
    async (fake) => {
      const ac = new AbortController();
      const pending = post(
        `${fake.url}/v1/chat/completions`,
        { ...CHAT, model: DEFAULT_MODELS.vllm[0] },
        {},
        ac.signal,
      );
      await fake.waitForRequests(1);
      assert.equal(fake.openStreams, 1);
      ac.abort();
      await assert.rejects(pending, { name: "AbortError" }, "no headers came before the abort");
      assert.equal(await fake.waitForClose(1), "client-closed");
      assert.equal(fake.openStreams, 0);
    },
  );
});

Deno.test("a hang after headers reports client-closed when the client cancels the body", async () => {
  await withFakeBackend(
    { kind: "lmstudio", defaultScript: { hang: "after-headers" } },
    async (fake) => {
      const res = await post(`${fake.url}/v1/chat/completions`, {
        ...CHAT,
        model: DEFAULT_MODELS.lmstudio[0],
      });
      assert.equal(res.status, 200);
      await res.body!.cancel();
      assert.equal(await fake.waitForClose(1), "client-closed");
      assert.equal(fake.openStreams, 0);
    },
  );
});

Deno.test("a client that aborts mid-stream is seen as client-closed", async () => {
  await withFakeBackend(
    { kind: "ollama", defaultScript: { deltas: 1000, delayMs: 5 } },
    async (fake) => {
      const ac = new AbortController();
      const res = await post(
        `${fake.url}/v1/chat/completions`,
        { ...CHAT, model: "llama3.2:latest" },
        {},
        ac.signal,
      );
      const reader = res.body!.getReader();
      await reader.read();
      ac.abort();
      await assert.rejects(reader.read());
      assert.equal(await fake.waitForClose(1), "client-closed");
    },
  );
});

Deno.test("apiKey is required with the header each server accepts", async () => {
  const key = "sk-test";
  await withFakeBackend({ kind: "vllm", apiKey: key }, async (fake) => {
    const body = { ...CHAT, model: DEFAULT_MODELS.vllm[0] };
    const none = await post(`${fake.url}/v1/chat/completions`, body);
    assert.equal(none.status, 401);
    assert.deepEqual(await none.json(), { error: "Unauthorized" });
    const xKey = await post(`${fake.url}/v1/chat/completions`, body, { "x-api-key": key });
    assert.equal(xKey.status, 401, "vLLM rejects x-api-key");
    await xKey.body?.cancel();
    const bearer = await post(`${fake.url}/v1/chat/completions`, body, {
      authorization: `Bearer ${key}`,
    });
    assert.equal(bearer.status, 200);
    await bearer.text();
    const health = await fetch(`${fake.url}/health`);
    assert.equal(health.status, 200, "/health needs no key");
    await health.body?.cancel();
    assert.equal(fake.requests.length, 3, "refused requests are recorded too");
    assert.equal(fake.requests[2]!.headers.get("authorization"), `Bearer ${key}`);
  });
  await withFakeBackend({ kind: "llamacpp", apiKey: key }, async (fake) => {
    const res = await post(`${fake.url}/v1/messages`, {
      ...CHAT,
      model: DEFAULT_MODELS.llamacpp[0],
    }, {
      "x-api-key": key,
    });
    assert.equal(res.status, 200);
    await res.text();
    assert.equal((await getJson(`${fake.url}/v1/models`))[0], 200, "model list needs no key");
  });
  await withFakeBackend({ kind: "openrouter", apiKey: key }, async (fake) => {
    assert.equal((await getJson(`${fake.url}/models`))[0], 401);
    assert.equal((await getJson(`${fake.url}/models`, { authorization: `Bearer ${key}` }))[0], 200);
  });
  await withFakeBackend({ kind: "venice", apiKey: key }, async (fake) => {
    assert.equal(
      (await getJson(`${fake.url}/models`))[0],
      200,
      "venice lists models without a key",
    );
    const res = await post(`${fake.url}/chat/completions`, {
      ...CHAT,
      model: DEFAULT_MODELS.venice[0],
    });
    assert.equal(res.status, 401);
    await res.body?.cancel();
  });
  await withFakeBackend({ kind: "lmstudio" }, async (fake) => {
    const body = { ...CHAT, model: DEFAULT_MODELS.lmstudio[0] };
    const bare = await post(`${fake.url}/v1/messages`, body);
    assert.equal(bare.status, 401, "LM Studio messages want some x-api-key");
    await bare.body?.cancel();
    const any = await post(`${fake.url}/v1/messages`, body, { "x-api-key": "anything" });
    assert.equal(any.status, 200);
    await any.text();
  });
});

Deno.test("a loading llama.cpp answers 503 on every route; a dead vLLM fails /health", async () => {
  await withFakeBackend({ kind: "llamacpp", state: "loading" }, async (fake) => {
    const [status, body] = await getJson(`${fake.url}/health`);
    assert.equal(status, 503);
    assert.equal(body.error.code, 503);
    assert.equal(body.error.message, "Loading model");
    assert.equal((await getJson(`${fake.url}/v1/models`))[0], 503);
    const chat = await post(`${fake.url}/v1/chat/completions`, {
      ...CHAT,
      model: DEFAULT_MODELS.llamacpp[0],
    });
    assert.equal(chat.status, 503);
    await chat.body?.cancel();
    fake.setState("ready");
    assert.deepEqual(await getJson(`${fake.url}/health`), [200, { status: "ok" }]);
  });
  await withFakeBackend({ kind: "vllm", state: "dead" }, async (fake) => {
    const health = await fetch(`${fake.url}/health`);
    assert.equal(health.status, 503);
    await health.body?.cancel();
  });
});

Deno.test("close kills open streams at once and the port can be listened on again", async () => {
  const fake = await startFakeBackend({
    kind: "vllm",
    defaultScript: { deltas: 1000, delayMs: 10 },
  });
  const res = await post(`${fake.url}/v1/chat/completions`, {
    ...CHAT,
    model: DEFAULT_MODELS.vllm[0],
  });
  const reader = res.body!.getReader();
  await reader.read();
  await fake.close();
  await assert.rejects(async () => {
    while (!(await reader.read()).done); // what already arrived, then the break
  });
  assert.equal(await fake.waitForClose(1), "completed");
  await assert.rejects(fetch(`${fake.url}/health`));
  const again = await startFakeBackend({ kind: "vllm", port: fake.port });
  try {
    assert.equal(again.url, fake.url);
    const health = await fetch(`${again.url}/health`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    await again.close();
  }
});

Deno.test("timestamps deltas carry their send time, spaced by delayMs", async () => {
  await withFakeBackend(
    { kind: "vllm", defaultScript: { deltas: 3, delayMs: 20, timestamps: true } },
    async (fake) => {
      const before = performance.timeOrigin + performance.now();
      const res = await post(`${fake.url}/v1/chat/completions`, {
        ...CHAT,
        model: DEFAULT_MODELS.vllm[0],
      });
      const stamps = events(await res.text())
        .map((e) => e.data?.choices?.[0]?.delta?.content)
        .filter((c) => typeof c === "string" && c !== "")
        .map((c: string) => {
          assert.match(c, /^t=\d+(\.\d+)?;$/);
          return Number(c.slice(2, -1));
        });
      assert.equal(stamps.length, 3);
      assert.ok(stamps[0]! >= before);
      assert.ok(stamps[2]! - stamps[0]! >= 39, `deltas spaced by the delay: ${stamps}`);
    },
  );
});

Deno.test("the main script prints its address, answers, and exits cleanly on SIGTERM", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./harness/fake_backend_main.ts", import.meta.url).pathname,
      "--kind",
      "ollama",
      "--port",
      "0",
      "--deltas",
      "2",
      "--models",
      "a:1,b:2",
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let first = "";
    while (!first.includes("\n")) {
      const r = await lines.read();
      if (r.done) break;
      first += r.value;
    }
    const { url, port } = JSON.parse(first);
    assert.equal(url, `http://127.0.0.1:${port}`);
    assert.deepEqual(
      (await getJson(`${url}/api/tags`))[1].models.map((m: { name: string }) => m.name),
      ["a:1", "b:2"],
    );
    const res = await post(`${url}/v1/chat/completions`, { ...CHAT, model: "b:2" });
    assert.equal(
      events(await res.text()).filter((e) => e.data?.choices?.[0]?.delta?.content).length,
      2,
    );
  } finally {
    child.kill("SIGTERM");
    await lines.cancel();
  }
  assert.equal((await child.status).code, 0);
});
