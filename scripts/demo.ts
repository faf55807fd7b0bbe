// `deno task demo`: the agent's main job in a few seconds, on this machine alone. Starts the
// dev coordinator and a fake vLLM backend, runs the real agent (main.ts) against them as a
// subprocess, dispatches jobs (one streamed, one cancelled, one over capacity), drains, exits 0.

import { type CoordSession, TestCoordinator } from "../tests/harness/coordinator.ts";
import { startFakeBackend } from "../tests/harness/fake_backend.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";
const color = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
const dim = (s: string) => (color ? `\x1b[2m${s}\x1b[0m` : s);
const bold = (s: string) => (color ? `\x1b[1m${s}\x1b[0m` : s);
const step = (s: string) => console.log(`\n${bold(`▸ ${s}`)}`);

const words =
  ("Use Pod routes each inference job to a provider agent like this one, which streams " +
    "it from the local GPU server and relays every byte back, earning per token.").split(" ")
    .map((w) => w + " ");

async function main(): Promise<number> {
  const coord = await TestCoordinator.start();
  const backend = await startFakeBackend({
    kind: "vllm",
    defaultScript: { deltas: words, delayMs: 40 },
  });
  const dir = await Deno.makeTempDir({ prefix: "usepod-demo-" });
  const configPath = `${dir}/agent.toml`;
  await Deno.writeTextFile(
    configPath,
    `[coordinator]
url = "${coord.url}"

[identity]
key_path = "${dir}/identity.key"

[[backends]]
kind = "vllm"
url = "${backend.url}"

[pricing]
default_input_per_1m = 500_000
default_output_per_1m = 750_000

[limits]
max_concurrent = 2
drain_timeout_s = 5

[observability]
prometheus_addr = "127.0.0.1:0"
`,
  );
  console.log(bold("usepod-agent demo"));
  console.log(dim(`  dev coordinator ${coord.url}`));
  console.log(dim(`  fake vLLM        ${backend.url} serving ${MODEL}`));
  console.log(dim(`  config           ${configPath}`));

  step("starting the agent: deno run -A main.ts --config … --allow-insecure");
  const agent = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../main.ts", import.meta.url).pathname,
      "--config",
      configPath,
      "--allow-insecure",
    ],
    stdout: "inherit",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const logs = pipeLogs(agent.stderr);

  let ok = true;
  try {
    const s = await withTimeout(coord.authenticated(0), 15_000, "agent did not authenticate");
    console.log(
      `  authenticated: signature ${
        s.signatureValid ? "verified" : "INVALID"
      } (Ed25519, @noble/ed25519)`,
    );
    const caps = await s.waitFor((f) => f.type === "capabilities");
    for (const m of caps.models as Record<string, unknown>[]) {
      console.log(
        `  advertised ${m.model_id} via ${m.backend}: ${m.input_per_1m}/${m.output_per_1m} µUSDC per 1M tokens in/out, context ${m.context_window}`,
      );
    }

    step("job 1: streamed to this terminal");
    const one = s.sendJob({
      model_id: MODEL,
      request: { messages: [{ role: "user", content: "What is Use Pod?" }] },
    });
    const r1 = await streamToTerminal(s, one);
    console.log(
      `  ${r1.type}: ${JSON.stringify(r1.tokens ?? r1.error_code)} in ${r1.duration_ms} ms`,
    );
    ok &&= r1.type === "job_done";

    step("job 2: cancelled after three chunks");
    const two = s.sendJob({ model_id: MODEL });
    await s.nth("job_chunk", countChunks(s) + 3);
    s.cancel(two);
    const closed = await backend.waitForClose(2);
    const three = s.sendJob({ model_id: MODEL, request: { max_tokens: 3 } });
    await s.collect(three);
    const terminals = s.framesFor(two).filter((f) => f.type !== "job_chunk");
    console.log(
      `  backend saw: ${closed}; terminal frames for the cancelled job: ${terminals.length}`,
    );
    ok &&= closed === "client-closed" && terminals.length === 0;

    step("job 3: over capacity (max_concurrent = 2, two slow jobs in flight)");
    backend.setDefaultScript({ deltas: words, delayMs: 100 });
    const busy = [s.sendJob({ model_id: MODEL }), s.sendJob({ model_id: MODEL })];
    await backend.waitForRequests(5);
    const over = await s.collect(s.sendJob({ model_id: MODEL }));
    console.log(
      `  third job: ${over.terminal.type} ${over.terminal.error_code}: ${over.terminal.message}`,
    );
    ok &&= over.terminal.error_code === "out_of_capacity";
    for (const id of busy) s.cancel(id);

    step("SIGTERM: graceful drain, close 1001, exit 0");
    agent.kill("SIGTERM");
    const status = await agent.status;
    const close = await s.closed;
    console.log(
      `  agent exited with code ${status.code}; coordinator saw close ${close.code} "${close.reason}"`,
    );
    ok &&= status.code === 0 && close.code === 1001;
  } catch (err) {
    ok = false;
    console.log(`demo failed: ${(err as Error).message}`);
    try {
      agent.kill("SIGKILL");
    } catch { /* already gone */ }
    await agent.status;
  } finally {
    await logs;
    await coord.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
  console.log(`\n${bold(ok ? "demo ok" : "demo FAILED")}`);
  return ok ? 0 : 1;
}

function countChunks(s: CoordSession): number {
  return s.frames.filter((f) => f.type === "job_chunk").length;
}

/** Prints the content deltas of a job's relayed SSE as they arrive; returns the terminal frame. */
async function streamToTerminal(s: CoordSession, jobId: string) {
  const decoder = new TextDecoder();
  let line = "";
  let seen = 0;
  Deno.stdout.writeSync(new TextEncoder().encode("  "));
  for (;;) {
    const frames = s.framesFor(jobId);
    for (; seen < frames.length; seen++) {
      const f = frames[seen]!;
      if (f.type !== "job_chunk") {
        console.log();
        return f;
      }
      line += decoder.decode(Uint8Array.fromBase64(f.data as string), { stream: true });
      let nl;
      while ((nl = line.indexOf("\n")) >= 0) {
        const l = line.slice(0, nl).trim();
        line = line.slice(nl + 1);
        if (!l.startsWith("data: {")) continue;
        const content = JSON.parse(l.slice(6)).choices?.[0]?.delta?.content;
        if (content) Deno.stdout.writeSync(new TextEncoder().encode(content));
      }
    }
    const known = frames.length;
    await s.waitFor((f) => f.job_id === jobId && s.framesFor(jobId).length > known);
  }
}

async function pipeLogs(stream: ReadableStream<Uint8Array>): Promise<void> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      console.log(dim(`  agent │ ${buf.slice(0, nl).replace(/^\S+ /, "")}`));
      buf = buf.slice(nl + 1);
    }
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

if (import.meta.main) Deno.exit(await main());
