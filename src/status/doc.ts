// The GET /status document's shape: the status server's JSON field names (snake_case, like the
// wire protocol) in one place, read by the snapshot builder, /metrics, the page and `status`.

import type { EarningsDoc } from "./earnings_doc.ts";

/** One backend as /status shows it. */
export interface BackendDoc {
  "index": number;
  "kind": string;
  "url": string;
  "health": string;
  "latency_ms": number | null;
  "last_error": string | null;
  "models": string[];
  "checked_at": string | null;
  /** Jobs in flight on it; the requests it runs at once when it says (llama.cpp total_slots). */
  "slots_in_use": number;
  "slots": number | null;
  /** Requests waiting in its own queue (vLLM /metrics), when known. */
  "queue_waiting": number | null;
}

/** One advertised model with its price (micro-USDC per million tokens) and slots. */
export interface ModelDoc {
  "model_id": string;
  "backend": string;
  "input_per_1m": number;
  "output_per_1m": number;
  "max_concurrent": number;
  "slots_in_use": number;
  "context_window": number | null;
  "formats": string[];
  "paused": boolean;
}

/** A job in flight. */
export interface ActiveJobDoc {
  "job_id": string;
  "model": string;
  "backend": string;
  "format": string;
  "received_at": string;
  "age_ms": number;
  "bytes": number;
  "output_tokens": number;
  "first_chunk_ms": number | null;
}

/** A finished (or refused) job: outcome is `job_done`, an error code, `cancelled` or `disconnected`. */
export interface FinishedJobDoc {
  "job_id": string;
  "model": string;
  "backend": string | null;
  "outcome": string;
  "message": string | null;
  "input_tokens": number;
  "output_tokens": number;
  "duration_ms": number;
  "first_chunk_ms": number | null;
  "bytes": number;
  "finished_at": string;
}

/** Counters of one model since start, with what its job_done tokens earned at today's prices. */
export interface ModelCountersDoc {
  "model": string;
  "jobs": Record<string, number>;
  "input_tokens": number;
  "output_tokens": number;
  "billed_input_tokens": number;
  "billed_output_tokens": number;
  "input_per_1m": number;
  "output_per_1m": number;
  "earned_micro_usdc": number;
}

/** The GET /status document. */
export interface StatusDoc {
  "agent": string;
  "version": string;
  "pid": number;
  "started_at": string;
  "uptime_s": number;
  "time": string;
  "public_key": string;
  "provider_id": string | null;
  "coordinator": {
    "url": string;
    "state": string;
    "state_since": string;
    "next_retry_at": string | null;
    "last_auth_at": string | null;
    "reconnects": number;
    "consecutive_failures": number;
    "last_error": string | null;
  };
  "draining": boolean;
  "limits": {
    "max_concurrent": number;
    "max_tokens_per_minute": number | null;
    "in_flight": number;
  };
  "backends": BackendDoc[];
  "models": ModelDoc[];
  "jobs_in_flight": ActiveJobDoc[];
  "recent_jobs": FinishedJobDoc[];
  "counters": {
    "jobs": number;
    "job_done": number;
    "errors": number;
    "refused": number;
    "cancelled": number;
    "input_tokens": number;
    "output_tokens": number;
    "earned_micro_usdc": number;
    "earned_usdc": string;
    "by_model": ModelCountersDoc[];
  };
  /** Money over today / 7 days / this process / all time (absent from agents before it). */
  "earnings"?: EarningsDoc;
}
