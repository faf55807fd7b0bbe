// The agent's own version, sent in auth_response and capabilities metadata (PROTOCOL §1, §2).

/** Semver of this agent. Bumped by hand at release time. */
export const AGENT_VERSION = "0.4.0";

/** Agent name sent as `metadata.agent` in capabilities (extension, PROTOCOL §2). */
export const AGENT_NAME = "usepod-agent-deno";
