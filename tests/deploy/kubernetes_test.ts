// deploy/kubernetes (issue 16): `kubectl kustomize` renders the base offline, and every rendered
// object validates against the Kubernetes schemas (npm kubernetes-models: types, enums, required
// fields) and has no field those schemas lack (read from the models' type declarations, since
// the validators accept unknown keys). Then the Pod as the agent sees it: the merged config is
// valid, the probes match the image, the grace period outlasts the drain.
// Skipped with one line without kubectl; failing instead when CI is set.

import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { CONFIG_VAR, ENV_VARS, loadMergedConfig } from "../../src/config/env.ts";
import { checkStatusBind } from "../../src/status/server.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const BASE = `${ROOT}deploy/kubernetes`;
type Obj = Record<string, unknown>;

const MODELS: Record<string, { new (data: never): { validate(): void }; file: string }> = {
  "apps/v1 Deployment": Object.assign(Deployment, { file: "kubernetes-models/apps/v1/Deployment" }),
  "v1 ConfigMap": Object.assign(ConfigMap, { file: "kubernetes-models/v1/ConfigMap" }),
  "v1 PersistentVolumeClaim": Object.assign(PersistentVolumeClaim, {
    file: "kubernetes-models/v1/PersistentVolumeClaim",
  }),
};

async function kubectlInstalled(): Promise<boolean> {
  try {
    const args = ["version", "--client"];
    return (await new Deno.Command("kubectl", { args, stdout: "null", stderr: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

/** Where deno keeps an npm package: `<DENO_DIR>/npm/registry.npmjs.org/<name>/<version>`. */
async function npmDir(name: string, version: string): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stdout: "piped" })
    .output();
  const denoDir = JSON.parse(new TextDecoder().decode(out.stdout)).denoDir as string;
  return `${denoDir}/npm/registry.npmjs.org/${name}/${version}`;
}

const PACKAGES = {
  "kubernetes-models": await npmDir("kubernetes-models", "5.1.0"),
  "@kubernetes-models/apimachinery": await npmDir("@kubernetes-models/apimachinery", "3.0.2"),
};

/** A property's type: another interface's file, a list of them, or a leaf (scalar, map). */
type FieldType = { file?: string; list?: boolean };
const declarations = new Map<string, Map<string, FieldType> | null>();

/** The properties of the interface declared in a kubernetes-models `.d.ts` (null: a type alias). */
function fieldsOf(file: string): Map<string, FieldType> | null {
  const known = declarations.get(file);
  if (known !== undefined) return known;
  const text = Deno.readTextFileSync(file);
  const imports = new Map<string, string>();
  for (const m of text.matchAll(/^import \{ (\w+) \} from "([^"]+)";$/gm)) {
    const [, name = "", from = ""] = m;
    const pkg = Object.entries(PACKAGES).find(([p]) => from.startsWith(`${p}/`));
    const path = pkg
      ? `${pkg[1]}${from.slice(pkg[0].length)}.d.ts`
      : new URL(from.replace(/\.js$/, ".d.ts"), `file://${file}`).pathname;
    imports.set(name, path);
  }
  const body = /^export interface I\w+(?: extends TypeMeta)? \{\n([\s\S]*?)^\}$/m.exec(text)?.[1];
  if (body === undefined) {
    declarations.set(file, null);
    return null;
  }
  const fields = new Map<string, FieldType>();
  let depth = 0;
  for (const line of body.split("\n")) {
    const prop = depth === 0 ? /^ {4}"([^"]+)"\??: (.*)$/.exec(line) : null;
    if (prop) {
      const type = prop[2] ?? "";
      const list = /^Array<(\w+)>;$/.exec(type)?.[1];
      const ref = list ?? /^(\w+);$/.exec(type)?.[1];
      const target = ref === undefined ? undefined : imports.get(ref);
      fields.set(prop[1]!, target ? { file: target, list: list !== undefined } : {});
    }
    depth += (line.match(/\{/g)?.length ?? 0) - (line.match(/\}/g)?.length ?? 0);
  }
  declarations.set(file, fields);
  return fields;
}

