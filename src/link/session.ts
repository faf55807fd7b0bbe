// The coordinator session (PROTOCOL §1, §3, §6): dial, authenticate, advertise, heartbeat,
// read loop, close classification and reconnect with backoff. Owns the socket; hands job
// frames to the executor and aborts the jobs of a connection when it drops.

import { sleep } from "../timers.ts";
import { Backoff } from "./backoff.ts";
import type { Executor } from "../jobs/executor.ts";
import type { Identity } from "../identity/identity.ts";
import { log } from "../log.ts";
import * as wire from "./protocol.ts";
import { clip, MAX_ERROR_TEXT } from "../text.ts";
import { AGENT_VERSION } from "../version.ts";
import { connectWs, type WsClient, type WsClose, type WsConnectOptions } from "./ws.ts";

export type ConnectionState = "connecting" | "authenticated" | "backoff" | "draining" | "stopped";

/** What the status server shows of the connection. */
export interface SessionStatus {
  state: ConnectionState;
  since: number;
  nextRetryAt: number | undefined;
  lastAuthAt: number | undefined;
  reconnects: number;
  consecutiveFailures: number;
  lastError: string | undefined;
}

export interface SessionOptions {
  url: URL;
  caCerts?: string[];
  /** The identity in use; replaced after a provider_id is persisted. */
  identity: () => Identity;
  /** Persists a provider_id from auth_ok (atomically) and returns the updated identity. */
  saveProviderId: (providerId: string) => Promise<void>;
  enrollmentCode?: string | undefined;
  executor: Executor;
  /** Runs discovery as needed and returns the capabilities frame to send, with its key. */
  capabilities: () => Promise<Advert>;
  /** Returns the heartbeat frame to send. */
  heartbeat: () => string;
  backoff?: Backoff;
  connect?: (opts: WsConnectOptions) => Promise<WsClient>;
  handshakeTimeoutMs?: number;
  heartbeatMs?: number;
  /**
   * Ping interval; the link is declared dead after `deadLinkMs` without inbound bytes or
   * without flush progress, checked every {@link linkCheckMs}.
   */
  pingMs?: number;
  deadLinkMs?: number;
}

/** Dead-link defaults: a ping every 10 s; dead after 40 s without a sign of life. */
export const DEFAULT_PING_MS = 10_000;
export const DEFAULT_DEAD_LINK_MS = 40_000;

/**
 * How often the link is checked: 1/40 of the dead-link window (1 s at the defaults), at most
 * once per ping. A dead link is declared at most this long after its window has passed, so
 * the defaults detect a silent coordinator within 41 s.
 */
export function linkCheckMs(pingMs: number, deadLinkMs: number): number {
  return Math.max(1, Math.min(pingMs, Math.ceil(deadLinkMs / 40)));
}

/** A capabilities frame and a key of what it advertises (equal keys: nothing changed). */
export interface Advert {
  frame: string;
  key: string;
}

/** A failure before auth_ok: escalates the backoff (PROTOCOL §6). */
class PreAuthError extends Error {
  override name = "PreAuthError";
}

const UNREACHABLE_AFTER = 10;
/** Longest unknown frame type written to the debug log (characters). */
const MAX_FRAME_TYPE_SHOWN = 64;
const UNTRUSTED_CA_HINT = "the coordinator's certificate is not signed by a trusted CA: " +
  "put that CA in coordinator.ca_file (or DENO_CERT)";

/**
 * Keeps one authenticated connection to the coordinator alive until stopped.
 *
 * @example
 * ```ts
 * const session = new Session({ url, identity: () => id, ... });
 * const done = session.run();
 * await session.stop(1001, "agent shutting down");
 * await done;
 * ```
 */
