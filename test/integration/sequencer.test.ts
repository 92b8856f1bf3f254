import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import type { SequencedEvent } from "../../src/common/sequenced-event.ts";
import { nowMicros } from "../../src/common/time.ts";
import { generateKeyPair } from "../../src/crypto/keys.ts";
import { signedTopologyFromParts, TopologyState } from "../../src/crypto/topology.ts";
import { SequencerService } from "../../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { startTestPostgres } from "../support/postgres.ts";
import {
  collectEvents,
  sequencerKeys,
  startTestSequencer,
  TestMember,
  type TestSequencer,
  validateChain,
} from "../support/sequencer-harness.ts";

const pg = await startTestPostgres();
let seq: TestSequencer;
const alice = new TestMember("alice");
const bob = new TestMember("bob");
const carol = new TestMember("carol");
const registeredAt = new Map<string, bigint>();

before(async () => {
  seq = await startTestSequencer(pg);
  for (const m of [alice, bob, carol]) registeredAt.set(m.id, await m.register(seq.client));
});
after(async () => {
  await seq?.stop();
});

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.equal(fromConnectError(error)?.code, code, String(error));
    return true;
  });
}

async function countRows(table: string): Promise<number> {
  const db = createPgDb({ connectionString: seq.connectionUrl, max: 1 });
  try {
    return (await db.one<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).n;
  } finally {
    await db.close();
  }
}

test("bootstrap sequences the sequencer's keys and the synchronizer parameters", async () => {
  const topology = await seq.client.getTopology({});
  const mappings = topology.transactions.map(
    (t) => signedTopologyFromParts(t.transaction as NonNullable<typeof t.transaction>).transaction.mapping,
  );
  assert.deepEqual(
    mappings.slice(0, 2).map((m) => m.type),
    ["MemberKeys", "SynchronizerParameters"],
  );
  assert.equal(topology.sequencerId.startsWith("sequencer::1220"), true);
  assert.equal(topology.synchronizerId, `sync1::${topology.synchronizerNamespace}`);
  const parameters = mappings[1];
  assert.equal(
    parameters?.type === "SynchronizerParameters" && parameters.ledgerTimeRecordTimeToleranceMs,
    60_000,
  );
  assert.deepEqual(
    mappings.filter((m) => m.type === "MemberKeys").map((m) => m.type === "MemberKeys" && m.member),
    [topology.sequencerId, alice.id, bob.id, carol.id],
  );
});

test("total order, and each member receives exactly the events addressed to it", async () => {
  const sends: [TestMember, TestMember[], string][] = [
    [alice, [bob], "a->b"],
    [bob, [alice, carol], "b->ac"],
    [carol, [carol], "c->c"],
    [alice, [alice, bob, carol], "a->abc"],
    [bob, [bob], "b->b"],
  ];
  for (const [sender, recipients, messageId] of sends) {
    await seq.client.send(sender.sendRequest({ recipients: recipients.map((r) => r.id), messageId }));
  }
  const { keys } = await sequencerKeys(seq.client);
  const seen = new Map<string, SequencedEvent[]>();
  for (const member of [alice, bob, carol]) {
    const events = await collectEvents(seq.client, member, { idleMs: 300 });
    // Every member's events form one valid chain from its registration on.
    validateChain(events, keys);
    assert.equal(events[0]?.timestamp, registeredAt.get(member.id));
    seen.set(member.id, events);
    const messages = events.filter((e) => !e.messageId.startsWith("topology:")).map((e) => e.messageId);
    const expected = sends.filter(([s, r]) => s === member || r.includes(member)).map(([, , id]) => id);
    assert.deepEqual(messages, expected, `messages of ${member.name}`);
  }
  // Registrations go to all members registered by then: alice sees 3, bob 2, carol 1.
  const topologyCount = (m: TestMember) =>
    (seen.get(m.id) ?? []).filter((e) => e.messageId.startsWith("topology:")).length;
  assert.deepEqual([topologyCount(alice), topologyCount(bob), topologyCount(carol)], [3, 2, 1]);
  // One sequencing per submission: the same event has the same timestamp and content in every view.
  const aliceAbc = seen.get(alice.id)?.find((e) => e.messageId === "a->abc");
  const carolAbc = seen.get(carol.id)?.find((e) => e.messageId === "a->abc");
  assert.equal(aliceAbc?.timestamp, carolAbc?.timestamp);
  assert.deepEqual(aliceAbc?.payload, carolAbc?.payload);
  assert.notDeepEqual(aliceAbc?.chainHash, carolAbc?.chainHash);
});

