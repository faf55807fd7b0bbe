// agent.toml: loading, parsing and validation into a typed Config (PROTOCOL §9, plus the extensions
// coordinator.ca_file, identity.state_dir, limits.drain_timeout_s, observability.log_format /
// status_token and the [alerts] table). Lookup paths are in paths.ts, finding the file in find.ts,
// the environment's values in env.ts, rendering for `setup` in render.ts, field readers in fields.ts.

import { parse, TomlError } from "smol-toml";
import {
  compact,
  ConfigError,
  describe,
  fail,
  httpUrl,
  int,
  isTable,
  num,
  own,
  shown,
  splitHostPort,
  str,
  type Table,
  table,
  tomlKey,
} from "./fields.ts";
import { expandHome, homeOf, type PathOptions } from "./paths.ts";
import { findConfigFile, noConfigFound } from "./find.ts";

export { ConfigError } from "./fields.ts";
import { isLevel, type Level, log, type LogFormat } from "../log.ts";

/** Backend kinds of PROTOCOL §9. */
export type BackendKind = "vllm" | "llamacpp" | "lmstudio" | "ollama" | "openrouter" | "venice";
/** Kinds that run on the operator's machine and need a `url`. */
export const LOCAL_KINDS: readonly BackendKind[] = ["vllm", "llamacpp", "lmstudio", "ollama"];
/** Hosted kinds that need `api_key_env` (their `url` optionally overrides the API base). */
export const REMOTE_KINDS: readonly BackendKind[] = ["openrouter", "venice"];
const KINDS: readonly string[] = [...LOCAL_KINDS, ...REMOTE_KINDS];

/** One `[[backends]]` entry. `url` is stored without trailing slashes. */
export interface BackendConfig {
  kind: BackendKind;
  url?: string;
  apiKeyEnv?: string;
  models?: string[];
  markup?: number;
}

/** A per-model price in micro-USDC per million tokens. */
export interface ModelPrice {
  inputPer1m: number;
  outputPer1m: number;
}

/** A validated agent.toml. `pricing.models` has no prototype, so any model id is a safe key. */
export interface Config {
  path: string;
  operator: { displayName?: string; wallet?: string; contactEmail?: string };
  coordinator: { url: string; enrollmentCode?: string; caFile?: string };
  /** `stateDir` (identity.state_dir / USEPOD_STATE_DIR): where receipts, pause and pid live. */
  identity: { keyPath: string; stateDir?: string };
  backends: BackendConfig[];
  pricing: {
    defaultInputPer1m: number;
    defaultOutputPer1m: number;
    models: Record<string, ModelPrice>;
  };
  limits: { maxConcurrent: number; maxTokensPerMinute: number | null; drainTimeoutS: number };
  observability: {
    prometheusAddr: string;
    logLevel: Level;
    logFormat: LogFormat;
    statusToken?: string;
  };
  alerts: { webhookUrl?: string; errorRateThreshold: number };
}

/** Inputs from the outside world; tests pass fakes. */
export interface ConfigOptions extends PathOptions {
  /** Accept a `ws://` coordinator URL (the `--allow-insecure` flag). */
  allowInsecure?: boolean;
}

const DEFAULT_KEY_PATH = "~/.usepod-agent/identity.key";
/** Values of the optional settings when absent (renderConfig leaves these extension keys out). */
export const DEFAULTS = {
  maxConcurrent: 8,
  drainTimeoutS: 30,
  prometheusAddr: "127.0.0.1:9090",
  logFormat: "text",
  errorRateThreshold: 0.5,
} as const;
const BACKEND_KEYS = ["kind", "url", "api_key_env", "models", "markup"];
const PRICE_KEYS = ["input_per_1m", "output_per_1m"];
const TABLE_KEYS: Record<string, readonly string[]> = {
  operator: ["display_name", "wallet", "contact_email"],
  coordinator: ["url", "enrollment_code", "ca_file"],
  identity: ["key_path", "state_dir"],
  pricing: ["default_input_per_1m", "default_output_per_1m", "models"],
  limits: ["max_concurrent", "max_tokens_per_minute", "drain_timeout_s"],
  observability: ["prometheus_addr", "log_level", "log_format", "status_token"],
  alerts: ["webhook_url", "error_rate_threshold"],
};
const EXAMPLE_PORT: Record<string, number> = {
  vllm: 8000,
  llamacpp: 8080,
  lmstudio: 1234,
  ollama: 11434,
};

