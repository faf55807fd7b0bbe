// Backend discovery (src/backends/discovery.ts, PROTOCOL §2) against fake servers of every kind on
// loopback: health states, model lists and context windows, API keys, allow-lists, pricing,
// de-duplication by kind priority, markDown, and how refresh() shares and reuses runs.

import assert from "node:assert/strict";
import { type Config, parseConfig } from "../../src/config/config.ts";
import {
  Discovery,
  type DiscoveryOptions,
  type DiscoveryResult,
} from "../../src/backends/discovery.ts";
import { setLevel } from "../../src/log.ts";
import {
  DEFAULT_CONTEXT_WINDOW,
  DEFAULT_MODELS,
  type FakeBackend,
  type FakeBackendOptions,
  type FakeKind,
  startFakeBackend,
} from "../harness/fake_backend.ts";

setLevel((Deno.env.get("TEST_LOG_LEVEL") as "debug" | undefined) ?? "error");

const KEYS: Record<string, string> = {
  OPENROUTER_API_KEY: "sk-or-test",
  VENICE_API_KEY: "sk-venice-test",
};

/** An agent.toml as an operator writes it, around the given [[backends]] entries. */
function configOf(backends: string, extra = ""): Config {
  return parseConfig(
    `
[coordinator]
url = "wss://api.usepod.ai/provider/connect"

[identity]
key_path = "/nonexistent/usepod/identity.key"

${backends}

[pricing]
default_input_per_1m  = 500_000
default_output_per_1m = 750_000
${extra}

[limits]
max_concurrent = 6
`,
    "/nonexistent/usepod/agent.toml",
  );
}

/** The [[backends]] entry for a fake, with the API key env var for remote kinds. */
function entry(f: FakeBackend | string, kind: FakeKind, extra = ""): string {
  const url = typeof f === "string" ? f : f.url;
  const key = kind === "openrouter"
    ? `api_key_env = "OPENROUTER_API_KEY"\n`
    : kind === "venice"
    ? `api_key_env = "VENICE_API_KEY"\n`
    : "";
  return `[[backends]]\nkind = "${kind}"\nurl = "${url}"\n${key}${extra}\n`;
}

function discoveryOf(config: Config, opts: DiscoveryOptions = {}): Discovery {
  return new Discovery(() => config, { env: (n) => KEYS[n], ...opts });
}

/** Starts fakes, runs `fn`, and closes them whatever happens. */
async function withFakes(
  specs: FakeBackendOptions[],
  fn: (fakes: FakeBackend[]) => Promise<void>,
): Promise<void> {
  const fakes: FakeBackend[] = [];
  try {
    for (const s of specs) fakes.push(await startFakeBackend(s));
    await fn(fakes);
  } finally {
    await Promise.all(fakes.map((f) => f.close()));
  }
}

/** A loopback URL on which nothing listens (connection refused). */
function closedPortUrl(): string {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return `http://127.0.0.1:${port}`;
}

/** Advertised models as plain data, without routes. */
function ads(r: DiscoveryResult) {
  return r.models.map(({ routes: _routes, ...ad }) => ad);
}

/** A fetch that counts requests by path and lets a test rewrite answers. */
function countingFetch(
  rewrite?: (path: string) => Response | undefined,
): { fetch: typeof fetch; hits: Map<string, number> } {
  const hits = new Map<string, number>();
  const f: typeof fetch = (input, init) => {
    const path = new URL(input instanceof Request ? input.url : String(input)).pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    const replaced = rewrite?.(path);
    return replaced ? Promise.resolve(replaced) : fetch(input, init);
  };
  return { fetch: f, hits };
}

Deno.test("vllm models are advertised with max_model_len as their context window", async () => {
  await withFakes(
    [{ kind: "vllm", models: ["org/b-model", "org/a-model"], contextWindow: 8192 }],
    async ([vllm]) => {
      const r = await discoveryOf(configOf(entry(vllm!, "vllm"))).refresh();
      assert.deepEqual(ads(r), [
        {
          modelId: "org/a-model",
          inputPer1m: 500_000,
          outputPer1m: 750_000,
          maxConcurrent: 6,
          backend: "vllm",
          contextWindow: 8192,
          formats: ["openai", "anthropic"],
        },
        {
          modelId: "org/b-model",
          inputPer1m: 500_000,
          outputPer1m: 750_000,
          maxConcurrent: 6,
          backend: "vllm",
          contextWindow: 8192,
          formats: ["openai", "anthropic"],
        },
      ]);
      const [status] = r.backends;
      assert.equal(status?.state, "up");
      assert.equal(status?.kind, "vllm");
      assert.equal(status?.url, vllm!.url);
      assert.deepEqual(status?.models, ["org/b-model", "org/a-model"]);
      assert.equal(typeof status?.latencyMs, "number");
      assert.equal(status?.lastError, undefined);
      const route = r.byId.get("org/a-model")?.routes;
      assert.equal(route?.length, 1);
      assert.equal(route?.[0]?.backendIndex, 0);
      assert.equal(route?.[0]?.target.base, vllm!.url);
      assert.equal(route?.[0]?.target.apiKey, undefined);
    },
  );
});

