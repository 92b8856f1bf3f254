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

/** What a client of this process presents and trusts on https connections to nodes. */
export interface ClientTlsOptions {
  /** Absent: the system's roots (certificates from a public CA). */
  ca?: Buffer[];
  cert?: Buffer;
  key?: Buffer;
}

interface Settings {
  caFiles: string[];
  cert?: CertKeyPaths;
  /** A missing client certificate is no error (auto: the nodes issue it at their first start). */
  certOptional: boolean;
  node?: string;
}

// Process-wide, set once from the config: every client of the process (the CLI's, a node's calls to
// the sequencer) dials nodes of the same network. Files are read at the first https call, so a CLI
// that started before the nodes issued their certificates (`up --detach`) still finds them.
let settings: Settings = { caFiles: [], certOptional: true };
let generation = 0;
let loaded: ClientTlsOptions | undefined;

/**
 * Sets this process's client TLS from the config: the CLI presents the network's client certificate,
 * a node its own (mutual TLS between nodes). A process running several nodes (`up` in the foreground,
 * the demo) presents the first one's: later calls with a node keep it.
 */
export function configureClientTls(config: LockstepConfig, node?: NodeEntry): void {
  if (settings.node !== undefined) return;
  const own = node && nodeTlsFiles(node);
  const cert = node ? own && { cert: own.cert, key: own.key } : cliClientCertificate(config);
  settings = {
    caFiles: trustedCaFiles(config),
    cert,
    certOptional: node === undefined && isAutoTls(config),
    node: node?.name,
  };
  generation++;
  loaded = undefined;
}

/** Changes when configureClientTls does, or the client certificate appears: part of a cached transport's key. */
export function clientTlsGeneration(): string {
  return `${generation}${clientTlsOptions().cert ? "" : " without certificate"}`;
}

/** The CA, certificate and key for an https connection; throws TLS_FILES_INVALID naming a bad file. */
export function clientTlsOptions(): ClientTlsOptions {
  if (loaded) return loaded;
  const options: ClientTlsOptions = {};
  if (settings.caFiles.length > 0) options.ca = settings.caFiles.map((f) => readTlsFile("CA file", f));
  const cert = settings.cert;
  if (cert) {
    try {
      options.cert = readTlsFile("client certificate", cert.cert);
      options.key = readTlsFile("client key", cert.key);
    } catch (error) {
      if (!settings.certOptional) throw error;
      // Not issued yet (the first node of `up` writes the CA first): read again next time.
      delete options.cert;
      return options;
    }
  }
  loaded = options;
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
 * GET over HTTP/1.1 (`/health`), https with this process's client TLS: the one request to a node that
 * is not an RPC. Resolves with the status and the parsed JSON body, if any.
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
