// A strict command-line flag parser (the subset of node:util parseArgs the CLI uses), so the
// agent does not load the Node compatibility layer — about 6 MB of resident memory — to read argv.

/** A flag's shape: takes a value (`string`) or not (`boolean`), with an optional one-letter alias. */
export interface FlagSpec {
  type: "string" | "boolean";
  short?: string;
}

export interface ParsedArgs {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/**
 * Parses `--name value`, `--name=value`, `-n value`, boolean `--name`, positionals and `--`.
 * Throws TypeError naming the flag for an unknown flag, a missing value, or a value given to a
 * boolean flag.
 *
 * @example
 * ```ts
 * parseFlags(["-c", "a.toml", "validate"], { config: { type: "string", short: "c" } });
 * // { values: { config: "a.toml" }, positionals: ["validate"] }
 * ```
 */
export function parseFlags(args: string[], specs: Record<string, FlagSpec>): ParsedArgs {
  const values: Record<string, string | boolean | undefined> = {};
  const positionals: string[] = [];
  const byShort = new Map<string, string>();
  for (const [name, s] of Object.entries(specs)) if (s.short) byShort.set(s.short, name);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const raw = eq > 0 ? arg.slice(0, eq) : arg;
    const name = raw.startsWith("--") ? raw.slice(2) : byShort.get(raw.slice(1));
    const spec = name !== undefined && Object.hasOwn(specs, name) ? specs[name] : undefined;
    if (name === undefined || spec === undefined) throw new TypeError(`Unknown option '${raw}'`);
    if (spec.type === "boolean") {
      if (eq > 0) throw new TypeError(`Option '${raw}' does not take a value`);
      values[name] = true;
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : args[i + 1];
    if (eq < 0) {
      if (value === undefined || (value.startsWith("-") && value !== "-")) {
        throw new TypeError(`Option '${raw} <value>' argument missing`);
      }
      i++;
    }
    values[name] = value;
  }
  return { values, positionals };
}