Deno.test("a vllm whose /health answers 503 is down and advertises nothing", async () => {
  await withFakes([{ kind: "vllm", state: "dead" }], async ([vllm]) => {
    const r = await discoveryOf(configOf(entry(vllm!, "vllm"))).refresh();
    assert.deepEqual(r.models, []);
    assert.equal(r.byId.size, 0);
    assert.equal(r.backends[0]?.state, "down");
    assert.match(r.backends[0]?.lastError ?? "", /503/);
    assert.deepEqual(r.backends[0]?.models, []);
  });
});

Deno.test("a loading llama.cpp is in state loading and its models are not advertised", async () => {
  await withFakes([{ kind: "llamacpp", state: "loading" }], async ([llama]) => {
    const r = await discoveryOf(configOf(entry(llama!, "llamacpp"))).refresh();
    assert.deepEqual(r.models, []);
    assert.equal(r.backends[0]?.state, "loading");
    assert.match(r.backends[0]?.lastError ?? "", /503/);
  });
});

Deno.test("a llama.cpp that finished loading is advertised at the next refresh", async () => {
  await withFakes([{ kind: "llamacpp", state: "loading" }], async ([llama]) => {
    const d = discoveryOf(configOf(entry(llama!, "llamacpp")));
    assert.deepEqual((await d.refresh()).models, []);
    llama!.setState("ready");
    const r = await d.refresh();
    assert.equal(r.backends[0]?.state, "up");
    assert.deepEqual(r.models.map((m) => m.modelId), [...DEFAULT_MODELS.llamacpp]);
  });
});

Deno.test("llama.cpp's context window is /props n_ctx, preferred over meta.n_ctx_train", async () => {
  await withFakes([{ kind: "llamacpp", contextWindow: 131072 }], async ([llama]) => {
    // The fake reports the same number in both places: give /props a smaller slot context.
    const { fetch } = countingFetch((path) =>
      path === "/props"
        ? Response.json({ default_generation_settings: { n_ctx: 4096 }, total_slots: 1 })
        : undefined
    );
    const r = await discoveryOf(configOf(entry(llama!, "llamacpp")), { fetch }).refresh();
    assert.deepEqual(r.models.map((m) => [m.modelId, m.backend, m.contextWindow]), [
      [DEFAULT_MODELS.llamacpp[0], "llamacpp", 4096],
    ]);
  });
});

Deno.test("llama.cpp falls back to meta.n_ctx_train when /props is refused", async () => {
  // With --api-key, llama-server guards /props; the agent sends no key to local kinds.
  await withFakes(
    [{ kind: "llamacpp", contextWindow: 16384, apiKey: "local-secret" }],
    async ([llama]) => {
      const r = await discoveryOf(configOf(entry(llama!, "llamacpp"))).refresh();
      assert.equal(r.backends[0]?.state, "up");
      assert.equal(r.models[0]?.contextWindow, 16384);
    },
  );
});

Deno.test("LM Studio models come from /api/v0/models with the loaded context length", async () => {
  await withFakes(
    [{ kind: "lmstudio", models: ["qwen2.5-7b-instruct", "gemma-3-4b"], contextWindow: 8192 }],
    async ([lms]) => {
      const { fetch, hits } = countingFetch();
      const r = await discoveryOf(configOf(entry(lms!, "lmstudio")), { fetch }).refresh();
      assert.deepEqual(r.models.map((m) => [m.modelId, m.backend, m.contextWindow]), [
        ["gemma-3-4b", "lmstudio", 8192],
        ["qwen2.5-7b-instruct", "lmstudio", 8192],
      ]);
      assert.equal(hits.get("/api/v0/models"), 1);
      assert.equal(hits.get("/v1/models"), undefined);
    },
  );
});

