// Job deadlines (PROTOCOL §4 deadline_ms) on one timer instead of one per job: a job adds its
// deadline and removes it when it ends, both O(1); the timer is set for the earliest deadline and
// only moved when a new one comes sooner. Short jobs end long before their deadline, so the usual
// job costs a Set insert and delete, not a timer created and cleared (~3-9 µs each here).

/** setTimeout's longest delay; a later deadline is reached in steps. */
const MAX_DELAY_MS = 2 ** 31 - 1;

interface Entry {
  at: number;
  fire: () => void;
}

/**
 * Deadlines sharing one timer.
 *
 * @example
 * ```ts
 * const deadlines = new Deadlines();
 * const clear = deadlines.add(60_000, () => controller.abort(new Stop("deadline")));
 * // … the job ends first:
 * clear();
 * ```
 */
export class Deadlines {
  readonly #entries = new Set<Entry>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  readonly #now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Deadlines pending. */
  get size(): number {
    return this.#entries.size;
  }

  /** Calls `fire` once `ms` from now unless the returned function is called first. */
  add(ms: number, fire: () => void): () => void {
    const entry = { at: this.#now() + Math.max(0, ms), fire };
    this.#entries.add(entry);
    if (entry.at < this.#timerAt) this.#arm(entry.at);
    return () => {
      if (!this.#entries.delete(entry) || this.#entries.size > 0) return;
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#timerAt = Infinity;
    };
  }

  #arm(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = at;
    const delay = Math.min(MAX_DELAY_MS, Math.max(0, at - this.#now()));
    this.#timer = setTimeout(() => this.#expire(), delay);
  }

  /** Fires every deadline that has come, then sets the timer for the earliest left. */
  #expire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = this.#now();
    let next = Infinity;
    const due: Entry[] = [];
    for (const e of this.#entries) {
      // Timers may fire a fraction of a millisecond early.
      if (e.at <= now + 1) due.push(e);
      else if (e.at < next) next = e.at;
    }
    for (const e of due) this.#entries.delete(e);
    if (next < Infinity) this.#arm(next);
    for (const e of due) e.fire();
  }
}
