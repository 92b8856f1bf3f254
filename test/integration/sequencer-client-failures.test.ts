/**
 * Fatal refusals of the sequencer client against a real sequencer: a member whose events were pruned
 * (EVENTS_UNAVAILABLE_FOR_TIMESTAMP), a tampered delivery (SEQUENCER_SIGNATURE_INVALID), and a stale
 * writer epoch. Each is reported once through onFatal and never retried.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { StringValueSchema } from "@bufbuild/protobuf/wkt";
import { createNodeClient } from "../../src/common/rpc-client.ts";
import { SequencerService } from "../../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { encodeMessagePayload } from "../../src/sequencer-client/event-payload.ts";
import { SequencedEventStore } from "../../src/sequencer-client/sequenced-event-store.ts";
import { startTestPostgres } from "../support/postgres.ts";
import {
  createMember,
  openDb,
  startTestSequencer,
  stopAll,
  type TestMember,
} from "../support/sequencer-client-harness.ts";
import { waitUntil, withinSeconds } from "../support/wait.ts";

after(stopAll);
const pg = await startTestPostgres();
const sequencer = await startTestSequencer(pg);
const admin = createNodeClient(SequencerService, sequencer.url);

function text(value: string): Uint8Array {
  return encodeMessagePayload(StringValueSchema, create(StringValueSchema, { value }));
}

/** Waits for the one fatal error and checks that the client did not subscribe again after it. */
async function assertFatalOnce(member: TestMember, code: string): Promise<void> {
  await waitUntil(`${member.name} failed`, () => member.fatals.length > 0);
  assert.equal(member.fatals[0]?.code, code, member.fatals[0]?.message);
  const status = member.client.status();
  assert.ok(status.failed);
  assert.equal(status.lastError?.code, code);
  // The subscription loop ends by itself after a fatal error: once it has, no retry can follow.
  await withinSeconds(member.client.loopEnded(), 10, "the subscription loop to end after the fatal error");
  assert.equal(member.client.status().subscribeAttempts, status.subscribeAttempts, "not retried");
  assert.equal(member.fatals.length, 1);
}

const p = await createMember(pg, sequencer, "member-p");
const q = await createMember(pg, sequencer, "member-q");
await p.start();
await q.start();

describe("sequencer client refusals", () => {
  test("a new client DB for a member whose events were pruned: EVENTS_UNAVAILABLE_FOR_TIMESTAMP, not retried", async () => {
    for (let i = 0; i < 3; i++) {
      await p.client.send({ recipients: [q.client.member], payload: text(`p${i}`), messageId: `p${i}` });
    }
    await q.waitFor((r) => r.messageId === "p2");
    await p.waitFor((r) => r.messageId === "p2");
    for (const m of [p, q]) {
      await waitUntil(
        `${m.name} acknowledged`,
        () => m.client.status().acknowledged === m.client.status().clean,
      );
    }
    const { safePruningTimestamp } = await admin.getSequencerStatus({});
    assert.ok(safePruningTimestamp !== undefined);
    const registeredAt = p.client.status().registeredAt as bigint;
    assert.ok(safePruningTimestamp > registeredAt);
    const pruned = await admin.prune({ beforeTimestamp: safePruningTimestamp });
    assert.ok(pruned.removedEvents > 0n);

    // The member's keys (as in an old backup of only its key store) in an otherwise empty DB.
    await p.stop();
    const keys = await p.db.query<Record<string, unknown>>("SELECT * FROM crypto_private_keys");
    const fresh = await createMember(pg, sequencer, "member-p");
    for (const k of keys) {
      await fresh.db.execute(
        `INSERT INTO crypto_private_keys (fingerprint, purpose, state, public_key, private_key, created_at, activated_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [
          k.fingerprint,
          k.purpose,
          k.state,
          k.public_key,
          k.private_key,
          k.created_at,
          k.activated_at,
          k.revoked_at,
        ] as never[],
      );
    }
    await fresh.start();
    assert.equal(fresh.client.member, p.client.member, "same keys, same member");
    assert.equal(fresh.client.status().registeredAt, registeredAt, "found in topology, not registered again");
    await assertFatalOnce(fresh, "EVENTS_UNAVAILABLE_FOR_TIMESTAMP");
    assert.deepEqual(await fresh.handled(), []);
  });

  test("a delivery whose signature was tampered with in the sequencer DB is refused", async () => {
    await waitUntil("q connected", () => q.client.status().connected);
    await q.stop();
    await p.client.stop().catch(() => {});
    const sender = await createMember(pg, sequencer, "member-s");
    await sender.start();
    await sender.client.send({ recipients: [q.client.member], payload: text("t1"), messageId: "t1" });
    await sender.waitFor((r) => r.messageId === "t1");

    const sequencerDb = openDb(pg, sequencer.database);
    try {
      const changed = await sequencerDb.execute(
        `UPDATE sequencer_deliveries SET signature = set_byte(signature, 0, (get_byte(signature, 0) + 1) % 256)
         WHERE member = $1 AND timestamp = (SELECT max(timestamp) FROM sequencer_deliveries WHERE member = $1)`,
        [q.client.member],
      );
      assert.equal(changed, 1);
    } finally {
      await sequencerDb.close();
    }
    // The sequencer serves recent events from memory (recent-events.ts): restart it, so that it
    // serves what its database holds.
    await sequencer.stop();
    await sequencer.start();
    await q.start();
    await assertFatalOnce(q, "SEQUENCER_SIGNATURE_INVALID");
    // Refused before it is stored: nothing to replay, nothing processed. (The events before it, e.g.
    // member-s's registration, were fine and are processed.)
    const t1 = (await sender.handled()).find((r) => r.messageId === "t1")?.timestamp as bigint;
    const stored = await new SequencedEventStore(q.db).list();
    assert.ok(stored.every((e) => e.event.timestamp < t1));
    assert.equal(q.client.status().clean, stored.at(-1)?.event.timestamp);
    assert.ok(!(await q.handled()).some((r) => r.messageId === "t1"));
  });

  test("a stale writer epoch is fatal, not retried", async () => {
    const w = await createMember(pg, sequencer, "member-w");
    await w.start({ identity: () => ({ writerEpoch: 5n }) });
    await w.client.requestTimeProof();
    await w.stop();
    await w.start({ identity: () => ({ writerEpoch: 4n }) });
    await assertFatalOnce(w, "STALE_WRITER_EPOCH");
    await assert.rejects(w.client.requestTimeProof(), (e: Error) =>
      /STALE_WRITER_EPOCH|older/.test(e.message),
    );
  });
});
