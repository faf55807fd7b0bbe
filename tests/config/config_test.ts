// Tests for src/config/config.ts, paths.ts and render.ts: agent.toml parsing and
// validation (PROTOCOL §9 and its extensions), lookup order, `~` expansion, rendering for `setup`,
// and a fast-check robustness property.

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type BackendConfig,
  type Config,
  ConfigError,
  type ConfigOptions,
  loadConfig,
  LOCAL_KINDS,
  type ModelPrice,
  parseConfig,
  REMOTE_KINDS,
} from "../../src/config/config.ts";
import { splitHostPort } from "../../src/config/fields.ts";
import { configCandidates, defaultConfigPath, expandHome } from "../../src/config/paths.ts";
import { renderConfig } from "../../src/config/render.ts";
import { setSink } from "../../src/log.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url);
const OPTS: ConfigOptions = { env: {}, home: "/home/op", platform: "linux" };
const BASE = `
[coordinator]
url = "wss://c.test/provider/connect"

[pricing]
default_input_per_1m = 100
default_output_per_1m = 200
`;
const KNOWN_FIELD =
  /^(agent\.toml line \d+: |(operator|coordinator|identity|backends|pricing|limits|observability|alerts)(\.|\[|: ))/;

function models(entries: Record<string, ModelPrice>): Record<string, ModelPrice> {
  return Object.assign(Object.create(null), entries);
}

/** Runs `fn` with log lines captured (and kept off stderr). */
function captureLog<T>(fn: () => T): { result: T; lines: string[] } {
  const lines: string[] = [];
  const previous = setSink((line) => lines.push(line));
  try {
    return { result: fn(), lines };
  } finally {
    setSink(previous);
  }
}

function configError(text: string, opts: ConfigOptions = OPTS): ConfigError {
  try {
    captureLog(() => parseConfig(text, "agent.toml", opts));
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    return err;
  }
  assert.fail("expected a ConfigError");
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "config_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the full §9 example parses to the expected Config", async () => {
  const path = new URL("agent_full.toml", FIXTURES).pathname;
  const text = await Deno.readTextFile(path);
  const { result, lines } = captureLog(() => parseConfig(text, path, OPTS));
  assert.deepEqual(lines, [], "no warnings for the documented keys");
  const expected: Config = {
    path,
    operator: {
      displayName: "BlueBoxRig-01",
      wallet: "11111111111111111111111111111111",
      contactEmail: "ops@example.com",
    },
    coordinator: {
      url: "wss://api.usepod.ai/provider/connect",
      enrollmentCode: "POD-ENROLL-7K9X4LM2",
    },
    identity: { keyPath: "/home/op/.usepod-agent/identity.key" },
    backends: [
      { kind: "vllm", url: "http://localhost:8000", models: ["meta-llama/Llama-3.3-70B-Instruct"] },
      { kind: "openrouter", apiKeyEnv: "OPENROUTER_API_KEY", markup: 0.05 },
    ],
    pricing: {
      defaultInputPer1m: 500_000,
      defaultOutputPer1m: 750_000,
      models: models({
        "meta-llama/Llama-3.3-70B-Instruct": { inputPer1m: 300_000, outputPer1m: 450_000 },
      }),
    },
    limits: { maxConcurrent: 8, maxTokensPerMinute: 200_000, drainTimeoutS: 30 },
    observability: { prometheusAddr: "127.0.0.1:9090", logLevel: "info", logFormat: "text" },
    alerts: { errorRateThreshold: 0.5 },
  };
  assert.deepStrictEqual(result, expected);
});

Deno.test("a minimal file gets the documented defaults", () => {
  const cfg = parseConfig(BASE, "", OPTS);
  assert.equal(cfg.path, "");
  assert.deepEqual(cfg.operator, {});
  assert.deepEqual(cfg.coordinator, { url: "wss://c.test/provider/connect" });
  assert.deepEqual(cfg.identity, { keyPath: "/home/op/.usepod-agent/identity.key" });
  assert.deepEqual(cfg.backends, []);
  assert.deepStrictEqual(cfg.pricing.models, models({}));
  assert.deepEqual(cfg.limits, { maxConcurrent: 8, maxTokensPerMinute: null, drainTimeoutS: 30 });
  assert.deepEqual(cfg.observability, {
    prometheusAddr: "127.0.0.1:9090",
    logLevel: "info",
    logFormat: "text",
  });
  assert.deepEqual(cfg.alerts, { errorRateThreshold: 0.5 });
});

Deno.test("the extension keys are read", () => {
  const cfg = parseConfig(
    `${BASE}
[limits]
drain_timeout_s = 0
[observability]
log_format = "json"
status_token = "s3cret"
prometheus_addr = "[::1]:0"
[alerts]
webhook_url = "https://hooks.example/T/abc"
error_rate_threshold = 1
`.replace('url = "wss', 'ca_file = "~/certs/ca.pem"\nurl = "wss'),
    "",
    OPTS,
  );
  assert.equal(cfg.coordinator.caFile, "/home/op/certs/ca.pem");
  assert.equal(cfg.limits.drainTimeoutS, 0);
  assert.deepEqual(cfg.observability, {
    prometheusAddr: "[::1]:0",
    logLevel: "info",
    logFormat: "json",
    statusToken: "s3cret",
  });
  assert.deepEqual(cfg.alerts, {
    webhookUrl: "https://hooks.example/T/abc",
    errorRateThreshold: 1,
  });
});

Deno.test("a ws:// coordinator url is accepted with allowInsecure", () => {
  const text = BASE.replace("wss://", "ws://");
  assert.equal(
    parseConfig(text, "", { ...OPTS, allowInsecure: true }).coordinator.url,
    "ws://c.test/provider/connect",
  );
});

Deno.test("backends: url trailing slashes are dropped, extras allowed, missing API key env is fine", () => {
  const cfg = parseConfig(
    `${BASE}
[[backends]]
kind = "vllm"
url = "http://localhost:8000/"
api_key_env = "VLLM_KEY"
[[backends]]
kind = "vllm"
url = "http://gpu2:8000"
[[backends]]
kind = "ollama"
url = "http://localhost:8000"
[[backends]]
kind = "venice"
api_key_env = "VENICE_API_KEY"
url = "http://127.0.0.1:9999/api/v1"
models = []
markup = 0
`,
    "",
    { ...OPTS, env: {} }, // VENICE_API_KEY unset: not a validation error (§9)
  );
  const expected: BackendConfig[] = [
    { kind: "vllm", url: "http://localhost:8000", apiKeyEnv: "VLLM_KEY" },
    { kind: "vllm", url: "http://gpu2:8000" },
    { kind: "ollama", url: "http://localhost:8000" },
    {
      kind: "venice",
      url: "http://127.0.0.1:9999/api/v1",
      apiKeyEnv: "VENICE_API_KEY",
      models: [],
      markup: 0,
    },
  ];
  assert.deepStrictEqual(cfg.backends, expected);
});

Deno.test("per-model prices may be 0 and any model id is a safe key", () => {
  const cfg = parseConfig(
    `${BASE}
[pricing.models]
"free/model" = { input_per_1m = 0, output_per_1m = 0 }
"constructor" = { input_per_1m = 1, output_per_1m = 2 }
"__proto__" = { input_per_1m = 3, output_per_1m = 4 }
`,
    "",
    OPTS,
  );
  assert.deepStrictEqual(cfg.pricing.models["free/model"], { inputPer1m: 0, outputPer1m: 0 });
  assert.deepStrictEqual(cfg.pricing.models["constructor"], { inputPer1m: 1, outputPer1m: 2 });
  assert.deepStrictEqual(cfg.pricing.models["__proto__"], { inputPer1m: 3, outputPer1m: 4 });
  assert.equal(cfg.pricing.models["toString"], undefined);
  assert.deepEqual(Object.keys(cfg.pricing.models), ["free/model", "constructor", "__proto__"]);
});

// One document per validation rule: [behaviour, document, expected message].
const INVALID: [string, string, RegExp][] = [
  ["a missing coordinator url", BASE.replace(/url = .*/, ""), /^coordinator\.url: required/],
  [
    "an unparseable coordinator url",
    BASE.replace(/url = .*/, 'url = "not a url"'),
    /^coordinator\.url: not a valid URL \("not a url"\)/,
  ],
  [
    "an https coordinator url",
    BASE.replace("wss://", "https://"),
    /^coordinator\.url: scheme must be wss:\/\/ \(got "https"\)/,
  ],
  [
    "a ws coordinator url without --allow-insecure",
    BASE.replace("wss://", "ws://"),
    /^coordinator\.url: ws:\/\/ is unencrypted; use wss:\/\/ or pass --allow-insecure/,
  ],
  [
    "a coordinator url of the wrong type",
    BASE.replace(/url = .*/, "url = 443"),
    /^coordinator\.url: expected a string, got an integer/,
  ],
  [
    "a coordinator that is not a table",
    BASE.replace("[coordinator]", 'coordinator = "wss://x"\n[c2]'),
    /^coordinator: expected a table, got a string/,
  ],
  [
    "an empty enrollment code",
    BASE.replace("[coordinator]", '[coordinator]\nenrollment_code = ""'),
    /^coordinator\.enrollment_code: must not be empty/,
  ],
  [
    "an unknown backend kind",
    `${BASE}[[backends]]\nkind = "tgi"\nurl = "http://x"`,
    /^backends\[0\]\.kind: unknown kind "tgi" \(expected one of vllm, llamacpp, lmstudio, ollama, openrouter, venice\)/,
  ],
  [
    "a backend without kind",
    `${BASE}[[backends]]\nurl = "http://x"`,
    /^backends\[0\]\.kind: required/,
  ],
  [
    "a local backend without url",
    `${BASE}[[backends]]\nkind = "ollama"`,
    /^backends\[0\]\.url: required for ollama \(e\.g\. "http:\/\/localhost:11434"\)/,
  ],
  [
    "a local backend with an invalid url",
    `${BASE}[[backends]]\nkind = "ollama"\nurl = "http://localhost:11434"\n[[backends]]\nkind = "vllm"\nurl = "htp:/x"`,
    /^backends\[1\]\.url: not a valid URL \("htp:\/x"\)/,
  ],
  [
    "a local backend with a url that does not parse",
    `${BASE}[[backends]]\nkind = "vllm"\nurl = "localhost:8000"`,
    /^backends\[0\]\.url: not a valid URL/,
  ],
  [
    "a remote backend with an invalid url override",
    `${BASE}[[backends]]\nkind = "venice"\napi_key_env = "K"\nurl = "ftp://x"`,
    /^backends\[0\]\.url: not a valid URL/,
  ],
  [
    "a remote backend without api_key_env",
    `${BASE}[[backends]]\nkind = "openrouter"`,
    /^backends\[0\]\.api_key_env: required for openrouter/,
  ],
  [
    "an api_key_env that is not a variable name",
    `${BASE}[[backends]]\nkind = "openrouter"\napi_key_env = "sk-or-v1-0123456789"`,
    /^backends\[0\]\.api_key_env: must be the NAME of an environment variable/,
  ],
  [
    "an empty api_key_env",
    `${BASE}[[backends]]\nkind = "venice"\napi_key_env = ""`,
    /^backends\[0\]\.api_key_env: must be the NAME/,
  ],
  [
    "an unknown key in a backend",
    `${BASE}[[backends]]\nkind = "openrouter"\napi_key = "x"`,
    /^backends\[0\]\.api_key: unknown key \(allowed: kind, url, api_key_env, models, markup\)/,
  ],
  [
    "two backends with the same kind and url",
    `${BASE}[[backends]]\nkind = "vllm"\nurl = "http://localhost:8000"\n[[backends]]\nkind = "vllm"\nurl = "http://localhost:8000/"`,
    /^backends\[1\]: duplicate of backends\[0\] \(same kind and url\)/,
  ],
  [
    "two backends with the same kind and api_key_env",
    `${BASE}[[backends]]\nkind = "venice"\napi_key_env = "K"\n[[backends]]\nkind = "venice"\napi_key_env = "K"\nurl = "http://x"`,
    /^backends\[1\]: duplicate of backends\[0\] \(same kind and api_key_env\)/,
  ],
  [
    "models that is not an array",
    `${BASE}[[backends]]\nkind = "vllm"\nurl = "http://x"\nmodels = "m"`,
    /^backends\[0\]\.models: expected an array of strings, got a string/,
  ],
  [
    "an empty model id in models",
    `${BASE}[[backends]]\nkind = "vllm"\nurl = "http://x"\nmodels = ["m", " "]`,
    /^backends\[0\]\.models\[1\]: must be a non-empty model id/,
  ],
  [
    "a model id that is not a string",
    `${BASE}[[backends]]\nkind = "vllm"\nurl = "http://x"\nmodels = [1]`,
    /^backends\[0\]\.models\[0\]: expected a string, got an integer/,
  ],
  [
    "a negative markup",
    `${BASE}[[backends]]\nkind = "openrouter"\napi_key_env = "K"\nmarkup = -0.1`,
    /^backends\[0\]\.markup: must be >= 0, got -0\.1/,
  ],
  [
    "a markup of the wrong type",
    `${BASE}[[backends]]\nkind = "openrouter"\napi_key_env = "K"\nmarkup = "5%"`,
    /^backends\[0\]\.markup: expected a number, got a string/,
  ],
  [
    "backends written as a single table",
    `${BASE}[backends]\nkind = "vllm"`,
    /^backends: expected an array of tables \(\[\[backends\]\]\), got a table/,
  ],
  [
    "a missing default input price",
    BASE.replace(/default_input_per_1m = .*/, ""),
    /^pricing\.default_input_per_1m: required/,
  ],
  [
    "a missing [pricing] table",
    BASE.replace(/\[pricing\][^]*/, ""),
    /^pricing\.default_input_per_1m: required/,
  ],
  [
    "a default input price of 0",
    BASE.replace("default_input_per_1m = 100", "default_input_per_1m = 0"),
    /^pricing\.default_input_per_1m: must be > 0, got 0/,
  ],
  [
    "a negative default output price",
    BASE.replace("default_output_per_1m = 200", "default_output_per_1m = -5"),
    /^pricing\.default_output_per_1m: must be > 0, got -5/,
  ],
  [
    "a fractional default price",
    BASE.replace("default_input_per_1m = 100", "default_input_per_1m = 1.5"),
    /^pricing\.default_input_per_1m: must be an integer, got 1\.5/,
  ],
  [
    "a default price given as a string",
    BASE.replace("default_input_per_1m = 100", 'default_input_per_1m = "100"'),
    /^pricing\.default_input_per_1m: expected an integer, got a string/,
  ],
  [
    "a negative per-model price",
    `${BASE}[pricing.models]\n"m/x" = { input_per_1m = -1, output_per_1m = 0 }`,
    /^pricing\.models\."m\/x"\.input_per_1m: must be >= 0, got -1/,
  ],
  [
    "a per-model price without output",
    `${BASE}[pricing.models]\nm = { input_per_1m = 1 }`,
    /^pricing\.models\.m\.output_per_1m: required/,
  ],
  [
    "a per-model price that is not a table",
    `${BASE}[pricing.models]\nm = 5`,
    /^pricing\.models\.m: expected a table like/,
  ],
  [
    "pricing.models that is not a table",
    BASE.replace("[pricing]", "[pricing]\nmodels = []"),
    /^pricing\.models: expected a table, got an array/,
  ],
  [
    "max_concurrent of 0",
    `${BASE}[limits]\nmax_concurrent = 0`,
    /^limits\.max_concurrent: must be between 1 and 256, got 0/,
  ],
  [
    "max_concurrent of 257",
    `${BASE}[limits]\nmax_concurrent = 257`,
    /^limits\.max_concurrent: must be between 1 and 256, got 257/,
  ],
  [
    "max_concurrent given as a string",
    `${BASE}[limits]\nmax_concurrent = "8"`,
    /^limits\.max_concurrent: expected an integer, got a string/,
  ],
  [
    "max_concurrent of inf",
    `${BASE}[limits]\nmax_concurrent = inf`,
    /^limits\.max_concurrent: must be an integer, got Infinity/,
  ],
  [
    "max_tokens_per_minute of 0",
    `${BASE}[limits]\nmax_tokens_per_minute = 0`,
    /^limits\.max_tokens_per_minute: must be > 0/,
  ],
  [
    "a negative drain_timeout_s",
    `${BASE}[limits]\ndrain_timeout_s = -1`,
    /^limits\.drain_timeout_s: must be >= 0, got -1/,
  ],
  [
    "an unknown log level",
    `${BASE}[observability]\nlog_level = "verbose"`,
    /^observability\.log_level: must be one of debug, info, warn, error \(got "verbose"\)/,
  ],
  [
    "an unknown log format",
    `${BASE}[observability]\nlog_format = "xml"`,
    /^observability\.log_format: must be "text" or "json"/,
  ],
  [
    "a prometheus_addr without a port",
    `${BASE}[observability]\nprometheus_addr = "9090"`,
    /^observability\.prometheus_addr: must be "host:port"/,
  ],
  [
    "an unbracketed IPv6 prometheus_addr",
    `${BASE}[observability]\nprometheus_addr = "::1:9090"`,
    /^observability\.prometheus_addr: must be "host:port"/,
  ],
  [
    "a prometheus_addr port above 65535",
    `${BASE}[observability]\nprometheus_addr = "127.0.0.1:65536"`,
    /^observability\.prometheus_addr: must be "host:port"/,
  ],
  [
    "an empty status token",
    `${BASE}[observability]\nstatus_token = ""`,
    /^observability\.status_token: must not be empty/,
  ],
  [
    "a webhook url that is not http(s)",
    `${BASE}[alerts]\nwebhook_url = "ftp://hooks.example/T/secret-token"`,
    /^alerts\.webhook_url: not a valid URL: expected http:\/\/ or https:\/\/$/,
  ],
  [
    "an error_rate_threshold of 0",
    `${BASE}[alerts]\nerror_rate_threshold = 0`,
    /^alerts\.error_rate_threshold: must be in \(0, 1\], got 0/,
  ],
  [
    "an error_rate_threshold above 1",
    `${BASE}[alerts]\nerror_rate_threshold = 1.5`,
    /^alerts\.error_rate_threshold: must be in \(0, 1\], got 1\.5/,
  ],
  [
    "an operator field of the wrong type",
    `${BASE}[operator]\nwallet = 1111`,
    /^operator\.wallet: expected a string, got an integer/,
  ],
  [
    "a date where a string is expected",
    `${BASE}[operator]\ndisplay_name = 1979-05-27`,
    /^operator\.display_name: expected a string, got a date/,
  ],
  [
    "an identity key_path of the wrong type",
    `${BASE}[identity]\nkey_path = true`,
    /^identity\.key_path: expected a string, got a boolean/,
  ],
];

for (const [behaviour, text, expected] of INVALID) {
  Deno.test(`${behaviour} is refused with a message naming the field`, () => {
    const err = configError(text);
    assert.match(err.message, expected);
    assert.equal(err.file, "agent.toml");
  });
}

Deno.test("error messages never quote secret values", () => {
  const apiKey = configError(
    `${BASE}[[backends]]\nkind = "openrouter"\napi_key_env = "sk-or-v1-0123456789"`,
  );
  assert.ok(!apiKey.message.includes("sk-or-v1"));
  const hook = configError(`${BASE}[alerts]\nwebhook_url = "hooks.example/T/secret-token"`);
  assert.ok(!hook.message.includes("secret-token"));
  const syntax = configError(
    BASE.replace("[coordinator]", '[coordinator]\nenrollment_code = "POD-ENROLL-SECRET" oops'),
  );
  assert.ok(!syntax.message.includes("POD-ENROLL-SECRET"), syntax.message);
});

Deno.test("a TOML syntax error names the line", () => {
  const text = [
    "[coordinator]",
    'url = "wss://c.test"',
    "",
    "[pricing]",
    "default_input_per_1m = 1",
    "default_output_per_1m = 1",
    "max_concurrent = = 8",
  ].join("\n");
  const err = configError(text);
  assert.match(err.message, /^agent\.toml line 7: \S/);
  assert.ok(!err.message.includes("\n"), "one line, no code excerpt");
  assert.match(
    configError(`${BASE}\n[limits]\nmax_concurrent = 1\nmax_concurrent = 2`).message,
    /^agent\.toml line 11: /,
  );
});

Deno.test("unknown tables and keys outside backends are accepted with one warning", () => {
  const text = `${BASE}
[limits]
max_concurent = 4
[telemetry]
endpoint = "x"
[constructor]
toString = 1
[__proto__]
x = 1
[pricing.models]
m = { input_per_1m = 1, output_per_1m = 2, cached_per_1m = 3 }
`.replace("[coordinator]", '[coordinator]\nregion = "eu"');
  const { result, lines } = captureLog(() => parseConfig(text, "agent.toml", OPTS));
  assert.equal(result.limits.maxConcurrent, 8);
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /WARN/);
  for (
    const key of [
      "coordinator.region",
      "limits.max_concurent",
      "telemetry",
      "pricing.models.m.cached_per_1m",
      "constructor",
      "__proto__",
    ]
  ) {
    assert.ok(lines[0]!.includes(key), `warning names ${key}: ${lines[0]}`);
  }
});

