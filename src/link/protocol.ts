// Wire types of the coordinator protocol (PROTOCOL §1–5): inbound frames parsed from
// untrusted JSON into typed values or a rejection reason, and outbound frame builders.
// The only file that spells the protocol's snake_case field names.
// deno-lint-ignore-file camelcase

import type { ErrorCode } from "../errors.ts";

export type { ErrorCode };

/** Wire formats a job's request can be in (PROTOCOL §4). */
export type WireFormat = "openai" | "anthropic";

/** Largest inbound text frame the agent parses (PROTOCOL §4). */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;

/** Default and bounds of `deadline_ms` (PROTOCOL §4). */
export const DEFAULT_DEADLINE_MS = 60_000;
export const MAX_DEADLINE_MS = 3_600_000;

// ---------------------------------------------------------------------------
// Inbound (coordinator → agent)

export interface AuthChallenge {
  type: "auth_challenge";
  nonce: Uint8Array;
}
export interface AuthOk {
  type: "auth_ok";
  providerId: string | undefined;
}
export interface AuthFailed {
  type: "auth_failed";
  reason: string;
}
export interface Job {
  type: "job";
  jobId: string;
  modelId: string;
  request: Record<string, unknown>;
  format: WireFormat;
  deadlineMs: number;
}
export interface JobCancel {
  type: "job_cancel";
  jobId: string;
}
/** A well-formed frame of a type this agent does not handle (e.g. `config_update`). */
export interface OtherFrame {
  type: "other";
  name: string;
}
export type Inbound = AuthChallenge | AuthOk | AuthFailed | Job | JobCancel | OtherFrame;

/**
 * Outcome of parsing one inbound frame. A rejected `job` whose `job_id` is a valid
 * UUID carries that id, so the caller can answer `job_error` `internal`.
 */
export type ParseResult =
  | { ok: true; frame: Inbound }
  | { ok: false; reason: string; jobId?: string };

