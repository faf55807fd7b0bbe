// The identity file's text format (PROTOCOL §7), shared with the Rust agent: the marker block,
// parsing and validation of its fields, the text of a new file and the provider_id line rewrite.
// No disk access and no crypto here: identity.ts loads, creates, saves and signs.

/** The identity file is missing, unreadable, malformed or inconsistent. Never quotes the seed. */
export class IdentityError extends Error {
  override name = "IdentityError";
}

/** The fields of an identity file, as returned by {@link parseIdentityText}. */
export interface IdentityFields {
  version: number;
  created: string;
  /** The 32-byte seed: the caller must `fill(0)` it once done. */
  secret: Uint8Array;
  publicKey: Uint8Array;
  providerId: string | undefined;
  /** Keys between the markers this agent does not know (kept in the file on rewrite). */
  unknownKeys: string[];
}

const BEGIN = "-----BEGIN USEPOD AGENT KEY-----";
const END = "-----END USEPOD AGENT KEY-----";
const KNOWN = ["version", "created", "secret", "public", "provider_id"];

interface Block {
  lines: string[];
  begin: number;
  end: number;
}

function findBlock(text: string): Block {
  if (text.trim() === "") throw new IdentityError("the file is empty");
  const lines = text.split(/\r?\n/);
  const begin = lines.findIndex((l) => l.trim() === BEGIN);
  if (begin < 0) {
    throw new IdentityError(`missing the ${BEGIN} line (not a usepod agent key file?)`);
  }
  const end = lines.findIndex((l, i) => i > begin && l.trim() === END);
  if (end < 0) throw new IdentityError(`missing the ${END} line (file truncated?)`);
  return { lines, begin, end };
}

function keyOf(line: string): string | undefined {
  const colon = line.indexOf(":");
  return colon < 0 ? undefined : line.slice(0, colon).trim();
}

function decodeKey(name: string, value: string | undefined): Uint8Array {
  if (value === undefined || value === "") throw new IdentityError(`${name} is missing`);
  let bytes: Uint8Array;
  try {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value)) throw new SyntaxError("bad alphabet");
    bytes = Uint8Array.fromBase64(value, { lastChunkHandling: "strict" });
  } catch {
    throw new IdentityError(`${name} is not valid base64 (standard alphabet, padded)`);
  }
  if (bytes.length !== 32) {
    bytes.fill(0);
    throw new IdentityError(`${name} must be 32 bytes, got ${bytes.length}`);
  }
  return bytes;
}

/**
 * Parses identity file text (PROTOCOL §7) without touching the disk or checking that the
 * public key matches the seed (that needs WebCrypto, see {@link loadIdentity}).
 *
 * @throws {IdentityError} naming what is wrong (never quoting the secret).
 * @example
 * ```ts
 * const f = parseIdentityText(await Deno.readTextFile(path));
 * f.secret.fill(0);
 * ```
 */
export function parseIdentityText(text: string): IdentityFields {
  const { lines, begin, end } = findBlock(text);
  const values = new Map<string, string>();
  const unknownKeys: string[] = [];
  for (let i = begin + 1; i < end; i++) {
    const line = lines[i] ?? "";
    if (line.trim() === "") continue;
    const key = keyOf(line);
    if (key === undefined || key === "") {
      throw new IdentityError(`line ${i + 1} is not "key: value"`);
    }
    const value = line.slice(line.indexOf(":") + 1).trim();
    if (!KNOWN.includes(key)) {
      if (!unknownKeys.includes(key)) unknownKeys.push(key);
      continue;
    }
    if (values.has(key)) throw new IdentityError(`duplicate key "${key}" on line ${i + 1}`);
    values.set(key, value);
  }
  const version = values.get("version");
  if (version === undefined || version === "") throw new IdentityError("version is missing");
  if (version !== "1") {
    throw new IdentityError(
      `version ${
        JSON.stringify(version.slice(0, 20))
      } is not supported (this agent reads version 1)`,
    );
  }
  const created = values.get("created");
  if (created === undefined || created === "") throw new IdentityError("created is missing");
  if (!/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.test(created)) {
    throw new IdentityError("created is not an RFC 3339 time");
  }
  const publicKey = decodeKey("public", values.get("public"));
  const secret = decodeKey("secret", values.get("secret"));
  const providerId = values.get("provider_id") || undefined;
  return { version: 1, created, secret, publicKey, providerId, unknownKeys };
}

/**
 * The text of a new identity file (version 1, no provider_id yet), LF line endings.
 *
 * @example
 * ```ts
 * const text = formatIdentityText("2026-01-02T03:04:05.678901Z", seed, publicKey);
 * ```
 */
export function formatIdentityText(
  created: string,
  secret: Uint8Array,
  publicKey: Uint8Array,
): string {
  return [BEGIN, "version: 1", `created: ${created}`, `secret: ${secret.toBase64()}`]
    .concat([`public: ${publicKey.toBase64()}`, END, ""]).join("\n");
}

/** Replaces the provider_id line inside the markers, or adds one before the END marker. */
export function withProviderIdLine(text: string, providerId: string): string {
  const { lines, begin, end } = findBlock(text);
  const line = `provider_id: ${providerId}`;
  const at = lines.findIndex((l, i) => i > begin && i < end && keyOf(l) === "provider_id");
  if (at >= 0) lines[at] = line;
  else lines.splice(end, 0, line);
  return lines.join(text.includes("\r\n") ? "\r\n" : "\n");
}
