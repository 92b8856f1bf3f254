import { LockstepError } from "../common/errors.ts";

/**
 * Users and rights of the Ledger API (docs/security.md "Ledger API authorization"), as Canton's
 * user management: a token's `sub` names a user of the participant, and the user's rights decide
 * what the token may do. Pure: the store (user-store.ts) and the services call these.
 */

/** Canton's three rights that matter here (no identity providers, no CanReadAsAnyParty). */
export type UserRight =
  | { readonly kind: "participant-admin" }
  | { readonly kind: "can-act-as"; readonly party: string }
  | { readonly kind: "can-read-as"; readonly party: string };

export interface UserRecord {
  readonly id: string;
  /** "" for none. */
  readonly primaryParty: string;
}

/** What an authenticated call may do: the token's user and that user's rights at the call. */
export interface AuthContext {
  readonly userId: string;
  readonly admin: boolean;
  readonly actAs: ReadonlySet<string>;
  readonly readAs: ReadonlySet<string>;
  /** The token's `exp` in ms since the epoch; undefined when the token has none. */
  readonly expiresAtMs?: number;
}

// Canton's user id syntax (UserId in daml-lf data Ref: "[a-zA-Z0-9@^$.!`\-#+'~_|:()]{1,128}").
const USER_ID = /^[a-zA-Z0-9@^$.!`\-#+'~_|:()]{1,128}$/;
// A party id as the participant writes them (hint::namespace); checked loosely, as Canton's Party.
const PARTY = /^[a-zA-Z0-9:\-_ ]{1,255}$/;

/** The user created with the participant's schema, so an operator can issue the first admin token (Canton's). */
export const DEFAULT_ADMIN_USER = "participant_admin";

export function checkUserId(userId: string, field = "user_id"): string {
  if (!USER_ID.test(userId)) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `${field} "${userId.slice(0, 140)}" is not a user id: 1–128 characters of a-z, A-Z, 0-9 and @^$.!\`-#+'~_|:()`,
    });
  }
  return userId;
}

export function checkParty(party: string, field: string): string {
  if (!PARTY.test(party)) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `${field} "${party.slice(0, 260)}" is not a party id`,
    });
  }
  return party;
}

export function checkRight(right: UserRight): UserRight {
  if (right.kind !== "participant-admin") checkParty(right.party, `right ${right.kind}`);
  return right;
}

/** One string per right, for sets, storage and display (`ParticipantAdmin`, `CanActAs(alice::…)`). */
export function rightKey(right: UserRight): string {
  switch (right.kind) {
    case "participant-admin":
      return "ParticipantAdmin";
    case "can-act-as":
      return `CanActAs(${right.party})`;
    case "can-read-as":
      return `CanReadAs(${right.party})`;
  }
}

export function authContextOf(
  userId: string,
  rights: readonly UserRight[],
  expiresAtMs?: number,
): AuthContext {
  const actAs = new Set<string>();
  const readAs = new Set<string>();
  let admin = false;
  for (const r of rights) {
    if (r.kind === "participant-admin") admin = true;
    else if (r.kind === "can-act-as") actAs.add(r.party);
    else readAs.add(r.party);
  }
  return { userId, admin, actAs, readAs, ...(expiresAtMs === undefined ? {} : { expiresAtMs }) };
}

function denied(auth: AuthContext, action: string, reason: string): LockstepError {
  return new LockstepError("PERMISSION_DENIED", { userId: auth.userId, action, reason });
}

/** Party allocation, user management, pruning (Canton: requireAdminClaims). */
export function requireAdmin(auth: AuthContext, action: string): void {
  if (!auth.admin) throw denied(auth, action, "it lacks the ParticipantAdmin right");
}

/**
 * A submission: every act-as party needs CanActAs, every read-as party CanReadAs or CanActAs, and
 * the command's user id must be the token's (Canton's requireActAndReadClaimsForParties and
 * requireMatchingUserId; Canton fills an empty user id from the token, so do we: the return value).
 */
export function authorizeSubmission(
  auth: AuthContext,
  command: { userId: string; actAs: readonly string[]; readAs?: readonly string[] },
): string {
  const userId = matchingUserId(auth, command.userId, "submit a command");
  const missingAct = command.actAs.filter((p) => !auth.actAs.has(p));
  if (missingAct.length > 0)
    throw denied(auth, "submit a command", `it lacks CanActAs for ${missingAct.join(", ")}`);
  requireRead(auth, command.readAs ?? [], "submit a command reading as");
  return userId;
}

/** Reading parties' data: CanReadAs or CanActAs for each (Canton's requireReadClaimsForAllParties). */
export function requireRead(auth: AuthContext, parties: readonly string[], action: string): void {
  const missing = missingReadRights(auth, parties);
  if (missing.length > 0) throw denied(auth, action, `it lacks CanReadAs for ${missing.join(", ")}`);
}

/** The parties `auth` may not read (neither CanReadAs nor CanActAs). */
export function missingReadRights(auth: AuthContext, parties: readonly string[]): string[] {
  return parties.filter((p) => !auth.readAs.has(p) && !auth.actAs.has(p));
}

/**
 * Why an open stream reading `parties` as `userId` is no longer authorized by the user's current
 * rights (`current`, undefined when the user was deleted), or undefined while they still cover it.
 * Canton closes a stream on any change of the user's rights (UserRightsChangeAsyncChecker compares
 * the whole claim set); we know what the stream reads, so only a change that uncovers it closes it.
 */
export function staleStreamReason(
  userId: string,
  current: AuthContext | undefined,
  parties: readonly string[],
): string | undefined {
  if (!current) return `user ${userId} no longer exists`;
  const missing = missingReadRights(current, parties);
  if (missing.length > 0)
    return `user ${userId} no longer has CanReadAs or CanActAs for ${missing.join(", ")}`;
  return undefined;
}

/** The request's user id must be the token's; empty means the token's (Canton's). */
export function matchingUserId(auth: AuthContext, requested: string, action: string): string {
  if (requested === "" || requested === auth.userId) return auth.userId;
  throw denied(auth, action, `the request names user ${requested}, the token user ${auth.userId}`);
}
