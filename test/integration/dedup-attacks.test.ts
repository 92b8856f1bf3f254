import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import type { LockstepError } from "../../src/common/errors.ts";
import type { Completion } from "../../src/gen/lockstep/ledger/v1/completion_pb.ts";
import { runLockstep } from "../support/cli.ts";
import { completionsOf as allCompletionsOf } from "../support/exactly-once.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import {
  allocateKnownParty,
  type CommandsInit,
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";

// Command deduplication attacked as a careless or hostile application would (issue 4; Canton's
// rules in docs/ledger-api.md "Command deduplication"): one participant on a real network, Connect
// clients. Each case checks the codes, that at most one transaction committed (ACS by amount), and
// the completions the participant reports for the change.
let network: LedgerNetwork;
let clients: LedgerClients;
let alice: string;
let bob: string;

before(async () => {
  // A short tolerance: a submission lost in a crash times out (max sequencing time) in seconds.
  network = await startLedgerNetwork({ participants: 1, tolerance: "10s" });
  clients = network.clients[0] as LedgerClients;
  alice = await allocateKnownParty(network, 0, "alice");
  bob = await allocateKnownParty(network, 0, "bob");
});
after(() => network?.down());

/** "ok" or the Lockstep error code of a call. */
async function outcome(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return "ok";
  } catch (error) {
    return fromConnectError(error)?.code ?? `unknown: ${String(error)}`;
  }
}

async function failure(call: Promise<unknown>): Promise<LockstepError> {
  try {
    await call;
  } catch (error) {
    const e = fromConnectError(error);
    if (e) return e;
    throw error;
  }
  assert.fail("expected a refusal");
}

/** A unique amount per case, so that the ACS says how many times a command took effect. */
let amounts = 0;
const nextAmount = () => `${++amounts}.${String(Date.now() % 100).padStart(2, "0")}`;

async function iousOfAmount(party: string, amount: string): Promise<number> {
  const { contracts } = await clients.state.getActiveContracts({ parties: [party] });
  return contracts.filter((c) => (c.arguments as { amount?: string } | undefined)?.amount === amount).length;
}

/** The completions of a user's command id, read from the start until the stream is idle. */
async function completionsOf(userId: string, parties: string[], commandId: string): Promise<Completion[]> {
  return (await allCompletionsOf(clients, userId, parties, 1500)).filter((c) => c.commandId === commandId);
}

const succeeded = (cs: Completion[]) => cs.filter((c) => c.status.case === "succeeded").length;

test("the same command id 8 times at once (Submit and SubmitAndWait mixed): one transaction, the rest refused", async () => {
  const amount = nextAmount();
  const commandId = randomUUID();
  const commands = createIouCommand(commandId, alice, bob, { amount });
  const calls = Array.from({ length: 8 }, (_, i) =>
    outcome(
      i % 2 === 0
        ? clients.submission.submit({ commands }, { timeoutMs: 60_000 })
        : clients.commands.submitAndWait({ commands }, { timeoutMs: 60_000 }),
    ),
  );
  const outcomes = await Promise.all(calls);
  assert.equal(outcomes.filter((o) => o === "ok").length, 1, outcomes.join(", "));
  for (const o of outcomes.filter((o) => o !== "ok"))
    assert.ok(o === "DUPLICATE_COMMAND" || o === "SUBMISSION_ALREADY_IN_FLIGHT", o);
  await waitFor("the Iou", async () => ((await iousOfAmount(alice, amount)) > 0 ? true : undefined));
  assert.equal(await iousOfAmount(alice, amount), 1);
  // Synchronous refusals have no completion (Canton: the in-flight check and the deduplication
  // check answer the submission itself); the accepted one has exactly one.
  const completions = await completionsOf("test-app", [alice], commandId);
  assert.equal(completions.length, 1);
  assert.equal(succeeded(completions), 1);
  // Afterwards every resubmission is a duplicate, whichever service.
  assert.equal(await outcome(clients.submission.submit({ commands })), "DUPLICATE_COMMAND");
  assert.equal(await outcome(clients.commands.submitAndWait({ commands })), "DUPLICATE_COMMAND");
});

