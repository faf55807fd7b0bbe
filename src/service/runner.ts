// The real outside world behind `usepod-agent service`: commands through Deno.Command, files
// through Deno's file API, and the root / administrator check. Tests inject fakes instead.

import { type Runner, type ServiceContext, ServiceError } from "./common.ts";

const decoder = new TextDecoder();

/**
 * Runs commands with Deno.Command. With `inherit` the command shares the terminal (output is
 * not captured); a command that is not on PATH gives exit 127 rather than throwing.
 *
 * @example
 * ```ts
 * const { code, stdout } = await realRunner.run("systemctl", ["is-active", "usepod-agent"]);
 * ```
 */
export const realRunner: Runner = {
  async run(cmd, args, opts) {
    const inherit = opts?.inherit === true;
    try {
      const command = new Deno.Command(cmd, {
        args,
        stdin: inherit ? "inherit" : "null",
        stdout: inherit ? "inherit" : "piped",
        stderr: inherit ? "inherit" : "piped",
      });
      if (inherit) {
        const status = await command.spawn().status;
        return { code: status.code, stdout: "", stderr: "" };
      }
      const out = await command.output();
      return {
        code: out.code,
        stdout: decoder.decode(out.stdout),
        stderr: decoder.decode(out.stderr),
      };
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        return { code: 127, stdout: "", stderr: `${cmd}: command not found` };
      }
      throw err;
    }
  },
};

/** The real file operations of a {@linkcode ServiceContext}. */
export const realFiles: Pick<ServiceContext, "writeFile" | "removeFile" | "exists"> = {
  async writeFile(path, text, mode) {
    await Deno.writeTextFile(path, text, mode === undefined ? {} : { mode });
    // `mode` above applies only to a new file; an existing one keeps its bits otherwise.
    if (mode !== undefined && Deno.build.os !== "windows") await Deno.chmod(path, mode);
  },
  async removeFile(path) {
    try {
      await Deno.remove(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  },
  async exists(path) {
    try {
      await Deno.stat(path);
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return false;
      throw err;
    }
  },
};

/**
 * Root on Linux and macOS; on Windows, whether `fltmc` (which needs an elevated token) succeeds.
 *
 * @example
 * ```ts
 * const elevated = await detectElevated("linux", realRunner);
 * ```
 */
export async function detectElevated(os: ServiceContext["os"], runner: Runner): Promise<boolean> {
  if (os === "windows") return (await runner.run("fltmc", [])).code === 0;
  return Deno.uid() === 0;
}

/**
 * A context with the real runner, files, OS and elevation check, for the CLI.
 *
 * @example
 * ```ts
 * const ctx = await realServiceContext({ execPath: Deno.execPath(), configPath: undefined,
 *   logLevel: undefined });
 * ```
 */
export async function realServiceContext(opts: {
  execPath: string;
  configPath: string | undefined;
  logLevel: string | undefined;
  follow?: boolean;
}): Promise<ServiceContext> {
  const os = Deno.build.os;
  if (os !== "linux" && os !== "darwin" && os !== "windows") {
    throw new ServiceError(`usepod-agent service supports Linux, macOS and Windows, not ${os}`, 1);
  }
  return {
    os,
    execPath: opts.execPath,
    configPath: opts.configPath,
    logLevel: opts.logLevel,
    isElevated: await detectElevated(os, realRunner),
    runner: realRunner,
    ...realFiles,
    follow: opts.follow ?? false,
  };
}
