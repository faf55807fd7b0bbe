// Preloaded into processes the benchmark measures (`deno run --preload` this file): on SIGUSR2
// it prints `@cpu <user µs> <system µs> <epoch ms>` on stdout from process.cpuUsage (getrusage,
// µs resolution), so CPU per delta is not limited by /proc's 10 ms clock ticks.

import process from "node:process";

const encoder = new TextEncoder();

Deno.addSignalListener("SIGUSR2", () => {
  const c = process.cpuUsage();
  const at = performance.timeOrigin + performance.now();
  Deno.stdout.writeSync(encoder.encode(`@cpu ${c.user} ${c.system} ${at}\n`));
});
