/**
 * Signing key rotation against a real sequencer on real PostgreSQL (issue 11, docs/keys.md): a
 * member rotating its key through SubmitTopology, the sequencer rotating its own through KeyAdmin
 * while a real sequencer client keeps validating its events, and the key store brought back in line
 * with topology after a crash between a step's sequencing and its marking.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, test } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { isLockstepError, type LockstepError } from "../../src/common/errors.ts";
import { silentLogger } from "../../src/common/logging.ts";
import { createNodeClient, nodeBaseUrl } from "../../src/common/rpc-client.ts";
import {
  type EventPosition,
  eventSigningBytes,
  type SequencedEvent,
} from "../../src/common/sequenced-event.ts";
import { END_OF_TIME } from "../../src/common/time.ts";
import { KeyAdmin } from "../../src/crypto/key-admin.ts";
import { announceMapping, revokeMapping } from "../../src/crypto/key-rotation.ts";
import { KeyStore } from "../../src/crypto/key-store.ts";
import { keyStoreMigrations } from "../../src/crypto/key-store-migrations.ts";
import { generateKeyPair, type KeyPair, sign, submissionDigest, verify } from "../../src/crypto/keys.ts";
import {
  DEFAULT_SYNCHRONIZER_PARAMETERS,
  memberKeys,
  type SignedTopologyTransaction,
  signedTopologyToParts,
  signTopologyTransaction,
  type TopologyState,
} from "../../src/crypto/topology.ts";
import {
  type SendRequestSchema,
  SequencerService,
} from "../../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { NodeServer } from "../../src/node/node-server.ts";
import { nodeStateMigrations } from "../../src/node/node-state.ts";
import { Sequencer } from "../../src/sequencer/sequencer.ts";
import { sequencerMigrations } from "../../src/sequencer/sequencer-migrations.ts";
import { sequencerServiceRoutes } from "../../src/sequencer/sequencer-service.ts";
import { clientOwnTopology } from "../../src/sequencer-client/client-own-topology.ts";
import { createSequencerClient } from "../../src/sequencer-client/create-sequencer-client.ts";
import { sequencerKeysAt, validateNext } from "../../src/sequencer-client/event-validation.ts";
import type { SequencerClient } from "../../src/sequencer-client/sequencer-client.ts";
import { sequencerClientMigrations } from "../../src/sequencer-client/sequencer-client-migrations.ts";
import { type BackupTaken, registerBackupTaken } from "../../src/storage/backups-taken.ts";
import type { Db } from "../../src/storage/db.ts";
import { runMigrations } from "../../src/storage/migrations.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { createTestDb, startTestPostgres } from "../support/postgres.ts";
import { collectEvents, messagePayload, TestMember } from "../support/sequencer-harness.ts";
import { waitFor } from "../support/wait.ts";

const pg = await startTestPostgres();
const logger = silentLogger("key-rotation-test");
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
});

/** A harness member whose signing key can be swapped once topology lists the new one. */
class RotatingMember extends TestMember {
  declare signing: KeyPair;
}

/** An in-process sequencer on its own database, served on a free port, with its KeyAdmin. */
interface InProcessSequencer {
  readonly database: string;
  readonly db: Db;
  readonly keys: KeyStore;
  readonly sequencer: Sequencer;
  readonly admin: KeyAdmin;
  readonly url: string;
  readonly client: ReturnType<typeof createNodeClient<typeof SequencerService>>;
  /** Stops the sequencer and its server, as a crash would leave the database. */
  stop(): Promise<void>;
}

async function startSequencer(database = `sequencer_${randomBytes(4).toString("hex")}`) {
  await pg.ensureDatabase(database);
  const db = createPgDb({ connectionString: pg.connectionUrl(database), applicationName: "test-sequencer" });
  await runMigrations(db, "sequencer", [...nodeStateMigrations, ...sequencerMigrations]);
  const keys = new KeyStore(db);
  const sequencer = await Sequencer.start({
    db,
    keys,
    logger,
    name: "sequencer",
    synchronizerName: "sync1",
    parameters: DEFAULT_SYNCHRONIZER_PARAMETERS,
  });
  const server = new NodeServer({
    node: "sequencer",
    port: 0,
    logger,
    health: () => ({ node: "sequencer", kind: "sequencer", status: "active" }),
    routes: sequencerServiceRoutes(() => sequencer),
  });
  const port = await server.start();
  const admin = new KeyAdmin({
    node: "sequencer",
    synchronizer: "sync1",
    db,
    keys,
    topology: sequencer.ownTopology(),
    logger,
  });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await server.stop();
    await sequencer.stop();
    await db.close();
  };
  cleanups.push(stop);
  const url = nodeBaseUrl(port);
  return {
    database,
    db,
    keys,
    sequencer,
    admin,
    url,
    client: createNodeClient(SequencerService, url),
    stop,
  } satisfies InProcessSequencer;
}