test("concurrent sends get unique, strictly increasing timestamps", async () => {
  const before = (await collectEvents(seq.client, carol, { idleMs: 200 })).at(-1)?.timestamp ?? 0n;
  const n = 300;
  const ids = Array.from({ length: n }, (_, i) => `burst-${i}`);
  await Promise.all(
    ids.map((messageId, i) =>
      seq.client.send((i % 2 === 0 ? alice : bob).sendRequest({ recipients: [carol.id], messageId })),
    ),
  );
  const events = (await collectEvents(seq.client, carol, { from: before + 1n, count: n })).filter((e) =>
    e.messageId.startsWith("burst-"),
  );
  assert.equal(events.length, n);
  assert.deepEqual(new Set(events.map((e) => e.messageId)), new Set(ids));
  for (let i = 1; i < events.length; i++) {
    assert.ok((events[i] as SequencedEvent).timestamp > (events[i - 1] as SequencedEvent).timestamp);
  }
});

test("a time proof is an empty event to the sender only", async () => {
  const start = nowMicros();
  await seq.client.send(alice.sendRequest({ timeProof: true, recipients: [bob.id], messageId: "tp-1" }));
  const events = await collectEvents(seq.client, alice, { from: start, idleMs: 300 });
  const proof = events.find((e) => e.messageId === "tp-1");
  assert.ok(proof);
  assert.deepEqual(proof.recipients, []);
  assert.equal(proof.payload.length, 0);
  assert.equal(proof.deliverError, undefined);
  assert.ok(proof.timestamp >= start);
  const bobs = await collectEvents(seq.client, bob, { from: start, idleMs: 300 });
  assert.equal(
    bobs.some((e) => e.messageId === "tp-1"),
    false,
  );
});

test("max sequencing time in the past gives a deliver error to the sender only", async () => {
  const start = nowMicros();
  await seq.client.send(
    alice.sendRequest({ recipients: [bob.id], messageId: "too-late", maxSequencingTime: start - 1_000_000n }),
  );
  const events = await collectEvents(seq.client, alice, { from: start, idleMs: 300 });
  const error = events.find((e) => e.messageId === "too-late");
  assert.ok(error?.deliverError);
  assert.equal(error.deliverError.code, "SEQUENCER_MAX_SEQUENCING_TIME_EXCEEDED");
  assert.equal(error.deliverError.messageId, "too-late");
  assert.equal(error.payload.length, 0);
  const bobs = await collectEvents(seq.client, bob, { from: start, idleMs: 300 });
  assert.equal(
    bobs.some((e) => e.messageId === "too-late"),
    false,
  );
});

