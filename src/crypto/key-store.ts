import { LockstepError } from "../common/errors.ts";
import type { Db, Queryable } from "../storage/db.ts";
import { type KeyTransition, reconcileKeyStates, type StoredKeyState } from "./key-rotation.ts";
import {
  exportPrivateKey,
  generateKeyPair,
  type KeyPair,
  type KeyPurpose,
  keyPairFromPrivateKey,
} from "./keys.ts";

/**
 * Life of a key: `pending` (generated and stored, not yet announced in topology), `active` (in use),
 * `revoked` (kept, so that old backups and audits can still be explained, never used again).
 * Rotation (docs/design.md §4.5): generate → store pending → backup → announce → activate → revoke the old.
 */
export type KeyState = "pending" | "active" | "revoked";

/** A --force past the backup-before-announce/revoke/retire rule, as recorded in the node. */
export interface KeyOverride {
  readonly at: Date;
  readonly action: "announce" | "revoke" | "retire-wrapper";
  readonly fingerprint: string;
  readonly warning: string;
}

export interface StoredKey extends KeyPair {
  readonly state: KeyState;
  readonly createdAt: Date;
  readonly activatedAt: Date | null;
  readonly revokedAt: Date | null;
  /** The wrapper key the private key is encrypted under at rest; null when stored in plain. */
  readonly wrapperFingerprint: string | null;
}

/**
 * How private keys are kept at rest: in plain (PKCS8 DER), or sealed under a wrapper key kept
 * outside the database (key-wrapping.ts). The store calls it for every row it writes or reads.
 */
export interface PrivateKeyProtection {
  /** The wrapper key new rows are sealed under; null: they are stored in plain. */
  readonly current: string | null;
  /** The stored bytes for a key's PKCS8 DER, sealed under `current`. */
  seal(keyFingerprint: string, pkcs8: Buffer): Buffer;
  /** The PKCS8 DER of a stored row; throws MISSING_WRAPPER_KEY when that wrapper key is not at hand. */
  open(keyFingerprint: string, wrapperFingerprint: string | null, stored: Buffer): Buffer;
  /**
   * At start, with the table locked: brings every stored row under `current`, or refuses with
   * MISSING_WRAPPER_KEY when a row is under a wrapper key not at hand (key-wrapping.ts).
   */
  settle?(tx: Queryable): Promise<void>;
}

/** Keys stored in plain: what a node without crypto.private-key-encryption does. */
export const PLAIN_PROTECTION: PrivateKeyProtection = {
  current: null,
  seal: (_fingerprint, pkcs8) => pkcs8,
  open: (fingerprint, wrapperFingerprint, stored) => {
    if (wrapperFingerprint !== null) {
      throw new LockstepError("MISSING_WRAPPER_KEY", {
        node: "this node",
        fingerprint: wrapperFingerprint,
        where: ` (key ${fingerprint} is encrypted and the node has no crypto.private-key-encryption)`,
      });
    }
    return stored;
  },
};

interface KeyRow {
  fingerprint: string;
  purpose: KeyPurpose;
  state: KeyState;
  public_key: Buffer;
  private_key: Buffer;
  created_at: Date;
  activated_at: Date | null;
  revoked_at: Date | null;
  wrapper_fingerprint: string | null;
}

const COLUMNS =
  "fingerprint, purpose, state, public_key, private_key, created_at, activated_at, revoked_at, wrapper_fingerprint";

const ALLOWED_TRANSITIONS: Readonly<Record<KeyState, readonly KeyState[]>> = {
  pending: ["active", "revoked"],
  active: ["revoked"],
  revoked: [],
};

/**
 * The node's private keys, in its own database (table `crypto_private_keys`, see
 * key-store-migrations.ts), so that every backup of the node holds the keys it needs.
 */
export class KeyStore {
  /** Imported private keys by purpose and fingerprint (importedKey below). */
  private readonly imported: ImportedKeys = new Map();

  constructor(
    private readonly db: Db,
    readonly protection: PrivateKeyProtection = PLAIN_PROTECTION,
  ) {}

