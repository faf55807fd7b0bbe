// The `earnings` part of the /status document (issue 8, "Money, visible"): the earnings summary
// in snake_case, built field by field, for the status page and `usepod-agent status`.

import { type EarningsSummary, MISS_REASONS, type Totals } from "../books/earnings.ts";

/** One period: jobs, tokens, earned and missed revenue (micro-USDC, and USDC strings). */
export interface PeriodDoc {
  "jobs": number;
  "input_tokens": number;
  "output_tokens": number;
  "earned_micro_usdc": number;
  "earned_usdc": string;
  "missed_jobs": number;
  "missed_micro_usdc": number;
  "missed_usdc": string;
  "top_missed_reason": string | null;
  "missed_by_reason": Record<string, { "jobs": number; "micro_usdc": number }>;
}

/** Today (UTC), the last 7 UTC days, this process, and since counting began. */
export interface EarningsDoc {
  "since": string;
  "today": PeriodDoc;
  "last_7d": PeriodDoc;
  "since_start": PeriodDoc;
  "all_time": PeriodDoc;
  "by_model": {
    "model": string;
    "today": PeriodDoc;
    "last_7d": PeriodDoc;
    "since_start": PeriodDoc;
    "all_time": PeriodDoc;
  }[];
}

const usdc = (micro: number) => (Math.round(micro) / 1e6).toFixed(6);

function period(t: Totals): PeriodDoc {
  const byReason: PeriodDoc["missed_by_reason"] = {};
  for (const r of MISS_REASONS) {
    byReason[r] = { "jobs": t.missedByReason[r].jobs, "micro_usdc": t.missedByReason[r].microUsdc };
  }
  return {
    "jobs": t.jobs,
    "input_tokens": t.inputTokens,
    "output_tokens": t.outputTokens,
    "earned_micro_usdc": t.earnedMicroUsdc,
    "earned_usdc": usdc(t.earnedMicroUsdc),
    "missed_jobs": t.missedJobs,
    "missed_micro_usdc": t.missedMicroUsdc,
    "missed_usdc": usdc(t.missedMicroUsdc),
    "top_missed_reason": t.topMissedReason,
    "missed_by_reason": byReason,
  };
}

/**
 * The /status `earnings` object of an earnings summary.
 *
 * @example
 * ```ts
 * const doc = earningsDoc(agent.earnings.summary());
 * doc.today.earned_usdc; // "0.001234"
 * ```
 */
export function earningsDoc(s: EarningsSummary): EarningsDoc {
  return {
    "since": s.since,
    "today": period(s.today),
    "last_7d": period(s.last7d),
    "since_start": period(s.sinceStart),
    "all_time": period(s.allTime),
    "by_model": Object.entries(s.byModel).map(([model, m]) => ({
      "model": model,
      "today": period(m.today),
      "last_7d": period(m.last7d),
      "since_start": period(m.sinceStart),
      "all_time": period(m.allTime),
    })),
  };
}
