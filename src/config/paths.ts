// Where agent.toml is looked for without `--config` (the lookup order of PROTOCOL §9: the
// platform config dir, then ./agent.toml) and how a leading `~` in a configured path expands.
// Paths only: reading the file is loadConfig's (src/config/config.ts).

/** Inputs from the outside world that the paths depend on; tests pass fakes. */
export interface PathOptions {
  /** Environment variables; default `Deno.env`. */
  env?: Record<string, string | undefined>;
  /** Home directory for `~`; default `$HOME` (or `%USERPROFILE%` on Windows). */
  home?: string;
  /** Platform for the lookup paths; default `Deno.build.os`. */
  platform?: typeof Deno.build.os;
}

/**
 * Expands a leading `~` or `~/` (also `~\`) to `home`; other paths are returned unchanged.
 *
 * @example
 * ```ts
 * expandHome("~/.usepod-agent/identity.key", "/home/op"); // "/home/op/.usepod-agent/identity.key"
 * ```
 */
export function expandHome(p: string, home: string): string {
  const base = home.replace(/[\\/]+$/, "") || home;
  if (p === "~") return base;
  const m = /^~([\\/])(.*)$/s.exec(p);
  if (!m) return p;
  return base.replace(/[\\/]+$/, "") + (m[1] ?? "/") + (m[2] ?? "");
}

function envOf(opts: PathOptions): (name: string) => string | undefined {
  if (opts.env) {
    const env = opts.env;
    return (name) => (Object.hasOwn(env, name) ? env[name] : undefined);
  }
  return (name) => {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined; // no --allow-env: behave as unset
    }
  };
}

/**
 * The home directory `~` stands for: `opts.home`, else `$HOME` (or `%USERPROFILE%` on Windows);
 * undefined when unknown or empty.
 *
 * @example
 * ```ts
 * homeOf({ env: { HOME: "/home/op" }, platform: "linux" }); // "/home/op"
 * ```
 */
export function homeOf(opts: PathOptions): string | undefined {
  const env = envOf(opts);
  const platform = opts.platform ?? Deno.build.os;
  const home = opts.home ?? env("HOME") ??
    (platform === "windows" ? env("USERPROFILE") : undefined);
  return home === "" ? undefined : home;
}

/**
 * The config files tried without `--config`, in order (PROTOCOL §9): the platform
 * config dir, then `./agent.toml` relative to the working directory.
 *
 * @example
 * ```ts
 * configCandidates({ platform: "linux", env: {}, home: "/home/op" });
 * // ["/home/op/.config/usepod-agent/agent.toml", "./agent.toml"]
 * ```
 */
export function configCandidates(opts: PathOptions = {}): string[] {
  const platform = opts.platform ?? Deno.build.os;
  const env = envOf(opts);
  const home = homeOf(opts)?.replace(/[\\/]+$/, "");
  let dir: string | undefined;
  if (platform === "windows") {
    const appData = env("APPDATA") ||
      (home === undefined ? undefined : `${home}\\AppData\\Roaming`);
    if (appData) dir = `${appData.replace(/[\\/]+$/, "")}\\usepod-agent\\agent.toml`;
  } else if (platform === "darwin") {
    if (home !== undefined) dir = `${home}/Library/Application Support/usepod-agent/agent.toml`;
  } else {
    const xdg = env("XDG_CONFIG_HOME");
    // The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    const base = xdg?.startsWith("/") ? xdg.replace(/\/+$/, "") : home && `${home}/.config`;
    if (base) dir = `${base}/usepod-agent/agent.toml`;
  }
  const local = platform === "windows" ? ".\\agent.toml" : "./agent.toml";
  return dir === undefined ? [local] : [dir, local];
}

/**
 * Where `setup` writes agent.toml: the platform config dir (or `./agent.toml` when no home is known).
 *
 * @example
 * ```ts
 * defaultConfigPath({ platform: "darwin", home: "/Users/op" });
 * // "/Users/op/Library/Application Support/usepod-agent/agent.toml"
 * ```
 */
export function defaultConfigPath(opts: PathOptions = {}): string {
  return configCandidates(opts)[0] ?? "./agent.toml";
}
