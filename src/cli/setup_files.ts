// What `setup` writes once paired (PROTOCOL §8 step 4): a complete agent.toml built from the
// detected backends and the coordinator's model_config, the host token beside the identity key,
// both mode 0600 and replaced atomically; a `.bak` of the old agent.toml with --force.

import { type Config, parseConfig } from "../config/config.ts";
import { renderConfig } from "../config/render.ts";
import type { ModelConfigEntry, PairBackend } from "../identity/pairing.ts";
import { atomicWrite } from "../fsutil.ts";
import { dirOf } from "../paths.ts";

/** Default prices of a paired agent.toml (PROTOCOL §9's example), for models the coordinator did not price. */
export const SETUP_DEFAULT_PRICES = { input: 500_000, output: 750_000 } as const;

/**
 * The config every paired agent.toml starts from: only the coordinator URL and the default
 * prices set, everything else at its parseConfig default (identity.key_path expanded with $HOME).
 *
 * @throws {ConfigError} when the default identity path cannot be expanded (no home directory).
 * @example
 * ```ts
 * baseConfig("/home/op/.config/usepod-agent/agent.toml", "wss://api.usepod.ai/provider/connect");
 * ```
 */
export function baseConfig(path: string, connectUrl: string): Config {
  const toml = `[coordinator]\nurl = ${JSON.stringify(connectUrl)}\n\n[pricing]\n` +
    `default_input_per_1m = ${SETUP_DEFAULT_PRICES.input}\n` +
    `default_output_per_1m = ${SETUP_DEFAULT_PRICES.output}\n`;
  return parseConfig(toml, path, { allowInsecure: true });
}

/**
 * The paired config: `base` with the detected backends, per-model prices from `model_config`
 * (a model priced 0/0 is not advertised), and `limits.max_concurrent` = the largest
 * `max_concurrent` the coordinator gave (1..256; the default 8 when it gave none).
 *
 * @example
 * ```ts
 * const cfg = pairedConfig(baseConfig(path, urls.connectUrl), backends, result.modelConfig);
 * ```
 */
export function pairedConfig(
  base: Config,
  backends: PairBackend[],
  modelConfig: ModelConfigEntry[],
): Config {
  const models = Object.create(null) as Config["pricing"]["models"];
  for (const m of modelConfig) {
    models[m.modelId] = { inputPer1m: m.inputPer1m, outputPer1m: m.outputPer1m };
  }
  const caps = modelConfig.flatMap((m) => (m.maxConcurrent === undefined ? [] : [m.maxConcurrent]));
  const maxConcurrent = caps.length === 0
    ? base.limits.maxConcurrent
    : Math.min(256, Math.max(1, ...caps));
  return {
    ...base,
    backends: backends.map((b) => ({ kind: b.kind, url: b.url })),
    pricing: { ...base.pricing, models },
    limits: { ...base.limits, maxConcurrent },
  };
}

/**
 * Renders `config` and checks that it loads back as the same file `validate` would accept.
 *
 * @example
 * ```ts
 * const text = renderChecked(cfg, { allowInsecure: false });
 * ```
 */
export function renderChecked(config: Config, opts: { allowInsecure: boolean }): string {
  const text = renderConfig(config);
  parseConfig(text, config.path, opts);
  return text;
}

/**
 * Makes sure agent.toml can be written at `path` before pairing starts: creates its directory
 * (0700) and writes and removes a probe file there. Returns why not, or undefined when it can.
 *
 * @example
 * ```ts
 * const why = await checkWritable(path);
 * ```
 */
export async function checkWritable(path: string): Promise<string | undefined> {
  const probe = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    await Deno.mkdir(dirOf(path), { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(probe, "", { createNew: true, mode: 0o600 });
    await Deno.remove(probe);
    return undefined;
  } catch (err) {
    if (err instanceof Deno.errors.PermissionDenied || err instanceof Deno.errors.NotCapable) {
      return "permission denied";
    }
    return err instanceof Error ? err.message : String(err);
  }
}

/** Does anything exist at `path`? (False when a parent is not a directory.) */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) {
      return false;
    }
    throw err;
  }
}

/**
 * Writes the paired agent.toml. An existing file is first copied to `<path>.bak` (mode 0600),
 * and only when `force`; without it an existing file is an error the caller reports.
 *
 * @returns the `.bak` path when one was made.
 * @example
 * ```ts
 * const bak = await writeConfig(path, text, true);
 * ```
 */
export async function writeConfig(
  path: string,
  text: string,
  force: boolean,
): Promise<string | undefined> {
  let bak: string | undefined;
  if (await exists(path)) {
    if (!force) throw new Deno.errors.AlreadyExists(path);
    bak = `${path}.bak`;
    await Deno.copyFile(path, bak);
    if (Deno.build.os !== "windows") await Deno.chmod(bak, 0o600);
  }
  await atomicWrite(path, text);
  return bak;
}
