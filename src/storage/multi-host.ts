import { LockstepError } from "../common/errors.ts";

/**
 * libpq's multi-host connection URLs, which node-postgres does not understand (pure: no I/O):
 *
 *   postgresql://user:pw@h1:5432,h2:5433/db?target_session_attrs=read-write
 *
 * Grammar as libpq's (PostgreSQL docs §34.1.1): `postgres[ql]://[user[:password]@][host[:port][,…]]
 * [/dbname][?param=value&…]`, percent-encoded parts, IPv6 hosts in brackets, a host without a port on
 * 5432, and the `host` / `port` query parameters overriding the authority (a single port applies to
 * every host). multi-host-db.ts turns one URL into connections to the server that accepts writes.
 */

/**
 * libpq's target_session_attrs that Lockstep accepts. `read-write` (libpq: `SHOW
 * transaction_read_only` is off) and `primary` (libpq: `pg_is_in_recovery()` is false) are treated
 * alike, both checked: a node must write, and a primary with default_transaction_read_only cannot.
 */
export type TargetSessionAttrs = "any" | "read-write" | "primary";

const TARGET_SESSION_ATTRS: readonly TargetSessionAttrs[] = ["any", "read-write", "primary"];
const DEFAULT_PORT = 5432;

export interface HostAddress {
  /** A name, an IPv4 or IPv6 address (without brackets), a Unix socket directory, or "" (libpq's default). */
  host: string;
  port: number;
}

export interface MultiHostUrl {
  scheme: "postgres" | "postgresql";
  /** Decoded; "" when the URL names none. */
  user: string;
  password: string | undefined;
  /** In the URL's order: libpq tries them in this order, and so does multi-host-db.ts. */
  hosts: HostAddress[];
  /** Decoded; "" when the URL names none. */
  database: string;
  targetSessionAttrs: TargetSessionAttrs;
  /** libpq's connect_timeout (seconds), when given: how long to try each host. */
  connectTimeoutSeconds: number | undefined;
  /** Every other query parameter, decoded, in order: passed unchanged to each host's connection. */
  params: [string, string][];
}

/** Why `url` is not a PostgreSQL URL Lockstep can use, or undefined when it is. */
export function multiHostUrlProblem(url: string): string | undefined {
  const parsed = tryParse(url);
  return "problem" in parsed ? parsed.problem : undefined;
}

/** Parses a libpq-style URL; throws CONFIG_INVALID naming the problem (never echoing a password). */
export function parseMultiHostUrl(url: string): MultiHostUrl {
  const parsed = tryParse(url);
  if ("problem" in parsed) {
    throw new LockstepError("CONFIG_INVALID", { details: `storage.url: ${parsed.problem}` });
  }
  return parsed;
}

/** The database connections open: the named one, else (as libpq) the user's name, else postgres. */
export function effectiveDatabase(url: MultiHostUrl): string {
  return url.database || url.user || "postgres";
}

/** Whether connections must go to the one server that accepts writes (and follow it). */
export function needsReadWrite(url: MultiHostUrl): boolean {
  return url.targetSessionAttrs !== "any";
}

/**
 * Whether a plain single-server driver can take the URL as it is: one host and no server to choose.
 * The rest go through multi-host-db.ts.
 */
export function isSingleServerUrl(url: MultiHostUrl): boolean {
  return url.hosts.length === 1 && !needsReadWrite(url);
}

/** `host:port` as the URL would write it (IPv6 in brackets, a socket directory as itself). */
export function hostLabel(address: HostAddress): string {
  if (address.host.startsWith("/")) return `${address.host}:${address.port}`;
  const host = address.host.includes(":") ? `[${address.host}]` : address.host || "localhost";
  return `${host}:${address.port}`;
}

/** Where the URL points, for logs and status: hosts, database and mode, never user or password. */
export function describeMultiHostUrl(url: MultiHostUrl): string {
  const hosts = url.hosts.map(hostLabel).join(",");
  return `${hosts}/${url.database}${needsReadWrite(url) ? ` (${url.targetSessionAttrs})` : ""}`;
}

