// An abortable sleep, shared by the session's backoff, the drain, the flush loops and the vLLM
// queue poll: resolves after `ms`, or at once when `signal` aborts (never rejects).

/**
 * Waits `ms` milliseconds, or less when `signal` aborts.
 *
 * @example
 * ```ts
 * await sleep(1000, controller.signal);
 * ```
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
