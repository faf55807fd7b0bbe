// The coordinator side of pairing (PROTOCOL §8) for the tests and the dev coordinator: issues pair
// codes, answers polls (pending / expired / active), and approves a code by API, by the /host/pair
// page, or automatically. Plug `handle` into TestCoordinator's `http` option.
// deno-lint-ignore-file camelcase

/** One issued pair code and what the agent reported while polling it. */
export interface PairRecord {
  pair_code: string;
  poll_token: string;
  agent_pubkey: string;
  expires_at: number;
  state: "pending" | "approved" | "expired";
  /** Every poll body's `capabilities`, in order. */
  polls: Record<string, unknown>[];
  host_token: string;
  provider_id: string;
}

/** A `model_config` entry of an active poll. */
export interface ModelConfig {
  model_id: string;
  input_per_1m: number;
  output_per_1m: number;
  max_concurrent?: number;
}

export interface PairingOptions {
  /** Lifetime of a pair code; default 10 minutes. */
  ttlMs?: number;
  /** Approve every code at its first poll. */
  autoApprove?: boolean;
  /**
   * `model_config` of an approved code from the last polled capabilities; default every model
   * of every backend at 500_000 / 750_000 micro-USDC, max_concurrent 4.
   */
  modelConfig?: (capabilities: Record<string, unknown>) => ModelConfig[];
  /** provider_id for a public key; default `prov-<first 8 chars>` like TestCoordinator. */
  providerId?: (pubkey: string) => string;
  /** Answer every request with this HTTP status instead (for error tests). */
  failWith?: number;
}

const ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

function randomCode(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  const chars = [...bytes].map((b) => ALPHABET[b % ALPHABET.length]).join("");
  return `${chars.slice(0, 4)}-${chars.slice(4)}`;
}

function normalize(code: string): string {
  return code.toUpperCase().replace(/[^A-Z0-9]/g, "");
}

function defaultModelConfig(caps: Record<string, unknown>): ModelConfig[] {
  const backends = Array.isArray(caps.backends) ? caps.backends : [];
  const ids = new Set<string>();
  for (const b of backends) for (const m of b?.models ?? []) if (typeof m === "string") ids.add(m);
  return [...ids].sort().map((model_id) => ({
    model_id,
    input_per_1m: 500_000,
    output_per_1m: 750_000,
    max_concurrent: 4,
  }));
}

/**
 * Pairing endpoints: `POST /v1/host/pair/issue`, `POST /v1/host/pair/poll`, and for people and
 * scripts `GET|POST /host/pair` (a form) and `POST /dev/pair/approve {"pair_code"}`.
 *
 * @example
 * ```ts
 * const pairing = new PairingService();
 * await using coord = await TestCoordinator.start({ http: (req) => pairing.handle(req) });
 * const record = await pairing.issued(0);
 * pairing.approve(record.pair_code);
 * ```
 */
export class PairingService {
  readonly records: PairRecord[] = [];
  #opts: PairingOptions;
  #issueWaiters: { n: number; resolve: (r: PairRecord) => void }[] = [];
  #pollWaiters: { record: PairRecord; n: number; resolve: () => void }[] = [];

  constructor(opts: PairingOptions = {}) {
    this.#opts = opts;
  }