function expandField(p: string, field: string, home: string | undefined): string {
  if (p !== "~" && !/^~[\\/]/.test(p)) return p;
  if (home === undefined) {
    fail(field, "starts with ~ but the home directory is unknown (HOME is not set)");
  }
  return expandHome(p, home);
}

/** Unknown keys outside `[[backends]]`, reported (not refused) so newer files stay loadable. */
function unknownKeys(doc: Table): string[] {
  const out: string[] = [];
  for (const [name, value] of Object.entries(doc)) {
    if (name === "backends") continue;
    const allowed = Object.hasOwn(TABLE_KEYS, name) ? TABLE_KEYS[name] : undefined;
    if (!allowed) {
      out.push(tomlKey(name));
      continue;
    }
    if (!isTable(value)) continue;
    for (const k of Object.keys(value)) {
      if (!allowed.includes(k)) out.push(`${name}.${tomlKey(k)}`);
    }
    const models = own(value, "models");
    if (name !== "pricing" || !isTable(models)) continue;
    for (const [id, price] of Object.entries(models)) {
      if (!isTable(price)) continue;
      for (const k of Object.keys(price)) {
        if (!PRICE_KEYS.includes(k)) out.push(`pricing.models.${tomlKey(id)}.${tomlKey(k)}`);
      }
    }
  }
  return out;
}

function readCoordinator(doc: Table, opts: ConfigOptions, home: string | undefined) {
  const t = table(doc, "coordinator", "coordinator");
  const url = str(t, "url", "coordinator.url");
  if (url === undefined) {
    fail("coordinator.url", 'required (e.g. "wss://api.usepod.ai/provider/connect")');
  }
  const u = URL.parse(url);
  if (!u) fail("coordinator.url", `not a valid URL (${shown(url)})`);
  if (u.protocol === "ws:" && !opts.allowInsecure) {
    fail("coordinator.url", "ws:// is unencrypted; use wss:// or pass --allow-insecure");
  }
  if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    fail("coordinator.url", `scheme must be wss:// (got ${shown(u.protocol.slice(0, -1))})`);
  }
  const caFile = str(t, "ca_file", "coordinator.ca_file", true);
  return {
    url,
    ...compact({
      enrollmentCode: str(t, "enrollment_code", "coordinator.enrollment_code", true),
      caFile: caFile === undefined ? undefined : expandField(caFile, "coordinator.ca_file", home),
    }),
  };
}

function readBackend(raw: unknown, at: string): BackendConfig {
  if (!isTable(raw)) fail(at, `expected a table ([[backends]]), got ${describe(raw)}`);
  for (const k of Object.keys(raw)) {
    if (!BACKEND_KEYS.includes(k)) {
      fail(`${at}.${tomlKey(k)}`, `unknown key (allowed: ${BACKEND_KEYS.join(", ")})`);
    }
  }
  const kind = str(raw, "kind", `${at}.kind`);
  if (kind === undefined) fail(`${at}.kind`, `required (one of ${KINDS.join(", ")})`);
  if (!KINDS.includes(kind)) {
    fail(`${at}.kind`, `unknown kind ${shown(kind)} (expected one of ${KINDS.join(", ")})`);
  }
  const local = LOCAL_KINDS.includes(kind as BackendKind);
  let url = str(raw, "url", `${at}.url`);
  if (url === undefined && local) {
    fail(`${at}.url`, `required for ${kind} (e.g. "http://localhost:${EXAMPLE_PORT[kind]}")`);
  }
  if (url !== undefined) {
    if (!httpUrl(url)) {
      fail(`${at}.url`, `not a valid URL (${shown(url)}): expected http:// or https://`);
    }
    url = url.replace(/\/+$/, "");
  }
  const apiKeyEnv = str(raw, "api_key_env", `${at}.api_key_env`);
  if (apiKeyEnv === undefined && !local) {
    fail(
      `${at}.api_key_env`,
      `required for ${kind}: the NAME of the environment variable holding the API key`,
    );
  }
  if (apiKeyEnv !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(apiKeyEnv)) {
    // Never echo the value: a pasted API key is the usual mistake here.
    fail(
      `${at}.api_key_env`,
      "must be the NAME of an environment variable (letters, digits, _), not the key itself",
    );
  }
  const rawModels = own(raw, "models");
  let models: string[] | undefined;
  if (rawModels !== undefined) {
    if (!Array.isArray(rawModels)) {
      fail(`${at}.models`, `expected an array of strings, got ${describe(rawModels)}`);
    }
    models = rawModels.map((m, j) => {
      if (typeof m !== "string") {
        fail(`${at}.models[${j}]`, `expected a string, got ${describe(m)}`);
      }
      if (m.trim() === "") fail(`${at}.models[${j}]`, "must be a non-empty model id");
      return m;
    });
  }
  const markup = num(raw, "markup", `${at}.markup`);
  if (markup !== undefined && markup < 0) fail(`${at}.markup`, `must be >= 0, got ${markup}`);
  return { kind: kind as BackendKind, ...compact({ url, apiKeyEnv, models, markup }) };
}

