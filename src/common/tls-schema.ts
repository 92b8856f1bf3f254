import { z } from "zod";

/**
 * Whether a node asks its clients for a certificate, as Canton's `client-auth` (TlsServerConfig,
 * https://docs.digitalasset.com/operate/3.3/howtos/secure/apis/tls.html): `none` never; `optional`
 * asks, and a certificate that is presented must chain to the node's `ca`; `require` refuses a client
 * without one at the handshake.
 */
export const CLIENT_AUTH = ["none", "optional", "require"] as const;
export type ClientAuth = (typeof CLIENT_AUTH)[number];

const file = z.string().min(1);

/**
 * A node's `tls`: `off` (cleartext on purpose) or its certificate (chain, PEM), its PKCS#8 private key,
 * and the CA bundle it trusts: clients' certificates are checked against it, and every client dialing
 * the node trusts it (Canton's cert-chain-file, private-key-file, trust-collection-file).
 */
export const nodeTlsSchema = z.union([
  z.literal("off"),
  z
    .object({
      cert: file,
      key: file,
      ca: file.optional(),
      "client-auth": z.enum(CLIENT_AUTH).optional(),
    })
    .strict(),
]);
export type NodeTlsConfig = z.output<typeof nodeTlsSchema>;
export type NodeTlsFiles = Exclude<NodeTlsConfig, "off">;

/** The certificate a client presents to nodes that ask for one (the CLI's; a node presents its own). */
const clientCert = z.object({ cert: file, key: file }).strict();

/**
 * The network's `tls`, the default of every node without its own: `off`; `auto` (Lockstep issues a
 * network CA, node certificates and a client certificate for the CLI under `<data-dir>/tls`);
 * or `{ auto?, ca?, client-auth?, client? }`.
 */
export const networkTlsSchema = z.union([
  z.literal("off"),
  z.literal("auto"),
  z
    .object({
      auto: z.boolean().default(false),
      ca: file.optional(),
      "client-auth": z.enum(CLIENT_AUTH).optional(),
      client: clientCert.optional(),
    })
    .strict(),
]);
export type NetworkTlsConfig = z.output<typeof networkTlsSchema>;
