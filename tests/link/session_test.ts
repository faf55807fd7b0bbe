// The coordinator session (PROTOCOL §1, §3, §6) over real sockets: handshake and signature,
// enrollment code and provider_id, close classification, reconnect backoff, heartbeats.

import { captureLogs } from "../harness/logs.ts";
import assert from "node:assert/strict";
import * as ed from "@noble/ed25519";
import { Backoff } from "../../src/link/backoff.ts";
import type { ConnScript } from "../harness/coordinator.ts";
import { withStack } from "../harness/stack.ts";

const MODEL = "meta-llama/Llama-3.3-70B-Instruct";

Deno.test("auth_response carries a signature over the nonce that an independent Ed25519 verifies", async () => {
  await withStack({}, async (stack) => {
    const s = await stack.coord.authenticated(0);
    assert.equal(s.signatureValid, true);
    const r = s.authResponse!;
    assert.equal(r.pubkey, stack.agent.identity.publicKeyB64);
    assert.equal(typeof r.agent_version, "string");
    // Check once more here, against the raw nonce bytes (not its base64 text).
    const sig = Uint8Array.fromBase64(r.signature as string);
    assert.equal(sig.length, 64);
    assert.ok(await ed.verifyAsync(sig, s.nonce, Uint8Array.fromBase64(r.pubkey as string)));
    assert.ok(
      !(await ed.verifyAsync(
        sig,
        new TextEncoder().encode(s.nonce.toBase64()),
        Uint8Array.fromBase64(r.pubkey as string),
      )),
    );
  });
});

Deno.test("the enrollment code is sent only while the identity has no provider_id, which is then persisted 0600", async () => {
  await withStack({ enrollmentCode: "POD-ENROLL-TEST1234" }, async (stack) => {
    const first = await stack.coord.authenticated(0);
    assert.equal(first.authResponse!.enrollment_code, "POD-ENROLL-TEST1234");
    await first.waitFor((f) => f.type === "capabilities");
    const text = await Deno.readTextFile(stack.keyPath);
    const expected = `prov-${stack.agent.identity.publicKeyB64.slice(0, 8)}`;
    assert.match(text, new RegExp(`^provider_id: ${expected.replace(/[+/]/g, "\\$&")}$`, "m"));
    assert.equal(stack.agent.identity.providerId, expected);
    if (Deno.build.os !== "windows") {
      assert.equal((await Deno.stat(stack.keyPath)).mode! & 0o777, 0o600);
    }
    first.close(1001, "drain:deploy");
    const second = await stack.coord.authenticated(1);
    assert.equal(second.authResponse!.enrollment_code, undefined);
    assert.equal(second.signatureValid, true);
  });
});

Deno.test("a drain close (1001 drain:deploy) reconnects after about 1 s, the backoff at its base", async () => {
  await captureLogs(async (lines) => {
    await withStack({ logLevel: "info" }, async (stack) => {
      const first = await stack.coord.authenticated(0);
      await first.waitFor((f) => f.type === "capabilities");
      const closedAt = performance.now();
      first.close(1001, "drain:deploy");
      const second = await stack.coord.session(1);
      const gap = second.connectedAt - closedAt;
      assert.ok(gap >= 950 && gap < 1500, `reconnected after ${gap} ms`);
      await stack.coord.authenticated(1);
      assert.ok(
        lines.some((l) =>
          l.includes("INFO") && l.includes("(planned)") && l.includes("drain:deploy")
        ),
      );
      assert.ok(!lines.some((l) => l.includes("WARN") && l.includes("connection lost")));
    });
  });
});

Deno.test("auth_failed escalates the reconnect delay: gaps of 1, 2 and 4 times the base", async () => {
  const script = (n: number): ConnScript => (n < 3 ? "auth_failed" : "normal");
  await withStack({
    coordinator: { script },
    session: { backoff: new Backoff({ baseMs: 100, random: () => 0.5 }) },
  }, async (stack) => {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    const at = stack.coord.sessions.map((x) => x.connectedAt);
    const gaps = [at[1]! - at[0]!, at[2]! - at[1]!, at[3]! - at[2]!];
    for (const [i, base] of [100, 200, 400].entries()) {
      assert.ok(
        gaps[i]! >= base - 5 && gaps[i]! < base + 90,
        `gap ${i}: ${gaps[i]} ms, want ≈ ${base}`,
      );
    }
    assert.equal(stack.agent.session.status.consecutiveFailures, 0, "reset after auth");
  });
});

Deno.test("every pre-auth failure escalates the backoff: close before challenge, wrong frame, bad nonce, silence", async () => {
  const kinds: ConnScript[] = [
    "close_before_challenge",
    "wrong_first_frame",
    "bad_nonce",
    "silent",
  ];
  await captureLogs(async (lines) => {
    await withStack({
      coordinator: { script: (n) => kinds[n] ?? "normal" },
      session: { backoff: new Backoff({ baseMs: 10, random: () => 0.5 }), handshakeTimeoutMs: 150 },
      logLevel: "info",
    }, async (stack) => {
      const s = await stack.coord.authenticated(0);
      assert.equal(s.index, 4);
      const at = stack.coord.sessions.map((x) => x.connectedAt);
      // Delays 10, 20, 40, 80 ms (plus the 150 ms handshake timeout on the silent one).
      assert.ok(at[3]! - at[2]! >= 40 - 5, `third gap ${at[3]! - at[2]!}`);
      assert.ok(at[4]! - at[3]! >= 150 + 80 - 5, `fourth gap ${at[4]! - at[3]!}`);
      const warns = lines.filter((l) => l.includes("authentication failed"));
      assert.equal(warns.length, 4);
      assert.ok(warns.some((l) => l.includes("expected auth_challenge")));
      assert.ok(warns.some((l) => l.includes("base64")));
      assert.ok(warns.some((l) => l.includes("no auth_challenge within 150 ms")));
    });
  });
});