function readBackends(doc: Table): BackendConfig[] {
  const raw = own(doc, "backends");
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    fail("backends", `expected an array of tables ([[backends]]), got ${describe(raw)}`);
  }
  const backends = raw.map((b, i) => readBackend(b, `backends[${i}]`));
  const seen = new Map<string, number>();
  backends.forEach((b, i) => {
    const local = LOCAL_KINDS.includes(b.kind);
    const id = local
      ? `${b.kind} url ${new URL(b.url ?? "").href.replace(/\/+$/, "")}`
      : `${b.kind} env ${b.apiKeyEnv}`;
    const first = seen.get(id);
    if (first !== undefined) {
      fail(
        `backends[${i}]`,
        `duplicate of backends[${first}] (same kind and ${local ? "url" : "api_key_env"})`,
      );
    }
    seen.set(id, i);
  });
  return backends;
}

function readPricing(doc: Table): Config["pricing"] {
  const t = table(doc, "pricing", "pricing");
  const defaults = (["default_input_per_1m", "default_output_per_1m"] as const).map((key) => {
    const field = `pricing.${key}`;
    const v = int(t, key, field);
    if (v === undefined) fail(field, "required (micro-USDC per million tokens, e.g. 500_000)");
    if (v <= 0) fail(field, `must be > 0, got ${v}`);
    return v;
  });
  const models: Record<string, ModelPrice> = Object.create(null);
  for (const [id, raw] of Object.entries(table(t, "models", "pricing.models"))) {
    const at = `pricing.models.${tomlKey(id)}`;
    if (id.trim() === "") fail(at, "model id must not be empty");
    if (!isTable(raw)) {
      fail(
        at,
        `expected a table like { input_per_1m = 300_000, output_per_1m = 450_000 }, got ${
          describe(raw)
        }`,
      );
    }
    const [inputPer1m, outputPer1m] = PRICE_KEYS.map((key) => {
      const v = int(raw, key, `${at}.${key}`);
      if (v === undefined) {
        fail(`${at}.${key}`, "required (micro-USDC per million tokens; 0 = not advertised)");
      }
      if (v < 0) fail(`${at}.${key}`, `must be >= 0, got ${v}`);
      return v;
    }) as [number, number];
    models[id] = { inputPer1m, outputPer1m };
  }
  return { defaultInputPer1m: defaults[0] ?? 0, defaultOutputPer1m: defaults[1] ?? 0, models };
}

function readLimits(doc: Table): Config["limits"] {
  const t = table(doc, "limits", "limits");
  const maxConcurrent = int(t, "max_concurrent", "limits.max_concurrent") ?? DEFAULTS.maxConcurrent;
  if (maxConcurrent < 1 || maxConcurrent > 256) {
    fail("limits.max_concurrent", `must be between 1 and 256, got ${maxConcurrent}`);
  }
  const tpm = int(t, "max_tokens_per_minute", "limits.max_tokens_per_minute");
  if (tpm !== undefined && tpm <= 0) {
    fail("limits.max_tokens_per_minute", `must be > 0, got ${tpm} (remove the line for no limit)`);
  }
  const drainTimeoutS = int(t, "drain_timeout_s", "limits.drain_timeout_s") ??
    DEFAULTS.drainTimeoutS;
  if (drainTimeoutS < 0) fail("limits.drain_timeout_s", `must be >= 0, got ${drainTimeoutS}`);
  return { maxConcurrent, maxTokensPerMinute: tpm ?? null, drainTimeoutS };
}

function readObservability(doc: Table): Config["observability"] {
  const t = table(doc, "observability", "observability");
  const addr = str(t, "prometheus_addr", "observability.prometheus_addr") ??
    DEFAULTS.prometheusAddr;
  if (!splitHostPort(addr)) {
    fail(
      "observability.prometheus_addr",
      `must be "host:port" with a port in 0..65535, e.g. "127.0.0.1:9090" or "[::1]:9090" (got ${
        shown(addr)
      })`,
    );
  }
  const level = str(t, "log_level", "observability.log_level") ?? "info";
  if (!isLevel(level)) {
    fail(
      "observability.log_level",
      `must be one of debug, info, warn, error (got ${shown(level)})`,
    );
  }
  const format = str(t, "log_format", "observability.log_format") ?? DEFAULTS.logFormat;
  if (format !== "text" && format !== "json") {
    fail("observability.log_format", `must be "text" or "json" (got ${shown(format)})`);
  }
  const statusToken = str(t, "status_token", "observability.status_token", true);
  return { prometheusAddr: addr, logLevel: level, logFormat: format, ...compact({ statusToken }) };
}

