// The dev coordinator: the test coordinator (tests/harness/coordinator.ts) as a standalone
// server for trying an agent by hand. Agents dial ws://127.0.0.1:PORT/provider/connect;
// `POST /dev/job` dispatches a job to the newest authenticated agent and streams back its bytes;
// `usepod-agent setup --coordinator http://127.0.0.1:PORT --allow-insecure` pairs against it (§8).

import { parseArgs } from "node:util";
import { type CoordSession, TestCoordinator } from "../tests/harness/coordinator.ts";
import { PairingService } from "../tests/harness/pairing.ts";

/** Adds the /dev/job route: body {model_id, messages?|prompt?, format?, deadline_ms?}. */
export function devRoutes(
  coord: () => TestCoordinator,
): (req: Request) => Promise<Response> | undefined {
  return (req) => {
    const url = new URL(req.url);
    if (url.pathname !== "/dev/job" || req.method !== "POST") return undefined;
    return dispatch(coord(), req);
  };
}

async function dispatch(coord: TestCoordinator, req: Request): Promise<Response> {
  const body = await req.json().catch(() => undefined) as Record<string, unknown> | undefined;
  if (!body || typeof body["model_id"] !== "string") {
    return Response.json({ error: "body needs model_id" }, { status: 400 });
  }
  const session = [...coord.sessions].reverse().find((s) => s.authenticated);
  if (!session) return Response.json({ error: "no agent connected" }, { status: 503 });
  const prompt = typeof body.prompt === "string" ? body.prompt : "Say hello.";
  const request = body.request ?? { messages: [{ role: "user", content: prompt }] };
  const jobId = session.sendJob({
    model_id: body["model_id"],
    request,
    ...(typeof body.format === "string" ? { format: body.format } : {}),
    ...(typeof body["deadline_ms"] === "number" ? { deadline_ms: body["deadline_ms"] } : {}),
  });
  return new Response(relay(session, jobId), {
    headers: { "content-type": "text/event-stream", "x-job-id": jobId },
  });
}

/** The job's relayed bytes as they arrive, then its terminal frame as an SSE comment. */
function relay(session: CoordSession, jobId: string): ReadableStream<Uint8Array> {
  let seen = 0;
  return new ReadableStream({
    async pull(controller) {
      for (;;) {
        const frames = session.framesFor(jobId);
        if (frames.length > seen) {
          const f = frames[seen++]!;
          if (f.type === "job_chunk") {
            controller.enqueue(Uint8Array.fromBase64(f.data as string));
            return;
          }
          controller.enqueue(new TextEncoder().encode(`: ${JSON.stringify(f)}\n\n`));
          controller.close();
          return;
        }
        await session.waitFor((x) => x.job_id === jobId && !frames.includes(x));
      }
    },
    cancel() {
      session.cancel(jobId);
    },
  });
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string", default: "8787" },
      "auto-approve": { type: "boolean", default: false },
    },
  });
  const holder: { coord?: TestCoordinator } = {};
  const pairing = new PairingService({ autoApprove: values["auto-approve"] });
  const jobs = devRoutes(() => holder.coord!);
  const coord = await TestCoordinator.start({
    port: Number(values.port),
    http: (req) => pairing.handle(req) ?? jobs(req),
  });
  holder.coord = coord;
  const base = `http://127.0.0.1:${coord.port}`;
  console.log(`dev coordinator on ${coord.url}`);
  console.log(
    `  pair an agent:  deno task start setup --coordinator ${base} --allow-insecure  (then enter the code at ${base}/host/pair${
      values["auto-approve"] ? "; --auto-approve: approved at once" : ""
    },`,
  );
  console.log(
    `                  or curl -X POST ${base}/dev/pair/approve -d '{"pair_code":"<code>"}')`,
  );
  console.log(
    `  run an agent:   deno task start --allow-insecure --config agent.toml  (coordinator.url = "${coord.url}")`,
  );
  console.log(
    `  send a job:     curl -N -X POST http://127.0.0.1:${coord.port}/dev/job -d '{"model_id":"<id>","prompt":"hi"}'`,
  );
  const stop = () => {
    coord.close().then(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
