import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { equals } from "@bufbuild/protobuf";
import { generateKeyPair } from "../../src/crypto/keys.ts";
import { memberKeys } from "../../src/crypto/topology.ts";
import { ConfirmationRequestSchema } from "../../src/gen/lockstep/protocol/v1/confirmation_pb.ts";
import {
  type AggregatorTopology,
  type DecidedVerdict,
  InMemoryRequestStore,
  type MediatorInput,
  processMediatorEvent,
} from "../../src/mediator/confirmation-aggregator.ts";
import { parseProtocolMessage, protocolPayload } from "../../src/protocol/confirmation-messages.ts";
import {
  alice,
  bob,
  carol,
  dave,
  ns1,
  p1,
  p2,
  ROOT,
  request,
  response,
  sig1,
  signed,
  T0,
  TIMEOUT,
  tick,
  topology,
} from "../support/mediator-fixtures.ts";

async function run(
  events: MediatorInput[],
  store = new InMemoryRequestStore(),
  state: AggregatorTopology = topology,
) {
  const verdicts: DecidedVerdict[] = [];
  const ignored: string[] = [];
  for (const e of events) {
    const result = await processMediatorEvent(store, state, e);
    verdicts.push(...result.verdicts);
    if (result.ignored) ignored.push(result.ignored);
  }
  return { verdicts, ignored, store };
}

