// Which agent.toml a command reads: the path given (--config or USEPOD_CONFIG), else the first
// file of the lookup order (paths.ts), read as text; and the error when the lookup finds none.
// Parsing and validation are config.ts's.

import { ConfigError } from "./fields.ts";
import { configCandidates, type PathOptions } from "./paths.ts";

/**
 * Reads agent.toml from `path`, or from the first existing file of {@link configCandidates} when
 * `path` is undefined; undefined when that lookup finds none.
 *
 * @throws {ConfigError} when `path` is missing or a file cannot be read.
 * @example
 * ```ts
 * const found = await findConfigFile(undefined); // { path: "./agent.toml", text: "…" }
 * ```
 */
export async function findConfigFile(
  path: string | undefined,
  opts: PathOptions = {},
): Promise<{ path: string; text: string } | undefined> {
  for (const p of path === undefined ? configCandidates(opts) : [path]) {
    try {
      return { path: p, text: await Deno.readTextFile(p) };
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        if (path === undefined) continue;
        throw new ConfigError(`config file not found: ${p}`, { file: p });
      }
      const why = err instanceof Error ? err.message : String(err);
      throw new ConfigError(`cannot read config file ${p}: ${why}`, { cause: err, file: p });
    }
  }
  return undefined;
}

/** The error for a lookup that found no agent.toml, naming every path tried. */
export function noConfigFound(opts: PathOptions = {}): ConfigError {
  let cwd = ".";
  try {
    cwd = Deno.cwd();
  } catch {
    // no read permission for the cwd: the relative path is still meaningful
  }
  return new ConfigError(
    `no agent.toml found; tried ${configCandidates(opts).join(", ")} (working directory ${cwd}). ` +
      "Run `usepod-agent setup` or pass --config <path>",
  );
}
