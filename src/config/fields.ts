// Typed readers for the tables of a parsed agent.toml: each returns the value or throws a
// ConfigError naming the field (`limits.max_concurrent: expected an integer, got a string`), plus
// the TOML quoting and `host:port` parsing the config, its renderer and the status server share.

export type Table = Record<string, unknown>;

/**
 * An invalid or unreadable agent.toml. The message starts with the field path
 * (`backends[1].url: …`) or `agent.toml line N:` and never quotes a secret value.
 */
export class ConfigError extends Error {
  override name = "ConfigError";
  /** The file involved ("" when parsing text without a path). */
  readonly file: string;
  constructor(message: string, options?: ErrorOptions & { file?: string }) {
    super(message, options);
    this.file = options?.file ?? "";
  }
}

export function fail(field: string, message: string): never {
  throw new ConfigError(`${field}: ${message}`);
}

export function own(t: Table, key: string): unknown {
  return Object.hasOwn(t, key) ? t[key] : undefined;
}

export function isTable(v: unknown): v is Table {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

export function describe(v: unknown): string {
  if (typeof v === "string") return "a string";
  if (typeof v === "number") return Number.isInteger(v) ? "an integer" : "a float";
  if (typeof v === "boolean") return "a boolean";
  if (Array.isArray(v)) return "an array";
  if (v instanceof Date) return "a date";
  return "a table";
}

/** Quotes a TOML key unless it is bare. */
export function tomlKey(k: string): string {
  return /^[A-Za-z0-9_-]+$/.test(k) ? k : tomlString(k);
}

/** A TOML basic string (JSON escapes are valid TOML; DEL is escaped too). */
export function tomlString(s: string): string {
  return JSON.stringify(s).replace(/\x7f/g, "\\u007f");
}

/** Quotes a user value for an error message, shortened. */
export function shown(s: string): string {
  return JSON.stringify(s.length > 120 ? s.slice(0, 117) + "..." : s);
}

export function table(parent: Table, key: string, field: string): Table {
  const v = own(parent, key);
  if (v === undefined) return {};
  if (!isTable(v)) fail(field, `expected a table, got ${describe(v)}`);
  return v;
}

export function str(t: Table, key: string, field: string, nonEmpty = false): string | undefined {
  const v = own(t, key);
  if (v === undefined) return undefined;
  if (typeof v !== "string") fail(field, `expected a string, got ${describe(v)}`);
  if (nonEmpty && v.trim() === "") fail(field, "must not be empty (remove the line instead)");
  return v;
}

export function int(t: Table, key: string, field: string): number | undefined {
  const v = own(t, key);
  if (v === undefined) return undefined;
  if (typeof v !== "number") fail(field, `expected an integer, got ${describe(v)}`);
  if (!Number.isSafeInteger(v)) fail(field, `must be an integer, got ${v}`);
  return v;
}

export function num(t: Table, key: string, field: string): number | undefined {
  const v = own(t, key);
  if (v === undefined) return undefined;
  if (typeof v !== "number") fail(field, `expected a number, got ${describe(v)}`);
  if (!Number.isFinite(v)) fail(field, `must be a finite number, got ${v}`);
  return v;
}

export function httpUrl(s: string): URL | undefined {
  const u = URL.parse(s);
  return u && (u.protocol === "http:" || u.protocol === "https:") ? u : undefined;
}

/** Drops the keys whose value is undefined (for exactOptionalPropertyTypes). */
export function compact<T extends Record<string, unknown>>(
  o: T,
): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as {
    [K in keyof T]?: Exclude<T[K], undefined>;
  };
}

/**
 * Splits a `host:port` listen address (`"127.0.0.1:9090"`, `"[::1]:9090"`); undefined when invalid.
 *
 * @example
 * ```ts
 * splitHostPort("[::1]:9090"); // { hostname: "::1", port: 9090 }
 * ```
 */
export function splitHostPort(addr: string): { hostname: string; port: number } | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(addr);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  const v6 = m[1];
  if (v6 !== undefined && !(v6.includes(":") && URL.canParse(`http://[${v6}]/`))) return undefined;
  return { hostname: v6 ?? m[2] ?? "", port };
}
