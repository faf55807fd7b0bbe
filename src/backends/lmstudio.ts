// LM Studio discovery (BACKENDS.md): no health route; models load on first request (JIT).
// The richer /api/v0/models gives type, state and context lengths; /v1/models is the fallback.

import { dataArray, type FetchJson, positiveInt, type ProbeResult } from "./probe.ts";

/** Lists LM Studio's chat models (embedding models are left out). */
export async function probeLmstudio(base: string, fetchJson: FetchJson): Promise<ProbeResult> {
  const rich = await fetchJson(`${base}/api/v0/models`);
  if (rich.status === 200) {
    return {
      state: "ready",
      models: dataArray(rich.body)
        .filter((m) => m.type === undefined || m.type === "llm" || m.type === "vlm")
        .map((m) => ({
          id: m.id as string,
          contextWindow: positiveInt(m["loaded_context_length"]) ??
            positiveInt(m["max_context_length"]),
        })),
    };
  }
  const list = await fetchJson(`${base}/v1/models`);
  if (list.status !== 200) return { state: "down", detail: `/v1/models HTTP ${list.status}` };
  return {
    state: "ready",
    models: dataArray(list.body)
      .filter((m) => !String(m.id).includes("embed"))
      .map((m) => ({ id: m.id as string, contextWindow: undefined })),
  };
}
