// The /metrics families a fleet view needs (issue 15), written after the families of metrics.ts:
// build info, auth, connection and last-job times, slots per backend, earned and missed USDC
// (counters by model label, missed also by reason) and failed writes of the agent's own files.

import type { LabelMoney } from "../books/money_counters.ts";
import { zero } from "../books/money_counters.ts";
import type { StatusDoc } from "./doc.ts";

/** What only /metrics shows, read from the running agent (test sources may leave it out). */
export interface MetricsFacts {
  /** Money since start by model label (the labels of the stats). */
  money: ReadonlyMap<string, LabelMoney>;
  /** Failed write attempts since start, by file. */
  writeFailures: { receipts: number; earnings: number; history: number };
  /** Receipts never written (queue full or a failed write) since start. */
  receiptsLost: number;
}

/** The part of metrics.ts's exposition writer this file uses. */
export interface FamilyWriter {
  family(name: string, type: "counter" | "gauge", help: string): FamilyWriter;
  sample(name: string, labels: Record<string, string>, value: number): FamilyWriter;
}

const P = "usepod_agent";
const seconds = (iso: string) => Date.parse(iso) / 1000;

/**
 * Writes the fleet families of one snapshot.
 *
 * @example
 * ```ts
 * fleetMetrics(exposition, source.status(), source.metricsFacts?.());
 * ```
 */
export function fleetMetrics(e: FamilyWriter, doc: StatusDoc, facts?: MetricsFacts): void {
  e.family(`${P}_build_info`, "gauge", "Build of the agent: version, Deno version and target (1).")
    .sample(`${P}_build_info`, {
      version: doc.version,
      deno: Deno.version.deno,
      target: Deno.build.target,
    }, 1);

  const c = doc.coordinator;
  e.family(
    `${P}_connection_state_change_time_seconds`,
    "gauge",
    "When the coordinator connection entered its current state, seconds since the epoch.",
  ).sample(`${P}_connection_state_change_time_seconds`, {}, seconds(c.state_since));
  e.family(
    `${P}_last_auth_time_seconds`,
    "gauge",
    "Last successful authentication with the coordinator, seconds since the epoch (absent: never).",
  );
  if (c.last_auth_at !== null) e.sample(`${P}_last_auth_time_seconds`, {}, seconds(c.last_auth_at));
  e.family(
    `${P}_connection_failures`,
    "gauge",
    "Consecutive failed connection attempts (0 once authenticated).",
  ).sample(`${P}_connection_failures`, {}, c.consecutive_failures);
  const last = doc.recent_jobs[0]?.finished_at;
  e.family(
    `${P}_last_job_time_seconds`,
    "gauge",
    "When the last job ended or was refused, seconds since the epoch (absent: no job yet).",
  );
  if (last !== undefined) e.sample(`${P}_last_job_time_seconds`, {}, seconds(last));

  const backend = (b: StatusDoc["backends"][number]) => ({
    backend: String(b.index),
    kind: b.kind,
    url: b.url,
  });
  e.family(`${P}_backend_slots_in_use`, "gauge", "Jobs in flight on each backend.");
  for (const b of doc.backends) e.sample(`${P}_backend_slots_in_use`, backend(b), b.slots_in_use);
  e.family(
    `${P}_backend_slots`,
    "gauge",
    "Requests a backend runs at once, when it reports it (llama.cpp total_slots).",
  );
  for (const b of doc.backends) {
    if (b.slots !== null) e.sample(`${P}_backend_slots`, backend(b), b.slots);
  }
  e.family(`${P}_backend_queue_waiting`, "gauge", "Requests waiting in a backend's queue (vLLM).");
  for (const b of doc.backends) {
    if (b.queue_waiting !== null) {
      e.sample(`${P}_backend_queue_waiting`, backend(b), b.queue_waiting);
    }
  }

  if (!facts) return;
  // Every advertised model has its series from the start, at 0.
  const money = new Map(facts.money);
  for (const m of doc.models) if (!money.has(m.model_id)) money.set(m.model_id, zero());
  const models = [...money].sort(([a], [b]) => (a < b ? -1 : 1));
  e.family(
    `${P}_earned_usdc_total`,
    "counter",
    "USDC earned by job_done jobs at the advertised prices since start, by model.",
  );
  for (const [model, m] of models) {
    e.sample(`${P}_earned_usdc_total`, { model }, m.earnedMicroUsdc / 1e6);
  }
  e.family(
    `${P}_missed_usdc_total`,
    "counter",
    "USDC that refused or failed jobs would have brought since start, by model and reason.",
  );
  for (const [model, m] of models) {
    for (const [reason, micro] of Object.entries(m.missedMicroUsdc)) {
      e.sample(`${P}_missed_usdc_total`, { model, reason }, micro / 1e6);
    }
  }
  e.family(
    `${P}_write_failures_total`,
    "counter",
    "Failed writes of the agent's files since start: receipts, earnings, history.",
  );
  for (const [file, n] of Object.entries(facts.writeFailures)) {
    e.sample(`${P}_write_failures_total`, { file }, n);
  }
  e.family(
    `${P}_receipts_lost_total`,
    "counter",
    "Receipts never written to the ledger (queue full or a failed write) since start.",
  ).sample(`${P}_receipts_lost_total`, {}, facts.receiptsLost);
}
