import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { silentLogger } from "../../src/common/logging.ts";
import { NodeServer } from "../../src/node/node-server.ts";
import { ledgerApiRoutes } from "../../src/participant/ledger-api-service.ts";
import { connectJsonErrorCode, iouArgs, ledgerClients, postConnectJson } from "../support/ledger-client.ts";
import { FakeLedgerBackend } from "../support/ledger-fake-backend.ts";

// The service's mapping and streaming against an in-memory backend; ledger-api.test.ts runs the
// same API against a real network.
let backend: FakeLedgerBackend;
let server: NodeServer;
let port: number;

before(async () => {
  backend = new FakeLedgerBackend();
  server = new NodeServer({
    node: "participant-test",
    port: 0,
    logger: silentLogger(),
    health: () => ({ node: "participant-test", kind: "participant", status: "active" }),
    routes: ledgerApiRoutes(backend),
  });
  port = await server.start();
});

after(() => server.stop());

const commands = (commandId: string, party: string) => ({
  userId: "app",
  commandId,
  actAs: [party],
  deduplicationDuration: "30s",
  create: { template: "Iou", createArguments: iouArgs(party, party) },
});

/** The same command as a protobuf-es init shape, for the Connect clients. */
const commandsInit = (commandId: string, party: string) => ({
  userId: "app",
  commandId,
  actAs: [party],
  command: { case: "create" as const, value: { template: "Iou", createArguments: iouArgs(party, party) } },
});

test("Connect JSON over plain HTTP/1.1: parties, submit, ACS, ledger end, errors", async () => {
  const alloc = await postConnectJson(port, "lockstep.ledger.v1.PartyManagementService/AllocateParty", {
    partyIdHint: "alice",
  });
  assert.equal(alloc.httpVersion, "1.1");
  assert.equal(alloc.status, 200);
  const alice = alloc.body.party as string;
  assert.equal(alice, "alice::1220fake");

  const submitted = await postConnectJson(port, "lockstep.ledger.v1.CommandService/SubmitAndWait", {
    commands: commands("c1", alice),
  });
  assert.equal(submitted.status, 200, JSON.stringify(submitted.body));
  assert.equal(submitted.body.offset, "1", "int64 as a JSON string");
  assert.equal((submitted.body.createdContractIds as string[]).length, 1);
  const completion = submitted.body.completion as Record<string, unknown>;
  assert.deepEqual(completion.succeeded, {});
  assert.equal(completion.deduplicationDuration, "30s");
  assert.equal(completion.recordTime, "2023-11-14T22:13:20.000456Z");
  assert.deepEqual(backend.calls[0]?.deduplicationPeriod, { kind: "duration", durationMs: 30_000 });

  const acs = await postConnectJson(port, "lockstep.ledger.v1.StateService/GetActiveContracts", {
    parties: [alice],
  });
  assert.equal(acs.status, 200);
  const [contract] = acs.body.contracts as Record<string, unknown>[];
  assert.deepEqual(contract?.arguments, iouArgs(alice, alice));
  assert.equal(contract?.template, "Iou");
  assert.equal(contract?.createdOffset, "1");

  const end = await postConnectJson(port, "lockstep.ledger.v1.StateService/GetLedgerEnd", {});
  assert.deepEqual(end.body, { offset: "1", incarnation: "inc-1" });

  const dup = await postConnectJson(port, "lockstep.ledger.v1.CommandService/SubmitAndWait", {
    commands: commands("c1", alice),
  });
  assert.equal(dup.status, 409);
  assert.equal(dup.body.code, "already_exists");
  assert.equal(connectJsonErrorCode(dup.body), "DUPLICATE_COMMAND");
  assert.equal(dup.headers["lockstep-error-code"], "DUPLICATE_COMMAND");

  const future = await postConnectJson(port, "lockstep.ledger.v1.StateService/GetActiveContracts", {
    parties: [alice],
    activeAtOffset: "99",
  });
  assert.equal(future.body.code, "out_of_range");
  assert.equal(connectJsonErrorCode(future.body), "OFFSET_AFTER_LEDGER_END");

  const missing = await postConnectJson(port, "lockstep.ledger.v1.CommandService/SubmitAndWait", {
    commands: { userId: "app", actAs: [alice], create: { template: "Iou" } },
  });
  assert.equal(missing.status, 400);
  assert.equal(connectJsonErrorCode(missing.body), "INVALID_ARGUMENT");

  const stale = await postConnectJson(port, "lockstep.ledger.v1.StateService/GetLedgerEnd", {
    incarnation: "old",
  });
  assert.equal(connectJsonErrorCode(stale.body), "PARTICIPANT_INCARNATION_CHANGED");
});

