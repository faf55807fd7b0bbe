// What every command shares: the context the dispatcher hands it, the two errors it may throw
// (one line and an exit code for the operator) and the config loading with its log settings:
// flags > USEPOD_* environment > agent.toml (config/env.ts). Commands and the dispatcher
// (main.ts) both import it; it imports neither.

import type { Config } from "../config/config.ts";
import { type ConfigSource, ENV_ONLY, loadMergedConfig } from "../config/env.ts";
import { type Level, type LogFormat, setFormat, setLevel } from "../log.ts";

/** A problem with what the operator typed or configured: exit 1 with one line. */
export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * A command that cannot go on for a reason the operator can act on: one line, and its exit code
 * (1 unless the command documents another, e.g. 3 for "no agent found").
 *
 * @example
 * ```ts
 * throw new ExitError("no running agent found", 3);
 * ```
 */
export class ExitError extends Error {
  override name = "ExitError";
  constructor(message: string, readonly exitCode = 1, options?: ErrorOptions) {
    super(message, options);
  }
}

/** What every command gets: parsed flags and where to print. */
export interface CommandContext {
  /** --config as given (undefined: the lookup order of PROTOCOL §9). */
  configPath: string | undefined;
  logLevel: Level | undefined;
  /** --log-format as given (undefined: observability.log_format). */
  logFormat?: LogFormat;
  allowInsecure: boolean;
  /** Values of the command's own flags. */
  flags: Record<string, string | boolean | undefined>;
  /** Positional arguments after the command name. */
  args: string[];
  out: (line: string) => void;
}

/**
 * Loads the config (flags > environment > file) with where each value came from, and applies
 * its log settings.
 */
export async function loadWithSources(
  ctx: CommandContext,
): Promise<{ config: Config; sources: ConfigSource[] }> {
  const merged = await loadMergedConfig({
    path: ctx.configPath,
    allowInsecure: ctx.allowInsecure,
    flags: { logLevel: ctx.logLevel, logFormat: ctx.logFormat },
  });
  setLevel(merged.config.observability.logLevel);
  setFormat(merged.config.observability.logFormat);
  return merged;
}

/** Loads the config (flags > environment > file) and applies its log settings. */
export async function loadForCommand(ctx: CommandContext): Promise<Config> {
  return (await loadWithSources(ctx)).config;
}

/**
 * Reads the config again for a reload (SIGHUP): the same file as `current` (or the environment
 * alone, as at start), the environment and flags on top; log settings are left as they are.
 */
export async function reloadConfig(ctx: CommandContext, current: Config): Promise<Config> {
  const merged = await loadMergedConfig({
    path: current.path === ENV_ONLY ? undefined : current.path,
    allowInsecure: ctx.allowInsecure,
    flags: { logLevel: ctx.logLevel, logFormat: ctx.logFormat },
  });
  return merged.config;
}
