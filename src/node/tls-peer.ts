import type { TLSSocket } from "node:tls";
import { type ContextValues, createContextKey } from "@connectrpc/connect";
import { ADMIN_URI_PREFIX, NODE_URI_PREFIX } from "../common/tls-config.ts";

/**
 * Who is at the other end of a TLS connection, by the client certificate it presented and the node
 * verified against its `ca` (never set for an unverified or absent certificate). Lockstep's own
 * certificates (tls-issuer.ts) name their holder in a SAN URI: `urn:lockstep:node:<name>` for a node,
 * `urn:lockstep:admin:<name>` for an admin client (the CLI's), so a check can accept "an admin client
 * certificate" without a token: `callPeer(req.contextValues)?.admin`.
 */
export interface PeerIdentity {
  /** The subject's CN, e.g. the node's name. */
  commonName?: string;
  /** SAN URIs, DNS names and IP addresses, as written in the certificate. */
  uris: string[];
  dnsNames: string[];
  ipAddresses: string[];
  /** SHA-256 of the DER certificate, colon-separated hex (as node:crypto prints it). */
  fingerprint256: string;
  /** The node named by a `urn:lockstep:node:` URI. */
  node?: string;
  /** Whether a `urn:lockstep:admin:` URI names the holder an administrator. */
  admin: boolean;
}

/** The verified client certificate of the call's connection, if any (set by NodeServer). */
export const peerIdentityKey = createContextKey<PeerIdentity | undefined>(undefined, {
  description: "the verified TLS client certificate of the caller",
});

/** The caller's verified certificate identity: `callPeer(req.contextValues)` in an interceptor. */
export function callPeer(values: ContextValues): PeerIdentity | undefined {
  return values.get(peerIdentityKey);
}

/** The identity of a TLS connection's verified client certificate; undefined without one. */
export function socketPeerIdentity(socket: TLSSocket): PeerIdentity | undefined {
  if (!socket.authorized) return undefined;
  const cert = socket.getPeerX509Certificate();
  if (!cert) return undefined;
  const names = parseSubjectAltName(cert.subjectAltName ?? "");
  const commonName = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1];
  const node = names.uris.find((u) => u.startsWith(NODE_URI_PREFIX))?.slice(NODE_URI_PREFIX.length);
  return {
    ...(commonName === undefined ? {} : { commonName }),
    ...names,
    fingerprint256: cert.fingerprint256,
    ...(node === undefined ? {} : { node }),
    admin: names.uris.some((u) => u.startsWith(ADMIN_URI_PREFIX)),
  };
}

/** For logs: `node:<name>`, `admin:<CN>`, `cn:<CN>`, or `none` (no verified certificate). */
export function describePeer(peer: PeerIdentity | undefined): string {
  if (!peer) return "none";
  if (peer.node !== undefined) return `node:${peer.node}`;
  return `${peer.admin ? "admin" : "cn"}:${peer.commonName ?? peer.fingerprint256}`;
}

/** node:crypto's `DNS:a, IP Address:1.2.3.4, URI:urn:…` (values needing it are JSON-quoted). */
export function parseSubjectAltName(text: string): {
  uris: string[];
  dnsNames: string[];
  ipAddresses: string[];
} {
  const out = { uris: [] as string[], dnsNames: [] as string[], ipAddresses: [] as string[] };
  for (const part of text.split(/, (?=[A-Za-z ]+:)/)) {
    const colon = part.indexOf(":");
    if (colon < 0) continue;
    const kind = part.slice(0, colon);
    let value = part.slice(colon + 1);
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        // left as written
      }
    }
    if (kind === "URI") out.uris.push(value);
    else if (kind === "DNS") out.dnsNames.push(value);
    else if (kind === "IP Address") out.ipAddresses.push(value);
  }
  return out;
}
