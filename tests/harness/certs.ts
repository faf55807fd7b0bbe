// Throwaway TLS material for tests, made with the `openssl` command at test time into a temp dir:
// a self-signed CA, a server certificate it signs for localhost / 127.0.0.1 / ::1, and a second,
// unrelated CA. Nothing secret is committed and nothing expires in the repository.

/** PEM files of one generated set, and the directory holding them. */
export interface TestCerts {
  dir: string;
  /** The CA that signed the server certificate (what an operator puts in coordinator.ca_file). */
  caFile: string;
  ca: string;
  /** A CA that signed nothing here (a wrong ca_file). */
  otherCaFile: string;
  /** Server certificate (leaf) and its PKCS#8 key. */
  cert: string;
  key: string;
  remove(): Promise<void>;
}

/** True when an `openssl` command runs here. */
export async function haveOpenssl(): Promise<boolean> {
  try {
    const out = await new Deno.Command("openssl", {
      args: ["version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args,
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!out.success) {
    const why = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" | ");
    throw new Error(`openssl ${args[0]} failed: ${why}`);
  }
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

function caArgs(name: string, cn: string): string[] {
  return [
    "req",
    "-x509",
    ...EC,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.pem`,
    "-days",
    "30",
    "-subj",
    `/CN=${cn}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ];
}

/**
 * Generates a CA, a server certificate for localhost/127.0.0.1/::1 signed by it, and an
 * unrelated CA. Throws when openssl is missing (CI installs it: `.ci/run`).
 *
 * @example
 * ```ts
 * const certs = await makeTestCerts();
 * Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert: certs.cert, key: certs.key });
 * await certs.remove();
 * ```
 */
export async function makeTestCerts(): Promise<TestCerts> {
  const dir = await Deno.makeTempDir({ prefix: "usepod-certs-" });
  try {
    await openssl(dir, caArgs("ca", "usepod test CA"));
    await openssl(dir, caArgs("other_ca", "some other CA"));
    await openssl(dir, [
      "req",
      ...EC,
      "-keyout",
      "server.key",
      "-out",
      "server.csr",
      "-subj",
      "/CN=localhost",
    ]);
    await Deno.writeTextFile(
      `${dir}/server.ext`,
      "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n" +
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n" +
        "extendedKeyUsage=serverAuth\n",
    );
    const serial = `0x${crypto.getRandomValues(new Uint8Array(8)).toHex()}`;
    await openssl(dir, [
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-set_serial",
      serial,
      "-days",
      "30",
      "-extfile",
      "server.ext",
      "-out",
      "server.pem",
    ]);
  } catch (err) {
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
  const read = (f: string) => Deno.readTextFile(`${dir}/${f}`);
  return {
    dir,
    caFile: `${dir}/ca.pem`,
    ca: await read("ca.pem"),
    otherCaFile: `${dir}/other_ca.pem`,
    cert: await read("server.pem"),
    key: await read("server.key"),
    remove: () => Deno.remove(dir, { recursive: true }),
  };
}
