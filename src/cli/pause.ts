// `usepod-agent pause [--model M]` and `resume [--model M]` (issue 8): record the pause state
// beside the identity key and signal the running agent, which advertises the change at once
// without dropping its connection or the jobs in flight.

import { type CommandContext, ExitError, loadForCommand } from "./command.ts";
import {
  paused,
  pauseFilePath,
  type PauseState,
  readPauseState,
  resumed,
  writePauseState,
} from "../ops/pause.ts";
import { signalAgent } from "./reload.ts";

function describe(state: PauseState): string {
  if (state.all) return "every model is paused";
  return state.models.length ? `paused: ${state.models.join(", ")}` : "nothing is paused";
}

/** The `pause` and `resume` commands; exit 0 when recorded (and signalled, if an agent runs). */
export async function pauseCommand(
  ctx: CommandContext,
  action: "pause" | "resume",
): Promise<number> {
  const model = typeof ctx.flags.model === "string" ? ctx.flags.model : undefined;
  if (model === "") throw new ExitError("--model: give a model id");
  const config = await loadForCommand(ctx);
  const path = pauseFilePath(config.identity);
  const before = await readPauseState(path);
  let after: PauseState;
  try {
    after = action === "pause" ? paused(before, model) : resumed(before, model);
  } catch (err) {
    throw new ExitError((err as Error).message);
  }
  await writePauseState(path, after);
  if (Deno.build.os === "windows") {
    ctx.out(`${describe(after)} (saved in ${path}; takes effect when the agent restarts)`);
    return 0;
  }
  const found = await signalAgent(config);
  ctx.out(
    found.pid === undefined
      ? `${
        describe(after)
      } (saved in ${path}; no running agent found, it applies at the next start)`
      : `${describe(after)}: the agent (pid ${found.pid}) advertises it now; jobs in flight finish`,
  );
  return 0;
}
