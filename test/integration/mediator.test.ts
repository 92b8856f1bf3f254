import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { validateConfig } from "../../src/common/config.ts";
import { configNodes, type NodeEntry } from "../../src/common/config-schema.ts";
import { silentLogger } from "../../src/common/logging.ts";
import { nodeBaseUrl } from "../../src/common/rpc-client.ts";
import { mediatorNodeKind } from "../../src/mediator/mediator-node.ts";
import { NodeRuntime } from "../../src/node/node-runtime.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { TestParticipant } from "../support/mediator-participants.ts";
import { createTestDb, startTestPostgres } from "../support/postgres.ts";
import { startTestSequencer, type TestSequencer } from "../support/sequencer-harness.ts";
import { waitUntil } from "../support/wait.ts";

// A real sequencer, a real mediator node and two test participants (plain sequencer-client
// members): p1 hosts alice, p2 hosts bob. Participant response timeout 2 s, so timeouts are quick.
// Cleaned up last, in this file's own `after`: nodes still querying must not see the server go first.
const pg = await startTestPostgres({ autoCleanup: false });
const logger = silentLogger("mediator-test");
const mediatorDatabase = "mediator_it";
const dataDir = mkdtempSync(join(tmpdir(), "lockstep-mediator-"));

let sequencer: TestSequencer;
let mediator: NodeRuntime | undefined;
let mediatorId: string;
let p1: TestParticipant;
let p2: TestParticipant;
let alice: string;
let bob: string;

async function startMediator(): Promise<NodeRuntime> {
  const config = validateConfig({
    "data-dir": dataDir,
    synchronizer: {
      id: "sync1",
      parameters: { "participant-response-timeout": "2s" },
      sequencer: { name: "sequencer", port: sequencer.port },
      mediator: {
        name: "mediator",
        port: 4002,
        storage: { url: pg.connectionUrl(mediatorDatabase), replication: { check: "off" } },
      },
    },
  });
  const entry = configNodes(config).find((n) => n.kind === "mediator") as NodeEntry;
  const runtime = new NodeRuntime({ entry, config, dataDir, logger, definition: mediatorNodeKind, port: 0 });
  await runtime.start();
  assert.equal(runtime.currentRole, "active", (await runtime.status()).lastError?.message);
  return runtime;
}

async function mediatorPosition(): Promise<{ clean: string | null; openRequests: number }> {
  return JSON.parse((await (mediator as NodeRuntime).status()).positionJson);
}

/** Waits until the mediator's clean timestamp reached `at`: it processed that event and what came before. */
async function processedBy(at: bigint): Promise<void> {
  await waitUntil(
    `the mediator processed ${at}`,
    async () => BigInt((await mediatorPosition()).clean ?? 0) >= at,
  );
}

/** p1 submits a request with alice and bob confirming; both participants must receive it. */
async function submit() {
  const request = await p1.submitRequest({
    informees: [alice, bob],
    confirmingParties: [alice, bob],
    recipients: [p1.member, p2.member, mediatorId],
  });
  await p2.awaitRequest(request.requestId);
  return request;
}

before(async () => {
  sequencer = await startTestSequencer(pg, { parameters: { "participant-response-timeout": "2s" } });
  await pg.ensureDatabase(mediatorDatabase);
  mediator = await startMediator();
  const url = nodeBaseUrl(sequencer.port);
  p1 = await TestParticipant.start({
    db: await createTestDb(pg, "p1"),
    name: "p1",
    sequencerUrl: url,
    logger,
  });
  p2 = await TestParticipant.start({
    db: await createTestDb(pg, "p2"),
    name: "p2",
    sequencerUrl: url,
    logger,
  });
  // The sequencer lists the configured mediator in the MediatorDomainState when it registers.
  mediatorId = await p1.waitFor(
    "the mediator in topology",
    () => p1.client.topology().mediators(2n ** 63n - 1n)[0],
  );
});

after(async () => {
  await p1?.stop();
  await p2?.stop();
  await mediator?.stop();
  await sequencer?.stop();
  await pg.cleanup();
  rmSync(dataDir, { recursive: true, force: true });
});

test("rejects at once a request whose confirming party no participant hosts", async () => {
  const nobody = p1.partyId("nobody");
  const { requestId } = await p1.submitRequest({
    informees: [nobody],
    confirmingParties: [nobody],
    recipients: [p1.member, mediatorId],
  });
  const verdict = await p1.awaitVerdict(requestId);
  assert.equal(verdict.outcome.case, "reject");
  assert.equal(verdict.outcome.value.code, "MEDIATOR_INVALID_MESSAGE");
  assert.match(verdict.outcome.value.reason, /not hosted/);
  assert.equal((await mediatorPosition()).openRequests, 0);
});

