// Device-flow pairing over HTTP (PROTOCOL §8), the agent's side: the coordinator's URLs derived
// from its https base, `POST /v1/host/pair/issue` and `POST /v1/host/pair/poll`, with every
// answer checked before use. Used by the `setup` command (src/cli/setup.ts).

import type { BackendKind } from "../config/config.ts";

/** The production coordinator's https base. */
export const DEFAULT_COORDINATOR = "https://api.usepod.ai";
/** Where operators enter a pair code for the production coordinator. */
const PRODUCTION_PAIR_PAGE = "https://usepod.ai/host/pair";

/** A pairing request failed: unreachable, an HTTP error, or an answer that is not §8's. */
export class PairingError extends Error {
  override name = "PairingError";
  /** Worth retrying: the coordinator was unreachable or answered 5xx. */
  readonly transient: boolean;
  constructor(message: string, options?: ErrorOptions & { transient?: boolean }) {
    super(message, options);
    this.transient = options?.transient ?? false;
  }
}

/** What one coordinator base gives: its HTTP API base, the agent's WebSocket URL, the pair page. */
export interface CoordinatorUrls {
  /** `https://host[/path]` without a trailing slash. */
  base: string;
  /** `wss://host[/path]/provider/connect` (`ws://` for an http base). */
  connectUrl: string;
  /** `https://usepod.ai/host/pair` for production, else `<base>/host/pair`. */
  pairPage: string;
}

/**
 * Derives the pairing and connect URLs from a coordinator's https base. An http base is accepted
 * only with `allowInsecure` (the dev coordinator).
 *
 * @throws {RangeError} with a message for the operator when the base is not usable.
 * @example
 * ```ts
 * coordinatorUrls("https://api.usepod.ai", false).connectUrl;
 * // "wss://api.usepod.ai/provider/connect"
 * ```
 */
export function coordinatorUrls(base: string, allowInsecure: boolean): CoordinatorUrls {
  const u = URL.parse(base);
  if (!u || (u.protocol !== "https:" && u.protocol !== "http:")) {
    throw new RangeError(
      `not the coordinator's https base: ${JSON.stringify(base)} (e.g. ${DEFAULT_COORDINATOR})`,
    );
  }
  if (u.protocol === "http:" && !allowInsecure) {
    throw new RangeError(`${base} is plain http: use https:// or pass --allow-insecure`);
  }
  if (u.search !== "" || u.hash !== "" || u.username !== "" || u.password !== "") {
    throw new RangeError(`${base}: the coordinator base takes no query, fragment or user`);
  }
  const clean = `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, "")}`;
  const ws = `${u.protocol === "https:" ? "wss:" : "ws:"}//${u.host}${
    u.pathname.replace(/\/+$/, "")
  }`;
  return {
    base: clean,
    connectUrl: `${ws}/provider/connect`,
    pairPage: clean === DEFAULT_COORDINATOR ? PRODUCTION_PAIR_PAGE : `${clean}/host/pair`,
  };
}

/** A backend as the poll's `capabilities.backends` reports it. */
export interface PairBackend {
  kind: BackendKind;
  url: string;
  models: string[];
}

/** `POST /v1/host/pair/issue`'s answer. */
export interface PairCode {
  pairCode: string;
  pollToken: string;
  expiresAt: Date;
}

/** One entry of an `active` poll's `model_config`. */
export interface ModelConfigEntry {
  modelId: string;
  inputPer1m: number;
  outputPer1m: number;
  maxConcurrent: number | undefined;
}

/** `POST /v1/host/pair/poll`'s answer. `hostToken` is a secret: never print or log it. */
export type PollResult =
  | { status: "pending" }
  | { status: "expired" }
  | {
    status: "active";
    hostToken: string;
    providerId: string;
    modelConfig: ModelConfigEntry[];
  };

/** Network options of a pairing request. */
export interface PairRequestOptions {
  fetch?: typeof fetch;
  signal?: AbortSignal;
  /** Per request; default 10 s. */
  timeoutMs?: number;
}

