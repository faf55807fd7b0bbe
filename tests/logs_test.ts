// Log formats (issue 8): text lines and JSON lines (`--log-format json`,
// `observability.log_format = "json"`), in-process and from the real `run` command, and no
// secret (API key, webhook token) in any line of either format.

import assert from "node:assert/strict";
import { log, type LogFormat, setFormat, setLevel, setSink } from "../src/log.ts";
import { startStack } from "./harness/stack.ts";

const API_KEY = "sk-SECRET-API-KEY-7f3a";
const TOKEN = "SECRET-WEBHOOK-TOKEN-91c2";
const OPENROUTER_MODEL = "meta-llama/llama-3.3-70b-instruct";
const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Runs `fn` with log lines captured at debug in `format`; restores text/info afterwards. */
async function captured(format: LogFormat, fn: (lines: string[]) => Promise<void>) {
  const lines: string[] = [];
  const previous = setSink((l) => lines.push(l));
  setFormat(format);
  setLevel("debug");
  try {
    await fn(lines);
  } finally {
    setSink(previous);
    setFormat("text");
    setLevel("info");
  }
  return lines;
}

function assertJsonLine(line: string): Record<string, unknown> {
  const o = JSON.parse(line) as Record<string, unknown>;
  assert.match(o.time as string, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.ok(["debug", "info", "warn", "error"].includes(o.level as string), line);
  assert.equal(typeof o.msg, "string");
  return o;
}

const TEXT_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO |WARN |ERROR) \S/;

Deno.test("text lines read: time, level, message, key=value fields", async () => {
  const lines = await captured("text", () => {
    log.warn("backend down", { backend: "vllm", reason: "connection refused", n: 3 });
    return Promise.resolve();
  });
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, TEXT_LINE);
  assert.ok(lines[0]!.endsWith(' WARN  backend down backend=vllm reason="connection refused" n=3'));
});

Deno.test("json lines are one object each: time, level, msg, then the fields", async () => {
  const lines = await captured("json", () => {
    log.info("job done", { job: "j-1", ms: 812, tokens: { in: 1, out: 2 } });
    log.error("failed", { error: new Error("boom"), msg: "a field named msg", big: 12n });
    return Promise.resolve();
  });
  assert.equal(lines.length, 2);
  const a = assertJsonLine(lines[0]!);
  assert.deepEqual(Object.keys(a).slice(0, 3), ["time", "level", "msg"]);
  assert.deepEqual({ ...a, time: "" }, {
    time: "",
    level: "info",
    msg: "job done",
    job: "j-1",
    ms: 812,
    tokens: { in: 1, out: 2 },
  });
  const b = assertJsonLine(lines[1]!);
  assert.equal(b.msg, "failed");
  assert.equal(b.error, "boom");
  assert.equal(b._msg, "a field named msg");
  assert.equal(b.big, "12");
});

for (const format of ["text", "json"] as const) {
  Deno.test(`a running agent's ${format} log, from jobs to a failed alert, holds no secret`, async () => {
    let hook: Deno.HttpServer<Deno.NetAddr> | undefined;
    const lines = await captured(format, async (lines) => {
      hook = Deno.serve(
        { hostname: "127.0.0.1", port: 0, onListen() {} },
        () => new Response("no such hook", { status: 404 }),
      );
      const url = `http://127.0.0.1:${hook.addr.port}/hook?token=${TOKEN}`;
      const stack = await startStack({
        backends: [{ kind: "openrouter", apiKey: API_KEY }],
        env: { TEST_OPENROUTER_KEY: API_KEY },
        toml: `[alerts]\nwebhook_url = "${url}"\n`,
        logLevel: "debug",
      });
      try {
        const s = await stack.coord.authenticated(0);
        await s.waitFor((f) => f.type === "capabilities");
        const done = await s.collect(s.sendJob({ model_id: OPENROUTER_MODEL }));
        assert.equal(done.terminal.type, "job_done");
        await s.collect(s.sendJob({ model_id: "not/served" }));
        stack.fakes[0]!.setState("dead");
        await stack.agent.discovery.refresh();
        stack.agent.alerts.check();
        const given = Promise.withResolvers<void>();
        setSink((l) => {
          lines.push(l);
          if (l.includes("alert not delivered")) given.resolve();
        });
        if (!lines.some((l) => l.includes("alert not delivered"))) await given.promise;
      } finally {
        await stack.stop();
        await hook?.shutdown();
      }
    });
    assert.ok(lines.some((l) => l.includes("job done")), "the job was logged");
    assert.ok(lines.some((l) => l.includes("alert not delivered")), "the alert failure was logged");
    for (const line of lines) {
      if (format === "json") assertJsonLine(line);
      else assert.match(line, TEXT_LINE);
      assert.ok(!line.includes(API_KEY), `API key in: ${line}`);
      assert.ok(!line.includes(TOKEN) && !line.includes("/hook"), `webhook URL in: ${line}`);
    }
  });
}

/** Runs the agent (`run`) until it has logged `until`, then SIGTERM; returns its stderr lines. */
async function runAgent(toml: string, flags: string[], until: RegExp): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "usepod-logs-" });
  try {
    const config = `${dir}/agent.toml`;
    await Deno.writeTextFile(config, toml.replaceAll("$DIR", dir));
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "run", "--allow-insecure", "-c", config, ...flags],
      env: { TEST_LOGS_KEY: API_KEY },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const guard = setTimeout(() => child.kill("SIGKILL"), 30_000); // only if `until` never comes
    let text = "";
    let signalled = false;
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      if (!signalled && until.test(text)) {
        signalled = true;
        child.kill("SIGTERM");
      }
    }
    const status = await child.status;
    clearTimeout(guard);
    assert.ok(signalled, `never logged ${until}:\n${text}`);
    assert.equal(status.code, 0, text);
    return text.split("\n").filter((l) => l !== "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** An agent.toml whose coordinator refuses connections and whose secrets the log must not show. */
function unreachableToml(format?: LogFormat): string {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return `[coordinator]
url = "ws://127.0.0.1:${port}/provider/connect"
[identity]
key_path = "$DIR/identity.key"
[[backends]]
kind = "openrouter"
url = "http://127.0.0.1:${port}/api/v1"
api_key_env = "TEST_LOGS_KEY"
[pricing]
default_input_per_1m = 500000
default_output_per_1m = 750000
[observability]
prometheus_addr = "127.0.0.1:0"
${format ? `log_format = "${format}"` : ""}
[alerts]
webhook_url = "http://127.0.0.1:${port}/hook?token=${TOKEN}"
`;
}

const RECONNECTING = /(connect failed|unreachable|reconnect)[^\n]*\n/i;

Deno.test("run --log-format json writes JSON lines only, without a secret", async () => {
  const lines = await runAgent(unreachableToml(), ["--log-format", "json"], RECONNECTING);
  assert.ok(lines.length >= 2);
  for (const line of lines) {
    assertJsonLine(line);
    assert.ok(!line.includes(API_KEY) && !line.includes(TOKEN), line);
  }
  assert.ok(lines.some((l) => JSON.parse(l).msg === "starting"));
});

Deno.test("observability.log_format = json gives JSON lines; --log-format text overrides it", async () => {
  const json = await runAgent(unreachableToml("json"), [], RECONNECTING);
  for (const line of json) assertJsonLine(line);
  const text = await runAgent(
    unreachableToml("json"),
    ["--log-format", "text"],
    RECONNECTING,
  );
  for (const line of text) {
    assert.match(line, TEXT_LINE);
    assert.ok(!line.includes(API_KEY) && !line.includes(TOKEN), line);
  }
});
