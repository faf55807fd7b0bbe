// Tests for src/config/env.ts (issue 16): the USEPOD_* variables over agent.toml (flags >
// environment > file > default), an agent with no agent.toml at all, errors naming the variable,
// the sources `validate` prints (never a secret), and the state directory they choose.

import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config.ts";
import {
  type ConfigSource,
  ENV_ONLY,
  ENV_VARS,
  formatSources,
  loadMergedConfig,
  type MergeOptions,
} from "../../src/config/env.ts";
import { stateDirOf, stateFile } from "../../src/paths.ts";
import { agentToml, runCli } from "../harness/agent_process.ts";

const REQUIRED = {
  USEPOD_COORDINATOR_URL: "wss://c.test/provider/connect",
  USEPOD_DEFAULT_INPUT_PER_1M: "500000",
  USEPOD_DEFAULT_OUTPUT_PER_1M: "750000",
};

/** Runs `fn` in a temp dir that is also HOME and XDG_CONFIG_HOME (so no agent.toml is found). */
async function inDir(fn: (dir: string, base: MergeOptions) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "usepod-env-" });
  try {
    await fn(dir, { home: dir, platform: "linux", env: { XDG_CONFIG_HOME: `${dir}/xdg` } });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function sourceOf(sources: ConfigSource[], field: string): ConfigSource {
  const s = sources.find((x) => x.field === field);
  assert.ok(s, `no source row for ${field}`);
  return s;
}

async function rejects(p: Promise<unknown>, re: RegExp): Promise<string> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
  assert.match(err.message, re);
  return err.message;
}

Deno.test("environment values win over the file, flags win over the environment", async () => {
  await inDir(async (dir, base) => {
    const path = `${dir}/agent.toml`;
    await Deno.writeTextFile(
      path,
      agentToml({
        coordinatorUrl: "wss://file.test/provider/connect",
        keyPath: `${dir}/id.key`,
        backends: '[[backends]]\nkind = "vllm"\nurl = "http://localhost:8000"\n',
        drainTimeoutS: 30,
        logLevel: "warn",
      }),
    );
    const { config, sources } = await loadMergedConfig({
      ...base,
      path,
      env: {
        USEPOD_COORDINATOR_URL: "wss://env.test/provider/connect",
        USEPOD_DRAIN_TIMEOUT_S: "8",
        USEPOD_LOG_LEVEL: "info",
        USEPOD_LOG_FORMAT: "json",
        USEPOD_STATUS_ADDR: "127.0.0.1:9191",
      },
      flags: { logLevel: "debug" },
    });
    assert.equal(config.path, path);
    assert.equal(config.coordinator.url, "wss://env.test/provider/connect");
    assert.equal(config.limits.drainTimeoutS, 8);
    assert.equal(config.observability.logLevel, "debug");
    assert.equal(config.observability.logFormat, "json");
    assert.equal(config.observability.prometheusAddr, "127.0.0.1:9191");
    assert.deepEqual(config.backends, [{ kind: "vllm", url: "http://localhost:8000" }]);
    assert.equal(sourceOf(sources, "coordinator.url").source, "env USEPOD_COORDINATOR_URL");
    assert.equal(sourceOf(sources, "limits.drain_timeout_s").source, "env USEPOD_DRAIN_TIMEOUT_S");
    assert.equal(sourceOf(sources, "observability.log_level").source, "flag --log-level");
    assert.equal(sourceOf(sources, "limits.max_concurrent").source, "file");
    assert.equal(sourceOf(sources, "backends[0]").source, "file");
    assert.equal(sourceOf(sources, "alerts.error_rate_threshold").source, "default");
  });
});

