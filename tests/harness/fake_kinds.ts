// What each fake backend kind looks like from outside (BACKENDS.md): its API base and completion
// routes, which routes want the key, its health probes, keep-alive comment, discovery documents
// (models, context window, pricing) and error bodies.

import { field, type HttpRequest, json, parseJson, type Reply, text } from "./http_server.ts";

/** The servers a fake can impersonate. */
export type FakeKind = "vllm" | "llamacpp" | "lmstudio" | "ollama" | "openrouter" | "venice";

/** The API a completion route speaks: OpenAI chat completions or Anthropic messages. */
export type Format = "openai" | "anthropic";

/** What a fake openrouter's `/models` reports for every model, in USD per token. */
export const OPENROUTER_PRICING = { prompt: "0.0000001", completion: "0.0000002" } as const;

/** Training context LM Studio reports as `max_context_length` when the loaded one is smaller. */
const TRAINED_CONTEXT = 131072;
const CREATED = 1_700_000_000;

/** How one kind's server differs from the others. */
export interface KindSpec {
  /** Path prefix of the API base. */
  base: string;
  chat: string;
  messages: string | null;
  /** Only `Authorization: Bearer` carries the key (otherwise `x-api-key` works too). */
  bearerOnly: boolean;
  /** Discovery routes that need the key too when one is set. */
  keyed: readonly string[];
  /** Probe routes that answer 503 when the backend is dead. */
  health: readonly string[];
  /** The server's SSE keep-alive comment. */
  comment: string;
  /** Message of the server's unknown-model error. */
  unknownModel(model: string): string;
}

/** The kind table. */
export const KINDS: Record<FakeKind, KindSpec> = {
  vllm: {
    base: "",
    chat: "/v1/chat/completions",
    messages: "/v1/messages",
    bearerOnly: true,
    keyed: ["/v1/models"],
    health: ["/health"],
    comment: ": keep-alive\n\n",
    unknownModel: (m) => `The model \`${m}\` does not exist.`,
  },
  llamacpp: {
    base: "",
    chat: "/v1/chat/completions",
    messages: "/v1/messages",
    bearerOnly: false,
    keyed: ["/props"],
    health: ["/health"],
    comment: ": ping\n\n",
    unknownModel: (m) => `model '${m}' not found`,
  },
  lmstudio: {
    base: "",
    chat: "/v1/chat/completions",
    messages: "/v1/messages",
    bearerOnly: false,
    keyed: [],
    health: ["/v1/models", "/api/v0/models"],
    comment: ": ping\n\n",
    unknownModel: (m) => `Invalid model identifier "${m}".`,
  },
  ollama: {
    base: "",
    chat: "/v1/chat/completions",
    messages: "/v1/messages",
    bearerOnly: false,
    keyed: [],
    health: ["/", "/api/tags", "/api/version"],
    comment: ": ping\n\n",
    unknownModel: (m) => `model "${m}" not found, try pulling it first`,
  },
  openrouter: {
    base: "/api/v1",
    chat: "/chat/completions",
    messages: "/messages",
    bearerOnly: true,
    keyed: ["/models"],
    health: ["/models"],
    comment: ": OPENROUTER PROCESSING\n\n",
    unknownModel: (m) => `${m} is not a valid model ID`,
  },
  venice: {
    base: "/api/v1",
    chat: "/chat/completions",
    messages: null,
    bearerOnly: true,
    keyed: [],
    health: ["/models"],
    comment: ": ping\n\n",
    unknownModel: () => "Specified model not found",
  },
};

const ERROR_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  429: "rate_limit_error",
  503: "unavailable_error",
};

/** An error reply in the shape `kind` uses for `format` (BACKENDS.md "Error bodies"). */
export function errorReply(kind: FakeKind, format: Format, status: number, message: string): Reply {
  const type = ERROR_TYPES[status] ?? "api_error";
  let body: unknown;
  if (kind === "vllm" && status === 401) body = { error: "Unauthorized" };
  else if (kind === "venice") body = { error: message };
  else if (kind === "llamacpp") body = { error: { code: status, message, type } };
  else if (format === "anthropic") body = { type: "error", error: { type, message } };
  else if (kind === "openrouter") body = { error: { message, code: status } };
  else body = { error: { message, type, param: null, code: status } };
  const reply = json(status, body);
  if (kind === "openrouter" && (status === 429 || status === 503)) {
    reply.headers = { "retry-after": "1" };
  }
  return reply;
}

