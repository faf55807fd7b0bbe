// Where the agent's own files live: its state directory (identity.state_dir / USEPOD_STATE_DIR,
// else the identity key's directory) holds the pid file, the host token `setup` receives, the
// receipts, earnings, pause state and, when the identity is read-only, the provider_id. Paths only.

/**
 * Where the state directory is: the identity key path alone (its directory), or with a
 * configured `stateDir` (Config.identity has this shape).
 */
export type StatePlace = string | { keyPath: string; stateDir?: string | undefined };

/**
 * The directory of `path` ("." for a bare name; `/` and `\` both separate).
 *
 * @example
 * ```ts
 * dirOf("/etc/usepod-agent/agent.toml"); // "/etc/usepod-agent"
 * ```
 */
export function dirOf(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return i < 0 ? "." : i === 0 ? path.slice(0, 1) : path.slice(0, i);
}

/**
 * A file in the identity key's directory.
 *
 * @example
 * ```ts
 * besideIdentity("/home/op/.usepod-agent/identity.key", "agent.pid"); // "/home/op/.usepod-agent/agent.pid"
 * ```
 */
export function besideIdentity(identityKeyPath: string, name: string): string {
  const i = Math.max(identityKeyPath.lastIndexOf("/"), identityKeyPath.lastIndexOf("\\"));
  return i < 0 ? name : `${identityKeyPath.slice(0, i + 1)}${name}`;
}

/**
 * The state directory: `stateDir` when configured, else the identity key's directory.
 *
 * @example
 * ```ts
 * stateDirOf({ keyPath: "/etc/usepod/identity.key", stateDir: "/var/lib/usepod-agent" });
 * // "/var/lib/usepod-agent"
 * stateDirOf("/home/op/.usepod-agent/identity.key"); // "/home/op/.usepod-agent"
 * ```
 */
export function stateDirOf(place: StatePlace): string {
  if (typeof place !== "string" && place.stateDir !== undefined) return place.stateDir;
  return dirOf(typeof place === "string" ? place : place.keyPath);
}

/**
 * A file in the state directory.
 *
 * @example
 * ```ts
 * stateFile({ keyPath: "/etc/usepod/identity.key", stateDir: "/state" }, "receipts.jsonl");
 * // "/state/receipts.jsonl"
 * ```
 */
export function stateFile(place: StatePlace, name: string): string {
  if (typeof place !== "string" && place.stateDir !== undefined) {
    return `${place.stateDir.replace(/[\\/]+$/, "")}/${name}`;
  }
  return besideIdentity(typeof place === "string" ? place : place.keyPath, name);
}

/**
 * Where `run` keeps its pid file: `agent.pid` in the state directory (by default the identity
 * key's, writable by the agent's user and inside the systemd service's state dir).
 *
 * @example
 * ```ts
 * pidFilePath("/var/lib/usepod-agent/.usepod-agent/identity.key");
 * // "/var/lib/usepod-agent/.usepod-agent/agent.pid"
 * ```
 */
export function pidFilePath(place: StatePlace): string {
  return stateFile(place, "agent.pid");
}

/**
 * Where `setup` keeps the coordinator's host token: `host_token` in the state directory (mode
 * 0600), never in agent.toml (which operators share when asking for help) and never in a log.
 *
 * @example
 * ```ts
 * hostTokenPath("/home/op/.usepod-agent/identity.key"); // "/home/op/.usepod-agent/host_token"
 * ```
 */
export function hostTokenPath(place: StatePlace): string {
  return stateFile(place, "host_token");
}
