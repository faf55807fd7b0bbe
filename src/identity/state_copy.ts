// The provider_id when the identity file is read-only (a Kubernetes Secret, a `:ro` mount): kept
// in `provider_id.json` in the writable state directory, bound to the identity's public key, and
// laid over the identity at load. The identity file stays the home of provider_id (PROTOCOL §7)
// whenever it can be written.

import { type Identity, saveProviderId } from "./identity.ts";
import { IdentityError } from "./file.ts";

const FILE = "provider_id.json";
const WINDOWS = Deno.build.os === "windows";

/** Where the state copy lives in `stateDir`. */
export function stateCopyPath(stateDir: string): string {
  return `${stateDir.replace(/[\\/]+$/, "")}/${FILE}`;
}

function withId(identity: Identity, providerId: string): Identity {
  const { path, publicKey, publicKeyB64, created } = identity;
  return { path, publicKey, publicKeyB64, created, providerId, sign: (d) => identity.sign(d) };
}

/**
 * The identity with the provider_id of the state copy when one exists for the same public key
 * (it was written because the identity file could not be); the identity unchanged otherwise. A
 * copy for another key or an unreadable one is ignored and reported in `warning`.
 *
 * @example
 * ```ts
 * const { identity } = await withStateCopy(loaded, "/var/lib/usepod-agent");
 * ```
 */
export async function withStateCopy(
  identity: Identity,
  stateDir: string,
): Promise<{ identity: Identity; warning?: string }> {
  const path = stateCopyPath(stateDir);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { identity };
    return { identity, warning: `cannot read ${path}: ${(err as Error).message}` };
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return { identity, warning: `${path} is not JSON; ignored` };
  }
  const d = doc as { public?: unknown; provider_id?: unknown } | null;
  if (typeof d?.provider_id !== "string" || typeof d.public !== "string") {
    return { identity, warning: `${path} lacks "public" or "provider_id"; ignored` };
  }
  if (d.public !== identity.publicKeyB64) {
    return { identity, warning: `${path} belongs to another public key; ignored` };
  }
  if (d.provider_id === identity.providerId) return { identity };
  return { identity: withId(identity, d.provider_id) };
}

async function writeCopy(path: string, publicKeyB64: string, providerId: string): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  const text = JSON.stringify({ public: publicKeyB64, provider_id: providerId }) + "\n";
  try {
    await Deno.writeTextFile(tmp, text, { mode: 0o600, createNew: true });
    if (!WINDOWS) await Deno.chmod(tmp, 0o600);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}

/**
 * Persists `providerId`: in the identity file when it can be written (and then drops a state
 * copy, which is now stale), else in the state copy in `stateDir`. The returned identity carries
 * the id either way; `where` says which file holds it.
 *
 * @throws {IdentityError} for an invalid id or an identity file holding another key (as
 * saveProviderId), or when neither the identity file nor the state directory can be written.
 * @example
 * ```ts
 * const { identity, where } = await persistProviderId(identity, "prov_123", stateDir);
 * ```
 */
export async function persistProviderId(
  identity: Identity,
  providerId: string,
  stateDir: string,
): Promise<{ identity: Identity; where: string }> {
  const copy = stateCopyPath(stateDir);
  try {
    const saved = await saveProviderId(identity, providerId);
    await Deno.remove(copy).catch(() => {});
    return { identity: saved, where: identity.path };
  } catch (err) {
    // Only a failed write falls back; a bad id or a replaced key file is the caller's to see.
    if (!(err instanceof IdentityError) || err.cause === undefined) throw err;
    try {
      await Deno.mkdir(stateDir, { recursive: true, mode: 0o700 });
      await writeCopy(copy, identity.publicKeyB64, providerId);
    } catch (err2) {
      throw new IdentityError(
        `cannot save provider_id: ${err.message}; and the state directory ${stateDir} is not ` +
          `writable either (${
            (err2 as Error).message
          }); set USEPOD_STATE_DIR to a writable directory`,
        { cause: err2 },
      );
    }
    return { identity: withId(identity, providerId), where: copy };
  }
}
