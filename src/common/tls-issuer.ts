import { randomBytes, webcrypto, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { dirname, join } from "node:path";
import type { LockstepConfig, NodeEntry } from "./config-schema.ts";
import { configNodes } from "./config-schema.ts";
import { LockstepError } from "./errors.ts";
import { readTlsFile } from "./tls-client.ts";
import {
  ADMIN_URI_PREFIX,
  autoTlsPaths,
  type CertificateHosts,
  type CertKeyPaths,
  certificateHosts,
  NODE_URI_PREFIX,
} from "./tls-config.ts";

// `tls: auto`: a network CA and the certificates it signs, under <data-dir>/tls (docs/security.md
// "TLS"). Certificates are made with @peculiar/x509 (no hand-written ASN.1) over node's WebCrypto;
// existing ones are read with node's own X509Certificate, so a start that issues nothing does not
// load the library.

/** ECDSA P-256 with SHA-256: small, fast to make, accepted by OpenSSL, grpc-js, curl and the JVM. */
const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY = 86_400_000;
const CA_VALIDITY_DAYS = 3650;
const LEAF_VALIDITY_DAYS = 825;
/** A certificate that expires sooner than this is issued again at the next start. */
const RENEW_BEFORE_DAYS = 30;

export interface IssuedCertificate {
  /** `ca`, `client` or the node's name. */
  name: string;
  cert: string;
  key: string;
  /** Whether this call wrote it (else it was there and still fits). */
  issued: boolean;
  /** Why it was (re-)issued: absent, expiring, another CA, missing names. */
  reason?: string;
  subjectAltNames: string[];
  notAfter: string;
  fingerprint256: string;
}

export interface EnsureTlsOptions {
  /** The nodes whose certificates to check (default: all of the config's). */
  nodes?: NodeEntry[];
  /** Issue node and client certificates again even when they fit (the CA stays). */
  renew?: boolean;
  /** Skip the CLI's certificate when it is absent and cannot be issued here (no CA key): a node's start. */
  clientIfPossible?: boolean;
  now?: Date;
}

interface Ca {
  cert: X509Certificate;
  pem: string;
  /** The CA's signing key, read only when a certificate is issued: other machines need not hold it. */
  key: () => Promise<webcrypto.CryptoKey | undefined>;
  keyPath: string;
}

/**
 * Makes sure the CA, the named nodes' certificates and the CLI's client certificate exist under the
 * data dir and fit the config (the hosts each node is reached at, not expiring, signed by the CA).
 * Safe to run from several processes at once: each certificate is written to a fresh directory and
 * renamed into place, and a CA another process made first is the one used.
 */
export async function ensureAutoTls(
  config: LockstepConfig,
  options: EnsureTlsOptions = {},
): Promise<IssuedCertificate[]> {
  const paths = autoTlsPaths(config["data-dir"]);
  const now = options.now ?? new Date();
  mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
  const results: IssuedCertificate[] = [];
  const ca = await ensureCa(paths.ca, now, results);
  const local = localAddresses();
  for (const entry of options.nodes ?? configNodes(config)) {
    const hosts = certificateHosts(entry, local);
    const sans = [
      ...hosts.dns.map((d) => `DNS:${d}`),
      ...hosts.ips.map((i) => `IP:${canonicalIp(i)}`),
      `URI:${NODE_URI_PREFIX}${entry.name}`,
    ];
    await ensureLeaf(
      entry.name,
      paths.node(entry.name),
      ca,
      { hosts, uri: `${NODE_URI_PREFIX}${entry.name}`, server: true, sans },
      now,
      options.renew ?? false,
      results,
    );
  }
  const clientUri = `${ADMIN_URI_PREFIX}cli`;
  // A node issues the CLI's certificate for a one-machine `up`, but does not need the CA key for it.
  if (options.clientIfPossible && !existsSync(paths.client.cert) && !existsSync(paths.ca.key)) return results;
  await ensureLeaf(
    "client",
    paths.client,
    ca,
    { hosts: { ips: [], dns: [] }, uri: clientUri, server: false, sans: [`URI:${clientUri}`] },
    now,
    options.renew ?? false,
    results,
  );
  return results;
}

async function ensureCa(paths: CertKeyPaths, now: Date, results: IssuedCertificate[]): Promise<Ca> {
  if (!existsSync(paths.cert)) {
    const x509 = await library();
    const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, [
      "sign",
      "verify",
    ])) as webcrypto.CryptoKeyPair;
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      name: `CN=Lockstep network CA ${randomBytes(4).toString("hex")}`,
      notBefore: new Date(now.getTime() - 60_000),
      notAfter: new Date(now.getTime() + CA_VALIDITY_DAYS * DAY),
      keys,
      signingAlgorithm: ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const issued = writePair(paths, cert.toString("pem"), await pkcs8Pem(keys.privateKey));
    if (issued) results.push(describe("ca", paths, true, "absent"));
  }
  const pem = readTlsFile("network CA certificate", paths.cert).toString("utf8");
  if (!results.some((r) => r.name === "ca")) results.push(describe("ca", paths, false));
  const key = async () => {
    if (!existsSync(paths.key)) return undefined;
    const keyPem = readTlsFile("network CA key", paths.key).toString("utf8");
    return webcrypto.subtle.importKey("pkcs8", pemBody(keyPem), ALGORITHM, false, ["sign"]);
  };
  return { cert: new X509Certificate(pem), pem, key, keyPath: paths.key };
}

