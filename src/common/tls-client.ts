import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { LockstepConfig, NodeEntry } from "./config-schema.ts";
import { LockstepError } from "./errors.ts";
import {
  type CertKeyPaths,
  cliClientCertificate,
  isAutoTls,
  nodeTlsFiles,
  trustedCaFiles,
} from "./tls-config.ts";

/** What a client presents and trusts on an https connection to a node (node:https / http2 options). */
export interface ClientTlsOptions {
  /** Absent: the system's roots (certificates from a public CA). */
  ca?: Buffer[];
  cert?: Buffer;
  key?: Buffer;
}

/**
 * Whose client certificate a connection presents, and which CAs it trusts: the CLI's (the network's
 * admin client certificate) or one node's own (mutual TLS between nodes). A node's calls must carry
 * its own identity, not the process's: `lockstep up` in the foreground and the demo run every node
 * in one process, and a server that reads the certificate (tls-peer.ts) must see the caller.
 */
export interface ClientTlsIdentity {
  /** "cli" or the node's name: for logs and errors. */
  holder: string;
  caFiles: string[];
  cert?: CertKeyPaths;
  /** A missing certificate is no error (auto: the nodes issue it at their first start). */
  certOptional: boolean;
}

/** The CLI's: the network's CAs and its `client` certificate (the auto one under `tls: auto`). */
export function cliClientTls(config: LockstepConfig): ClientTlsIdentity {
  const cert = cliClientCertificate(config);
  return {
    holder: "cli",
    caFiles: trustedCaFiles(config),
    ...(cert ? { cert } : {}),
    certOptional: isAutoTls(config),
  };
}

/** A node's: the network's CAs and the node's own certificate, which it also serves with. */
export function nodeClientTls(config: LockstepConfig, node: NodeEntry): ClientTlsIdentity {
  const own = nodeTlsFiles(node);
  return {
    holder: node.name,
    caFiles: trustedCaFiles(config),
    ...(own ? { cert: { cert: own.cert, key: own.key } } : {}),
    certOptional: false,
  };
}

// The process's default identity, for clients made without one: the CLI's (set from its config by
// loadCliConfig). Files are read at the first https call, so a CLI that started before the nodes
// issued their certificates (`up --detach`) still finds them; configuring again drops what was read.
let processDefault: ClientTlsIdentity = { holder: "cli", caFiles: [], certOptional: true };
let configured = false;
let generation = 0;
const loaded = new Map<string, ClientTlsOptions>();

/** Sets the process's default client TLS (the CLI's) from the config. */
export function configureClientTls(config: LockstepConfig): void {
  processDefault = cliClientTls(config);
  configured = true;
  generation++;
  loaded.clear();
}

/** configureClientTls, unless the process did already (a node in a process without the CLI: tests). */
export function configureClientTlsIfUnset(config: LockstepConfig): void {
  if (!configured) configureClientTls(config);
}

function identityKey(identity: ClientTlsIdentity): string {
  return JSON.stringify([generation, identity.caFiles, identity.cert ?? null]);
}

/**
 * What a cached transport's key must hold of its identity: the files (not the holder: two nodes
 * with one certificate may share a connection), and whether the certificate was read yet.
 */
export function clientTlsKey(identity: ClientTlsIdentity = processDefault): string {
  return `${identityKey(identity)}${clientTlsOptions(identity).cert ? "" : " without certificate"}`;
}

/** The CA, certificate and key for an https connection; throws TLS_FILES_INVALID naming a bad file. */
export function clientTlsOptions(identity: ClientTlsIdentity = processDefault): ClientTlsOptions {
  const key = identityKey(identity);
  const cached = loaded.get(key);
  if (cached) return cached;
  const options: ClientTlsOptions = {};
  if (identity.caFiles.length > 0) options.ca = identity.caFiles.map((f) => readTlsFile("CA file", f));
  const cert = identity.cert;
  if (cert) {
    const whose = identity.holder === "cli" ? "client" : `${identity.holder}'s client`;
    try {
      options.cert = readTlsFile(`${whose} certificate`, cert.cert);
      options.key = readTlsFile(`${whose} key`, cert.key);
    } catch (error) {
      if (!identity.certOptional) throw error;
      // Not issued yet (the first node of `up` writes the CA first): read again next time.
      delete options.cert;
      return options;
    }
  }
  loaded.set(key, options);
  return options;
}

/** Reads a PEM file for TLS, or throws TLS_FILES_INVALID with the reason. */
export function readTlsFile(what: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    const reason =
      (error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (error as Error).message;
    throw new LockstepError("TLS_FILES_INVALID", { what, path, reason }, { cause: error });
  }
}

/**
 * GET over HTTP/1.1 (`/health`), https with the process's client TLS (the CLI's): the one request to
 * a node that is not an RPC. Resolves with the status and the parsed JSON body, if any.
 */
export function getJson(url: string, timeoutMs: number): Promise<{ status: number; body: unknown }> {
  const secure = url.startsWith("https:");
  return new Promise((resolve, reject) => {
    const onResponse = (res: http.IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        } catch {
          body = undefined;
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    };
    const signal = AbortSignal.timeout(timeoutMs);
    const req = secure
      ? https.get(url, { ...clientTlsOptions(), signal, agent: false }, onResponse)
      : http.get(url, { signal, agent: false }, onResponse);
    req.on("error", reject);
  });
}

// The https origins this process dialed, for diagnosing a call that failed under TLS (tls-diagnosis.ts).
const dialed = new Set<string>();

/** Remembers an https base URL a transport was made for. */
export function noteDialed(baseUrl: string): void {
  dialed.add(new URL(baseUrl).origin);
}

export function dialedOrigins(): string[] {
  return [...dialed];
}
