// Log capture for tests: the agent's log lines (src/log.ts) collected while a function runs.

import { setSink } from "../../src/log.ts";

/**
 * Runs `fn` with every log line collected into the array it receives; restores the sink after.
 *
 * @example
 * ```ts
 * await captureLogs(async (lines) => { await run(); assert.ok(lines.some((l) => l.includes("x"))); });
 * ```
 */
export async function captureLogs<T>(fn: (lines: string[]) => Promise<T>): Promise<T> {
  const lines: string[] = [];
  const previous = setSink((line) => lines.push(line));
  try {
    return await fn(lines);
  } finally {
    setSink(previous);
  }
}