test("act-as is a set: order and repetition name the same change; another set or user id is another change", async () => {
  const amount = nextAmount();
  const commandId = randomUUID();
  const base = createIouCommand(commandId, alice, bob, { amount });
  const withActAs = (actAs: string[], userId = "test-app"): CommandsInit => ({ ...base, actAs, userId });
  assert.equal(await outcome(clients.commands.submitAndWait({ commands: withActAs([alice, bob]) })), "ok");
  assert.equal(
    await outcome(clients.commands.submitAndWait({ commands: withActAs([bob, alice]) })),
    "DUPLICATE_COMMAND",
  );
  assert.equal(
    await outcome(clients.commands.submitAndWait({ commands: withActAs([alice, alice, bob, bob]) })),
    "DUPLICATE_COMMAND",
  );
  assert.equal(await iousOfAmount(alice, amount), 1);
  // Canton's ChangeId is (user id, command id, act-as set): user ids are case-sensitive strings.
  assert.equal(await outcome(clients.commands.submitAndWait({ commands: withActAs([alice]) })), "ok");
  assert.equal(
    await outcome(clients.commands.submitAndWait({ commands: withActAs([alice, bob], "Test-App") })),
    "ok",
  );
  assert.equal(await iousOfAmount(alice, amount), 3);
  const completions = await completionsOf("test-app", [alice], commandId);
  assert.deepEqual(
    completions.map((c) => [...c.actAs].sort()),
    [[alice, bob].sort(), [alice]],
  );
});

test("deduplication periods: negative (INVALID_FIELD, as Canton), past the maximum, an offset after the ledger end are refused; zero and expired periods do not deduplicate", async () => {
  const amount = nextAmount();
  const commandId = randomUUID();
  const commands = createIouCommand(commandId, alice, bob, { amount });
  const first = await clients.commands.submitAndWait({ commands });
  const withPeriod = (deduplicationPeriod: NonNullable<CommandsInit["deduplicationPeriod"]>): CommandsInit =>
    // A plain object spread (CommandsInit's message branch would not take a plain Duration).
    ({ ...commands, deduplicationPeriod }) as CommandsInit;

  const negative = await failure(
    clients.commands.submitAndWait({
      commands: withPeriod({ case: "deduplicationDuration", value: { seconds: -1n } }),
    }),
  );
  assert.equal(negative.code, "INVALID_FIELD");
  assert.equal(negative.metadata.fieldName, "deduplication_period");
  const negativeNanos = await failure(
    clients.commands.submitAndWait({
      commands: withPeriod({ case: "deduplicationDuration", value: { seconds: 0n, nanos: -1 } }),
    }),
  );
  assert.equal(negativeNanos.code, "INVALID_FIELD");
  for (const seconds of [8n * 86_400n, 2n ** 62n]) {
    const tooLong = await failure(
      clients.commands.submitAndWait({
        commands: withPeriod({ case: "deduplicationDuration", value: { seconds } }),
      }),
    );
    assert.equal(tooLong.code, "INVALID_DEDUPLICATION_PERIOD");
    assert.equal(tooLong.metadata.maxDeduplicationDuration, "7d");
  }
  const { offset: end } = await clients.state.getLedgerEnd({});
  const future = await failure(
    clients.commands.submitAndWait({
      commands: withPeriod({ case: "deduplicationOffset", value: end + 1000n }),
    }),
  );
  assert.equal(future.code, "INVALID_DEDUPLICATION_PERIOD");
  // An offset before the accepted completion deduplicates; one at it does not (Canton: "after").
  assert.equal(
    await outcome(
      clients.commands.submitAndWait({
        commands: withPeriod({ case: "deduplicationOffset", value: first.offset - 1n }),
      }),
    ),
    "DUPLICATE_COMMAND",
  );
  assert.equal(await iousOfAmount(alice, amount), 1);
  assert.equal(
    await outcome(
      clients.commands.submitAndWait({
        commands: withPeriod({ case: "deduplicationOffset", value: first.offset }),
      }),
    ),
    "ok",
  );
  assert.equal(await iousOfAmount(alice, amount), 2);
  // Duration zero: nothing before now is within the period.
  assert.equal(
    await outcome(
      clients.commands.submitAndWait({ commands: withPeriod({ case: "deduplicationDuration", value: {} }) }),
    ),
    "ok",
  );
  assert.equal(await iousOfAmount(alice, amount), 3);
  // A 2 s period: a duplicate at once, accepted once the period has passed.
  const twoSeconds = withPeriod({ case: "deduplicationDuration", value: { seconds: 2n } });
  assert.equal(await outcome(clients.commands.submitAndWait({ commands: twoSeconds })), "DUPLICATE_COMMAND");
  const resubmitted = await waitFor(
    "the resubmission after the period",
    async () => {
      const o = await outcome(clients.commands.submitAndWait({ commands: twoSeconds }));
      return o === "DUPLICATE_COMMAND" ? undefined : o;
    },
    30_000,
    200,
  );
  assert.equal(resubmitted, "ok");
  assert.equal(await iousOfAmount(alice, amount), 4);
  const completions = await completionsOf("test-app", [alice], commandId);
  assert.equal(completions.length, 4);
  assert.equal(succeeded(completions), 4);
});

