// Opens a job's streaming completion on a backend (PROTOCOL §4, BACKENDS.md): pins the
// model, forces streaming and usage, applies auth, and maps failures to wire codes once.
// Plain-HTTP backends go through the raw HTTP/1.1 client (coalesced reads); TLS via fetch.

import { BackendError } from "../errors.ts";
import type { WireFormat } from "../link/protocol.ts";
import { errorMessageOf } from "../jobs/usage.ts";
import { request as http1Request } from "./http1.ts";
import type { KindSpec } from "./kinds.ts";
import type { ConnectionPool } from "./pool.ts";

/** A backend as the executor routes to it. */
export interface Target {
  spec: KindSpec;
  /** Base URL without a trailing slash. */
  base: string;
  /** API key value read from `api_key_env` (never logged). */
  apiKey: string | undefined;
}

/** The decoded response body, read piece by piece. */
export interface BodyStream {
  /** Next piece of the body, or null at its clean end; throws BackendError when it breaks. */
  read(): Promise<Uint8Array | null>;
  /** Closes the backend connection (idempotent). */
  close(): void;
  /** True when the backend ignored streaming and answered one JSON document (PROTOCOL §4). */
  readonly json?: boolean;
}

const encoder = new TextEncoder();
const ERROR_BODY_LIMIT = 64 * 1024;

/**
 * The request body forwarded to the backend: the job's request with `model` pinned to the
 * priced model, `stream: true`, and for OpenAI `stream_options.include_usage: true`.
 */
export function forwardedBody(
  request: Record<string, unknown>,
  model: string,
  format: WireFormat,
): Uint8Array<ArrayBuffer> {
  const body: Record<string, unknown> = { ...request, model, stream: true };
  if (format === "openai") {
    const so = request["stream_options"];
    body["stream_options"] = {
      ...(so && typeof so === "object" && !Array.isArray(so) ? so : {}),
      include_usage: true,
    };
  }
  return encoder.encode(JSON.stringify(body));
}

function headersFor(target: Target, format: WireFormat): Record<string, string> {
  const h: Record<string, string> = {
    "content-type": "application/json",
    accept: "text/event-stream",
  };
  if (target.apiKey) h.authorization = `Bearer ${target.apiKey}`;
  if (format === "anthropic") {
    h["anthropic-version"] = "2023-06-01";
    // LM Studio's /v1/messages wants any non-empty x-api-key; vLLM rejects x-api-key.
    if (target.spec.kind === "lmstudio") h["x-api-key"] = target.apiKey || "lm-studio";
    else if (target.apiKey && target.spec.kind !== "vllm") h["x-api-key"] = target.apiKey;
  }
  return h;
}

/** Maps a non-2xx answer to its wire code (PROTOCOL §5). */
export function statusError(status: number, body: string, where: string): BackendError {
  const upstream = errorMessageOf(body);
  const detail = upstream ? `${where}: HTTP ${status}: ${upstream}` : `${where}: HTTP ${status}`;
  if (status === 401 || status === 403) return new BackendError("auth_rejected_by_backend", detail);
  if (status === 404) return new BackendError("model_not_loaded", detail);
  // Saturated, not broken (PROTOCOL §5 extension): the coordinator can place the job elsewhere.
  if (status === 429 || status === 503) return new BackendError("out_of_capacity", detail);
  // LM Studio answers 400 "No models loaded" when nothing can serve the request.
  if (status === 400 && upstream && /no models? loaded/i.test(upstream)) {
    return new BackendError("model_not_loaded", detail);
  }
  return new BackendError("internal", detail);
}

/**
 * Sends the completion request and returns the streaming body once the backend answered
 * 2xx. Rejects with a BackendError carrying its wire code, or with `signal.reason` when the
 * signal aborted first. With `pool`, a plain-HTTP backend is asked on a kept-alive connection
 * when one is idle, and the body's connection goes back once read to its end.
 *
 * @example
 * ```ts
 * const body = await openCompletion(target, "llama3.2:latest", job.request, "openai", signal);
 * for (let piece; (piece = await body.read()) !== null;) relay(piece);
 * ```
 */
export async function openCompletion(
  target: Target,
  model: string,
  request: Record<string, unknown>,
  format: WireFormat,
  signal: AbortSignal,
  pool?: ConnectionPool,
): Promise<BodyStream> {
  const path = format === "anthropic" ? target.spec.paths.messages : target.spec.paths.chat;
  if (path === undefined) {
    throw new BackendError(
      "model_not_loaded",
      `${target.spec.kind} does not accept the ${format} format for ${model}`,
    );
  }
  if (target.spec.remote && !target.apiKey) {
    throw new BackendError(
      "auth_rejected_by_backend",
      `${target.spec.kind}: API key env var is empty`,
    );
  }
  const url = new URL(target.base + path);
  const body = forwardedBody(request, model, format);
  const headers = headersFor(target, format);
  const where = `${target.spec.kind} ${url.host}`;
  if (url.protocol === "http:") {
    // Each piece is consumed before the next read (relay, usage, hash): no copy per piece.
    // Keep-alive connections are reused across jobs when the caller keeps a pool.
    const res = await http1Request({
      method: "POST",
      url,
      headers,
      body,
      signal,
      transient: true,
      ...(pool ? { pool } : {}),
    });
    if (res.status < 200 || res.status > 299) {
      const text = await res.text(ERROR_BODY_LIMIT).catch(() => "");
      res.close();
      throw statusError(res.status, text, where);
    }
    if (isJson(res.headers)) {
      return { read: () => res.read(), close: () => res.close(), json: true };
    }
    return res;
  }
  let res: Response;
  try {
    res = await fetch(url, { method: "POST", headers, body, signal });
  } catch (err) {
    signal.throwIfAborted();
    throw new BackendError("backend_unreachable", `${where}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (!res.ok || !res.body) {
    const text = await res.text().catch(() => "");
    throw statusError(res.status, text.slice(0, ERROR_BODY_LIMIT), where);
  }
  return fetchBody(res.body, signal, where, isJson(res.headers));
}

/** An `application/json` (or `+json`) answer: the backend ignored `"stream": true`. */
function isJson(headers: Pick<Headers, "get">): boolean {
  const type = headers.get("content-type")?.split(";")[0]?.trim().toLowerCase() ?? "";
  return type === "application/json" || type.endsWith("+json");
}

function fetchBody(
  stream: ReadableStream<Uint8Array>,
  signal: AbortSignal,
  where: string,
  json: boolean,
): BodyStream {
  const reader = stream.getReader();
  let closed = false;
  return {
    json,
    async read() {
      if (closed) return null;
      try {
        const { value, done } = await reader.read();
        return done ? null : value;
      } catch (err) {
        signal.throwIfAborted();
        throw new BackendError("internal", `${where}: stream broke: ${(err as Error).message}`, {
          cause: err,
        });
      }
    },
    close() {
      if (closed) return;
      closed = true;
      reader.cancel().catch(() => {});
    },
  };
}
