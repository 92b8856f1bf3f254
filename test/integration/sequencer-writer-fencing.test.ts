import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { startTestPostgres } from "../support/postgres.ts";
import {
  collectEvents,
  startTestSequencer,
  TestMember,
  type TestSequencer,
} from "../support/sequencer-harness.ts";

// Writer fencing by epoch AND activation (docs/design.md §3): an equal epoch carried by another activation
// is refused like a lower one, on every request that carries one. The old code compared epochs
// only, so every "refused at an equal epoch" assertion below was accepted there.

const pg = await startTestPostgres();
let seq: TestSequencer;
const dave = new TestMember("dave");

before(async () => {
  seq = await startTestSequencer(pg);
  await dave.register(seq.client);
});
after(async () => {
  await seq?.stop();
});

async function code(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "ok";
  } catch (error) {
    return fromConnectError(error)?.code ?? String(error);
  }
}

async function record(member: TestMember) {
  const status = await seq.client.getSequencerStatus({});
  const m = status.members.find((s) => s.member === member.id);
  return { epoch: m?.writerEpoch, activation: m?.writerActivation };
}

const subscribeOnce = (member: TestMember, writerEpoch: bigint, writerActivation: string) =>
  (async () => {
    for await (const _ of seq.client.subscribe(member.subscribeRequest({ writerEpoch, writerActivation })))
      return;
  })();

test("an equal epoch from another activation is refused on send, batch, subscribe and acknowledge", async () => {
  dave.writerEpoch = 3n;
  dave.writerActivation = "activation-a";
  await seq.client.send(dave.sendRequest({ messageId: "a-1" }));
  assert.deepEqual(await record(dave), { epoch: 3n, activation: "activation-a" });
  // Dave's registration (a topology event), then his own send.
  const own = (await collectEvents(seq.client, dave, { count: 2 }))[1];
  assert.equal(own?.messageId, "a-1");

  const other = { writerEpoch: 3n, writerActivation: "activation-b" };
  assert.equal(
    await code(seq.client.send(dave.sendRequest({ ...other, messageId: "b-1" }))),
    "STALE_WRITER_EPOCH",
  );
  const batch = await seq.client.sendBatch({ requests: [dave.sendRequest({ ...other, messageId: "b-2" })] });
  assert.equal(batch.results[0]?.error?.code, "STALE_WRITER_EPOCH");
  const signed = await seq.client.sendBatch({
    signed: dave.signedSubmissions([dave.submission({ ...other, messageId: "b-3" })]),
  });
  assert.equal(signed.results[0]?.error?.code, "STALE_WRITER_EPOCH");
  assert.equal(await code(subscribeOnce(dave, 3n, "activation-b")), "STALE_WRITER_EPOCH");
  assert.equal(
    await code(seq.client.acknowledge(dave.acknowledgeRequest(own.timestamp, 3n, "activation-b"))),
    "STALE_WRITER_EPOCH",
  );
  // The holder of the epoch goes on; nothing of the refused one was sequenced.
  await seq.client.acknowledge(dave.acknowledgeRequest(own.timestamp));
  await seq.client.send(dave.sendRequest({ messageId: "a-2" }));
  const events = await collectEvents(seq.client, dave, { idleMs: 300 });
  assert.deepEqual(
    events.map((e) => e.messageId).filter((id) => !id.startsWith("topology:")),
    ["a-1", "a-2"],
  );
  assert.deepEqual(await record(dave), { epoch: 3n, activation: "activation-a" });
});

test("a higher epoch takes over with its activation, durably across a sequencer restart", async () => {
  dave.writerEpoch = 4n;
  dave.writerActivation = "activation-b";
  await seq.client.send(dave.sendRequest({ messageId: "b-4" }));
  assert.deepEqual(await record(dave), { epoch: 4n, activation: "activation-b" });
  seq = await seq.restart();
  assert.equal(
    await code(seq.client.send(dave.sendRequest({ messageId: "a-4", writerActivation: "activation-a" }))),
    "STALE_WRITER_EPOCH",
  );
  assert.equal(
    await code(
      seq.client.send(
        dave.sendRequest({ messageId: "a-3", writerEpoch: 3n, writerActivation: "activation-a" }),
      ),
    ),
    "STALE_WRITER_EPOCH",
  );
  await seq.client.send(dave.sendRequest({ messageId: "b-5" }));
  // GetMemberEvent reports the record: a member restored without it asks there (restore, docs/design.md §3).
  assert.equal((await seq.client.getMemberEvent({ member: dave.id, timestamp: 0n })).writerEpoch, 4n);
});

test("a record without activation (older build) adopts the first activation seen at its epoch", async () => {
  const db = createPgDb({ connectionString: seq.connectionUrl, max: 1 });
  try {
    await db.execute("UPDATE sequencer_members SET writer_activation = '' WHERE member = $1", [dave.id]);
  } finally {
    await db.close();
  }
  seq = await seq.restart();
  assert.deepEqual(await record(dave), { epoch: 4n, activation: "" });
  await seq.client.send(dave.sendRequest({ messageId: "c-4", writerActivation: "activation-c" }));
  assert.deepEqual(await record(dave), { epoch: 4n, activation: "activation-c" });
  assert.equal(await code(seq.client.send(dave.sendRequest({ messageId: "b-6" }))), "STALE_WRITER_EPOCH");
});

test("two activations racing to the same new epoch: exactly one is accepted", async () => {
  const outcomes = await Promise.all(
    ["activation-x", "activation-y"].map((writerActivation) =>
      code(
        seq.client.send(dave.sendRequest({ writerEpoch: 9n, writerActivation, messageId: writerActivation })),
      ),
    ),
  );
  assert.deepEqual([...outcomes].sort(), ["STALE_WRITER_EPOCH", "ok"]);
  const winner = outcomes[0] === "ok" ? "activation-x" : "activation-y";
  assert.deepEqual(await record(dave), { epoch: 9n, activation: winner });
});