function readAlerts(doc: Table): Config["alerts"] {
  const t = table(doc, "alerts", "alerts");
  const webhookUrl = str(t, "webhook_url", "alerts.webhook_url");
  // Webhook URLs often embed a token: never quote them.
  if (webhookUrl !== undefined && !httpUrl(webhookUrl)) {
    fail("alerts.webhook_url", "not a valid URL: expected http:// or https://");
  }
  const threshold = num(t, "error_rate_threshold", "alerts.error_rate_threshold") ??
    DEFAULTS.errorRateThreshold;
  if (!(threshold > 0 && threshold <= 1)) {
    fail("alerts.error_rate_threshold", `must be in (0, 1], got ${threshold}`);
  }
  return { ...compact({ webhookUrl }), errorRateThreshold: threshold };
}

/** Parses agent.toml text into its TOML document; syntax errors name the line only. */
export function parseToml(text: string, path: string): Table {
  try {
    return parse(text);
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    // Only the first line of smol-toml's message: the code excerpt after it may hold a secret.
    const reason = (err.message.split("\n")[0] ?? "").replace(/^Invalid TOML document: /, "");
    throw new ConfigError(`agent.toml line ${err.line}: ${reason}`, { file: path });
  }
}

/**
 * Parses and validates agent.toml text (PROTOCOL §9). Unknown keys outside `[[backends]]`
 * are accepted with one warning naming them.
 *
 * @throws {ConfigError} naming the offending field, or `agent.toml line N:` for TOML syntax.
 * @example
 * ```ts
 * const cfg = parseConfig(await Deno.readTextFile("agent.toml"), "agent.toml");
 * ```
 */
export function parseConfig(text: string, path: string, opts: ConfigOptions = {}): Config {
  return configFromDoc(parseToml(text, path), path, opts);
}

/**
 * Validates a parsed agent.toml document (a file's, or one the environment added to).
 *
 * @throws {ConfigError} naming the offending field.
 * @example
 * ```ts
 * const cfg = configFromDoc(parseToml(text, "agent.toml"), "agent.toml");
 * ```
 */
export function configFromDoc(doc: Table, path: string, opts: ConfigOptions = {}): Config {
  try {
    const unknown = unknownKeys(doc);
    if (unknown.length > 0) {
      log.warn("agent.toml: unknown keys ignored", { path, keys: unknown.join(", ") });
    }
    const home = homeOf(opts);
    const op = table(doc, "operator", "operator");
    const id = table(doc, "identity", "identity");
    const keyPath = str(id, "key_path", "identity.key_path", true) ?? DEFAULT_KEY_PATH;
    const stateDir = str(id, "state_dir", "identity.state_dir", true);
    return {
      path,
      operator: compact({
        displayName: str(op, "display_name", "operator.display_name"),
        wallet: str(op, "wallet", "operator.wallet"),
        contactEmail: str(op, "contact_email", "operator.contact_email"),
      }),
      coordinator: readCoordinator(doc, opts, home),
      identity: {
        keyPath: expandField(keyPath, "identity.key_path", home),
        ...(stateDir === undefined ? {} : {
          stateDir: expandField(stateDir, "identity.state_dir", home).replace(/(.)\/+$/, "$1"),
        }),
      },
      backends: readBackends(doc),
      pricing: readPricing(doc),
      limits: readLimits(doc),
      observability: readObservability(doc),
      alerts: readAlerts(doc),
    };
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(err.message, { file: path });
    throw err;
  }
}

/**
 * Reads and validates agent.toml from `path`, or from the first existing file of
 * the lookup order (paths.ts) when `path` is undefined.
 *
 * @throws {ConfigError} when no file is found (naming every path tried), unreadable, or invalid.
 * @example
 * ```ts
 * const cfg = await loadConfig(undefined, { allowInsecure: false });
 * ```
 */
export async function loadConfig(
  path: string | undefined,
  opts: ConfigOptions = {},
): Promise<Config> {
  const found = await findConfigFile(path, opts);
  if (found === undefined) throw noConfigFound(opts);
  return parseConfig(found.text, found.path, opts);
}
