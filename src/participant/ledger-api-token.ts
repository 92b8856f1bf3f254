import { SignJWT } from "jose";
import type { LedgerApiAuthConfig } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { LEDGER_API_SCOPE, readSecret } from "./ledger-api-auth.ts";

/**
 * Issues a Canton user token for a participant whose auth is hs256, signed with its secret file:
 * `sub` the user, `scope` daml_ledger_api, `aud`/`iss` as configured, `exp` after `ttlMs`
 * (`lockstep ledger token`; an identity provider issues them for jwks). Whoever can read the secret
 * file can issue any token: keep it owner-only.
 */
export async function issueHs256Token(
  participant: string,
  auth: LedgerApiAuthConfig | undefined,
  userId: string,
  ttlMs: number,
): Promise<string> {
  if (auth?.type !== "hs256")
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `participant ${participant}'s ledger-api.auth is ${auth?.type ?? "not set"}, not hs256: tokens come from its identity provider`,
    });
  const jwt = new SignJWT({ scope: LEDGER_API_SCOPE })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(Math.floor((Date.now() + ttlMs) / 1000));
  if (auth.audience) jwt.setAudience(auth.audience);
  if (auth.issuer) jwt.setIssuer(auth.issuer);
  return jwt.sign(readSecret(auth["secret-file"]));
}
