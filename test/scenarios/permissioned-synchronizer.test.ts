/**
 * The permissioned synchronizer (docs/security.md "Permissioned synchronizer"), through the CLI and
 * real nodes: with `synchronizer.onboarding: allow-list` (the default) the launcher admits the nodes
 * of its config, a stranger's registration is refused, a participant started with --no-admit waits
 * with the refusal in its status until `synchronizer admit`, a revoked member's sends, subscriptions
 * (an open one included) and registration are refused, and the allow-list survives a restart.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { createNodeClient, nodeBaseUrl } from "../../src/common/rpc-client.ts";
import { SequencerService } from "../../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { runLockstep, type TestNetworkConfig, writeTestConfig } from "../support/cli.ts";
import { type LedgerClients, ledgerClients } from "../support/ledger-client.ts";
import { createIouCommand } from "../support/ledger-network.ts";
import { type SequencerClient, TestMember } from "../support/sequencer-harness.ts";
import { waitFor } from "../support/wait.ts";

interface NodeStatus {
  name: string;
  role: string | null;
  position: { subscriptionCheck?: string; notAdmitted?: string } | null;
  lastError: { code: string; message: string; remedy: string } | null;
}

interface Admission {
  member: string;
  state: string;
  changedAt: string;
  changedBy: string;
  registeredAt: string | null;
}

let net: TestNetworkConfig;
let sequencer: SequencerClient;
let p1: LedgerClients;
let p2: LedgerClients;
const cfg = () => ["--config", net.configPath];

async function cli(args: string[]) {
  const result = await runLockstep([...args, "--json", ...cfg()]);
  assert.equal(result.code, 0, `${args.join(" ")}: ${result.stdout}${result.stderr}`);
  return result;
}

async function nodeStatus(name: string): Promise<NodeStatus> {
  const nodes = (await cli(["status"])).json<{ nodes: NodeStatus[] }>().nodes;
  return nodes.find((n) => n.name === name) as NodeStatus;
}

async function members(): Promise<{ onboarding: string; members: Admission[] }> {
  return (await cli(["synchronizer", "members"])).json();
}

/** The registry code a sequencer call failed with (and its gRPC status). */
async function refusal(call: Promise<unknown>): Promise<{ code: string | undefined; grpc: Code }> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof ConnectError, String(error));
    return { code: fromConnectError(error)?.code, grpc: error.code };
  }
  assert.fail("the call was not refused");
}

async function subscribed(name: string): Promise<NodeStatus> {
  return waitFor(`${name} subscribed`, async () => {
    const s = await nodeStatus(name);
    return s.position?.subscriptionCheck === "passed" ? s : undefined;
  });
}

before(async () => {
  net = await writeTestConfig(2);
  sequencer = createNodeClient(SequencerService, nodeBaseUrl(net.ports.sequencer));
  p1 = ledgerClients(net.ports.participants[0] as number);
  p2 = ledgerClients(net.ports.participants[1] as number);
});

after(async () => {
  await runLockstep(["down", ...cfg()]);
  rmSync(net.dir, { recursive: true, force: true });
});

const intruder = new TestMember("intruder");

test("the launcher admits the config's nodes; a stranger's registration is refused", async () => {
  for (const node of ["sequencer1", "mediator1", "participant1"]) {
    await cli(["node", "start", node, "--detach"]);
  }
  await subscribed("participant1");
  const list = await members();
  assert.equal(list.onboarding, "allow-list", "allow-list is the default");
  const admitted = list.members.filter((m) => m.state === "admitted").map((m) => m.member.split("::")[0]);
  assert.deepEqual(admitted.sort(), ["mediator1", "participant1"]);
  for (const m of list.members) {
    assert.equal(m.changedBy, "operator");
    assert.ok(m.registeredAt !== null, `${m.member} registered`);
  }

  const refused = await refusal(intruder.register(sequencer));
  assert.deepEqual(refused, {
    code: "TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED",
    grpc: Code.FailedPrecondition,
  });
  assert.ok(!(await members()).members.some((m) => m.member === intruder.id), "nothing recorded for it");
});

let participant2 = "";

test("an unadmitted participant waits with the refusal in its status; admitted, it registers and transacts", async () => {
  await cli(["node", "start", "participant2", "--detach", "--no-admit"]);
  const waiting = await waitFor("participant2 refused", async () => {
    const s = await nodeStatus("participant2");
    return s.lastError?.code === "TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED" ? s : undefined;
  });
  // Not failed: it keeps asking, and says why it is not on the synchronizer and what to do.
  assert.equal(waiting.role, "active");
  participant2 = waiting.position?.notAdmitted ?? "";
  assert.match(participant2, /^participant2::/);
  assert.ok(waiting.lastError?.remedy.includes(`lockstep synchronizer admit ${participant2}`));
  assert.ok(!(await members()).members.some((m) => m.member === participant2));
  // Its Ledger API says the same to an application.
  try {
    await p2.commands.submitAndWait({ commands: createIouCommand("too-early", "bob::x", "bob::x") });
    assert.fail("a participant that is not admitted accepted a command");
  } catch (error) {
    const refused = fromConnectError(error);
    assert.equal(refused?.code, "NOT_CONNECTED_TO_SYNCHRONIZER");
    assert.match(refused?.message ?? "", /TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED/);
  }

  const admit = (await cli(["synchronizer", "admit", participant2])).json<Admission & { changed: boolean }>();
  assert.equal(admit.state, "admitted");
  assert.equal(admit.changed, true);
  const connected = await subscribed("participant2");
  assert.equal(connected.lastError, null);
  assert.equal(connected.position?.notAdmitted, undefined);
  // Admitting again changes nothing.
  const again = (await cli(["synchronizer", "admit", participant2])).json<Admission & { changed: boolean }>();
  assert.equal(again.changed, false);
  assert.equal(again.changedAt, admit.changedAt);

  const { party: alice } = await p1.parties.allocateParty({ partyIdHint: "alice" });
  const { party: bob } = await p2.parties.allocateParty({ partyIdHint: "bob" });
  for (const clients of [p1, p2]) {
    await waitFor("both parties everywhere", async () => {
      const known = (await clients.parties.listParties({})).parties.map((p) => p.party);
      return known.includes(alice) && known.includes(bob) ? true : undefined;
    });
  }
  const done = await p2.commands.submitAndWait(
    { commands: createIouCommand("iou-from-p2", bob, alice) },
    { timeoutMs: 60_000 },
  );
  assert.ok(done.updateId, "participant2 committed a transaction");
});

