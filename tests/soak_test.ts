// The soak's short form (issue 6), in every `deno task test`: 500 jobs of random sizes with
// cancels, deadlines, unknown models and backend failures through the real agent (a subprocess).
// The long form, with the RSS bound, is `deno task soak` (scripts/soak.ts).

import assert from "node:assert/strict";
import { formatReport, runSoak } from "./harness/soak.ts";

Deno.test("500 soak jobs: each ends with exactly one terminal frame or a cancel, byte-exact where it succeeded, nothing left open", async () => {
  const seed = Number(Deno.env.get("SOAK_SEED") ?? 20260101);
  const report = await runSoak({ jobs: 500, seed });
  console.log(formatReport(report) + `\n  (seed ${seed}: SOAK_SEED=${seed} to rerun)`);
  assert.deepEqual(report.violations, []);
  const o = report.outcomes;
  assert.ok((o.job_done ?? 0) > 300, "most jobs succeed");
  assert.equal(report.exact, report.done, "every job_done relayed the backend's bytes exactly");
  for (const code of ["internal", "backend_timeout", "model_not_loaded"]) {
    assert.ok((o[code] ?? 0) > 0, `some jobs ended ${code}`);
  }
  assert.ok(report.cancelsSent > 0 && (o.cancelled ?? 0) > 0, "some jobs were cancelled");
  const total = Object.values(o).reduce((a, b) => a + b, 0);
  assert.equal(total, 500, "every job accounted for once");
});