Deno.test("~ and ~/ are expanded in identity.key_path and coordinator.ca_file", () => {
  const text = BASE.replace("[coordinator]", '[coordinator]\nca_file = "~"') +
    '[identity]\nkey_path = "~/keys/agent.key"\n';
  const cfg = parseConfig(text, "", { ...OPTS, home: "/home/op/" });
  assert.equal(cfg.identity.keyPath, "/home/op/keys/agent.key");
  assert.equal(cfg.coordinator.caFile, "/home/op");
  const other = parseConfig(`${BASE}[identity]\nkey_path = "~alice/k"\n`, "", OPTS);
  assert.equal(other.identity.keyPath, "~alice/k", "~user is not expanded");
  assert.equal(expandHome("~\\keys\\a.key", "C:\\Users\\op"), "C:\\Users\\op\\keys\\a.key");
  assert.equal(expandHome("/abs/~/x", "/home/op"), "/abs/~/x");
  assert.match(
    configError(BASE, { env: {}, platform: "linux" }).message,
    /^identity\.key_path: starts with ~ but the home directory is unknown/,
  );
  const homeFromEnv = parseConfig(BASE, "", { env: { HOME: "/home/env" }, platform: "linux" });
  assert.equal(homeFromEnv.identity.keyPath, "/home/env/.usepod-agent/identity.key");
});

