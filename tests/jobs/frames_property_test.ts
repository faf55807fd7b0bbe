// Property test (issue 14) over coordinator frame sequences: random interleavings of jobs,
// cancels, duplicate job ids, unknown frame types, bad fields, invalid JSON and unknown models,
// parsed by protocol.ts and dispatched as the session does, against the real Executor and Stats
// with a fake vLLM on loopback. What must hold: exactly one terminal frame per job that was not
// cancelled (none after a cancel), and every table within its bound.

import assert from "node:assert/strict";
import fc from "fast-check";
import { parseConfig } from "../../src/config/config.ts";
import { Discovery } from "../../src/backends/discovery.ts";
import { Executor } from "../../src/jobs/executor.ts";
import type { Link } from "../../src/jobs/job.ts";
import { MAX_MODEL_LABELS, RECENT_MAX, Stats, WINDOW_MAX } from "../../src/jobs/stats.ts";
import { parseInbound } from "../../src/link/protocol.ts";
import { setLevel } from "../../src/log.ts";
import { withFakeBackend } from "../harness/fake_backend.ts";
import { within } from "../harness/agent_process.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";
const MAX_CONCURRENT = 3;
/** A small pool of ids, so duplicates, re-use after the end and cancels of live jobs happen. */
const IDS = Array.from({ length: 6 }, (_, i) => `00000000-0000-4000-8000-00000000000${i}`);

type Frame = { type: string; job_id?: string } & Record<string, unknown>;

/** A link that records what the executor sends and never backs up. */
class RecordingLink implements Link {
  readonly open = true;
  readonly bufferedAmount = 0;
  queuedTotal = 0;
  flushedTotal = 0;
  readonly sent: Frame[] = [];
  send(text: string): boolean {
    this.sent.push(JSON.parse(text));
    this.queuedTotal += text.length;
    this.flushedTotal = this.queuedTotal;
    return true;
  }
  waitFlushed(): Promise<void> {
    return Promise.resolve();
  }
}

/** One step of a coordinator: a frame (as text) or a pause that lets streams progress. */
type Step = { pause: number } | { text: string };

const id = fc.constantFrom(...IDS);
const model = fc.oneof(
  { weight: 4, arbitrary: fc.constant(MODEL) },
  fc.integer({ min: 0, max: 10_000 }).map((n) => `unknown/model-${n}`),
  fc.constant(""),
);
const job = fc.record({
  type: fc.constant("job"),
  job_id: fc.oneof({ weight: 9, arbitrary: id }, { weight: 1, arbitrary: fc.constant("nope") }),
  model_id: model,
  request: fc.oneof(
    { weight: 9, arbitrary: fc.constant({ messages: [{ role: "user", content: "hi" }] }) },
    { weight: 1, arbitrary: fc.constant("not an object") },
  ),
  format: fc.oneof(
    { weight: 9, arbitrary: fc.constantFrom("openai", "anthropic", undefined) },
    { weight: 1, arbitrary: fc.constant("klingon") },
  ),
  deadline_ms: fc.oneof(
    { weight: 9, arbitrary: fc.constantFrom(undefined, 5_000) },
    { weight: 1, arbitrary: fc.constantFrom(0, 1.5, 99_999_999) },
  ),
}, { requiredKeys: ["type", "job_id", "model_id", "request"] });
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: job.map((j) => ({ text: JSON.stringify(j) })) },
  {
    weight: 3,
    arbitrary: id.map((i) => ({ text: JSON.stringify({ type: "job_cancel", job_id: i }) })),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom("config_update", "x".repeat(300)).map((t) => ({
      text: JSON.stringify({ type: t }),
    })),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom("{", "[]", '{"type":7}', "null").map((text) => ({ text })),
  },
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 12 }).map((pause) => ({ pause })) },
);