/**
 * A real sequencer client on its own database (or, restarted, on `existing`); records every event
 * its handler processes in this process.
 */
async function startClientMember(url: string, name: string, existing?: Db) {
  const db = existing ?? (await createTestDb(pg, name));
  await runMigrations(db, "test-member", [
    ...nodeStateMigrations,
    ...sequencerClientMigrations,
    ...keyStoreMigrations,
  ]);
  const fatals: LockstepError[] = [];
  const processed: SequencedEvent[] = [];
  const client: SequencerClient = createSequencerClient({
    db,
    logger,
    memberName: name,
    sequencerUrl: url,
    identity: () => ({ writerEpoch: 1n }),
    onFatal: (error) => fatals.push(error),
    ackIntervalMs: 200,
    reconnect: { initialMs: 50, maxMs: 500 },
  });
  await client.start(async (event) => {
    processed.push(event);
  });
  cleanups.push(() => client.stop());
  /** Sends to itself (and `others`), resolves with the event once the handler processed it. */
  const roundTrip = async (text: string, others: string[] = []): Promise<SequencedEvent> => {
    const { messageId } = await client.send({
      recipients: [client.member, ...others],
      payload: messagePayload(text),
    });
    return waitFor(
      `${name} processed ${text}`,
      () => {
        if (fatals.length > 0) throw new Error(`${name} failed: ${fatals[0]?.message}`);
        return processed.find((e) => e.messageId === messageId);
      },
      10_000,
      20,
    );
  };
  return { db, client, fatals, processed, roundTrip };
}

/** A SendRequest of `member` signed with `key`, naming `key` as the signing key. */
function sendSignedWith(
  member: TestMember,
  key: KeyPair,
  messageId: string,
): MessageInitShape<typeof SendRequestSchema> {
  const submission = member.submission({ recipients: [member.id], messageId });
  return {
    submission,
    signature: sign(key.privateKey, submissionDigest(submission)),
    signingKeyFingerprint: key.fingerprint,
  };
}

