// Shared pieces of backend discovery probes (PROTOCOL §2, BACKENDS.md): what a probe
// returns and small readers for the JSON the servers answer with.

/** A model as a backend lists it. */
export interface ListedModel {
  id: string;
  contextWindow: number | undefined;
  /** Upstream cost in USD per token (OpenRouter), for the markup warning. */
  upstreamCost?: { input: number; output: number };
}

/**
 * What a probe found: `ready` with models (and, when the server says, how many requests it runs
 * at once: `slots`), `loading` (try again later) or `down`.
 */
export type ProbeResult =
  | { state: "ready"; models: ListedModel[]; slots?: number }
  | { state: "loading"; detail: string }
  | { state: "down"; detail: string };

/** A JSON request against the backend with its auth already applied; throws when unreachable. */
export type FetchJson = (
  url: string,
  init?: { method: "POST"; body: unknown },
) => Promise<{ status: number; body: unknown }>;

/** A positive finite number floored to an integer, else undefined. */
export function positiveInt(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? Math.floor(v) : undefined;
}

/** The `data` array of an OpenAI-style list, keeping entries with a string id. */
export function dataArray(body: unknown): Record<string, unknown>[] {
  const data = (body as { data?: unknown } | null)?.data;
  return Array.isArray(data)
    ? data.filter((d): d is Record<string, unknown> => typeof d?.id === "string")
    : [];
}