Deno.test("lookup order follows the platform config dir, then ./agent.toml", () => {
  assert.deepEqual(
    configCandidates({ platform: "linux", env: { XDG_CONFIG_HOME: "/xdg/" }, home: "/home/op" }),
    [
      "/xdg/usepod-agent/agent.toml",
      "./agent.toml",
    ],
  );
  assert.deepEqual(configCandidates({ platform: "linux", env: { HOME: "/home/op" } }), [
    "/home/op/.config/usepod-agent/agent.toml",
    "./agent.toml",
  ]);
  assert.deepEqual(
    configCandidates({
      platform: "linux",
      env: { XDG_CONFIG_HOME: "relative" },
      home: "/home/op",
    })[0],
    "/home/op/.config/usepod-agent/agent.toml",
    "a relative XDG_CONFIG_HOME is ignored",
  );
  assert.deepEqual(configCandidates({ platform: "darwin", env: {}, home: "/Users/op" }), [
    "/Users/op/Library/Application Support/usepod-agent/agent.toml",
    "./agent.toml",
  ]);
  assert.deepEqual(
    configCandidates({ platform: "windows", env: { APPDATA: "C:\\Users\\op\\AppData\\Roaming" } }),
    ["C:\\Users\\op\\AppData\\Roaming\\usepod-agent\\agent.toml", ".\\agent.toml"],
  );
  assert.deepEqual(configCandidates({ platform: "linux", env: {} }), ["./agent.toml"]);
  assert.equal(
    defaultConfigPath({ platform: "linux", env: { XDG_CONFIG_HOME: "/xdg" } }),
    "/xdg/usepod-agent/agent.toml",
  );
});

