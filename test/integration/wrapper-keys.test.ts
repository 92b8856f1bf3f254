import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { ErrorCodeName } from "../../src/common/error-codes.ts";
import { isLockstepError } from "../../src/common/errors.ts";
import { silentLogger } from "../../src/common/logging.ts";
import type { KeyAdminDeps } from "../../src/crypto/key-admin.ts";
import type { OwnTopology } from "../../src/crypto/key-rotation.ts";
import { KeyStore } from "../../src/crypto/key-store.ts";
import { keyStoreMigrations } from "../../src/crypto/key-store-migrations.ts";
import {
  generateWrapperKeyFile,
  openPrivateKey,
  privateKeyProtection,
  type WrapperKey,
  WrapperKeyring,
} from "../../src/crypto/key-wrapping.ts";
import { exportPrivateKey, generateKeyPair, sign, verify } from "../../src/crypto/keys.ts";
import { retireWrapperKey, rewrapPrivateKeys, wrapperKeyInfos } from "../../src/crypto/wrapper-key-admin.ts";
import { nodeStateMigrations } from "../../src/node/node-state.ts";
import { registerBackupTaken } from "../../src/storage/backups-taken.ts";
import type { Db } from "../../src/storage/db.ts";
import { runMigrations } from "../../src/storage/migrations.ts";
import { createTestDb, startTestPostgres } from "../support/postgres.ts";

// The wrapper key side of the key store on real PostgreSQL: what a node does at start (settle) and
// what RewrapPrivateKeys / RetireWrapperKey do, below the CLI (test/scenarios/encrypted-keys.test.ts).