const encoder = new TextEncoder();
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Is `s` a UUID in the 8-4-4-4-12 hex form? */
export function isUuid(s: unknown): s is string {
  return typeof s === "string" && UUID.test(s);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Decodes standard, padded base64 strictly; undefined when `s` is not that.
 *
 * @example
 * ```ts
 * decodeBase64("AAE=") // Uint8Array [0, 1]
 * ```
 */
export function decodeBase64(s: string): Uint8Array | undefined {
  if (!BASE64.test(s)) return undefined;
  try {
    return Uint8Array.fromBase64(s, { lastChunkHandling: "strict" });
  } catch {
    return undefined;
  }
}

function reject(reason: string, jobId?: string): ParseResult {
  return jobId === undefined ? { ok: false, reason } : { ok: false, reason, jobId };
}

function parseJob(o: Record<string, unknown>): ParseResult {
  const id = o.job_id;
  if (!isUuid(id)) {
    return reject(id === undefined ? "job without job_id" : "job_id is not a UUID");
  }
  const modelId = o.model_id;
  if (typeof modelId !== "string" || modelId === "") {
    return reject("model_id missing or not a non-empty string", id);
  }
  if (!isRecord(o.request)) return reject("request missing or not an object", id);
  let format: WireFormat = "openai";
  if (o.format !== undefined) {
    if (o.format !== "openai" && o.format !== "anthropic") {
      return reject(`unknown format ${JSON.stringify(o.format)}`, id);
    }
    format = o.format;
  }
  let deadlineMs = DEFAULT_DEADLINE_MS;
  if (o.deadline_ms !== undefined) {
    const d = o.deadline_ms;
    if (typeof d !== "number" || !Number.isInteger(d) || d < 1 || d > MAX_DEADLINE_MS) {
      return reject(`deadline_ms must be an integer in 1..=${MAX_DEADLINE_MS}`, id);
    }
    deadlineMs = d;
  }
  return {
    ok: true,
    frame: { type: "job", jobId: id, modelId, request: o.request, format, deadlineMs },
  };
}

/**
 * Parses one inbound text frame. Never throws: anything that is not a valid frame of
 * PROTOCOL §1–4 comes back as `{ ok: false, reason }`.
 *
 * @example
 * ```ts
 * const r = parseInbound('{"type":"job_cancel","job_id":"5b7c…"}');
 * if (r.ok && r.frame.type === "job_cancel") executor.cancel(r.frame.jobId);
 * ```
 */
export function parseInbound(text: string): ParseResult {
  // UTF-8 is at most 3 bytes per UTF-16 unit: measure bytes only when it could matter.
  if (
    text.length > MAX_FRAME_BYTES ||
    (text.length > MAX_FRAME_BYTES / 3 && encoder.encode(text).length > MAX_FRAME_BYTES)
  ) {
    return reject(`frame over ${MAX_FRAME_BYTES} bytes`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return reject("invalid JSON");
  }
  if (!isRecord(v)) return reject("frame is not a JSON object");
  const type = v.type;
  if (typeof type !== "string") return reject("frame without a string type");
  switch (type) {
    case "auth_challenge": {
      const nonce = typeof v.nonce === "string" ? decodeBase64(v.nonce) : undefined;
      if (nonce === undefined || nonce.length === 0) {
        return reject("auth_challenge nonce is not valid base64");
      }
      return { ok: true, frame: { type, nonce } };
    }
    case "auth_ok": {
      const p = v.provider_id;
      if (p !== undefined && p !== null && typeof p !== "string") {
        return reject("auth_ok provider_id is not a string");
      }
      return { ok: true, frame: { type, providerId: p || undefined } };
    }
    case "auth_failed":
      return {
        ok: true,
        frame: { type, reason: typeof v.reason === "string" ? v.reason : "(no reason given)" },
      };
    case "job":
      return parseJob(v);
    case "job_cancel":
      if (!isUuid(v.job_id)) return reject("job_cancel without a UUID job_id");
      return { ok: true, frame: { type, jobId: v.job_id } };
    default:
      return { ok: true, frame: { type: "other", name: type } };
  }
}

// ---------------------------------------------------------------------------
// Outbound (agent → coordinator)

/** One advertised model (PROTOCOL §2). */
export interface ModelAd {
  modelId: string;
  inputPer1m: number;
  outputPer1m: number;
  maxConcurrent: number;
  backend: string;
  contextWindow: number | undefined;
  formats: readonly WireFormat[];
}

/** Fields of a heartbeat (PROTOCOL §3). */
export interface HeartbeatValues {
  queueDepth: number;
  tokensPerSecP50: number;
  p50LatencyMs: number;
  p95LatencyMs: number;
  errorRate60s: number;
  lastErrorAt: string | null;
  lastErrorCode: ErrorCode | null;
}

/** Token counts of a finished job. */
export interface TokenCounts {
  input: number;
  output: number;
}

/** `auth_response` (PROTOCOL §1.3). The enrollment code is included only when given. */
export function authResponse(
  pubkey: string,
  signature: string,
  agentVersion: string,
  enrollmentCode?: string,
): string {
  const f: Record<string, string> = {
    type: "auth_response",
    pubkey,
    signature,
    agent_version: agentVersion,
  };
  if (enrollmentCode !== undefined) f.enrollment_code = enrollmentCode;
  return JSON.stringify(f);
}

/** `capabilities` (PROTOCOL §2); `models` must already be sorted by id. */
export function capabilities(
  models: readonly ModelAd[],
  limits: { maxConcurrentTotal: number; maxTokensPerMinute: number | null },
  metadata: { agentVersion: string; agent: string },
): string {
  const formats: Record<string, readonly WireFormat[]> = {};
  for (const m of models) formats[m.modelId] = m.formats;
  return JSON.stringify({
    type: "capabilities",
    models: models.map((m) => ({
      model_id: m.modelId,
      input_per_1m: m.inputPer1m,
      output_per_1m: m.outputPer1m,
      max_concurrent: m.maxConcurrent,
      backend: m.backend,
      context_window: m.contextWindow,
    })),
    limits: {
      max_concurrent_total: limits.maxConcurrentTotal,
      max_tokens_per_minute: limits.maxTokensPerMinute,
    },
    metadata: { agent_version: metadata.agentVersion, agent: metadata.agent, formats },
  });
}

/** `heartbeat` (PROTOCOL §3). */
export function heartbeat(h: HeartbeatValues): string {
  return JSON.stringify({
    type: "heartbeat",
    queue_depth: h.queueDepth,
    tokens_per_sec_p50: h.tokensPerSecP50,
    p50_latency_ms: h.p50LatencyMs,
    p95_latency_ms: h.p95LatencyMs,
    error_rate_60s: h.errorRate60s,
    last_error_at: h.lastErrorAt,
    last_error_code: h.lastErrorCode,
  });
}

/**
 * The constant head of every `job_chunk` frame of one job, built once per job; a frame
 * is `head + base64 + CHUNK_TAIL`, so the hot path never re-serialises JSON.
 */
export function jobChunkHead(jobId: string): string {
  return `{"type":"job_chunk","job_id":${JSON.stringify(jobId)},"data":"`;
}
export const CHUNK_TAIL = '"}';

/** `job_chunk` for `bytes` (the relay builds it from {@link jobChunkHead} instead). */
export function jobChunk(jobId: string, bytes: Uint8Array): string {
  return jobChunkHead(jobId) + bytes.toBase64() + CHUNK_TAIL;
}

/** `job_done` (PROTOCOL §4), with both spellings of the token counts. */
export function jobDone(jobId: string, tokens: TokenCounts, durationMs: number): string {
  return JSON.stringify({
    type: "job_done",
    job_id: jobId,
    tokens: {
      input: tokens.input,
      output: tokens.output,
      input_tokens: tokens.input,
      output_tokens: tokens.output,
    },
    duration_ms: durationMs,
  });
}

/** `job_error` (PROTOCOL §4–5). */
export function jobError(
  jobId: string,
  code: ErrorCode,
  message: string,
  tokensEmitted: number,
): string {
  return JSON.stringify({
    type: "job_error",
    job_id: jobId,
    error_code: code,
    message,
    tokens_emitted: tokensEmitted,
  });
}
