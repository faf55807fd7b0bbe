// The command-line flag parser (src/cli/args.ts): forms accepted and errors naming the flag.

import assert from "node:assert/strict";
import { parseFlags } from "../../src/cli/args.ts";

const SPECS = {
  config: { type: "string", short: "c" },
  force: { type: "boolean" },
  "log-level": { type: "string" },
} as const;

Deno.test("flags take values in every accepted form, positionals keep their order", () => {
  const r = parseFlags(["a", "--config", "x.toml", "b", "--log-level=debug", "--force"], SPECS);
  assert.deepEqual(r.values, { config: "x.toml", "log-level": "debug", force: true });
  assert.deepEqual(r.positionals, ["a", "b"]);
  assert.deepEqual(parseFlags(["-c", "y.toml"], SPECS).values, { config: "y.toml" });
  assert.deepEqual(parseFlags(["-c=z.toml"], SPECS).values, { config: "z.toml" });
  assert.deepEqual(parseFlags(["--config="], SPECS).values, { config: "" });
});

Deno.test("everything after -- is positional", () => {
  assert.deepEqual(parseFlags(["--", "--force", "-c"], SPECS), {
    values: {},
    positionals: ["--force", "-c"],
  });
});

Deno.test("bad flags are TypeErrors naming the flag", () => {
  assert.throws(() => parseFlags(["--bogus"], SPECS), /Unknown option '--bogus'/);
  assert.throws(() => parseFlags(["-x"], SPECS), /Unknown option '-x'/);
  assert.throws(() => parseFlags(["--config"], SPECS), /'--config <value>' argument missing/);
  assert.throws(() => parseFlags(["-c", "--force"], SPECS), /'-c <value>' argument missing/);
  assert.throws(() => parseFlags(["--force=yes"], SPECS), /'--force' does not take a value/);
  assert.throws(() => parseFlags(["--__proto__"], SPECS), /Unknown option/);
});