  /** The n-th (0-based) issued code, once issued. */
  issued(n: number): Promise<PairRecord> {
    const r = this.records[n];
    if (r) return Promise.resolve(r);
    return new Promise((resolve) => this.#issueWaiters.push({ n, resolve }));
  }

  /** Resolves once `record` has been polled `n` times. */
  polled(record: PairRecord, n: number): Promise<void> {
    if (record.polls.length >= n) return Promise.resolve();
    return new Promise((resolve) => this.#pollWaiters.push({ record, n, resolve }));
  }

  /** Approves a pending code (any case, dashes optional); false when unknown or not pending. */
  approve(code: string): boolean {
    const r = this.#find(code);
    if (!r || this.#stateOf(r) !== "pending") return false;
    r.state = "approved";
    return true;
  }

  /** Makes a code expire now. */
  expire(code: string): boolean {
    const r = this.#find(code);
    if (!r) return false;
    r.state = "expired";
    return true;
  }

  /** The routes, or undefined for other paths (to chain with other handlers). */
  handle(req: Request): Promise<Response> | undefined {
    const path = new URL(req.url).pathname;
    const routes: Record<string, (req: Request) => Promise<Response>> = {
      "POST /v1/host/pair/issue": (r) => this.#issue(r),
      "POST /v1/host/pair/poll": (r) => this.#poll(r),
      "POST /dev/pair/approve": (r) => this.#approveApi(r),
      "GET /host/pair": () => Promise.resolve(page()),
      "POST /host/pair": (r) => this.#approveForm(r),
    };
    const route = routes[`${req.method} ${path}`];
    if (!route) return undefined;
    if (this.#opts.failWith !== undefined) {
      return Promise.resolve(
        Response.json({ error: "scripted failure" }, { status: this.#opts.failWith }),
      );
    }
    return route(req);
  }

  #find(code: string): PairRecord | undefined {
    const want = normalize(code);
    return this.records.find((r) => normalize(r.pair_code) === want);
  }

  #stateOf(r: PairRecord): PairRecord["state"] {
    if (r.state === "pending" && Date.now() >= r.expires_at) r.state = "expired";
    return r.state;
  }

  async #issue(req: Request): Promise<Response> {
    const body = await req.json().catch(() => undefined) as Record<string, unknown> | undefined;
    const pubkey = body?.agent_pubkey;
    let ok = false;
    try {
      ok = typeof pubkey === "string" && Uint8Array.fromBase64(pubkey).length === 32;
    } catch {
      ok = false;
    }
    if (!ok) {
      return Response.json({ error: "agent_pubkey must be a base64 Ed25519 key" }, { status: 400 });
    }
    const key = pubkey as string;
    const record: PairRecord = {
      pair_code: randomCode(),
      poll_token: crypto.randomUUID(),
      agent_pubkey: key,
      expires_at: Date.now() + (this.#opts.ttlMs ?? 10 * 60_000),
      state: "pending",
      polls: [],
      host_token: `hst_${crypto.randomUUID().replaceAll("-", "")}`,
      provider_id: this.#opts.providerId?.(key) ?? `prov-${key.slice(0, 8)}`,
    };
    this.records.push(record);
    const n = this.records.length - 1;
    this.#issueWaiters = this.#issueWaiters.filter((
      w,
    ) => (w.n === n ? (w.resolve(record), false) : true));
    return Response.json({
      pair_code: record.pair_code,
      poll_token: record.poll_token,
      expires_at: new Date(record.expires_at).toISOString(),
    });
  }

  async #poll(req: Request): Promise<Response> {
    const body = await req.json().catch(() => undefined) as Record<string, unknown> | undefined;
    const record = this.records.find((r) => r.poll_token === body?.poll_token);
    if (!record) return Response.json({ error: "unknown poll_token" }, { status: 404 });
    const caps = (body?.capabilities ?? {}) as Record<string, unknown>;
    record.polls.push(caps);
    this.#pollWaiters = this.#pollWaiters.filter((w) =>
      w.record === record && record.polls.length >= w.n ? (w.resolve(), false) : true
    );
    if (this.#opts.autoApprove) this.approve(record.pair_code);
    const state = this.#stateOf(record);
    if (state !== "approved") return Response.json({ status: state });
    return Response.json({
      status: "active",
      host_token: record.host_token,
      provider_id: record.provider_id,
      model_config: (this.#opts.modelConfig ?? defaultModelConfig)(caps),
    });
  }

  async #approveApi(req: Request): Promise<Response> {
    const body = await req.json().catch(() => undefined) as Record<string, unknown> | undefined;
    const code = body?.pair_code;
    if (typeof code !== "string") {
      return Response.json({ error: "body needs pair_code" }, { status: 400 });
    }
    if (!this.approve(code)) {
      return Response.json({ error: "no pending pair code like that" }, { status: 404 });
    }
    return Response.json({ approved: code });
  }

  async #approveForm(req: Request): Promise<Response> {
    const form = await req.formData().catch(() => undefined);
    const code = form?.get("pair_code");
    const ok = typeof code === "string" && this.approve(code);
    return page(
      ok
        ? `Approved ${code}: the agent finishes its setup now.`
        : "No pending pair code like that.",
    );
  }
}

function page(message = ""): Response {
  const escaped = message.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return new Response(
    `<!doctype html><meta charset="utf-8"><title>Pair a host (dev coordinator)</title>
<h1>Pair a host</h1><p>${escaped}</p>
<form method="post"><input name="pair_code" placeholder="ABCD-2345" autofocus>
<button>Approve</button></form>`,
    { headers: { "content-type": "text/html; charset=utf-8" } },
  );
}
