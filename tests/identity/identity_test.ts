// Tests for src/identity/identity.ts and file.ts: the PROTOCOL §7 identity file (format shared
// with the Rust agent), creation mode, seed/public consistency, RFC 8032 signatures and atomic
// provider_id rewrites.

import assert from "node:assert/strict";
import * as ed from "@noble/ed25519";
import { loadIdentity, loadOrCreateIdentity, saveProviderId } from "../../src/identity/identity.ts";
import { IdentityError, parseIdentityText } from "../../src/identity/file.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url);
const WINDOWS = Deno.build.os === "windows";
const BEGIN = "-----BEGIN USEPOD AGENT KEY-----";
const END = "-----END USEPOD AGENT KEY-----";

// RFC 8032 §7.1, tests 1, 2 and 3.
const RFC1 = {
  seed: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
  pub: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
  msg: "",
  sig:
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
};
const RFC2 = {
  seed: "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
  pub: "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
  msg: "72",
  sig:
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
};
const RFC3 = {
  seed: "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
  pub: "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
  msg: "af82",
  sig:
    "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
};

const b64 = (hex: string) => Uint8Array.fromHex(hex).toBase64();

/** A §7 file body; `lines` overrides or removes (undefined) individual keys. */
function keyFile(
  seedHex: string,
  pubHex: string,
  lines: Record<string, string | undefined> = {},
): string {
  const fields: Record<string, string | undefined> = {
    version: "1",
    created: "2026-01-02T03:04:05.678901Z",
    secret: b64(seedHex),
    public: b64(pubHex),
    ...lines,
  };
  const body = Object.entries(fields).flatMap(([k, v]) => v === undefined ? [] : [`${k}: ${v}`]);
  return [BEGIN, ...body, END, ""].join("\n");
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "identity_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.chmod(dir, 0o700).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

async function writeKey(path: string, text: string, mode = 0o600): Promise<void> {
  await Deno.writeTextFile(path, text, { mode });
  if (!WINDOWS) await Deno.chmod(path, mode);
}

/** Asserts an IdentityError that names the file and matches `pattern`, without the seed. */
async function assertRefused(
  path: string,
  pattern: RegExp,
  seedHex: string = RFC1.seed,
): Promise<void> {
  const err = await loadIdentity(path).then(
    () => assert.fail("expected an IdentityError"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof IdentityError, `expected IdentityError, got ${err}`);
  assert.match(err.message, pattern);
  assert.ok(err.message.includes(path), `message should name the file: ${err.message}`);
  assert.ok(!err.message.includes(b64(seedHex)), "message must not contain the seed");
  assert.ok(!err.message.toLowerCase().includes(seedHex), "message must not contain the seed");
}

Deno.test("a first run creates the identity file with mode 0600 and its parent directories", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/nested/deeper/identity.key`;
    const first = await loadOrCreateIdentity(path);
    assert.equal(first.created, true);
    assert.deepEqual(first.warnings, []);
    assert.equal(first.identity.path, path);
    assert.equal(first.identity.providerId, undefined);
    assert.equal(first.identity.publicKey.length, 32);
    assert.equal(first.identity.publicKeyB64, first.identity.publicKey.toBase64());
    assert.match(first.identity.created, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);

    const text = await Deno.readTextFile(path);
    const created = first.identity.created;
    const re = new RegExp(
      `^${BEGIN}\nversion: 1\ncreated: ${created}\nsecret: [A-Za-z0-9+/]{43}=\n` +
        `public: ${first.identity.publicKeyB64.replaceAll("+", "\\+")}\n${END}\n$`,
    );
    assert.match(text, re);
    if (!WINDOWS) {
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
      assert.equal((await Deno.stat(`${dir}/nested/deeper`)).mode! & 0o777, 0o700);
    }
    assert.deepEqual([...Deno.readDirSync(`${dir}/nested/deeper`)].map((e) => e.name), [
      "identity.key",
    ]);

    const second = await loadOrCreateIdentity(path);
    assert.equal(second.created, false);
    assert.deepEqual(second.identity.publicKey, first.identity.publicKey);
    assert.equal(second.identity.created, created);
  });
});

Deno.test("concurrent first runs create exactly one key and all share it", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/identity.key`;
    const results = await Promise.all(
      Array.from({ length: 8 }, () => loadOrCreateIdentity(path)),
    );
    assert.equal(results.filter((r) => r.created).length, 1);
    const keys = new Set(results.map((r) => r.identity.publicKeyB64));
    assert.equal(keys.size, 1);
    assert.equal((await loadIdentity(path)).identity.publicKeyB64, [...keys][0]);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["identity.key"]);
  });
});