test("refused submissions store nothing", async () => {
  const events = await countRows("sequencer_events");
  const deliveries = await countRows("sequencer_deliveries");

  const tampered = alice.sendRequest({ recipients: [bob.id] });
  const bytes = Buffer.from(tampered.submission as Uint8Array);
  bytes.writeUInt8((bytes.at(-1) as number) ^ 1, bytes.length - 1);
  await expectCode(
    seq.client.send({ ...tampered, submission: bytes }),
    "SEQUENCER_REQUEST_SIGNATURE_INVALID",
  );
  await expectCode(
    seq.client.send(alice.sendRequest({ recipients: [bob.id], signWith: generateKeyPair("signing") })),
    "SEQUENCER_REQUEST_SIGNATURE_INVALID",
  );
  await expectCode(
    seq.client.send({ ...alice.sendRequest(), signature: new Uint8Array(0) }),
    "SEQUENCER_REQUEST_SIGNATURE_INVALID",
  );
  await expectCode(seq.client.send(new TestMember("mallory").sendRequest()), "SEQUENCER_SENDER_UNKNOWN");
  await expectCode(
    seq.client.send(alice.sendRequest({ recipients: [] })),
    "SEQUENCER_SUBMISSION_REQUEST_MALFORMED",
  );
  await expectCode(
    seq.client.send(alice.sendRequest({ recipients: [new TestMember("nobody").id] })),
    "SEQUENCER_UNKNOWN_RECIPIENTS",
  );
  await expectCode(
    seq.client.send(alice.sendRequest({ recipients: [bob.id], payload: new Uint8Array([1, 2, 3]) })),
    "SEQUENCER_SUBMISSION_REQUEST_MALFORMED",
  );
  await expectCode(
    seq.client.send({
      submission: new Uint8Array([0xff, 0xff]),
      signature: new Uint8Array(64),
      signingKeyFingerprint: "",
    }),
    "SEQUENCER_SUBMISSION_REQUEST_MALFORMED",
  );

  // Writer epochs: a higher one is recorded, a lower one is refused from then on.
  await seq.client.send(bob.sendRequest({ recipients: [bob.id], writerEpoch: 5n, messageId: "epoch-5" }));
  const afterAccepted = await countRows("sequencer_events");
  await expectCode(
    seq.client.send(bob.sendRequest({ recipients: [bob.id], writerEpoch: 4n, messageId: "epoch-4" })),
    "STALE_WRITER_EPOCH",
  );
  await assert.rejects(
    collectEvents(seq.client, bob, { count: 1 }).then(() => undefined),
    (error: unknown) => fromConnectError(error)?.code === "STALE_WRITER_EPOCH",
  );
  assert.equal(await countRows("sequencer_events"), afterAccepted);
  assert.equal(afterAccepted, events + 1);
  assert.equal(await countRows("sequencer_deliveries"), deliveries + 1);
  const status = await seq.client.getSequencerStatus({});
  assert.equal(status.members.find((m) => m.member === bob.id)?.writerEpoch, 5n);
  bob.writerEpoch = 5n;
});

test("SendBatch: one result per submission, each verified on its own; refused ones store nothing", async () => {
  const events = await countRows("sequencer_events");
  const deliveries = await countRows("sequencer_deliveries");
  const tampered = alice.sendRequest({ recipients: [carol.id], messageId: "batch-tampered" });
  const bytes = Buffer.from(tampered.submission as Uint8Array);
  bytes.writeUInt8((bytes.at(-1) as number) ^ 1, bytes.length - 1);
  const requests = [
    alice.sendRequest({ recipients: [carol.id], messageId: "batch-ok-1" }),
    { ...tampered, submission: bytes },
    new TestMember("mallory").sendRequest({ messageId: "batch-unknown" }),
    bob.sendRequest({ recipients: [carol.id], messageId: "batch-ok-2" }),
    alice.sendRequest({ recipients: [carol.id], messageId: "batch-stale", writerEpoch: 0n }),
    alice.sendRequest({ recipients: [], messageId: "batch-empty" }),
    alice.sendRequest({
      recipients: [carol.id],
      messageId: "batch-wrong-key",
      signWith: generateKeyPair("signing"),
    }),
    carol.sendRequest({ recipients: [alice.id], messageId: "batch-ok-3" }),
  ];
  const { results } = await seq.client.sendBatch({ requests });
  assert.deepEqual(
    results.map((r) => r.error?.code ?? "ok"),
    [
      "ok",
      "SEQUENCER_REQUEST_SIGNATURE_INVALID",
      "SEQUENCER_SENDER_UNKNOWN",
      "ok",
      "STALE_WRITER_EPOCH",
      "SEQUENCER_SUBMISSION_REQUEST_MALFORMED",
      "SEQUENCER_REQUEST_SIGNATURE_INVALID",
      "ok",
    ],
  );
  assert.ok(results[1]?.error?.message && results[1].error.remedy, "the full ErrorDetail");
  // Three events (each to its recipient and its sender), nothing for the refused ones.
  assert.equal(await countRows("sequencer_events"), events + 3);
  assert.equal(await countRows("sequencer_deliveries"), deliveries + 6);
  const carols = (await collectEvents(seq.client, carol, { idleMs: 300 })).filter((e) =>
    e.messageId.startsWith("batch-"),
  );
  assert.deepEqual(carols.map((e) => e.messageId).sort(), ["batch-ok-1", "batch-ok-2", "batch-ok-3"]);
  const alices = (await collectEvents(seq.client, alice, { idleMs: 300 })).filter((e) =>
    e.messageId.startsWith("batch-"),
  );
  assert.deepEqual(alices.map((e) => e.messageId).sort(), ["batch-ok-1", "batch-ok-3"]);

  assert.deepEqual((await seq.client.sendBatch({ requests: [] })).results, []);
  await expectCode(
    seq.client.sendBatch({
      requests: Array.from({ length: 1001 }, () => requests[0] as (typeof requests)[0]),
    }),
    "INVALID_ARGUMENT",
  );
});

