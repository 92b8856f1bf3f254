/**
 * A hostile member against the confirmation protocol on a real network (docs/security.md
 * "Permissioned synchronizer"): a forged verdict, a stranger under the mediator's name, a party id
 * outside Canton's rules. Each was accepted before; each now changes nothing.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import pg from "pg";
import { END_OF_TIME } from "../../src/common/time.ts";
import { signedTopologyFromParts, TopologyState } from "../../src/crypto/topology.ts";
import { ApproveSchema, VerdictSchema } from "../../src/gen/lockstep/protocol/v1/confirmation_pb.ts";
import { protocolPayload } from "../../src/protocol/confirmation-messages.ts";
import { allocation, refusal } from "../support/member-attacks.ts";
import { type ParticipantNetwork, startParticipantNetwork } from "../support/participant-network.ts";
import { startTestPostgres } from "../support/postgres.ts";
import { TestMember } from "../support/sequencer-harness.ts";
import { waitFor } from "../support/wait.ts";

const cluster = await startTestPostgres();
let net: ParticipantNetwork;

before(async () => {
  net = await startParticipantNetwork(cluster, ["participant1"]);
});
after(async () => {
  await net?.stop();
});

test("a member cannot sequence a party id outside Canton's rules (a NUL byte); the others go on", async () => {
  const mallory = new TestMember("mallory");
  await mallory.register(net.sequencer.client);
  const poison = net.sequencer.client.submitTopology({ transactions: [allocation(mallory, "x\u0000y")] });
  assert.equal(await refusal(poison), "INVALID_TOPOLOGY_MAPPING");
  // participant1 still follows the synchronizer: it sees mallory's next, valid party.
  await net.sequencer.client.submitTopology({ transactions: [allocation(mallory, "fine")] });
  const party = `fine::${mallory.namespace.fingerprint}`;
  await waitFor("participant1 sees mallory's valid party", async () =>
    (await net.backend("participant1").listParties()).some((p) => p.party === party) ? true : undefined,
  );
  assert.equal(net.runtime("participant1").currentRole, "active");
});

test("a verdict from any member but the request's mediator is ignored", async () => {
  const backend = net.backend("participant1");
  const { party: alice } = await backend.allocateParty("alice");
  const eve = new TestMember("eve");
  await eve.register(net.sequencer.client);
  await net.mediator.stop(); // the request stays pending: only eve's "verdict" can come
  const members = (await net.sequencer.client.getSequencerStatus({})).members.map((m) => m.member);
  const p1 = members.find((m) => m.startsWith("participant1::")) as string;
  const iou = { issuer: alice, owner: alice, amount: "1.00", currency: "USD" };
  const command = { kind: "create" as const, template: "Iou", arguments: iou };
  await backend.submit({ userId: "app", commandId: randomUUID(), actAs: [alice], command });
  const db = new pg.Client({ connectionString: cluster.connectionUrl("participant1_pt") });
  await db.connect();
  try {
    const pendingRows = () =>
      db.query<{ request_id: string; root_hash: Buffer }>(
        "SELECT request_id::text, root_hash FROM participant_requests WHERE state = 'pending'",
      );
    // What an informee of the request knows: its id (timestamp) and root hash.
    const request = await waitFor("the request pending", async () => (await pendingRows()).rows[0]);
    const end = await backend.ledgerEnd();
    const outcome = { case: "approve" as const, value: create(ApproveSchema) };
    const verdict = create(VerdictSchema, {
      requestId: BigInt(request.request_id),
      rootHash: request.root_hash,
      outcome,
    });
    const payload = protocolPayload({ kind: "verdict", message: verdict });
    await net.sequencer.client.send(eve.sendRequest({ recipients: [p1], payload }));
    // Events are processed in order: once participant1 has eve's next event, it has had the verdict.
    await net.sequencer.client.submitTopology({ transactions: [allocation(eve, "marker")] });
    const marker = `marker::${eve.namespace.fingerprint}`;
    await waitFor("participant1 past eve's verdict", async () =>
      (await backend.listParties()).some((p) => p.party === marker) ? true : undefined,
    );
    assert.deepEqual((await pendingRows()).rows, [request], "still pending: not committed by eve");
    assert.deepEqual(await backend.ledgerEnd(), end);
  } finally {
    await db.end();
  }
});

test("registering under the mediator's name does not make a stranger a mediator; the operator's admission does", async () => {
  const client = net.sequencer.client;
  const mediators = async () => {
    const topology = await client.getTopology({});
    const entries = topology.transactions.map((t) => ({
      signed: signedTopologyFromParts(t.transaction as NonNullable<typeof t.transaction>),
      effectiveAt: t.effectiveAt,
    }));
    return TopologyState.replay(topology.synchronizerNamespace, entries).mediators(END_OF_TIME);
  };
  const before = await mediators();
  assert.equal(before.length, 1);
  const stranger = new TestMember("mediator");
  await stranger.register(client); // open onboarding: a member, but no mediator
  assert.deepEqual(await mediators(), before);
  const replacement = new TestMember("mediator");
  await client.admitMember({ member: replacement.id });
  await replacement.register(client);
  assert.deepEqual(await mediators(), [...before, replacement.id]);
});
