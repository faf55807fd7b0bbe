// Configuration from the environment (issue 16): the USEPOD_* variables a container sets, merged
// over agent.toml with the precedence flags > environment > file > default; no agent.toml at all
// when the environment holds the required fields; and where each merged value came from.

import { type Config, configFromDoc, type ConfigOptions, parseToml } from "./config.ts";
import { ConfigError, isTable, own, shown, type Table } from "./fields.ts";
import { findConfigFile, noConfigFound } from "./find.ts";
import type { Level, LogFormat } from "../log.ts";
import { stateDirOf } from "../paths.ts";

/** One environment variable and the agent.toml key it sets. */
export interface EnvVar {
  name: string;
  /** The agent.toml field (`table.key`; `backends[0].key` for the environment's one backend). */
  field: string;
  type: "string" | "int" | "list";
  /** Never echoed: `validate` prints "(set)" and errors do not quote it. */
  secret?: boolean;
}

/** Names the agent.toml file to read (below --config, above the lookup order). */
export const CONFIG_VAR = "USEPOD_CONFIG";

/** Every variable the agent reads its configuration from, in the order `validate` lists them. */
export const ENV_VARS: readonly EnvVar[] = [
  { name: "USEPOD_COORDINATOR_URL", field: "coordinator.url", type: "string" },
  {
    name: "USEPOD_ENROLLMENT_CODE",
    field: "coordinator.enrollment_code",
    type: "string",
    secret: true,
  },
  { name: "USEPOD_IDENTITY_KEY_PATH", field: "identity.key_path", type: "string" },
  { name: "USEPOD_STATE_DIR", field: "identity.state_dir", type: "string" },
  { name: "USEPOD_BACKEND_KIND", field: "backends[0].kind", type: "string" },
  { name: "USEPOD_BACKEND_URL", field: "backends[0].url", type: "string" },
  { name: "USEPOD_BACKEND_MODELS", field: "backends[0].models", type: "list" },
  { name: "USEPOD_BACKEND_API_KEY_ENV", field: "backends[0].api_key_env", type: "string" },
  { name: "USEPOD_DEFAULT_INPUT_PER_1M", field: "pricing.default_input_per_1m", type: "int" },
  { name: "USEPOD_DEFAULT_OUTPUT_PER_1M", field: "pricing.default_output_per_1m", type: "int" },
  { name: "USEPOD_MAX_CONCURRENT", field: "limits.max_concurrent", type: "int" },
  { name: "USEPOD_DRAIN_TIMEOUT_S", field: "limits.drain_timeout_s", type: "int" },
  { name: "USEPOD_STATUS_ADDR", field: "observability.prometheus_addr", type: "string" },
  {
    name: "USEPOD_STATUS_TOKEN",
    field: "observability.status_token",
    type: "string",
    secret: true,
  },
  { name: "USEPOD_LOG_LEVEL", field: "observability.log_level", type: "string" },
  { name: "USEPOD_LOG_FORMAT", field: "observability.log_format", type: "string" },
];

/** `Config.path` when no agent.toml was read: every value came from the environment or defaults. */
export const ENV_ONLY = "(environment)";

/** What {@link loadMergedConfig} needs besides the environment (`opts.env`, default Deno.env). */
export interface MergeOptions extends ConfigOptions {
  /** `--config` as given. */
  path?: string | undefined;
  /** `--log-level` / `--log-format` as given: they win over the environment and the file. */
  flags?: { logLevel?: Level | undefined; logFormat?: LogFormat | undefined };
}

/** One merged value as `validate` shows it; `value` is "(set)" for a secret. */
export interface ConfigSource {
  field: string;
  value: string;
  /** `flag --log-level`, `env USEPOD_…`, `file`, or `default`. */
  source: string;
}

function envReader(opts: ConfigOptions): (name: string) => string | undefined {
  const env = opts.env;
  if (env) return (name) => (Object.hasOwn(env, name) ? env[name] : undefined);
  return (name) => {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined; // no --allow-env: behave as unset
    }
  };
}

