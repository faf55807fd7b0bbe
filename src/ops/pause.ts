// Operator pause (issue 8): which models are taken out of service, kept in `paused.json` beside
// the identity key so a pause survives restarts. `usepod-agent pause/resume` write it and signal
// the agent (SIGHUP), which re-reads it and advertises a fresh capabilities frame.

import { atomicWrite } from "../fsutil.ts";
import { log } from "../log.ts";
import { dirOf, stateFile, type StatePlace } from "../paths.ts";

/** Every model (`all`) or the listed ones are paused. */
export interface PauseState {
  all: boolean;
  models: string[];
}

export const NOT_PAUSED: PauseState = { all: false, models: [] };

/** Where the pause state lives: `paused.json` in the state directory. */
export function pauseFilePath(place: StatePlace): string {
  return stateFile(place, "paused.json");
}

/**
 * Reads the pause state; a missing file is "nothing paused", a corrupt one is logged and read
 * as nothing paused (never a reason not to start).
 *
 * @example
 * ```ts
 * const state = await readPauseState(pauseFilePath(config.identity));
 * ```
 */
export async function readPauseState(path: string): Promise<PauseState> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      log.warn("pause state unreadable; nothing paused", { path, error: err });
    }
    return NOT_PAUSED;
  }
  try {
    const v = JSON.parse(text) as { all?: unknown; models?: unknown };
    const models = Array.isArray(v.models)
      ? v.models.filter((m): m is string => typeof m === "string" && m !== "")
      : [];
    return { all: v.all === true, models: [...new Set(models)].sort() };
  } catch {
    log.warn("pause state is not valid JSON; nothing paused", { path });
    return NOT_PAUSED;
  }
}

/**
 * Writes the pause state atomically (temp file, fsync, rename, directory fsync); removes it when
 * nothing is paused.
 */
export async function writePauseState(path: string, state: PauseState): Promise<void> {
  if (!state.all && state.models.length === 0) {
    await Deno.remove(path).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
    return;
  }
  await Deno.mkdir(dirOf(path), { recursive: true, mode: 0o700 });
  await atomicWrite(path, JSON.stringify(state) + "\n");
}

/** The state after `pause [--model M]` (undefined model: everything). */
export function paused(state: PauseState, model?: string): PauseState {
  if (model === undefined) return { all: true, models: state.models };
  return { all: state.all, models: [...new Set([...state.models, model])].sort() };
}

/**
 * The state after `resume [--model M]` (undefined model: everything). Resuming one model while
 * all are paused is a RangeError: the operator means `resume` for all, or pause models one by one.
 */
export function resumed(state: PauseState, model?: string): PauseState {
  if (model === undefined) return NOT_PAUSED;
  if (state.all) {
    throw new RangeError(
      `every model is paused, not ${model} alone: run "usepod-agent resume" to resume all`,
    );
  }
  return { all: false, models: state.models.filter((m) => m !== model) };
}