Deno.test("property: any interleaving of coordinator frames gives one terminal frame per job not cancelled, none after a cancel, and bounded tables", async () => {
  setLevel("error");
  await withFakeBackend(
    { kind: "vllm", defaultScript: { deltas: 4, delayMs: 4 } },
    async (fake) => {
      const config = parseConfig(
        `[coordinator]\nurl = "ws://127.0.0.1:9/provider/connect"\n\n` +
          `[[backends]]\nkind = "vllm"\nurl = "${fake.url}"\n\n` +
          `[pricing]\ndefault_input_per_1m = 500_000\ndefault_output_per_1m = 750_000\n\n` +
          `[limits]\nmax_concurrent = ${MAX_CONCURRENT}\n`,
        "/nonexistent/agent.toml",
        { allowInsecure: true },
      );
      const discovery = new Discovery(() => config);
      await discovery.refresh();
      assert.ok(discovery.current.byId.has(MODEL));
      const deadline = Date.now() + 8_000; // a time bound for the whole property, whatever the runs
      const seen = { done: 0, refused: 0, liveCancels: 0, duplicates: 0, malformed: 0 };
      await fc.assert(
        fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 40 }), async (steps) => {
          const stats = new Stats(Date.now, (m) => discovery.current.byId.has(m));
          const ex = new Executor({
            maxConcurrent: () => MAX_CONCURRENT,
            routes: () => discovery.current,
            onFinished: (j) => stats.record(j),
          });
          const link = new RecordingLink();
          /** Terminal frames each id must get: +1 per job answered or admitted, -1 per live cancel. */
          const expected = new Map<string, number>();
          const bump = (k: string, d: number) => expected.set(k, (expected.get(k) ?? 0) + d);
          /** Ids whose live job was cancelled (until a new job takes the id). */
          const cancelled = new Set<string>();
          for (const s of steps) {
            if ("pause" in s) {
              await new Promise((r) => setTimeout(r, s.pause));
              continue;
            }
            const r = parseInbound(s.text);
            if (!r.ok) {
              if (r.jobId !== undefined) {
                if (!ex.active().some((j) => j.jobId === r.jobId)) bump(r.jobId, 1);
                ex.rejectMalformed(r.jobId, r.reason, link);
                seen.malformed++;
              }
            } else if (r.frame.type === "job") {
              const live = ex.active().some((j) =>
                j.jobId === (r.frame as { jobId: string }).jobId
              );
              if (live) seen.duplicates++; // a duplicate of a live job is ignored
              else bump(r.frame.jobId, 1), cancelled.delete(r.frame.jobId);
              ex.submit(r.frame, link);
            } else if (r.frame.type === "job_cancel") {
              // A live job's first cancel takes its terminal frame away; later ones change nothing.
              if (ex.cancel(r.frame.jobId) && !cancelled.has(r.frame.jobId)) {
                cancelled.add(r.frame.jobId);
                bump(r.frame.jobId, -1);
                seen.liveCancels++;
              }
            }
            assert.ok(ex.inFlight <= MAX_CONCURRENT, `${ex.inFlight} jobs in flight`);
          }
          await within(ex.idle(), 10_000, "every job ended");
          for (const i of [...IDS, "nope"]) {
            const got = link.sent.filter((f) =>
              f.job_id === i && (f.type === "job_done" || f.type === "job_error")
            ).length;
            assert.equal(got, expected.get(i) ?? 0, `terminal frames for ${i}`);
          }
          assert.ok(stats.byModel.size <= MAX_MODEL_LABELS + 1);
          assert.ok(stats.histograms.size <= MAX_MODEL_LABELS + 1);
          assert.ok(stats.recent().length <= RECENT_MAX);
          assert.ok(stats.windowSize <= WINDOW_MAX);
          assert.ok([...stats.byModel.keys()].every((k) => k === MODEL || k === "(unadvertised)"));
          for (const f of link.sent) {
            if (f.type === "job_done") seen.done++;
            else if (f.type === "job_error") seen.refused++;
          }
          assert.equal(ex.inFlight, 0);
          assert.equal(ex.inFlightFor(MODEL), 0);
        }),
        { numRuns: 150, interruptAfterTimeLimit: Math.max(1, deadline - Date.now()) },
      );
      // The runs reached every case: streams finished and refused, live cancels, duplicates.
      for (const [k, n] of Object.entries(seen)) {
        assert.ok(n > 0, `no ${k} in any run: ${JSON.stringify(seen)}`);
      }
    },
  );
});
