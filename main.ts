// usepod-agent entry point: parse the command line, run a command, exit with its code.
// The commands live in src/cli/main.ts.

import { main } from "./src/cli/main.ts";

if (import.meta.main) Deno.exit(await main(Deno.args));
