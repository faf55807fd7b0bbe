// agent.toml written back for `setup`: renderConfig turns a Config into TOML text (snake_case
// keys as in PROTOCOL §9) that parseConfig reads back to the same Config.

import { type Config, DEFAULTS } from "./config.ts";
import { tomlKey, tomlString } from "./fields.ts";

function tomlInt(n: number): string {
  const s = String(Math.abs(n));
  return (n < 0 ? "-" : "") + (s.length > 4 ? s.replace(/\B(?=(\d{3})+(?!\d))/g, "_") : s);
}

/**
 * Renders a complete agent.toml (snake_case keys as in PROTOCOL §9) that parses back to `c`.
 * Extension keys are written only when they differ from their defaults, so the file stays
 * readable by the Rust agent whenever possible.
 *
 * @example
 * ```ts
 * await Deno.writeTextFile(defaultConfigPath(), renderConfig(cfg), { mode: 0o600 });
 * ```
 */
export function renderConfig(c: Config): string {
  const out: string[] = ["# usepod-agent configuration (agent.toml)", ""];
  const kv = (k: string, v: string | number | undefined, float = false) => {
    if (v === undefined) return;
    const value = typeof v === "string" ? tomlString(v) : float ? String(v) : tomlInt(v);
    out.push(`${tomlKey(k)} = ${value}`);
  };
  const { operator: op, coordinator: co, pricing, limits, observability: ob, alerts } = c;
  if (op.displayName !== undefined || op.wallet !== undefined || op.contactEmail !== undefined) {
    out.push("[operator]");
    kv("display_name", op.displayName);
    kv("wallet", op.wallet);
    kv("contact_email", op.contactEmail);
    out.push("");
  }
  out.push("[coordinator]");
  kv("url", co.url);
  kv("enrollment_code", co.enrollmentCode);
  kv("ca_file", co.caFile);
  out.push("", "[identity]");
  kv("key_path", c.identity.keyPath);
  out.push("");
  for (const b of c.backends) {
    out.push("[[backends]]");
    kv("kind", b.kind);
    kv("url", b.url);
    kv("api_key_env", b.apiKeyEnv);
    if (b.models !== undefined) out.push(`models = [${b.models.map(tomlString).join(", ")}]`);
    kv("markup", b.markup, true);
    out.push("");
  }
  out.push("[pricing]  # micro-USDC per million tokens");
  kv("default_input_per_1m", pricing.defaultInputPer1m);
  kv("default_output_per_1m", pricing.defaultOutputPer1m);
  const models = Object.entries(pricing.models);
  if (models.length > 0) out.push("", "[pricing.models]");
  for (const [id, p] of models) {
    out.push(
      `${tomlKey(id)} = { input_per_1m = ${tomlInt(p.inputPer1m)}, output_per_1m = ${
        tomlInt(p.outputPer1m)
      } }`,
    );
  }
  out.push("", "[limits]");
  kv("max_concurrent", limits.maxConcurrent);
  kv("max_tokens_per_minute", limits.maxTokensPerMinute ?? undefined);
  if (limits.drainTimeoutS !== DEFAULTS.drainTimeoutS) kv("drain_timeout_s", limits.drainTimeoutS);
  out.push("", "[observability]");
  kv("prometheus_addr", ob.prometheusAddr);
  kv("log_level", ob.logLevel);
  if (ob.logFormat !== DEFAULTS.logFormat) kv("log_format", ob.logFormat);
  kv("status_token", ob.statusToken);
  if (
    alerts.webhookUrl !== undefined || alerts.errorRateThreshold !== DEFAULTS.errorRateThreshold
  ) {
    out.push("", "[alerts]");
    kv("webhook_url", alerts.webhookUrl);
    kv("error_rate_threshold", alerts.errorRateThreshold, true);
  }
  return out.join("\n") + "\n";
}
