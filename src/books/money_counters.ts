// Earned and missed USDC since start by model label (missed also by reason), for the /metrics
// counters (issue 15): each job is counted once, under the label the stats counted it under
// (jobs/stats.ts modelLabel), so a series never moves from one label to another.

import { type Counted, MISS_REASONS, type MissReason } from "./earnings.ts";

/** Money of one model label since start, in micro-USDC. */
export interface LabelMoney {
  earnedMicroUsdc: number;
  missedMicroUsdc: Record<MissReason, number>;
}

/**
 * Money counters keyed by model label; as many keys as the stats have labels (bounded there).
 *
 * @example
 * ```ts
 * const money = new MoneyCounters();
 * money.add(stats.label(job.model), earnings.record(job, price));
 * money.byLabel.get("llama3.2:latest")?.earnedMicroUsdc;
 * ```
 */
export class MoneyCounters {
  readonly byLabel = new Map<string, LabelMoney>();

  /** Adds what earnings counted for one job (nothing for cancels and lost links). */
  add(label: string, counted: Counted | undefined): void {
    if (counted === undefined) return;
    let m = this.byLabel.get(label);
    if (!m) this.byLabel.set(label, m = zero());
    m.earnedMicroUsdc += counted.earnedMicroUsdc;
    if (counted.reason !== undefined) m.missedMicroUsdc[counted.reason] += counted.missedMicroUsdc;
  }
}

/** Zero money (every reason present, so each counter series starts at 0). */
export function zero(): LabelMoney {
  const missed = {} as Record<MissReason, number>;
  for (const r of MISS_REASONS) missed[r] = 0;
  return { earnedMicroUsdc: 0, missedMicroUsdc: missed };
}
