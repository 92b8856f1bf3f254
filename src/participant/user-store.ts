import { LockstepError } from "../common/errors.ts";
import type { Db, Queryable } from "../storage/db.ts";
import type { Migration } from "../storage/migrations.ts";
import { DEFAULT_ADMIN_USER, rightKey, type UserRecord, type UserRight } from "./user-rights.ts";

/**
 * The Ledger API's users and their rights, in the participant's own database: a backup carries
 * them and a restore brings them back with the ledger they guard. Local state, like party
 * metadata: no sequenced event writes it.
 */
export const userManagementMigration: Migration = {
  version: 402,
  name: "ledger_api_users",
  // participant_admin with ParticipantAdmin exists from the start, as in Canton, so that the
  // operator can issue the first admin token without any other way in.
  sql: `
CREATE TABLE participant_users (
  user_id        text PRIMARY KEY,
  primary_party  text NOT NULL DEFAULT '',
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE participant_user_rights (
  user_id     text NOT NULL REFERENCES participant_users (user_id) ON DELETE CASCADE,
  right_kind  text NOT NULL CHECK (right_kind IN ('participant-admin', 'can-act-as', 'can-read-as')),
  -- '' for participant-admin.
  party       text NOT NULL DEFAULT '',
  PRIMARY KEY (user_id, right_kind, party)
);
INSERT INTO participant_users (user_id) VALUES ('${DEFAULT_ADMIN_USER}');
INSERT INTO participant_user_rights (user_id, right_kind) VALUES ('${DEFAULT_ADMIN_USER}', 'participant-admin');
`,
};

/** Canton's maximum page size for ListUsers. */
export const MAX_USERS_PAGE = 1000;

interface RightRow {
  right_kind: UserRight["kind"];
  party: string;
}

const toRight = (row: RightRow): UserRight =>
  row.right_kind === "participant-admin"
    ? { kind: "participant-admin" }
    : { kind: row.right_kind, party: row.party };

const partyOf = (right: UserRight): string => (right.kind === "participant-admin" ? "" : right.party);

/** Removes repeated rights, keeping the first of each (a request may name one twice). */
function distinct(rights: readonly UserRight[]): UserRight[] {
  const seen = new Map<string, UserRight>();
  for (const r of rights) if (!seen.has(rightKey(r))) seen.set(rightKey(r), r);
  return [...seen.values()];
}

export class UserStore {
  constructor(private readonly db: Db) {}

  async create(user: UserRecord, rights: readonly UserRight[]): Promise<UserRecord> {
    return this.db.transaction(async (tx) => {
      const inserted = await tx.execute(
        "INSERT INTO participant_users (user_id, primary_party) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [user.id, user.primaryParty],
      );
      if (inserted === 0) throw new LockstepError("USER_ALREADY_EXISTS", { userId: user.id });
      await insertRights(tx, user.id, distinct(rights));
      return user;
    });
  }

  async get(userId: string): Promise<UserRecord> {
    const row = await this.db.maybeOne<{ user_id: string; primary_party: string }>(
      "SELECT user_id, primary_party FROM participant_users WHERE user_id = $1",
      [userId],
    );
    if (!row) throw new LockstepError("USER_NOT_FOUND", { userId });
    return { id: row.user_id, primaryParty: row.primary_party };
  }

  /** undefined when there is no such user (authentication asks this on every call). */
  async rightsIfExists(userId: string): Promise<UserRight[] | undefined> {
    const rows = await this.db.query<RightRow & { user_id: string }>(
      `SELECT u.user_id, r.right_kind, r.party
         FROM participant_users u LEFT JOIN participant_user_rights r USING (user_id)
        WHERE u.user_id = $1
        ORDER BY r.right_kind, r.party`,
      [userId],
    );
    if (rows.length === 0) return undefined;
    return rows.filter((r) => r.right_kind !== null).map(toRight);
  }

  async rights(userId: string): Promise<UserRight[]> {
    const rights = await this.rightsIfExists(userId);
    if (rights === undefined) throw new LockstepError("USER_NOT_FOUND", { userId });
    return rights;
  }

  async delete(userId: string): Promise<void> {
    const deleted = await this.db.execute("DELETE FROM participant_users WHERE user_id = $1", [userId]);
    if (deleted === 0) throw new LockstepError("USER_NOT_FOUND", { userId });
  }

  /** Users after `afterUserId` (the page token), in id order; nextPageToken "" on the last page. */
  async list(afterUserId: string, pageSize: number): Promise<{ users: UserRecord[]; nextPageToken: string }> {
    const size = pageSize <= 0 || pageSize > MAX_USERS_PAGE ? MAX_USERS_PAGE : pageSize;
    const rows = await this.db.query<{ user_id: string; primary_party: string }>(
      "SELECT user_id, primary_party FROM participant_users WHERE user_id > $1 ORDER BY user_id LIMIT $2",
      [afterUserId, size + 1],
    );
    const users = rows.slice(0, size).map((r) => ({ id: r.user_id, primaryParty: r.primary_party }));
    return { users, nextPageToken: rows.length > size ? (users.at(-1)?.id ?? "") : "" };
  }

  /** Canton's GrantUserRights: answers with the rights the user did not have before. */
  async grant(userId: string, rights: readonly UserRight[]): Promise<UserRight[]> {
    return this.db.transaction(async (tx) => {
      await lockUser(tx, userId);
      return insertRights(tx, userId, distinct(rights));
    });
  }

  /** Canton's RevokeUserRights: answers with the rights the user had. */
  async revoke(userId: string, rights: readonly UserRight[]): Promise<UserRight[]> {
    return this.db.transaction(async (tx) => {
      await lockUser(tx, userId);
      const revoked: UserRight[] = [];
      for (const right of distinct(rights)) {
        const n = await tx.execute(
          "DELETE FROM participant_user_rights WHERE user_id = $1 AND right_kind = $2 AND party = $3",
          [userId, right.kind, partyOf(right)],
        );
        if (n > 0) revoked.push(right);
      }
      return revoked;
    });
  }
}

async function lockUser(tx: Queryable, userId: string): Promise<void> {
  const row = await tx.maybeOne("SELECT 1 FROM participant_users WHERE user_id = $1 FOR UPDATE", [userId]);
  if (!row) throw new LockstepError("USER_NOT_FOUND", { userId });
}

async function insertRights(
  tx: Queryable,
  userId: string,
  rights: readonly UserRight[],
): Promise<UserRight[]> {
  const granted: UserRight[] = [];
  for (const right of rights) {
    const n = await tx.execute(
      `INSERT INTO participant_user_rights (user_id, right_kind, party) VALUES ($1, $2, $3)
       ON CONFLICT DO NOTHING`,
      [userId, right.kind, partyOf(right)],
    );
    if (n > 0) granted.push(right);
  }
  return granted;
}
