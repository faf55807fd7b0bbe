// `usepod-agent setup [--coordinator URL] [--force]` (PROTOCOL §8, issue 4): device-flow pairing.
// Identity, backend detection, a pair code in a box, polling every 800 ms, then a complete
// agent.toml, the provider_id and the host token. Ctrl-C (exit 130) and expiry write nothing.

import { type CommandContext, ExitError, UsageError } from "./command.ts";
import { detectBackends, type Detection, type ProbeTarget } from "../backends/detect.ts";
import { type Identity, loadOrCreateIdentity, saveProviderId } from "../identity/identity.ts";
import { log } from "../log.ts";
import {
  type CoordinatorUrls,
  coordinatorUrls,
  DEFAULT_COORDINATOR,
  issuePairCode,
  type PairBackend,
  type PairCode,
  PairingError,
  pollPair,
  type PollResult,
} from "../identity/pairing.ts";
import { atomicWrite } from "../fsutil.ts";
import { hostTokenPath } from "../paths.ts";
import { sleep } from "../timers.ts";
import {
  baseConfig,
  checkWritable,
  exists,
  pairedConfig,
  renderChecked,
  writeConfig,
} from "./setup_files.ts";
import { defaultConfigPath } from "../config/paths.ts";
import { AGENT_VERSION } from "../version.ts";

/** Exit code of a setup cancelled with Ctrl-C (128 + SIGINT). */
export const EXIT_CANCELLED = 130;
/** Consecutive failed polls (unreachable, 5xx) tolerated before giving up. */
const MAX_POLL_FAILURES = 10;

/** Everything one pairing run needs; the CLI fills it from flags, tests inject the rest. */
export interface SetupOptions {
  /** The coordinator's https base (http with allowInsecure). */
  coordinator: string;
  /** Where agent.toml goes. */
  configPath: string;
  force: boolean;
  allowInsecure: boolean;
  /** Pair even when no backend answers (the file then has no [[backends]]). */
  allowNoBackend: boolean;
  /** Identity file; default PROTOCOL §7's `~/.usepod-agent/identity.key`, expanded. */
  keyPath?: string;
  /** Servers to probe; default the four well-known local ports. */
  probes?: readonly ProbeTarget[];
  probeTimeoutMs?: number;
  /** Between polls; default 800 ms. */
  pollMs?: number;
  /** Ctrl-C. */
  signal?: AbortSignal;
  fetch?: typeof fetch;
  /** One line for the operator. */
  out: (line: string) => void;
  /** Rewrites the current terminal line (spinner, countdown); absent when stdout is not a TTY. */
  status?: (text: string) => void;
}

const SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏";

function clock(d: Date): string {
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0"))
    .join(":");
}