Deno.test("with no agent.toml the environment alone configures the agent", async () => {
  await inDir(async (dir, base) => {
    const { config, sources } = await loadMergedConfig({
      ...base,
      env: {
        ...base.env,
        ...REQUIRED,
        USEPOD_BACKEND_KIND: "llamacpp",
        USEPOD_BACKEND_URL: "http://127.0.0.1:8080/",
        USEPOD_BACKEND_MODELS: "tiny, other",
        USEPOD_IDENTITY_KEY_PATH: "/run/secrets/usepod/identity.key",
        USEPOD_STATE_DIR: `${dir}/state/`,
        USEPOD_MAX_CONCURRENT: "4",
      },
    });
    assert.equal(config.path, ENV_ONLY);
    assert.deepEqual(config.backends, [
      { kind: "llamacpp", url: "http://127.0.0.1:8080", models: ["tiny", "other"] },
    ]);
    assert.equal(config.pricing.defaultInputPer1m, 500_000);
    assert.equal(config.limits.maxConcurrent, 4);
    assert.deepEqual(config.identity, {
      keyPath: "/run/secrets/usepod/identity.key",
      stateDir: `${dir}/state`,
    });
    assert.equal(stateFile(config.identity, "receipts.jsonl"), `${dir}/state/receipts.jsonl`);
    assert.equal(sourceOf(sources, "backends[0]").source, "env USEPOD_BACKEND_KIND");
    assert.equal(sourceOf(sources, "identity.state_dir").value, `${dir}/state`);
  });
});

Deno.test("no agent.toml and no USEPOD_ variable is the usual 'no agent.toml found' error", async () => {
  await inDir(async (_dir, base) => {
    await rejects(loadMergedConfig(base), /^no agent\.toml found; tried /);
  });
});

Deno.test("a required key the environment lacks names the variable to set", async () => {
  await inDir(async (_dir, base) => {
    const env = { ...base.env, USEPOD_COORDINATOR_URL: REQUIRED.USEPOD_COORDINATOR_URL };
    await rejects(
      loadMergedConfig({ ...base, env }),
      /^pricing\.default_input_per_1m: required .*no agent\.toml was read: set USEPOD_DEFAULT_INPUT_PER_1M$/,
    );
    await rejects(
      loadMergedConfig({
        ...base,
        env: { ...base.env, ...REQUIRED, USEPOD_BACKEND_KIND: "openrouter" },
      }),
      /^backends\[0\]\.api_key_env: required .*set USEPOD_BACKEND_API_KEY_ENV$/,
    );
  });
});

