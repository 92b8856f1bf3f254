import { readFileSync } from "node:fs";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  type FetchImplementation,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  errors as joseErrors,
  jwtVerify,
} from "jose";
import type { LedgerApiAuthConfig } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { expiryText } from "./ledger-api-stream-watch.ts";
import { type AuthContext, authContextOf, checkUserId, type UserRight } from "./user-rights.ts";

/**
 * Authentication of Ledger API calls (docs/security.md "Ledger API authorization"): Canton's user
 * tokens, a JWT whose `sub` is the user id, signed HS256 with a shared secret or RS256/ES256 with a
 * key of a JWKS (file or URL). Canton's token rules kept here:
 * * audience-based: with `audience` configured, `aud` must contain it;
 * * scope-based: else `scope` must contain `daml_ledger_api` (Canton's default target scope);
 * * `exp`, when present, is enforced (ACCESS_TOKEN_EXPIRED), also on open streams; `iss` when configured.
 * The user's rights are read from the participant's database at every call, so a revoke takes
 * effect on the next call (Canton caches them for a short while; ours is the stricter reading), and
 * re-read by open streams (reload, ledger-api-stream-watch.ts).
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
  /** The same caller with the user's rights as they are now; undefined when the user is gone. */
  reload(auth: AuthContext): Promise<AuthContext | undefined>;
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
  if (config.type === "off") return { authenticate: async () => undefined, reload: async (auth) => auth };
  const verifier = tokenVerifier(config);
  return {
    async reload(auth) {
      const rights = await users.rightsIfExists(auth.userId);
      return rights === undefined ? undefined : authContextOf(auth.userId, rights, auth.expiresAtMs);
    },
    async authenticate(authorization) {
      const payload = await verifier(bearerToken(authorization));
      const userId = payload.sub;
      if (typeof userId !== "string" || userId === "")
        throw new LockstepError("UNAUTHENTICATED", { reason: "the token has no `sub` (the user id)" });
      // A `sub` that is no user id (a NUL byte, 1 KiB of text) is refused before the database is
      // asked: Canton's UserBasedAuthorizationInterceptor.getUserId, Ref.UserId.fromString failing
      // → INVALID_ARGUMENT ("token …").
      checkUserId(userId, "the token's sub");
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
      ? createRemoteJWKSet(new URL(config["jwks-url"]), {
          timeoutDuration: JWKS_TIMEOUT_MS,
          [customFetch]: jwksFetch(config["jwks-url"]),
        })
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
    // Canton verifies with java-jwt, which refuses a token issued in the future (its IssuedAt check,
    // leeway 0 unless configured); jose checks `iat` only with maxTokenAge, so we do it here.
    if (typeof payload.iat === "number" && payload.iat > Date.now() / 1000)
      throw new LockstepError("UNAUTHENTICATED", {
        reason: `the token's iat (${payload.iat} s since the epoch) is in the future`,
      });
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
  if (error instanceof LockstepError) return error;
  if (error instanceof joseErrors.JWTExpired) {
    const exp = error.payload.exp;
    return new LockstepError("ACCESS_TOKEN_EXPIRED", {
      expiredAt: exp === undefined ? "an earlier time" : expiryText(exp * 1000),
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

/** How long a fetch of the JWKS URL may take (jose's default). */
const JWKS_TIMEOUT_MS = 5_000;

/**
 * jose's fetch of a JWKS URL (createRemoteJWKSet: JWKS_TIMEOUT_MS, keys cached 10 min, refetched for an
 * unknown `kid` at most every 30 s), with every failure to get a key set — unreachable, a timeout,
 * not 200, not a JWKS — thrown as JWKS_UNAVAILABLE: the token was not judged, so it is not
 * UNAUTHENTICATED. jose passes our error through (it rewraps only a TimeoutError, which we catch).
 */
function jwksFetch(url: string): FetchImplementation {
  const unavailable = (reason: string, cause?: unknown) =>
    new LockstepError("JWKS_UNAVAILABLE", { url, reason }, { cause });
  return async (href, options) => {
    let response: Response;
    let text: string;
    try {
      response = await fetch(href, options);
      text = await response.text();
    } catch (error) {
      const e = error as Error & { cause?: { code?: string } };
      const reason =
        e.name === "TimeoutError" ? `no answer within ${JWKS_TIMEOUT_MS} ms` : (e.cause?.code ?? e.message);
      throw unavailable(reason, error);
    }
    if (response.status !== 200) throw unavailable(`HTTP ${response.status}`);
    let jwks: unknown;
    try {
      jwks = JSON.parse(text);
    } catch {
      throw unavailable("the answer is not JSON");
    }
    const keys = (jwks as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === "object" && k !== null && !Array.isArray(k)))
      throw unavailable("the answer is not a JSON Web Key Set (no `keys` array of objects)");
    return new Response(text, { status: 200, headers: { "content-type": "application/json" } });
  };
}