describe("confirmation aggregator", () => {
  test("approves once every confirming party approved, and sends to the informee participants", async () => {
    const r = T0;
    const { verdicts, store } = await run([
      request(r),
      response(r + 10n, r, p1, [alice]),
      response(r + 20n, r, p2, [bob]),
    ]);
    assert.equal(verdicts.length, 1);
    assert.deepEqual(verdicts[0], {
      requestId: r,
      rootHash: ROOT,
      outcome: { kind: "approve" },
      recipients: [p1, p2].sort(),
      decidedAt: r + 20n,
    });
    assert.equal(store.requests.size, 0);
  });

  test("a partial approval decides nothing", async () => {
    const { verdicts, store } = await run([request(T0), response(T0 + 1n, T0, p1, [alice])]);
    assert.deepEqual(verdicts, []);
    assert.deepEqual(store.requests.get(T0)?.approved, [alice]);
  });

  test("rejects at the first rejection, with its reason; later ones are ignored", async () => {
    const { verdicts, ignored } = await run([
      request(T0),
      response(T0 + 1n, T0, p2, [bob], { reject: "first" }),
      response(T0 + 2n, T0, p1, [alice], { reject: "second" }),
    ]);
    assert.equal(verdicts.length, 1);
    assert.deepEqual(verdicts[0]?.outcome, {
      kind: "reject",
      code: "CONTRACT_NOT_ACTIVE",
      reason: "first",
      participant: p2,
    });
    assert.match(ignored[0] ?? "", /already decided/);
  });

  test("times out on the first event past the deadline, naming the unresponsive parties", async () => {
    const deadline = T0 + TIMEOUT;
    const { verdicts } = await run([
      request(T0),
      response(T0 + 1n, T0, p1, [alice]),
      tick(deadline), // at the deadline: still open
      response(deadline, T0, p1, [alice]), // and a response at the deadline still counts
    ]);
    assert.deepEqual(verdicts, []);
    const late = await run(
      [
        request(T0),
        response(T0 + 1n, T0, p1, [alice]),
        tick(deadline + 1n),
        response(deadline + 2n, T0, p2, [bob]),
      ],
      new InMemoryRequestStore(),
    );
    assert.equal(late.verdicts.length, 1);
    assert.deepEqual(late.verdicts[0]?.outcome, {
      kind: "timeout",
      code: "MEDIATOR_SAYS_TX_TIMED_OUT",
      reason: `no approval from ${bob} before the deadline ${deadline}`,
      unresponsiveParties: [bob],
    });
    assert.equal(late.verdicts[0]?.decidedAt, deadline + 1n);
    assert.match(late.ignored[0] ?? "", /already decided/);
  });

  test("a response past the deadline is late: the timeout comes first", async () => {
    const { verdicts } = await run([
      request(T0),
      response(T0 + 1n, T0, p1, [alice]),
      response(T0 + TIMEOUT + 1n, T0, p2, [bob]),
    ]);
    assert.deepEqual(
      verdicts.map((v) => v.outcome.kind),
      ["timeout"],
    );
  });

  test("ignores responses the sender may not give: non-hosting, forged, mismatched", async () => {
    const wrongKey = generateKeyPair("signing");
    const { verdicts, ignored, store } = await run([
      request(T0),
      response(T0 + 1n, T0, p2, [alice]), // p2 does not host alice
      response(T0 + 2n, T0, p2, [bob, alice]), // one foreign party spoils the response
      response(T0 + 3n, T0, p1, [carol]), // hosted by p1 but not a confirming party
      response(T0 + 4n, T0, p1, [alice], {}, { key: wrongKey }),
      response(T0 + 5n, T0, p1, [alice], {}, { root: Buffer.alloc(32, 9) }),
      response(T0 + 6n, T0, p2, [alice], {}, { participant: p1, key: sig1 }), // p2 relays p1's
      response(T0 + 7n, T0 + 1n, p1, [alice]), // no such request
      response(T0 + 8n, T0, p2, [bob], { reject: "forged" }, { key: sig1 }),
    ]);
    assert.deepEqual(verdicts, []);
    assert.equal(ignored.length, 8);
    assert.match(ignored[0] ?? "", /does not host confirming parties/);
    assert.match(ignored[3] ?? "", /signature/);
    assert.match(ignored[4] ?? "", /root hash/);
    assert.match(ignored[5] ?? "", /names participant/);
    assert.match(ignored[6] ?? "", /unknown request/);
    assert.match(ignored[7] ?? "", /signature/);
    assert.deepEqual(store.requests.get(T0)?.approved, []);
    assert.equal(store.responses.filter((r) => r.counted).length, 0);
  });

  test("duplicate approvals change nothing; late responses after a verdict are ignored", async () => {
    const { verdicts, ignored } = await run([
      request(T0),
      response(T0 + 1n, T0, p1, [alice]),
      response(T0 + 2n, T0, p1, [alice]),
      response(T0 + 3n, T0, p2, [bob]),
      response(T0 + 4n, T0, p2, [bob]),
      response(T0 + 5n, T0, p2, [bob], { reject: "too late" }),
      tick(T0 + TIMEOUT + 10n),
    ]);
    assert.deepEqual(
      verdicts.map((v) => v.outcome.kind),
      ["approve"],
    );
    assert.equal(ignored.length, 3);
    assert.match(ignored[0] ?? "", /already responded/);
  });

  test("a party answers once: a rejection after its approval is ignored (equivocation), not the other parties'", async () => {
    const { verdicts, ignored, store } = await run([
      request(T0),
      response(T0 + 1n, T0, p1, [alice]),
      response(T0 + 2n, T0, p1, [alice], { reject: "changed my mind" }),
    ]);
    assert.deepEqual(verdicts, []);
    assert.match(ignored[0] ?? "", /already responded: .*alice/);
    assert.deepEqual(store.requests.get(T0)?.approved, [alice]);
    // The other confirming party's rejection still rejects.
    const last = await run([response(T0 + 4n, T0, p2, [bob], { reject: "bob says no" })], store);
    assert.equal(last.verdicts[0]?.outcome.kind, "reject");
  });

  test("a response naming a pending party beside an answered one counts (Canton: the pending ones)", async () => {
    const { verdicts } = await run([
      request(T0, [alice, bob, carol]),
      response(T0 + 1n, T0, p1, [alice]),
      response(T0 + 2n, T0, p1, [alice, carol], { reject: "carol says no" }),
    ]);
    assert.equal(verdicts[0]?.outcome.kind === "reject" && verdicts[0].outcome.reason, "carol says no");
  });

  test("a request not sent to every informee participant is malformed", async () => {
    const mediator = "mediator::x";
    const { verdicts } = await run([
      { ...request(T0), recipients: [mediator, p1] },
      { ...request(T0 + 1n), recipients: [mediator, p2] },
    ]);
    assert.equal(verdicts.length, 1);
    assert.equal(verdicts[0]?.requestId, T0);
    assert.deepEqual(
      verdicts[0]?.outcome.kind === "reject" && verdicts[0].outcome.code,
      "MEDIATOR_RECEIVED_MALFORMED_MESSAGE",
    );
    assert.match(
      (verdicts[0]?.outcome.kind === "reject" && verdicts[0].outcome.reason) || "",
      new RegExp(p2),
    );
  });

  test("rejects at once a request that can never be approved", async () => {
    const { verdicts } = await run([
      request(T0, [dave]),
      request(T0 + 1n, [alice], { sender: p2 }),
      request(T0 + 2n, []),
    ]);
    assert.deepEqual(
      verdicts.map((v) => v.outcome.kind === "reject" && v.outcome.code),
      [
        "MEDIATOR_INVALID_MESSAGE",
        "MEDIATOR_RECEIVED_MALFORMED_MESSAGE",
        "MEDIATOR_RECEIVED_MALFORMED_MESSAGE",
      ],
    );
    // The submitter (the sender) learns of it too.
    assert.deepEqual(verdicts[1]?.recipients, [p1, p2].sort());
  });

  test("the same events give the same verdicts, also when replayed onto a restored state", async () => {
    const events: MediatorInput[] = [
      request(T0),
      request(T0 + 1n, [alice]),
      request(T0 + 2n, [bob]),
      response(T0 + 3n, T0, p1, [alice]),
      response(T0 + 4n, T0 + 2n, p2, [bob], { reject: "no" }),
      request(T0 + 5n, [alice, bob]),
      response(T0 + 6n, T0 + 5n, p1, [alice]),
      response(T0 + 7n, T0 + 5n, p2, [bob]),
      tick(T0 + TIMEOUT + 2n), // times out T0 and T0 + 1n, in request order
      response(T0 + TIMEOUT + 3n, T0, p2, [bob]),
    ];
    const first = await run(events);
    const second = await run(events);
    assert.deepEqual(second.verdicts, first.verdicts);
    assert.deepEqual(
      first.verdicts.map((v) => [v.requestId - T0, v.outcome.kind]),
      [
        [2n, "reject"],
        [5n, "approve"],
        [0n, "timeout"],
        [1n, "timeout"],
      ],
    );
    // A crash after event 5: the state as of then, plus the rest replayed, gives the rest.
    const restored = await run(events.slice(0, 5));
    const rest = await run(events.slice(5), restored.store);
    assert.deepEqual([...restored.verdicts, ...rest.verdicts], first.verdicts);
  });

  test("protocol messages round-trip through an EventPayload; other payloads are not theirs", () => {
    const req = request(T0).message;
    const parsed = parseProtocolMessage(protocolPayload(req));
    assert.equal(parsed?.kind, "request");
    assert.ok(parsed?.kind === "request" && equals(ConfirmationRequestSchema, parsed.message, req.message));
    assert.equal(parseProtocolMessage(new Uint8Array()), undefined);
    assert.equal(parseProtocolMessage(Buffer.from("not a protobuf at all")), undefined);
  });
});