Deno.test("signatures verify with @noble/ed25519 for random messages", async () => {
  await withTempDir(async (dir) => {
    const { identity } = await loadOrCreateIdentity(`${dir}/identity.key`);
    for (let i = 0; i < 25; i++) {
      const msg = crypto.getRandomValues(new Uint8Array(Math.floor(Math.random() * 300)));
      const sig = await identity.sign(msg);
      assert.equal(sig.length, 64);
      assert.ok(await ed.verifyAsync(sig, msg, identity.publicKey), `message ${i} verifies`);
      const tampered = msg.length > 0 ? msg.with(0, msg[0]! ^ 1) : new Uint8Array([1]);
      assert.equal(await ed.verifyAsync(sig, tampered, identity.publicKey), false);
    }
  });
});

Deno.test("RFC 8032 test vectors 1 and 2 are reproduced from identity files", async () => {
  await withTempDir(async (dir) => {
    for (const [i, v] of [RFC1, RFC2].entries()) {
      const path = `${dir}/vector${i + 1}.key`;
      await writeKey(path, keyFile(v.seed, v.pub));
      const { identity, warnings } = await loadIdentity(path);
      assert.deepEqual(warnings, []);
      assert.equal(identity.publicKey.toHex(), v.pub);
      assert.equal(identity.publicKeyB64, b64(v.pub));
      const sig = await identity.sign(Uint8Array.fromHex(v.msg));
      assert.equal(sig.toHex(), v.sig);
    }
  });
});

Deno.test("a file in the Rust agent's format loads, signs, and keeps its unknown key after saveProviderId", async () => {
  await withTempDir(async (dir) => {
    const original = await Deno.readTextFile(new URL("rust_identity.key", FIXTURES));
    const path = `${dir}/identity.key`;
    await writeKey(path, original);

    const { identity, warnings } = await loadIdentity(path);
    assert.deepEqual(warnings, []);
    assert.equal(identity.providerId, "prov_01JRUSTAGENT");
    assert.equal(identity.created, "2025-11-20T08:15:42.123456Z");
    assert.equal(identity.publicKey.toHex(), RFC3.pub);
    assert.equal((await identity.sign(Uint8Array.fromHex(RFC3.msg))).toHex(), RFC3.sig);

    const updated = await saveProviderId(identity, "prov_02DENO");
    assert.equal(updated.providerId, "prov_02DENO");
    assert.equal((await updated.sign(Uint8Array.fromHex(RFC3.msg))).toHex(), RFC3.sig);
    const rewritten = await Deno.readTextFile(path);
    assert.equal(
      rewritten,
      original.replace("provider_id: prov_01JRUSTAGENT", "provider_id: prov_02DENO"),
    );
    assert.ok(rewritten.includes("rust_build: 0.3.7 (x86_64-unknown-linux-gnu)\n"));
    assert.deepEqual(parseIdentityText(rewritten).unknownKeys, ["rust_build"]);
    assert.equal((await loadIdentity(path)).identity.providerId, "prov_02DENO");
  });
});