test("GetUpdates and CompletionStream deliver what commits after they opened, and end on abort", async () => {
  const clients = ledgerClients(port);
  const { party } = await clients.parties.allocateParty({ partyIdHint: "bob" });
  const { offset: start } = await clients.state.getLedgerEnd({});
  const abort = new AbortController();
  const updates = clients.updates.getUpdates(
    { beginExclusive: start, parties: [party] },
    { signal: abort.signal },
  );
  const completions = clients.completions.completionStream(
    { beginExclusive: start, userId: "app", parties: [party] },
    { signal: abort.signal },
  );
  const firstUpdate = updates[Symbol.asyncIterator]().next();
  const firstCompletion = completions[Symbol.asyncIterator]().next();
  await sleep(100);
  const result = await clients.commands.submitAndWait({ commands: commandsInit("c2", party) });

  const update = await firstUpdate;
  assert.equal(update.done, false);
  const tx = update.value?.update.case === "transaction" ? update.value.update.value : undefined;
  assert.equal(tx?.updateId, result.updateId);
  assert.equal(tx?.offset, result.offset);
  const event = tx?.events[0]?.event;
  assert.equal(event?.case, "created");
  assert.deepEqual(
    event?.case === "created" ? event.value.contract?.arguments : undefined,
    iouArgs(party, party),
  );
  const completion = await firstCompletion;
  const value = completion.value?.response;
  assert.equal(value?.case === "completion" ? value.value.commandId : undefined, "c2");

  abort.abort();
  await assert.rejects(
    (async () => {
      for await (const _ of updates) {
        // drain
      }
    })(),
    (e: unknown) => e instanceof ConnectError && e.code === Code.Canceled,
  );
  // The server noticed the client going and ended both backend iterators.
  for (let i = 0; i < 50 && backend.openStreams > 0; i++) await sleep(20);
  assert.equal(backend.openStreams, 0);
});

test("a bounded GetUpdates ends by itself; an error before the first update carries its code", async () => {
  const clients = ledgerClients(port);
  const seen: bigint[] = [];
  for await (const r of clients.updates.getUpdates({ beginExclusive: 0n, endInclusive: 1n, parties: [] })) {
    if (r.update.case === "transaction") seen.push(r.update.value.offset);
  }
  assert.deepEqual(seen, [1n]);
  const stream = clients.updates.getUpdates({ beginExclusive: 1000n, parties: [] });
  await assert.rejects(
    (async () => {
      for await (const _ of stream) {
        // drain
      }
    })(),
    (e: unknown) => fromConnectError(e)?.code === "OFFSET_AFTER_LEDGER_END",
  );
});

test("stopping the node ends open streams", async () => {
  const clients = ledgerClients(port);
  const stream = clients.updates.getUpdates({ beginExclusive: 0n, parties: [] });
  const drained = (async () => {
    let n = 0;
    for await (const _ of stream) n++;
    return n;
  })();
  await sleep(200);
  const stopped = Date.now();
  await server.stop();
  const outcome = await drained.then(
    (n) => `ended after ${n}`,
    (e: unknown) => (e instanceof ConnectError ? Code[e.code] : String(e)),
  );
  assert.ok(Date.now() - stopped < 2000, "stopped promptly");
  assert.match(outcome, /Unavailable|ended after/);
});