/** The set (non-empty) variables, typed; throws a ConfigError naming a malformed one. */
function readVars(get: (name: string) => string | undefined): Map<EnvVar, unknown> {
  const out = new Map<EnvVar, unknown>();
  for (const v of ENV_VARS) {
    const raw = get(v.name)?.trim();
    if (raw === undefined || raw === "") continue;
    const got = v.secret ? "" : ` (got ${shown(raw)})`;
    if (v.type === "int") {
      const n = /^[+-]?\d+$/.test(raw) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n)) throw new ConfigError(`${v.name}: expected an integer${got}`);
      out.set(v, n);
    } else if (v.type === "list") {
      const items = raw.split(",").map((s) => s.trim());
      if (items.some((s) => s === "")) {
        throw new ConfigError(`${v.name}: expected comma-separated model ids, one is empty${got}`);
      }
      out.set(v, items);
    } else {
      out.set(v, raw);
    }
  }
  const kind = [...out.keys()].find((v) => v.name === "USEPOD_BACKEND_KIND");
  const backendVar = [...out.keys()].find((v) => v.field.startsWith("backends[0]."));
  if (backendVar && !kind) {
    throw new ConfigError(
      `${backendVar.name}: set without USEPOD_BACKEND_KIND (the environment's backend replaces ` +
        "[[backends]] and needs a kind: vllm, llamacpp, lmstudio, ollama, openrouter or venice)",
    );
  }
  return out;
}

/** Sets `table.key` in `doc`, copying the table first (the file's own object is never changed). */
function put(doc: Table, field: string, value: unknown): void {
  const [t, key] = field.split(".") as [string, string];
  const current = own(doc, t);
  if (current !== undefined && !isTable(current)) return; // the file's own error is reported
  doc[t] = { ...(current ?? {}), [key]: value };
}

function present(doc: Table, field: string): boolean {
  if (field === "backends") return own(doc, "backends") !== undefined;
  const [t, key] = field.split(".") as [string, string];
  const table = own(doc, t);
  return isTable(table) && own(table, key) !== undefined;
}

const FLAG_FIELDS = {
  "observability.log_level": ["logLevel", "--log-level"],
  "observability.log_format": ["logFormat", "--log-format"],
} as const;

/**
 * The error for a value the environment set, naming the variable (and the key it stands for); a
 * required key that is missing gets the variable to set when no file was read.
 */
function blame(err: ConfigError, vars: Map<EnvVar, unknown>, envOnly: boolean): ConfigError {
  const m = /^(\S+): (.*)$/s.exec(err.message);
  if (!m) return err;
  const [, field = "", rest = ""] = m;
  const owner = [...vars.keys()].find((v) => field === v.field || field.startsWith(`${v.field}[`));
  if (owner) return new ConfigError(`${owner.name} (${field}): ${rest}`, { file: err.file });
  const unset = ENV_VARS.find((v) => v.field === field);
  const envBackend = [...vars.keys()].some((v) => v.field.startsWith("backends[0]."));
  const hint = envOnly || (envBackend && field.startsWith("backends[0]."));
  if (unset && hint && rest.startsWith("required")) {
    const where = envOnly ? "no agent.toml was read" : "the backend comes from the environment";
    return new ConfigError(`${err.message}; ${where}: set ${unset.name}`, { file: err.file });
  }
  return err;
}

/**
 * Loads the configuration a command runs with: the agent.toml of `--config`, else of
 * `USEPOD_CONFIG`, else of the lookup order, with the USEPOD_* variables and the log flags on top.
 * With no file found and at least one USEPOD_* variable set, the environment alone is used
 * (`config.path` is {@link ENV_ONLY}). `USEPOD_BACKEND_KIND` (with `_URL`, `_MODELS`,
 * `_API_KEY_ENV`) replaces the file's `[[backends]]` with that one backend. Empty variables count
 * as unset.
 *
 * @throws {ConfigError} naming the variable for a bad environment value, else as loadConfig.
 * @example
 * ```ts
 * const { config, sources } = await loadMergedConfig({ path: undefined, env: { USEPOD_LOG_LEVEL: "debug" } });
 * ```
 */
