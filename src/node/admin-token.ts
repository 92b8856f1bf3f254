import { createHash, timingSafeEqual } from "node:crypto";
import { createContextKey, type Interceptor } from "@connectrpc/connect";
import {
  adminTokenFile,
  ensureAdminTokenFile,
  isAdminProcedure,
  registerAdminToken,
} from "../common/admin-credentials.ts";
import type { LockstepConfig } from "../common/config-schema.ts";
import { configNodes } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";

/**
 * Set to true (through the node server's context values) when the connection presented an admin
 * client certificate: such a call needs no token. The TLS setup owns that decision; this only reads it.
 */
export const adminAuthenticatedByCertificate = createContextKey(false, {
  description: "the caller proved itself with an admin client certificate",
});

/** SHA-256 first, so tokens of any length compare in constant time (timingSafeEqual needs equal lengths). */
function digest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

/**
 * Server interceptor: admin calls (ADMIN_PROCEDURES) need `Authorization: Bearer <admin token>`,
 * compared in constant time, or an admin client certificate; everything else passes (the Ledger
 * API has its own tokens, members sign their requests; `GET /health` is not an RPC at all).
 */
export function adminTokenInterceptor(options: { node: string; token: string }): Interceptor {
  const expected = digest(options.token);
  return (next) => (req) => {
    if (!isAdminProcedure(req.service.typeName, req.method.name)) return next(req);
    if (req.contextValues.get(adminAuthenticatedByCertificate)) return next(req);
    const procedure = `${req.service.typeName}/${req.method.name}`;
    const header = req.header.get("authorization");
    const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!match?.[1])
      throw new LockstepError("ADMIN_UNAUTHENTICATED", {
        node: options.node,
        procedure,
        reason: "no admin token (Authorization: Bearer …)",
      });
    if (!timingSafeEqual(digest(match[1]), expected))
      throw new LockstepError("ADMIN_UNAUTHENTICATED", {
        node: options.node,
        procedure,
        reason: "wrong admin token",
      });
    return next(req);
  };
}

/**
 * The network's admin token for a node process, created when absent, and registered so that this
 * process's own calls to the network's nodes (node-to-node admin calls, tests) carry it.
 */
export function nodeAdminToken(config: LockstepConfig, dataDir: string): string {
  const token = ensureAdminTokenFile(adminTokenFile(config, dataDir));
  registerNetworkAdminToken(config, () => token);
  return token;
}

/** Calls to the config's nodes (at their addresses, and `extra` host:ports) carry the token. */
export function registerNetworkAdminToken(
  config: LockstepConfig,
  resolve: () => string | undefined,
  extra: readonly string[] = [],
): void {
  const hostPorts = configNodes(config).map((entry) => new URL(nodeEndpoint(entry.config).url).host);
  registerAdminToken([...hostPorts, ...extra], resolve);
}
