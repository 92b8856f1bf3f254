import { readFileSync } from "node:fs";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  errors as joseErrors,
  jwtVerify,
} from "jose";
import type { LedgerApiAuthConfig } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { type AuthContext, authContextOf, type UserRight } from "./user-rights.ts";

/**
 * Authentication of Ledger API calls (docs/security.md "Ledger API authorization"): Canton's user
 * tokens, a JWT whose `sub` is the user id, signed HS256 with a shared secret or RS256/ES256 with a
 * key of a JWKS (file or URL). Canton's token rules kept here:
 * * audience-based: with `audience` configured, `aud` must contain it;
 * * scope-based: else `scope` must contain `daml_ledger_api` (Canton's default target scope);
 * * `exp`, when present, is enforced (ACCESS_TOKEN_EXPIRED), also on open streams; `iss` when configured.
 * The user's rights are read from the participant's database at every call, so a revoke takes
 * effect on the next call (Canton caches them for a short while; ours is the stricter reading).
 */

/** Canton's scope for scope-based user tokens. */
export const LEDGER_API_SCOPE = "daml_ledger_api";

/** What authentication needs of the user store. */
export interface UserRightsSource {
  rightsIfExists(userId: string): Promise<UserRight[] | undefined>;
}

export interface LedgerApiAuthenticator {
  /** undefined when auth is off: every call is allowed. */
  authenticate(authorization: string | null): Promise<AuthContext | undefined>;
}

/** A participant whose config names no auth is refused, naming the choices (issue 15: off only by explicit config). */
export function requireAuthConfig(
  participant: string,
  auth: LedgerApiAuthConfig | undefined,
): LedgerApiAuthConfig {
  if (auth) return auth;
  throw new LockstepError("CONFIG_INVALID", {
    details: `participant ${participant} has no ledger-api.auth: set \`ledger-api: { auth: { type: hs256, secret-file: FILE } }\` (or type: jwks with jwks-file / jwks-url) to require tokens, or \`ledger-api: { auth: { type: off } }\` to serve the Ledger API to anyone who can reach the port`,
  });
}

export function ledgerApiAuthenticator(
  config: LedgerApiAuthConfig,
  users: UserRightsSource,
): LedgerApiAuthenticator {
  if (config.type === "off") return { authenticate: async () => undefined };
  const verifier = tokenVerifier(config);
  return {
    async authenticate(authorization) {
      const payload = await verifier(bearerToken(authorization));
      const userId = payload.sub;
      if (typeof userId !== "string" || userId === "")
        throw new LockstepError("UNAUTHENTICATED", { reason: "the token has no `sub` (the user id)" });
      const rights = await users.rightsIfExists(userId);
      // Canton answers a token of an unknown user PERMISSION_DENIED: it authenticated, it may do nothing.
      if (rights === undefined)
        throw new LockstepError("PERMISSION_DENIED", {
          userId,
          action: "use the Ledger API",
          reason: "no such user on this participant",
        });
      return authContextOf(userId, rights, payload.exp === undefined ? undefined : payload.exp * 1000);
    },
  };
}

function bearerToken(authorization: string | null): string {
  if (!authorization)
    throw new LockstepError("UNAUTHENTICATED", { reason: "no access token (Authorization header)" });
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  if (!match?.[1])
    throw new LockstepError("UNAUTHENTICATED", {
      reason: "the Authorization header is not `Bearer <token>`",
    });
  return match[1];
}

type Verifier = (token: string) => Promise<JWTPayload>;

