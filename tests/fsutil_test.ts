// atomicWrite (issue 14): the one durable replace used for earnings.json, paused.json, the
// identity file and the receipt checkpoint: whole new content, mode 0600, no temp file left.

import assert from "node:assert/strict";
import { atomicWrite } from "../src/fsutil.ts";

Deno.test("atomicWrite replaces a file whole with mode 0600 and leaves no temp file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-fsutil-" });
  try {
    const path = `${dir}/state.json`;
    await Deno.writeTextFile(path, "old and longer than the new content\n", { mode: 0o644 });
    await atomicWrite(path, '{"v":1}\n');
    assert.equal(await Deno.readTextFile(path), '{"v":1}\n');
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    await atomicWrite(path, new TextEncoder().encode("bytes too"));
    assert.equal(await Deno.readTextFile(path), "bytes too");
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names, ["state.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("atomicWrite into a missing directory rejects and creates nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "usepod-fsutil-" });
  try {
    await assert.rejects(atomicWrite(`${dir}/missing/state.json`, "x"), Deno.errors.NotFound);
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
