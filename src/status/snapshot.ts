// The /status document built from the agent's live state, field by field (never by spreading an
// object, so no secret can ride along); the source the status app reads it through; and the
// redaction of known secret values from every response.

import type { Agent } from "../agent.ts";
import type { Config } from "../config/config.ts";
import { priceOf } from "../backends/discovery.ts";
import type { ModelHistograms } from "../jobs/stats.ts";
import type { HistorySeries } from "../books/history.ts";
import type { MetricsFacts } from "./fleet_metrics.ts";
import { AGENT_NAME, AGENT_VERSION } from "../version.ts";
import type { ModelCountersDoc, StatusDoc } from "./doc.ts";
import { earningsDoc } from "./earnings_doc.ts";

export type {
  ActiveJobDoc,
  BackendDoc,
  FinishedJobDoc,
  ModelCountersDoc,
  ModelDoc,
  StatusDoc,
} from "./doc.ts";

/** What the status app reads; every call returns fresh values and changes nothing. */
export interface StatusSource {
  /** The /status document as of now. */
  status(): StatusDoc;
  /** Per-model histograms (time to first chunk, duration) for /metrics. */
  histograms(): ReadonlyMap<string, ModelHistograms>;
  /** Money by model label and failed writes, for /metrics (a test source may leave it out). */
  metricsFacts?(): MetricsFacts;
  /** Earnings per hour and tokens per second, for the page's charts (may be left out). */
  history?(): HistorySeries;
  /** Secret values (API keys, enrollment code, status token) to scrub from any output. */
  secrets(): string[];
}

const iso = (ms: number) => new Date(ms).toISOString();
const isoOrNull = (ms: number | undefined) => (ms === undefined ? null : iso(ms));

/**
 * A URL as shown to people: no user, password, query or fragment (any of which may hold a token).
 *
 * @example
 * ```ts
 * shownUrl("https://u:pw@example.com/v1?key=x"); // "https://example.com/v1"
 * ```
 */
export function shownUrl(raw: string): string {
  const u = URL.parse(raw);
  if (!u) return "<invalid url>";
  return `${u.protocol}//${u.host}${u.pathname === "/" && !raw.endsWith("/") ? "" : u.pathname}`;
}

/**
 * Micro-USDC earned by tokens at prices in micro-USDC per million tokens.
 *
 * @example
 * ```ts
 * earnedMicroUsdc(1_000_000, 2_000_000, 300_000, 450_000); // 1_200_000 (1.2 USDC)
 * ```
 */
export function earnedMicroUsdc(
  inputTokens: number,
  outputTokens: number,
  inputPer1m: number,
  outputPer1m: number,
): number {
  return (inputTokens * inputPer1m + outputTokens * outputPer1m) / 1e6;
}

/**
 * Micro-USDC as a USDC decimal string with 6 places.
 *
 * @example
 * ```ts
 * usdc(1_234_567.8); // "1.234568"
 * ```
 */
export function usdc(microUsdc: number): string {
  return (Math.round(microUsdc) / 1e6).toFixed(6);
}

/**
 * Secret values of a config: enrollment code, status token, alert webhook URL, the API keys its
 * backends name, and passwords written into URLs.
 *
 * @example
 * ```ts
 * const secrets = configSecrets(config, (name) => Deno.env.get(name));
 * ```
 */
export function configSecrets(
  config: Config,
  env: (name: string) => string | undefined,
): string[] {
  const out = [
    config.coordinator.enrollmentCode,
    config.observability.statusToken,
    config.alerts.webhookUrl,
  ];
  for (const u of [config.coordinator.url, ...config.backends.map((b) => b.url)]) {
    const parsed = u === undefined ? null : URL.parse(u);
    if (parsed?.password) out.push(parsed.password, decodeURIComponent(parsed.password));
  }
  for (const b of config.backends) if (b.apiKeyEnv) out.push(env(b.apiKeyEnv));
  return out.filter((s): s is string => s !== undefined && s.length >= 4);
}

/**
 * Replaces every occurrence of a secret in `text` with `[redacted]` (defence in depth: a backend's
 * error message may quote its key).
 *
 * @example
 * ```ts
 * redact('{"last_error":"bad key sk-123456"}', ["sk-123456"]); // '{"last_error":"bad key [redacted]"}'
 * ```
 */
export function redact(text: string, secrets: readonly string[]): string {
  for (const s of secrets) {
    if (text.includes(s)) text = text.replaceAll(s, "[redacted]");
    // The JSON-escaped form too, for secrets with quotes or backslashes.
    const escaped = JSON.stringify(s).slice(1, -1);
    if (escaped !== s && text.includes(escaped)) text = text.replaceAll(escaped, "[redacted]");
  }
  return text;
}

/**
 * The status source of a running agent: reads its session, discovery, executor, stats, config
 * and identity on every call.
 *
 * @example
 * ```ts
 * const app = createStatusApp(agentSource(agent), { hostname: "127.0.0.1", port: 9090 });
 * ```
 */
