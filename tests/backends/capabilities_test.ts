// deno-lint-ignore-file camelcase
// The capabilities frame over real sockets (PROTOCOL §2): the test coordinator, fake backends and
// the real Agent on loopback. Content, the empty list, rediscovery, and routing around a killed
// backend for a model served twice.

import assert from "node:assert/strict";
import { AGENT_NAME, AGENT_VERSION } from "../../src/version.ts";
import { connectWs } from "../../src/link/ws.ts";
import type { CoordSession, Frame } from "../harness/coordinator.ts";
import { DEFAULT_MODELS } from "../harness/fake_backend.ts";
import { type Stack, startStack, withSession } from "../harness/stack.ts";

/** A loopback port on which nothing listens. */
function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** Capabilities frames received so far. */
function capsFrames(s: CoordSession): Frame[] {
  return s.frames.filter((f) => f.type === "capabilities");
}

// deno-lint-ignore no-explicit-any
type Json = any;

/**
 * Counts discovery runs the agent completes from now on (the rediscovery loop calls
 * `discovery.refresh()`); `after(n)` resolves once n runs have finished.
 */
function countRefreshes(stack: Stack): { after(n: number): Promise<void> } {
  const d = stack.agent.discovery;
  const original = d.refresh.bind(d);
  let done = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  d.refresh = (opts) => {
    const p = original(opts);
    p.then(() => {
      done++;
      for (const w of waiters.filter((w) => w.n <= done)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }, () => {});
    return p;
  };
  return {
    after: (n) =>
      n <= done ? Promise.resolve() : new Promise((resolve) => {
        waiters.push({ n, resolve });
      }),
  };
}

/**
 * Frames from the agent arrive in order: once a job for an unknown model got its answer, every
 * frame the agent sent before it has arrived too.
 */
async function barrier(s: CoordSession): Promise<void> {
  const id = s.sendJob({ model_id: "barrier/not-served" });
  const { terminal } = await s.collect(id);
  assert.equal(terminal["error_code"], "model_not_loaded");
}

Deno.test("capabilities lists each model once, sorted, with prices, limits and metadata", async () => {
  await withSession(
    {
      backends: [
        { kind: "vllm", models: ["zeta/model", "alpha/model"], contextWindow: 8192 },
        { kind: "ollama", models: ["llama3.2:latest", "zeta/model"], contextWindow: 4096 },
        { kind: "venice", models: ["venice-uncensored"], contextWindow: 32768 },
        // max_model_len 0: the context window is unknown and omitted.
        { kind: "vllm", models: ["mystery/model"], contextWindow: 0 },
      ],
      limits: "[limits]\nmax_concurrent = 4\nmax_tokens_per_minute = 120_000",
      toml:
        `[pricing.models]\n"alpha/model" = { input_per_1m = 300_000, output_per_1m = 450_000 }\n`,
    },
    async (_stack, s) => {
      const caps: Json = await s.nth("capabilities", 1);
      const common = { max_concurrent: 4 };
      assert.deepEqual(caps, {
        type: "capabilities",
        models: [
          {
            model_id: "alpha/model",
            input_per_1m: 300_000,
            output_per_1m: 450_000,
            ...common,
            backend: "vllm",
            context_window: 8192,
          },
          {
            model_id: "llama3.2:latest",
            input_per_1m: 500_000,
            output_per_1m: 750_000,
            ...common,
            backend: "ollama",
            context_window: 4096,
          },
          {
            model_id: "mystery/model",
            input_per_1m: 500_000,
            output_per_1m: 750_000,
            ...common,
            backend: "vllm",
          },
          {
            model_id: "venice-uncensored",
            input_per_1m: 500_000,
            output_per_1m: 750_000,
            ...common,
            backend: "venice",
            context_window: 32768,
          },
          {
            model_id: "zeta/model",
            input_per_1m: 500_000,
            output_per_1m: 750_000,
            ...common,
            backend: "vllm",
            context_window: 8192,
          },
        ],
        limits: { max_concurrent_total: 4, max_tokens_per_minute: 120_000 },
        metadata: {
          agent_version: AGENT_VERSION,
          agent: AGENT_NAME,
          formats: {
            "alpha/model": ["openai", "anthropic"],
            "llama3.2:latest": ["openai", "anthropic"],
            "mystery/model": ["openai", "anthropic"],
            "venice-uncensored": ["openai"],
            "zeta/model": ["openai", "anthropic"],
          },
        },
      });
      const mystery: Json = (await s.nth("capabilities", 1) as Json).models[2];
      assert.equal(Object.hasOwn(mystery, "context_window"), false);
    },
  );
});

Deno.test("max_tokens_per_minute is null when not configured", async () => {
  await withSession({ backends: [{ kind: "vllm" }] }, async (_stack, s) => {
    const caps: Json = await s.nth("capabilities", 1);
    assert.deepEqual(caps.limits, { max_concurrent_total: 8, max_tokens_per_minute: null });
    assert.equal(Object.hasOwn(caps.limits, "max_tokens_per_minute"), true);
    assert.deepEqual(caps.models.map((m: Json) => [m.model_id, m.max_concurrent]), [
      [DEFAULT_MODELS.vllm[0], 8],
    ]);
  });
});

Deno.test("capabilities is still sent, with no models, when the only backend is unreachable", async () => {
  const port = closedPort();
  await withSession(
    {
      backends: [],
      backendsToml: () => `[[backends]]\nkind = "vllm"\nurl = "http://127.0.0.1:${port}"\n`,
    },
    async (_stack, s) => {
      const caps: Json = await s.nth("capabilities", 1);
      assert.deepEqual(caps.models, []);
      assert.deepEqual(caps.metadata.formats, {});
      assert.deepEqual(caps.limits, { max_concurrent_total: 8, max_tokens_per_minute: null });
      assert.equal(caps.metadata.agent_version, AGENT_VERSION);
    },
  );
});

Deno.test("capabilities is still sent, with no models, when every backend is unhealthy", async () => {
  await withSession(
    { backends: [{ kind: "vllm", state: "dead" }, { kind: "llamacpp", state: "loading" }] },
    async (_stack, s) => {
      const caps: Json = await s.nth("capabilities", 1);
      assert.deepEqual(caps.models, []);
    },
  );
});

Deno.test("rediscovery sends a fresh capabilities frame when a backend dies", async () => {
  await withSession(
    {
      backends: [{ kind: "vllm", models: ["v/model"] }, { kind: "ollama", models: ["o:latest"] }],
      rediscoverMs: 30,
    },
    async (stack, s) => {
      const first: Json = await s.nth("capabilities", 1);
      assert.deepEqual(first.models.map((m: Json) => m.model_id), ["o:latest", "v/model"]);
      stack.fakes[1]!.setState("dead");
      const second: Json = await s.nth("capabilities", 2);
      assert.deepEqual(second.models.map((m: Json) => m.model_id), ["v/model"]);
      assert.deepEqual(Object.keys(second.metadata.formats), ["v/model"]);
      stack.fakes[1]!.setState("ready");
      const third: Json = await s.nth("capabilities", 3);
      assert.deepEqual(third.models, first.models);
    },
  );
});

Deno.test("rediscovery sends a fresh capabilities frame when a backend is closed", async () => {
  await withSession(
    {
      backends: [{ kind: "vllm", models: ["v/model"] }, { kind: "lmstudio", models: ["l-model"] }],
      rediscoverMs: 30,
    },
    async (stack, s) => {
      const first: Json = await s.nth("capabilities", 1);
      assert.deepEqual(first.models.map((m: Json) => m.model_id), ["l-model", "v/model"]);
      await stack.fakes[0]!.close();
      const second: Json = await s.nth("capabilities", 2);
      assert.deepEqual(second.models.map((m: Json) => [m.model_id, m.backend]), [
        ["l-model", "lmstudio"],
      ]);
    },
  );
});

Deno.test("rediscovery sends no capabilities frame when nothing changed", async () => {
  await withSession(
    { backends: [{ kind: "vllm" }, { kind: "ollama" }], rediscoverMs: 20 },
    async (stack, s) => {
      const runs = countRefreshes(stack);
      await s.nth("capabilities", 1);
      await runs.after(3);
      await barrier(s);
      assert.equal(capsFrames(s).length, 1);
    },
  );
});

Deno.test("a slow first discovery that rediscovery joins still yields one capabilities frame", async () => {
  // A backend that accepts connections and never answers makes every discovery run last the
  // probe timeout (2.5 s). The dial waits until the rediscovery loop has joined that first run,
  // so auth_ok arrives while both the loop and the session's capabilities wait on it.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for (;;) conns.push(await silent.accept());
    } catch {
      // listener closed
    }
  })();
  const joined = Promise.withResolvers<void>();
  let stack: Stack | undefined;
  try {
    stack = await startStack({
      backends: [{ kind: "vllm" }],
      backendsToml: (fakes) =>
        `[[backends]]\nkind = "vllm"\nurl = "${fakes[0]!.url}"\n\n` +
        `[[backends]]\nkind = "ollama"\nurl = "http://127.0.0.1:${silent.addr.port}"\n`,
      rediscoverMs: 20,
      session: {
        connect: async (o) => {
          await joined.promise;
          return await connectWs(o);
        },
      },
    });
    const d = stack.agent.discovery;
    const original = d.refresh.bind(d);
    d.refresh = (opts) => {
      joined.resolve(); // the rediscovery loop's first call: it joins the first run
      return original(opts);
    };
    const s = await stack.coord.authenticated(0);
    const runs = countRefreshes(stack);
    const caps: Json = await s.nth("capabilities", 1);
    assert.deepEqual(caps.models.map((m: Json) => m.model_id), [...DEFAULT_MODELS.vllm]);
    await runs.after(1);
    await barrier(s);
    assert.equal(capsFrames(s).length, 1, "the same capabilities frame was sent twice");
  } finally {
    joined.resolve();
    await stack?.stop();
    silent.close();
    await accepting;
    for (const c of conns) c.close();
  }
});

