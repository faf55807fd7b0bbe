// Bounded text: strings a peer chose (a coordinator's model id, a backend's error body, an
// auth_failed reason) cut to a documented length before they are logged, stored or shown.

/** Longest model id kept in recent jobs, logs and refusal messages (characters). */
export const MAX_SHOWN_MODEL = 256;

/** Longest error text kept in a `job_error` message, recent jobs, status and logs (characters). */
export const MAX_ERROR_TEXT = 1024;

/**
 * `text` when it has at most `max` characters, else its first `max - 1` and `…` (never splitting
 * a surrogate pair).
 *
 * @example
 * ```ts
 * clip("abcdef", 4); // "abc…"
 * clip("abc", 4); // "abc"
 * ```
 */
export function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = Math.max(0, max - 1);
  const c = text.charCodeAt(end - 1);
  if (c >= 0xd800 && c <= 0xdbff) end--; // a high surrogate whose pair would be cut off
  return text.slice(0, end) + "…";
}