Deno.test("Ollama ids keep their tags and the context comes from /api/show", async () => {
  await withFakes(
    [{ kind: "ollama", models: ["llama3.2:latest", "qwen2.5:7b"], contextWindow: 65536 }],
    async ([ollama]) => {
      const r = await discoveryOf(configOf(entry(ollama!, "ollama"))).refresh();
      assert.deepEqual(r.models.map((m) => [m.modelId, m.backend, m.contextWindow, m.formats]), [
        ["llama3.2:latest", "ollama", 65536, ["openai", "anthropic"]],
        ["qwen2.5:7b", "ollama", 65536, ["openai", "anthropic"]],
      ]);
    },
  );
});

Deno.test("an Ollama context length /api/show failed to give is asked again at the next refresh", async () => {
  await withFakes(
    [{ kind: "ollama", models: ["retry-ctx:latest"], contextWindow: 65536 }],
    async ([ollama]) => {
      let busy = true;
      const { fetch, hits } = countingFetch((path) =>
        path === "/api/show" && busy
          ? Response.json({ error: "server busy" }, { status: 503 })
          : undefined
      );
      const d = discoveryOf(configOf(entry(ollama!, "ollama")), { fetch });
      const first = await d.refresh();
      assert.equal(first.backends[0]?.state, "up");
      assert.deepEqual(first.models.map((m) => [m.modelId, m.contextWindow]), [
        ["retry-ctx:latest", undefined],
      ]);
      busy = false;
      const second = await d.refresh();
      assert.equal(hits.get("/api/show"), 2, "/api/show is asked again");
      assert.equal(second.models[0]?.contextWindow, 65536);
    },
  );
});

Deno.test("openrouter without its API key env var is no_api_key and skipped", async () => {
  await withFakes([{ kind: "openrouter" }, { kind: "vllm" }], async ([or, vllm]) => {
    const config = configOf(entry(or!, "openrouter") + entry(vllm!, "vllm"));
    const { fetch, hits } = countingFetch();
    const r = await discoveryOf(config, { env: () => undefined, fetch }).refresh();
    assert.equal(r.backends[0]?.state, "no_api_key");
    assert.match(r.backends[0]?.lastError ?? "", /OPENROUTER_API_KEY/);
    assert.deepEqual(r.backends[0]?.models, []);
    assert.equal(hits.get("/api/v1/models"), undefined, "a keyless remote backend is not probed");
    assert.equal(r.backends[1]?.state, "up");
    assert.deepEqual(r.models.map((m) => m.modelId), [...DEFAULT_MODELS.vllm]);
  });
});

Deno.test("openrouter with its API key lists its models with context_length", async () => {
  // The fake's /models demands the key, so an answer proves the Bearer token was sent.
  await withFakes(
    [{
      kind: "openrouter",
      models: ["meta-llama/llama-3.3-70b-instruct", "anthropic/claude-sonnet-4"],
      contextWindow: 200_000,
      apiKey: KEYS.OPENROUTER_API_KEY!,
    }],
    async ([or]) => {
      const r = await discoveryOf(configOf(entry(or!, "openrouter"))).refresh();
      assert.equal(r.backends[0]?.state, "up");
      assert.deepEqual(r.models.map((m) => [m.modelId, m.backend, m.contextWindow, m.formats]), [
        ["anthropic/claude-sonnet-4", "openrouter", 200_000, ["openai", "anthropic"]],
        ["meta-llama/llama-3.3-70b-instruct", "openrouter", 200_000, ["openai", "anthropic"]],
      ]);
      assert.equal(r.models[0]?.routes[0]?.target.apiKey, KEYS.OPENROUTER_API_KEY);
    },
  );
});

Deno.test("openrouter with a wrong API key is down", async () => {
  await withFakes([{ kind: "openrouter", apiKey: "sk-or-other" }], async ([or]) => {
    const r = await discoveryOf(configOf(entry(or!, "openrouter"))).refresh();
    assert.equal(r.backends[0]?.state, "down");
    assert.match(r.backends[0]?.lastError ?? "", /401/);
    assert.deepEqual(r.models, []);
  });
});

Deno.test("venice models accept only the openai format", async () => {
  await withFakes([{ kind: "venice", contextWindow: 65536 }], async ([venice]) => {
    const r = await discoveryOf(configOf(entry(venice!, "venice"))).refresh();
    assert.deepEqual(r.models.map((m) => [m.modelId, m.backend, m.contextWindow, m.formats]), [
      [DEFAULT_MODELS.venice[0], "venice", 65536, ["openai"]],
    ]);
    assert.deepEqual(r.models[0]?.routes[0]?.formats, ["openai"]);
  });
});