Deno.test("loadConfig without a path uses the platform config dir first", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/usepod-agent`);
    await Deno.writeTextFile(`${dir}/usepod-agent/agent.toml`, BASE);
    const cfg = await loadConfig(undefined, { ...OPTS, env: { XDG_CONFIG_HOME: dir } });
    assert.equal(cfg.path, `${dir}/usepod-agent/agent.toml`);
    assert.equal(cfg.pricing.defaultOutputPer1m, 200);
  });
});

Deno.test("loadConfig reads an explicit path and reports unreadable or missing files", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/custom.toml`, BASE);
    assert.equal((await loadConfig(`${dir}/custom.toml`, OPTS)).path, `${dir}/custom.toml`);
    await assert.rejects(loadConfig(`${dir}/absent.toml`, OPTS), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.message, `config file not found: ${dir}/absent.toml`);
      return true;
    });
    await assert.rejects(loadConfig(dir, OPTS), /^ConfigError: cannot read config file/);
    await Deno.writeTextFile(`${dir}/bad.toml`, "[pricing\n");
    await assert.rejects(loadConfig(`${dir}/bad.toml`, OPTS), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.file, `${dir}/bad.toml`);
      assert.match(e.message, /^agent\.toml line 1: /);
      return true;
    });
  });
});

let cwdHasConfig = false;
try {
  cwdHasConfig = Deno.statSync("./agent.toml").isFile;
} catch {
  // absent: the test below can run
}
Deno.test({
  name: "loadConfig names every path tried when no file exists",
  ignore: cwdHasConfig,
  fn: async () => {
    await withTempDir(async (dir) => {
      const opts = { ...OPTS, env: { XDG_CONFIG_HOME: dir } };
      await assert.rejects(loadConfig(undefined, opts), (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.ok(e.message.includes(`${dir}/usepod-agent/agent.toml, ./agent.toml`), e.message);
        assert.match(e.message, /usepod-agent setup/);
        return true;
      });
    });
  },
});