test("SendBatch signed once: one verification for the batch, then each submission on its own", async () => {
  const events = await countRows("sequencer_events");
  const deliveries = await countRows("sequencer_deliveries");
  const submissions = [
    alice.submission({ recipients: [carol.id], messageId: "signed-ok-1" }),
    alice.submission({ recipients: [carol.id], messageId: "signed-stale", writerEpoch: 0n }),
    // Alice may not slip in a submission in Bob's name under her own signature.
    alice.submission({ recipients: [carol.id], messageId: "signed-as-bob", sender: bob.id }),
    alice.submission({ recipients: ["nobody::1220ab"], messageId: "signed-unknown-recipient" }),
    alice.submission({ recipients: [carol.id], messageId: "signed-ok-2" }),
  ];
  const { results } = await seq.client.sendBatch({ signed: alice.signedSubmissions(submissions) });
  assert.deepEqual(
    results.map((r) => r.error?.code ?? "ok"),
    [
      "ok",
      "STALE_WRITER_EPOCH",
      "SEQUENCER_SUBMISSION_REQUEST_MALFORMED",
      "SEQUENCER_UNKNOWN_RECIPIENTS",
      "ok",
    ],
  );
  assert.equal(await countRows("sequencer_events"), events + 2);
  assert.equal(await countRows("sequencer_deliveries"), deliveries + 4);

  // The signature covers every submission: a changed one, a wrong key or an unknown sender refuses all.
  const refusedAll = async (signed: Parameters<typeof seq.client.sendBatch>[0]["signed"], code: string) => {
    const { results: outcome } = await seq.client.sendBatch({ signed });
    assert.deepEqual(
      outcome.map((r) => r.error?.code),
      (signed?.submissions ?? []).map(() => code),
    );
  };
  const good = alice.signedSubmissions([
    alice.submission({ recipients: [carol.id], messageId: "signed-tampered-1" }),
    alice.submission({ recipients: [carol.id], messageId: "signed-tampered-2" }),
  ]);
  const changed = Buffer.from(good.submissions?.[1] as Uint8Array);
  changed.writeUInt8((changed.at(-1) as number) ^ 1, changed.length - 1);
  await refusedAll(
    { ...good, submissions: [good.submissions?.[0] as Uint8Array, changed] },
    "SEQUENCER_REQUEST_SIGNATURE_INVALID",
  );
  await refusedAll(
    alice.signedSubmissions([alice.submission({ recipients: [carol.id] })], {
      signWith: generateKeyPair("signing"),
    }),
    "SEQUENCER_REQUEST_SIGNATURE_INVALID",
  );
  const mallory = new TestMember("mallory");
  await refusedAll(mallory.signedSubmissions([mallory.submission()]), "SEQUENCER_SENDER_UNKNOWN");
  assert.equal(await countRows("sequencer_events"), events + 2, "nothing stored for refused batches");

  const carols = (await collectEvents(seq.client, carol, { idleMs: 300 })).filter((e) =>
    e.messageId.startsWith("signed-"),
  );
  assert.deepEqual(carols.map((e) => e.messageId).sort(), ["signed-ok-1", "signed-ok-2"]);
  await expectCode(
    seq.client.sendBatch({ requests: [alice.sendRequest()], signed: alice.signedSubmissions([]) }),
    "INVALID_ARGUMENT",
  );
  await expectCode(
    seq.client.sendBatch({
      signed: alice.signedSubmissions(Array.from({ length: 1001 }, () => submissions[0] as Uint8Array)),
    }),
    "INVALID_ARGUMENT",
  );
});

