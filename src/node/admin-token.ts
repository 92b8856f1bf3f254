import { createHash, timingSafeEqual } from "node:crypto";
import { createContextKey, type Interceptor } from "@connectrpc/connect";
import {
  adminTokenFile,
  ensureAdminTokenFile,
  isAdminProcedure,
  isAdminRevealed,
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

/**
 * Set by adminTokenInterceptor on an ADMIN_REVEALED call (an open one) when the caller proved to be
 * the admin: the handler then answers the part only the admin may see.
 */
export const adminCaller = createContextKey(false, {
  description: "the caller of an open call proved itself the admin (token or admin certificate)",
});

/** SHA-256 first, so tokens of any length compare in constant time (timingSafeEqual needs equal lengths). */
function digest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

/**
 * Server interceptor: admin calls (ADMIN_PROCEDURES) need `Authorization: Bearer <admin token>`,
 * compared in constant time, or an admin client certificate; ADMIN_REVEALED calls are answered
 * to anyone, their admin part to the admin only; everything else passes (the Ledger
 * API has its own tokens, members sign their requests; `GET /health` is not an RPC at all).
 */
export function adminTokenInterceptor(options: { node: string; token: string }): Interceptor {
  const expected = digest(options.token);
  return (next) => (req) => {
    const revealed = isAdminRevealed(req.service.typeName, req.method.name);
    if (!revealed && !isAdminProcedure(req.service.typeName, req.method.name)) return next(req);
    if (req.contextValues.get(adminAuthenticatedByCertificate)) {
      if (revealed) req.contextValues.set(adminCaller, true);
      return next(req);
    }
    const header = req.header.get("authorization");
    const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    const valid = match?.[1] !== undefined && timingSafeEqual(digest(match[1]), expected);
    if (revealed) {
      // An open call: answered either way, the admin's part only with the token. Not refused on a
      // wrong one, so a member whose host holds another token still learns its writer epoch.
      if (valid) req.contextValues.set(adminCaller, true);
      return next(req);
    }
    if (!valid)
      throw new LockstepError("ADMIN_UNAUTHENTICATED", {
        node: options.node,
        procedure: `${req.service.typeName}/${req.method.name}`,
        reason: match?.[1] ? "wrong admin token" : "no admin token (Authorization: Bearer …)",
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
