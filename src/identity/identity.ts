// The provider's Ed25519 identity (PROTOCOL §7): create the key file (0600), load it with the
// public key checked against the seed, atomic provider_id rewrite, signing. The file's text
// format is file.ts's.

import {
  formatIdentityText,
  IdentityError,
  type IdentityFields,
  parseIdentityText,
  withProviderIdLine,
} from "./file.ts";
import { atomicWrite, syncDir } from "../fsutil.ts";

/** A loaded identity. The seed itself is not kept: only a non-extractable signing key. */
export interface Identity {
  readonly path: string;
  readonly publicKey: Uint8Array;
  /** Standard base64 (padded) of the 32-byte public key, as sent in `auth_response.pubkey`. */
  readonly publicKeyB64: string;
  /** RFC 3339 creation time, as written in the file. */
  readonly created: string;
  readonly providerId: string | undefined;
  /** Ed25519 signature (64 bytes) of `data`. */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

const PKCS8_ED25519_PREFIX = Uint8Array.fromHex("302e020100300506032b657004220420");
const MAX_FILE_BYTES = 64 * 1024;
const WINDOWS = Deno.build.os === "windows";

/** Imports a seed: derives its public key (via an extractable import) and a non-extractable signer. */
async function importSeed(seed: Uint8Array): Promise<{ publicKey: Uint8Array; key: CryptoKey }> {
  const pkcs8 = new Uint8Array(PKCS8_ED25519_PREFIX.length + 32);
  pkcs8.set(PKCS8_ED25519_PREFIX);
  pkcs8.set(seed, PKCS8_ED25519_PREFIX.length);
  try {
    const extractable = await crypto.subtle.importKey("pkcs8", pkcs8, "Ed25519", true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", extractable);
    delete jwk.d;
    if (typeof jwk.x !== "string") throw new IdentityError("WebCrypto returned no public key");
    const publicKey = Uint8Array.fromBase64(jwk.x, { alphabet: "base64url" });
    const key = await crypto.subtle.importKey("pkcs8", pkcs8, "Ed25519", false, ["sign"]);
    return { publicKey, key };
  } finally {
    pkcs8.fill(0);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

class Ed25519Identity implements Identity {
  readonly publicKeyB64: string;
  readonly #key: CryptoKey;

  constructor(
    readonly path: string,
    readonly publicKey: Uint8Array,
    readonly created: string,
    readonly providerId: string | undefined,
    key: CryptoKey,
  ) {
    this.publicKeyB64 = publicKey.toBase64();
    this.#key = key;
  }

  async sign(data: Uint8Array): Promise<Uint8Array> {
    const bytes = data.buffer instanceof ArrayBuffer
      ? data as Uint8Array<ArrayBuffer>
      : data.slice();
    return new Uint8Array(await crypto.subtle.sign("Ed25519", this.#key, bytes));
  }

  withProviderId(providerId: string): Identity {
    return new Ed25519Identity(this.path, this.publicKey, this.created, providerId, this.#key);
  }
}

function ioError(path: string, action: string, err: unknown): IdentityError {
  if (err instanceof Deno.errors.PermissionDenied || err instanceof Deno.errors.NotCapable) {
    return new IdentityError(
      `identity file ${path}: permission denied while ${action} it ` +
        "(it must be owned by, and readable only by, the agent's user)",
      { cause: err },
    );
  }
  const why = err instanceof Error ? err.message : String(err);
  return new IdentityError(`identity file ${path}: failed while ${action} it: ${why}`, {
    cause: err,
  });
}

/** Reads the file; undefined when it does not exist. */
async function readIdentityFile(
  path: string,
): Promise<{ text: string; mode: number | null } | undefined> {
  let info: Deno.FileInfo;
  let bytes: Uint8Array;
  try {
    info = await Deno.stat(path);
    if (!info.isFile) throw new IdentityError(`identity file ${path}: not a regular file`);
    if (info.size > MAX_FILE_BYTES) {
      throw new IdentityError(
        `identity file ${path}: too large (${info.size} bytes) to be a key file`,
      );
    }
    bytes = await Deno.readFile(path);
  } catch (err) {
    if (err instanceof IdentityError) throw err;
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw ioError(path, "reading", err);
  }
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes), mode: info.mode };
  } catch {
    throw new IdentityError(`identity file ${path}: not a text file`);
  } finally {
    bytes.fill(0);
  }
}

function parseAt(path: string, text: string): IdentityFields {
  try {
    return parseIdentityText(text);
  } catch (err) {
    if (err instanceof IdentityError) {
      throw new IdentityError(`identity file ${path}: ${err.message}`);
    }
    throw err;
  }
}

async function identityFrom(
  path: string,
  file: { text: string; mode: number | null },
): Promise<{ identity: Identity; warnings: string[] }> {
  const fields = parseAt(path, file.text);
  let derived: { publicKey: Uint8Array; key: CryptoKey };
  try {
    derived = await importSeed(fields.secret);
  } finally {
    fields.secret.fill(0);
  }
  if (!sameBytes(derived.publicKey, fields.publicKey)) {
    throw new IdentityError(
      `identity file ${path}: public does not match the key derived from secret ` +
        "(the file was damaged or edited; restore it from a backup)",
    );
  }
  const warnings: string[] = [];
  if (!WINDOWS && file.mode !== null && (file.mode & 0o077) !== 0) {
    const mode = (file.mode & 0o777).toString(8).padStart(4, "0");
    warnings.push(
      `identity file ${path} is accessible by group or others (mode ${mode}); run: chmod 600 ${path}`,
    );
  }
  const identity = new Ed25519Identity(
    path,
    fields.publicKey,
    fields.created,
    fields.providerId,
    derived.key,
  );
  return { identity, warnings };
}

/**
 * Loads an existing identity file; never creates one.
 *
 * @throws {IdentityError} when the file is missing, unreadable, malformed, or its public key
 * does not match its seed.
 * @example
 * ```ts
 * const { identity, warnings } = await loadIdentity(cfg.identity.keyPath);
 * for (const w of warnings) log.warn(w);
 * ```
 */
export async function loadIdentity(
  path: string,
): Promise<{ identity: Identity; warnings: string[] }> {
  const file = await readIdentityFile(path);
  if (file === undefined) throw new IdentityError(`identity file ${path} does not exist`);
  return await identityFrom(path, file);
}

function dirOf(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), WINDOWS ? path.lastIndexOf("\\") : -1);
  return i < 0 ? "." : i === 0 ? path.slice(0, 1) : path.slice(0, i);
}

/** RFC 3339 UTC with microseconds, e.g. `2026-01-02T03:04:05.678901Z`. */
function nowRfc3339Micros(): string {
  const t = performance.timeOrigin + performance.now();
  const ms = Math.floor(t);
  const micros = Math.min(999, Math.floor((t - ms) * 1000));
  return new Date(ms).toISOString().replace(/Z$/, `${String(micros).padStart(3, "0")}Z`);
}

/** Writes a new file with mode 0600 (failing if it exists) and fsyncs it when possible. */
async function writeSecretFile(path: string, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  const file = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
  try {
    if (!WINDOWS) await Deno.chmod(path, 0o600);
    let off = 0;
    while (off < bytes.length) off += await file.write(bytes.subarray(off));
    try {
      await file.sync();
    } catch {
      // fsync unsupported on this file system: the rename below is still atomic
    }
  } finally {
    file.close();
    bytes.fill(0);
  }
}

function tempPathFor(path: string): string {
  return `${path}.tmp-${crypto.randomUUID()}`;
}

/** Puts `text` at `path` only if nothing is there; false if another writer got there first. */
async function createExclusive(path: string, text: string): Promise<boolean> {
  const tmp = tempPathFor(path);
  await writeSecretFile(tmp, text);
  try {
    await Deno.link(tmp, path);
    await syncDir(dirOf(path));
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) return false;
    // No hard links here (some network/FUSE file systems): exclusive create in place.
    try {
      await writeSecretFile(path, text);
      return true;
    } catch (err2) {
      if (err2 instanceof Deno.errors.AlreadyExists) return false;
      throw err2;
    }
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

/**
 * Loads the identity file, or creates it (mode 0600, parent directories 0700) with a fresh
 * key when it does not exist. Never overwrites an existing file, even one created concurrently.
 *
 * @throws {IdentityError} when an existing file is invalid or the file cannot be written.
 * @example
 * ```ts
 * const { identity, created } = await loadOrCreateIdentity(cfg.identity.keyPath);
 * if (created) log.info("new identity", { pubkey: identity.publicKeyB64 });
 * ```
 */
export async function loadOrCreateIdentity(
  path: string,
): Promise<{ identity: Identity; created: boolean; warnings: string[] }> {
  const existing = await readIdentityFile(path);
  if (existing !== undefined) return { ...(await identityFrom(path, existing)), created: false };
  const seed = crypto.getRandomValues(new Uint8Array(32));
  const created = nowRfc3339Micros();
  let derived: { publicKey: Uint8Array; key: CryptoKey };
  let text: string;
  try {
    derived = await importSeed(seed);
    text = formatIdentityText(created, seed, derived.publicKey);
  } finally {
    seed.fill(0);
  }
  let wrote: boolean;
  try {
    await Deno.mkdir(dirOf(path), { recursive: true, mode: 0o700 });
    wrote = await createExclusive(path, text);
  } catch (err) {
    throw ioError(path, "creating", err);
  }
  if (!wrote) return { ...(await loadIdentity(path)), created: false };
  const identity = new Ed25519Identity(path, derived.publicKey, created, undefined, derived.key);
  return { identity, created: true, warnings: [] };
}

const saving = new Map<string, Promise<void>>();

/** Runs `fn` after every earlier call for the same key has settled (in-process ordering). */
function serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const run = (saving.get(key) ?? Promise.resolve()).then(fn);
  const tail: Promise<void> = run.then(done, done);
  function done() {
    if (saving.get(key) === tail) saving.delete(key);
  }
  saving.set(key, tail);
  return run;
}

/**
 * Persists `providerId` in the identity file (PROTOCOL §1 step 4): re-reads the file, sets the
 * provider_id line (other lines, unknown keys included, are kept), writes a 0600 temp file in
 * the same directory, fsyncs it and renames it over the original. Concurrent calls never leave
 * a partial file; within one process the last call wins.
 *
 * @throws {IdentityError} when the id is not a single-line value, the file now holds another
 * key, or the write fails.
 * @example
 * ```ts
 * identity = await saveProviderId(identity, frame.provider_id);
 * ```
 */
export function saveProviderId(identity: Identity, providerId: string): Promise<Identity> {
  const path = identity.path;
  const control = [...providerId].some((c) => c < " " || c === "\x7f");
  if (providerId === "" || providerId.trim() !== providerId || control) {
    return Promise.reject(
      new IdentityError(
        `provider_id ${JSON.stringify(providerId.slice(0, 80))} cannot be stored: ` +
          "it must be a non-empty single-line value without surrounding spaces",
      ),
    );
  }
  return serialized(path, async () => {
    const file = await readIdentityFile(path);
    if (file === undefined) throw new IdentityError(`identity file ${path} no longer exists`);
    const fields = parseAt(path, file.text);
    fields.secret.fill(0);
    if (!sameBytes(fields.publicKey, identity.publicKey)) {
      throw new IdentityError(
        `identity file ${path} now holds a different key; not saving provider_id`,
      );
    }
    if (fields.providerId !== providerId) {
      const bytes = new TextEncoder().encode(withProviderIdLine(file.text, providerId));
      try {
        await atomicWrite(path, bytes); // temp, fsync, rename, directory fsync
      } catch (err) {
        throw ioError(path, "rewriting", err);
      } finally {
        bytes.fill(0);
      }
    }
    if (identity instanceof Ed25519Identity) return identity.withProviderId(providerId);
    const { created, publicKey, publicKeyB64 } = identity;
    return { path, publicKey, publicKeyB64, created, providerId, sign: (d) => identity.sign(d) };
  });
}
