// Smoke test of the benchmark (scripts/bench.ts, issues 7 and 13): a --quick run with tiny sizes
// starts every process (nginx too, where installed), relays every byte, and prints the table and
// one JSON line with every figure; without nginx its rows say so and the rest runs.
// It checks shape and correctness only: timings are the benchmark's business, not a test's.

import assert from "node:assert/strict";
import { findNginx } from "../scripts/bench/nginx.ts";
import { FIGURES, NGINX_KEYS, NO_NGINX } from "../scripts/bench/report.ts";

const BENCH = new URL("../scripts/bench.ts", import.meta.url).pathname;

async function bench(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", BENCH, ...args],
    stdout: "piped",
    stderr: "piped",
    env,
  }).output();
  return {
    out,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("bench --quick prints a table and a JSON line with every figure, and loses no byte", async () => {
  const nginx = findNginx() !== undefined;
  if (!nginx) {
    // The nginx rows are the comparison issue 13 asks for: CI installs nginx-light.
    assert.equal(Deno.env.get("CI"), undefined, "nginx (Debian nginx-light) is not installed");
    console.log("nginx not installed: its rows are checked to say so");
  }
  const { out, stdout, stderr } = await bench(["--quick"]);
  assert.equal(out.code, 0, `bench --quick failed:\n${stderr}\n${stdout}`);
  const lines = stdout.trimEnd().split("\n");
  const report = JSON.parse(lines.at(-1)!);
  const keys = Object.keys(FIGURES);
  assert.equal(report.nginx, nginx ? "installed" : "not installed");
  for (const where of [report.figures, report.perRun[0]]) {
    for (const key of keys) {
      if (!nginx && (NGINX_KEYS as string[]).includes(key)) {
        assert.equal(where[key], null, `${key} measured without nginx`);
        continue;
      }
      assert.equal(typeof where[key], "number", `${key} missing or not measured: ${where[key]}`);
    }
  }
  assert.equal(report.quick, true);
  assert.equal(report.runs, 1);
  assert.equal(report.perRun.length, 1);
  for (const field of ["nproc", "cpu", "deno", "clkTck", "commit"]) {
    assert.ok(report.machine[field] !== undefined, `machine.${field} missing`);
  }
  assert.equal(
    report.figures.failedJobs,
    0,
    `relay lost or broke jobs: ${report.notes.join("; ")}`,
  );
  assert.equal(typeof report.allPass, "boolean");
  for (const key of Object.keys(report.pass)) assert.ok(keys.includes(key));
  for (const [key, spec] of Object.entries(FIGURES)) {
    const row = lines.find((l) => l.startsWith(spec.label));
    assert.ok(row !== undefined, `table row "${spec.label}" missing`);
    if ((NGINX_KEYS as string[]).includes(key)) {
      if (nginx) assert.doesNotMatch(row, new RegExp(NO_NGINX), row);
      else assert.match(row, new RegExp(NO_NGINX), row);
    }
  }
});

Deno.test("bench --quick --per-job without nginx: its rows say nginx is not installed, the agent's are measured", async () => {
  const { out, stdout, stderr } = await bench(["--quick", "--per-job"], {
    NGINX: "/nonexistent/nginx",
  });
  assert.equal(out.code, 0, `bench --quick --per-job failed:\n${stderr}\n${stdout}`);
  const lines = stdout.trimEnd().split("\n");
  const report = JSON.parse(lines.at(-1)!);
  assert.equal(report.nginx, "not installed");
  assert.equal(report.figures.failedJobs, 0, report.notes.join("; "));
  assert.ok(report.figures.jobAgentCpuUs > 0, `agent CPU per job: ${report.figures.jobAgentCpuUs}`);
  assert.equal(report.figures.jobNginxCpuUs, null);
  for (const key of ["jobNginxCpuUs", "jobCpuRatioVsNginx"] as const) {
    const row = lines.find((l) => l.startsWith(FIGURES[key].label));
    assert.match(row ?? "", new RegExp(NO_NGINX), `row for ${key}: ${row}`);
  }
  assert.equal(report.pass.jobCpuRatioVsNginx, undefined);
});
