// GET /metrics (issue 3): the exposition written by src/status/metrics.ts read back by an
// independent Prometheus text-format parser (parse-prometheus-text-format): every family, label
// escaping, cumulative histogram buckets; and the histograms stats.ts keeps per model. The fleet
// families (issue 15: money, build info, times, slots per backend, failed writes), and
// `promtool check metrics` on a real agent's /metrics.

import assert from "node:assert/strict";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import type { FinishedJob } from "../../src/jobs/job.ts";
import { createStatusApp } from "../../src/status/app.ts";
import { METRICS_CONTENT_TYPE, renderMetrics } from "../../src/status/metrics.ts";
import type { StatusDoc } from "../../src/status/snapshot.ts";
import { DURATION_BOUNDS, FIRST_CHUNK_BOUNDS, Histogram, Stats } from "../../src/jobs/stats.ts";
import { zero } from "../../src/books/money_counters.ts";
import { MISS_REASONS } from "../../src/books/earnings.ts";
import { startStatusServer } from "../../src/status/server.ts";
import { agentSource } from "../../src/status/snapshot.ts";
import { withSession } from "../harness/stack.ts";
import { needs, promtool } from "../harness/prometheus.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";

interface Sample {
  value?: string;
  labels?: Record<string, string>;
  buckets?: Record<string, string>;
  count?: string;
  sum?: string;
}
interface Family {
  name: string;
  help: string;
  type: string;
  metrics: Sample[];
}

const parse = (text: string) => parsePrometheusTextFormat(text) as Family[];

const WEIRD = 'we"ird\\model\nname';

function job(over: Partial<FinishedJob>): FinishedJob {
  return {
    jobId: crypto.randomUUID(),
    model: "m1",
    backend: "vllm",
    format: "openai",
    outcome: "job_done",
    message: undefined,
    inputTokens: 10,
    outputTokens: 20,
    usageReported: true,
    firstChunkMs: 40,
    durationMs: 900,
    bytes: 100,
    receivedAt: 0,
    finishedAt: 1000,
    admitted: true,
    ...over,
  } as FinishedJob;
}

function doc(stats: Stats): StatusDoc {
  return {
    "agent": "usepod-agent-deno",
    "version": "0.4.0",
    "pid": 1,
    "started_at": "2026-01-02T03:04:05.000Z",
    "uptime_s": 1,
    "time": "2026-01-02T03:04:06.000Z",
    "public_key": "pk",
    "provider_id": null,
    "coordinator": {
      "url": "wss://c.example/provider/connect",
      "state": "backoff",
      "state_since": "2026-01-02T03:04:05.000Z",
      "next_retry_at": null,
      "last_auth_at": null,
      "reconnects": 3,
      "consecutive_failures": 3,
      "last_error": null,
    },
    "draining": false,
    "limits": { "max_concurrent": 8, "max_tokens_per_minute": null, "in_flight": 2 },
    "backends": [
      {
        "index": 0,
        "kind": "vllm",
        "url": "http://127.0.0.1:8000",
        "health": "up",
        "latency_ms": 12,
        "last_error": null,
        "models": ["m1"],
        "checked_at": null,
        "slots_in_use": 2,
        "slots": 4,
        "queue_waiting": null,
      },
      {
        "index": 1,
        "kind": "ollama",
        "url": "http://127.0.0.1:11434",
        "health": "down",
        "latency_ms": null,
        "last_error": "unreachable",
        "models": [],
        "checked_at": null,
        "slots_in_use": 0,
        "slots": null,
        "queue_waiting": 3,
      },
    ],
    "models": [{
      "model_id": "m1",
      "backend": "vllm",
      "input_per_1m": 1,
      "output_per_1m": 2,
      "max_concurrent": 8,
      "slots_in_use": 2,
      "context_window": null,
      "formats": ["openai"],
      "paused": false,
    }],
    "jobs_in_flight": [],
    "recent_jobs": [],
    "counters": {
      "jobs": stats.totals.jobs,
      "job_done": stats.totals.done,
      "errors": stats.totals.errors,
      "refused": stats.totals.refused,
      "cancelled": stats.totals.cancelled,
      "input_tokens": stats.totals.inputTokens,
      "output_tokens": stats.totals.outputTokens,
      "earned_micro_usdc": 0,
      "earned_usdc": "0.000000",
      "by_model": [...stats.byModel].map(([model, c]) => ({
        "model": model,
        "jobs": c.jobs,
        "input_tokens": c.inputTokens,
        "output_tokens": c.outputTokens,
        "billed_input_tokens": c.doneInputTokens,
        "billed_output_tokens": c.doneOutputTokens,
        "input_per_1m": 1,
        "output_per_1m": 2,
        "earned_micro_usdc": 0,
      })),
    },
  };
}