Deno.test("losing a second backend that changes nothing advertised sends no capabilities frame", async () => {
  // vllm is preferred for "shared" and both backends report the same context window and
  // formats: with ollama gone, the advertised entry is the same.
  await withSession(
    {
      backends: [{ kind: "vllm", models: ["shared"] }, { kind: "ollama", models: ["shared"] }],
      rediscoverMs: 20,
    },
    async (stack, s) => {
      const first: Json = await s.nth("capabilities", 1);
      const runs = countRefreshes(stack);
      stack.fakes[1]!.setState("dead");
      await runs.after(3);
      await barrier(s);
      const frames = capsFrames(s);
      assert.equal(
        frames.length,
        1,
        `expected no fresh frame, got ${JSON.stringify(frames.slice(1))} after ${
          JSON.stringify(first)
        }`,
      );
    },
  );
});

Deno.test("a model served by two backends is routed to the preferred one", async () => {
  // ollama first in the config: the kind's priority decides.
  await withSession(
    {
      backends: [{ kind: "ollama", models: ["shared"] }, { kind: "vllm", models: ["shared"] }],
    },
    async (stack, s) => {
      const caps: Json = await s.nth("capabilities", 1);
      assert.deepEqual(caps.models.map((m: Json) => [m.model_id, m.backend]), [
        ["shared", "vllm"],
      ]);
      for (let i = 0; i < 3; i++) {
        const { terminal } = await s.collect(s.sendJob({ model_id: "shared" }));
        assert.equal(terminal.type, "job_done");
      }
      const [ollama, vllm] = stack.fakes;
      assert.equal(vllm!.requests.length, 3);
      assert.equal(ollama!.requests.length, 0);
    },
  );
});

