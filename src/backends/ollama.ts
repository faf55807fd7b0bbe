// Ollama discovery (BACKENDS.md): /api/tags lists models with their tags; the context length
// comes from POST /api/show (model_info["<arch>.context_length"]), cached per model digest.

import { type FetchJson, positiveInt, type ProbeResult } from "./probe.ts";

/** Context lengths by base, name and digest; emptied when it holds this many (a backend
 * that re-tags or re-digests its models on every listing cannot grow it without bound). */
const MAX_CONTEXT_CACHE = 1024;
const contextCache = new Map<string, number | undefined>();

async function contextOf(
  base: string,
  name: string,
  digest: string,
  fetchJson: FetchJson,
): Promise<number | undefined> {
  const key = `${base} ${name} ${digest}`;
  if (contextCache.has(key)) return contextCache.get(key);
  let ctx: number | undefined;
  try {
    const show = await fetchJson(`${base}/api/show`, { method: "POST", body: { model: name } });
    if (show.status !== 200) return undefined; // not cached: asked again next time
    const info = (show.body as Record<string, unknown> | null)?.["model_info"];
    if (info && typeof info === "object") {
      for (const [k, v] of Object.entries(info)) {
        if (k.endsWith(".context_length")) ctx = positiveInt(v);
      }
    }
  } catch {
    return undefined; // not cached: try again at the next discovery
  }
  if (contextCache.size >= MAX_CONTEXT_CACHE) contextCache.clear();
  contextCache.set(key, ctx);
  return ctx;
}

/** Lists Ollama's models (ids with tags, e.g. `llama3.2:latest`) and their context lengths. */
export async function probeOllama(base: string, fetchJson: FetchJson): Promise<ProbeResult> {
  const tags = await fetchJson(`${base}/api/tags`);
  if (tags.status !== 200) return { state: "down", detail: `/api/tags HTTP ${tags.status}` };
  const list = (tags.body as { models?: unknown } | null)?.models;
  const entries = Array.isArray(list) ? list : [];
  const models = [];
  for (const m of entries) {
    const name = typeof m?.name === "string" ? m.name : typeof m?.model === "string" ? m.model : "";
    // Embedding models are listed too, but cannot serve chat.
    if (!name || /embed/i.test(name)) continue;
    const digest = typeof m.digest === "string" ? m.digest : "";
    models.push({ id: name, contextWindow: await contextOf(base, name, digest, fetchJson) });
  }
  return { state: "ready", models };
}
