import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { LOOPBACK } from "./loopback.ts";
import { httpUrl } from "./node-endpoint.ts";

export interface NodeClientOptions {
  /** "2" (default) multiplexes calls on one connection; "1.1" for proxies or debugging. */
  httpVersion?: "1.1" | "2";
  /**
   * HTTP/2 only: a PING this often while a stream is open (and before reusing a connection idle that
   * long), the connection closed when one goes unanswered as long. A long stream to a peer that
   * vanished without closing it (its site cut off) then fails and is retried instead of hanging.
   */
  pingIntervalMs?: number;
}

// One transport per node and HTTP version, so calls share an HTTP/2 connection instead of opening
// one each. Idle connections are unref'd by connect-node and do not keep a CLI process alive.
const transports = new Map<string, Transport>();

function transportFor(baseUrl: string, httpVersion: "1.1" | "2", pingIntervalMs?: number): Transport {
  const key = `${httpVersion} ${baseUrl} ${pingIntervalMs ?? ""}`;
  let transport = transports.get(key);
  if (!transport) {
    // No compression: node-to-node traffic is loopback or LAN, where gzip costs CPU and gains nothing
    // (requests are sent uncompressed by default; accepting none keeps responses uncompressed too).
    transport = createConnectTransport({
      baseUrl,
      httpVersion,
      useBinaryFormat: true,
      acceptCompression: [],
      ...(pingIntervalMs === undefined ? {} : { pingIntervalMs, pingTimeoutMs: pingIntervalMs }),
    });
    transports.set(key, transport);
  }
  return transport;
}

/**
 * A Connect client for a service a node serves at baseUrl (e.g. "http://127.0.0.1:4011").
 * Errors a node throws on purpose come back as ConnectErrors; `fromConnectError` rebuilds them.
 */
export function createNodeClient<S extends DescService>(
  service: S,
  baseUrl: string,
  options: NodeClientOptions = {},
): Client<S> {
  return createClient(service, transportFor(baseUrl, options.httpVersion ?? "2", options.pingIntervalMs));
}

/** A node's base URL by port (loopback unless `host`); a node of the config: `nodeEndpoint(…).url`. */
export function nodeBaseUrl(port: number, host = LOOPBACK): string {
  return httpUrl(host, port);
}
