// `usepod-agent service install|uninstall|start|stop|restart|status|logs` (issue 4): checks
// elevation, then hands the action to systemd (Linux), launchd (macOS) or the SCM (Windows).

import {
  requireElevated,
  type ServiceAction,
  type ServiceContext,
  type ServiceOutcome,
} from "./common.ts";
import { systemdAction } from "./systemd.ts";
import { launchdAction } from "./launchd.ts";
import { windowsAction } from "./windows.ts";

export {
  type CommandResult,
  isServiceAction,
  type Runner,
  SERVICE_ACTIONS,
  SERVICE_LABEL,
  type ServiceAction,
  type ServiceContext,
  ServiceError,
  type ServiceOutcome,
  type ServicePaths,
} from "./common.ts";
export { detectElevated, realFiles, realRunner, realServiceContext } from "./runner.ts";
export { SERVICE_USER, SYSTEMD_STATE_DIR, SYSTEMD_UNIT_PATH, systemdUnit } from "./systemd.ts";
export { LAUNCHD_LOG_DIR, LAUNCHD_PLIST_PATH, launchdLogFile, launchdPlist } from "./launchd.ts";
export {
  WINDOWS_LOG_FILE,
  WINDOWS_SERVICE_KEY,
  windowsBinPath,
  windowsServiceCommands,
} from "./windows.ts";

/**
 * Carries out one `service` action. Privileged actions (all but `status` and `logs`) are refused
 * with a ServiceError (exit 1) before any command runs when not root / administrator; `status`
 * of a service that is not installed throws a ServiceError with exit 3. Other failures are
 * ServiceErrors with exit 1 naming the command that failed.
 *
 * @example
 * ```ts
 * const ctx = await realServiceContext({ execPath: Deno.execPath(), configPath, logLevel });
 * const { exitCode, message } = await runService("install", ctx);
 * ```
 */
export async function runService(
  action: ServiceAction,
  ctx: ServiceContext,
): Promise<ServiceOutcome> {
  requireElevated(action, ctx);
  switch (ctx.os) {
    case "linux":
      return await systemdAction(action, ctx);
    case "darwin":
      return await launchdAction(action, ctx);
    case "windows":
      return await windowsAction(action, ctx);
  }
}