Deno.test("splitHostPort accepts host:port and bracketed IPv6 only", () => {
  assert.deepEqual(splitHostPort("127.0.0.1:9090"), { hostname: "127.0.0.1", port: 9090 });
  assert.deepEqual(splitHostPort("[::1]:9090"), { hostname: "::1", port: 9090 });
  assert.deepEqual(splitHostPort("localhost:0"), { hostname: "localhost", port: 0 });
  for (
    const bad of [
      "",
      ":9090",
      "host",
      "host:",
      "host:65536",
      "[::1]",
      "[nothex]:1",
      "a b:1",
      "::1:9090",
    ]
  ) {
    assert.equal(splitHostPort(bad), undefined, bad);
  }
});

Deno.test("renderConfig round-trips the §9 example and keeps Rust-compatible defaults", async () => {
  const text = await Deno.readTextFile(new URL("agent_full.toml", FIXTURES));
  const cfg = parseConfig(text, "x", OPTS);
  const rendered = renderConfig(cfg);
  assert.deepStrictEqual(parseConfig(rendered, "x", OPTS), cfg);
  for (const ext of ["drain_timeout_s", "log_format", "status_token", "ca_file", "[alerts]"]) {
    assert.ok(!rendered.includes(ext), `default extension ${ext} is not written`);
  }
  assert.match(rendered, /^default_input_per_1m = 500_000$/m);
  assert.match(
    rendered,
    /^"meta-llama\/Llama-3\.3-70B-Instruct" = \{ input_per_1m = 300_000, output_per_1m = 450_000 \}$/m,
  );
});

