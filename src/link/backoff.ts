// Reconnect delays of PROTOCOL §6: base 1 s, doubling per consecutive pre-auth failure,
// capped at 60 s, each multiplied by a random factor in [0.8, 1.2); reset after auth.

export interface BackoffOptions {
  baseMs?: number;
  capMs?: number;
  /** Returns a number in [0, 1); injectable so tests can pin the jitter. */
  random?: () => number;
}

/**
 * Delay schedule for reconnect attempts.
 *
 * @example
 * ```ts
 * const b = new Backoff();
 * b.failure();          // a pre-auth failure
 * await sleep(b.delay()); // ≈ 1 s, then ≈ 2 s, 4 s, … 60 s
 * b.reset();            // after auth_ok
 * ```
 */
export class Backoff {
  readonly baseMs: number;
  readonly capMs: number;
  #random: () => number;
  #failures = 0;

  constructor(opts: BackoffOptions = {}) {
    this.baseMs = opts.baseMs ?? 1000;
    this.capMs = opts.capMs ?? 60_000;
    this.#random = opts.random ?? Math.random;
  }

  /** Consecutive pre-auth failures since the last reset. */
  get failures(): number {
    return this.#failures;
  }

  /** Records a pre-auth failure: the next delay doubles. */
  failure(): void {
    this.#failures++;
  }

  /** Back to the base delay (a session authenticated, or a planned close). */
  reset(): void {
    this.#failures = 0;
  }

  /** The delay before the next attempt, jitter applied. */
  delay(): number {
    const exp = Math.max(0, this.#failures - 1);
    const raw = Math.min(this.capMs, this.baseMs * 2 ** Math.min(exp, 30));
    return Math.round(raw * (0.8 + 0.4 * this.#random()));
  }
}
