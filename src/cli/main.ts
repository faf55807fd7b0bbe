// The command line: global flags, the command table and the small commands (run, validate,
// enroll, version, help). Every command returns an exit code: 0 ok, 1 bad config or usage
// (one line naming the problem), 2 an unexpected internal error. Larger commands load lazily.

import { parseFlags } from "./args.ts";
import {
  type CommandContext,
  ExitError,
  loadForCommand,
  loadWithSources,
  UsageError,
} from "./command.ts";
import { ConfigError } from "../config/config.ts";
import { formatSources } from "../config/env.ts";
import { loadOrCreateIdentity } from "../identity/identity.ts";
import { IdentityError } from "../identity/file.ts";
import { withStateCopy } from "../identity/state_copy.ts";
import { stateDirOf } from "../paths.ts";
import { isLevel, type Level, log, setFormat, setLevel } from "../log.ts";
import { AGENT_VERSION } from "../version.ts";

interface CommandSpec {
  summary: string;
  usage: string;
  options?: Record<string, { type: "string" | "boolean"; short?: string; help: string }>;
  run: (ctx: CommandContext) => Promise<number>;
}

const GLOBAL_OPTIONS = {
  config: { type: "string", short: "c" },
  "log-level": { type: "string" },
  "log-format": { type: "string" },
  "allow-insecure": { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

export const COMMANDS: Record<string, CommandSpec> = {
  run: {
    summary: "connect to the coordinator and serve jobs (the default command)",
    usage: "usepod-agent [run] [--config PATH]",
    run: async (ctx) => (await import("./run.ts")).runCommand(ctx),
  },
  validate: {
    summary: "check agent.toml and USEPOD_ variables offline; print each value and its source",
    usage: "usepod-agent validate [--config PATH]",
    run: validateCommand,
  },
  enroll: {
    summary: "show the public key, provider_id and enrollment code",
    usage: "usepod-agent enroll [--config PATH]",
    run: enrollCommand,
  },
  pause: {
    summary: "stop advertising models (all, or --model M) without disconnecting",
    usage: "usepod-agent pause [--model MODEL] [--config PATH]",
    options: { model: { type: "string", help: "pause one model (default: every model)" } },
    run: async (ctx) => (await import("./pause.ts")).pauseCommand(ctx, "pause"),
  },
  resume: {
    summary: "advertise paused models again (all, or --model M)",
    usage: "usepod-agent resume [--model MODEL] [--config PATH]",
    options: { model: { type: "string", help: "resume one model (default: every model)" } },
    run: async (ctx) => (await import("./pause.ts")).pauseCommand(ctx, "resume"),
  },
  doctor: {
    summary: "preflight: config, identity, backends, coordinator, clock, status port, service",
    usage: "usepod-agent doctor [--config PATH]",
    run: async (ctx) => (await import("./doctor.ts")).doctorCommand(ctx),
  },
  status: {
    summary:
      "ask the running agent's status server for a summary (exit 0 connected, 1 not, 3 none)",
    usage: "usepod-agent status [--json] [--addr HOST:PORT] [--config PATH]",
    options: {
      json: { type: "boolean", help: "print the full GET /status document" },
      addr: {
        type: "string",
        help: "status server address (default observability.prometheus_addr)",
      },
    },
    run: async (ctx) => (await import("./status.ts")).statusCommand(ctx),
  },
  setup: {
    summary: "pair this machine with the coordinator and write agent.toml",
    usage: "usepod-agent setup [--coordinator URL] [--force] [--allow-no-backend] [--config PATH]",
    options: {
      coordinator: { type: "string", help: "the coordinator's https base (https://api.usepod.ai)" },
      force: { type: "boolean", help: "replace an existing agent.toml (kept as agent.toml.bak)" },
      "allow-no-backend": {
        type: "boolean",
        help: "pair even when no local inference server answers",
      },
    },
    run: async (ctx) => (await import("./setup.ts")).setupCommand(ctx),
  },
  reload: {
    summary: "make the running agent re-read agent.toml (SIGHUP)",
    usage: "usepod-agent reload [--config PATH]",
    run: async (ctx) => (await import("./reload.ts")).reloadCommand(ctx),
  },
  service: {
    summary: "install|uninstall|start|stop|restart|status|logs [-f] the system service",
    usage: "usepod-agent [--config PATH] [--log-level LEVEL] service ACTION [-f]",
    options: {
      follow: { type: "boolean", short: "f", help: "with logs: keep following the log" },
    },
    run: async (ctx) => (await import("./service.ts")).serviceCommand(ctx),
  },
  receipts: {
    summary: "list the signed job receipts; --verify checks signatures and the hash chain",
    usage: "usepod-agent receipts [--since DATE] [--verify] [--json] [--file PATH] [--config PATH]",
    options: {
      since: { type: "string", help: "only receipts from this UTC date or RFC 3339 time on" },
      verify: {
        type: "boolean",
        help: "check every signature and the chain; exit 1 at the first broken line",
      },
      json: { type: "boolean", help: "print the receipts as stored (JSON lines)" },
      file: {
        type: "string",
        help: "ledger to read (default: receipts.jsonl in the state directory)",
      },
      pubkey: {
        type: "string",
        help: "with --verify: the base64 key every receipt must be signed by",
      },
    },
    run: async (ctx) => (await import("./receipts.ts")).receiptsCommand(ctx),
  },
  upgrade: {
    summary: "install the latest (or a given) release over this one",
    usage: "usepod-agent upgrade [--version TAG]",
    options: {
      version: { type: "string", help: "release tag to install, e.g. v0.4.1 (default: latest)" },
    },
    run: async (ctx) => (await import("./upgrade.ts")).upgradeCommand(ctx),
  },
  version: {
    summary: "print the version, the Deno version and the target",
    usage: "usepod-agent version",
    run: (ctx) => {
      ctx.out(`usepod-agent ${AGENT_VERSION} (deno ${Deno.version.deno}, ${Deno.build.target})`);
      return Promise.resolve(0);
    },
  },
  help: {
    summary: "show this help",
    usage: "usepod-agent help [COMMAND]",
    run: (ctx) => {
      ctx.out(helpText(ctx.args[0]));
      return Promise.resolve(0);
    },
  },
};

/** The help text: every command, or one command's usage and flags. */
export function helpText(command?: string): string {
  const spec = command ? COMMANDS[command] : undefined;
  if (spec) {
    const lines = [`usage: ${spec.usage}`, "", spec.summary];
    for (const [name, o] of Object.entries(spec.options ?? {})) {
      const flag = `${o.short ? `-${o.short}, ` : ""}--${name}${
        o.type === "string" ? " VALUE" : ""
      }`;
      lines.push(`  ${flag.padEnd(26)}${o.help}`);
    }
    return lines.join("\n");
  }
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length)) + 2;
  return [
    `usepod-agent ${AGENT_VERSION}: a Use Pod provider agent`,
    "",
    "usage: usepod-agent [COMMAND] [FLAGS]",
    "",
    "commands:",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`),
    "",
    "global flags:",
    "  -c, --config PATH         agent.toml to use (default: the platform config dir, then ./agent.toml)",
    "  --log-level LEVEL         debug | info | warn | error (overrides observability.log_level)",
    "  --log-format FORMAT       text | json, one object a line (overrides observability.log_format)",
    "  --allow-insecure          allow ws:// and http:// coordinators and an http:// installer (development only)",
    "  -h, --help                show help (also: usepod-agent help COMMAND)",
  ].join("\n");
}

function commandName(args: string[]): { name: string; index: number } {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") break;
    if (a === "-c" || a === "--config" || a === "--log-level" || a === "--log-format") {
      i++;
      continue;
    }
    if (!a.startsWith("-")) return { name: a, index: i };
  }
  return { name: "run", index: -1 };
}

/** Parses the command line into a command and its context; throws UsageError. */
export function parseCommandLine(
  args: string[],
  out: (line: string) => void,
): { spec: CommandSpec; ctx: CommandContext; help: boolean; name: string } {
  const { name, index } = commandName(args);
  const spec = COMMANDS[name];
  if (!spec) throw new UsageError(`unknown command "${name}" (see usepod-agent --help)`);
  const rest = index < 0 ? args : [...args.slice(0, index), ...args.slice(index + 1)];
  const own = Object.fromEntries(
    Object.entries(spec.options ?? {}).map((
      [k, o],
    ) => [k, o.short ? { type: o.type, short: o.short } : { type: o.type }]),
  );
  let parsed;
  try {
    parsed = parseFlags(rest, { ...GLOBAL_OPTIONS, ...own });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  const level = v["log-level"];
  if (level !== undefined && (typeof level !== "string" || !isLevel(level))) {
    throw new UsageError(`--log-level: expected debug, info, warn or error, got "${level}"`);
  }
  const format = v["log-format"];
  if (format !== undefined && format !== "text" && format !== "json") {
    throw new UsageError(`--log-format: expected text or json, got "${format}"`);
  }
  const flags: Record<string, string | boolean | undefined> = {};
  for (const k of Object.keys(spec.options ?? {})) flags[k] = v[k];
  return {
    spec,
    name,
    help: v.help === true,
    ctx: {
      configPath: typeof v.config === "string" ? v.config : undefined,
      logLevel: level as Level | undefined,
      ...(format !== undefined ? { logFormat: format } : {}),
      allowInsecure: v["allow-insecure"] === true,
      flags,
      args: parsed.positionals,
      out,
    },
  };
}

/**
 * Runs the command line and returns the exit code. Errors the operator can fix print one
 * line (exit 1); anything else prints its stack (exit 2).
 *
 * @example
 * ```ts
 * Deno.exit(await main(Deno.args));
 * ```
 */
export async function main(
  args: string[],
  out: (line: string) => void = (l) => console.log(l),
  err: (line: string) => void = (l) => console.error(l),
): Promise<number> {
  try {
    const { spec, ctx, help, name } = parseCommandLine(args, out);
    if (help) {
      out(helpText(name === "run" && !args.includes("run") ? undefined : name));
      return 0;
    }
    if (ctx.logLevel) setLevel(ctx.logLevel);
    if (ctx.logFormat) setFormat(ctx.logFormat);
    return await spec.run(ctx);
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError || e instanceof IdentityError) {
      err(`error: ${e.message}`);
      return 1;
    }
    if (e instanceof ExitError) {
      err(`error: ${e.message}`);
      return e.exitCode;
    }
    err(`internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 2;
  }
}