const nameArb = fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,8}$/);
const textArb = fc.string({ unit: "grapheme", minLength: 1, maxLength: 12 }).filter((s) =>
  s.trim() !== ""
);
const PLAIN = { noNullPrototype: true } as const;
const localArb = fc.record({
  kind: fc.constantFrom(...LOCAL_KINDS),
  url: fc.constantFrom(
    "http://localhost:8000",
    "https://gpu.example:8443/v1",
    "http://[::1]:11434",
  ),
  apiKeyEnv: nameArb,
  models: fc.array(textArb, { maxLength: 3 }),
  markup: fc.double({ min: 0, max: 10, noNaN: true }).map((x) => x === 0 ? 0 : x),
}, { requiredKeys: ["kind", "url"], noNullPrototype: true });
const remoteArb = fc.record({
  kind: fc.constantFrom(...REMOTE_KINDS),
  url: fc.constantFrom("http://127.0.0.1:9999/api/v1", "https://openrouter.ai/api/v1"),
  apiKeyEnv: nameArb,
  models: fc.array(textArb, { maxLength: 3 }),
  markup: fc.double({ min: 0, max: 10, noNaN: true }).map((x) => x === 0 ? 0 : x),
}, { requiredKeys: ["kind", "apiKeyEnv"], noNullPrototype: true });
const configArb: fc.Arbitrary<Config> = fc.record({
  path: fc.constant(""),
  operator: fc.record({ displayName: textArb, wallet: textArb, contactEmail: textArb }, {
    requiredKeys: [],
    noNullPrototype: true,
  }),
  coordinator: fc.record({
    url: fc.constantFrom(
      "wss://api.usepod.ai/provider/connect",
      "ws://127.0.0.1:8787/provider/connect",
    ),
    enrollmentCode: textArb,
    caFile: fc.constantFrom("/etc/ssl/ca.pem", "C:\\certs\\ca.pem"),
  }, { requiredKeys: ["url"], noNullPrototype: true }),
  identity: fc.record({ keyPath: textArb.map((s) => `/keys/${s}`) }, PLAIN),
  backends: fc.uniqueArray(fc.oneof(localArb, remoteArb) as fc.Arbitrary<BackendConfig>, {
    maxLength: 4,
    selector: (b) =>
      LOCAL_KINDS.includes(b.kind) ? `${b.kind} ${b.url}` : `${b.kind} ${b.apiKeyEnv}`,
  }),
  pricing: fc.record({
    defaultInputPer1m: fc.integer({ min: 1, max: 1e12 }),
    defaultOutputPer1m: fc.integer({ min: 1, max: 1e12 }),
    models: fc.uniqueArray(
      fc.tuple(
        fc.oneof(textArb, fc.constantFrom("constructor", "__proto__", "a.b", 'q"uote')),
        fc.record({ inputPer1m: fc.nat(), outputPer1m: fc.nat() }, PLAIN),
      ),
      { maxLength: 4, selector: ([id]) => id },
    ).map((entries) => {
      const out: Record<string, ModelPrice> = Object.create(null);
      for (const [id, price] of entries) out[id] = price;
      return out;
    }),
  }, PLAIN),
  limits: fc.record({
    maxConcurrent: fc.integer({ min: 1, max: 256 }),
    maxTokensPerMinute: fc.option(fc.integer({ min: 1, max: 1e9 }), { nil: null }),
    drainTimeoutS: fc.integer({ min: 0, max: 3600 }),
  }, PLAIN),
  observability: fc.record({
    prometheusAddr: fc.constantFrom("127.0.0.1:9090", "[::1]:0", "localhost:65535"),
    logLevel: fc.constantFrom("debug", "info", "warn", "error"),
    logFormat: fc.constantFrom("text", "json"),
    statusToken: textArb,
  }, { requiredKeys: ["prometheusAddr", "logLevel", "logFormat"], noNullPrototype: true }),
  alerts: fc.record({
    webhookUrl: fc.constantFrom("https://hooks.example/T/abc", "http://127.0.0.1:9/hook"),
    errorRateThreshold: fc.oneof(fc.constant(0.5), fc.double({ min: 1e-9, max: 1, noNaN: true })),
  }, { requiredKeys: ["errorRateThreshold"], noNullPrototype: true }),
}, PLAIN);

