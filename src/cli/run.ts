// The `run` command: load config and identity, start the agent and its local status server, and
// turn signals into graceful drain (SIGTERM/SIGINT; a second one exits at once) and config reload
// (SIGHUP).

import { Agent } from "../agent.ts";
import { type CommandContext, loadForCommand, reloadConfig } from "./command.ts";
import { type Config, ConfigError } from "../config/config.ts";
import { loadOrCreateIdentity } from "../identity/identity.ts";
import { withStateCopy } from "../identity/state_copy.ts";
import { log, logToFile } from "../log.ts";
import { pauseFilePath, readPauseState } from "../ops/pause.ts";
import { holdAgentPidFile } from "../ops/pidfile.ts";
import { stateDirOf } from "../paths.ts";
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
  const loaded = await loadOrCreateIdentity(config.identity.keyPath);
  for (const w of loaded.warnings) log.warn(w);
  if (loaded.created) {
    log.info("identity created", {
      path: loaded.identity.path,
      pubkey: loaded.identity.publicKeyB64,
    });
  }
  // A read-only identity (a Kubernetes Secret) keeps its provider_id in the state directory.
  const restored = await withStateCopy(loaded.identity, await prepareStateDir(config));
  if (restored.warning) log.warn(restored.warning);
  const identity = restored.identity;
  const agent = new Agent({ config, identity, ...(caCerts ? { caCerts } : {}) });
  log.info("starting", {
    version: AGENT_VERSION,
    coordinator: config.coordinator.url,
    backends: config.backends.length,
    pubkey: identity.publicKeyB64,
  });
  const pauseFile = pauseFilePath(config.identity);
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
    reloadConfig(ctx, config)
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
  const pidFile = await holdAgentPidFile(config.identity);
  try {
    await agent.run();
    // run() ends when the drain stops the loops; the drain then still closes the ledger and
    // flushes the earnings: wait for it, or the process exits before they are on disk.
    await agent.shutdown();
  } finally {
    for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
    pidFile?.release();
    await status.shutdown();
  }
  return 0;
}

/**
 * Creates the state directory (0700) and checks that it takes a file; a directory that does not
 * is a warning, not a reason to stop serving (receipts and earnings then fail to save).
 */
async function prepareStateDir(config: Config): Promise<string> {
  const dir = stateDirOf(config.identity);
  try {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await Deno.remove(await Deno.makeTempFile({ dir, prefix: ".write-check-" }));
  } catch (err) {
    log.warn(
      "state directory not writable: receipts, earnings, pause and provider_id cannot be saved; set USEPOD_STATE_DIR",
      {
        path: dir,
        error: err,
      },
    );
  }
  return dir;
}

async function readCa(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    throw new ConfigError(`coordinator.ca_file: cannot read ${path}: ${(err as Error).message}`);
  }
}