Deno.test("a killed preferred backend: its job moves to the other backend, it is routed around, capabilities re-sent", async () => {
  await withSession(
    {
      backends: [
        { kind: "vllm", models: ["failover/shared"], contextWindow: 8192 },
        { kind: "ollama", models: ["failover/shared"], contextWindow: 4096 },
      ],
    },
    async (stack, s) => {
      const [vllm, ollama] = stack.fakes;
      const first: Json = await s.nth("capabilities", 1);
      assert.deepEqual(first.models, [{
        model_id: "failover/shared",
        input_per_1m: 500_000,
        output_per_1m: 750_000,
        max_concurrent: 8,
        backend: "vllm",
        context_window: 8192,
      }]);
      const ok = await s.collect(s.sendJob({ model_id: "failover/shared" }));
      assert.equal(ok.terminal.type, "job_done");
      assert.equal(vllm!.requests.length, 1);

      await vllm!.close();
      // The connection is refused before vLLM got the request: the same job goes to Ollama.
      const moved = await s.collect(s.sendJob({ model_id: "failover/shared" }));
      assert.equal(moved.terminal.type, "job_done");
      assert.equal(ollama!.requests.length, 1);

      const second: Json = await s.nth("capabilities", 2);
      assert.deepEqual(second.models, [{
        model_id: "failover/shared",
        input_per_1m: 500_000,
        output_per_1m: 750_000,
        max_concurrent: 8,
        backend: "ollama",
        context_window: 4096,
      }]);

      const rerouted = await s.collect(s.sendJob({ model_id: "failover/shared" }));
      assert.equal(rerouted.terminal.type, "job_done");
      assert.equal(ollama!.requests.length, 2);
      assert.equal((ollama!.requests[1]!.body as Json).model, "failover/shared");
      assert.equal(vllm!.requests.length, 1);
      assert.equal(capsFrames(s).length, 2);
    },
  );
});

