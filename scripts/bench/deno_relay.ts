// The floor a Deno program starts from (issue 13's evidence): the smallest relay Deno can be, an
// HTTP server (Deno.serve) that forwards each POST to one backend over the agent's pooled raw
// HTTP/1.1 client and streams the answer back, with no protocol, accounting or checks. The bench
// drives it like nginx and reads its CPU from /proc. Usage: deno run -A deno_relay.ts BACKEND_URL

import { request } from "../../src/backends/http1.ts";
import { ConnectionPool } from "../../src/backends/pool.ts";

const backend = Deno.args[0];
if (!backend) {
  console.error("usage: deno_relay.ts BACKEND_URL");
  Deno.exit(2);
}
const pool = new ConnectionPool();

const server = Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  onListen: ({ port }) => console.log(JSON.stringify({ url: `http://127.0.0.1:${port}` })),
}, async (req) => {
  const url = new URL(new URL(req.url).pathname, backend);
  const res = await request({
    method: "POST",
    url,
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: new Uint8Array(await req.arrayBuffer()),
    signal: req.signal,
    pool,
  });
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      const piece = await res.read();
      if (piece === null) c.close();
      else c.enqueue(piece);
    },
    cancel: () => res.close(),
  });
  return new Response(body, {
    status: res.status,
    headers: { "content-type": res.headers.get("content-type") ?? "text/event-stream" },
  });
});

// Ends with its parent: stdin closes (or says anything).
for await (const _ of Deno.stdin.readable) break;
pool.close();
await server.shutdown();
