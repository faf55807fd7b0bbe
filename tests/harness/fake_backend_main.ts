// Process entry for one fake backend, for the benchmark and for tests that kill a backend process:
// `deno run -A tests/harness/fake_backend_main.ts --kind vllm --port 0 [--deltas N] [--delay-ms N]
// [--timestamps] [--models a,b]` prints `{"url":…,"port":N}` once listening; SIGTERM/SIGINT close it.

import { parseArgs } from "node:util";
import { DEFAULT_MODELS, type FakeKind, type Script, startFakeBackend } from "./fake_backend.ts";

function fail(message: string): never {
  console.error(`fake_backend_main: ${message}`);
  Deno.exit(2);
}

function count(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) fail(`--${flag} wants a whole number, got "${value}"`);
  return n;
}

let args;
try {
  args = parseArgs({
    args: Deno.args,
    options: {
      kind: { type: "string" },
      port: { type: "string" },
      deltas: { type: "string" },
      "delay-ms": { type: "string" },
      timestamps: { type: "boolean" },
      models: { type: "string" },
    },
  }).values;
} catch (err) {
  fail(err instanceof Error ? err.message : String(err));
}

const kind = args.kind;
if (kind === undefined || !Object.hasOwn(DEFAULT_MODELS, kind)) {
  fail(`--kind must be one of ${Object.keys(DEFAULT_MODELS).join(", ")}`);
}
const script: Script = {};
const deltas = count("deltas", args.deltas);
const delayMs = count("delay-ms", args["delay-ms"]);
if (deltas !== undefined) script.deltas = deltas;
if (delayMs !== undefined) script.delayMs = delayMs;
if (args.timestamps) script.timestamps = true;

const backend = await startFakeBackend({
  kind: kind as FakeKind,
  port: count("port", args.port) ?? 0,
  defaultScript: script,
  ...(args.models ? { models: args.models.split(",").filter((m) => m !== "") } : {}),
});
console.log(JSON.stringify({ url: backend.url, port: backend.port }));

const stop = async () => {
  Deno.removeSignalListener("SIGTERM", stop);
  Deno.removeSignalListener("SIGINT", stop);
  await backend.close();
};
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