/**
 * A URL for one of the hosts that node-postgres understands: the same user, password, database
 * and parameters, without target_session_attrs and connect_timeout (the choice of server is made
 * by the caller). A socket directory goes in the `host` parameter.
 */
export function singleHostUrl(url: MultiHostUrl, address: HostAddress): string {
  const params: [string, string][] = [...url.params];
  let authorityHost = "";
  if (address.host.startsWith("/")) {
    params.push(["host", address.host], ["port", String(address.port)]);
  } else if (address.host) {
    authorityHost = `${address.host.includes(":") ? `[${address.host}]` : encodeURIComponent(address.host)}:${address.port}`;
  }
  return format(url, authorityHost, params);
}

/** The URL written back in libpq's syntax (e.g. after `withDatabase`), every host in the authority. */
export function formatMultiHostUrl(url: MultiHostUrl): string {
  const params: [string, string][] = [...url.params];
  const sockets = url.hosts.some((h) => h.host.startsWith("/"));
  let authority = "";
  if (sockets) {
    params.push(["host", url.hosts.map((h) => h.host).join(",")]);
    params.push(["port", url.hosts.map((h) => String(h.port)).join(",")]);
  } else {
    authority = url.hosts
      .map((h) =>
        h.host ? `${h.host.includes(":") ? `[${h.host}]` : encodeURIComponent(h.host)}:${h.port}` : "",
      )
      .join(",");
  }
  if (url.targetSessionAttrs !== "any") params.push(["target_session_attrs", url.targetSessionAttrs]);
  if (url.connectTimeoutSeconds !== undefined)
    params.push(["connect_timeout", String(url.connectTimeoutSeconds)]);
  return format(url, authority, params);
}

/** The same URL for another database on the same servers (restore's staging and admin databases). */
export function withDatabase(url: string, database: string): string {
  return formatMultiHostUrl({ ...parseMultiHostUrl(url), database });
}

function format(url: MultiHostUrl, authority: string, params: [string, string][]): string {
  const user =
    url.user || url.password !== undefined
      ? `${encodeURIComponent(url.user)}${url.password === undefined ? "" : `:${encodeURIComponent(url.password)}`}@`
      : "";
  const path = url.database ? `/${encodeURIComponent(url.database)}` : "";
  const query = params.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&");
  return `${url.scheme}://${user}${authority}${path}${query ? `?${query}` : ""}`;
}

type Parsed = MultiHostUrl | { problem: string };

function decode(part: string, what: string): string | { problem: string } {
  try {
    return decodeURIComponent(part);
  } catch {
    return { problem: `the ${what} has an invalid percent-encoding` };
  }
}

function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