Deno.test("an unreachable backend is down with lastError and the others are still served", async () => {
  await withFakes([{ kind: "ollama" }], async ([ollama]) => {
    const dead = closedPortUrl();
    const r = await discoveryOf(configOf(entry(dead, "vllm") + entry(ollama!, "ollama")))
      .refresh();
    assert.equal(r.backends[0]?.state, "down");
    assert.equal(r.backends[0]?.url, dead);
    assert.match(r.backends[0]?.lastError ?? "", /^unreachable: /);
    assert.equal(r.backends[1]?.state, "up");
    assert.deepEqual(r.models.map((m) => [m.modelId, m.backend]), [
      [DEFAULT_MODELS.ollama[0], "ollama"],
    ]);
  });
});

Deno.test("a backend that does not answer within timeoutMs is down", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for (;;) conns.push(await listener.accept()); // accept, never answer
    } catch {
      // listener closed
    }
  })();
  try {
    const url = `http://127.0.0.1:${listener.addr.port}`;
    const r = await discoveryOf(configOf(entry(url, "vllm")), { timeoutMs: 100 }).refresh();
    assert.equal(r.backends[0]?.state, "down");
    assert.match(r.backends[0]?.lastError ?? "", /100 ms/);
  } finally {
    listener.close();
    await accepting;
    for (const c of conns) c.close();
  }
});

Deno.test("a backend's models allow-list filters what it advertises", async () => {
  await withFakes(
    [{ kind: "vllm", models: ["m/one", "m/two", "m/three"] }],
    async ([vllm]) => {
      const config = configOf(entry(vllm!, "vllm", `models = ["m/two", "m/not-served"]\n`));
      const r = await discoveryOf(config).refresh();
      assert.deepEqual(r.models.map((m) => m.modelId), ["m/two"]);
      assert.deepEqual(r.backends[0]?.models, ["m/two"]);
    },
  );
});

Deno.test("a model priced 0/0 in pricing.models is not advertised", async () => {
  await withFakes([{ kind: "vllm", models: ["m/free", "m/paid"] }], async ([vllm]) => {
    const config = configOf(
      entry(vllm!, "vllm"),
      `[pricing.models]\n"m/free" = { input_per_1m = 0, output_per_1m = 0 }\n`,
    );
    const r = await discoveryOf(config).refresh();
    assert.deepEqual(r.models.map((m) => m.modelId), ["m/paid"]);
    assert.equal(r.byId.has("m/free"), false);
  });
});

Deno.test("prices come from pricing.models, else the defaults", async () => {
  await withFakes([{ kind: "vllm", models: ["m/own", "m/default"] }], async ([vllm]) => {
    const config = configOf(
      entry(vllm!, "vllm"),
      `[pricing.models]\n"m/own" = { input_per_1m = 300_000, output_per_1m = 450_000 }\n` +
        `"m/not-served" = { input_per_1m = 1, output_per_1m = 1 }\n`,
    );
    const r = await discoveryOf(config).refresh();
    assert.deepEqual(r.models.map((m) => [m.modelId, m.inputPer1m, m.outputPer1m]), [
      ["m/default", 500_000, 750_000],
      ["m/own", 300_000, 450_000],
    ]);
  });
});

Deno.test("a model served by two backends is one entry naming the preferred kind with both routes", async () => {
  // ollama comes first in the config: the kind's priority decides, not the order.
  await withFakes(
    [
      { kind: "ollama", models: ["shared", "only-ollama"], contextWindow: 4096 },
      { kind: "vllm", models: ["shared"], contextWindow: 8192 },
    ],
    async ([ollama, vllm]) => {
      const config = configOf(entry(ollama!, "ollama") + entry(vllm!, "vllm"));
      const r = await discoveryOf(config).refresh();
      assert.deepEqual(r.models.map((m) => m.modelId), ["only-ollama", "shared"]);
      const shared = r.byId.get("shared")!;
      assert.equal(shared.backend, "vllm");
      assert.equal(shared.contextWindow, 8192);
      assert.deepEqual(shared.routes.map((x) => [x.backendIndex, x.target.spec.kind]), [
        [1, "vllm"],
        [0, "ollama"],
      ]);
      assert.equal(r.byId.get("only-ollama")?.backend, "ollama");
    },
  );
});

Deno.test("routes follow the priority vllm < llamacpp < lmstudio < ollama < venice < openrouter", async () => {
  const order: FakeKind[] = ["openrouter", "venice", "ollama", "lmstudio", "llamacpp", "vllm"];
  await withFakes(
    order.map((kind) => ({ kind, models: ["everywhere"] })),
    async (fakes) => {
      const config = configOf(fakes.map((f, i) => entry(f, order[i]!)).join(""));
      const r = await discoveryOf(config).refresh();
      assert.equal(r.models.length, 1);
      const m = r.models[0]!;
      assert.equal(m.backend, "vllm");
      assert.deepEqual(m.routes.map((x) => x.target.spec.kind), [
        "vllm",
        "llamacpp",
        "lmstudio",
        "ollama",
        "venice",
        "openrouter",
      ]);
      assert.equal(m.contextWindow, DEFAULT_CONTEXT_WINDOW);
    },
  );
});