const probe = new TestMember("probe");
let revokedAt = "";

test("revoked: sends, subscriptions (the open one ends) and registration are refused with the code", async () => {
  await cli(["synchronizer", "admit", probe.id]);
  const probeRegisteredAt = await probe.register(sequencer);
  // An open subscription: it delivers the probe's own message, then ends at the revocation.
  const stream = sequencer.subscribe(probe.subscribeRequest(), { timeoutMs: 60_000 });
  const seen: bigint[] = [];
  let firstMessage: () => void = () => {};
  const delivered = new Promise<void>((resolve) => {
    firstMessage = resolve;
  });
  const ended = (async () => {
    try {
      for await (const response of stream) {
        for (const e of response.events) {
          seen.push(e.timestamp);
          if (e.sender === probe.id) firstMessage();
        }
      }
      return "ended without an error";
    } catch (error) {
      return fromConnectError(error)?.code ?? String(error);
    }
  })();
  await sequencer.send(probe.sendRequest({ recipients: [probe.id] }));
  await delivered;

  const revoke = (await cli(["synchronizer", "revoke", probe.id])).json<Admission & { changed: boolean }>();
  assert.equal(revoke.state, "revoked");
  assert.equal(revoke.changed, true);
  revokedAt = revoke.changedAt;
  assert.equal(await ended, "SEQUENCER_MEMBER_REVOKED");
  // Ordered with the events: everything it was sent before came before the revocation.
  assert.ok(seen.every((t) => t < BigInt(revokedAt)));

  const expected = { code: "SEQUENCER_MEMBER_REVOKED", grpc: Code.FailedPrecondition };
  assert.deepEqual(await refusal(sequencer.send(probe.sendRequest({ recipients: [probe.id] }))), expected);
  assert.deepEqual(
    await refusal(sequencer.subscribe(probe.subscribeRequest())[Symbol.asyncIterator]().next()),
    expected,
  );
  assert.deepEqual(await refusal(probe.register(sequencer)), expected);

  // A real participant: its subscription ends with the code, its node stops with it in its status,
  // and its submissions are refused; the rest of the synchronizer goes on.
  await cli(["synchronizer", "revoke", participant2]);
  const failed = await waitFor("participant2 failed", async () => {
    const s = await nodeStatus("participant2");
    return s.role === "failed" ? s : undefined;
  });
  assert.equal(failed.lastError?.code, "SEQUENCER_MEMBER_REVOKED");
  const parties = (await p1.parties.listParties({})).parties.map((p) => p.party);
  const bob = parties.find((p) => p.startsWith("bob::")) as string;
  const alice = parties.find((p) => p.startsWith("alice::")) as string;
  const refused = await refusal(
    p2.commands.submitAndWait(
      { commands: createIouCommand("after-revoke", bob, alice) },
      { timeoutMs: 30_000 },
    ),
  );
  assert.equal(refused.code, "SEQUENCER_MEMBER_REVOKED");
  const onP1 = await p1.commands.submitAndWait(
    { commands: createIouCommand("p1-after-revoke", alice, alice) },
    { timeoutMs: 60_000 },
  );
  assert.ok(onP1.updateId);
  // The probe never acknowledged, which held pruning at its registration (the last event all the
  // members got before participant1's transaction); revoked, it holds nothing, nor participant2.
  await waitFor("the safe pruning point past the revoked member", async () => {
    const safe = (await cli(["sequencer", "status"])).json<{ safePruningTimestamp: string | null }>()
      .safePruningTimestamp;
    return safe !== null && BigInt(safe) > probeRegisteredAt ? true : undefined;
  });
});

test("the allow-list survives a sequencer restart", async () => {
  const beforeRestart = await members();
  await cli(["node", "stop", "sequencer1"]);
  await cli(["node", "start", "sequencer1", "--detach"]);
  const afterRestart = await members();
  assert.deepEqual(afterRestart, beforeRestart);
  const states = new Map(afterRestart.members.map((m) => [m.member, m]));
  assert.equal(states.get(probe.id)?.state, "revoked");
  assert.equal(states.get(probe.id)?.changedAt, revokedAt);
  assert.equal(states.get(participant2)?.state, "revoked");

  assert.equal((await refusal(intruder.register(sequencer))).code, "TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED");
  const send = sequencer.send(probe.sendRequest({ recipients: [probe.id] }));
  assert.equal((await refusal(send)).code, "SEQUENCER_MEMBER_REVOKED");
  await subscribed("participant1");
});
