import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import type { CryptoConfig } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { hashFields } from "../common/hash.ts";
import type { Db, Queryable } from "../storage/db.ts";
import type { PrivateKeyProtection } from "./key-store.ts";
import { type KeyPurpose, keyPairFromPrivateKey } from "./keys.ts";

/**
 * Private keys encrypted at rest (docs/keys.md), as Canton's KMS-wrapped store keeps them: each
 * PKCS8 key is sealed with AES-256-GCM under a wrapper key that lives in a file outside the
 * database, so a stolen dump does not give the keys away. The database keeps the wrapper key's
 * fingerprint beside each row (never the key); backups record it in their manifest.
 *
 * Sealed form: version byte 1 ‖ 12-byte nonce ‖ ciphertext ‖ 16-byte tag. The associated data binds
 * the ciphertext to its key's fingerprint, so a sealed key copied onto another row does not open.
 */

export interface WrapperKey {
  /** `1220` + hex of a SHA-256 over a domain tag and the key: names the key without revealing it. */
  readonly fingerprint: string;
  readonly key: Buffer;
  /** The file it was read from. */
  readonly source: string;
}

const WRAPPER_KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const SEALED_VERSION = 1;

export function wrapperFingerprint(key: Buffer): string {
  return `1220${hashFields("lockstep/wrapper-key/v1", key).toString("hex")}`;
}

/**
 * A wrapper key file: 32 bytes as 64 hex digits (white space around them is ignored). A relative
 * path is the caller's, from the process's directory; loadConfig makes the config's absolute.
 */
export function loadWrapperKey(path: string): WrapperKey {
  const source = resolve(path);
  let text: string;
  try {
    text = readFileSync(source, "utf8").trim();
  } catch (error) {
    throw new LockstepError("WRAPPER_KEY_FILE_INVALID", { path: source, reason: (error as Error).message });
  }
  if (!/^[0-9a-fA-F]{64}$/.test(text)) {
    throw new LockstepError("WRAPPER_KEY_FILE_INVALID", {
      path: source,
      reason: `it must hold ${WRAPPER_KEY_BYTES} bytes as 64 hex digits`,
    });
  }
  const key = Buffer.from(text, "hex");
  return { fingerprint: wrapperFingerprint(key), key, source };
}

/** Writes a fresh wrapper key file readable by its owner only; refuses to overwrite one. */
export function generateWrapperKeyFile(path: string): WrapperKey {
  const source = resolve(path);
  const key = randomBytes(WRAPPER_KEY_BYTES);
  try {
    writeFileSync(source, `${key.toString("hex")}\n`, { mode: 0o600, flag: "wx" });
  } catch (error) {
    throw new LockstepError("WRAPPER_KEY_FILE_INVALID", { path: source, reason: (error as Error).message });
  }
  return { fingerprint: wrapperFingerprint(key), key, source };
}

function associatedData(keyFingerprint: string): Buffer {
  return hashFields("lockstep/private-key/v1", keyFingerprint);
}

export function sealPrivateKey(wrapper: WrapperKey, keyFingerprint: string, pkcs8: Buffer): Buffer {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", wrapper.key, nonce);
  cipher.setAAD(associatedData(keyFingerprint));
  const ciphertext = Buffer.concat([cipher.update(pkcs8), cipher.final()]);
  return Buffer.concat([Buffer.from([SEALED_VERSION]), nonce, ciphertext, cipher.getAuthTag()]);
}

export function openPrivateKey(wrapper: WrapperKey, keyFingerprint: string, sealed: Buffer): Buffer {
  if (sealed.length < 1 + NONCE_BYTES + TAG_BYTES || sealed[0] !== SEALED_VERSION) {
    throw new LockstepError("INTERNAL_ERROR", {
      details: `sealed private key ${keyFingerprint} is malformed`,
    });
  }
  const nonce = sealed.subarray(1, 1 + NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", wrapper.key, nonce);
  decipher.setAAD(associatedData(keyFingerprint));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([
      decipher.update(sealed.subarray(1 + NONCE_BYTES, sealed.length - TAG_BYTES)),
      decipher.final(),
    ]);
  } catch {
    throw new LockstepError("INTERNAL_ERROR", {
      details: `sealed private key ${keyFingerprint} does not open under wrapper key ${wrapper.fingerprint}: tampered or mislabelled`,
    });
  }
}