async function postJson(
  url: string,
  body: unknown,
  opts: PairRequestOptions,
): Promise<Record<string, unknown>> {
  const timeout = AbortSignal.timeout(opts.timeoutMs ?? 10_000);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  let res: Response;
  try {
    res = await (opts.fetch ?? fetch)(url, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    const why = timeout.aborted
      ? "no answer in time"
      : err instanceof Error
      ? err.message.split("\n")[0]
      : String(err);
    throw new PairingError(`cannot reach the coordinator at ${new URL(url).origin}: ${why}`, {
      cause: err,
      transient: true,
    });
  }
  let text: string;
  try {
    text = await res.text();
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    throw new PairingError(`${url}: the answer was cut off`, { cause: err, transient: true });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  const obj = typeof json === "object" && json !== null && !Array.isArray(json)
    ? json as Record<string, unknown>
    : undefined;
  if (res.status !== 200) {
    const said = typeof obj?.error === "string" ? `: ${obj.error.slice(0, 200)}` : "";
    throw new PairingError(`${url} answered HTTP ${res.status}${said}`, {
      transient: res.status >= 500,
    });
  }
  if (!obj) throw new PairingError(`${url} did not answer with a JSON object`);
  return obj;
}

function text(obj: Record<string, unknown>, key: string, where: string): string {
  const v = obj[key];
  // deno-lint-ignore no-control-regex
  if (typeof v !== "string" || v === "" || v.length > 4096 || /[\x00-\x1f\x7f]/.test(v)) {
    throw new PairingError(`${where}: "${key}" is missing or not a single-line string`);
  }
  return v;
}

function price(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Asks the coordinator for a pair code for `pubkey` (base64 of the Ed25519 public key).
 *
 * @throws {PairingError} when the coordinator is unreachable or answers something else.
 * @example
 * ```ts
 * const code = await issuePairCode(urls.base, identity.publicKeyB64);
 * ```
 */
export async function issuePairCode(
  base: string,
  pubkey: string,
  opts: PairRequestOptions = {},
): Promise<PairCode> {
  const where = "pair/issue";
  const obj = await postJson(`${base}/v1/host/pair/issue`, { "agent_pubkey": pubkey }, opts);
  const pairCode = text(obj, "pair_code", where);
  if (pairCode.length > 64) throw new PairingError(`${where}: "pair_code" is too long`);
  const pollToken = text(obj, "poll_token", where);
  const expiresAt = new Date(text(obj, "expires_at", where));
  if (Number.isNaN(expiresAt.getTime())) {
    throw new PairingError(`${where}: "expires_at" is not an RFC 3339 time`);
  }
  return { pairCode, pollToken, expiresAt };
}

/**
 * Polls once for the pair code's state, reporting the detected backends.
 *
 * @throws {PairingError} when the coordinator is unreachable or answers something else.
 * @example
 * ```ts
 * const r = await pollPair(urls.base, code.pollToken, backends, AGENT_VERSION);
 * if (r.status === "active") await saveProviderId(identity, r.providerId);
 * ```
 */
export async function pollPair(
  base: string,
  pollToken: string,
  backends: PairBackend[],
  agentVersion: string,
  opts: PairRequestOptions = {},
): Promise<PollResult> {
  const where = "pair/poll";
  const obj = await postJson(`${base}/v1/host/pair/poll`, {
    "poll_token": pollToken,
    capabilities: { backends, "agent_version": agentVersion },
  }, opts);
  const status = obj.status;
  if (status === "pending" || status === "expired") return { status };
  if (status !== "active") {
    throw new PairingError(`${where}: unknown status ${JSON.stringify(status)}`);
  }
  const hostToken = text(obj, "host_token", where);
  const providerId = text(obj, "provider_id", where);
  const raw = obj["model_config"] ?? [];
  if (!Array.isArray(raw)) throw new PairingError(`${where}: "model_config" is not an array`);
  const modelConfig = raw.map((m: unknown, i): ModelConfigEntry => {
    const at = `${where}: model_config[${i}]`;
    if (typeof m !== "object" || m === null) throw new PairingError(`${at} is not an object`);
    const e = m as Record<string, unknown>;
    const modelId = text(e, "model_id", at);
    const input = e["input_per_1m"];
    const output = e["output_per_1m"];
    if (!price(input) || !price(output)) {
      throw new PairingError(`${at}: prices must be integers >= 0`);
    }
    const mc = e["max_concurrent"];
    if (mc !== undefined && !(typeof mc === "number" && Number.isSafeInteger(mc) && mc >= 1)) {
      throw new PairingError(`${at}: "max_concurrent" must be an integer >= 1`);
    }
    return { modelId, inputPer1m: input, outputPer1m: output, maxConcurrent: mc };
  });
  return { status, hostToken, providerId, modelConfig };
}