function family(families: Family[], name: string): Family {
  const f = families.find((x) => x.name === name);
  assert.ok(f, `no family ${name}`);
  return f;
}

/**
 * One model's series of a histogram family, read by the parser. parse-prometheus-text-format
 * folds every label set of a histogram into one sample (it keys buckets by `le` alone and drops
 * labelled _sum/_count), so the model label is cut out of that model's lines first; the parser
 * still checks every line and the bucket/sum/count grouping.
 */
function histogramFor(text: string, name: string, model: string): Sample {
  const label = `model="${
    model.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")
  }"`;
  const lines = text.split("\n").filter((l) =>
    l === `# TYPE ${name} histogram` || l.startsWith(`# HELP ${name} `) ||
    (l.startsWith(`${name}_`) && l.includes(label))
  ).map((l) => l.replace(`{${label}}`, "").replace(`${label},`, ""));
  const parsed = parse(lines.join("\n") + "\n");
  assert.equal(parsed.length, 1);
  assert.equal(parsed[0]!.type, "HISTOGRAM");
  assert.equal(parsed[0]!.metrics.length, 1);
  return parsed[0]!.metrics[0]!;
}

function fedStats(): Stats {
  const stats = new Stats();
  stats.record(job({ firstChunkMs: 40, durationMs: 900 }));
  stats.record(job({ firstChunkMs: 300, durationMs: 4000 }));
  stats.record(job({ outcome: "backend_timeout", firstChunkMs: undefined, durationMs: 60000 }));
  stats.record(job({ outcome: "out_of_capacity", admitted: false, inputTokens: 0, durationMs: 0 }));
  stats.record(job({ model: WEIRD, inputTokens: 1, outputTokens: 2 }));
  return stats;
}

