// Where the agent's own files live beside the identity key (its state directory): the pid file
// of a running agent and the host token `setup` receives. Paths only; no file access here.

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
 * Where `run` keeps its pid file: `agent.pid` in the identity key's directory (writable by the
 * agent's user, and inside the systemd service's state dir).
 *
 * @example
 * ```ts
 * pidFilePath("/var/lib/usepod-agent/.usepod-agent/identity.key");
 * // "/var/lib/usepod-agent/.usepod-agent/agent.pid"
 * ```
 */
export function pidFilePath(identityKeyPath: string): string {
  return besideIdentity(identityKeyPath, "agent.pid");
}

/**
 * Where `setup` keeps the coordinator's host token: `host_token` beside the identity key (mode
 * 0600), never in agent.toml (which operators share when asking for help) and never in a log.
 *
 * @example
 * ```ts
 * hostTokenPath("/home/op/.usepod-agent/identity.key"); // "/home/op/.usepod-agent/host_token"
 * ```
 */
export function hostTokenPath(identityKeyPath: string): string {
  return besideIdentity(identityKeyPath, "host_token");
}
