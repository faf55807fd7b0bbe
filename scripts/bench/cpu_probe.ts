// Preloaded into processes the benchmark measures (`deno run --preload` this file): on SIGUSR2
// it prints `@cpu <user µs> <system µs> <epoch ms>` on stdout from process.cpuUsage (getrusage,
// µs resolution), so CPU per delta is not limited by /proc's 10 ms clock ticks.

const encoder = new TextEncoder();
// Loaded at the first reading, not at start: node:process costs ~1 MiB of RSS, which the agent's
// idle RSS figure must not include (the agent itself loads no node: module at idle).
let nodeProcess: Promise<typeof import("node:process")> | undefined;

Deno.addSignalListener("SIGUSR2", async () => {
  nodeProcess ??= import("node:process");
  const c = (await nodeProcess).cpuUsage();
  const at = performance.timeOrigin + performance.now();
  Deno.stdout.writeSync(encoder.encode(`@cpu ${c.user} ${c.system} ${at}\n`));
});