Deno.test("the exposition parses with an independent parser and carries every family with its type", () => {
  const stats = fedStats();
  const families = parse(renderMetrics(doc(stats), stats.histograms));
  const types = Object.fromEntries(families.map((f) => [f.name, f.type]));
  assert.deepEqual(types, {
    "usepod_agent_info": "GAUGE",
    "usepod_agent_start_time_seconds": "GAUGE",
    "usepod_agent_connection_state": "GAUGE",
    "usepod_agent_reconnects_total": "COUNTER",
    "usepod_agent_jobs_total": "COUNTER",
    "usepod_agent_input_tokens_total": "COUNTER",
    "usepod_agent_output_tokens_total": "COUNTER",
    "usepod_agent_jobs_in_flight": "GAUGE",
    "usepod_agent_max_concurrent": "GAUGE",
    "usepod_agent_model_slots_in_use": "GAUGE",
    "usepod_agent_backend_up": "GAUGE",
    "usepod_agent_backend_latency_seconds": "GAUGE",
    "usepod_agent_time_to_first_chunk_seconds": "HISTOGRAM",
    "usepod_agent_job_duration_seconds": "HISTOGRAM",
    "usepod_agent_build_info": "GAUGE",
    "usepod_agent_connection_state_change_time_seconds": "GAUGE",
    "usepod_agent_last_auth_time_seconds": "GAUGE",
    "usepod_agent_connection_failures": "GAUGE",
    "usepod_agent_last_job_time_seconds": "GAUGE",
    "usepod_agent_backend_slots_in_use": "GAUGE",
    "usepod_agent_backend_slots": "GAUGE",
    "usepod_agent_backend_queue_waiting": "GAUGE",
  });
  const jobs = family(families, "usepod_agent_jobs_total").metrics
    .filter((s) => s.labels?.model === "m1")
    .map((s) => [s.labels?.outcome, s.value]);
  assert.deepEqual(jobs, [
    ["backend_timeout", "1"],
    ["job_done", "2"],
    ["out_of_capacity", "1"],
  ]);
  const tokensIn = family(families, "usepod_agent_input_tokens_total").metrics;
  assert.deepEqual(tokensIn.find((s) => s.labels?.model === "m1")?.value, "30");
  assert.equal(family(families, "usepod_agent_jobs_in_flight").metrics[0]?.value, "2");
  assert.equal(family(families, "usepod_agent_reconnects_total").metrics[0]?.value, "3");
  const state = family(families, "usepod_agent_connection_state").metrics;
  assert.deepEqual(
    state.map((s) => [s.labels?.state, s.value]),
    [["connecting", "0"], ["authenticated", "0"], ["backoff", "1"], ["draining", "0"], [
      "stopped",
      "0",
    ]],
  );
  const up = family(families, "usepod_agent_backend_up").metrics;
  assert.deepEqual(up.map((s) => [s.labels?.kind, s.labels?.url, s.value]), [
    ["vllm", "http://127.0.0.1:8000", "1"],
    ["ollama", "http://127.0.0.1:11434", "0"],
  ]);
  const latency = family(families, "usepod_agent_backend_latency_seconds").metrics;
  assert.deepEqual(latency.map((s) => [s.labels?.kind, s.value]), [["vllm", "0.012"]]);
});

Deno.test("histograms are cumulative per model, end with +Inf equal to the count, and sum in seconds", () => {
  const stats = fedStats();
  const text = renderMetrics(doc(stats), stats.histograms);
  const duration = histogramFor(text, "usepod_agent_job_duration_seconds", "m1");
  assert.ok(duration.buckets);
  // 0.9 s, 4 s and 60 s (the refusal has no timing).
  assert.equal(duration.count, "3");
  assert.equal(Number(duration.sum), 64.9);
  assert.equal(duration.buckets["0.5"], "0");
  assert.equal(duration.buckets["1"], "1");
  assert.equal(duration.buckets["5"], "2");
  assert.equal(duration.buckets["30"], "2");
  assert.equal(duration.buckets["60"], "3");
  assert.equal(duration.buckets["+Inf"], "3");
  assert.equal(Object.keys(duration.buckets).length, DURATION_BOUNDS.length + 1);
  const ttfc = histogramFor(text, "usepod_agent_time_to_first_chunk_seconds", "m1");
  assert.ok(ttfc.buckets);
  // Only the two jobs that sent a chunk.
  assert.equal(ttfc.count, "2");
  assert.equal(ttfc.buckets["0.05"], "1");
  assert.equal(ttfc.buckets["0.25"], "1");
  assert.equal(ttfc.buckets["0.5"], "2");
  assert.equal(Object.keys(ttfc.buckets).length, FIRST_CHUNK_BOUNDS.length + 1);
  let last = 0;
  for (const bound of [...FIRST_CHUNK_BOUNDS.map(String), "+Inf"]) {
    const v = Number(ttfc.buckets[bound]);
    assert.ok(v >= last, `bucket ${bound} is cumulative`);
    last = v;
  }
});

Deno.test("label values with quotes, backslashes and line feeds are escaped and read back intact", () => {
  const stats = fedStats();
  const text = renderMetrics(doc(stats), stats.histograms);
  assert.ok(text.includes('model="we\\"ird\\\\model\\nname"'));
  const families = parse(text);
  const models = family(families, "usepod_agent_output_tokens_total").metrics.map((s) =>
    s.labels?.model
  );
  assert.deepEqual(models.sort(), ["m1", WEIRD].sort());
  const weird = histogramFor(text, "usepod_agent_job_duration_seconds", WEIRD);
  assert.equal(weird.count, "1");
});

