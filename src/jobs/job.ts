// One job's types and state (PROTOCOL §4–5): the link it answers on, how it ended, the
// read-only view the status server shows, the record the stats and ledger take, and the running
// job with its abort controller, byte count, stream hash and usage meter.

import type { DiscoveryResult } from "../backends/discovery.ts";
import type { ConnectionPool } from "../backends/pool.ts";
import type { ErrorCode } from "../errors.ts";
import * as wire from "../link/protocol.ts";
import { streamHash } from "./digest.ts";
import { Sha256 } from "./sha256.ts";
import { type Meter, UsageMeter } from "./usage.ts";

/** The outbound side of one coordinator connection, as jobs use it (a WsClient). */
export interface Link {
  readonly open: boolean;
  readonly bufferedAmount: number;
  readonly queuedTotal: number;
  readonly flushedTotal: number;
  send(text: string): boolean;
  waitFlushed(pos: number): Promise<void>;
}

/** How a job ended: `job_done`, an error code, or without a terminal frame. */
export type Outcome = "job_done" | ErrorCode | "cancelled" | "disconnected";

/** A job in flight, as the status server shows it (read-only snapshot fields). */
export interface ActiveJob {
  readonly jobId: string;
  readonly model: string;
  readonly backend: string;
  readonly format: wire.WireFormat;
  readonly receivedAt: number;
  readonly bytes: number;
  readonly outputTokens: number;
  readonly firstChunkMs: number | undefined;
}

/** A job that ended (or was refused), handed to the stats, status and ledger. */
export interface FinishedJob {
  jobId: string;
  model: string;
  backend: string | undefined;
  format: wire.WireFormat;
  outcome: Outcome;
  message: string | undefined;
  inputTokens: number;
  outputTokens: number;
  /** True when output tokens came from the stream's usage record, false when estimated. */
  usageReported: boolean;
  firstChunkMs: number | undefined;
  durationMs: number;
  bytes: number;
  /** Hex SHA-256 of the relayed bytes (of nothing for a refusal); set by the executor. */
  sha256?: string;
  receivedAt: number;
  finishedAt: number;
  /** Whether a slot was held (false for refusals at admission). */
  admitted: boolean;
  /**
   * True for an `out_of_capacity` that the backend's own capacity caused (its slots all busy,
   * its queue not empty, or it answered 429/503), not the agent's limits or the operator.
   */
  backendBusy?: boolean;
}

export interface ExecutorOptions {
  /** `limits.max_concurrent`, read live so a reload applies. */
  maxConcurrent: () => number;
  /** The latest discovery (routes and per-model limits). */
  routes: () => DiscoveryResult;
  /** Called when a job found its backend unreachable. */
  onBackendUnreachable?: (backendIndex: number, reason: string) => void;
  /** Called once per job that got a terminal frame or ended without one. */
  onFinished?: (job: FinishedJob) => void;
  /** Keep-alive connections to plain-HTTP backends, reused across jobs (default: none). */
  pool?: ConnectionPool;
  /** Outbound backlog (bytes) above which relays stop reading backends. Default 8 MiB. */
  highWater?: number;
  /** Backlog below which they resume. Default 2 MiB. */
  lowWater?: number;
  /** Models taken out of service by the operator (pause): answered out_of_capacity. */
  paused?: (model: string) => boolean;
  /**
   * Why a backend cannot start a job now although it has slots (vLLM reports requests waiting),
   * or undefined when it can; read at admission, so it must be cheap (a cached value).
   */
  backendBusy?: (backendIndex: number) => string | undefined;
}

export type StopKind = "cancelled" | "deadline" | "disconnected" | "shutdown";

/** Why a job's AbortController fired. */
export class Stop {
  constructor(readonly kind: StopKind) {}
}

export const MIN_JOB_SHARE = 256 * 1024;
/** SHA-256 of zero bytes: the digest of a job that relayed nothing. */
export const EMPTY_SHA256 = new Sha256().hex();

export class RunningJob implements ActiveJob {
  readonly controller = new AbortController();
  readonly head: string;
  bytes = 0;
  readonly hash = streamHash();
  firstChunkMs: number | undefined;
  /** The SSE meter; replaced by a JSON-answer meter when the backend ignored streaming. */
  meter: Meter;
  /** Bytes this job queued that may not be flushed yet, and where its last frame ended. */
  queued = 0;
  lastEnd = 0;
  backendIndex = -1;
  backend = "";
  readonly started = performance.now();

  constructor(
    readonly jobId: string,
    readonly model: string,
    readonly format: wire.WireFormat,
    readonly receivedAt: number,
    readonly link: Link,
  ) {
    this.head = wire.jobChunkHead(jobId);
    this.meter = new UsageMeter(format);
  }

  get outputTokens(): number {
    return this.meter.outputSoFar;
  }
}
