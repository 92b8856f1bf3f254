import { isIP } from "node:net";
import type { NodeEntry } from "./config-schema.ts";
import { LOOPBACK } from "./loopback.ts";
import type { NodeTlsConfig } from "./tls-schema.ts";

/** The keys of a node's config that say where it listens and how the others reach it. */
export interface EndpointConfig {
  port: number;
  /** The address the node binds; default 127.0.0.1. */
  host?: string;
  /** `host[:port]` the others dial; default the bind host (127.0.0.1 for a wildcard) and `port`. */
  address?: string;
  /** Its TLS (filled from the network's by applyTlsDefaults): any but `off` makes the URL https. */
  tls?: NodeTlsConfig;
}

/** Where a node listens and the one way every other node and the CLI reach it. */
export interface NodeEndpoint {
  bindHost: string;
  bindPort: number;
  /** The host and port the others dial (the configured `address`, or its default). */
  host: string;
  port: number;
  /** `host:port` as people write it (`[v6]:port`), e.g. `10.0.0.5:4011`. */
  address: string;
  /** The base URL of every call to the node, e.g. `http://10.0.0.5:4011` (`https://` with TLS). */
  url: string;
  /** Whether the node serves TLS. */
  tls: boolean;
}

/**
 * The endpoint of a node (its entry or its config section); `port` is a replica's own port, bound
 * on the node's host and reached at the address's host. The one place the defaults are decided.
 */
export function nodeEndpoint(node: NodeEntry | EndpointConfig, port?: number): NodeEndpoint {
  const config: EndpointConfig = "config" in node ? node.config : node;
  const bindHost = config.host ?? LOOPBACK;
  const bindPort = port ?? config.port;
  const address = config.address === undefined ? undefined : parseAddress(config.address);
  // A wildcard is not an address anyone can dial: this host's loopback unless `address` says otherwise.
  const host = address?.host ?? (isWildcardHost(bindHost) ? LOOPBACK : bindHost);
  const reachPort = port ?? address?.port ?? config.port;
  const joined = joinHostPort(host, reachPort);
  const tls = config.tls !== undefined && config.tls !== "off";
  return {
    bindHost,
    bindPort,
    host,
    port: reachPort,
    address: joined,
    url: httpUrl(host, reachPort, tls),
    tls,
  };
}

/**
 * Where this very process is reached, for the next activation of the node to fence it
 * (writer-fencing.ts): its bind address when concrete, since the configured `address` may be a
 * service name that moves to the other site at a fail-over; the advertised address for a wildcard bind.
 */
export function processAddress(node: NodeEntry | EndpointConfig, port: number): string {
  const endpoint = nodeEndpoint(node, port);
  return isWildcardHost(endpoint.bindHost) ? endpoint.address : joinHostPort(endpoint.bindHost, port);
}

/** `http://host:port` (`https://` for a node with TLS), an IPv6 host in brackets. */
export function httpUrl(host: string, port: number, tls = false): string {
  return `${tls ? "https" : "http"}://${joinHostPort(host, port)}`;
}

function joinHostPort(host: string, port: number): string {
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** `0.0.0.0` or `::` (in any spelling): every address of the machine. */
export function isWildcardHost(host: string): boolean {
  return host === "0.0.0.0" || (isIP(host) === 6 && canonicalHost(host) === "::");
}

/** A host as compared for equality: IPv6 compressed and lower case, names lower case. */
export function canonicalHost(host: string): string {
  if (isIP(host) === 6) return new URL(`http://[${host}]`).hostname.slice(1, -1);
  return host.toLowerCase();
}

/** Whether servers on these two bind hosts would take the same port from each other. */
export function bindHostsOverlap(a: string, b: string): boolean {
  if (isWildcardHost(a) || isWildcardHost(b)) return true;
  const [x, y] = [canonicalHost(a), canonicalHost(b)];
  if (x === y) return true;
  // `localhost` is the loopback; any other name may resolve anywhere, so only an equal name clashes.
  const loopback = new Set(["127.0.0.1", "::1"]);
  return (x === "localhost" && loopback.has(y)) || (y === "localhost" && loopback.has(x));
}

/**
 * The host that stands for the machine a node listens on, for telling whether two nodes could take
 * the same port: its bind host; for a wildcard, the machine its `address` names, as long as that is
 * not a loopback address, which any machine has (then still the wildcard: it clashes with every node).
 */
export function bindSite(node: EndpointConfig): string {
  const host = node.host ?? LOOPBACK;
  if (!isWildcardHost(host) || node.address === undefined) return host;
  const reached = parseAddress(node.address).host;
  return isLoopbackHost(reached) ? host : reached;
}

/** `localhost`, 127.0.0.0/8 or ::1: reachable from this machine only. */
export function isLoopbackHost(host: string): boolean {
  const h = canonicalHost(host);
  return h === "localhost" || h === "::1" || (isIP(h) === 4 && h.startsWith("127."));
}

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** Why `host` is not an IP address or a host name, or undefined when it is one. */
export function hostProblem(host: string): string | undefined {
  if (host.includes("%")) return `"${host}": IPv6 zone ids are not supported`;
  if (isIP(host) !== 0) return undefined;
  if (/^[\d.]+$/.test(host)) return `"${host}" is not an IPv4 address`;
  if (HOST_NAME.test(host)) return undefined;
  return `"${host}" is not an IP address or a host name (no port, no brackets: the port is the node's \`port\`)`;
}

/** `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; `problem` when it is none of them. */
export function parseAddress(address: string): { host: string; port?: number; problem?: string } {
  let host = address;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(address);
  if (bracketed) {
    host = bracketed[1] as string;
    portText = bracketed[2];
    if (isIP(host) !== 6) return { host, problem: `"${address}": only an IPv6 address goes in brackets` };
  } else if (address.split(":").length === 2) {
    [host, portText] = address.split(":") as [string, string];
  }
  // More than one colon without brackets can only be an IPv6 address with no port.
  const problem = hostProblem(host) ?? (isWildcardHost(host) ? wildcardProblem(host) : undefined);
  if (problem) return { host, problem };
  if (portText === undefined) return { host };
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN;
  if (!(port >= 1 && port <= 65535))
    return { host, problem: `"${address}": the port must be a number from 1 to 65535` };
  return { host, port };
}

function wildcardProblem(host: string): string {
  return `${host} is every address of a machine, which nobody can dial: give the address the others reach the node at`;
}
