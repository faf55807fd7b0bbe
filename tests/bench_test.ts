// Smoke test of the benchmark (scripts/bench.ts, issue 7): a --quick run with tiny sizes starts
// every process, relays every byte, and prints the table and one JSON line with every figure.
// It checks shape and correctness only: timings are the benchmark's business, not a test's.

import assert from "node:assert/strict";
import { FIGURES } from "../scripts/bench/report.ts";

const BENCH = new URL("../scripts/bench.ts", import.meta.url).pathname;

Deno.test("bench --quick prints a table and a JSON line with every figure, and loses no byte", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", BENCH, "--quick"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `bench --quick failed:\n${stderr}\n${stdout}`);
  const lines = stdout.trimEnd().split("\n");
  const report = JSON.parse(lines.at(-1)!);
  const keys = Object.keys(FIGURES);
  for (const where of [report.figures, report.perRun[0]]) {
    for (const key of keys) {
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
  for (const spec of Object.values(FIGURES)) {
    assert.ok(lines.some((l) => l.startsWith(spec.label)), `table row "${spec.label}" missing`);
  }
});