  /**
   * On the very first start (empty store) creates an active namespace key and an active signing key;
   * later returns the active ones. It never generates keys into a store that already has some: a
   * store without an active key (e.g. restored from a backup taken before a rotation) is an operator
   * matter, reported as NO_APPROPRIATE_SIGNING_KEY_IN_STORE rather than papered over with new keys.
   */
  async ensureInitialKeys(): Promise<{ namespace: KeyPair; signing: KeyPair }> {
    return this.db.transaction(async (tx) => {
      // Serializes two processes of the same node starting on an empty store at once.
      await tx.execute("LOCK TABLE crypto_private_keys IN SHARE ROW EXCLUSIVE MODE");
      // Every node kind passes here at start, before it signs: the store is put under the
      // configured wrapper key, or the start is refused.
      await this.protection.settle?.(tx);
      const { count } = await tx.one<{ count: number }>(
        "SELECT count(*)::int AS count FROM crypto_private_keys",
      );
      if (count === 0) {
        const namespace = generateKeyPair("namespace");
        const signing = generateKeyPair("signing");
        await insertKey(tx, namespace, "active", this.protection);
        await insertKey(tx, signing, "active", this.protection);
        return { namespace, signing };
      }
      return {
        namespace: await this.requireActive(tx, "namespace"),
        signing: await this.requireActive(tx, "signing"),
      };
    });
  }

  /** The newest active signing key (during a rotation the new one is used as soon as it is active). */
  async activeSigningKey(): Promise<KeyPair> {
    return this.requireActive(this.db, "signing");
  }

  async namespaceKey(): Promise<KeyPair> {
    return this.requireActive(this.db, "namespace");
  }

  /** All keys in every state, oldest first. */
  async list(): Promise<StoredKey[]> {
    const rows = await this.db.query<KeyRow>(
      `SELECT ${COLUMNS} FROM crypto_private_keys ORDER BY created_at, fingerprint`,
    );
    return rows.map((row) => toStoredKey(row, this.protection, this.imported));
  }

  /**
   * The pending signing key (the one a rotation under way announces next), generating and storing
   * one if there is none; `generated` tells which. Idempotent, also across processes: a rotation
   * rerun after an interruption finds the key it generated, never a second one.
   */
  async pendingSigningKey(): Promise<{ key: StoredKey; generated: boolean }> {
    return this.db.transaction(async (tx) => {
      await tx.execute("LOCK TABLE crypto_private_keys IN SHARE ROW EXCLUSIVE MODE");
      const pending = await tx.maybeOne<KeyRow>(
        `SELECT ${COLUMNS} FROM crypto_private_keys WHERE purpose = 'signing' AND state = 'pending'
         ORDER BY created_at, fingerprint LIMIT 1`,
      );
      if (pending) return { key: toStoredKey(pending, this.protection, this.imported), generated: false };
      const pair = generateKeyPair("signing");
      await insertKey(tx, pair, "pending", this.protection);
      const row = await tx.one<KeyRow>(`SELECT ${COLUMNS} FROM crypto_private_keys WHERE fingerprint = $1`, [
        pair.fingerprint,
      ]);
      return { key: toStoredKey(row, this.protection, this.imported), generated: true };
    });
  }

  async get(fingerprint: string): Promise<StoredKey | undefined> {
    const row = await this.db.maybeOne<KeyRow>(
      `SELECT ${COLUMNS} FROM crypto_private_keys WHERE fingerprint = $1`,
      [fingerprint],
    );
    return row && toStoredKey(row, this.protection, this.imported);
  }

  /** Stores a key; false (and no change) when a key with this fingerprint is already stored. */
  async add(pair: KeyPair, state: KeyState = "pending"): Promise<boolean> {
    return (await insertKey(this.db, pair, state, this.protection)) === 1;
  }

  /**
   * Brings the signing keys' states in line with the fingerprints topology lists for the member now
   * (key-rotation.ts reconcileKeyStates); returns what changed.
   */
  async reconcile(listed: readonly string[]): Promise<KeyTransition[]> {
    const stored = await this.db.query<StoredKeyState>(
      "SELECT fingerprint, purpose, state FROM crypto_private_keys ORDER BY created_at, fingerprint",
    );
    const transitions = reconcileKeyStates(stored, new Set(listed));
    for (const t of transitions) await this.setState(t.fingerprint, t.to);
    return transitions;
  }

  /** Records a --force past the backup rule, with its warning (keys list shows them). */
  async recordOverride(override: Omit<KeyOverride, "at">): Promise<void> {
    await this.db.execute(
      "INSERT INTO crypto_key_overrides (action, fingerprint, warning) VALUES ($1, $2, $3)",
      [override.action, override.fingerprint, override.warning],
    );
  }

  async overrides(): Promise<KeyOverride[]> {
    return this.db.query<KeyOverride>(
      "SELECT at, action, fingerprint, warning FROM crypto_key_overrides ORDER BY id",
    );
  }

