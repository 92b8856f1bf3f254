/**
 * synchronizer.onboarding on a real sequencer (docs/security.md "Permissioned synchronizer"): open
 * lets anyone with a self-signed key in and records it, allow-list refuses an unknown member with
 * TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED, and a member let in while onboarding was open stays in
 * when the sequencer restarts with an allow-list; an admit or revoke takes a timestamp (the head) but
 * is no event. (Admit and revoke: test/scenarios/permissioned-synchronizer.test.ts.)
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { sequencerPosition } from "../../src/backup/node-position.ts";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { readSequencerHead } from "../../src/sequencer/sequencer-head.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { startTestPostgres } from "../support/postgres.ts";
import {
  collectEvents,
  startTestSequencer,
  TestMember,
  type TestSequencer,
} from "../support/sequencer-harness.ts";

const cluster = await startTestPostgres();
let seq: TestSequencer | undefined;
after(async () => {
  await seq?.stop();
});

async function admissionRow(url: string, member: string) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ state: string; changed_by: string; changed_at: string }>(
      "SELECT state, changed_by, changed_at::text FROM sequencer_admissions WHERE member = $1",
      [member],
    );
    return rows[0];
  } finally {
    await client.end();
  }
}

test("open lets anyone in and records it; after a switch to allow-list they stay and strangers are refused", async () => {
  seq = await startTestSequencer(cluster, { onboarding: "open" });
  const alice = new TestMember("alice");
  const registeredAt = await alice.register(seq.client);
  assert.deepEqual(await admissionRow(seq.connectionUrl, alice.id), {
    state: "admitted",
    changed_by: "open-onboarding",
    changed_at: String(registeredAt),
  });

  const { database } = seq;
  await seq.stop();
  seq = await startTestSequencer(cluster, { database, onboarding: "allow-list" });
  // Let in by the rules of its time: it still subscribes (its registration event comes back).
  const events = await collectEvents(seq.client, alice, { count: 1 });
  assert.equal(events[0]?.timestamp, registeredAt);

  const bob = new TestMember("bob");
  try {
    await bob.register(seq.client);
    assert.fail("bob registered without being admitted");
  } catch (error) {
    assert.ok(error instanceof ConnectError);
    const refused = fromConnectError(error);
    assert.equal(refused?.code, "TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED");
    assert.equal(refused?.retryable, false);
    assert.match(refused?.remedy ?? "", new RegExp(`lockstep synchronizer admit ${bob.id}`));
  }
  assert.equal(await admissionRow(seq.connectionUrl, bob.id), undefined);
  const status = await seq.client.getTopology({});
  assert.ok(!JSON.stringify(status.transactions.map((t) => t.transaction?.transaction)).includes("bob::"));
});

test("an admit or revoke moves the head without an event; status, the backup position and a restart agree", async () => {
  if (!seq) throw new Error("the first test starts the sequencer");
  const head = async (s: TestSequencer) => (await s.client.getSequencerStatus({})).headTimestamp;
  const before = (await head(seq)) ?? 0n;
  const carol = new TestMember("carol");
  const admitted = (await seq.client.admitMember({ member: carol.id })).admission?.changedAt ?? 0n;
  assert.ok(admitted > before, "the admission took a new timestamp");
  assert.equal(await head(seq), admitted, "the head is the admission's timestamp");
  const registeredAt = await carol.register(seq.client);
  assert.ok(registeredAt > admitted, "the next event comes after it");

  const dave = new TestMember("dave");
  const revoked = (await seq.client.revokeMember({ member: dave.id })).admission?.changedAt ?? 0n;
  assert.ok(revoked > registeredAt);
  assert.equal(await head(seq), revoked);
  // What `backup create` records as the sequencer's position, read from its database.
  const db = createPgDb({ connectionString: seq.connectionUrl, max: 1 });
  try {
    assert.equal((await sequencerPosition(db)).head, String(revoked));
    assert.equal(await readSequencerHead(db), revoked);
  } finally {
    await db.close();
  }

  seq = await seq.restart();
  assert.equal(await head(seq), revoked, "a restarted sequencer starts from the same head");
  const erin = new TestMember("erin");
  await seq.client.admitMember({ member: erin.id });
  assert.ok((await erin.register(seq.client)) > revoked, "no timestamp is given out twice");
});
