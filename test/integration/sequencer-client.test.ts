/**
 * The sequencer client against a real sequencer (NodeRuntime + sequencerNodeKind) on real
 * PostgreSQL: delivery in order with counters, restarts without loss or duplicates (a crash between
 * store and process included), and reconnection when the sequencer restarts.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { StringValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { LockstepError } from "../../src/common/errors.ts";
import { SendBatchResponseSchema } from "../../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { encodeMessagePayload, unpackEventMessage } from "../../src/sequencer-client/event-payload.ts";
import { sendBatchOutcome } from "../../src/sequencer-client/grpc-sequencer-transport.ts";
import { SendCoalescer } from "../../src/sequencer-client/send-coalescer.ts";
import { SequencedEventStore } from "../../src/sequencer-client/sequenced-event-store.ts";
import { createTestDb, startTestPostgres } from "../support/postgres.ts";
import {
  createMember,
  startTestSequencer,
  stopAll,
  type TestMember,
} from "../support/sequencer-client-harness.ts";
import { waitUntil } from "../support/wait.ts";

// Registered first so that it runs first: sequencer and clients stop before the cluster.
after(stopAll);
const pg = await startTestPostgres();
const sequencer = await startTestSequencer(pg);

function text(value: string): Uint8Array {
  return encodeMessagePayload(StringValueSchema, create(StringValueSchema, { value }));
}

/** Every event handled once, counters and timestamps strictly increasing, clean at the last one. */
async function assertHandledOnceInOrder(member: TestMember): Promise<void> {
  const rows = await member.handled();
  for (const [i, row] of rows.entries()) {
    assert.equal(row.times, 1, `${member.name} handled the event at ${row.timestamp} ${row.times} times`);
    const prev = rows[i - 1];
    if (prev) {
      assert.ok(row.timestamp > prev.timestamp);
      assert.ok(row.counter > prev.counter);
    }
  }
  const stored = await new SequencedEventStore(member.db).list();
  assert.deepEqual(
    stored.map((s) => [s.counter, s.event.timestamp]),
    rows.map((r) => [r.counter, r.timestamp]),
    `${member.name}: every stored event is handled, with its counter`,
  );
  assert.equal(member.client.status().clean, rows.at(-1)?.timestamp ?? null);
}

const a = await createMember(pg, sequencer, "member-a");
const b = await createMember(pg, sequencer, "member-b");