Deno.test("an anthropic job goes to the best backend that speaks anthropic", async () => {
  // venice is preferred over openrouter but speaks only the OpenAI format.
  await withSession(
    {
      backends: [
        { kind: "openrouter", models: ["both/model"] },
        { kind: "venice", models: ["both/model"] },
      ],
    },
    async (stack, s) => {
      const [openrouter, venice] = stack.fakes;
      const caps: Json = await s.nth("capabilities", 1);
      assert.deepEqual(caps.models.map((m: Json) => [m.model_id, m.backend]), [
        ["both/model", "venice"],
      ]);
      assert.deepEqual([...caps.metadata.formats["both/model"]].sort(), ["anthropic", "openai"]);
      const anthropic = await s.collect(s.sendJob({
        model_id: "both/model",
        format: "anthropic",
        request: { max_tokens: 16, messages: [{ role: "user", content: "hi" }] },
      }));
      assert.equal(anthropic.terminal.type, "job_done");
      assert.equal(openrouter!.requests[0]?.path, "/api/v1/messages");
      const openai = await s.collect(s.sendJob({ model_id: "both/model" }));
      assert.equal(openai.terminal.type, "job_done");
      assert.equal(venice!.requests[0]?.path, "/api/v1/chat/completions");
      assert.equal(openrouter!.requests.length, 1);
    },
  );
});

Deno.test("killing the only backend of a model withdraws it at once", async () => {
  await withSession(
    { backends: [{ kind: "vllm", models: ["v/model"] }, { kind: "ollama", models: ["o:latest"] }] },
    async (stack, s) => {
      await s.nth("capabilities", 1);
      await stack.fakes[0]!.close();
      const failed = await s.collect(s.sendJob({ model_id: "v/model" }));
      assert.equal(failed.terminal["error_code"], "backend_unreachable");
      const second: Json = await s.nth("capabilities", 2);
      assert.deepEqual(second.models.map((m: Json) => m.model_id), ["o:latest"]);
      const next = await s.collect(s.sendJob({ model_id: "v/model" }));
      assert.equal(next.terminal["error_code"], "model_not_loaded");
    },
  );
});
