// llama.cpp `llama-server` discovery (BACKENDS.md): /health answers 503 while a model
// loads; /v1/models lists one model (meta.n_ctx_train); /props has the real slot context and
// `total_slots`, the requests it runs at once (PROTOCOL §5 extension: the engine's capacity).

import { dataArray, type FetchJson, positiveInt, type ProbeResult } from "./probe.ts";

/** Probes a llama-server: health, its model, and the per-slot context from /props. */
export async function probeLlamacpp(base: string, fetchJson: FetchJson): Promise<ProbeResult> {
  const health = await fetchJson(`${base}/health`);
  if (health.status === 503) return { state: "loading", detail: "model loading (HTTP 503)" };
  if (health.status !== 200) return { state: "down", detail: `/health HTTP ${health.status}` };
  const list = await fetchJson(`${base}/v1/models`);
  if (list.status !== 200) return { state: "down", detail: `/v1/models HTTP ${list.status}` };
  // Old builds answer a bare object with `id` instead of a list.
  const body = list.body as Record<string, unknown> | null;
  const entries = dataArray(body);
  if (entries.length === 0 && typeof body?.id === "string") entries.push(body);
  let slotContext: number | undefined;
  let slots: number | undefined;
  try {
    const props = await fetchJson(`${base}/props`);
    const body = props.body as Record<string, unknown> | null;
    const settings = body?.["default_generation_settings"];
    if (props.status === 200) {
      slotContext = positiveInt((settings as Record<string, unknown> | undefined)?.["n_ctx"]);
      slots = positiveInt(body?.["total_slots"]);
    }
  } catch {
    // /props is optional; fall back to the training context and no known slot count.
  }
  return {
    state: "ready",
    ...(slots !== undefined ? { slots } : {}),
    models: entries.map((m) => ({
      id: m.id as string,
      contextWindow: slotContext ??
        positiveInt((m.meta as Record<string, unknown> | undefined)?.["n_ctx_train"]),
    })),
  };
}
