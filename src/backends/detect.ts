// Backend auto-detection for `setup` (PROTOCOL §8): probe the four well-known local servers
// (vLLM :8000, llama.cpp :8080, LM Studio :1234, Ollama :11434) at once, 800 ms each, and list
// the models each one that answers serves.

import { KINDS } from "./kinds.ts";
import { dataArray } from "./probe.ts";
import type { BackendKind } from "../config/config.ts";

/** A local server to probe: its kind and base URL. */
export interface ProbeTarget {
  kind: BackendKind;
  url: string;
}

/** What one probe found. `models` is empty when the server runs without a model loaded. */
export type Detection =
  | { target: ProbeTarget; found: true; models: string[] }
  | { target: ProbeTarget; found: false; why: string };

/** The §8 probes: the local kinds at their well-known addresses. */
export const WELL_KNOWN_BACKENDS: readonly ProbeTarget[] = (
  ["vllm", "llamacpp", "lmstudio", "ollama"] as const
).map((kind) => ({ kind, url: KINDS[kind].defaultBase }));

/** The model listing each local kind answers (§8). */
function probePath(kind: BackendKind): string {
  return kind === "ollama" ? "/api/tags" : "/v1/models";
}

function modelIds(kind: BackendKind, body: unknown): string[] | undefined {
  if (kind === "ollama") {
    const list = (body as { models?: unknown } | null)?.models;
    if (!Array.isArray(list)) return undefined;
    // Embedding models are listed too, but cannot serve chat (as in discovery).
    return list.map((
      m,
    ) => (typeof m?.name === "string" ? m.name : typeof m?.model === "string" ? m.model : ""))
      .filter((name) => name !== "" && !/embed/i.test(name));
  }
  if (!Array.isArray((body as { data?: unknown } | null)?.data)) return undefined;
  return dataArray(body).map((m) => m.id as string);
}

async function probe(
  target: ProbeTarget,
  timeoutMs: number,
  doFetch: typeof fetch,
): Promise<Detection> {
  const url = `${target.url.replace(/\/+$/, "")}${probePath(target.kind)}`;
  try {
    const res = await doFetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (res.status !== 200) {
      await res.body?.cancel();
      return { target, found: false, why: `HTTP ${res.status} from ${url}` };
    }
    const models = modelIds(target.kind, await res.json());
    if (models === undefined) return { target, found: false, why: `${url} is not a model list` };
    return { target, found: true, models: [...new Set(models)].sort() };
  } catch (err) {
    const why = err instanceof DOMException && err.name === "TimeoutError"
      ? `no answer in ${timeoutMs} ms`
      : err instanceof SyntaxError
      ? `${url} did not answer JSON`
      : "not running";
    return { target, found: false, why };
  }
}

/**
 * Probes every target at once (each with its own timeout) and reports each, in target order.
 *
 * @example
 * ```ts
 * const found = (await detectBackends()).filter((d) => d.found);
 * ```
 */
export function detectBackends(
  targets: readonly ProbeTarget[] = WELL_KNOWN_BACKENDS,
  opts: { timeoutMs?: number; fetch?: typeof fetch } = {},
): Promise<Detection[]> {
  return Promise.all(targets.map((t) => probe(t, opts.timeoutMs ?? 800, opts.fetch ?? fetch)));
}