interface SealedRow {
  fingerprint: string;
  purpose: KeyPurpose;
  private_key: Buffer;
  wrapper_fingerprint: string | null;
}

export interface WrapperKeyRecord {
  fingerprint: string;
  state: "active" | "retired";
  source: string;
  createdAt: Date;
  retiredAt: Date | null;
}

/**
 * A node's wrapper keys: seals under `current` (null: keys in plain), opens under any key it holds
 * (the current and the config's previous ones). Mutable on purpose: `rewrap` switches a running
 * node to a new wrapper key, and the node's KeyStore, holding this object, follows at once.
 */
export class WrapperKeyring implements PrivateKeyProtection {
  private currentKey: WrapperKey | null;
  private readonly keys = new Map<string, WrapperKey>();

  constructor(
    readonly node: string,
    current: WrapperKey | null,
    previous: readonly WrapperKey[] = [],
  ) {
    this.currentKey = current;
    for (const key of [...previous, ...(current ? [current] : [])]) this.keys.set(key.fingerprint, key);
  }

  get current(): string | null {
    return this.currentKey?.fingerprint ?? null;
  }

  get currentWrapper(): WrapperKey | null {
    return this.currentKey;
  }

  get wrappers(): ReadonlyMap<string, WrapperKey> {
    return this.keys;
  }

  seal(keyFingerprint: string, pkcs8: Buffer): Buffer {
    return this.currentKey ? sealPrivateKey(this.currentKey, keyFingerprint, pkcs8) : pkcs8;
  }

  open(keyFingerprint: string, wrapper: string | null, stored: Buffer): Buffer {
    if (wrapper === null) return stored;
    const key = this.keys.get(wrapper);
    if (!key) throw this.missing([wrapper], new Map());
    return openPrivateKey(key, keyFingerprint, stored);
  }

  /**
   * At start (KeyStore.ensureInitialKeys, table locked): rows under a previous wrapper key, or in
   * plain, are sealed under the current one, so the store is under one key again and the config's
   * previous keys are only needed for older backup sets. A row under a key not configured refuses
   * the start (MISSING_WRAPPER_KEY) before the node signs anything.
   */
  async settle(tx: Queryable): Promise<void> {
    await this.resealAll(tx, this.currentKey);
  }

  /**
   * Switches the running node to `next` (RewrapPrivateKeys): every row not yet under it is sealed
   * under it in one transaction, which the backup's snapshot then sees whole (node-position.ts).
   * Idempotent. New rows are sealed under `next` from its commit on: the store's writers lock the
   * table before they seal (a straggler sealed under the former key is resealed at the next start,
   * and before that key is retired).
   */
  async rewrap(db: Db, next: WrapperKey): Promise<{ rewrapped: number; previous: string | null }> {
    const before = this.currentKey;
    const known = this.keys.has(next.fingerprint);
    this.keys.set(next.fingerprint, next);
    try {
      const rewrapped = await db.transaction(
        async (tx) => {
          await tx.execute("LOCK TABLE crypto_private_keys IN SHARE ROW EXCLUSIVE MODE");
          const count = await this.resealAll(tx, next);
          this.currentKey = next;
          return count;
        },
        { synchronousCommit: true },
      );
      return { rewrapped, previous: before?.fingerprint ?? null };
    } catch (error) {
      this.currentKey = before;
      if (!known) this.keys.delete(next.fingerprint);
      throw error;
    }
  }