Deno.test("provider_id is persisted, reloaded, and the file stays 0600", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/identity.key`;
    const { identity } = await loadOrCreateIdentity(path);
    const saved = await saveProviderId(identity, "prov_123");
    assert.equal(saved.providerId, "prov_123");
    assert.equal(saved.publicKeyB64, identity.publicKeyB64);
    assert.equal(identity.providerId, undefined, "the original identity is not mutated");

    const reloaded = await loadIdentity(path);
    assert.equal(reloaded.identity.providerId, "prov_123");
    assert.deepEqual(reloaded.identity.publicKey, identity.publicKey);

    await saveProviderId(saved, "prov_456");
    const text = await Deno.readTextFile(path);
    assert.equal(text.match(/^provider_id: /gm)?.length, 1);
    assert.match(text, /^provider_id: prov_456\n-----END USEPOD AGENT KEY-----\n$/m);
    if (!WINDOWS) assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["identity.key"]);
  });
});

Deno.test("concurrent saveProviderId calls leave a complete, valid file", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/identity.key`;
    await writeKey(path, await Deno.readTextFile(new URL("rust_identity.key", FIXTURES)));
    const { identity } = await loadIdentity(path);
    const ids = Array.from({ length: 20 }, (_, i) => `prov_concurrent_${i}`);
    const results = await Promise.all(ids.map((id) => saveProviderId(identity, id)));
    assert.deepEqual(results.map((r) => r.providerId), ids);

    const { identity: after } = await loadIdentity(path);
    assert.equal(after.providerId, "prov_concurrent_19", "the last call wins");
    assert.equal(after.publicKey.toHex(), RFC3.pub);
    const text = await Deno.readTextFile(path);
    assert.equal(text.match(/^provider_id: /gm)?.length, 1);
    assert.ok(text.includes("rust_build: 0.3.7"));
    if (!WINDOWS) assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["identity.key"]);
  });
});

Deno.test("a provider_id that is not a single-line value is refused", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/identity.key`;
    const { identity } = await loadOrCreateIdentity(path);
    for (const bad of ["", " padded", "two\nlines", "nul\0"]) {
      await assert.rejects(saveProviderId(identity, bad), IdentityError);
    }
    assert.equal((await loadIdentity(path)).identity.providerId, undefined);
  });
});

Deno.test("saveProviderId refuses to write when the file now holds a different key", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/identity.key`;
    const { identity } = await loadOrCreateIdentity(path);
    await Deno.remove(path);
    await writeKey(path, keyFile(RFC1.seed, RFC1.pub));
    await assert.rejects(saveProviderId(identity, "prov_x"), /different key/);
    assert.equal(await Deno.readTextFile(path), keyFile(RFC1.seed, RFC1.pub));
  });
});

Deno.test("a public key that does not match the secret is refused", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/identity.key`;
    await writeKey(path, keyFile(RFC1.seed, RFC2.pub));
    await assertRefused(path, /public does not match the key derived from secret/);
  });
});

Deno.test("a version other than 1 is refused", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/identity.key`;
    await writeKey(path, keyFile(RFC1.seed, RFC1.pub, { version: "2" }));
    await assertRefused(path, /version "2" is not supported/);
    await writeKey(path, keyFile(RFC1.seed, RFC1.pub, { version: undefined }));
    await assertRefused(path, /version is missing/);
  });
});

Deno.test("a file without secret, public or created is refused", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/identity.key`;
    for (const key of ["secret", "public", "created"]) {
      await writeKey(path, keyFile(RFC1.seed, RFC1.pub, { [key]: undefined }));
      await assertRefused(path, new RegExp(`${key} is missing`));
    }
  });
});

Deno.test("a truncated file is refused", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/identity.key`;
    const full = keyFile(RFC1.seed, RFC1.pub);
    await writeKey(path, full.slice(0, full.indexOf("secret:") + 20));
    await assertRefused(
      path,
      /missing the -----END USEPOD AGENT KEY----- line \(file truncated\?\)/,
    );
    await writeKey(path, "");
    await assertRefused(path, /the file is empty/);
  });
});

