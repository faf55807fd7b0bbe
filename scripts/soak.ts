// `deno task soak`: the long soak of issue 6 — 10,000 jobs (--jobs N) of random sizes with
// cancels, deadlines and backend failures through the real agent, after a warm-up (--warmup N,
// default 2,000); prints the figures, exits 1 on a broken invariant or RSS growth over 10%.

import { parseArgs } from "node:util";
import { setLevel } from "../src/log.ts";
import { formatReport, runSoak } from "../tests/harness/soak.ts";

const args = parseArgs({
  args: Deno.args,
  options: {
    jobs: { type: "string" },
    warmup: { type: "string" },
    seed: { type: "string" },
  },
}).values;
const jobs = Number(args.jobs ?? 10_000);
const warmup = Number(args.warmup ?? 2_000);
const seed = Number(args.seed ?? Date.now() % 1_000_000);
// DENO_V8_FLAGS for the agent only (e.g. "--max-semi-space-size=2" to see V8's share of RSS).
const v8Flags = Deno.env.get("SOAK_V8_FLAGS");
setLevel("error");
console.log(
  `soak: ${warmup} warm-up + ${jobs} measured jobs, seed ${seed} (rerun with --seed ${seed})`,
);
const report = await runSoak({
  jobs,
  warmup,
  seed,
  ...(v8Flags ? { agentEnv: { DENO_V8_FLAGS: v8Flags } } : {}),
  onProgress: (done, rss) =>
    console.log(`  ${done} jobs dispatched, agent RSS ${(rss / 1024 / 1024).toFixed(1)} MiB`),
});
console.log(formatReport(report));
// The agent's heap settles between the 1,000th and the 2,000th job of this load (RSS ~80 → ~94
// MiB, flat afterwards); a leak shows as growth after that, which is what the 10% bound checks.
const grew = report.rssEnd > report.rssBaseline * 1.1;
if (grew) console.log("FAIL: the agent's RSS grew more than 10% after the warm baseline");
Deno.exit(report.violations.length > 0 || grew ? 1 : 0);