function tryParse(url: string): Parsed {
  const scheme = /^(postgres(?:ql)?):\/\//.exec(url);
  if (!scheme)
    return { problem: "expected postgresql://[user[:password]@]host[:port][,host[:port]…]/database" };
  let rest = url.slice(scheme[0].length);
  const queryAt = rest.indexOf("?");
  const query = queryAt >= 0 ? rest.slice(queryAt + 1) : "";
  if (queryAt >= 0) rest = rest.slice(0, queryAt);
  // As libpq: the credentials end at the first `@` before any `/` (a `@` or `/` in them is percent-encoded).
  const slash = rest.indexOf("/");
  const authorityEnd = slash >= 0 ? slash : rest.length;
  const at = rest.slice(0, authorityEnd).indexOf("@");
  let user = "";
  let password: string | undefined;
  if (at >= 0) {
    const credentials = rest.slice(0, at);
    const colon = credentials.indexOf(":");
    const decodedUser = decode(colon >= 0 ? credentials.slice(0, colon) : credentials, "user name");
    if (typeof decodedUser !== "string") return decodedUser;
    user = decodedUser;
    if (colon >= 0) {
      const decodedPassword = decode(credentials.slice(colon + 1), "password");
      if (typeof decodedPassword !== "string") return decodedPassword;
      password = decodedPassword;
    }
  }
  const hostspec = rest.slice(at >= 0 ? at + 1 : 0, authorityEnd);
  const path = slash >= 0 ? rest.slice(slash + 1) : "";
  const database = decode(path, "database name");
  if (typeof database !== "string") return database;

  const entries: { host: string; port: number | undefined }[] = [];
  for (const spec of hostspec.split(",")) {
    const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(spec);
    let hostText: string;
    let portText: string | undefined;
    if (bracketed) {
      hostText = bracketed[1] ?? "";
      portText = bracketed[2];
    } else {
      if (spec.includes("[") || spec.includes("]")) return { problem: `host "${spec}" has a stray bracket` };
      const colon = spec.indexOf(":");
      hostText = colon >= 0 ? spec.slice(0, colon) : spec;
      portText = colon >= 0 ? spec.slice(colon + 1) : undefined;
    }
    const host = decode(hostText, "host");
    if (typeof host !== "string") return host;
    let port: number | undefined;
    if (portText !== undefined && portText !== "") {
      port = parsePort(portText);
      if (port === undefined) return { problem: `host "${host}" has an invalid port "${portText}"` };
    }
    entries.push({ host, port });
  }
  if (entries.length > 1 && entries.some((e) => e.host === "")) {
    return { problem: "an empty host in a list of hosts" };
  }

  const params: [string, string][] = [];
  let hostParam: string | undefined;
  let portParam: string | undefined;
  let targetSessionAttrs: TargetSessionAttrs = "any";
  let connectTimeoutSeconds: number | undefined;
  for (const pair of query ? query.split("&") : []) {
    const eq = pair.indexOf("=");
    if (eq <= 0) return { problem: `query parameter "${pair}" is not key=value` };
    const key = decode(pair.slice(0, eq), "query parameter name");
    if (typeof key !== "string") return key;
    const value = decode(pair.slice(eq + 1), `query parameter ${key}`);
    if (typeof value !== "string") return value;
    if (key === "host") hostParam = value;
    else if (key === "port") portParam = value;
    else if (key === "target_session_attrs") {
      if (!TARGET_SESSION_ATTRS.includes(value as TargetSessionAttrs)) {
        return {
          problem: `target_session_attrs=${value} is not supported (use ${TARGET_SESSION_ATTRS.join(", ")}: a node writes)`,
        };
      }
      targetSessionAttrs = value as TargetSessionAttrs;
    } else if (key === "connect_timeout") {
      const seconds = /^\d+$/.test(value) ? Number(value) : Number.NaN;
      if (!Number.isFinite(seconds))
        return { problem: `connect_timeout=${value} is not a number of seconds` };
      connectTimeoutSeconds = seconds;
    } else if (key === "hostaddr") {
      return { problem: "hostaddr is not supported: name the addresses as hosts" };
    } else params.push([key, value]);
  }

  // libpq: the `host` and `port` parameters override the authority's hosts and ports.
  let hosts = entries;
  if (hostParam !== undefined) hosts = hostParam.split(",").map((host) => ({ host, port: undefined }));
  if (portParam !== undefined) {
    const ports = portParam.split(",").map((p) => (p === "" ? DEFAULT_PORT : parsePort(p)));
    if (ports.some((p) => p === undefined)) return { problem: `port=${portParam} is not a list of ports` };
    if (ports.length !== 1 && ports.length !== hosts.length) {
      return { problem: `port=${portParam} names ${ports.length} ports for ${hosts.length} hosts` };
    }
    hosts = hosts.map((h, i) => ({ host: h.host, port: ports.length === 1 ? ports[0] : ports[i] }));
  }
  return {
    scheme: scheme[1] as MultiHostUrl["scheme"],
    user,
    password,
    hosts: hosts.map((h) => ({ host: h.host, port: h.port ?? DEFAULT_PORT })),
    database,
    targetSessionAttrs,
    connectTimeoutSeconds,
    params,
  };
}