function countdown(ms: number): string {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/**
 * The pair code box: the code, the page to enter it on, and when it expires.
 *
 * @example
 * ```ts
 * for (const line of pairBox("K7QX-42MD", "https://usepod.ai/host/pair", expires)) out(line);
 * ```
 */
export function pairBox(code: string, page: string, expiresAt: Date, now = Date.now()): string[] {
  const minutes = Math.max(0, Math.round((expiresAt.getTime() - now) / 60_000));
  const rows = [
    "",
    `Pair code:     ${code}`,
    "",
    `Enter it at    ${page}`,
    `Expires at     ${clock(expiresAt)} (in ${minutes} min)`,
    "",
  ];
  const width = Math.max(...rows.map((r) => r.length)) + 6;
  return [
    `╭${"─".repeat(width)}╮`,
    ...rows.map((r) => `│   ${r.padEnd(width - 3)}│`),
    `╰${"─".repeat(width)}╯`,
  ];
}

function describeDetection(d: Detection): string {
  const where = `${d.target.kind.padEnd(9)} ${d.target.url.padEnd(24)}`;
  if (!d.found) return `  -  ${where} ${d.why}`;
  const n = d.models.length;
  const list = n === 0
    ? "running, no model loaded"
    : `${n} model${n === 1 ? "" : "s"}: ${d.models.slice(0, 5).join(", ")}${n > 5 ? ", …" : ""}`;
  return `  ✓  ${where} ${list}`;
}

/** Probes the backends, prints what was found, and refuses an empty result unless allowed. */
async function detect(o: SetupOptions): Promise<PairBackend[]> {
  o.out("looking for inference servers on this machine…");
  const found = await detectBackends(o.probes, {
    ...(o.probeTimeoutMs === undefined ? {} : { timeoutMs: o.probeTimeoutMs }),
    ...(o.fetch ? { fetch: o.fetch } : {}),
  });
  for (const d of found) o.out(describeDetection(d));
  const backends = found.flatMap((d) =>
    d.found ? [{ kind: d.target.kind, url: d.target.url, models: d.models }] : []
  );
  if (backends.length === 0) {
    const ports = found.map((d) => `${d.target.kind} ${d.target.url}`).join(", ");
    if (!o.allowNoBackend) {
      throw new ExitError(
        `no inference server found (tried ${ports}): start one and run setup again, or pass ` +
          "--allow-no-backend to pair now and add [[backends]] to agent.toml later",
      );
    }
    o.out(
      `warning: no inference server found; the agent will advertise no models until you add ` +
        `[[backends]] to ${o.configPath} and run usepod-agent reload`,
    );
  }
  return backends;
}

/** Polls until the code is active or expired; undefined when cancelled. */
async function waitForApproval(
  o: SetupOptions,
  urls: CoordinatorUrls,
  code: PairCode,
  backends: PairBackend[],
): Promise<Exclude<PollResult, { status: "pending" }> | undefined> {
  const signal = o.signal;
  const pollMs = o.pollMs ?? 800;
  let frame = 0;
  const show = () => {
    const left = code.expiresAt.getTime() - Date.now();
    o.status?.(
      `${SPINNER[frame++ % SPINNER.length]} waiting for the code to be entered… ` +
        `expires in ${countdown(left)} (Ctrl-C to cancel)`,
    );
  };
  const ticker = o.status ? setInterval(show, 100) : undefined;
  if (o.status) show();
  else o.out(`waiting for the code to be entered (Ctrl-C to cancel)…`);
  let failures = 0;
  try {
    for (;;) {
      if (signal?.aborted) return undefined;
      let result: PollResult;
      try {
        result = await pollPair(urls.base, code.pollToken, backends, AGENT_VERSION, {
          ...(signal ? { signal } : {}),
          ...(o.fetch ? { fetch: o.fetch } : {}),
        });
        failures = 0;
      } catch (err) {
        if (signal?.aborted) return undefined;
        if (!(err instanceof PairingError) || !err.transient || ++failures >= MAX_POLL_FAILURES) {
          throw err;
        }
        log.debug("pair poll failed; retrying", { error: err.message, failures });
        await sleep(pollMs, signal);
        continue;
      }
      if (result.status !== "pending") return result;
      // A code past its expiry that the coordinator still calls pending: stop all the same.
      if (Date.now() > code.expiresAt.getTime() + 60_000) return { status: "expired" };
      await sleep(pollMs, signal);
    }
  } finally {
    if (ticker !== undefined) clearInterval(ticker);
    o.status?.("");
  }
}

/** Writes the host token, the provider_id and agent.toml; returns the lines to print. */
async function savePairing(
  o: SetupOptions,
  urls: CoordinatorUrls,
  identity: Identity,
  backends: PairBackend[],
  active: Extract<PollResult, { status: "active" }>,
): Promise<string[]> {
  const config = pairedConfig(
    { ...baseConfig(o.configPath, urls.connectUrl), identity: { keyPath: identity.path } },
    backends,
    active.modelConfig,
  );
  const text = renderChecked(config, { allowInsecure: o.allowInsecure });
  const tokenPath = hostTokenPath(identity.path);
  await atomicWrite(tokenPath, `${active.hostToken}\n`);
  await saveProviderId(identity, active.providerId);
  let bak: string | undefined;
  try {
    bak = await writeConfig(o.configPath, text, o.force);
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) {
      throw new ExitError(
        `${o.configPath} appeared while pairing; not replaced (pass --force to replace it)`,
      );
    }
    throw new ExitError(`cannot write ${o.configPath}: ${(err as Error).message}`);
  }
  const priced = active.modelConfig.length;
  const flags = [
    ...(o.configPath === defaultConfigPath() ? [] : [`--config ${o.configPath}`]),
    ...(urls.connectUrl.startsWith("ws:") ? ["--allow-insecure"] : []),
  ];
  return [
    `paired: provider_id ${active.providerId}`,
    `  config:     ${o.configPath}${bak ? ` (previous file kept as ${bak})` : ""}`,
    `  backends:   ${backends.map((b) => b.kind).join(", ") || "none yet"}; ${priced} model${
      priced === 1 ? "" : "s"
    } priced by the coordinator`,
    `  identity:   ${identity.path}`,
    `  host token: ${tokenPath} (mode 0600)`,
    `start the agent: ${["usepod-agent", ...flags].join(" ")}`,
  ];
}

