// The `run` command: load config and identity, start the agent and its local status server, and
// turn signals into graceful drain (SIGTERM/SIGINT; a second one exits at once) and config reload
// (SIGHUP).

import { Agent } from "../agent.ts";
import { type CommandContext, loadForCommand } from "./command.ts";
import { ConfigError, loadConfig } from "../config/config.ts";
import { loadOrCreateIdentity } from "../identity/identity.ts";
import { log, logToFile } from "../log.ts";
import { pauseFilePath, readPauseState } from "../ops/pause.ts";
import { holdAgentPidFile } from "../ops/pidfile.ts";
import { agentSource } from "../status/snapshot.ts";
import { checkStatusBind, startStatusServer } from "../status/server.ts";
import { AGENT_VERSION } from "../version.ts";

/** Runs the agent until a signal drains it; resolves with the exit code. */
export async function runCommand(ctx: CommandContext): Promise<number> {
  const logFile = Deno.env.get("USEPOD_AGENT_LOG_FILE");
  if (logFile) logToFile(logFile);
  const config = await loadForCommand(ctx);
  checkStatusBind(config.observability);
  // Everything that can refuse to start is checked before the identity file is created.
  const caCerts = config.coordinator.caFile ? [await readCa(config.coordinator.caFile)] : undefined;
  const { identity, created, warnings } = await loadOrCreateIdentity(config.identity.keyPath);
  for (const w of warnings) log.warn(w);
  if (created) log.info("identity created", { path: identity.path, pubkey: identity.publicKeyB64 });
  const agent = new Agent({ config, identity, ...(caCerts ? { caCerts } : {}) });
  log.info("starting", {
    version: AGENT_VERSION,
    coordinator: config.coordinator.url,
    backends: config.backends.length,
    pubkey: identity.publicKeyB64,
  });
  const pauseFile = pauseFilePath(identity.path);
  agent.setPaused(await readPauseState(pauseFile));
  const status = startStatusServer(agentSource(agent), config.observability);
  log.info("status server listening", { addr: status.addr, url: `http://${status.addr}/` });

  let signals = 0;
  const onStop = (sig: Deno.Signal) => () => {
    if (++signals > 1) {
      log.warn("second signal: exiting now", { signal: sig });
      Deno.exit(1);
    }
    log.info("signal received: draining", { signal: sig });
    void agent.shutdown();
  };
  const onHup = () => {
    log.info("SIGHUP: reloading config and pause state", { path: config.path });
    readPauseState(pauseFile).then((state) => agent.setPaused(state));
    loadConfig(config.path, { allowInsecure: ctx.allowInsecure })
      .then((next) => agent.reload(next))
      .catch((err) => {
        const why = err instanceof ConfigError ? err.message : String(err);
        log.error("config reload failed; keeping the running config", { error: why });
      });
  };
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGTERM", onStop("SIGTERM")],
    ["SIGINT", onStop("SIGINT")],
  ];
  if (Deno.build.os !== "windows") handlers.push(["SIGHUP", onHup]);
  for (const [sig, h] of handlers) Deno.addSignalListener(sig, h);
  // For `usepod-agent reload` when the status server cannot be asked.
  const pidFile = await holdAgentPidFile(identity.path);
  try {
    await agent.run();
  } finally {
    for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
    pidFile?.release();
    await status.shutdown();
  }
  return 0;
}

async function readCa(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    throw new ConfigError(`coordinator.ca_file: cannot read ${path}: ${(err as Error).message}`);
  }
}