function tokenVerifier(config: Exclude<LedgerApiAuthConfig, { type: "off" }>): Verifier {
  const options = {
    ...(config.audience ? { audience: config.audience } : {}),
    ...(config.issuer ? { issuer: config.issuer } : {}),
  };
  let verify: (token: string) => Promise<{ payload: JWTPayload }>;
  if (config.type === "hs256") {
    const secret = readSecret(config["secret-file"]);
    verify = (token) => jwtVerify(token, secret, { ...options, algorithms: ["HS256"] });
  } else {
    const keys: JWTVerifyGetKey = config["jwks-url"]
      ? createRemoteJWKSet(new URL(config["jwks-url"]))
      : createLocalJWKSet(readJwks(config["jwks-file"] as string));
    verify = (token) => jwtVerify(token, keys, { ...options, algorithms: ["RS256", "ES256"] });
  }
  return async (token) => {
    let payload: JWTPayload;
    try {
      ({ payload } = await verify(token));
    } catch (error) {
      throw tokenError(error);
    }
    if (!config.audience && !scopes(payload).includes(LEDGER_API_SCOPE))
      throw new LockstepError("UNAUTHENTICATED", {
        reason: `the token's scope lacks ${LEDGER_API_SCOPE} (no audience is configured, so tokens must be scope-based)`,
      });
    return payload;
  };
}

function scopes(payload: JWTPayload): string[] {
  return typeof payload.scope === "string" ? payload.scope.split(" ") : [];
}

function tokenError(error: unknown): LockstepError {
  if (error instanceof joseErrors.JWTExpired) {
    const exp = error.payload.exp;
    return new LockstepError("ACCESS_TOKEN_EXPIRED", {
      expiredAt: exp === undefined ? "an earlier time" : new Date(exp * 1000).toISOString(),
    });
  }
  if (error instanceof joseErrors.JOSEError)
    return new LockstepError("UNAUTHENTICATED", {
      reason: `invalid token (${error.code}: ${error.message})`,
    });
  return new LockstepError("UNAUTHENTICATED", { reason: `invalid token (${(error as Error).message})` });
}

/** The shared secret: the file's bytes without a trailing newline (as `openssl rand -hex 32 > FILE` writes). */
export function readSecret(path: string): Uint8Array {
  let text: string;
  try {
    text = readFileSync(path, "utf8").replace(/\r?\n$/, "");
  } catch (error) {
    throw new LockstepError("CONFIG_INVALID", {
      details: `ledger-api.auth.secret-file ${path}: ${(error as Error).message}`,
    });
  }
  // RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
  if (Buffer.byteLength(text) < 32)
    throw new LockstepError("CONFIG_INVALID", {
      details: `ledger-api.auth.secret-file ${path}: an HS256 secret needs at least 32 bytes`,
    });
  return new TextEncoder().encode(text);
}

function readJwks(path: string): JSONWebKeySet {
  try {
    const jwks = JSON.parse(readFileSync(path, "utf8")) as JSONWebKeySet;
    if (!Array.isArray(jwks.keys)) throw new Error("no `keys` array");
    return jwks;
  } catch (error) {
    throw new LockstepError("CONFIG_INVALID", {
      details: `ledger-api.auth.jwks-file ${path}: ${(error as Error).message}`,
    });
  }
}

/**
 * Runs `items` until the token's expiry, then ends it with ACCESS_TOKEN_EXPIRED (Canton closes an
 * open stream when its token expires). `abort` stops the producer (the backend honours the signal).
 */
export async function* untilExpiry<T>(
  items: AsyncIterable<T>,
  expiresAtMs: number | undefined,
  abort: AbortController,
): AsyncIterable<T> {
  if (expiresAtMs === undefined) {
    yield* items;
    return;
  }
  const expired = () =>
    new LockstepError("ACCESS_TOKEN_EXPIRED", { expiredAt: new Date(expiresAtMs).toISOString() });
  let timer: NodeJS.Timeout | undefined;
  const expiry = new Promise<"expired">((resolve) => {
    timer = setTimeout(() => resolve("expired"), Math.max(0, expiresAtMs - Date.now()));
  });
  const iterator = items[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = await Promise.race([iterator.next(), expiry]);
      if (next === "expired") {
        abort.abort(expired());
        throw expired();
      }
      if (next.done) return;
      yield next.value;
    }
  } finally {
    clearTimeout(timer);
    // Ends the producer whatever ended the stream (expiry, the client leaving, an error).
    if (!abort.signal.aborted) abort.abort();
    void iterator.return?.()?.catch?.(() => {});
  }
}