export function agentSource(
  agent: Agent,
  opts: { env?: (name: string) => string | undefined; now?: () => number; pid?: number } = {},
): StatusSource {
  const env = opts.env ?? ((n: string) => Deno.env.get(n));
  const now = opts.now ?? Date.now;
  const pid = opts.pid ?? Deno.pid;
  return {
    status: () => agentStatus(agent, now(), pid),
    histograms: () => agent.stats.histograms,
    metricsFacts: () => ({
      money: agent.money.byLabel,
      writeFailures: {
        receipts: agent.ledger.writeFailures,
        earnings: agent.earnings.writeFailures,
        history: agent.history.writeFailures,
      },
      receiptsLost: agent.ledger.lost,
    }),
    history: () => agent.history.series(now()),
    secrets: () => configSecrets(agent.config, env),
  };
}

function agentStatus(agent: Agent, now: number, pid: number): StatusDoc {
  const config = agent.config;
  const identity = agent.identity;
  const session = agent.session.status;
  const discovery = agent.discovery.current;
  const executor = agent.executor;
  const stats = agent.stats;
  const pausedAll = agent.pausedAll;
  const totals = stats.totals;
  const byModel: ModelCountersDoc[] = [...stats.byModel].sort(([a], [b]) => a < b ? -1 : 1).map(
    ([model, c]) => {
      const price = priceOf(config, model);
      return {
        "model": model,
        "jobs": { ...c.jobs },
        "input_tokens": c.inputTokens,
        "output_tokens": c.outputTokens,
        "billed_input_tokens": c.doneInputTokens,
        "billed_output_tokens": c.doneOutputTokens,
        "input_per_1m": price.inputPer1m,
        "output_per_1m": price.outputPer1m,
        "earned_micro_usdc": earnedMicroUsdc(
          c.doneInputTokens,
          c.doneOutputTokens,
          price.inputPer1m,
          price.outputPer1m,
        ),
      };
    },
  );
  const earned = byModel.reduce((n, m) => n + m["earned_micro_usdc"], 0);
  return {
    "agent": AGENT_NAME,
    "version": AGENT_VERSION,
    "pid": pid,
    "started_at": iso(agent.startedAt),
    "uptime_s": Math.round((now - agent.startedAt) / 100) / 10,
    "time": iso(now),
    "public_key": identity.publicKeyB64,
    "provider_id": identity.providerId ?? null,
    "coordinator": {
      "url": shownUrl(config.coordinator.url),
      "state": session.state,
      "state_since": iso(session.since),
      "next_retry_at": isoOrNull(session.nextRetryAt),
      "last_auth_at": isoOrNull(session.lastAuthAt),
      "reconnects": session.reconnects,
      "consecutive_failures": session.consecutiveFailures,
      "last_error": session.lastError ?? null,
    },
    "draining": executor.draining,
    "limits": {
      "max_concurrent": config.limits.maxConcurrent,
      "max_tokens_per_minute": config.limits.maxTokensPerMinute,
      "in_flight": executor.inFlight,
    },
    "backends": discovery.backends.map((b) => ({
      "index": b.index,
      "kind": b.kind,
      "url": shownUrl(b.url),
      "health": b.state,
      "latency_ms": b.latencyMs ?? null,
      "last_error": b.lastError ?? null,
      "models": [...b.models],
      "checked_at": b.checkedAt > 0 ? iso(b.checkedAt) : null,
      "slots_in_use": executor.inFlightOn(b.index),
      "slots": b.slots ?? null,
      "queue_waiting": agent.queues.waiting(b.index) ?? null,
    })),
    "models": discovery.models.map((m) => ({
      "model_id": m.modelId,
      "backend": m.backend,
      "input_per_1m": m.inputPer1m,
      "output_per_1m": m.outputPer1m,
      "max_concurrent": m.maxConcurrent,
      "slots_in_use": executor.inFlightFor(m.modelId),
      "context_window": m.contextWindow ?? null,
      "formats": [...m.formats],
      "paused": pausedAll || agent.paused.has(m.modelId),
    })),
    "jobs_in_flight": executor.active().map((j) => ({
      "job_id": j.jobId,
      "model": j.model,
      "backend": j.backend,
      "format": j.format,
      "received_at": iso(j.receivedAt),
      "age_ms": Math.max(0, now - j.receivedAt),
      "bytes": j.bytes,
      "output_tokens": j.outputTokens,
      "first_chunk_ms": j.firstChunkMs ?? null,
    })),
    "recent_jobs": [...stats.recent()].reverse().map((j) => ({
      "job_id": j.jobId,
      "model": j.model,
      "backend": j.backend ?? null,
      "outcome": j.outcome,
      "message": j.message ?? null,
      "input_tokens": j.inputTokens,
      "output_tokens": j.outputTokens,
      "duration_ms": j.durationMs,
      "first_chunk_ms": j.firstChunkMs ?? null,
      "bytes": j.bytes,
      "finished_at": iso(j.finishedAt),
    })),
    "counters": {
      "jobs": totals.jobs,
      "job_done": totals.done,
      "errors": totals.errors,
      "refused": totals.refused,
      "cancelled": totals.cancelled,
      "input_tokens": totals.inputTokens,
      "output_tokens": totals.outputTokens,
      "earned_micro_usdc": earned,
      "earned_usdc": usdc(earned),
      "by_model": byModel,
    },
    "earnings": earningsDoc(agent.earnings.summary(now)),
  };
}
