import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { adminCredentials } from "./admin-credentials.ts";
import { LOOPBACK } from "./loopback.ts";
import { httpUrl } from "./node-endpoint.ts";
import { type ClientTlsIdentity, clientTlsKey, clientTlsOptions, noteDialed } from "./tls-client.ts";

export interface NodeClientOptions {
  /** "2" (default) multiplexes calls on one connection; "1.1" for proxies or debugging. */
  httpVersion?: "1.1" | "2";
  /**
   * HTTP/2 only: a PING this often while a stream is open (and before reusing a connection idle that
   * long), the connection closed when one goes unanswered as long. A long stream to a peer that
   * vanished without closing it (its site cut off) then fails and is retried instead of hanging.
   */
  pingIntervalMs?: number;
  /** The node serves TLS: an `http://` baseUrl (nodeBaseUrl) is dialed as `https://`. */
  tls?: boolean;
  /**
   * https: whose client certificate to present (tls-client.ts). A node's own calls pass the node's
   * (nodeClientTls), so that each node of a process shows its own identity; default the process's
   * (the CLI's admin client certificate).
   */
  clientTls?: ClientTlsIdentity;
}

// One transport per node, HTTP version and client identity, so calls share an HTTP/2 connection
// instead of opening one each, and never a connection that presented another node's certificate.
// Idle connections are unref'd by connect-node and do not keep a CLI process alive.
const transports = new Map<string, Transport>();

function transportFor(
  baseUrl: string,
  httpVersion: "1.1" | "2",
  pingIntervalMs?: number,
  clientTls?: ClientTlsIdentity,
): Transport {
  const tls = baseUrl.startsWith("https:");
  const key = `${httpVersion} ${baseUrl} ${pingIntervalMs ?? ""} ${tls ? clientTlsKey(clientTls) : ""}`;
  let transport = transports.get(key);
  if (!transport) {
    // No compression: node-to-node traffic is loopback or LAN, where gzip costs CPU and gains nothing
    // (requests are sent uncompressed by default; accepting none keeps responses uncompressed too).
    transport = createConnectTransport({
      baseUrl,
      httpVersion,
      useBinaryFormat: true,
      acceptCompression: [],
      // Admin calls carry the network's admin token (admin-credentials.ts; docs/security.md).
      interceptors: [adminCredentials],
      ...(pingIntervalMs === undefined ? {} : { pingIntervalMs, pingTimeoutMs: pingIntervalMs }),
      // https: the network's CAs and the caller's client certificate (tls-client.ts).
      ...(tls ? { nodeOptions: clientTlsOptions(clientTls) } : {}),
    });
    transports.set(key, transport);
    if (tls) noteDialed(baseUrl);
  }
  return transport;
}

/**
 * A Connect client for a service a node serves at baseUrl (e.g. "http://127.0.0.1:4011"; an https
 * URL, from nodeEndpoint for a node with TLS, connects with `options.clientTls`, else the process's
 * CA and certificate: configureClientTls).
 * Errors a node throws on purpose come back as ConnectErrors; `fromConnectError` rebuilds them.
 */
export function createNodeClient<S extends DescService>(
  service: S,
  baseUrl: string,
  options: NodeClientOptions = {},
): Client<S> {
  const url = options.tls ? baseUrl.replace(/^http:/, "https:") : baseUrl;
  return createClient(
    service,
    transportFor(url, options.httpVersion ?? "2", options.pingIntervalMs, options.clientTls),
  );
}

/** A node's base URL by port (loopback unless `host`); a node of the config: `nodeEndpoint(…).url`. */
export function nodeBaseUrl(port: number, host = LOOPBACK): string {
  return httpUrl(host, port);
}
