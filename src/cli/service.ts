// `usepod-agent service install|uninstall|start|stop|restart|status|logs [-f]` (issue 4): the CLI
// side of src/service/service.ts — argument checks, the real context, and the outcome as an exit code.

import { type CommandContext, ExitError, UsageError } from "./command.ts";
import {
  isServiceAction,
  realServiceContext,
  runService,
  SERVICE_ACTIONS,
  ServiceError,
} from "../service/service.ts";

/**
 * An absolute form of `path` (relative to `cwd`), for a service definition that runs elsewhere.
 *
 * @example
 * ```ts
 * absolutePath("agent.toml", "/etc/usepod-agent"); // "/etc/usepod-agent/agent.toml"
 * ```
 */
export function absolutePath(path: string, cwd: string, os: typeof Deno.build.os = Deno.build.os) {
  if (os === "windows") {
    if (/^([A-Za-z]:[\\/]|\\\\)/.test(path)) return path;
    return `${cwd.replace(/[\\/]+$/, "")}\\${path.replace(/^\.[\\/]/, "")}`;
  }
  if (path.startsWith("/")) return path;
  return `${cwd.replace(/\/+$/, "")}/${path.replace(/^\.\//, "")}`;
}

/** Runs one service action; prints its message and returns its exit code. */
export async function serviceCommand(ctx: CommandContext): Promise<number> {
  const [action, ...extra] = ctx.args;
  if (action === undefined || !isServiceAction(action)) {
    throw new UsageError(
      `${
        action === undefined ? "missing action" : `unknown action "${action}"`
      }: usepod-agent service ${SERVICE_ACTIONS.join("|")}`,
    );
  }
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
  const follow = ctx.flags.follow === true;
  if (follow && action !== "logs") throw new UsageError("-f/--follow goes with service logs");
  try {
    const sctx = await realServiceContext({
      execPath: Deno.execPath(),
      configPath: ctx.configPath === undefined
        ? undefined
        : absolutePath(ctx.configPath, Deno.cwd()),
      logLevel: ctx.logLevel,
      follow,
    });
    const outcome = await runService(action, sctx);
    if (outcome.message !== "") ctx.out(outcome.message);
    return outcome.exitCode;
  } catch (err) {
    if (err instanceof ServiceError) throw new ExitError(err.message, err.exitCode, { cause: err });
    throw err;
  }
}
