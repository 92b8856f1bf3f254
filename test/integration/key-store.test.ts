import assert from "node:assert/strict";
import { test } from "node:test";
import { isLockstepError } from "../../src/common/errors.ts";
import { KeyStore } from "../../src/crypto/key-store.ts";
import { keyStoreMigrations } from "../../src/crypto/key-store-migrations.ts";
import { generateKeyPair, sign, verify } from "../../src/crypto/keys.ts";
import type { Db } from "../../src/storage/db.ts";
import { runMigrations } from "../../src/storage/migrations.ts";
import { createTestDb, startTestPostgres } from "../support/postgres.ts";

const pg = await startTestPostgres();

async function freshStore(): Promise<{ db: Db; store: KeyStore }> {
  const db = await createTestDb(pg, "keys");
  await runMigrations(db, "participant", keyStoreMigrations);
  return { db, store: new KeyStore(db) };
}

const is = (code: Parameters<typeof isLockstepError>[1]) => (error: unknown) => isLockstepError(error, code);

test("ensureInitialKeys creates both keys once, also when two starts race", async () => {
  const { db, store } = await freshStore();
  await assert.rejects(store.activeSigningKey(), is("NO_APPROPRIATE_SIGNING_KEY_IN_STORE"));
  const [a, b] = await Promise.all([store.ensureInitialKeys(), new KeyStore(db).ensureInitialKeys()]);
  assert.equal(a.namespace.fingerprint, b.namespace.fingerprint);
  assert.equal(a.signing.fingerprint, b.signing.fingerprint);
  const again = await store.ensureInitialKeys();
  assert.equal(again.signing.fingerprint, a.signing.fingerprint);
  assert.deepEqual((await store.list()).map((k) => [k.purpose, k.state]).sort(), [
    ["namespace", "active"],
    ["signing", "active"],
  ]);
  // What comes back from the database signs as the key that went in.
  const loaded = await store.activeSigningKey();
  assert.ok(verify(a.signing.publicKey, Buffer.from("x"), sign(loaded.privateKey, Buffer.from("x"))));
  assert.equal((await store.namespaceKey()).fingerprint, a.namespace.fingerprint);
});

test("rotation: pending, active, revoked; the newest active signing key is used", async () => {
  const { store } = await freshStore();
  const initial = await store.ensureInitialKeys();
  const next = generateKeyPair("signing");
  assert.equal(await store.add(next), true);
  assert.equal(await store.add(next), false, "adding twice changes nothing");
  assert.equal((await store.get(next.fingerprint))?.state, "pending");
  assert.equal((await store.activeSigningKey()).fingerprint, initial.signing.fingerprint);

  await store.setState(next.fingerprint, "active");
  assert.equal((await store.activeSigningKey()).fingerprint, next.fingerprint);
  await store.setState(initial.signing.fingerprint, "revoked");
  const revoked = await store.get(initial.signing.fingerprint);
  assert.equal(revoked?.state, "revoked");
  assert.ok(revoked?.revokedAt instanceof Date);

  await assert.rejects(store.setState(initial.signing.fingerprint, "active"), is("INVALID_ARGUMENT"));
  await assert.rejects(store.setState(`1220${"0".repeat(64)}`, "active"), is("SECRET_KEY_NOT_IN_STORE"));
  await assert.rejects(store.add(generateKeyPair("namespace"), "active"), "one active namespace key");

  // A store that has keys but no active signing key is reported, never silently refilled.
  await store.setState(next.fingerprint, "revoked");
  await assert.rejects(store.ensureInitialKeys(), is("NO_APPROPRIATE_SIGNING_KEY_IN_STORE"));
});