const pg = await startTestPostgres();
const dir = mkdtempSync(join(tmpdir(), "lockstep-wrapper-keys-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
const wrapperKey = (): WrapperKey => generateWrapperKeyFile(join(dir, `w${++files}.key`));

const is =
  (code: ErrorCodeName, ...texts: string[]) =>
  (error: unknown) =>
    isLockstepError(error, code) && texts.every((t) => error.message.includes(t));

async function freshDb(): Promise<Db> {
  const db = await createTestDb(pg, "wrap");
  await runMigrations(db, "participant", [...nodeStateMigrations, ...keyStoreMigrations]);
  return db;
}

interface Row {
  fingerprint: string;
  private_key: Buffer;
  wrapper_fingerprint: string | null;
}

const rows = (db: Db) =>
  db.query<Row>("SELECT fingerprint, private_key, wrapper_fingerprint FROM crypto_private_keys ORDER BY 1");

function deps(db: Db, keys: KeyStore): KeyAdminDeps {
  // The wrapper key calls never touch topology.
  return {
    node: "participant1",
    synchronizer: "sync1",
    db,
    keys,
    topology: {} as OwnTopology,
    logger: silentLogger(),
  } as KeyAdminDeps;
}

async function registerSet(
  db: Db,
  setId: string,
  wrapperFingerprint: string | null,
  safe = true,
): Promise<void> {
  await registerBackupTaken(db, {
    setId,
    repository: "/backups",
    takenAt: new Date(),
    keyFingerprints: [],
    position: {},
    safe,
    wrapperFingerprint,
  });
}

test("at start the store goes under the configured wrapper key once; a key not configured refuses the start", async () => {
  const db = await freshDb();
  const a = wrapperKey();
  const b = wrapperKey();
  const initial = await new KeyStore(db, privateKeyProtection("participant1", {})).ensureInitialKeys();
  const plain = new Map([initial.namespace, initial.signing].map((k) => [k.fingerprint, k]));
  assert.deepEqual(
    (await rows(db)).map((r) => r.wrapper_fingerprint),
    [null, null],
  );

  // Plain → encrypted: the config now names a wrapper key.
  await new KeyStore(db, new WrapperKeyring("participant1", a)).ensureInitialKeys();
  for (const row of await rows(db)) {
    assert.equal(row.wrapper_fingerprint, a.fingerprint);
    const pkcs8 = exportPrivateKey(plain.get(row.fingerprint)?.privateKey as never);
    assert.equal(row.private_key.includes(pkcs8.subarray(pkcs8.length - 32)), false, "no seed in the row");
    assert.deepEqual(openPrivateKey(a, row.fingerprint, row.private_key), pkcs8);
  }

  // a → b with a kept as previous: resealed under b, once.
  const underB = new KeyStore(db, new WrapperKeyring("participant1", b, [a]));
  const again = await underB.ensureInitialKeys();
  assert.equal(again.signing.fingerprint, initial.signing.fingerprint, "the same keys, not new ones");
  const settled = await rows(db);
  assert.deepEqual(
    settled.map((r) => r.wrapper_fingerprint),
    [b.fingerprint, b.fingerprint],
  );
  const message = Buffer.from("signed after the switch");
  const signing = await underB.activeSigningKey();
  assert.ok(verify(initial.signing.publicKey, message, sign(signing.privateKey, message)));
  await new KeyStore(db, new WrapperKeyring("participant1", b)).ensureInitialKeys();
  assert.deepEqual(await rows(db), settled, "rows already under the current key are left as they are");

  const records = await wrapperKeyInfos(deps(db, underB));
  assert.deepEqual(
    records.map((r) => [r.fingerprint, r.state, r.source]),
    [
      [b.fingerprint, "active", b.source],
      [a.fingerprint, "active", a.source],
    ],
    "current first",
  );

  // The store is under b: a config with only a, or none, refuses to start and names b's file.
  await assert.rejects(
    new KeyStore(db, new WrapperKeyring("participant1", a)).ensureInitialKeys(),
    is("MISSING_WRAPPER_KEY", b.fingerprint, b.source, "participant1"),
  );
  await assert.rejects(
    new KeyStore(db, privateKeyProtection("participant1", {})).ensureInitialKeys(),
    is("MISSING_WRAPPER_KEY", b.fingerprint, "no crypto.private-key-encryption"),
  );
  assert.deepEqual(await rows(db), settled, "a refused start changes nothing");
});

test("RewrapPrivateKeys switches a running store; RetireWrapperKey waits for a backup under the new key", async () => {
  const db = await freshDb();
  const a = wrapperKey();
  const b = wrapperKey();
  const c = wrapperKey();
  const store = new KeyStore(db, privateKeyProtection("participant1", {}));
  const admin = deps(db, store);
  await store.ensureInitialKeys();

  // A plain store switched to a wrapper key while running, then to another.
  assert.deepEqual(await rewrapPrivateKeys(admin, a.source), {
    wrapperFingerprint: a.fingerprint,
    previousFingerprint: "",
    rewrapped: 2,
  });
  assert.deepEqual(await rewrapPrivateKeys(admin, b.source), {
    wrapperFingerprint: b.fingerprint,
    previousFingerprint: a.fingerprint,
    rewrapped: 2,
  });
  assert.deepEqual(
    await rewrapPrivateKeys(admin, b.source),
    { wrapperFingerprint: b.fingerprint, previousFingerprint: "", rewrapped: 0 },
    "idempotent",
  );
  await assert.rejects(rewrapPrivateKeys(admin, "w1.key"), is("INVALID_ARGUMENT", "absolute"));
  await assert.rejects(rewrapPrivateKeys(admin, join(dir, "none.key")), is("WRAPPER_KEY_FILE_INVALID"));
  // New keys are sealed under the new wrapper key, old ones still open.
  const { key: pending } = await store.pendingSigningKey();
  assert.equal(pending.wrapperFingerprint, b.fingerprint);
  assert.ok((await rows(db)).every((r) => r.wrapper_fingerprint === b.fingerprint));
  assert.equal((await store.list()).length, 3);

  await assert.rejects(retireWrapperKey(admin, b.fingerprint, false), is("INVALID_ARGUMENT", "current"));
  await assert.rejects(
    retireWrapperKey(admin, c.fingerprint, false),
    is("INVALID_ARGUMENT", "not a wrapper key"),
  );
  // Only a safe set under the current wrapper key counts.
  await registerSet(db, "set-plain", null);
  await registerSet(db, "set-a", a.fingerprint);
  await registerSet(db, "set-b-unsafe", b.fingerprint, false);
  await assert.rejects(
    retireWrapperKey(admin, a.fingerprint, false),
    is("KEY_NOT_BACKED_UP", b.fingerprint, `retiring wrapper key ${a.fingerprint}`),
  );
  await registerSet(db, "set-b", b.fingerprint);
  assert.deepEqual(await retireWrapperKey(admin, a.fingerprint, false), {
    alreadyRetired: false,
    warning: "",
  });
  assert.deepEqual(await retireWrapperKey(admin, a.fingerprint, false), {
    alreadyRetired: true,
    warning: "",
  });
  const infos = await wrapperKeyInfos(admin);
  assert.deepEqual(
    infos.map((w) => [w.fingerprint, w.state, w.backupSets]),
    [
      [b.fingerprint, "active", ["set-b"]],
      [a.fingerprint, "retired", ["set-a"]],
    ],
  );
  assert.ok(infos[1]?.retiredAt);
  assert.deepEqual(await store.overrides(), []);

  // b → c, retired with --force before any backup under c: done, with the warning recorded.
  await rewrapPrivateKeys(admin, c.source);
  const forced = await retireWrapperKey(admin, b.fingerprint, true);
  assert.equal(forced.alreadyRetired, false);
  assert.match(forced.warning ?? "", /before any backup/);
  assert.deepEqual(
    (await store.overrides()).map((o) => [o.action, o.fingerprint, o.warning]),
    [["retire-wrapper", b.fingerprint, forced.warning]],
  );

  // A row sealed under a former key by a writer that raced the rewrap is brought over before that
  // key is retired.
  const racer = new KeyStore(db, new WrapperKeyring("participant1", b));
  const straggler = generateKeyPair("signing");
  await db.execute(
    "UPDATE crypto_wrapper_keys SET state = 'active', retired_at = NULL WHERE fingerprint = $1",
    [b.fingerprint],
  );
  await racer.add(straggler);
  await registerSet(db, "set-c", c.fingerprint);
  await retireWrapperKey(admin, b.fingerprint, false);
  assert.ok((await rows(db)).every((r) => r.wrapper_fingerprint === c.fingerprint));
  assert.equal((await store.get(straggler.fingerprint))?.fingerprint, straggler.fingerprint);

  // After the retire a config with only the current key starts; one with a retired key alone does not.
  await new KeyStore(db, new WrapperKeyring("participant1", c)).ensureInitialKeys();
  await assert.rejects(
    new KeyStore(db, new WrapperKeyring("participant1", a)).ensureInitialKeys(),
    is("MISSING_WRAPPER_KEY", c.fingerprint, c.source),
  );
});