type Route = (req: HttpRequest) => Reply;

/** The discovery routes of `kind`, keyed by `METHOD /path` below the API base. */
export function discoveryRoutes(
  kind: FakeKind,
  models: readonly string[],
  ctx: number,
  loaded: ReadonlySet<string>,
  slots = 4,
): Record<string, Route> {
  const list = (extra: (id: string) => object) =>
    json(200, {
      object: "list",
      data: models.map((id) => ({ id, object: "model", created: CREATED, ...extra(id) })),
    });
  const tag = (name: string) => ({
    name,
    model: name,
    modified_at: "2025-01-01T00:00:00Z",
    size: 2019393189,
    digest: "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
    details: {
      format: "gguf",
      family: "llama",
      parameter_size: "3.2B",
      quantization_level: "Q4_K_M",
    },
  });
  switch (kind) {
    case "vllm":
      return {
        "GET /health": () => text(200, ""),
        "GET /v1/models": () =>
          list((id) => ({ owned_by: "vllm", root: id, parent: null, max_model_len: ctx })),
      };
    case "llamacpp":
      return {
        "GET /health": () => json(200, { status: "ok" }),
        "GET /v1/models": () =>
          list(() => ({
            owned_by: "llamacpp",
            meta: { vocab_type: 2, n_vocab: 128256, n_ctx_train: ctx },
          })),
        "GET /props": () =>
          json(200, {
            default_generation_settings: { n_ctx: ctx, params: { n_predict: -1 } },
            total_slots: slots,
            model_path: models[0],
            build_info: "b7000-fake",
          }),
      };
    case "lmstudio":
      return {
        "GET /v1/models": () => list(() => ({ owned_by: "organization_owner" })),
        "GET /api/v0/models": () =>
          list(() => ({
            type: "llm",
            publisher: "lmstudio-community",
            compatibility_type: "gguf",
            quantization: "Q4_K_M",
            state: "loaded",
            max_context_length: Math.max(ctx, TRAINED_CONTEXT),
            loaded_context_length: ctx,
          })),
      };
    case "ollama":
      return {
        "GET /": () => text(200, "Ollama is running"),
        "GET /api/version": () => json(200, { version: "0.14.2" }),
        "GET /api/tags": () => json(200, { models: models.map(tag) }),
        "GET /api/ps": () =>
          json(200, {
            models: models.filter((m) => loaded.has(m)).map((m) => ({
              ...tag(m),
              context_length: ctx,
            })),
          }),
        "GET /v1/models": () => list(() => ({ owned_by: "library" })),
        "POST /api/show": (req) => {
          const b = parseJson(req.body);
          const m = field(b, "model") ?? field(b, "name");
          if (typeof m !== "string" || !models.includes(m)) {
            return json(404, { error: `model '${String(m)}' not found` });
          }
          return json(200, {
            details: tag(m).details,
            model_info: { "general.architecture": "llama", "llama.context_length": ctx },
            capabilities: ["completion"],
          });
        },
      };
    case "openrouter":
      return {
        "GET /models": () =>
          json(200, {
            data: models.map((id) => ({
              id,
              name: id,
              created: CREATED,
              context_length: ctx,
              pricing: { ...OPENROUTER_PRICING, request: "0", image: "0" },
              top_provider: {
                context_length: ctx,
                max_completion_tokens: 16384,
                is_moderated: false,
              },
            })),
          }),
      };
    case "venice":
      return {
        "GET /models": () =>
          json(200, {
            object: "list",
            type: "text",
            data: models.map((id) => ({
              id,
              type: "text",
              object: "model",
              created: CREATED,
              owned_by: "venice.ai",
              model_spec: { availableContextTokens: ctx, name: id },
            })),
          }),
      };
  }
}