export async function loadMergedConfig(
  opts: MergeOptions = {},
): Promise<{ config: Config; sources: ConfigSource[] }> {
  const get = envReader(opts);
  const vars = readVars(get);
  const fromEnv = get(CONFIG_VAR)?.trim();
  const found = await findConfigFile(opts.path ?? (fromEnv || undefined), opts);
  if (found === undefined && vars.size === 0) throw noConfigFound(opts);
  const file = found ? parseToml(found.text, found.path) : {};
  const doc: Table = { ...file };
  const backend: Table = {};
  for (const [v, value] of vars) {
    if (v.field.startsWith("backends[0].")) backend[v.field.slice("backends[0].".length)] = value;
    else put(doc, v.field, value);
  }
  if (Object.keys(backend).length > 0) doc.backends = [backend];
  const flags = opts.flags ?? {};
  for (const [field, [flag]] of Object.entries(FLAG_FIELDS)) {
    if (flags[flag] !== undefined) put(doc, field, flags[flag]);
  }
  const path = found?.path ?? ENV_ONLY;
  let config: Config;
  try {
    config = configFromDoc(doc, path, opts);
  } catch (err) {
    throw err instanceof ConfigError ? blame(err, vars, found === undefined) : err;
  }
  return { config, sources: sourcesOf(config, file, vars, flags) };
}

function sourcesOf(
  config: Config,
  file: Table,
  vars: Map<EnvVar, unknown>,
  flags: NonNullable<MergeOptions["flags"]>,
): ConfigSource[] {
  const envOf = new Map([...vars.keys()].map((v) => [v.field, v.name]));
  const sourceOf = (field: string): string => {
    const flag = (FLAG_FIELDS as Record<string, readonly [keyof typeof flags, string]>)[field];
    if (flag && flags[flag[0]] !== undefined) return `flag ${flag[1]}`;
    const name = field === "backends" ? envOf.get("backends[0].kind") : envOf.get(field);
    if (name !== undefined) return `env ${name}`;
    return present(file, field) ? "file" : "default";
  };
  const secret = (v: string | undefined) => (v === undefined ? "(not set)" : "(set)");
  const { coordinator: c, identity: id, pricing: p, limits: l, observability: o } = config;
  const rows: [string, string][] = [
    ["coordinator.url", c.url],
    ["coordinator.enrollment_code", secret(c.enrollmentCode)],
    ["coordinator.ca_file", c.caFile ?? "(none)"],
    ["identity.key_path", id.keyPath],
    ["identity.state_dir", stateDirOf(id) + (id.stateDir ? "" : " (the identity key's directory)")],
    ...config.backends.map((b, i): [string, string] => [
      `backends[${i}]`,
      `${b.kind} ${b.url ?? "(hosted API)"}${b.models ? ` models ${b.models.join(",")}` : ""}`,
    ]),
    ["pricing.default_input_per_1m", String(p.defaultInputPer1m)],
    ["pricing.default_output_per_1m", String(p.defaultOutputPer1m)],
    ["pricing.models", `${Object.keys(p.models).length} model price(s)`],
    ["limits.max_concurrent", String(l.maxConcurrent)],
    ["limits.max_tokens_per_minute", String(l.maxTokensPerMinute ?? "none")],
    ["limits.drain_timeout_s", String(l.drainTimeoutS)],
    ["observability.prometheus_addr", o.prometheusAddr],
    ["observability.log_level", o.logLevel],
    ["observability.log_format", o.logFormat],
    ["observability.status_token", secret(o.statusToken)],
    ["alerts.webhook_url", secret(config.alerts.webhookUrl)],
    ["alerts.error_rate_threshold", String(config.alerts.errorRateThreshold)],
  ];
  return rows.map(([field, value]) => ({
    field,
    value,
    source: sourceOf(field.startsWith("backends[") ? "backends" : field),
  }));
}

/**
 * The lines `validate` prints under its `ok:` line: one per merged value, with its source.
 *
 * @example
 * ```ts
 * formatSources([{ field: "limits.max_concurrent", value: "8", source: "default" }]);
 * // ["  limits.max_concurrent  8  (default)"]
 * ```
 */
export function formatSources(sources: ConfigSource[]): string[] {
  const fw = Math.max(...sources.map((s) => s.field.length));
  const vw = Math.min(48, Math.max(...sources.map((s) => s.value.length)));
  return sources.map((s) => `  ${s.field.padEnd(fw)}  ${s.value.padEnd(vw)}  (${s.source})`);
}
