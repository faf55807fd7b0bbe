// Tests for src/identity/state_copy.ts (issue 16): a read-only identity file (a Kubernetes Secret)
// keeps its provider_id in the state directory, bound to its public key, and gets it back at load.
// "Read-only" is real: a read-only bind mount (`unshare -m`, as root, where chmod stops nothing)
// or chmod 0444/0555 (not root). Without either the read-only cases skip with one line.

import assert from "node:assert/strict";
import { loadIdentity, loadOrCreateIdentity } from "../../src/identity/identity.ts";
import { persistProviderId, stateCopyPath, withStateCopy } from "../../src/identity/state_copy.ts";

const STATE_COPY = new URL("../../src/identity/state_copy.ts", import.meta.url).href;
const IDENTITY = new URL("../../src/identity/identity.ts", import.meta.url).href;

async function inDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "usepod-statecopy-" });
  try {
    await fn(dir);
  } finally {
    await Deno.chmod(dir, 0o700).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

async function succeeds(cmd: string, args: string[]): Promise<boolean> {
  try {
    return (await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

/**
 * How this machine makes `dir` read-only for a child process: a read-only bind mount in a new
 * mount namespace as root, chmod when not root; undefined when neither works.
 */
async function readOnlyMode(): Promise<"unshare" | "chmod" | undefined> {
  if (Deno.uid() !== 0) return "chmod";
  const probe = await Deno.makeTempDir();
  try {
    const script = `mount --bind -o ro "${probe}" "${probe}" && ! touch "${probe}/x" 2>/dev/null`;
    return (await succeeds("unshare", ["-m", "sh", "-c", script])) ? "unshare" : undefined;
  } finally {
    await Deno.remove(probe, { recursive: true });
  }
}

const MODE = await readOnlyMode();
const SKIP_LINE = "skipped: no way to make a directory read-only here (root without unshare -m)";

/** Runs `deno eval code` with `dir` read-only for it; returns stdout (throws on failure). */
async function evalWithReadOnly(dir: string, code: string): Promise<string> {
  const deno = [Deno.execPath(), "eval", "--ext=ts", code];
  let cmd: string;
  let args: string[];
  if (MODE === "unshare") {
    cmd = "unshare";
    args = ["-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', dir, ...deno];
  } else {
    for await (const e of Deno.readDir(dir)) await Deno.chmod(`${dir}/${e.name}`, 0o444);
    await Deno.chmod(dir, 0o555);
    [cmd, ...args] = deno as [string, ...string[]];
  }
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (MODE === "chmod") await Deno.chmod(dir, 0o700);
  const text = new TextDecoder().decode(out.stdout);
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return text;
}

Deno.test("a read-only identity keeps provider_id in the state directory and gets it back", async () => {
  if (!MODE) return console.log(SKIP_LINE);
  await inDir(async (dir) => {
    await Deno.mkdir(`${dir}/secret`);
    const keyPath = `${dir}/secret/identity.key`;
    await loadOrCreateIdentity(keyPath);
    const before = await Deno.readTextFile(keyPath);
    const state = `${dir}/state`;
    const out = await evalWithReadOnly(
      `${dir}/secret`,
      `import { loadIdentity } from "${IDENTITY}";
       import { persistProviderId, withStateCopy } from "${STATE_COPY}";
       const { identity } = await loadIdentity(${JSON.stringify(keyPath)});
       const saved = await persistProviderId(identity, "prov_ro_1", ${JSON.stringify(state)});
       const again = await withStateCopy((await loadIdentity(${
        JSON.stringify(keyPath)
      })).identity, ${JSON.stringify(state)});
       console.log(JSON.stringify({ where: saved.where, id: saved.identity.providerId,
         reloaded: again.identity.providerId }));`,
    );
    const r = JSON.parse(out);
    assert.deepEqual(r, { where: stateCopyPath(state), id: "prov_ro_1", reloaded: "prov_ro_1" });
    assert.equal(await Deno.readTextFile(keyPath), before, "the identity file is untouched");
    const { identity } = await loadIdentity(keyPath);
    assert.equal(identity.providerId, undefined);
    const copy = JSON.parse(await Deno.readTextFile(stateCopyPath(state)));
    assert.deepEqual(copy, { public: identity.publicKeyB64, provider_id: "prov_ro_1" });
    assert.equal((await Deno.stat(stateCopyPath(state))).mode! & 0o777, 0o600);
    assert.doesNotMatch(JSON.stringify(copy), /secret/i);
  });
});

Deno.test("with both the identity and the state directory read-only, the error says what to set", async () => {
  if (!MODE) return console.log(SKIP_LINE);
  await inDir(async (dir) => {
    const keyPath = `${dir}/identity.key`;
    await loadOrCreateIdentity(keyPath);
    const out = await evalWithReadOnly(
      dir,
      `import { loadIdentity } from "${IDENTITY}";
       import { persistProviderId } from "${STATE_COPY}";
       const { identity } = await loadIdentity(${JSON.stringify(keyPath)});
       const why = await persistProviderId(identity, "prov_x", ${JSON.stringify(dir)})
         .then(() => "saved", (e) => e.name + ": " + e.message);
       console.log(why);`,
    );
    assert.match(out, /^IdentityError: cannot save provider_id: .*set USEPOD_STATE_DIR/);
    assert.equal((await loadIdentity(keyPath)).identity.providerId, undefined);
  });
});

Deno.test("a writable identity file still holds provider_id and a stale state copy is dropped", async () => {
  await inDir(async (dir) => {
    const keyPath = `${dir}/identity.key`;
    const { identity } = await loadOrCreateIdentity(keyPath);
    const state = `${dir}/state`;
    await Deno.mkdir(state);
    await Deno.writeTextFile(
      stateCopyPath(state),
      JSON.stringify({ public: identity.publicKeyB64, provider_id: "prov_old" }),
    );
    assert.equal((await withStateCopy(identity, state)).identity.providerId, "prov_old");
    const saved = await persistProviderId(identity, "prov_new", state);
    assert.equal(saved.where, keyPath);
    assert.equal((await loadIdentity(keyPath)).identity.providerId, "prov_new");
    await assert.rejects(Deno.stat(stateCopyPath(state)), Deno.errors.NotFound);
  });
});

Deno.test("a state copy of another key, or a damaged one, is ignored with a warning", async () => {
  await inDir(async (dir) => {
    const { identity } = await loadOrCreateIdentity(`${dir}/identity.key`);
    const other = (await loadOrCreateIdentity(`${dir}/other.key`)).identity;
    await Deno.writeTextFile(
      stateCopyPath(dir),
      JSON.stringify({ public: other.publicKeyB64, provider_id: "prov_other" }),
    );
    const r = await withStateCopy(identity, dir);
    assert.equal(r.identity.providerId, undefined);
    assert.match(r.warning ?? "", /belongs to another public key/);
    await Deno.writeTextFile(stateCopyPath(dir), "{not json");
    assert.match((await withStateCopy(identity, dir)).warning ?? "", /is not JSON/);
    await Deno.remove(stateCopyPath(dir));
    const none = await withStateCopy(identity, dir);
    assert.equal(none.identity, identity);
    assert.equal(none.warning, undefined);
  });
});

Deno.test("the identity with a state copy still signs with its own key", async () => {
  await inDir(async (dir) => {
    const { identity } = await loadOrCreateIdentity(`${dir}/identity.key`);
    await Deno.writeTextFile(
      stateCopyPath(dir),
      JSON.stringify({ public: identity.publicKeyB64, provider_id: "prov_9" }),
    );
    const { identity: restored } = await withStateCopy(identity, dir);
    const data = new TextEncoder().encode("nonce");
    const sig = await restored.sign(data);
    const key = await crypto.subtle.importKey("raw", identity.publicKey.slice(), "Ed25519", false, [
      "verify",
    ]);
    assert.ok(await crypto.subtle.verify("Ed25519", key, sig.slice(), data));
    assert.equal(restored.publicKeyB64, identity.publicKeyB64);
  });
});