interface LeafSpec {
  hosts: CertificateHosts;
  uri: string;
  /** A node's: server and client authentication (it dials the others too); the CLI's: client only. */
  server: boolean;
  /** As node:crypto writes them without its labels' spaces, for the comparison. */
  sans: string[];
}

async function ensureLeaf(
  name: string,
  paths: CertKeyPaths,
  ca: Ca,
  spec: LeafSpec,
  now: Date,
  renew: boolean,
  results: IssuedCertificate[],
): Promise<void> {
  const reason = renew ? "renewal asked" : leafProblem(paths, ca, spec, now);
  if (reason === undefined) {
    results.push(describe(name, paths, false));
    return;
  }
  const signingKey = await ca.key();
  if (!signingKey) {
    // A machine that was given the certificates without the CA key: keep what is there, say why.
    if (reason !== "absent" && reason !== "unreadable") {
      results.push({ ...describe(name, paths, false), reason: `${reason}; not re-issued: no CA key here` });
      return;
    }
    throw new LockstepError("TLS_FILES_INVALID", {
      what: `network CA key (needed to issue ${name}'s certificate)`,
      path: ca.keyPath,
      reason: "no such file",
    });
  }
  const x509 = await library();
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, [
    "sign",
    "verify",
  ])) as webcrypto.CryptoKeyPair;
  const caCert = new x509.X509Certificate(ca.pem);
  const names = [
    ...spec.hosts.dns.map((value) => ({ type: "dns" as const, value })),
    ...spec.hosts.ips.map((value) => ({ type: "ip" as const, value })),
    { type: "url" as const, value: spec.uri },
  ];
  const usages = spec.server
    ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]
    : [x509.ExtendedKeyUsage.clientAuth];
  const cert = await x509.X509CertificateGenerator.create({
    subject: `CN=${name === "client" ? "lockstep-admin" : name}`,
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + LEAF_VALIDITY_DAYS * DAY),
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(usages, false),
      new x509.SubjectAlternativeNameExtension(names, false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
    ],
  });
  replacePair(paths, cert.toString("pem"), await pkcs8Pem(keys.privateKey));
  results.push(describe(name, paths, true, reason));
}