Deno.test("invalid base64 or a wrong key length is refused", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/identity.key`;
    const seed = b64(RFC1.seed);
    const cases: [Record<string, string>, RegExp][] = [
      [{ secret: seed.slice(0, -1) }, /secret is not valid base64/], // padding missing
      [{ secret: seed.replace("n", "*") }, /secret is not valid base64/],
      [{ secret: `${seed.slice(0, 10)} ${seed.slice(10)}` }, /secret is not valid base64/],
      [{ public: "!!not base64!!" }, /public is not valid base64/],
      [{ secret: new Uint8Array(31).toBase64() }, /secret must be 32 bytes, got 31/],
      [{ public: new Uint8Array(33).toBase64() }, /public must be 32 bytes, got 33/],
    ];
    for (const [override, pattern] of cases) {
      await writeKey(path, keyFile(RFC1.seed, RFC1.pub, override));
      await assertRefused(path, pattern);
    }
  });
});

Deno.test("an unreadable identity file is refused with a clear message", async () => {
  await withTempDir(async (dir) => {
    if (Deno.uid() === 0 || WINDOWS) {
      // root reads any file regardless of its mode: use a path that cannot be read as a file.
      const path = `${dir}/identity.key`;
      await Deno.mkdir(path);
      await assertRefused(path, /not a regular file/);
      await assert.rejects(loadOrCreateIdentity(path), /not a regular file/);
      return;
    }
    const path = `${dir}/identity.key`;
    await writeKey(path, keyFile(RFC1.seed, RFC1.pub), 0o000);
    await assertRefused(path, /permission denied while reading/);
  });
});

Deno.test("loadIdentity never creates a missing file", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/missing/identity.key`;
    await assert.rejects(loadIdentity(path), (e: unknown) => {
      assert.ok(e instanceof IdentityError);
      assert.match(e.message, /does not exist/);
      return true;
    });
    await assert.rejects(Deno.stat(`${dir}/missing`), Deno.errors.NotFound);
  });
});

Deno.test("a file readable by group or others loads with a warning", {
  ignore: WINDOWS,
}, async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/identity.key`;
    await writeKey(path, keyFile(RFC1.seed, RFC1.pub), 0o644);
    const { identity, warnings } = await loadIdentity(path);
    assert.equal(identity.publicKey.toHex(), RFC1.pub);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /accessible by group or others \(mode 0644\); run: chmod 600/);
    assert.ok(warnings[0]!.includes(path));
  });
});

Deno.test("parseIdentityText ignores unknown keys and reads provider_id", () => {
  const text = keyFile(RFC1.seed, RFC1.pub, { future_key: "x: y", provider_id: "prov_9" })
    .replaceAll("\n", "\r\n");
  const fields = parseIdentityText(`comment before the block\r\n${text}trailing text`);
  assert.equal(fields.version, 1);
  assert.equal(fields.providerId, "prov_9");
  assert.deepEqual(fields.unknownKeys, ["future_key"]);
  assert.equal(fields.secret.toHex(), RFC1.seed);
  assert.equal(fields.publicKey.toHex(), RFC1.pub);
});

Deno.test("parseIdentityText refuses duplicate keys and lines that are not key: value", () => {
  const dup = keyFile(RFC1.seed, RFC1.pub).replace(END, `secret: ${b64(RFC2.seed)}\n${END}`);
  assert.throws(() => parseIdentityText(dup), /duplicate key "secret" on line 6/);
  const junk = keyFile(RFC1.seed, RFC1.pub).replace(END, `garbage\n${END}`);
  assert.throws(() => parseIdentityText(junk), /line 6 is not "key: value"/);
  assert.throws(
    () => parseIdentityText(keyFile(RFC1.seed, RFC1.pub, { created: "yesterday" })),
    /created is not an RFC 3339 time/,
  );
});