test("a subscriber over Connect JSON gets the same events as one over gRPC", async () => {
  const json = createClient(
    SequencerService,
    createConnectTransport({
      baseUrl: `http://127.0.0.1:${seq.port}`,
      httpVersion: "2",
      useBinaryFormat: false,
    }),
  );
  const binary = await collectEvents(seq.client, carol, { idleMs: 300 });
  const viaJson = await collectEvents(json, carol, { idleMs: 300 });
  assert.ok(binary.length > 0);
  assert.deepEqual(viaJson, binary);
});

test("subscriptions are authenticated and never start before the member's registration", async () => {
  const aliceAt = registeredAt.get(alice.id) as bigint;
  await expectCode(
    collectEvents(seq.client, alice, { from: aliceAt - 1n }),
    "EVENTS_UNAVAILABLE_FOR_TIMESTAMP",
  );
  await assert.rejects(collectEvents(seq.client, alice, { from: aliceAt - 1n }), (e: unknown) => {
    assert.equal(ConnectError.from(e).code, Code.FailedPrecondition);
    return true;
  });
  // Someone else's keys under alice's id.
  const impostor = new TestMember("alice");
  Object.defineProperty(impostor, "id", { value: alice.id });
  await expectCode(collectEvents(seq.client, impostor, {}), "SEQUENCER_REQUEST_SIGNATURE_INVALID");
  // A token from far outside the sequencer's clock window.
  const old = alice.subscribeRequest({ issuedAt: nowMicros() - 3_600_000_000n });
  await expectCode(
    (async () => {
      for await (const _ of seq.client.subscribe(old)) break;
    })(),
    "SEQUENCER_REQUEST_SIGNATURE_INVALID",
  );
  const fromRegistration = await collectEvents(seq.client, alice, { from: aliceAt, count: 1 });
  assert.equal(fromRegistration[0]?.timestamp, aliceAt);
});

test("acknowledgements are stored and shown in the status", async () => {
  const events = await collectEvents(seq.client, carol, { idleMs: 200 });
  const last = events.at(-1) as SequencedEvent;
  await seq.client.acknowledge(carol.acknowledgeRequest(last.timestamp));
  await expectCode(
    seq.client.acknowledge(carol.acknowledgeRequest(last.timestamp + 10_000_000_000n)),
    "SEQUENCER_SUBMISSION_REQUEST_MALFORMED",
  );
  const status = await seq.client.getSequencerStatus({});
  const carolStatus = status.members.find((m) => m.member === carol.id);
  assert.equal(carolStatus?.acknowledged, last.timestamp);
  assert.equal(carolStatus?.lastDelivered, last.timestamp);
  assert.ok(status.headTimestamp !== undefined && status.headTimestamp >= last.timestamp);
  // alice never acknowledged: the safe point is her registration.
  assert.equal(status.safePruningTimestamp, registeredAt.get(alice.id));
  const node = await seq.runtime.status();
  const position = JSON.parse(node.positionJson);
  assert.equal(position.members[carol.id], last.timestamp.toString());
  assert.equal(position.head, status.headTimestamp?.toString());
});

test("registering the configured mediator adds it to the mediator state, in the same event", async () => {
  const mediator = new TestMember("mediator");
  const at = await mediator.register(seq.client);
  const topology = await seq.client.getTopology({});
  const state = TopologyState.replay(
    topology.synchronizerNamespace,
    topology.transactions.map((t) => ({
      signed: signedTopologyFromParts(t.transaction as NonNullable<typeof t.transaction>),
      effectiveAt: t.effectiveAt,
    })),
  );
  assert.deepEqual(state.mediators(at), [mediator.id]);
  assert.deepEqual(state.mediators(at - 1n), []);
  // Idempotent retry of the same registration.
  assert.equal(await mediator.register(seq.client), at);
  const events = await collectEvents(seq.client, mediator, { count: 1 });
  assert.equal(events[0]?.timestamp, at);
  assert.equal(events[0]?.sender, topology.sequencerId);
});