/** Why an existing certificate no longer fits, or undefined when it does. */
function leafProblem(paths: CertKeyPaths, ca: Ca, spec: LeafSpec, now: Date): string | undefined {
  if (!existsSync(paths.cert) || !existsSync(paths.key)) return "absent";
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(readFileSync(paths.cert));
  } catch {
    return "unreadable";
  }
  if (!cert.checkIssued(ca.cert) || !cert.verify(ca.cert.publicKey)) return "issued by another CA";
  if (new Date(cert.validTo).getTime() - now.getTime() < RENEW_BEFORE_DAYS * DAY) return "expiring";
  const have = new Set(sanList(cert));
  const missing = spec.sans.filter((s) => !have.has(s));
  if (missing.length > 0) return `missing ${missing.join(", ")}`;
  return undefined;
}

/** SANs as `DNS:x`, `IP:1.2.3.4`, `URI:…` (node:crypto writes `IP Address:`; v6 in its own spelling). */
function sanList(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? "")
    .split(/, (?=[A-Za-z ]+:)/)
    .filter(Boolean)
    .map((s) => (s.startsWith("IP Address:") ? `IP:${canonicalIp(s.slice("IP Address:".length))}` : s));
}

function canonicalIp(ip: string): string {
  return ip.includes(":") ? new URL(`http://[${ip}]`).hostname.slice(1, -1) : ip;
}

function describe(name: string, paths: CertKeyPaths, issued: boolean, reason?: string): IssuedCertificate {
  const cert = new X509Certificate(readFileSync(paths.cert));
  return {
    name,
    cert: paths.cert,
    key: paths.key,
    issued,
    ...(reason === undefined ? {} : { reason }),
    subjectAltNames: sanList(cert),
    notAfter: new Date(cert.validTo).toISOString(),
    fingerprint256: cert.fingerprint256,
  };
}

/**
 * Writes a certificate and its key (0600) into a fresh directory (0700) renamed into place, so no
 * process reads one without the other. False when another process put one there first.
 */
function writePair(paths: CertKeyPaths, certPem: string, keyPem: string): boolean {
  const dir = dirname(paths.cert);
  const tmp = stage(dir, paths, certPem, keyPem);
  try {
    renameSync(tmp, dir);
    return true;
  } catch (error) {
    rmSync(tmp, { recursive: true, force: true });
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOTEMPTY" || code === "EEXIST") return false;
    throw error;
  }
}

/** As writePair, replacing what is there (a node's certificate that no longer fits). */
function replacePair(paths: CertKeyPaths, certPem: string, keyPem: string): void {
  const dir = dirname(paths.cert);
  const tmp = stage(dir, paths, certPem, keyPem);
  const old = `${dir}.old-${process.pid}-${randomBytes(4).toString("hex")}`;
  if (existsSync(dir)) renameSync(dir, old);
  renameSync(tmp, dir);
  rmSync(old, { recursive: true, force: true });
}

function stage(dir: string, paths: CertKeyPaths, certPem: string, keyPem: string): string {
  mkdirSync(dirname(dir), { recursive: true, mode: 0o700 });
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  mkdirSync(tmp, { mode: 0o700 });
  writeFileSync(join(tmp, basename(paths.key)), keyPem, { mode: 0o600 });
  writeFileSync(join(tmp, basename(paths.cert)), certPem, { mode: 0o600 });
  return tmp;
}

function basename(path: string): string {
  return path.slice(dirname(path).length + 1);
}

async function pkcs8Pem(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", key));
  const lines = der.toString("base64").match(/.{1,64}/g) ?? [];
  return `-----BEGIN PRIVATE KEY-----\n${lines.join("\n")}\n-----END PRIVATE KEY-----\n`;
}

function pemBody(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
}

/** This machine's addresses, for a node bound to every one (a wildcard). */
function localAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((a) => a !== undefined && !a.internal && !(a.family === "IPv6" && a.address.startsWith("fe80")))
    .map((a) => (a as { address: string }).address);
}

type X509 = typeof import("@peculiar/x509");
let loadedLibrary: Promise<X509> | undefined;

/** Loaded on first use only: tsyringe, under @peculiar/x509, needs the reflect-metadata polyfill first. */
function library(): Promise<X509> {
  loadedLibrary ??= (async () => {
    await import("reflect-metadata");
    const x509 = await import("@peculiar/x509");
    x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
    return x509;
  })();
  return loadedLibrary;
}