Deno.test("GET /metrics answers the text format's content type", async () => {
  const stats = fedStats();
  const app = createStatusApp({
    status: () => doc(stats),
    histograms: () => stats.histograms,
    secrets: () => [],
  }, { hostname: "127.0.0.1", port: 9090 });
  const res = await app.request("http://127.0.0.1:9090/metrics");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), METRICS_CONTENT_TYPE);
  const text = await res.text();
  assert.ok(text.endsWith("\n"));
  assert.ok(parse(text).length > 10);
});

Deno.test("stats keep per-model histograms of admitted jobs; refusals count only as jobs", () => {
  const stats = new Stats();
  stats.record(job({ outcome: "out_of_capacity", admitted: false, durationMs: 0 }));
  assert.equal(stats.histograms.size, 0);
  assert.equal(stats.byModel.get("m1")?.jobs["out_of_capacity"], 1);
  stats.record(job({ outcome: "cancelled", firstChunkMs: undefined, durationMs: 250 }));
  stats.record(job({ durationMs: 1500, firstChunkMs: 100, inputTokens: 7, outputTokens: 9 }));
  const h = stats.histograms.get("m1")!;
  assert.equal(h.duration.count, 2);
  assert.equal(h.firstChunk.count, 1);
  assert.equal(h.firstChunk.sum, 0.1);
  const m = stats.byModel.get("m1")!;
  assert.equal(m.doneInputTokens, 7);
  assert.equal(m.doneOutputTokens, 9);
  assert.equal(m.inputTokens, 27);
});

Deno.test("a histogram puts a value equal to a bound into that bound's bucket", () => {
  const h = new Histogram([0.1, 1]);
  for (const v of [0.1, 0.10001, 1, 7]) h.observe(v);
  assert.deepEqual(h.counts, [1, 2, 1]);
  assert.equal(h.count, 4);
});

Deno.test("money, build info, times and slots per backend are in base units with bounded labels", () => {
  const stats = fedStats();
  const money = new Map([["m1", zero()], ["(unadvertised)", zero()]]);
  money.get("m1")!.earnedMicroUsdc = 1_500_000;
  money.get("m1")!.missedMicroUsdc.backend_timeout = 250_000;
  money.get("(unadvertised)")!.missedMicroUsdc.model_not_loaded = 12;
  const d = doc(stats);
  d.coordinator.last_auth_at = "2026-01-02T03:04:05.500Z";
  d.recent_jobs = [{
    "job_id": "j",
    "model": "m1",
    "backend": "vllm",
    "outcome": "job_done",
    "message": null,
    "input_tokens": 1,
    "output_tokens": 2,
    "duration_ms": 3,
    "first_chunk_ms": 1,
    "bytes": 4,
    "finished_at": "2026-01-02T03:04:06.000Z",
  }];
  const families = parse(renderMetrics(d, stats.histograms, {
    money,
    writeFailures: { receipts: 2, earnings: 1, history: 0 },
    receiptsLost: 7,
  }));
  const values = (name: string) =>
    family(families, name).metrics.map((s) => [s.labels ?? {}, Number(s.value)] as const);
  assert.equal(family(families, "usepod_agent_earned_usdc_total").type, "COUNTER");
  assert.deepEqual(values("usepod_agent_earned_usdc_total"), [
    [{ model: "(unadvertised)" }, 0],
    [{ model: "m1" }, 1.5],
  ]);
  const missed = values("usepod_agent_missed_usdc_total");
  // Every reason of every label, from 0; the amounts in USDC.
  assert.equal(missed.length, 2 * MISS_REASONS.length);
  assert.deepEqual(
    missed.filter(([, v]) => v > 0),
    [
      [{ model: "(unadvertised)", reason: "model_not_loaded" }, 0.000012],
      [{ model: "m1", reason: "backend_timeout" }, 0.25],
    ],
  );
  assert.deepEqual(values("usepod_agent_build_info"), [
    [{ version: "0.4.0", deno: Deno.version.deno, target: Deno.build.target }, 1],
  ]);
  assert.deepEqual(values("usepod_agent_last_auth_time_seconds"), [[{}, 1767323045.5]]);
  assert.deepEqual(values("usepod_agent_last_job_time_seconds"), [[{}, 1767323046]]);
  assert.deepEqual(values("usepod_agent_connection_state_change_time_seconds"), [[
    {},
    1767323045,
  ]]);
  assert.deepEqual(values("usepod_agent_connection_failures"), [[{}, 3]]);
  assert.deepEqual(values("usepod_agent_backend_slots_in_use").map(([l, v]) => [l.backend, v]), [
    ["0", 2],
    ["1", 0],
  ]);
  assert.deepEqual(values("usepod_agent_backend_slots").map(([l, v]) => [l.kind, v]), [[
    "vllm",
    4,
  ]]);
  assert.deepEqual(values("usepod_agent_backend_queue_waiting").map(([l, v]) => [l.kind, v]), [
    ["ollama", 3],
  ]);
  assert.deepEqual(values("usepod_agent_write_failures_total"), [
    [{ file: "receipts" }, 2],
    [{ file: "earnings" }, 1],
    [{ file: "history" }, 0],
  ]);
  assert.deepEqual(values("usepod_agent_receipts_lost_total"), [[{}, 7]]);
});

