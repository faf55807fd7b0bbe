// Summarises a V8 .cpuprofile (from `deno run --cpu-prof`): top functions by self time, and
// by total time (each sample counted once per function on its stack), plus time per source file.
// Usage: deno run -A scripts/bench/profile.ts FILE.cpuprofile [--top N]

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

/** The parts of a .cpuprofile this reads. */
export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const SPECIAL = new Set(["(idle)", "(program)", "(garbage collector)", "(root)"]);

function keyOf(f: CallFrame): string {
  if (SPECIAL.has(f.functionName)) return f.functionName;
  const file = f.url.replace(/^.*\/(src|scripts|tests|ext|node|deno)\//, "$1/")
    .replace(/^file:\/\/.*\//, "");
  return `${f.functionName || "(anonymous)"} ${file || "(native)"}:${f.lineNumber + 1}`;
}

function fileOf(f: CallFrame): string {
  if (SPECIAL.has(f.functionName)) return f.functionName;
  if (!f.url) return "(native)";
  return f.url.replace(/^file:\/\/.*?\/(src|scripts|tests)\//, "$1/")
    .replace(/^ext:/, "ext:");
}

function top(m: Map<string, number>, n: number): [string, number][] {
  return [...m].sort((a, b) => b[1] - a[1]).slice(0, n);
}

/**
 * A text summary: busy time (total minus idle), then the top `n` functions by self and total time
 * and the top files by self time, each in ms and percent of busy time.
 */
export function summarise(p: CpuProfile, n = 20): string {
  const byId = new Map(p.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of p.nodes) for (const c of node.children ?? []) parent.set(c, node.id);
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const files = new Map<string, number>();
  let all = 0;
  let idle = 0;
  const limit = Math.min(p.samples.length, p.timeDeltas.length);
  for (let i = 0; i < limit; i++) {
    // timeDeltas[i] is the time before sample i; attribute the following delta to it.
    const us = p.timeDeltas[i + 1] ?? 0;
    const node = byId.get(p.samples[i]!);
    if (!node || us <= 0) continue;
    all += us;
    const k = keyOf(node.callFrame);
    if (k === "(idle)") {
      idle += us;
      continue;
    }
    self.set(k, (self.get(k) ?? 0) + us);
    const file = fileOf(node.callFrame);
    files.set(file, (files.get(file) ?? 0) + us);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id, d = 0; id !== undefined && d < 500; d++) {
      const key = keyOf(byId.get(id)!.callFrame);
      if (!seen.has(key) && key !== "(root)") {
        seen.add(key);
        total.set(key, (total.get(key) ?? 0) + us);
      }
      id = parent.get(id);
    }
  }
  const busy = all - idle;
  const fmt = (us: number) =>
    `${(us / 1000).toFixed(1).padStart(8)} ms ${(100 * us / busy).toFixed(1).padStart(5)}%`;
  const out = [
    `profiled ${(all / 1e6).toFixed(2)} s, busy ${(busy / 1e6).toFixed(2)} s ` +
    `(idle ${(idle / 1e6).toFixed(2)} s); percentages are of busy time`,
    "",
    "top self time:",
    ...top(self, n).map(([k, us]) => `  ${fmt(us)}  ${k}`),
    "",
    "top total time (function on the stack):",
    ...top(total, n).map(([k, us]) => `  ${fmt(us)}  ${k}`),
    "",
    "self time by file:",
    ...top(files, Math.min(n, 15)).map(([k, us]) => `  ${fmt(us)}  ${k}`),
  ];
  return out.join("\n");
}

if (import.meta.main) {
  const [file] = Deno.args;
  if (file === undefined) {
    console.error("usage: deno run -A scripts/bench/profile.ts FILE.cpuprofile [--top N]");
    Deno.exit(2);
  }
  const at = Deno.args.indexOf("--top");
  const n = at >= 0 ? Number(Deno.args[at + 1]) || 20 : 20;
  console.log(summarise(JSON.parse(await Deno.readTextFile(file)), n));
}
