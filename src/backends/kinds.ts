// The backend kind table (BACKENDS.md "At a glance"): default base URL, completion paths,
// priority, auth, and each kind's health + model-listing probe used by discovery (§2).

import type { BackendKind } from "../config/config.ts";
import type { WireFormat } from "../link/protocol.ts";
import { dataArray, type FetchJson, positiveInt, type ProbeResult } from "./probe.ts";
import { probeOllama } from "./ollama.ts";
import { probeLlamacpp } from "./llamacpp.ts";
import { probeLmstudio } from "./lmstudio.ts";

export interface KindSpec {
  kind: BackendKind;
  /** Lower wins when several backends serve one model (PROTOCOL §2). */
  priority: number;
  /** Remote kinds take an API key from `api_key_env` and default to a public base URL. */
  remote: boolean;
  /** Base URL when the config gives none (remote), or the well-known local address. */
  defaultBase: string;
  /** Paths under the base. `messages` undefined: the kind does not speak Anthropic. */
  paths: { chat: string; messages: string | undefined };
  probe(base: string, fetchJson: FetchJson): Promise<ProbeResult>;
}

/** Formats a kind accepts, in the order advertised. */
export function formatsOf(spec: KindSpec): WireFormat[] {
  return spec.paths.messages ? ["openai", "anthropic"] : ["openai"];
}

/** vLLM: connection refused while loading, then `/health` 200; `/v1/models` has max_model_len. */
async function probeVllm(base: string, fetchJson: FetchJson): Promise<ProbeResult> {
  const health = await fetchJson(`${base}/health`);
  if (health.status === 503) return { state: "down", detail: "engine not healthy (HTTP 503)" };
  if (health.status !== 200) return { state: "down", detail: `/health HTTP ${health.status}` };
  const list = await fetchJson(`${base}/v1/models`);
  if (list.status !== 200) return { state: "down", detail: `/v1/models HTTP ${list.status}` };
  return {
    state: "ready",
    models: dataArray(list.body).map((m) => ({
      id: m.id as string,
      contextWindow: positiveInt(m["max_model_len"]),
    })),
  };
}

function parseUsdPerToken(v: unknown): number {
  const n = typeof v === "string" ? Number(v) : typeof v === "number" ? v : NaN;
  return Number.isFinite(n) && n >= 0 ? n : 0;
}

/** OpenRouter: `GET /models` with context_length and USD-per-token prices as strings. */
async function probeOpenrouter(base: string, fetchJson: FetchJson): Promise<ProbeResult> {
  const list = await fetchJson(`${base}/models`);
  if (list.status !== 200) return { state: "down", detail: `/models HTTP ${list.status}` };
  return {
    state: "ready",
    models: dataArray(list.body).map((m) => {
      const pricing = (m.pricing ?? {}) as Record<string, unknown>;
      return {
        id: m.id as string,
        contextWindow: positiveInt(m["context_length"]),
        upstreamCost: {
          input: parseUsdPerToken(pricing.prompt),
          output: parseUsdPerToken(pricing.completion),
        },
      };
    }),
  };
}

/** Venice: `GET /models`, context in model_spec.availableContextTokens. */
async function probeVenice(base: string, fetchJson: FetchJson): Promise<ProbeResult> {
  const list = await fetchJson(`${base}/models`);
  if (list.status !== 200) return { state: "down", detail: `/models HTTP ${list.status}` };
  return {
    state: "ready",
    models: dataArray(list.body).map((m) => ({
      id: m.id as string,
      contextWindow: positiveInt(
        (m["model_spec"] as Record<string, unknown> | undefined)?.availableContextTokens,
      ),
    })),
  };
}

const LOCAL_PATHS = { chat: "/v1/chat/completions", messages: "/v1/messages" };

/** Every kind, by name. */
export const KINDS: Record<BackendKind, KindSpec> = {
  vllm: {
    kind: "vllm",
    priority: 0,
    remote: false,
    defaultBase: "http://localhost:8000",
    paths: LOCAL_PATHS,
    probe: probeVllm,
  },
  llamacpp: {
    kind: "llamacpp",
    priority: 1,
    remote: false,
    defaultBase: "http://localhost:8080",
    paths: LOCAL_PATHS,
    probe: probeLlamacpp,
  },
  lmstudio: {
    kind: "lmstudio",
    priority: 2,
    remote: false,
    defaultBase: "http://localhost:1234",
    paths: LOCAL_PATHS,
    probe: probeLmstudio,
  },
  ollama: {
    kind: "ollama",
    priority: 3,
    remote: false,
    defaultBase: "http://localhost:11434",
    paths: LOCAL_PATHS,
    probe: probeOllama,
  },
  venice: {
    kind: "venice",
    priority: 4,
    remote: true,
    defaultBase: "https://api.venice.ai/api/v1",
    paths: { chat: "/chat/completions", messages: undefined },
    probe: probeVenice,
  },
  openrouter: {
    kind: "openrouter",
    priority: 5,
    remote: true,
    defaultBase: "https://openrouter.ai/api/v1",
    paths: { chat: "/chat/completions", messages: "/messages" },
    probe: probeOpenrouter,
  },
};