function memberKeysTx(
  member: TestMember,
  serial: number,
  keys: KeyPair[],
  options: { operation?: "add" | "remove"; forMember?: string } = {},
): SignedTopologyTransaction {
  return signTopologyTransaction(
    {
      operation: options.operation ?? "add",
      serial,
      mapping: memberKeys(options.forMember ?? member.id, member.namespace, keys),
    },
    member.namespace,
  );
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<LockstepError> {
  let caught: LockstepError | undefined;
  await assert.rejects(promise, (error: unknown) => {
    caught = isLockstepError(error) ? error : fromConnectError(error);
    assert.equal(caught?.code, code, String(error));
    return true;
  });
  return caught as LockstepError;
}

/** The member's signing keys in the newest topology. */
const fingerprints = (state: TopologyState, member: string) =>
  state.signingKeysOf(member, END_OF_TIME).map((k) => k.fingerprint);

function backup(setId: string, keyFingerprints: string[], safe = true): BackupTaken {
  return {
    setId,
    repository: "/backups/test",
    takenAt: new Date(),
    keyFingerprints,
    position: {},
    safe,
    wrapperFingerprint: null,
  };
}

describe("a member rotates its own signing key through the sequencer", () => {
  test("announce then revoke are sequenced; the revoked key is refused from then on; others' keys are not the member's to change", async () => {
    const seq = await startSequencer();
    const alice = new RotatingMember("alice");
    const bob = new TestMember("bob");
    await alice.register(seq.client);
    await bob.register(seq.client);
    const oldKey = alice.signing;
    const newKey = generateKeyPair("signing");

    // Announce: [old, new], signed with alice's namespace key.
    const announced = await seq.client.submitTopology({
      transactions: [signedTopologyToParts(memberKeysTx(alice, 2, [oldKey, newKey]))],
    });
    assert.deepEqual(fingerprints(seq.sequencer.ownTopology().topology(), alice.id), [
      oldKey.fingerprint,
      newKey.fingerprint,
    ]);
    // While both are listed, either key is accepted.
    await seq.client.send(sendSignedWith(alice, oldKey, "old-during"));
    await seq.client.send(sendSignedWith(alice, newKey, "new-during"));

    // Revoke: [new] only.
    const revokeTx = memberKeysTx(alice, 3, [newKey]);
    const revoked = await seq.client.submitTopology({ transactions: [signedTopologyToParts(revokeTx)] });
    assert.ok(revoked.effectiveAt > announced.effectiveAt);
    assert.deepEqual(fingerprints(seq.sequencer.ownTopology().topology(), alice.id), [newKey.fingerprint]);

    // The revoked key is refused, for a Send and for a Subscribe; the new one is accepted.
    const refused = await expectCode(
      seq.client.send(sendSignedWith(alice, oldKey, "old-after")),
      "SEQUENCER_REQUEST_SIGNATURE_INVALID",
    );
    assert.equal(refused.metadata.fingerprint, oldKey.fingerprint);
    await expectCode(
      collectEvents(seq.client, alice, { from: revoked.effectiveAt, count: 1 }),
      "SEQUENCER_REQUEST_SIGNATURE_INVALID",
    );
    await seq.client.send(sendSignedWith(alice, newKey, "new-after"));
    alice.signing = newKey;
    const after = await collectEvents(seq.client, alice, { from: revoked.effectiveAt, count: 2 });
    // The refused Send left no trace: right after the revocation comes the new key's message.
    assert.deepEqual(
      after.map((e) => [e.timestamp === revoked.effectiveAt, e.messageId]),
      [
        [true, `topology:${revokeTx.hash}`],
        [false, "new-after"],
      ],
    );
    const before = await collectEvents(seq.client, alice, { from: announced.effectiveAt, count: 3 });
    assert.deepEqual(
      before.slice(0, 3).map((e) => e.messageId),
      [before[0]?.messageId, "old-during", "new-during"],
    );
    assert.equal(before[0]?.timestamp, announced.effectiveAt);

    // A retry of the revocation returns its timestamp; replaying the older announcement (a
    // transaction already sequenced) does not bring the old key back.
    const retried = await seq.client.submitTopology({ transactions: [signedTopologyToParts(revokeTx)] });
    assert.equal(retried.effectiveAt, revoked.effectiveAt);
    await seq.client.submitTopology({
      transactions: [signedTopologyToParts(memberKeysTx(alice, 2, [oldKey, newKey]))],
    });
    assert.deepEqual(fingerprints(seq.sequencer.ownTopology().topology(), alice.id), [newKey.fingerprint]);
    // Re-adding the old key with a used serial is refused.
    await expectCode(
      seq.client.submitTopology({ transactions: [signedTopologyToParts(memberKeysTx(alice, 3, [oldKey]))] }),
      "SERIAL_MISMATCH",
    );

    // Another member's keys, signed with alice's namespace key: not alice's to change.
    await expectCode(
      seq.client.submitTopology({
        transactions: [
          signedTopologyToParts(
            signTopologyTransaction(
              { operation: "add", serial: 2, mapping: memberKeys(bob.id, bob.namespace, [newKey]) },
              alice.namespace,
            ),
          ),
        ],
      }),
      "UNAUTHORIZED_TOPOLOGY_TRANSACTION",
    );
    // The sequencer's own keys are never a member's submission.
    await expectCode(
      seq.client.submitTopology({
        transactions: [
          signedTopologyToParts(memberKeysTx(alice, 2, [newKey], { forMember: seq.sequencer.sequencerId })),
        ],
      }),
      "INVALID_TOPOLOGY_MAPPING",
    );
    // A remove of its own MemberKeys (it would offboard the member).
    await expectCode(
      seq.client.submitTopology({
        transactions: [signedTopologyToParts(memberKeysTx(alice, 4, [newKey], { operation: "remove" }))],
      }),
      "INVALID_TOPOLOGY_MAPPING",
    );
    // A member that never registered onboards through RegisterMember only.
    const mallory = new TestMember("mallory");
    await expectCode(
      seq.client.submitTopology({ transactions: [signedTopologyToParts(mallory.memberKeysTransaction())] }),
      "INVALID_TOPOLOGY_MAPPING",
    );
    const state = seq.sequencer.ownTopology().topology();
    assert.deepEqual(fingerprints(state, bob.id), [bob.signing.fingerprint]);
    assert.equal(state.isMember(mallory.id, END_OF_TIME), false);
    assert.deepEqual(fingerprints(state, alice.id), [newKey.fingerprint]);
    await seq.stop();
  });

  test("a sequencer-client member's rotation through KeyAdmin: its requests switch to the new key, the old one is refused", async () => {
    const seq = await startSequencer();
    const member = await startClientMember(seq.url, "participant1");
    const keys = new KeyStore(member.db);
    const admin = new KeyAdmin({
      node: "participant1",
      synchronizer: "sync1",
      db: member.db,
      keys,
      topology: clientOwnTopology(member.client),
      logger,
    });
    const id = member.client.member;
    const namespace = await keys.namespaceKey();
    const oldKey = await keys.activeSigningKey();
    await member.roundTrip("before");

    const { key: newKey } = await admin.generate();
    await expectCode(admin.announce(newKey.fingerprint, false), "KEY_NOT_BACKED_UP");
    await registerBackupTaken(member.db, backup("p1-set", [namespace.fingerprint, newKey.fingerprint]));
    const announce = await admin.announce(newKey.fingerprint, false);
    // Effective in the member's own topology (awaitEffective: processed up to it) before it returns.
    assert.deepEqual(fingerprints(member.client.topology(), id), [oldKey.fingerprint, newKey.fingerprint]);
    assert.ok(member.processed.some((e) => e.timestamp === announce.effectiveAt));
    assert.equal((await keys.activeSigningKey()).fingerprint, newKey.fingerprint);
    await member.roundTrip("during");

    const revoke = await admin.revoke(newKey.fingerprint, false);
    assert.deepEqual(revoke.revoked, [oldKey.fingerprint]);
    assert.deepEqual(fingerprints(seq.sequencer.ownTopology().topology(), id), [newKey.fingerprint]);
    assert.equal((await keys.get(oldKey.fingerprint))?.state, "revoked");
    // The client's own requests (send, subscribe, acknowledge) now go with the new key.
    await member.roundTrip("after");
    assert.deepEqual(member.fatals, []);
    // A Send of this member signed with the revoked key is refused by the sequencer.
    const forger = new TestMember("forger");
    const submission = forger.submission({ sender: id, recipients: [id], messageId: "old-key" });
    const storedOld = await keys.get(oldKey.fingerprint);
    assert.ok(storedOld);
    await expectCode(
      seq.client.send({
        submission,
        signature: sign(storedOld.privateKey, submissionDigest(submission)),
        signingKeyFingerprint: oldKey.fingerprint,
      }),
      "SEQUENCER_REQUEST_SIGNATURE_INVALID",
    );
    await member.client.stop();
    await seq.stop();
  });
});

describe("the sequencer rotates its own signing key through KeyAdmin", () => {
  test("backup before announce, a subscribed client keeps accepting events across announce and revoke", async () => {
    const seq = await startSequencer();
    const own = seq.sequencer.ownTopology();
    const sequencerId = seq.sequencer.sequencerId;
    const member = await startClientMember(seq.url, "member1");
    // member2 is down for the whole rotation and catches up after it.
    const member2 = await startClientMember(seq.url, "member2");
    const watcher = new TestMember("watcher");
    await watcher.register(seq.client);
    const oldKey = await seq.keys.activeSigningKey();
    const namespace = await seq.keys.namespaceKey();
    const beforeRotation = await member.roundTrip("before rotation", [watcher.id]);
    assert.ok(verify(oldKey.publicKey, eventSigningBytes(beforeRotation), beforeRotation.signature));
    const member2Last = await member2.roundTrip("member2 before rotation");
    await member2.client.stop();

    // generate: one pending key, the same on a rerun.
    const generated = await seq.admin.generate();
    assert.equal(generated.generated, true);
    assert.equal(generated.key.state, "pending");
    const newKey = generated.key;
    const again = await seq.admin.generate();
    assert.deepEqual([again.generated, again.key.fingerprint], [false, newKey.fingerprint]);

    // announce is refused until a registered backup holds the new key; nothing is sequenced.
    const transactions = seq.sequencer.topology().length;
    const notBackedUp = await expectCode(seq.admin.announce(newKey.fingerprint, false), "KEY_NOT_BACKED_UP");
    assert.equal(notBackedUp.metadata.fingerprint, newKey.fingerprint);
    await registerBackupTaken(seq.db, backup("set-before", [namespace.fingerprint, oldKey.fingerprint]));
    await expectCode(seq.admin.announce(newKey.fingerprint, false), "KEY_NOT_BACKED_UP");
    // A set that holds the key but was found unsafe (a fork) does not count either.
    await registerBackupTaken(
      seq.db,
      backup("set-unsafe", [namespace.fingerprint, newKey.fingerprint], false),
    );
    await expectCode(seq.admin.announce(newKey.fingerprint, false), "KEY_NOT_BACKED_UP");
    await expectCode(seq.admin.revoke(newKey.fingerprint, false), "INVALID_ARGUMENT"); // not announced yet
    assert.equal(seq.sequencer.topology().length, transactions);
    assert.equal((await seq.keys.get(newKey.fingerprint))?.state, "pending");

    await registerBackupTaken(
      seq.db,
      backup("set-with-new", [namespace.fingerprint, oldKey.fingerprint, newKey.fingerprint]),
    );
    const announce = await seq.admin.announce(newKey.fingerprint, false);
    assert.deepEqual([announce.alreadyAnnounced, announce.warning], [false, ""]);
    assert.ok(announce.effectiveAt > beforeRotation.timestamp);
    assert.deepEqual(fingerprints(own.topology(), sequencerId), [oldKey.fingerprint, newKey.fingerprint]);
    assert.equal((await seq.keys.get(newKey.fingerprint))?.state, "active");
    assert.equal((await seq.keys.get(oldKey.fingerprint))?.state, "active");
    // Idempotent: nothing new is sequenced.
    const afterAnnounce = seq.sequencer.topology().length;
    const announceAgain = await seq.admin.announce(newKey.fingerprint, false);
    assert.equal(announceAgain.alreadyAnnounced, true);
    assert.equal(seq.sequencer.topology().length, afterAnnounce);

    // The sequencer signs with the new key once it is announced; the client accepts it.
    const duringRotation = await member.roundTrip("during rotation", [watcher.id]);
    assert.ok(verify(newKey.publicKey, eventSigningBytes(duringRotation), duringRotation.signature));
    assert.ok(member.processed.some((e) => e.timestamp === announce.effectiveAt));

    const revoke = await seq.admin.revoke(newKey.fingerprint, false);
    assert.deepEqual([revoke.revoked, revoke.warning], [[oldKey.fingerprint], ""]);
    assert.ok(revoke.effectiveAt > duringRotation.timestamp);
    assert.deepEqual(fingerprints(own.topology(), sequencerId), [newKey.fingerprint]);
    assert.equal((await seq.keys.get(oldKey.fingerprint))?.state, "revoked");
    assert.equal((await seq.keys.activeSigningKey()).fingerprint, newKey.fingerprint);
    const afterRevoke = seq.sequencer.topology().length;
    const revokeAgain = await seq.admin.revoke(newKey.fingerprint, false);
    assert.deepEqual([revokeAgain.effectiveAt, revokeAgain.revoked], [0n, []]);
    assert.equal(seq.sequencer.topology().length, afterRevoke);

    // After the revocation: signed with the new key only, and the client processes it.
    const afterRotation = await member.roundTrip("after rotation", [watcher.id]);
    assert.ok(afterRotation.timestamp > revoke.effectiveAt);
    assert.ok(verify(newKey.publicKey, eventSigningBytes(afterRotation), afterRotation.signature));
    assert.equal(verify(oldKey.publicKey, eventSigningBytes(afterRotation), afterRotation.signature), false);
    await member.client.whenClean(afterRotation.timestamp);
    assert.deepEqual(member.fatals, []);
    assert.equal(member.client.status().failed, false);
    assert.deepEqual(fingerprints(member.client.topology(), sequencerId), [newKey.fingerprint]);

    // member2 restarts after the rotation: it resubscribes from its last stored event (signed with
    // the old key before the revocation), then receives the announcement (signed with the old key)
    // and the revocation (with the new one) it missed, and accepts them all.
    const member2Again = await startClientMember(seq.url, "member2", member2.db);
    const member2After = await member2Again.roundTrip("member2 after rotation");
    assert.deepEqual(member2Again.fatals, []);
    assert.deepEqual(
      member2Again.processed.map((e) => e.timestamp),
      [announce.effectiveAt, revoke.effectiveAt, member2After.timestamp],
    );
    assert.ok(member2Last.timestamp < announce.effectiveAt);
    assert.ok(verify(newKey.publicKey, eventSigningBytes(member2After), member2After.signature));

    // The watcher's whole history, judged (as a replay would) with today's topology, revocation
    // included: every event is accepted, those signed with the old key before the revocation too.
    const history = await collectEvents(seq.client, watcher, { count: 6 });
    const today = own.topology();
    let prior: EventPosition | null = null;
    for (const event of history) {
      prior = validateNext(prior, event, sequencerKeysAt(today, sequencerId, event.timestamp));
    }
    const signedBy = (e: SequencedEvent) =>
      [oldKey, newKey]
        .filter((k) => verify(k.publicKey, eventSigningBytes(e), e.signature))
        .map((k) => (k === oldKey ? "old" : "new"));
    assert.deepEqual(
      history.map((e) => [e.timestamp, signedBy(e)]),
      [
        [history[0]?.timestamp, ["old"]], // the watcher's registration
        [beforeRotation.timestamp, ["old"]],
        [announce.effectiveAt, ["old"]], // the announcement, sequenced before the switch
        [duringRotation.timestamp, ["new"]],
        [revoke.effectiveAt, ["new"]],
        [afterRotation.timestamp, ["new"]],
      ],
    );
    await seq.stop();
  });
});

describe("the sequencer's rotation: overrides and crashes", () => {
  test("--force without a backup goes on and is recorded as an override; with a backup nothing is recorded", async () => {
    const seq = await startSequencer();
    const sequencerId = seq.sequencer.sequencerId;
    const oldKey = await seq.keys.activeSigningKey();
    const { key: newKey } = await seq.admin.generate();
    assert.deepEqual(await seq.keys.overrides(), []);

    const announce = await seq.admin.announce(newKey.fingerprint, true);
    assert.match(announce.warning, /without a backup that holds key/);
    assert.deepEqual(fingerprints(seq.sequencer.ownTopology().topology(), sequencerId), [
      oldKey.fingerprint,
      newKey.fingerprint,
    ]);
    const overrides = await seq.keys.overrides();
    assert.deepEqual(
      overrides.map((o) => [o.action, o.fingerprint, o.warning]),
      [["announce", newKey.fingerprint, announce.warning]],
    );
    assert.ok(overrides[0]?.at instanceof Date);
    // A rerun finds it announced: no second override.
    assert.equal((await seq.admin.announce(newKey.fingerprint, true)).alreadyAnnounced, true);
    assert.equal((await seq.keys.overrides()).length, 1);
    // keys list shows it.
    assert.deepEqual(
      (await seq.admin.list()).overrides.map((o) => [o.action, o.fingerprint]),
      [["announce", newKey.fingerprint]],
    );

    // Now a backup holds the key: a forced revoke needs no override and records none.
    const namespace = await seq.keys.namespaceKey();
    await registerBackupTaken(seq.db, backup("set-after", [namespace.fingerprint, newKey.fingerprint]));
    const revoke = await seq.admin.revoke(newKey.fingerprint, true);
    assert.deepEqual([revoke.revoked, revoke.warning], [[oldKey.fingerprint], ""]);
    assert.equal((await seq.keys.overrides()).length, 1);
    await seq.stop();
  });

  test("a forced revoke without a backup is recorded too", async () => {
    const seq = await startSequencer();
    const { key: newKey } = await seq.admin.generate();
    await seq.admin.announce(newKey.fingerprint, true);
    await expectCode(seq.admin.revoke(newKey.fingerprint, false), "KEY_NOT_BACKED_UP");
    const revoke = await seq.admin.revoke(newKey.fingerprint, true);
    assert.match(revoke.warning, /revoking the previous key without a backup/);
    assert.deepEqual(
      (await seq.keys.overrides()).map((o) => [o.action, o.fingerprint]),
      [
        ["announce", newKey.fingerprint],
        ["revoke", newKey.fingerprint],
      ],
    );
    await seq.stop();
  });

  test("a crash after a step was sequenced but before the store marked it: reconcile finishes it", async () => {
    const seq = await startSequencer();
    const own = seq.sequencer.ownTopology();
    const sequencerId = seq.sequencer.sequencerId;
    const namespace = await seq.keys.namespaceKey();
    const oldKey = await seq.keys.activeSigningKey();
    const { key: newKey } = await seq.keys.pendingSigningKey();
    const listed = () => fingerprints(own.topology(), sequencerId);
    const states = async () =>
      Object.fromEntries(
        (await seq.keys.list()).filter((k) => k.purpose === "signing").map((k) => [k.fingerprint, k.state]),
      );

    // Announce sequenced (KeyAdmin's pieces, by hand), then the "crash": the store is not marked.
    const before = own.topology();
    const mapping = announceMapping(
      sequencerId,
      namespace,
      before.signingKeysOf(sequencerId, END_OF_TIME),
      newKey,
    );
    assert.ok(mapping);
    await own.submit([before.issue(mapping, namespace)]);
    assert.deepEqual(listed(), [oldKey.fingerprint, newKey.fingerprint]);
    assert.deepEqual(await states(), { [oldKey.fingerprint]: "active", [newKey.fingerprint]: "pending" });
    assert.deepEqual(await seq.keys.reconcile(listed()), [{ fingerprint: newKey.fingerprint, to: "active" }]);
    assert.deepEqual(await states(), { [oldKey.fingerprint]: "active", [newKey.fingerprint]: "active" });
    assert.equal((await seq.keys.activeSigningKey()).fingerprint, newKey.fingerprint);
    assert.deepEqual(await seq.keys.reconcile(listed()), []);

    // Revoke sequenced, not marked: the old key is still active in the store until reconcile.
    const announced = own.topology();
    const plan = revokeMapping(
      sequencerId,
      namespace,
      announced.signingKeysOf(sequencerId, END_OF_TIME),
      newKey.fingerprint,
    );
    assert.ok(plan !== undefined && plan !== "keep-not-listed");
    await own.submit([announced.issue(plan.mapping, namespace)]);
    assert.deepEqual(listed(), [newKey.fingerprint]);
    assert.equal((await seq.keys.get(oldKey.fingerprint))?.state, "active");
    assert.deepEqual(await seq.keys.reconcile(listed()), [
      { fingerprint: oldKey.fingerprint, to: "revoked" },
    ]);
    assert.deepEqual(await states(), { [oldKey.fingerprint]: "revoked", [newKey.fingerprint]: "active" });
    assert.deepEqual(await seq.keys.reconcile(listed()), []);
    await seq.stop();
  });

  test("a rerun after a crash resumes: announce finds its key announced; a restart reconciles a sequenced revocation", async () => {
    let seq = await startSequencer();
    const watcher = new TestMember("watcher");
    await watcher.register(seq.client);
    const sequencerId = seq.sequencer.sequencerId;
    const namespace = await seq.keys.namespaceKey();
    const oldKey = await seq.keys.activeSigningKey();
    const { key: newKey } = await seq.admin.generate();
    await registerBackupTaken(seq.db, backup("set-1", [namespace.fingerprint, newKey.fingerprint]));

    // The announcement was sequenced, then the node stopped before it marked the key.
    let own = seq.sequencer.ownTopology();
    const state = own.topology();
    const mapping = announceMapping(
      sequencerId,
      namespace,
      state.signingKeysOf(sequencerId, END_OF_TIME),
      newKey,
    );
    assert.ok(mapping);
    const announcedAt = await own.submit([state.issue(mapping, namespace)]);
    const transactions = seq.sequencer.topology().length;
    // The rerun: nothing sequenced twice, the key marked active, the sequencer switched to it.
    const rerun = await seq.admin.announce(newKey.fingerprint, false);
    assert.deepEqual([rerun.alreadyAnnounced, rerun.effectiveAt], [true, 0n]);
    assert.equal(seq.sequencer.topology().length, transactions);
    assert.equal((await seq.keys.get(newKey.fingerprint))?.state, "active");
    await seq.client.send(watcher.sendRequest({ messageId: "after-announce" }));

    // The revocation was sequenced, then the process died: a restart brings the store in line.
    own = seq.sequencer.ownTopology();
    const announced = own.topology();
    const plan = revokeMapping(
      sequencerId,
      namespace,
      announced.signingKeysOf(sequencerId, END_OF_TIME),
      newKey.fingerprint,
    );
    assert.ok(plan !== undefined && plan !== "keep-not-listed");
    const revokedAt = await own.submit([announced.issue(plan.mapping, namespace)]);
    assert.equal((await seq.keys.get(oldKey.fingerprint))?.state, "active");
    await seq.stop();
    seq = await startSequencer(seq.database);
    assert.equal(seq.sequencer.sequencerId, sequencerId);
    assert.equal((await seq.keys.get(oldKey.fingerprint))?.state, "revoked");
    assert.equal((await seq.keys.activeSigningKey()).fingerprint, newKey.fingerprint);
    await seq.client.send(watcher.sendRequest({ messageId: "after-restart" }));

    // The watcher's whole history validates as a chain, each event with the keys in force before it.
    const events = (await collectEvents(seq.client, watcher, { count: 5 })).slice(0, 5);
    assert.deepEqual(
      events.map((e) => e.timestamp === announcedAt || e.timestamp === revokedAt || e.messageId),
      [events[0]?.messageId, true, "after-announce", true, "after-restart"],
    );
    const today = seq.sequencer.ownTopology().topology();
    let prior: EventPosition | null = null;
    for (const event of events)
      prior = validateNext(prior, event, sequencerKeysAt(today, sequencerId, event.timestamp));
    const last = events[4] as SequencedEvent;
    assert.ok(verify(newKey.publicKey, eventSigningBytes(last), last.signature));
    assert.equal(verify(oldKey.publicKey, eventSigningBytes(last), last.signature), false);
    await seq.stop();
  });
});

describe("the sequencer signs each event with a key topology lists just before it", () => {
  test("a revocation of its preferred key (keep the other): the events after it are signed with the kept key, before keysChanged ran", async () => {
    const seq = await startSequencer();
    const sequencerId = seq.sequencer.sequencerId;
    const watcher = new TestMember("watcher");
    await watcher.register(seq.client);
    const namespace = await seq.keys.namespaceKey();
    const oldKey = await seq.keys.activeSigningKey();
    const { key: newKey } = await seq.admin.generate();
    await seq.admin.announce(newKey.fingerprint, true); // the sequencer now prefers newKey
    const own = seq.sequencer.ownTopology();
    const state = own.topology();
    const plan = revokeMapping(
      sequencerId,
      namespace,
      state.signingKeysOf(sequencerId, END_OF_TIME),
      oldKey.fingerprint,
    );
    assert.ok(plan !== undefined && plan !== "keep-not-listed");
    // What KeyAdmin.revoke does first; the store and the preferred key are not updated yet.
    const revokedAt = await own.submit([state.issue(plan.mapping, namespace)]);
    await seq.client.send(watcher.sendRequest({ messageId: "in-the-window" }));
    const events = await collectEvents(seq.client, watcher, { from: revokedAt, count: 2 });
    const [revocation, inWindow] = events as [SequencedEvent, SequencedEvent];
    assert.ok(inWindow.timestamp > revokedAt);
    // What every recipient checks (validateNext's signature step): a key in force at t - 1.
    for (const e of [revocation, inWindow]) {
      const keys = sequencerKeysAt(own.topology(), sequencerId, e.timestamp);
      assert.ok(
        keys.some((k) => verify(k, eventSigningBytes(e), e.signature)),
        `${e.messageId} verifies`,
      );
    }
    assert.ok(
      verify(oldKey.publicKey, eventSigningBytes(inWindow), inWindow.signature),
      "signed with the kept key",
    );
    // A listing with no key the sequencer holds is refused before anything is sequenced.
    const stranger = generateKeyPair("signing");
    const after = own.topology();
    await expectCode(
      own.submit([after.issue(memberKeys(sequencerId, namespace, [stranger]), namespace)]),
      "INVALID_ARGUMENT",
    );
    assert.equal(own.topology().transactions().length, after.transactions().length);
    await seq.stop();
  });
});