describe("confirmation aggregator across a participant's key rotation", () => {
  // p1 rotates sig1 → newSig1: announced at T0 + 5 (MemberKeys [sig1, newSig1]), sig1 revoked at
  // T0 + 10 (MemberKeys [newSig1]); real transactions signed with p1's namespace key.
  const newSig1 = generateKeyPair("signing");
  const ANNOUNCED = T0 + 5n;
  const REVOKED = T0 + 10n;
  const rotated = topology
    .apply(signed(memberKeys(p1, ns1, [sig1, newSig1]), ns1, 2), ANNOUNCED)
    .apply(signed(memberKeys(p1, ns1, [newSig1]), ns1, 3), REVOKED);

  test("after the revocation a response signed with the old key is ignored; one with the new key counts", async () => {
    const { verdicts, ignored, store } = await run(
      [
        request(T0),
        response(REVOKED + 1n, T0, p1, [alice], {}, { key: sig1 }),
        response(REVOKED + 2n, T0, p2, [bob]),
      ],
      new InMemoryRequestStore(),
      rotated,
    );
    assert.deepEqual(verdicts, []);
    assert.deepEqual(ignored, [`response of ${p1} for ${T0}: its signature does not verify`]);
    assert.deepEqual(store.requests.get(T0)?.approved, [bob]);
    assert.deepEqual(
      store.responses.map((r) => [r.sender, r.counted, r.note]),
      [
        [p1, false, "its signature does not verify"],
        [p2, true, undefined],
      ],
    );
    // The same response signed with the new key decides the request.
    const next = await processMediatorEvent(
      store,
      rotated,
      response(REVOKED + 3n, T0, p1, [alice], {}, { key: newSig1 }),
    );
    assert.equal(next.ignored, undefined);
    assert.deepEqual(
      next.verdicts.map((v) => [v.requestId, v.outcome.kind, v.decidedAt]),
      [[T0, "approve", REVOKED + 3n]],
    );
  });

  test("a rejection signed with the revoked key does not reject", async () => {
    const { verdicts, ignored } = await run(
      [
        request(T0),
        response(REVOKED + 1n, T0, p1, [alice], { reject: "with a revoked key" }, { key: sig1 }),
        response(REVOKED + 2n, T0, p1, [alice], {}, { key: newSig1 }),
        response(REVOKED + 3n, T0, p2, [bob]),
      ],
      new InMemoryRequestStore(),
      rotated,
    );
    assert.match(ignored[0] ?? "", /its signature does not verify/);
    assert.deepEqual(
      verdicts.map((v) => v.outcome.kind),
      ["approve"],
    );
  });

  test("responses sequenced before the revocation count with the old key, also on replay", async () => {
    const events = [
      request(T0),
      response(T0 + 1n, T0, p1, [alice], {}, { key: sig1 }), // before the announcement
      response(T0 + 2n, T0, p2, [bob]),
      request(T0 + 3n),
      response(ANNOUNCED + 1n, T0 + 3n, p1, [alice], {}, { key: sig1 }), // old key, both listed
      response(ANNOUNCED + 2n, T0 + 3n, p2, [bob]),
      request(T0 + 4n, [alice]),
      response(ANNOUNCED + 3n, T0 + 4n, p1, [alice], {}, { key: newSig1 }), // new key, both listed
    ];
    // First processed before the revocation was sequenced (topology: announcement only), then
    // replayed (after a restore, say) with the topology that includes the revocation.
    const announcedOnly = topology.apply(signed(memberKeys(p1, ns1, [sig1, newSig1]), ns1, 2), ANNOUNCED);
    const first = await run(events, new InMemoryRequestStore(), announcedOnly);
    const replay = await run(events, new InMemoryRequestStore(), rotated);
    assert.deepEqual(first.ignored, []);
    assert.deepEqual(
      first.verdicts.map((v) => [v.requestId - T0, v.outcome.kind]),
      [
        [0n, "approve"],
        [3n, "approve"],
        [4n, "approve"],
      ],
    );
    assert.deepEqual(replay.verdicts, first.verdicts);
    assert.deepEqual(replay.ignored, []);
    assert.deepEqual(replay.store.responses, first.store.responses);
    // And the replay did judge with the revocation in its topology (sig1 no longer listed after it).
    assert.deepEqual(
      rotated.signingKeysOf(p1, REVOKED + 1n).map((k) => k.fingerprint),
      [newSig1.fingerprint],
    );
  });
});