Deno.test("after 10 consecutive pre-auth failures one error line says the coordinator is unreachable", async () => {
  await captureLogs(async (lines) => {
    await withStack({
      coordinator: { script: (n) => (n < 13 ? "auth_failed" : "normal") },
      session: { backoff: new Backoff({ baseMs: 1, capMs: 4, random: () => 0.5 }) },
      logLevel: "info",
    }, async (stack) => {
      await stack.coord.authenticated(0);
      const errors = lines.filter((l) =>
        l.includes("ERROR") && l.includes("coordinator unreachable")
      );
      assert.equal(errors.length, 1);
    });
  });
});

Deno.test("an unexpected close after auth logs a warning, resets the backoff and reconnects", async () => {
  await captureLogs(async (lines) => {
    await withStack({
      session: { backoff: new Backoff({ baseMs: 50, random: () => 0.5 }) },
      logLevel: "info",
    }, async (stack) => {
      const first = await stack.coord.authenticated(0);
      await first.waitFor((f) => f.type === "capabilities");
      const closedAt = performance.now();
      first.close(1011, "internal error");
      const second = await stack.coord.authenticated(1);
      assert.ok(second.connectedAt - closedAt < 50 + 150);
      await second.waitFor((f) => f.type === "capabilities");
      assert.ok(
        lines.some((l) =>
          l.includes("WARN") && l.includes("connection lost") && l.includes("1011")
        ),
      );
      assert.equal(stack.agent.session.status.reconnects, 1);
    });
  });
});

Deno.test("jobs in flight are aborted when the connection drops; the new session serves jobs", async () => {
  await withStack({
    backends: [{ kind: "vllm", defaultScript: { hang: "after-headers" } }],
    session: { backoff: new Backoff({ baseMs: 20, random: () => 0.5 }) },
  }, async (stack) => {
    const fake = stack.fakes[0]!;
    const first = await stack.coord.authenticated(0);
    await first.waitFor((f) => f.type === "capabilities");
    const a = first.sendJob({ model_id: MODEL });
    const b = first.sendJob({ model_id: MODEL });
    await fake.waitForRequests(2);
    first.close(1011, "gone");
    assert.equal(await fake.waitForClose(1), "client-closed");
    assert.equal(await fake.waitForClose(2), "client-closed");
    await first.closed;
    assert.equal(first.framesFor(a).filter((f) => f.type !== "job_chunk").length, 0);
    assert.equal(first.framesFor(b).filter((f) => f.type !== "job_chunk").length, 0);
    const second = await stack.coord.authenticated(1);
    await second.waitFor((f) => f.type === "capabilities");
    fake.setDefaultScript({ deltas: 3 });
    const r = await second.collect(second.sendJob({ model_id: MODEL }));
    assert.equal(r.terminal.type, "job_done");
    assert.equal(stack.agent.executor.inFlight, 0);
  });
});

Deno.test("heartbeats carry real values: queue depth, latency, tokens/s, error rate, last error", async () => {
  await withStack({
    backends: [{
      kind: "vllm",
      models: ["ok", "e500", "hang"],
      scripts: {
        ok: { deltas: 20, delayMs: 2 },
        e500: { status: 500 },
        hang: { hang: "after-headers" },
      },
    }],
    session: { heartbeatMs: 50 },
  }, async (stack) => {
    const s = await stack.coord.authenticated(0);
    await s.waitFor((f) => f.type === "capabilities");
    const early = await s.nth("heartbeat", 1);
    assert.equal(early.queue_depth, 0);
    assert.equal(early.error_rate_60s, 0);
    assert.equal(early.last_error_at, null);
    assert.equal(early.last_error_code, null);
    for (let i = 0; i < 3; i++) await s.collect(s.sendJob({ model_id: "ok" }));
    await s.collect(s.sendJob({ model_id: "e500" }));
    const hung = s.sendJob({ model_id: "hang" });
    await stack.fakes[0]!.waitForRequests(5);
    const count = s.frames.filter((f) => f.type === "heartbeat").length;
    const hb = await s.nth("heartbeat", count + 1);
    assert.equal(hb.queue_depth, 1);
    assert.equal(hb.error_rate_60s, 0.25);
    assert.equal(hb.last_error_code, "internal");
    assert.ok(Date.now() - Date.parse(hb.last_error_at as string) < 60_000);
    assert.ok(
      (hb.p50_latency_ms as number) >= 0 &&
        (hb.p95_latency_ms as number) >= (hb.p50_latency_ms as number),
    );
    assert.ok((hb.tokens_per_sec_p50 as number) > 0, `tokens/s ${hb.tokens_per_sec_p50}`);
    s.cancel(hung);
    await stack.fakes[0]!.waitForClose(5);
  });
});

Deno.test("the first heartbeat comes one interval after auth, not before", async () => {
  await withStack({ session: { heartbeatMs: 300 } }, async (stack) => {
    const s = await stack.coord.authenticated(0);
    const hb = await s.nth("heartbeat", 1);
    const at = performance.now();
    assert.ok(at - s.connectedAt >= 290, `first heartbeat after ${at - s.connectedAt} ms`);
    assert.equal(hb.type, "heartbeat");
  });
});
