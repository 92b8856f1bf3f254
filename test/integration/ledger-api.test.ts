import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Transaction } from "../../src/gen/lockstep/ledger/v1/event_pb.ts";
import { runLockstep } from "../support/cli.ts";
import { connectJsonErrorCode, iouArgs, postConnectJson } from "../support/ledger-client.ts";
import {
  allocateKnownParty,
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";

// The Ledger API of a real network (`lockstep up --detach`, every node its own process): the
// JSON face with a plain HTTP/1.1 client, the `lockstep ledger …` commands, and a live stream.
let network: LedgerNetwork;
let p1: number;
let p2: number;
let alice: string;
let bob: string;

before(async () => {
  network = await startLedgerNetwork();
  [p1, p2] = network.participantPorts as [number, number];
});

after(() => network?.down());

const call = (port: number, procedure: string, body: unknown = {}) =>
  postConnectJson(port, `lockstep.ledger.v1.${procedure}`, body);

test("Connect JSON over HTTP/1.1: allocate, submit, ACS on both participants, ledger end, errors", async () => {
  const allocated = await call(p1, "PartyManagementService/AllocateParty", { partyIdHint: "alice" });
  assert.equal(allocated.status, 200, JSON.stringify(allocated.body));
  assert.equal(allocated.httpVersion, "1.1");
  alice = allocated.body.party as string;
  assert.match(alice, /^alice::/);
  bob = (await call(p2, "PartyManagementService/AllocateParty", { partyIdHint: "bob" })).body.party as string;
  assert.match(bob, /^bob::/);
  await waitFor("both parties known to participant1", async () => {
    const { body } = await call(p1, "PartyManagementService/ListParties");
    const parties = body.parties as { party: string; isLocal?: boolean }[];
    const local = parties.find((p) => p.party === alice)?.isLocal;
    return parties.some((p) => p.party === bob) && local ? true : undefined;
  });

  const commands = {
    userId: "json-app",
    commandId: "iou-1",
    actAs: [alice],
    create: { template: "Iou", createArguments: iouArgs(alice, bob) },
  };
  const submitted = await call(p1, "CommandService/SubmitAndWait", { commands });
  assert.equal(submitted.status, 200, JSON.stringify(submitted.body));
  assert.match(submitted.body.offset as string, /^[1-9]\d*$/, "int64 offset as a JSON string");
  const [cid] = submitted.body.createdContractIds as string[];
  assert.ok(cid);

  const acs1 = await call(p1, "StateService/GetActiveContracts", { parties: [alice] });
  assert.deepEqual(
    (acs1.body.contracts as { contractId: string; arguments: unknown; signatories: string[] }[]).map((c) => [
      c.contractId,
      c.arguments,
      c.signatories,
    ]),
    [[cid, iouArgs(alice, bob), [alice]]],
  );
  // participant2 commits on the same verdict, possibly a moment later.
  const acs2 = await waitFor("the Iou on participant2", async () => {
    const r = await call(p2, "StateService/GetActiveContracts", { parties: [bob] });
    const contracts = r.body.contracts as { contractId: string; observers: string[] }[] | undefined;
    return contracts?.length ? contracts : undefined;
  });
  assert.deepEqual(
    acs2.map((c) => [c.contractId, c.observers]),
    [[cid, [bob]]],
  );

  const end = await call(p1, "StateService/GetLedgerEnd");
  assert.equal(end.status, 200);
  assert.equal(end.body.offset, submitted.body.offset);
  assert.ok((end.body.incarnation as string).length > 0);

  const duplicate = await call(p1, "CommandService/SubmitAndWait", { commands });
  assert.equal(duplicate.status, 409, JSON.stringify(duplicate.body));
  assert.equal(duplicate.body.code, "already_exists");
  assert.equal(connectJsonErrorCode(duplicate.body), "DUPLICATE_COMMAND");
  assert.match(duplicate.body.message as string, /^DUPLICATE_COMMAND: /);

  const after = await call(p1, "StateService/GetActiveContracts", {
    parties: [alice],
    activeAtOffset: String(BigInt(end.body.offset as string) + 100n),
  });
  assert.equal(after.body.code, "out_of_range");
  assert.equal(connectJsonErrorCode(after.body), "OFFSET_AFTER_LEDGER_END");
});

test("lockstep ledger commands with --json", async () => {
  const ledger = (...args: string[]) => runLockstep(["ledger", ...args, "--json", ...network.cfg]);

  const party = await ledger("allocate-party", "carol", "--participant", "participant1");
  assert.equal(party.code, 0, party.stdout + party.stderr);
  const carol = party.json<{ party: string }>().party;
  assert.match(carol, /^carol::/);
  await waitFor("carol known to participant2", async () =>
    (await network.clients[1]?.parties.listParties({}))?.parties.some((p) => p.party === carol)
      ? true
      : undefined,
  );

  const args = JSON.stringify(iouArgs(carol, bob, "12.50"));
  const submit = ["submit", "--participant", "participant1", "--act-as", carol, "--command-id", "cli-1"];
  const created = await ledger(...submit, "--dedup", "30s", "--create", "Iou", "--args", args);
  assert.equal(created.code, 0, created.stdout + created.stderr);
  const result = created.json<{
    updateId: string;
    offset: string;
    createdContractIds: string[];
    archivedContractIds: string[];
  }>();
  assert.ok(result.updateId);
  assert.equal(typeof result.offset, "string");
  assert.equal(result.createdContractIds.length, 1);
  assert.deepEqual(result.archivedContractIds, []);
  const [iou] = result.createdContractIds as [string];

  // bob, the owner, transfers it from participant2 once participant2 has it.
  await waitFor("the Iou on participant2", async () => {
    const acs = await ledger("acs", "--participant", "participant2", "--party", bob);
    return acs.json<{ contracts: { contractId: string }[] }>().contracts.some((c) => c.contractId === iou)
      ? true
      : undefined;
  });
  const transfer = await ledger(
    "submit",
    "--participant",
    "participant2",
    "--act-as",
    bob,
    "--command-id",
    "cli-2",
    "--exercise",
    iou,
    "--choice",
    "Transfer",
    "--args",
    JSON.stringify({ newOwner: carol }),
  );
  assert.equal(transfer.code, 0, transfer.stdout + transfer.stderr);
  const transferred = transfer.json<{ createdContractIds: string[]; archivedContractIds: string[] }>();
  assert.deepEqual(transferred.archivedContractIds, [iou]);
  assert.equal(transferred.createdContractIds.length, 1);

  const acs = await waitFor("the transferred Iou on participant1", async () => {
    const r = await ledger("acs", "--participant", "participant1", "--party", carol);
    const contracts = r.json<{
      contracts: {
        contractId: string;
        template: string;
        arguments: Record<string, string>;
        signatories: string[];
        observers: string[];
      }[];
    }>().contracts;
    return contracts.some((c) => c.contractId === transferred.createdContractIds[0]) ? contracts : undefined;
  });
  const mine = acs.find((c) => c.contractId === transferred.createdContractIds[0]);
  assert.deepEqual(mine, {
    ...mine,
    template: "Iou",
    arguments: iouArgs(carol, carol, "12.50"),
    signatories: [carol],
  });
  assert.ok(!acs.some((c) => c.contractId === iou), "the transferred Iou is archived");

  const end = await ledger("end", "--participant", "participant1");
  assert.equal(end.code, 0);
  const endJson = end.json<{ offset: string; incarnation: string }>();
  assert.match(endJson.offset, /^\d+$/);
  assert.ok(endJson.incarnation);

  const duplicate = await ledger(...submit, "--create", "Iou", "--args", args);
  assert.equal(duplicate.code, 1);
  assert.equal(duplicate.json<{ error: { code: string } }>().error.code, "DUPLICATE_COMMAND");

  const badJson = await ledger(...submit, "--create", "Iou", "--args", "{not json");
  assert.equal(badJson.code, 2);
  assert.equal(badJson.json<{ error: { code: string } }>().error.code, "INVALID_ARGUMENT");
  const missingFlag = await ledger(
    "submit",
    "--participant",
    "participant1",
    "--command-id",
    "x",
    "--create",
    "Iou",
    "--args",
    "{}",
  );
  assert.equal(missingFlag.code, 2, "--act-as is required");
  const human = await runLockstep(["ledger", "end", "--participant", "participant1", ...network.cfg]);
  assert.match(human.stdout, /^offset \d+, incarnation \S+/);
});

test("GetUpdates over Connect delivers an update committed after the stream opened", async () => {
  const [c1, c2] = network.clients as [
    NonNullable<(typeof network.clients)[0]>,
    NonNullable<(typeof network.clients)[0]>,
  ];
  const dave = await allocateKnownParty(network, 0, "dave");
  const { offset } = await c2.state.getLedgerEnd({});
  const abort = new AbortController();
  const stream = c2.updates.getUpdates({ beginExclusive: offset, parties: [bob] }, { signal: abort.signal });
  const received = (async (): Promise<Transaction | undefined> => {
    for await (const r of stream) if (r.update.case === "transaction") return r.update.value;
    return undefined;
  })();
  await sleep(300);
  const submitted = await c1.commands.submitAndWait({ commands: createIouCommand("stream-1", dave, bob) });
  // An upper bound, unref'd: a pending 30 s timer kept this file's process alive 30 s after its tests.
  const tx = await Promise.race([received, sleep(30_000, undefined, { ref: false })]);
  abort.abort();
  assert.ok(tx, "an update arrived on the open stream");
  assert.equal(tx.updateId, submitted.updateId);
  assert.ok(tx.offset > offset);
  const created = tx.events[0]?.event;
  assert.equal(created?.case, "created");
  assert.equal(
    created?.case === "created" ? created.value.contract?.contractId : undefined,
    submitted.createdContractIds[0],
  );
  assert.equal(tx.commandId, "", "bob did not submit it: no command id");
});
