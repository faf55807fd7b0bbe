// Types of toml.js (smol-toml 1.9.1's parse and TomlError, as its own .d.ts declares them).

/** A TOML syntax error; `line` and `column` are 1-based. */
export declare class TomlError extends Error {
  line: number;
  column: number;
  codeblock: string;
  constructor(message: string, options: ErrorOptions & { toml: string; ptr: number });
}

/** Parses a TOML document into its table (dates as `Date` subclasses). */
export declare function parse(toml: string): Record<string, unknown>;