test("a rejected command resubmitted with the same command id and submission id commits, and its caller hears the new outcome", async () => {
  const amount = nextAmount();
  const commandId = randomUUID();
  const submissionId = randomUUID();
  const commands: CommandsInit = { ...createIouCommand(commandId, alice, bob, { amount }), submissionId };
  // A ledger time an hour ahead: sequenced, then rejected by validation (asynchronously).
  const late = { ...commands, ledgerTime: timestampFromMs(Date.now() + 3_600_000) };
  const rejected = await failure(clients.commands.submitAndWait({ commands: late }, { timeoutMs: 60_000 }));
  assert.equal(rejected.code, "LEDGER_TIME_RECORD_TIME_DELTA_TOO_LARGE");
  assert.equal(await iousOfAmount(alice, amount), 0);
  // Canton does not deduplicate against rejections. The caller must get this submission's outcome,
  // not the earlier rejection that carries the same (client-chosen) submission id.
  const accepted = await clients.commands.submitAndWait({ commands }, { timeoutMs: 60_000 });
  assert.ok(accepted.updateId);
  assert.equal(await iousOfAmount(alice, amount), 1);
  const completions = await completionsOf("test-app", [alice], commandId);
  assert.deepEqual(
    completions.map((c) => c.status.case),
    ["failed", "succeeded"],
  );
});

test("two different commands that reuse one submission id both commit, each caller with its own answer", async () => {
  const amount = nextAmount();
  const submissionId = randomUUID();
  const ids = [randomUUID(), randomUUID()];
  const results = await Promise.all(
    ids.map((id) =>
      clients.commands.submitAndWait(
        { commands: { ...createIouCommand(id, alice, bob, { amount }), submissionId } },
        { timeoutMs: 60_000 },
      ),
    ),
  );
  assert.notEqual(results[0]?.updateId, results[1]?.updateId);
  assert.equal(await iousOfAmount(alice, amount), 2);
});

test("a user reads only its own completions, even for the same parties", async () => {
  const commandId = randomUUID();
  await clients.commands.submitAndWait({
    commands: createIouCommand(commandId, alice, bob, { userId: "owner-app" }),
  });
  assert.equal((await completionsOf("owner-app", [alice], commandId)).length, 1);
  assert.equal((await completionsOf("other-app", [alice, bob], commandId)).length, 0);
});

test("a participant restart in the middle of a SubmitAndWait: one answer to the caller, the command takes effect at most once", async () => {
  const amount = nextAmount();
  const commandId = randomUUID();
  const commands = createIouCommand(commandId, alice, bob, { amount });
  const node = (verb: string, name: string) =>
    runLockstep(["node", verb, name, ...(verb === "start" ? ["--detach"] : []), "--json", ...network.cfg]);
  // Without the mediator no verdict comes: the submission stays in flight while the caller waits.
  assert.equal((await node("stop", "mediator1")).code, 0);
  const waiting = outcome(clients.commands.submitAndWait({ commands }, { timeoutMs: 120_000 }));
  await waitFor("the submission in flight", async () =>
    (await outcome(clients.submission.submit({ commands }))) === "SUBMISSION_ALREADY_IN_FLIGHT"
      ? true
      : undefined,
  );
  const pid = network.pid("participant1");
  assert.ok(pid);
  process.kill(pid, "SIGKILL");
  const answer = await waiting;
  assert.notEqual(answer, "ok");
  assert.equal((await node("start", "participant1")).code, 0);
  assert.equal((await node("start", "mediator1")).code, 0);
  // The resubmission is in flight (or refused while the node comes up) until the participant knows
  // the outcome: then a duplicate if the first committed, else it commits now.
  const resubmitted = await waitFor(
    "a decided resubmission",
    async () => {
      const o = await outcome(clients.commands.submitAndWait({ commands }, { timeoutMs: 30_000 }));
      return o === "ok" || o === "DUPLICATE_COMMAND" ? o : undefined;
    },
    120_000,
    500,
  );
  assert.ok(resubmitted === "ok" || resubmitted === "DUPLICATE_COMMAND");
  assert.equal(await iousOfAmount(alice, amount), 1);
  assert.equal(succeeded(await completionsOf("test-app", [alice], commandId)), 1);
});