/**
 * Pairs this machine (PROTOCOL §8) and writes its files. Returns 0 when paired and
 * {@link EXIT_CANCELLED} when cancelled; throws an ExitError (exit 1) for an existing config
 * without `force`, an unwritable config dir, no backend, an unreachable coordinator or an
 * expired code. Nothing is written unless the pairing becomes active; an identity created by a
 * run that does not finish is removed again.
 *
 * @example
 * ```ts
 * const code = await setup({ coordinator: "https://api.usepod.ai", configPath, force: false,
 *   allowInsecure: false, allowNoBackend: false, out: console.log });
 * ```
 */
export async function setup(o: SetupOptions): Promise<number> {
  let urls: CoordinatorUrls;
  try {
    urls = coordinatorUrls(o.coordinator, o.allowInsecure);
  } catch (err) {
    throw new UsageError(`--coordinator: ${(err as Error).message}`);
  }
  if (!o.force && (await exists(o.configPath))) {
    throw new ExitError(
      `${o.configPath} already exists: pass --force to replace it (the old file is kept as ` +
        `${o.configPath}.bak)`,
    );
  }
  const unwritable = await checkWritable(o.configPath);
  if (unwritable !== undefined) {
    throw new ExitError(
      `cannot write the config at ${o.configPath}: ${unwritable} (choose another path with --config)`,
    );
  }
  const keyPath = o.keyPath ?? baseConfig(o.configPath, urls.connectUrl).identity.keyPath;
  const { identity, created, warnings } = await loadOrCreateIdentity(keyPath);
  for (const w of warnings) o.out(`warning: ${w}`);
  let paired = false;
  try {
    o.out(`identity:  ${identity.path} (${created ? "created" : "existing"})`);
    o.out(`public key: ${identity.publicKeyB64}`);
    const backends = await detect(o);
    if (o.signal?.aborted) return cancelled(o);
    let code: PairCode;
    try {
      code = await issuePairCode(urls.base, identity.publicKeyB64, {
        ...(o.signal ? { signal: o.signal } : {}),
        ...(o.fetch ? { fetch: o.fetch } : {}),
      });
    } catch (err) {
      if (o.signal?.aborted) return cancelled(o);
      throw err;
    }
    o.out("");
    for (const line of pairBox(code.pairCode, urls.pairPage, code.expiresAt)) o.out(line);
    o.out("");
    const result = await waitForApproval(o, urls, code, backends);
    if (result === undefined) return cancelled(o);
    if (result.status === "expired") {
      throw new ExitError(
        "the pair code expired before it was entered; nothing was written: run usepod-agent " +
          "setup again for a new code",
      );
    }
    paired = true;
    for (const line of await savePairing(o, urls, identity, backends, result)) o.out(line);
    return 0;
  } catch (err) {
    if (err instanceof PairingError) throw new ExitError(err.message, 1, { cause: err });
    throw err;
  } finally {
    if (created && !paired) await Deno.remove(identity.path).catch(() => {});
  }
}

function cancelled(o: SetupOptions): number {
  o.out("setup cancelled; nothing was written");
  return EXIT_CANCELLED;
}

/** The `setup` command: flags, Ctrl-C, and a spinner line when stdout is a terminal. */
export async function setupCommand(ctx: CommandContext): Promise<number> {
  const coordinator = ctx.flags.coordinator;
  const ctrlC = new AbortController();
  const onInt = () => ctrlC.abort(new DOMException("cancelled", "AbortError"));
  Deno.addSignalListener("SIGINT", onInt);
  const encoder = new TextEncoder();
  const tty = Deno.stdout.isTerminal();
  try {
    return await setup({
      coordinator: typeof coordinator === "string" ? coordinator : DEFAULT_COORDINATOR,
      configPath: ctx.configPath ?? defaultConfigPath(),
      force: ctx.flags.force === true,
      allowInsecure: ctx.allowInsecure,
      allowNoBackend: ctx.flags["allow-no-backend"] === true,
      signal: ctrlC.signal,
      out: ctx.out,
      ...(tty
        ? { status: (t: string) => Deno.stdout.writeSync(encoder.encode(`\r\x1b[2K${t}`)) }
        : {}),
    });
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
  }
}