/** Every key of `value` that the schema of `file` does not have, as a path. */
function unknownFields(value: unknown, file: string, at: string): string[] {
  const fields = fieldsOf(file);
  if (fields === null || typeof value !== "object" || value === null) return [];
  const out: string[] = [];
  for (const [k, v] of Object.entries(value as Obj)) {
    const t = fields.get(k);
    if (t === undefined) {
      out.push(`${at}.${k}`);
      continue;
    }
    if (!t.file) continue;
    if (t.list && Array.isArray(v)) {
      v.forEach((item, i) => out.push(...unknownFields(item, t.file!, `${at}.${k}[${i}]`)));
    } else if (!t.list) out.push(...unknownFields(v, t.file, `${at}.${k}`));
  }
  return out;
}

function modelOf(o: Obj): (typeof MODELS)[string] {
  const model = MODELS[`${o.apiVersion} ${o.kind}`];
  assert.ok(model, `no schema in this test for ${o.apiVersion} ${o.kind}`);
  return model;
}

function schemaFile(o: Obj): string {
  const file = modelOf(o).file;
  return `${PACKAGES["kubernetes-models"]}${file.slice("kubernetes-models".length)}.d.ts`;
}

async function render(dir: string): Promise<Obj[]> {
  const out = await new Deno.Command("kubectl", {
    args: ["kustomize", dir],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, `kubectl kustomize ${dir}: ${new TextDecoder().decode(out.stderr)}`);
  return parseAllDocuments(new TextDecoder().decode(out.stdout)).map((d) => d.toJS() as Obj);
}

function skip(): boolean {
  if (Deno.env.get("CI")) throw new Error("kubectl is missing in CI (.ci/run must install it)");
  console.log("skipped: kubectl not installed (kubectl kustomize renders deploy/kubernetes)");
  return true;
}

const HAVE_KUBECTL = await kubectlInstalled();

Deno.test("the kustomize base renders offline and every object matches the Kubernetes schemas", async () => {
  if (!HAVE_KUBECTL && skip()) return;
  const objects = await render(BASE);
  assert.deepEqual(objects.map((o) => o.kind).sort(), [
    "ConfigMap",
    "Deployment",
    "PersistentVolumeClaim",
  ]);
  for (const o of objects) {
    const Model = modelOf(o);
    assert.doesNotThrow(() => new Model(o as never).validate(), `${o.kind} validates`);
    assert.deepEqual(unknownFields(o, schemaFile(o), o.kind as string), [], `${o.kind}`);
  }
});

Deno.test("the schema check catches a misspelt field and a wrong type", async () => {
  if (!HAVE_KUBECTL && skip()) return;
  const deployment = (await render(BASE)).find((o) => o.kind === "Deployment")!;
  const bad = structuredClone(deployment) as {
    spec: { template: { spec: { containers: Obj[] } } };
  };
  const agent = bad.spec.template.spec.containers[0]!;
  agent.readinesProbe = agent.readinessProbe;
  assert.deepEqual(unknownFields(bad, schemaFile(deployment), "Deployment"), [
    "Deployment.spec.template.spec.containers[0].readinesProbe",
  ]);
  agent.ports = [{ containerPort: "9090" }];
  assert.throws(() => new Deployment(bad as never).validate(), /containerPort/);
});

Deno.test("the Pod configures a valid agent: env over agent.toml, token for the bind, probes, drain", async () => {
  if (!HAVE_KUBECTL && skip()) return;
  const objects = await render(BASE);
  const config = objects.find((o) => o.kind === "ConfigMap") as Obj & {
    metadata: { name: string };
    data: Record<string, string>;
  };
  // deno-lint-ignore no-explicit-any
  const pod = (objects.find((o) => o.kind === "Deployment") as any).spec.template;
  const agent = pod.spec.containers.find((c: Obj) => c.name === "agent");
  const engine = pod.spec.initContainers.find((c: Obj) => c.name === "llama");
  const env = Object.fromEntries(
    (agent.env as { name: string; value?: string; valueFrom?: unknown }[]).map((e) => [
      e.name,
      e.value ?? (e.valueFrom ? "from-a-secret" : ""),
    ]),
  );
  const known = new Set([CONFIG_VAR, ...ENV_VARS.map((v) => v.name)]);
  for (const name of Object.keys(env)) {
    assert.ok(known.has(name), `${name} is not read by the agent`);
  }

  // The merged config: agent.toml from the ConfigMap at USEPOD_CONFIG, the env on top.
  const mounts = agent.volumeMounts as { name: string; mountPath: string; readOnly?: boolean }[];
  const volumes = pod.spec.volumes as Obj[];
  const volume = (m: { name: string }) => volumes.find((v) => v.name === m.name) as Obj;
  const configMount = mounts.find((m) => volume(m).configMap)!;
  assert.equal(
    (volume(configMount).configMap as { name: string }).name,
    config.metadata.name,
    "the volume names the generated ConfigMap",
  );
  assert.equal(env.USEPOD_CONFIG, `${configMount.mountPath}/agent.toml`);
  const dir = await Deno.makeTempDir({ prefix: "usepod-k8s-" });
  try {
    await Deno.writeTextFile(`${dir}/agent.toml`, config.data["agent.toml"]!);
    const merged = (await loadMergedConfig({
      env: { ...env, USEPOD_CONFIG: `${dir}/agent.toml` },
      home: dir,
    })).config;
    assert.doesNotThrow(() => checkStatusBind(merged.observability));
    assert.equal(merged.observability.prometheusAddr, "0.0.0.0:9090");
    assert.ok(pod.spec.terminationGracePeriodSeconds > merged.limits.drainTimeoutS);
    // The backend is the sidecar, on the port it listens on.
    const port = engine.args[engine.args.indexOf("--port") + 1];
    assert.deepEqual(merged.backends.map((b) => b.url), [`http://127.0.0.1:${port}`]);
    assert.equal(engine.restartPolicy, "Always", "a native sidecar: starts first, stops last");

    // Identity from the Secret, read-only; state on a writable volume.
    const secretMount = mounts.find((m) => volume(m).secret)!;
    assert.equal(secretMount.readOnly, true);
    assert.ok(merged.identity.keyPath.startsWith(`${secretMount.mountPath}/`));
    const stateMount = mounts.find((m) => m.mountPath === merged.identity.stateDir);
    assert.ok(stateMount && !stateMount.readOnly, "the state directory is a writable volume");
    assert.equal(agent.securityContext.readOnlyRootFilesystem, true);
    assert.equal(pod.spec.securityContext.runAsNonRoot, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  // Probes: readiness is the image's health check; liveness the status port; scrape annotations.
  const containerfile = await Deno.readTextFile(`${ROOT}deploy/container/Containerfile`);
  const healthcheck = /^HEALTHCHECK [^\n]*\\\n\s+CMD (\[[\s\S]*?\])$/m.exec(containerfile)?.[1];
  assert.ok(healthcheck, "the Containerfile has an exec-form HEALTHCHECK");
  assert.deepEqual(agent.readinessProbe.exec.command, JSON.parse(healthcheck.replace(/\\\n/g, "")));
  const status = (agent.ports as { name: string; containerPort: number }[])
    .find((p) => p.name === agent.livenessProbe.tcpSocket.port)!;
  assert.equal(status.containerPort, 9090);
  assert.deepEqual(pod.metadata.annotations, {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": String(status.containerPort),
    "prometheus.io/path": "/metrics",
  });
});