Deno.test("a bad environment value is an error naming the variable", async () => {
  await inDir(async (_dir, base) => {
    const load = (extra: Record<string, string>, allowInsecure = false) =>
      loadMergedConfig({ ...base, allowInsecure, env: { ...base.env, ...REQUIRED, ...extra } });
    await rejects(
      load({ USEPOD_DRAIN_TIMEOUT_S: "8s" }),
      /^USEPOD_DRAIN_TIMEOUT_S: expected an integer \(got "8s"\)$/,
    );
    await rejects(
      load({ USEPOD_DRAIN_TIMEOUT_S: "-1" }),
      /^USEPOD_DRAIN_TIMEOUT_S \(limits\.drain_timeout_s\): must be >= 0, got -1$/,
    );
    await rejects(
      load({ USEPOD_MAX_CONCURRENT: "999" }),
      /^USEPOD_MAX_CONCURRENT \(limits\.max_concurrent\): must be between 1 and 256/,
    );
    await rejects(
      load({ USEPOD_COORDINATOR_URL: "ws://c.test/provider/connect" }),
      /^USEPOD_COORDINATOR_URL \(coordinator\.url\): ws:\/\/ is unencrypted/,
    );
    assert.equal(
      (await load({ USEPOD_COORDINATOR_URL: "ws://c.test/x" }, true)).config.coordinator.url,
      "ws://c.test/x",
    );
    await rejects(
      load({ USEPOD_LOG_FORMAT: "xml" }),
      /^USEPOD_LOG_FORMAT \(observability\.log_format\): must be "text" or "json"/,
    );
    await rejects(load({ USEPOD_STATUS_ADDR: "9090" }), /^USEPOD_STATUS_ADDR \(observability/);
    await rejects(
      load({ USEPOD_BACKEND_KIND: "tgi", USEPOD_BACKEND_URL: "http://x:1" }),
      /^USEPOD_BACKEND_KIND \(backends\[0\]\.kind\): unknown kind "tgi"/,
    );
    await rejects(
      load({ USEPOD_BACKEND_KIND: "vllm", USEPOD_BACKEND_URL: "localhost:8000" }),
      /^USEPOD_BACKEND_URL \(backends\[0\]\.url\): not a valid URL/,
    );
    await rejects(
      load({ USEPOD_BACKEND_URL: "http://localhost:8000" }),
      /^USEPOD_BACKEND_URL: set without USEPOD_BACKEND_KIND/,
    );
    await rejects(
      load({
        USEPOD_BACKEND_KIND: "vllm",
        USEPOD_BACKEND_URL: "http://x:1",
        USEPOD_BACKEND_MODELS: "a,,b",
      }),
      /^USEPOD_BACKEND_MODELS: expected comma-separated model ids, one is empty/,
    );
    await rejects(
      load({ USEPOD_BACKEND_KIND: "openrouter", USEPOD_BACKEND_API_KEY_ENV: "sk-or-v1-abc" }),
      /^USEPOD_BACKEND_API_KEY_ENV \(backends\[0\]\.api_key_env\): must be the NAME/,
    );
  });
});

Deno.test("an environment backend replaces the file's [[backends]]", async () => {
  await inDir(async (dir, base) => {
    const path = `${dir}/agent.toml`;
    await Deno.writeTextFile(
      path,
      agentToml({
        coordinatorUrl: REQUIRED.USEPOD_COORDINATOR_URL,
        keyPath: `${dir}/id.key`,
        backends: '[[backends]]\nkind = "vllm"\nurl = "http://a:1"\n\n' +
          '[[backends]]\nkind = "ollama"\nurl = "http://b:2"\n',
      }),
    );
    const { config } = await loadMergedConfig({
      ...base,
      path,
      env: { USEPOD_BACKEND_KIND: "llamacpp", USEPOD_BACKEND_URL: "http://llama:8080" },
    });
    assert.deepEqual(config.backends, [{ kind: "llamacpp", url: "http://llama:8080" }]);
  });
});

Deno.test("USEPOD_CONFIG names the file, --config wins over it, empty variables are unset", async () => {
  await inDir(async (dir, base) => {
    const write = (name: string, url: string) =>
      Deno.writeTextFile(
        `${dir}/${name}`,
        agentToml({ coordinatorUrl: url, keyPath: `${dir}/id.key` }),
      );
    await write("env.toml", "wss://from-env-file.test/c");
    await write("flag.toml", "wss://from-flag-file.test/c");
    const env = { ...base.env, USEPOD_CONFIG: `${dir}/env.toml`, USEPOD_DRAIN_TIMEOUT_S: "" };
    const viaEnv = await loadMergedConfig({ ...base, env });
    assert.equal(viaEnv.config.path, `${dir}/env.toml`);
    assert.equal(viaEnv.config.coordinator.url, "wss://from-env-file.test/c");
    assert.equal(sourceOf(viaEnv.sources, "limits.drain_timeout_s").source, "file");
    const viaFlag = await loadMergedConfig({ ...base, env, path: `${dir}/flag.toml` });
    assert.equal(viaFlag.config.coordinator.url, "wss://from-flag-file.test/c");
    await rejects(
      loadMergedConfig({ ...base, env: { USEPOD_CONFIG: `${dir}/missing.toml` } }),
      /^config file not found: .*missing\.toml$/,
    );
  });
});

Deno.test("the state directory is USEPOD_STATE_DIR, else identity.state_dir, else the key's dir", async () => {
  await inDir(async (dir, base) => {
    const path = `${dir}/agent.toml`;
    const toml = agentToml({
      coordinatorUrl: REQUIRED.USEPOD_COORDINATOR_URL,
      keyPath: "~/k/id.key",
    });
    await Deno.writeTextFile(path, toml);
    const plain = (await loadMergedConfig({ ...base, path })).config;
    assert.equal(stateDirOf(plain.identity), `${dir}/k`);
    assert.equal(stateFile(plain.identity, "agent.pid"), `${dir}/k/agent.pid`);
    await Deno.writeTextFile(
      path,
      toml.replace("[identity]\n", '[identity]\nstate_dir = "~/state"\n'),
    );
    const fromFile = (await loadMergedConfig({ ...base, path })).config;
    assert.equal(stateDirOf(fromFile.identity), `${dir}/state`);
    const env = { USEPOD_STATE_DIR: "/var/lib/usepod-agent" };
    const fromEnv = await loadMergedConfig({ ...base, path, env });
    assert.equal(stateDirOf(fromEnv.config.identity), "/var/lib/usepod-agent");
    assert.equal(sourceOf(fromEnv.sources, "identity.state_dir").source, "env USEPOD_STATE_DIR");
  });
});

Deno.test("secrets from the environment are shown as (set), never their value", async () => {
  await inDir(async (_dir, base) => {
    const { sources } = await loadMergedConfig({
      ...base,
      env: {
        ...base.env,
        ...REQUIRED,
        USEPOD_STATUS_TOKEN: "tok-SECRET-123",
        USEPOD_ENROLLMENT_CODE: "enr-SECRET-456",
      },
    });
    const text = formatSources(sources).join("\n");
    assert.doesNotMatch(text, /SECRET/);
    assert.equal(sourceOf(sources, "observability.status_token").value, "(set)");
    assert.equal(sourceOf(sources, "coordinator.enrollment_code").value, "(set)");
    assert.match(
      text,
      /^ {2}coordinator\.enrollment_code +\(set\) +\(env USEPOD_ENROLLMENT_CODE\)$/m,
    );
  });
});

Deno.test("every documented variable has a distinct name and agent.toml field", () => {
  const names = ENV_VARS.map((v) => v.name);
  assert.equal(new Set(names).size, names.length);
  assert.equal(new Set(ENV_VARS.map((v) => v.field)).size, names.length);
  for (const n of names) assert.match(n, /^USEPOD_[A-Z0-9_]+$/);
});

Deno.test("validate with only the environment prints the merged values and their sources", async () => {
  await inDir(async (dir) => {
    const r = await runCli(["validate", "--log-format", "json"], {
      cwd: dir,
      env: {
        HOME: dir,
        XDG_CONFIG_HOME: `${dir}/xdg`,
        ...REQUIRED,
        USEPOD_BACKEND_KIND: "llamacpp",
        USEPOD_BACKEND_URL: "http://127.0.0.1:8080",
        USEPOD_STATUS_TOKEN: "tok-SECRET-123",
        USEPOD_LOG_FORMAT: "text",
      },
    });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split("\n");
    assert.equal(
      lines[0],
      "ok: (environment): coordinator wss://c.test/provider/connect, 1 backend(s) (llamacpp), " +
        "max_concurrent 8",
    );
    assert.match(
      r.stdout,
      /^ {2}backends\[0\] +llamacpp http:\/\/127\.0\.0\.1:8080 +\(env USEPOD_BACKEND_KIND\)$/m,
    );
    assert.match(r.stdout, /^ {2}observability\.log_format +json +\(flag --log-format\)$/m);
    assert.match(
      r.stdout,
      /^ {2}observability\.status_token +\(set\) +\(env USEPOD_STATUS_TOKEN\)$/m,
    );
    assert.doesNotMatch(r.stdout + r.stderr, /SECRET/);
  });
});

Deno.test("validate names the variable of a bad value in one line, exit 1", async () => {
  await inDir(async (dir) => {
    const r = await runCli(["validate"], {
      cwd: dir,
      env: {
        HOME: dir,
        XDG_CONFIG_HOME: `${dir}/xdg`,
        ...REQUIRED,
        USEPOD_DRAIN_TIMEOUT_S: "soon",
      },
    });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr, 'error: USEPOD_DRAIN_TIMEOUT_S: expected an integer (got "soon")\n');
  });
});
