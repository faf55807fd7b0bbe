// The alert rules and the example scrape config of deploy/prometheus (issue 15), checked by
// Debian's promtool: the rules are valid, their unit tests (alerts_test.yml) pass, every alert
// has a summary and a runbook sentence and is tested both firing and not firing.

import assert from "node:assert/strict";
import { needs, promtool } from "../harness/prometheus.ts";

const DIR = new URL("../../deploy/prometheus/", import.meta.url).pathname;
const RULES = `${DIR}alerts.yml`;
const NEEDS = needs("promtool", "prometheus_test");

/** The alert names of alerts.yml, in order. */
async function alertNames(): Promise<string[]> {
  const text = await Deno.readTextFile(RULES);
  return [...text.matchAll(/^ {6}- alert: (\w+)$/gm)].map((m) => m[1]!);
}

Deno.test({
  name: "promtool check rules accepts every alert rule",
  ...NEEDS,
  fn: async () => {
    const { code, out } = await promtool(["check", "rules", RULES]);
    assert.equal(code, 0, out);
    const names = await alertNames();
    assert.ok(names.length >= 9, `alerts: ${names.join(", ")}`);
    assert.match(out, new RegExp(`SUCCESS: ${names.length} rules found`));
  },
});

Deno.test({
  name: "promtool test rules passes the unit tests of the alerts",
  ...NEEDS,
  fn: async () => {
    const { code, out } = await promtool(["test", "rules", `${DIR}alerts_test.yml`]);
    assert.equal(code, 0, out);
    assert.match(out, /SUCCESS/);
    assert.doesNotMatch(out, /FAILED/);
  },
});

Deno.test("every alert has a severity, a summary and a runbook sentence", async () => {
  const text = await Deno.readTextFile(RULES);
  const blocks = text.split(/^ {6}- alert: /m).slice(1);
  assert.deepEqual(blocks.map((b) => b.split("\n")[0]), await alertNames());
  for (const b of blocks) {
    const name = b.split("\n")[0];
    assert.match(b, /\n {10}severity: (critical|warning)\n/, `${name}: severity`);
    assert.match(b, /\n {10}summary: "[^"]{10,}"\n/, `${name}: summary`);
    const runbook = /\n {10}runbook: >-\n((?: {12}.+\n?)+)/.exec(b)?.[1];
    assert.ok(runbook, `${name}: runbook`);
    assert.match(runbook.replace(/\s+/g, " ").trim(), /^[A-Z].{40,}[.)]$/, `${name}: a sentence`);
  }
});

Deno.test("the unit tests cover every alert both firing and not firing", async () => {
  const tests = await Deno.readTextFile(`${DIR}alerts_test.yml`);
  const cases = tests.split(/^ {6}- alertname: /m).slice(1).map((c) => ({
    name: c.split("\n")[0]!,
    fires: !/^ {8}exp_alerts: \[\]$/m.test(c),
  }));
  const names = await alertNames();
  for (const name of names) {
    const mine = cases.filter((c) => c.name === name);
    assert.ok(mine.some((c) => c.fires), `${name}: no case where it fires`);
    assert.ok(mine.some((c) => !c.fires), `${name}: no case where it stays quiet`);
  }
  assert.deepEqual(cases.filter((c) => !names.includes(c.name)), [], "cases of unknown alerts");
});

Deno.test({
  name: "promtool check config accepts the example scrape config with its rules",
  ...NEEDS,
  fn: async () => {
    // A copy with the token file it names (promtool checks that it exists).
    const dir = await Deno.makeTempDir({ prefix: "usepod-scrape-" });
    try {
      for (const f of ["scrape.yml", "alerts.yml"]) {
        await Deno.copyFile(`${DIR}${f}`, `${dir}/${f}`);
      }
      await Deno.writeTextFile(`${dir}/usepod-agent.token`, "example-token\n");
      const { code, out } = await promtool(["check", "config", `${dir}/scrape.yml`]);
      assert.equal(code, 0, out);
      assert.match(out, /SUCCESS: 1 rule files found/);
      assert.match(out, /SUCCESS: 9 rules found/);
      assert.match(await Deno.readTextFile(`${DIR}scrape.yml`), /job_name: usepod-agent\n/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