describe("sequencer client", () => {
  test("two members register, exchange messages and receive exactly their events in order", async () => {
    await a.start();
    await b.start();
    assert.match(a.client.member, /^member-a::1220[0-9a-f]{64}$/);
    assert.ok(a.client.status().registeredAt !== null);
    // B's registration is a topology event that every member, A included, applies.
    await waitUntil("A knows B", () => a.client.topology().isMember(b.client.member, 2n ** 62n));

    const m1 = await a.client.send({ recipients: [b.client.member], payload: text("hello b") });
    const m2 = await b.client.send({
      recipients: [a.client.member],
      payload: text("hello a"),
      messageId: "m2",
    });
    assert.equal(m2.messageId, "m2");
    await b.waitFor((r) => r.messageId === m1.messageId);
    await a.waitFor((r) => r.messageId === "m2");
    // Each sender also gets a receipt of its own message.
    await a.waitFor((r) => r.messageId === m1.messageId && r.sender === a.client.member);
    await b.waitFor((r) => r.messageId === "m2" && r.sender === b.client.member);

    const stored = await new SequencedEventStore(b.db).list();
    const hello = stored.find((s) => s.event.messageId === m1.messageId);
    assert.equal(hello && unpackEventMessage(hello.event, StringValueSchema)?.value, "hello b");
    assert.deepEqual(hello?.event.recipients, [b.client.member]);
    // No member sees an event that was not addressed to it (topology events go to all).
    for (const member of [a, b]) {
      for (const s of await new SequencedEventStore(member.db).list()) {
        const addressed = s.event.recipients.includes(member.client.member);
        assert.ok(
          addressed || s.event.sender === member.client.member || s.event.messageId.startsWith("topology:"),
        );
      }
      await assertHandledOnceInOrder(member);
    }
    // The clean timestamp is acknowledged (signed) and the sequencer records it.
    await waitUntil("A acknowledged", () => a.client.status().acknowledged === a.client.status().clean);

    // A time proof: an empty event for the sender only, advancing its sequencer time.
    const before = a.client.sequencerTime() ?? 0n;
    const proof = await a.client.requestTimeProof();
    await a.waitFor((r) => r.messageId === proof.messageId);
    assert.ok((a.client.sequencerTime() ?? 0n) > before);
    assert.ok(!(await b.handled()).some((r) => r.messageId === proof.messageId));
    assert.deepEqual([a.fatals, b.fatals], [[], []]);
  });

  test("a restarted client loses nothing and duplicates nothing, a crash between store and process included", async () => {
    await a.stop();
    const sentWhileDown = [];
    for (let i = 0; i < 3; i++) {
      sentWhileDown.push(
        (await b.client.send({ recipients: [a.client.member], payload: text(`down ${i}`) })).messageId,
      );
    }
    await a.start();
    for (const id of sentWhileDown) await a.waitFor((r) => r.messageId === id);
    await assertHandledOnceInOrder(a);

    // The handler fails once: the event is stored, not processed, and the client stops (fatal).
    a.failOnMessageId = "crash-me";
    await b.client.send({ recipients: [a.client.member], payload: text("crash"), messageId: "crash-me" });
    await waitUntil("A failed", () => a.fatals.length === 1);
    assert.equal(a.fatals[0]?.code, "SEQUENCER_CLIENT_HANDLER_FAILED");
    const failed = a.client.status();
    assert.ok(failed.failed && failed.lastStored !== null && failed.clean !== null);
    assert.ok(failed.lastStored > failed.clean, "stored but not processed");
    assert.ok(!(await a.handled()).some((r) => r.messageId === "crash-me"));
    await a.stop();

    // Meanwhile more traffic; the restart replays the stored event once, then continues.
    await b.client.send({
      recipients: [a.client.member],
      payload: text("after crash"),
      messageId: "after-crash",
    });
    a.fatals.length = 0;
    await a.start();
    await a.waitFor((r) => r.messageId === "after-crash");
    assert.ok((await a.handled()).some((r) => r.messageId === "crash-me"));
    await assertHandledOnceInOrder(a);
    assert.deepEqual(a.fatals, []);
  });

  test("a sequencer restart while subscribed: the client reconnects with backoff and continues", async () => {
    await waitUntil("A connected", () => a.client.status().connected);
    const attempts = a.client.status().subscribeAttempts;
    await sequencer.stop();
    await waitUntil("A noticed", () => !a.client.status().connected);
    // A member whose first start finds no sequencer waits (with backoff) to register.
    const late = await createMember(pg, sequencer, "member-late");
    const lateStart = late.start();
    await sleep(700); // a few backoff rounds against a closed port
    assert.equal(a.client.status().lastError?.code, "SEQUENCER_UNAVAILABLE", "visible in status");
    assert.equal(late.client.status().lastError?.code, "SEQUENCER_UNAVAILABLE");
    await sequencer.start();
    await lateStart;
    assert.match(late.client.member, /^member-late::/);
    await waitUntil("A reconnected", () => a.client.status().connected);
    assert.ok(a.client.status().subscribeAttempts > attempts + 1, "retried while the sequencer was down");

    const { messageId } = await b.client.send({
      recipients: [a.client.member],
      payload: text("after restart"),
    });
    await a.waitFor((r) => r.messageId === messageId);
    await b.waitFor((r) => r.messageId === messageId);
    await assertHandledOnceInOrder(a);
    await assertHandledOnceInOrder(b);
    assert.deepEqual([a.fatals, b.fatals], [[], []]);
    assert.equal(a.client.status().lastError, null);
  });

  test("many concurrent sends share SendBatch calls and are all sequenced exactly once", async () => {
    await waitUntil("B connected", () => b.client.status().connected);
    const n = 300;
    const sent = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        a.client.send({
          recipients: [b.client.member],
          payload: text(`burst ${i}`),
          messageId: `burst-${i}`,
        }),
      ),
    );
    assert.deepEqual(
      sent.map((s) => s.messageId),
      Array.from({ length: n }, (_, i) => `burst-${i}`),
    );
    await b.waitFor((r) => r.messageId === `burst-${n - 1}`, 30_000);
    await waitUntil(
      "B got all",
      async () => (await b.handled()).filter((r) => r.messageId.startsWith("burst-")).length >= n,
      30_000,
    );
    const bursts = (await b.handled()).filter((r) => r.messageId.startsWith("burst-"));
    assert.equal(bursts.length, n);
    assert.equal(new Set(bursts.map((r) => r.messageId)).size, n, "each sequenced exactly once");
    await assertHandledOnceInOrder(b);
    // A refused submission fails its own send() only, even when it shares the SendBatch.
    const mixed = await Promise.allSettled([
      a.client.send({ recipients: [b.client.member], payload: text("ok"), messageId: "mixed-ok" }),
      a.client.send({ recipients: ["nobody::1220ab"], payload: text("x"), messageId: "mixed-bad" }),
      a.client.send({ recipients: [b.client.member], payload: text("ok"), messageId: "mixed-ok-2" }),
    ]);
    assert.deepEqual(
      mixed.map((m) => (m.status === "fulfilled" ? "ok" : (m.reason as LockstepError).code)),
      ["ok", "SEQUENCER_UNKNOWN_RECIPIENTS", "ok"],
    );
    await b.waitFor((r) => r.messageId === "mixed-ok-2");
    assert.deepEqual([a.fatals, b.fatals], [[], []]);
  });

  test("send coalescing: sends queued during a SendBatch go in the next one, each with its own outcome", async () => {
    const calls: number[] = [];
    let release: () => void = () => {};
    const marker = (value: string) => Buffer.from(value);
    // The gRPC transport's reading of each call (sendBatchOutcome) under the coalescer.
    const coalescer = new SendCoalescer({
      maxInFlight: 1,
      send: () => Promise.reject(new Error("not used")),
      sendBatch: (submissions) =>
        sendBatchOutcome("http://127.0.0.1:1", async () => {
          calls.push(submissions.length);
          if (calls.length === 1) await new Promise<void>((resolve) => (release = resolve));
          if (calls.length === 3) throw new ConnectError("connection refused", Code.Unavailable);
          return create(SendBatchResponseSchema, {
            results: submissions.map((s) =>
              Buffer.from(s).toString() === "bad"
                ? { error: { code: "STALE_WRITER_EPOCH", message: "stale", metadata: { member: "m" } } }
                : {},
            ),
          });
        }),
    });
    const first = coalescer.send(marker("ok"));
    const queued = ["ok", "bad", "ok", "ok"].map((f) =>
      coalescer.send(marker(f)).then(
        () => "ok",
        (e: LockstepError) => e.code,
      ),
    );
    release();
    await first;
    assert.deepEqual(await Promise.all(queued), ["ok", "STALE_WRITER_EPOCH", "ok", "ok"]);
    assert.deepEqual(calls, [1, 4], "one call for the first, one for the four queued meanwhile");
    // A failed call fails every send in it, as SEQUENCER_UNAVAILABLE.
    await assert.rejects(
      coalescer.send(marker("ok")),
      (e: LockstepError) => e.code === "SEQUENCER_UNAVAILABLE",
    );

    // With two calls allowed in flight, the second send goes at once; the rest wait for either.
    const inFlight: (() => void)[] = [];
    const sizes: number[] = [];
    const two = new SendCoalescer({
      maxInFlight: 2,
      send: () => Promise.reject(new Error("not used")),
      sendBatch: (submissions) =>
        sendBatchOutcome("http://127.0.0.1:1", async () => {
          sizes.push(submissions.length);
          await new Promise<void>((resolve) => inFlight.push(resolve));
          return create(SendBatchResponseSchema, { results: submissions.map(() => ({})) });
        }),
    });
    const sends = Array.from({ length: 5 }, (_, i) => two.send(marker(`s${i}`)));
    await waitUntil("two calls in flight", () => inFlight.length === 2);
    assert.deepEqual(sizes, [1, 1]);
    inFlight.shift()?.();
    await waitUntil("the three queued in one call", () => inFlight.length === 2);
    assert.deepEqual(sizes, [1, 1, 3]);
    for (const resolve of inFlight.splice(0)) resolve();
    await Promise.all(sends);
  });

  test("a second start on the same DB keeps the registration (idempotent) and member id", async () => {
    const member = a.client.member;
    const registeredAt = a.client.status().registeredAt;
    await a.stop();
    await a.start();
    assert.equal(a.client.member, member);
    assert.equal(a.client.status().registeredAt, registeredAt);
    // A DB of its own for a third member, to show registration needs nothing but the DB.
    const c = await createMember(pg, sequencer, "member-c", { db: await createTestDb(pg, "member_c") });
    await c.start();
    assert.notEqual(c.client.member, member);
  });
});