Deno.test("an agent that never authenticated and ran no job has no auth or job time", () => {
  const stats = new Stats();
  const text = renderMetrics(doc(stats), stats.histograms);
  assert.ok(text.includes("# TYPE usepod_agent_last_auth_time_seconds gauge"));
  assert.ok(!/^usepod_agent_last_auth_time_seconds /m.test(text));
  assert.ok(!/^usepod_agent_last_job_time_seconds /m.test(text));
  assert.ok(!text.includes("usepod_agent_earned_usdc_total"), "no money without its facts");
});

Deno.test({
  name:
    "promtool check metrics is silent on a real agent's /metrics after money was earned and missed",
  ...needs("promtool", "metrics_test"),
  fn: async () => {
    await withSession({ backends: [{ kind: "vllm" }] }, async (stack, s) => {
      const server = startStatusServer(agentSource(stack.agent), {
        prometheusAddr: "127.0.0.1:0",
      });
      try {
        const done = await s.collect(s.sendJob({ model_id: MODEL }));
        assert.equal(done.terminal.type, "job_done");
        const refused = await s.collect(s.sendJob({ model_id: "not/served" }));
        assert.equal(refused.terminal.error_code, "model_not_loaded");
        const text = await (await fetch(`http://${server.addr}/metrics`)).text();
        const { code, out } = await promtool(["check", "metrics"], text);
        assert.equal(out, "", `promtool check metrics said:\n${out}`);
        assert.equal(code, 0);
        const value = (series: string) =>
          Number(text.split("\n").find((l) => l.startsWith(`${series} `))?.split(" ")[1]);
        // 11 + 5 tokens at 0.5 / 0.75 USDC per million.
        assert.equal(value(`usepod_agent_earned_usdc_total{model="${MODEL}"}`), 0.00000925);
        // The refused job is assumed the size of the one done, and its model has no own label.
        const missed =
          'usepod_agent_missed_usdc_total{model="(unadvertised)",reason="model_not_loaded"}';
        assert.equal(value(missed), 0.00000925);
        assert.match(text, /^usepod_agent_backend_slots_in_use\{backend="0",kind="vllm",.*\} 0$/m);
        assert.match(text, /^usepod_agent_write_failures_total\{file="receipts"\} 0$/m);
      } finally {
        await server.shutdown();
      }
    });
  },
});