async function validateCommand(ctx: CommandContext): Promise<number> {
  const { config, sources } = await loadWithSources(ctx);
  const kinds = config.backends.map((b) => b.kind).join(", ") || "none";
  ctx.out(
    `ok: ${config.path}: coordinator ${config.coordinator.url}, ${config.backends.length} backend(s) (${kinds}), max_concurrent ${config.limits.maxConcurrent}`,
  );
  for (const line of formatSources(sources)) ctx.out(line);
  return 0;
}

async function enrollCommand(ctx: CommandContext): Promise<number> {
  const config = await loadForCommand(ctx);
  const loaded = await loadOrCreateIdentity(config.identity.keyPath);
  for (const w of loaded.warnings) log.warn(w);
  if (loaded.created) log.info("identity created", { path: loaded.identity.path });
  const { identity, warning } = await withStateCopy(loaded.identity, stateDirOf(config.identity));
  if (warning) log.warn(warning);
  ctx.out(`public key:      ${identity.publicKeyB64}`);
  ctx.out(`provider_id:     ${identity.providerId ?? "<not yet enrolled>"}`);
  const code = config.coordinator.enrollmentCode;
  ctx.out(
    `enrollment code: ${
      code === undefined
        ? "<none in config> (run usepod-agent setup to pair this machine)"
        : identity.providerId
        ? `${code} (not sent: already enrolled)`
        : `${code} (sent at the next connect)`
    }`,
  );
  ctx.out(`identity file:   ${identity.path}`);
  return 0;
}
