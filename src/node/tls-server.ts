import type http from "node:http";
import http2 from "node:http2";
import tls, { type TLSSocket } from "node:tls";
import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { configureClientTlsIfUnset, readTlsFile } from "../common/tls-client.ts";
import { isAutoIssued, nodeTlsFiles, tlsRequirementProblem } from "../common/tls-config.ts";
import { ensureAutoTls } from "../common/tls-issuer.ts";
import type { ClientAuth } from "../common/tls-schema.ts";

/** A node's TLS, its files read: what NodeServer serves with. */
export interface ServerTls {
  cert: Buffer;
  key: Buffer;
  /** The CAs whose client certificates the node accepts; absent: the system's. */
  ca?: Buffer;
  clientAuth: ClientAuth;
}

/**
 * The node's server TLS from its config, or undefined for cleartext. Refuses (TLS_REQUIRED) a node
 * bound to an address other machines reach without TLS unless its config says `tls: off`, and
 * (TLS_FILES_INVALID) files that are missing or do not fit together, naming the file.
 */
export function serverTlsFor(entry: NodeEntry): ServerTls | undefined {
  const problem = tlsRequirementProblem(entry);
  if (problem) throw new LockstepError("TLS_REQUIRED", { node: entry.name, host: problem.host });
  const files = nodeTlsFiles(entry);
  if (!files) return undefined;
  const loaded: ServerTls = {
    cert: readTlsFile(`certificate of ${entry.name}`, files.cert),
    key: readTlsFile(`key of ${entry.name}`, files.key),
    clientAuth: files["client-auth"] ?? "none",
  };
  if (files.ca) loaded.ca = readTlsFile(`CA file of ${entry.name}`, files.ca);
  // Checked here, where the paths are known: the secure server would only say "bad key" later.
  try {
    tls.createSecureContext({ cert: loaded.cert, key: loaded.key });
  } catch (error) {
    throw new LockstepError(
      "TLS_FILES_INVALID",
      {
        what: `certificate and key of ${entry.name}`,
        path: `${files.cert}, ${files.key}`,
        reason: (error as Error).message,
      },
      { cause: error },
    );
  }
  if (loaded.ca) {
    try {
      tls.createSecureContext({ ca: loaded.ca });
    } catch (error) {
      throw new LockstepError(
        "TLS_FILES_INVALID",
        { what: `CA file of ${entry.name}`, path: files.ca as string, reason: (error as Error).message },
        { cause: error },
      );
    }
  }
  return loaded;
}

type Handler = (
  req: http2.Http2ServerRequest | http.IncomingMessage,
  res: http2.Http2ServerResponse | http.ServerResponse,
) => void;

/**
 * One secure server for HTTP/2 (gRPC, Connect) and HTTP/1.1 (Connect JSON, curl, /health), chosen
 * by ALPN. Client certificates per `client-auth`: `require` fails the handshake without a certificate
 * the node's CA issued; `optional` asks, and NodeServer drops a connection whose certificate fails.
 * TLS 1.2 at least, as Canton's default minimum server protocol.
 */
export function createTlsServer(settings: ServerTls, handler: Handler): http2.Http2SecureServer {
  return http2.createSecureServer(
    {
      cert: settings.cert,
      key: settings.key,
      ...(settings.ca ? { ca: settings.ca } : {}),
      allowHTTP1: true,
      ALPNProtocols: ["h2", "http/1.1"],
      requestCert: settings.clientAuth !== "none",
      rejectUnauthorized: settings.clientAuth === "require",
      minVersion: "TLSv1.2",
      // A client that connects and says nothing does not hold a connection for node's default 120 s.
      handshakeTimeout: 10_000,
    },
    handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  );
}

/** One connection's key, the same on the accepted socket and the TLS socket over it. */
export function socketKey(socket: { remoteAddress?: string; remotePort?: number }): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

/** Whether the client presented a certificate that did not verify (possible under `optional` only). */
export function unverifiedPresented(socket: TLSSocket): boolean {
  return !socket.authorized && Object.keys(socket.getPeerCertificate() ?? {}).length > 0;
}

/**
 * Everything a node does about TLS before it serves: issues its certificate under `tls: auto`, lets a
 * process without the CLI's setup trust the network's CAs, and reads its server TLS. The node's own
 * calls present its certificate through nodeClientTls, never the process's default: several nodes
 * may share this process (`lockstep up` in the foreground, the demo).
 */
export async function prepareNodeTls(
  config: LockstepConfig,
  entry: NodeEntry,
): Promise<ServerTls | undefined> {
  if (isAutoIssued(config, entry)) await ensureAutoTls(config, { nodes: [entry], clientIfPossible: true });
  configureClientTlsIfUnset(config);
  return serverTlsFor(entry);
}
