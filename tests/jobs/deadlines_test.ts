// One timer for every job deadline (src/jobs/deadlines.ts): deadlines fire once, in order, on
// time; a cleared one never fires; no timer is left once none is pending (the op sanitizer
// checks that too).

import assert from "node:assert/strict";
import { Deadlines } from "../../src/jobs/deadlines.ts";

Deno.test("deadlines fire once each, earliest first, whatever order they were added in", async () => {
  const d = new Deadlines();
  const fired: string[] = [];
  const all = Promise.withResolvers<void>();
  const t0 = performance.now();
  const at: Record<string, number> = {};
  const add = (name: string, ms: number) =>
    d.add(ms, () => {
      fired.push(name);
      at[name] = performance.now() - t0;
      if (fired.length === 3) all.resolve();
    });
  add("late", 60);
  add("early", 10);
  add("middle", 30);
  await all.promise;
  assert.deepEqual(fired, ["early", "middle", "late"]);
  assert.ok(at.early! >= 9 && at.middle! >= 29 && at.late! >= 59, JSON.stringify(at));
  assert.equal(d.size, 0);
});

Deno.test("a cleared deadline never fires; clearing the last one stops the timer", async () => {
  const d = new Deadlines();
  let fired = 0;
  const clearA = d.add(5, () => fired++);
  const clearB = d.add(10, () => fired++);
  clearA();
  clearA(); // idempotent
  assert.equal(d.size, 1);
  clearB();
  assert.equal(d.size, 0);
  // Nothing pending: no timer either (the test's op sanitizer fails on a leaked one).
  const kept = Promise.withResolvers<void>();
  d.add(20, () => kept.resolve());
  await kept.promise;
  assert.equal(fired, 0);
});

Deno.test("a deadline added sooner than the armed one moves the timer; one cleared early leaves the rest", async () => {
  const d = new Deadlines();
  const fired: number[] = [];
  const done = Promise.withResolvers<void>();
  d.add(80, () => {
    fired.push(80);
    done.resolve();
  });
  const clear40 = d.add(40, () => fired.push(40));
  d.add(5, () => fired.push(5));
  clear40();
  await done.promise;
  assert.deepEqual(fired, [5, 80]);
});