export class Session {
  #o: SessionOptions;
  #backoff: Backoff;
  #ws: WsClient | undefined;
  #authenticated = false;
  /** Key of the last capabilities sent on this connection; undefined until the first. */
  #advertised: string | undefined;
  #stop = new AbortController();
  #status: SessionStatus = {
    state: "connecting",
    since: Date.now(),
    nextRetryAt: undefined,
    lastAuthAt: undefined,
    reconnects: 0,
    consecutiveFailures: 0,
    lastError: undefined,
  };

  constructor(opts: SessionOptions) {
    this.#o = opts;
    this.#backoff = opts.backoff ?? new Backoff();
  }

  /** A snapshot of the connection state. */
  get status(): Readonly<SessionStatus> {
    return { ...this.#status, consecutiveFailures: this.#backoff.failures };
  }

  /** The current connection when authenticated (for sends outside a job). */
  get authenticatedLink(): WsClient | undefined {
    return this.#authenticated ? this.#ws : undefined;
  }

  /**
   * Sends a fresh capabilities frame when what it advertises differs from what this
   * connection last got (or always, with `force`). Before the connection's first
   * capabilities frame is out, nothing is sent: that frame carries the latest state.
   */
  advertise(ad: Advert, force = false): boolean {
    const ws = this.authenticatedLink;
    if (!ws || this.#advertised === undefined) return false;
    if (!force && ad.key === this.#advertised) return false;
    this.#advertised = ad.key;
    return ws.send(ad.frame);
  }

  /** Marks the connection as draining (status only; the executor refuses new work). */
  markDraining(): void {
    this.#setState("draining");
  }

  /**
   * Stops reconnecting and closes the connection with `code`/`reason` (1001 on shutdown).
   * `run()` resolves afterwards.
   */
  async stop(code = 1001, reason = "agent shutting down"): Promise<void> {
    this.#stop.abort();
    const ws = this.#ws;
    if (ws) await ws.close(code, reason);
  }

  /** Connects, serves and reconnects until {@link stop}. */
  async run(): Promise<void> {
    const stop = this.#stop.signal;
    let attempt = 0;
    while (!stop.aborted) {
      if (attempt++ > 0) this.#status.reconnects++;
      const authenticated = await this.#attempt();
      if (stop.aborted) break;
      if (!authenticated) {
        this.#backoff.failure();
        if (this.#backoff.failures === UNREACHABLE_AFTER) {
          log.error(
            "coordinator unreachable: 10 attempts in a row failed before auth; still retrying",
            {
              url: this.#o.url.href,
              error: this.#status.lastError,
            },
          );
        }
      }
      const delay = this.#backoff.delay();
      this.#setState("backoff");
      this.#status.nextRetryAt = Date.now() + delay;
      log.info("reconnecting", { in: `${delay}ms`, failures: this.#backoff.failures });
      await sleep(delay, stop);
      this.#status.nextRetryAt = undefined;
    }
    this.#setState("stopped");
  }

  #setState(s: ConnectionState): void {
    if (this.#status.state === s) return;
    if (this.#status.state === "draining" && s !== "stopped") return;
    this.#status.state = s;
    this.#status.since = Date.now();
  }

  /** One connection, from dial to its end. Resolves true when it had authenticated. */
  async #attempt(): Promise<boolean> {
    const o = this.#o;
    this.#setState("connecting");
    const timeoutMs = o.handshakeTimeoutMs ?? 10_000;
    let ws: WsClient;
    const dial = new AbortController();
    const dialTimer = setTimeout(
      () => dial.abort(new Error(`no connection within ${timeoutMs} ms`)),
      timeoutMs,
    );
    try {
      ws = await (o.connect ?? connectWs)({
        url: o.url,
        ...(o.caCerts ? { caCerts: o.caCerts } : {}),
        signal: AbortSignal.any([this.#stop.signal, dial.signal]),
      });
    } catch (err) {
      if (this.#stop.signal.aborted) return false;
      const why = describe(dial.signal.aborted ? dial.signal.reason : err);
      this.#status.lastError = `connect failed: ${why}`;
      // rustls says "invalid peer certificate: UnknownIssuer": name the operator's fix too.
      const hint = /UnknownIssuer/.test(why) ? { hint: UNTRUSTED_CA_HINT } : {};
      log.warn("coordinator connect failed", { url: o.url.href, error: why, ...hint });
      return false;
    } finally {
      clearTimeout(dialTimer);
    }
    this.#ws = ws;
    const timers: ReturnType<typeof setInterval>[] = [];
    try {
      await this.#handshake(ws, timeoutMs);
      this.#backoff.reset();
      this.#authenticated = true;
      this.#status.lastAuthAt = Date.now();
      this.#status.lastError = undefined;
      this.#setState("authenticated");
      log.info("authenticated", { provider: o.identity().providerId ?? "<not yet enrolled>" });
      const caps = this.#o.capabilities().then(
        (ad) => {
          if (ws.send(ad.frame)) this.#advertised = ad.key;
        },
        (err) => log.error("capabilities not sent", { error: err }),
      );
      timers.push(setInterval(() => ws.send(o.heartbeat()), o.heartbeatMs ?? 15_000));
      timers.push(...this.#watchLink(ws));
      await this.#readLoop(ws);
      await caps;
      const close = await ws.closed;
      this.#logClose(close);
      return true;
    } catch (err) {
      if (!(err instanceof PreAuthError)) throw err;
      if (!this.#stop.signal.aborted) {
        this.#status.lastError = err.message;
        log.warn("authentication failed", { error: err.message });
      }
      return false;
    } finally {
      timers.forEach((t) => clearInterval(t));
      this.#authenticated = false;
      this.#advertised = undefined;
      this.#o.executor.abortAll("disconnected", ws);
      ws.abort("session ended");
      await ws.settled();
      this.#ws = undefined;
    }
  }

  async #handshake(ws: WsClient, timeoutMs: number): Promise<void> {
    const o = this.#o;
    const challenge = await nextFrame(ws, timeoutMs, "auth_challenge");
    if (challenge.type !== "auth_challenge") {
      throw new PreAuthError(`expected auth_challenge, got ${challenge.type}`);
    }
    const id = o.identity();
    const signature = await id.sign(challenge.nonce);
    const code = id.providerId === undefined ? o.enrollmentCode : undefined;
    ws.send(wire.authResponse(id.publicKeyB64, signature.toBase64(), AGENT_VERSION, code));
    const answer = await nextFrame(ws, timeoutMs, "auth_ok");
    if (answer.type === "auth_failed") {
      throw new PreAuthError(`auth_failed: ${clip(answer.reason, MAX_ERROR_TEXT)}`);
    }
    if (answer.type !== "auth_ok") throw new PreAuthError(`expected auth_ok, got ${answer.type}`);
    if (answer.providerId !== undefined && answer.providerId !== id.providerId) {
      try {
        await o.saveProviderId(answer.providerId);
        log.info("provider_id saved", { provider: answer.providerId });
      } catch (err) {
        log.error("could not save provider_id to the identity file", { error: err });
      }
    }
  }

  async #readLoop(ws: WsClient): Promise<void> {
    const ex = this.#o.executor;
    for (let ev = await ws.next(); ev !== null; ev = await ws.next()) {
      if (ev.kind !== "text") {
        log.warn(`${ev.kind.replace("_", " ")} frame ignored`, { bytes: ev.size });
        continue;
      }
      const r = wire.parseInbound(ev.text);
      if (!r.ok) {
        log.warn("malformed frame dropped", { reason: r.reason, bytes: ev.text.length });
        if (r.jobId !== undefined) ex.rejectMalformed(r.jobId, r.reason, ws);
        continue;
      }
      const f = r.frame;
      switch (f.type) {
        case "job":
          ex.submit(f, ws);
          break;
        case "job_cancel":
          if (ex.cancel(f.jobId)) log.info("job cancelled", { job: f.jobId });
          else log.debug("cancel for an unknown or finished job ignored", { job: f.jobId });
          break;
        case "other":
          log.debug("frame ignored", { type: clip(f.name, MAX_FRAME_TYPE_SHOWN) });
          break;
        default:
          log.debug("frame ignored after auth", { type: f.type });
      }
    }
  }

  /** Pings the coordinator and drops a link that shows no sign of life (dead-link detection). */
  #watchLink(ws: WsClient): ReturnType<typeof setInterval>[] {
    const pingMs = this.#o.pingMs ?? DEFAULT_PING_MS;
    const deadMs = this.#o.deadLinkMs ?? DEFAULT_DEAD_LINK_MS;
    let flushed = ws.flushedTotal;
    let flushedAt = performance.now();
    let backlogged = false;
    let drainingAt = -Infinity;
    // Checked more often than pinged: checking only at ping ticks let a link whose last pong
    // landed just after a tick live on until the fifth tick (50 s at the defaults).
    const check = setInterval(() => {
      if (!ws.open) return;
      const now = performance.now();
      const moved = ws.flushedTotal !== flushed;
      const backlog = ws.bufferedAmount > 0;
      // A queue that stays blocked yet drains shows the coordinator reading: a sign of life
      // as good as a pong, which on a slow uplink waits behind that queue.
      if (moved && backlog && backlogged) drainingAt = now;
      backlogged = backlog;
      if (moved || !backlog) {
        flushed = ws.flushedTotal;
        flushedAt = now;
      }
      const silent = now - Math.max(ws.lastInboundAt, drainingAt);
      const stuck = now - flushedAt;
      if (silent > deadMs || stuck > deadMs) {
        log.warn("coordinator link dead, reconnecting", {
          silentMs: Math.round(silent),
          unflushedBytes: ws.bufferedAmount,
        });
        ws.abort("dead link");
      }
    }, linkCheckMs(pingMs, deadMs));
    return [setInterval(() => ws.ping(), pingMs), check];
  }

  #logClose(c: WsClose): void {
    const planned = c.closeFrame && (c.code === 1001 || c.code === 1005);
    const fields = { code: c.code, reason: c.reason || undefined };
    if (this.#stop.signal.aborted) log.info("connection closed", fields);
    else if (planned) log.info("coordinator closed the connection (planned)", fields);
    else {
      this.#status.lastError = `connection lost (code ${c.code}${c.reason ? `, ${c.reason}` : ""})`;
      log.warn("connection lost unexpectedly", {
        ...fields,
        error: c.error ? describe(c.error) : undefined,
      });
    }
  }
}

/** Waits for the next frame during the handshake; anything else is a pre-auth failure. */
async function nextFrame(ws: WsClient, timeoutMs: number, want: string): Promise<wire.Inbound> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((
    r,
  ) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
  try {
    const ev = await Promise.race([ws.next(), timeout]);
    if (ev === "timeout") throw new PreAuthError(`no ${want} within ${timeoutMs} ms`);
    if (ev === null) {
      const c = await ws.closed;
      throw new PreAuthError(`connection closed before ${want} (code ${c.code})`);
    }
    if (ev.kind !== "text") throw new PreAuthError(`expected ${want}, got a ${ev.kind} frame`);
    const r = wire.parseInbound(ev.text);
    if (!r.ok) throw new PreAuthError(`expected ${want}: ${r.reason}`);
    return r.frame;
  } finally {
    clearTimeout(timer);
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
