import { isIP } from "node:net";
import { join, resolve } from "node:path";
import type { LockstepConfig, NodeEntry } from "./config-schema.ts";
import { configNodes } from "./config-schema.ts";
import { isLoopbackHost, isWildcardHost, nodeEndpoint } from "./node-endpoint.ts";
import type { ClientAuth, NodeTlsConfig, NodeTlsFiles } from "./tls-schema.ts";

// How the config's `tls` sections combine (docs/configuration.md "TLS"), kept free of I/O.

/** SAN URIs of the certificates `tls: auto` issues: they name a node, or an admin client (the CLI). */
export const NODE_URI_PREFIX = "urn:lockstep:node:";
export const ADMIN_URI_PREFIX = "urn:lockstep:admin:";

export interface CertKeyPaths {
  cert: string;
  key: string;
}

/** Where `tls: auto` keeps what Lockstep issues: one directory per certificate, written at once. */
export interface AutoTlsPaths {
  dir: string;
  ca: CertKeyPaths;
  node(name: string): CertKeyPaths;
  /** The CLI's client certificate, for nodes with `client-auth`. */
  client: CertKeyPaths;
}

export function autoTlsPaths(dataDir: string): AutoTlsPaths {
  const dir = join(dataDir, "tls");
  const pair = (sub: string, base: string): CertKeyPaths => ({
    cert: join(dir, sub, `${base}.crt`),
    key: join(dir, sub, `${base}.key`),
  });
  return {
    dir,
    ca: pair("ca", "ca"),
    node: (name) => pair(join("nodes", name), "node"),
    client: pair("client", "client"),
  };
}

interface NetworkTls {
  off: boolean;
  auto: boolean;
  ca?: string;
  clientAuth?: ClientAuth;
  client?: CertKeyPaths;
}

function networkTls(config: LockstepConfig): NetworkTls {
  const tls = config.tls;
  if (tls === undefined) return { off: false, auto: false };
  if (tls === "off") return { off: true, auto: false };
  if (tls === "auto") return { off: false, auto: true };
  return { off: false, auto: tls.auto, ca: tls.ca, clientAuth: tls["client-auth"], client: tls.client };
}

/** Whether the network's certificates are Lockstep's own (`tls: auto`). */
export function isAutoTls(config: LockstepConfig): boolean {
  return networkTls(config).auto;
}

/**
 * Fills every node's `tls` from the network's (so that a node's section alone says how it is served and
 * reached: nodeEndpoint's scheme), with paths made absolute against `baseDir` when given. A node's own
 * `tls` wins; `ca` and `client-auth` it leaves out come from the network. Call once, after parsing.
 */
export function applyTlsDefaults(config: LockstepConfig, baseDir?: string): void {
  const abs = (path: string) => (baseDir === undefined ? path : resolve(baseDir, path));
  const network = config.tls;
  if (network !== undefined && typeof network === "object") {
    if (network.ca !== undefined) network.ca = abs(network.ca);
    if (network.client) network.client = { cert: abs(network.client.cert), key: abs(network.client.key) };
  }
  const net = networkTls(config);
  const auto = autoTlsPaths(config["data-dir"]);
  const ca = net.ca ?? (net.auto ? auto.ca.cert : undefined);
  for (const { name, config: node } of configNodes(config)) {
    const own = node.tls;
    if (own === "off") continue;
    let resolved: NodeTlsConfig | undefined;
    if (own !== undefined) {
      resolved = { cert: abs(own.cert), key: abs(own.key) };
      const nodeCa = own.ca === undefined ? ca : abs(own.ca);
      if (nodeCa !== undefined) resolved.ca = nodeCa;
      resolved["client-auth"] = own["client-auth"] ?? net.clientAuth ?? "none";
    } else if (net.off) resolved = "off";
    else if (net.auto)
      resolved = { ...auto.node(name), ca: ca ?? auto.ca.cert, "client-auth": net.clientAuth ?? "none" };
    if (resolved !== undefined) node.tls = resolved;
  }
}

/** The node's TLS files when it serves TLS (after applyTlsDefaults). */
export function nodeTlsFiles(entry: NodeEntry): NodeTlsFiles | undefined {
  const tls = entry.config.tls;
  return tls === undefined || tls === "off" ? undefined : tls;
}

/** Whether the node's certificate is one `tls: auto` issues (and re-issues when it no longer fits). */
export function isAutoIssued(config: LockstepConfig, entry: NodeEntry): boolean {
  const files = nodeTlsFiles(entry);
  return (
    files !== undefined &&
    isAutoTls(config) &&
    files.cert === autoTlsPaths(config["data-dir"]).node(entry.name).cert
  );
}

/**
 * Why the node may not start as configured, or undefined: a node bound to an address others can reach
 * serves TLS, unless its config says `tls: off` (its own or the network's). Loopback needs neither.
 */
export function tlsRequirementProblem(entry: NodeEntry): { host: string } | undefined {
  const { bindHost } = nodeEndpoint(entry);
  if (entry.config.tls !== undefined || isLoopbackHost(bindHost)) return undefined;
  return { host: bindHost };
}

/**
 * The CA files a client of this network trusts: every node's and the network's (all the operator's),
 * so one client reaches any node, a replica on another port or a node moved by a fail-over alike.
 */
export function trustedCaFiles(config: LockstepConfig): string[] {
  const files = new Set<string>();
  const net = networkTls(config);
  if (net.ca) files.add(net.ca);
  for (const entry of configNodes(config)) {
    const ca = nodeTlsFiles(entry)?.ca;
    if (ca) files.add(ca);
  }
  return [...files];
}

/** The certificate the CLI presents to nodes that ask for one: the network's `client`, or the auto one. */
export function cliClientCertificate(config: LockstepConfig): CertKeyPaths | undefined {
  const net = networkTls(config);
  return net.client ?? (net.auto ? autoTlsPaths(config["data-dir"]).client : undefined);
}

/** The names a node's certificate carries (SANs): where it binds and where the others dial it. */
export interface CertificateHosts {
  ips: string[];
  dns: string[];
}

/**
 * Every host a client may dial the node at: its advertised host, its bind host, the loopback (the
 * CLI on its own machine); for a wildcard bind, `localAddresses` too (this machine's interfaces).
 */
export function certificateHosts(entry: NodeEntry, localAddresses: string[] = []): CertificateHosts {
  const endpoint = nodeEndpoint(entry);
  const hosts = ["localhost", "127.0.0.1", "::1", endpoint.host];
  if (isWildcardHost(endpoint.bindHost)) hosts.push(...localAddresses);
  else hosts.push(endpoint.bindHost);
  const ips = new Set<string>();
  const dns = new Set<string>();
  for (const host of hosts) {
    if (isIP(host)) ips.add(host);
    else dns.add(host.toLowerCase());
  }
  return { ips: [...ips], dns: [...dns] };
}