describe("with alice on p1 and bob on p2", () => {
  before(async () => {
    alice = await p1.allocateParty("alice");
    bob = await p2.allocateParty("bob");
  });

  test("approves once both confirming participants approved; the verdict reaches both", async () => {
    const { requestId, rootHash } = await submit();
    await p1.respond({ mediator: mediatorId, requestId, rootHash, parties: [alice] });
    await p2.respond({ mediator: mediatorId, requestId, rootHash, parties: [bob] });
    const verdict = await p1.awaitVerdict(requestId);
    assert.equal(verdict.outcome.case, "approve");
    assert.deepEqual(Buffer.from(verdict.rootHash), rootHash);
    assert.equal((await p2.awaitVerdict(requestId)).outcome.case, "approve");
    const event = p1.verdicts(requestId)[0]?.event;
    assert.equal(event?.sender, mediatorId);
    assert.deepEqual([...(event?.recipients ?? [])].sort(), [p1.member, p2.member].sort());
  });

  test("rejects with the first rejection's reason", async () => {
    const { requestId, rootHash } = await submit();
    const reject = (reason: string) => ({ code: "CONTRACT_NOT_ACTIVE", reason });
    await p2.respond({ mediator: mediatorId, requestId, rootHash, parties: [bob], reject: reject("first") });
    const second = await p1.respond({
      mediator: mediatorId,
      requestId,
      rootHash,
      parties: [alice],
      reject: reject("second"),
    });
    const verdict = await p1.awaitVerdict(requestId);
    assert.equal(verdict.outcome.case, "reject");
    assert.equal(verdict.outcome.value.reason, "first");
    assert.equal(verdict.outcome.value.participant, p2.member);
    // Deterministic: once the mediator processed the second rejection, any other verdict it would
    // send comes from that processing; none did.
    await processedBy(second);
    assert.equal(p1.verdicts(requestId).length, 1);
  });

  test("times out by itself when a confirming participant does not answer", async () => {
    const { requestId, rootHash } = await submit();
    await p1.respond({ mediator: mediatorId, requestId, rootHash, parties: [alice] });
    assert.equal((await mediatorPosition()).openRequests, 1);
    // Nobody sends anything more: the mediator's own time proofs make the timeout fire.
    const verdict = await p2.awaitVerdict(requestId, 10_000);
    assert.equal(verdict.outcome.case, "timeout");
    assert.equal(verdict.outcome.value.code, "MEDIATOR_SAYS_TX_TIMED_OUT");
    assert.deepEqual(verdict.outcome.value.unresponsiveParties, [bob]);
    const decidedAt = p2.verdicts(requestId)[0]?.event.timestamp ?? 0n;
    assert.ok(decidedAt > requestId + 2_000_000n, "not before the deadline");
    // The approval after the timeout is late and changes nothing.
    const late = await p2.respond({ mediator: mediatorId, requestId, rootHash, parties: [bob] });
    await processedBy(late);
    assert.equal(p2.verdicts(requestId).length, 1);
    assert.equal((await mediatorPosition()).openRequests, 0);
  });

  test("a mediator restart in the middle of a request still reaches the verdict, exactly once", async () => {
    const { requestId, rootHash } = await submit();
    await p1.respond({ mediator: mediatorId, requestId, rootHash, parties: [alice] });
    await (mediator as NodeRuntime).stop();
    mediator = undefined;
    // While the mediator is down, bob's approval is sequenced; the mediator reads it on restart.
    await p2.respond({ mediator: mediatorId, requestId, rootHash, parties: [bob] });
    mediator = await startMediator();
    const verdict = await p1.awaitVerdict(requestId);
    assert.equal(verdict.outcome.case, "approve");
    await p2.awaitVerdict(requestId);
    // Once the restarted mediator processed its own verdict's receipt, it knows the verdict was
    // sequenced and never sends it again.
    await processedBy(p2.verdicts(requestId)[0]?.event.timestamp ?? 0n);
    assert.equal(p1.verdicts(requestId).length, 1);
    assert.equal(p2.verdicts(requestId).length, 1);
    const position = await mediatorPosition();
    assert.equal(position.openRequests, 0);
    assert.ok(BigInt(position.clean ?? 0) > requestId);
  });

  test("a verdict decided but not seen sequenced is sent again on restart (a no-op for participants)", async () => {
    const { requestId, rootHash } = await submit();
    await p1.respond({ mediator: mediatorId, requestId, rootHash, parties: [alice] });
    await p2.respond({ mediator: mediatorId, requestId, rootHash, parties: [bob] });
    await p1.awaitVerdict(requestId);
    await (mediator as NodeRuntime).stop();
    mediator = undefined;
    // As if it crashed after deciding, before its verdict's receipt was processed.
    const db = createPgDb({ connectionString: pg.connectionUrl(mediatorDatabase) });
    try {
      const updated = await db.execute(
        "UPDATE mediator_requests SET verdict_sequenced_at = NULL WHERE request_id = $1",
        [requestId],
      );
      assert.equal(updated, 1);
    } finally {
      await db.close();
    }
    mediator = await startMediator();
    await p1.waitFor("the re-sent verdict", () => (p1.verdicts(requestId).length === 2 ? true : undefined));
    const [first, second] = p1.verdicts(requestId);
    assert.deepEqual(second?.verdict, first?.verdict, "a re-sent verdict is identical");
  });
});