Deno.test("renderConfig round-trips random valid configs", () => {
  fc.assert(
    fc.property(configArb, (cfg) => {
      const back = parseConfig(renderConfig(cfg), "", { ...OPTS, allowInsecure: true });
      assert.deepStrictEqual(back, cfg);
    }),
    { numRuns: 200 },
  );
});

// Values for the known keys, valid for their field more often than not.
const ANY_VALUE = fc.oneof(
  fc.constantFrom(
    '"wss://c.test/x"',
    '"ws://c.test/x"',
    '"https://c.test"',
    '"htp:/x"',
    '"http://localhost:8000/"',
    '""',
    '"  "',
    '"vllm"',
    '"ollama"',
    '"venice"',
    '"tgi"',
    '"OPENROUTER_API_KEY"',
    '"sk-or-1"',
    '"debug"',
    '"json"',
    '"[::1]:9090"',
    '"127.0.0.1:99999"',
    '"~/k"',
    '"~"',
    "true",
    "1979-05-27",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "[]",
    '["m", ""]',
    '["m"]',
    "[1, 2]",
    "[[1], {}]",
    "{ input_per_1m = 1, output_per_1m = 2 }",
    "{ input_per_1m = -1 }",
    "{ x = 1 }",
    "nan",
    "inf",
    "-inf",
    "0",
    "1",
    "-1",
    "8",
    "256",
    "257",
    "0.5",
    "1.5",
    "500_000",
    "9007199254740993",
    "= =",
    '"unterminated',
    "0x10",
    "1e3",
  ),
  fc.integer().map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map(String),
  fc.string({ maxLength: 12 }).map((s) => JSON.stringify(s)),
);
const VALID: Record<string, string[]> = {
  "coordinator.url": ['"wss://c.test/p"', '"ws://c.test/p"'],
  "backends.url": ['"http://localhost:8000"', '"https://10.0.0.2:8000/v1"'],
  "enrollment_code": ['"POD-1"'],
  "ca_file": ['"~/ca.pem"'],
  "key_path": ['"/k/id.key"'],
  "default_input_per_1m": ["500_000"],
  "default_output_per_1m": ["7"],
  "max_concurrent": ["8"],
  "max_tokens_per_minute": ["1000"],
  "drain_timeout_s": ["5"],
  "prometheus_addr": ['"[::1]:9090"'],
  "log_level": ['"debug"'],
  "log_format": ['"json"'],
  "status_token": ['"tok"'],
  "webhook_url": ['"https://h.test/x"'],
  "error_rate_threshold": ["0.25"],
  kind: ['"vllm"', '"openrouter"', '"ollama"'],
  "api_key_env": ['"KEY_ENV"'],
  models: ['["m"]'],
  markup: ["0.1"],
  price: ["{ input_per_1m = 1, output_per_1m = 2 }"],
};
/** A `key = value` line, or "" (key absent); mostly valid values. */
const lineFor = (key: string, name = key.replace(/^.*\./, "")) =>
  fc.oneof(
    {
      arbitrary: fc.constantFrom(...(Object.hasOwn(VALID, key) ? VALID[key]! : ['"x"'])),
      weight: 16,
    },
    { arbitrary: fc.constant(undefined), weight: 1 },
    { arbitrary: ANY_VALUE, weight: 1 },
  ).map((v) => v === undefined ? "" : `${name} = ${v}`);
