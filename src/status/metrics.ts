// GET /metrics: the Prometheus text exposition format (0.0.4) written from a status snapshot
// and the per-model histograms of stats.ts: jobs by model and outcome, tokens, jobs in flight,
// connection state, reconnects, backend up/down and latency, time to first chunk and duration;
// then the fleet families of fleet_metrics.ts (money, build info, times, slots, failed writes).

import type { Histogram, ModelHistograms } from "../jobs/stats.ts";
import type { StatusDoc } from "./doc.ts";
import { fleetMetrics, type MetricsFacts } from "./fleet_metrics.ts";

/** Content-Type of the text exposition format. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const CONNECTION_STATES = ["connecting", "authenticated", "backoff", "draining", "stopped"];

type Labels = Record<string, string>;

/** Escapes a label value: backslash, double quote and line feed. */
function labelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labels(l: Labels): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${labelValue(v)}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function num(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** Collects one family at a time: `# HELP`, `# TYPE`, then its samples. */
class Exposition {
  #lines: string[] = [];

  family(name: string, type: "counter" | "gauge" | "histogram", help: string): this {
    this.#lines.push(`# HELP ${name} ${help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`);
    this.#lines.push(`# TYPE ${name} ${type}`);
    return this;
  }

  sample(name: string, l: Labels, value: number): this {
    this.#lines.push(`${name}${labels(l)} ${num(value)}`);
    return this;
  }

  histogram(name: string, l: Labels, h: Histogram): this {
    let cumulative = 0;
    h.bounds.forEach((bound, i) => {
      cumulative += h.counts[i] ?? 0;
      this.sample(`${name}_bucket`, { ...l, le: num(bound) }, cumulative);
    });
    this.sample(`${name}_bucket`, { ...l, le: "+Inf" }, h.count);
    this.sample(`${name}_sum`, l, h.sum);
    return this.sample(`${name}_count`, l, h.count);
  }

  text(): string {
    return this.#lines.join("\n") + "\n";
  }
}

/**
 * Renders the metrics of one snapshot in the Prometheus text format.
 *
 * @example
 * ```ts
 * const text = renderMetrics(source.status(), source.histograms());
 * return new Response(text, { headers: { "content-type": METRICS_CONTENT_TYPE } });
 * ```
 */
export function renderMetrics(
  doc: StatusDoc,
  histograms: ReadonlyMap<string, ModelHistograms>,
  facts?: MetricsFacts,
): string {
  const e = new Exposition();
  const p = "usepod_agent";
  e.family(`${p}_info`, "gauge", "Agent version (always 1).")
    .sample(`${p}_info`, { version: doc.version, agent: doc.agent }, 1);
  e.family(`${p}_start_time_seconds`, "gauge", "Start time of the agent, seconds since the epoch.")
    .sample(`${p}_start_time_seconds`, {}, Date.parse(doc.started_at) / 1000);

  e.family(`${p}_connection_state`, "gauge", "Coordinator connection state (1 for the current).");
  for (const state of CONNECTION_STATES) {
    e.sample(`${p}_connection_state`, { state }, doc.coordinator.state === state ? 1 : 0);
  }
  e.family(`${p}_reconnects_total`, "counter", "Reconnects to the coordinator since start.")
    .sample(`${p}_reconnects_total`, {}, doc.coordinator.reconnects);

  const models = doc.counters.by_model;
  e.family(`${p}_jobs_total`, "counter", "Jobs ended or refused, by model and outcome.");
  for (const m of models) {
    for (const [outcome, n] of Object.entries(m.jobs).sort()) {
      e.sample(`${p}_jobs_total`, { model: m.model, outcome }, n);
    }
  }
  e.family(`${p}_input_tokens_total`, "counter", "Input tokens of finished jobs, by model.");
  for (const m of models) e.sample(`${p}_input_tokens_total`, { model: m.model }, m.input_tokens);
  e.family(`${p}_output_tokens_total`, "counter", "Output tokens of finished jobs, by model.");
  for (const m of models) e.sample(`${p}_output_tokens_total`, { model: m.model }, m.output_tokens);

  e.family(`${p}_jobs_in_flight`, "gauge", "Jobs in flight.")
    .sample(`${p}_jobs_in_flight`, {}, doc.limits.in_flight);
  e.family(`${p}_max_concurrent`, "gauge", "Configured limits.max_concurrent.")
    .sample(`${p}_max_concurrent`, {}, doc.limits.max_concurrent);
  e.family(`${p}_model_slots_in_use`, "gauge", "Jobs in flight per advertised model.");
  for (const m of doc.models) {
    e.sample(`${p}_model_slots_in_use`, { model: m.model_id }, m.slots_in_use);
  }

  e.family(`${p}_backend_up`, "gauge", "Backend health at the last probe (1 up, 0 otherwise).");
  for (const b of doc.backends) {
    e.sample(`${p}_backend_up`, backendLabels(b), b.health === "up" ? 1 : 0);
  }
  e.family(`${p}_backend_latency_seconds`, "gauge", "Latency of the last backend probe.");
  for (const b of doc.backends) {
    if (b.latency_ms !== null) {
      e.sample(`${p}_backend_latency_seconds`, backendLabels(b), b.latency_ms / 1000);
    }
  }

  const sorted = [...histograms].sort(([a], [b]) => (a < b ? -1 : 1));
  e.family(
    `${p}_time_to_first_chunk_seconds`,
    "histogram",
    "Time from job receipt to the first chunk sent, by model.",
  );
  for (const [model, h] of sorted) {
    e.histogram(`${p}_time_to_first_chunk_seconds`, { model }, h.firstChunk);
  }
  e.family(
    `${p}_job_duration_seconds`,
    "histogram",
    "Time from job receipt to the end of its stream, by model.",
  );
  for (const [model, h] of sorted) e.histogram(`${p}_job_duration_seconds`, { model }, h.duration);
  fleetMetrics(e, doc, facts);
  return e.text();
}

function backendLabels(b: StatusDoc["backends"][number]): Labels {
  return { backend: String(b.index), kind: b.kind, url: b.url };
}
