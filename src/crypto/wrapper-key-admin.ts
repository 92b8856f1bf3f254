import { isAbsolute } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { LockstepError } from "../common/errors.ts";
import type {
  RetireWrapperKeyResponseSchema,
  RewrapPrivateKeysResponseSchema,
  WrapperKeyInfoSchema,
} from "../gen/lockstep/admin/v1/keys_pb.ts";
import { backupsTaken } from "../storage/backups-taken.ts";
import type { KeyAdminDeps } from "./key-admin.ts";
import { loadWrapperKey, WrapperKeyring, wrapperKeyRecords } from "./key-wrapping.ts";

/**
 * The node's side of wrapper key rotation (docs/keys.md "Private keys encrypted at rest"): switch
 * the store to a new wrapper key, then retire the former one only once a completed backup set
 * registered in the node holds the store under the new one. The rule mirrors signing key rotation:
 * until such a set exists, every set that could be restored needs the former key.
 */

function keyring(deps: KeyAdminDeps): WrapperKeyring {
  const protection = deps.keys.protection;
  if (!(protection instanceof WrapperKeyring)) {
    throw new LockstepError("INTERNAL_ERROR", {
      details: `${deps.node}'s key store was not built with nodeKeyStore: its wrapper key cannot change`,
    });
  }
  return protection;
}

/** Every wrapper key that encrypted the store, current first, with the registered safe sets sealed under it. */
export async function wrapperKeyInfos(
  deps: KeyAdminDeps,
): Promise<MessageInitShape<typeof WrapperKeyInfoSchema>[]> {
  const [records, backups] = await Promise.all([
    wrapperKeyRecords(deps.db, keyring(deps).current),
    backupsTaken(deps.db),
  ]);
  return records.map((r) => ({
    fingerprint: r.fingerprint,
    state: r.state,
    source: r.source,
    createdAt: r.createdAt.toISOString(),
    retiredAt: r.retiredAt?.toISOString() ?? "",
    // As for signing keys, a set found unsafe (restore refuses it without --force) does not count.
    backupSets: backups.filter((b) => b.safe && b.wrapperFingerprint === r.fingerprint).map((b) => b.setId),
  }));
}

/** Re-encrypts every private key under the wrapper key in `path` (read on this node's host). */
export async function rewrapPrivateKeys(
  deps: KeyAdminDeps,
  path: string,
): Promise<MessageInitShape<typeof RewrapPrivateKeysResponseSchema>> {
  if (!isAbsolute(path)) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `wrapper key file ${JSON.stringify(path)} must be an absolute path on ${deps.node}'s host`,
    });
  }
  const next = loadWrapperKey(path);
  const { rewrapped, previous } = await keyring(deps).rewrap(deps.db, next);
  if (rewrapped > 0 || previous !== next.fingerprint) {
    deps.logger.info(
      { wrapperKey: next.fingerprint, previous, rewrapped, source: next.source },
      "private keys re-encrypted under a new wrapper key",
    );
  }
  return {
    wrapperFingerprint: next.fingerprint,
    previousFingerprint: previous === next.fingerprint ? "" : (previous ?? ""),
    rewrapped,
  };
}

/**
 * Marks a former wrapper key retired: the node no longer needs it. Refused (KEY_NOT_BACKED_UP)
 * until a completed, safe backup registered in the node holds the store under the current wrapper key;
 * with force, done anyway and recorded with a warning.
 */
export async function retireWrapperKey(
  deps: KeyAdminDeps,
  fingerprint: string,
  force: boolean,
): Promise<MessageInitShape<typeof RetireWrapperKeyResponseSchema>> {
  const ring = keyring(deps);
  const current = ring.current;
  const record = (await wrapperKeyRecords(deps.db, current)).find((r) => r.fingerprint === fingerprint);
  if (!record) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `${fingerprint} is not a wrapper key of ${deps.node} (keys list shows them)`,
    });
  }
  if (record.state === "retired") return { alreadyRetired: true, warning: "" };
  if (fingerprint === current) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `${fingerprint} is ${deps.node}'s current wrapper key: re-encrypt under a new one first (lockstep keys rotate-wrapper)`,
    });
  }
  // A row sealed under the former key by a writer that raced the rewrap is brought over first.
  const left = await deps.db.one<{ count: number }>(
    "SELECT count(*)::int AS count FROM crypto_private_keys WHERE wrapper_fingerprint = $1",
    [fingerprint],
  );
  if (left.count > 0) {
    const currentKey = ring.currentWrapper;
    if (!currentKey) {
      throw new LockstepError("INVALID_ARGUMENT", {
        details: `${left.count} private key(s) of ${deps.node} are still under ${fingerprint}: it cannot be retired`,
      });
    }
    await ring.rewrap(deps.db, currentKey);
  }
  let warning = "";
  const backups = await backupsTaken(deps.db);
  if (!backups.some((b) => b.safe && b.wrapperFingerprint === current)) {
    const action = `retiring wrapper key ${fingerprint} (every registered set is sealed under an older wrapper key)`;
    if (!force) {
      throw new LockstepError("KEY_NOT_BACKED_UP", {
        node: deps.node,
        fingerprint: current ?? "(keys in plain)",
        action,
      });
    }
    warning = `retired wrapper key ${fingerprint} before any backup holds ${deps.node}'s store under ${current ?? "no wrapper key"}: every existing set still needs ${fingerprint} to restore (keep it under previous-wrapper-key-files)`;
    await deps.keys.recordOverride({ action: "retire-wrapper", fingerprint, warning });
    deps.logger.warn({ fingerprint, current }, warning);
  }
  await deps.db.execute(
    "UPDATE crypto_wrapper_keys SET state = 'retired', retired_at = now() WHERE fingerprint = $1 AND state = 'active'",
    [fingerprint],
  );
  deps.logger.info({ fingerprint, current }, "wrapper key retired");
  return { alreadyRetired: false, warning };
}