Deno.test("a model's formats are listed in one order whether one or several backends serve it", async () => {
  await withFakes(
    [{ kind: "vllm", models: ["shared", "single"] }, { kind: "ollama", models: ["shared"] }],
    async ([vllm, ollama]) => {
      const config = configOf(entry(vllm!, "vllm") + entry(ollama!, "ollama"));
      const r = await discoveryOf(config).refresh();
      // Both backends accept both formats: the advertised list must not depend on the count.
      assert.deepEqual(r.byId.get("single")?.formats, ["openai", "anthropic"]);
      assert.deepEqual(r.byId.get("shared")?.formats, r.byId.get("single")?.formats);
    },
  );
});

Deno.test("markDown removes a backend's routes at once", async () => {
  await withFakes(
    [
      { kind: "vllm", models: ["md/shared", "only-vllm"], contextWindow: 8192 },
      { kind: "ollama", models: ["md/shared"], contextWindow: 4096 },
    ],
    async ([vllm, ollama]) => {
      const d = discoveryOf(configOf(entry(vllm!, "vllm") + entry(ollama!, "ollama")));
      const before = await d.refresh();
      d.markDown(0, "connection refused");
      const now = d.current;
      assert.notEqual(now, before);
      assert.equal(now.at, before.at, "markDown does not pretend to be a fresh discovery");
      assert.deepEqual(now.models.map((m) => m.modelId), ["md/shared"]);
      assert.equal(now.byId.has("only-vllm"), false);
      const shared = now.byId.get("md/shared")!;
      assert.equal(shared.backend, "ollama");
      assert.equal(shared.contextWindow, 4096);
      assert.deepEqual(shared.routes.map((x) => x.backendIndex), [1]);
      assert.equal(now.backends[0]?.state, "down");
      assert.equal(now.backends[0]?.lastError, "connection refused");
      assert.deepEqual(now.backends[0]?.models, []);
      assert.equal(now.backends[1]?.state, "up");
      // A backend that is not up is left alone.
      d.markDown(0, "again");
      assert.equal(d.current, now);
    },
  );
});

Deno.test("a backend marked down serves again once the next refresh finds it healthy", async () => {
  await withFakes([{ kind: "vllm" }], async ([vllm]) => {
    const d = discoveryOf(configOf(entry(vllm!, "vllm")));
    await d.refresh();
    d.markDown(0, "reset");
    assert.deepEqual(d.current.models, []);
    const r = await d.refresh();
    assert.equal(r.backends[0]?.state, "up");
    assert.deepEqual(r.models.map((m) => m.modelId), [...DEFAULT_MODELS.vllm]);
  });
});

Deno.test("refresh() shares a run in progress", async () => {
  await withFakes([{ kind: "vllm" }], async ([vllm]) => {
    const { fetch, hits } = countingFetch();
    const d = discoveryOf(configOf(entry(vllm!, "vllm")), { fetch });
    const a = d.refresh();
    const b = d.refresh();
    const c = d.refresh({ maxAgeMs: 60_000 }); // nothing fresh yet: joins the run too
    assert.equal(a, b);
    const [ra, rb, rc] = await Promise.all([a, b, c]);
    assert.equal(ra, rb);
    assert.equal(ra, rc);
    assert.equal(hits.get("/health"), 1);
    assert.equal(hits.get("/v1/models"), 1);
    assert.equal(d.current, ra);
    // Once it is over, the next call runs again.
    await d.refresh();
    assert.equal(hits.get("/health"), 2);
  });
});

Deno.test("refresh({maxAgeMs}) returns a result that recent as is", async () => {
  await withFakes([{ kind: "vllm" }], async ([vllm]) => {
    let clock = 1_000_000;
    const { fetch, hits } = countingFetch();
    const d = discoveryOf(configOf(entry(vllm!, "vllm")), { fetch, now: () => clock });
    const first = await d.refresh();
    assert.equal(first.at, 1_000_000);
    clock += 5_000;
    assert.equal(await d.refresh({ maxAgeMs: 5_000 }), first);
    assert.equal(hits.get("/health"), 1);
    clock += 1;
    const second = await d.refresh({ maxAgeMs: 5_000 });
    assert.notEqual(second, first);
    assert.equal(second.at, 1_005_001);
    assert.equal(hits.get("/health"), 2);
  });
});