  /** Seals every row under `target` (null: only checks that every row opens); returns how many changed. */
  private async resealAll(tx: Queryable, target: WrapperKey | null): Promise<number> {
    const rows = await tx.query<SealedRow>(
      "SELECT fingerprint, purpose, private_key, wrapper_fingerprint FROM crypto_private_keys ORDER BY fingerprint",
    );
    const unknown = [
      ...new Set(rows.map((r) => r.wrapper_fingerprint).filter((w): w is string => w !== null)),
    ].filter((w) => !this.keys.has(w));
    if (unknown.length > 0) {
      const recorded = await tx.query<{ fingerprint: string; source: string }>(
        "SELECT fingerprint, source FROM crypto_wrapper_keys WHERE fingerprint = ANY($1::text[])",
        [unknown],
      );
      throw this.missing(unknown, new Map(recorded.map((r) => [r.fingerprint, r.source])));
    }
    if (target === null) return 0;
    const former = new Set<string>();
    let count = 0;
    for (const row of rows) {
      if (row.wrapper_fingerprint === target.fingerprint) continue;
      const pkcs8 = this.open(row.fingerprint, row.wrapper_fingerprint, row.private_key);
      // Sealing a row's bytes under a new key must not carry a wrong key along.
      if (keyPairFromPrivateKey(pkcs8, row.purpose).fingerprint !== row.fingerprint) {
        throw new LockstepError("INTERNAL_ERROR", {
          details: `private key store row ${row.fingerprint} does not match its private key`,
        });
      }
      await tx.execute(
        "UPDATE crypto_private_keys SET private_key = $2, wrapper_fingerprint = $3 WHERE fingerprint = $1",
        [row.fingerprint, sealPrivateKey(target, row.fingerprint, pkcs8), target.fingerprint],
      );
      if (row.wrapper_fingerprint !== null) former.add(row.wrapper_fingerprint);
      count++;
    }
    // The current key is active (again, if it was retired and is configured as current anyway);
    // where it was read is kept, so a later MISSING_WRAPPER_KEY can name the file.
    await tx.execute(
      `INSERT INTO crypto_wrapper_keys (fingerprint, state, source) VALUES ($1, 'active', $2)
       ON CONFLICT (fingerprint) DO UPDATE SET state = 'active', retired_at = NULL, source = EXCLUDED.source
       WHERE crypto_wrapper_keys.state <> 'active' OR crypto_wrapper_keys.source <> EXCLUDED.source`,
      [target.fingerprint, target.source],
    );
    for (const fingerprint of former) {
      await tx.execute(
        `INSERT INTO crypto_wrapper_keys (fingerprint, state, source) VALUES ($1, 'active', $2)
         ON CONFLICT (fingerprint) DO NOTHING`,
        [fingerprint, this.keys.get(fingerprint)?.source ?? ""],
      );
    }
    return count;
  }

  private missing(fingerprints: readonly string[], sources: ReadonlyMap<string, string>): LockstepError {
    const read = fingerprints
      .filter((fp) => sources.get(fp))
      .map((fp) => `${fingerprints.length > 1 ? `${fp} ` : ""}was read from ${sources.get(fp)}`);
    const configured =
      this.keys.size === 0
        ? "the node has no crypto.private-key-encryption"
        : `configured: ${[...this.keys.values()].map((k) => `${k.fingerprint} (${k.source})`).join(", ")}`;
    return new LockstepError("MISSING_WRAPPER_KEY", {
      node: this.node,
      fingerprint: fingerprints.join(", "),
      where: ` (${[...read, configured].join("; ")})`,
    });
  }
}

/** The wrapper keys that encrypted this node's store, current first, then newest first. */
export async function wrapperKeyRecords(q: Queryable, current: string | null): Promise<WrapperKeyRecord[]> {
  return q.query<WrapperKeyRecord>(
    `SELECT fingerprint, state, source, created_at AS "createdAt", retired_at AS "retiredAt"
     FROM crypto_wrapper_keys ORDER BY fingerprint = $1 DESC NULLS LAST, created_at DESC, fingerprint`,
    [current],
  );
}

/** Sealing under `current`, opening under it or any of `previous`; `node` is named in MISSING_WRAPPER_KEY. */
export function wrapperProtection(
  node: string,
  current: WrapperKey | null,
  previous: readonly WrapperKey[] = [],
): WrapperKeyring {
  return new WrapperKeyring(node, current, previous);
}

/**
 * The protection a node's config asks for: its wrapper keys, or plain without
 * crypto.private-key-encryption (a keyring all the same, so a running node can be switched to a
 * wrapper key by RewrapPrivateKeys). Paths are absolute once the config is loaded (config.ts).
 */
export function privateKeyProtection(node: string, crypto: CryptoConfig | undefined): WrapperKeyring {
  const encryption = crypto?.["private-key-encryption"];
  if (!encryption) return new WrapperKeyring(node, null);
  return new WrapperKeyring(
    node,
    loadWrapperKey(encryption["wrapper-key-file"]),
    encryption["previous-wrapper-key-files"].map(loadWrapperKey),
  );
}