  /** Moves a key forward in its life: pending → active → revoked (or pending → revoked). */
  async setState(fingerprint: string, state: KeyState): Promise<void> {
    await this.db.transaction(async (tx) => {
      const row = await tx.maybeOne<{ state: KeyState }>(
        "SELECT state FROM crypto_private_keys WHERE fingerprint = $1 FOR UPDATE",
        [fingerprint],
      );
      if (!row) throw new LockstepError("SECRET_KEY_NOT_IN_STORE", { fingerprint });
      if (row.state === state) return;
      if (!ALLOWED_TRANSITIONS[row.state].includes(state)) {
        throw new LockstepError("INVALID_ARGUMENT", {
          details: `key ${fingerprint} is ${row.state} and cannot become ${state}`,
        });
      }
      await tx.execute(
        `UPDATE crypto_private_keys SET state = $2::text,
           activated_at = CASE WHEN $2::text = 'active' THEN now() ELSE activated_at END,
           revoked_at = CASE WHEN $2::text = 'revoked' THEN now() ELSE revoked_at END
         WHERE fingerprint = $1`,
        [fingerprint, state],
      );
    });
  }

  private async requireActive(q: Queryable, purpose: KeyPurpose): Promise<KeyPair> {
    const row = await q.maybeOne<KeyRow>(
      `SELECT ${COLUMNS} FROM crypto_private_keys WHERE purpose = $1 AND state = 'active'
       ORDER BY activated_at DESC NULLS LAST, created_at DESC, fingerprint LIMIT 1`,
      [purpose],
    );
    if (!row)
      throw new LockstepError("NO_APPROPRIATE_SIGNING_KEY_IN_STORE", { purpose, database: this.db.database });
    return toStoredKey(row, this.protection, this.imported);
  }
}

async function insertKey(
  q: Queryable,
  pair: KeyPair,
  state: KeyState,
  protection: PrivateKeyProtection,
): Promise<number> {
  const sealed = protection.seal(pair.fingerprint, exportPrivateKey(pair.privateKey));
  return q.execute(
    `INSERT INTO crypto_private_keys
       (fingerprint, purpose, state, public_key, private_key, wrapper_fingerprint, activated_at, revoked_at)
     VALUES ($1, $2, $3, $4, $5, $6,
             CASE WHEN $3::text = 'active' THEN now() END, CASE WHEN $3::text = 'revoked' THEN now() END)
     ON CONFLICT (fingerprint) DO NOTHING`,
    [pair.fingerprint, pair.purpose, state, pair.publicKey, sealed, protection.current],
  );
}

/**
 * Imported private keys by fingerprint (and purpose): importing the PKCS8 bytes into a KeyObject
 * (and opening a sealed row) costs more than the Ed25519 signature itself, and the active key is
 * read for every signature. Keyed by fingerprint, so a rotated key is a new entry; an entry is used
 * only for the very same stored bytes, so a row whose bytes differ is opened (and checked) afresh.
 * Per store, so that one store's wrapper key never opens a row for another.
 */
type ImportedKeys = Map<string, { stored: Buffer; pair: KeyPair }>;
const IMPORTED_KEYS_MAX = 64;

function importStoredKey(row: KeyRow, protection: PrivateKeyProtection, cache: ImportedKeys): KeyPair {
  const cacheKey = `${row.purpose} ${row.fingerprint}`;
  const cached = cache.get(cacheKey);
  if (cached?.stored.equals(row.private_key)) return cached.pair;
  const pkcs8 = protection.open(row.fingerprint, row.wrapper_fingerprint, row.private_key);
  const pair = keyPairFromPrivateKey(pkcs8, row.purpose);
  if (cache.size >= IMPORTED_KEYS_MAX) cache.clear();
  cache.set(cacheKey, { stored: Buffer.from(row.private_key), pair });
  return pair;
}

function toStoredKey(row: KeyRow, protection: PrivateKeyProtection, cache: ImportedKeys): StoredKey {
  const pair = importStoredKey(row, protection, cache);
  // A row whose private key does not match its fingerprint would sign under a wrong identity.
  if (pair.fingerprint !== row.fingerprint || !pair.publicKey.equals(row.public_key)) {
    throw new LockstepError("INTERNAL_ERROR", {
      details: `private key store row ${row.fingerprint} does not match its private key`,
    });
  }
  return {
    ...pair,
    state: row.state,
    createdAt: row.created_at,
    activatedAt: row.activated_at,
    revokedAt: row.revoked_at,
    wrapperFingerprint: row.wrapper_fingerprint,
  };
}