const entriesArb = (keys: string[], unknownWeight: number) =>
  fc.tuple(
    ...keys.map((k) => lineFor(k)),
    fc.oneof({ arbitrary: fc.constant(""), weight: 10 }, {
      arbitrary: lineFor("unknown_key"),
      weight: unknownWeight,
    }),
  ).map((lines) => lines.filter((l) => l !== ""));
/** A section: `[name]` with entries (placed after every top-level line), or `name = value`. */
const tableArb = (name: string, keys: string[]) =>
  fc.oneof(
    {
      arbitrary: entriesArb(keys, 3).map((l) => ({ top: "", body: [`[${name}]`, ...l] })),
      weight: 18,
    },
    { arbitrary: fc.constant({ top: "", body: [] as string[] }), weight: 1 },
    {
      arbitrary: ANY_VALUE.map((v) => ({ top: `${name} = ${v}`, body: [] as string[] })),
      weight: 1,
    },
  );
const documentArb = fc.tuple(
  tableArb("operator", ["display_name", "wallet", "contact_email"]),
  tableArb("coordinator", ["coordinator.url", "enrollment_code", "ca_file"]),
  tableArb("identity", ["key_path"]),
  fc.array(entriesArb(["kind", "backends.url", "api_key_env", "models", "markup"], 1), {
    maxLength: 3,
  })
    .map((bs) => ({ top: "", body: bs.flatMap((lines) => ["[[backends]]", ...lines]) })),
  fc.tuple(
    tableArb("pricing", ["default_input_per_1m", "default_output_per_1m"]),
    fc.uniqueArray(fc.constantFrom("m", '"a/b"', '"__proto__"', '""'), { maxLength: 2 })
      .chain((ids) => fc.tuple(...ids.map((id) => lineFor("price", id)))),
  ).map(([pricing, models]) => ({
    top: pricing.top,
    body: [...pricing.body, ...(models.length ? ["[pricing.models]", ...models] : [])],
  })),
  tableArb("limits", ["max_concurrent", "max_tokens_per_minute", "drain_timeout_s"]),
  tableArb("observability", ["prometheus_addr", "log_level", "log_format", "status_token"]),
  tableArb("alerts", ["webhook_url", "error_rate_threshold"]),
  tableArb("future", ["anything"]),
  tableArb("constructor", ["toString"]),
).chain((sections) =>
  fc.shuffledSubarray(sections, { minLength: sections.length }).map((s) =>
    [...s.map((x) => x.top), ...s.flatMap((x) => x.body)].join("\n")
  )
);

Deno.test("parseConfig returns a Config or a ConfigError naming a field, for any document", () => {
  let valid = 0;
  const previous = setSink(() => {});
  try {
    fc.assert(
      fc.property(documentArb, fc.boolean(), (text, allowInsecure) => {
        try {
          parseConfig(text, "agent.toml", { ...OPTS, allowInsecure });
          valid++;
        } catch (err) {
          if (!(err instanceof ConfigError)) throw err;
          assert.match(err.message, KNOWN_FIELD);
        }
      }),
      { numRuns: 300 },
    );
  } finally {
    setSink(previous);
  }
  assert.ok(valid > 0, "some generated documents are valid");
});
