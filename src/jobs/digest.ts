// The running SHA-256 of each job's relayed bytes (for its signed receipt). node:crypto's native
// hash costs ~0.2 µs per delta against ~0.9 µs for the TypeScript one, but loading the Node
// layer costs ~4 MB of RSS and ~15 ms of main-thread time once: it loads when the first job
// arrives (an idle agent never pays), and jobs that start before it is ready hash with
// src/jobs/sha256.ts (same digest).

import { Sha256 } from "./sha256.ts";

/** A running hash: feed pieces, then read the hex digest once. */
export interface StreamHash {
  update(bytes: Uint8Array): void;
  hex(): string;
}

type NodeCrypto = typeof import("node:crypto");
let native: NodeCrypto | undefined;
let loading: Promise<void> | undefined;

/** Starts loading the native hash (idempotent); resolves when it is ready or failed. */
export function preloadNativeHash(): Promise<void> {
  loading ??= import("node:crypto").then(
    (m) => void (native = m),
    () => {}, // stay on the TypeScript hash
  );
  return loading;
}

/**
 * A new running SHA-256: native when loaded, else the TypeScript implementation.
 *
 * @example
 * ```ts
 * const h = streamHash();
 * h.update(piece);
 * h.hex(); // 64 hex digits
 * ```
 */
export function streamHash(): StreamHash {
  if (!native) return new Sha256();
  const h = native.createHash("sha256");
  return { update: (b) => void h.update(b), hex: () => h.digest("hex") };
}
