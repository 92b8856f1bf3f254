/**
 * A sequencer restored from a set taken before a revocation keeps the revoked member out
 * (docs/restore.md "The allow-list after a restore"), through the CLI and a real sequencer node:
 * `restore plan` names the changes made after the set (check `allow-list`), `restore apply` carries
 * the revocation into the restored database and leaves the later admission for the operator to make
 * again. The set records the sequencer's head with the allow-list's timestamps counted (an admission
 * takes a timestamp but is no event). Without a live sequencer database, the plan says the list
 * could not be read.
 */
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ConnectError } from "@connectrpc/connect";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { createNodeClient, nodeBaseUrl } from "../../src/common/rpc-client.ts";
import { SequencerService } from "../../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { embeddedClusterDir, embeddedDatabaseName } from "../../src/node/node-database.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { runLockstep, type TestNetworkConfig, writeTestConfig } from "../support/cli.ts";
import type { PlanJson } from "../support/restore-network.ts";
import { type SequencerClient, TestMember } from "../support/sequencer-harness.ts";

interface Admission {
  member: string;
  state: string;
  changedAt: string;
}

let net: TestNetworkConfig;
let sequencer: SequencerClient;
const cfg = () => ["--config", net.configPath];

async function cli(args: string[], timeoutMs = 180_000) {
  const result = await runLockstep([...args, "--json", ...cfg()], { timeoutMs });
  assert.equal(result.code, 0, `${args.join(" ")}: ${result.stdout}${result.stderr}`);
  return result;
}

const head = async () => (await cli(["sequencer", "status"])).json<{ head: string | null }>().head;
const members = async () =>
  new Map(
    (await cli(["synchronizer", "members"]))
      .json<{ members: Admission[] }>()
      .members.map((m) => [m.member, m]),
  );

/** The registry code a sequencer call failed with. */
async function refusal(call: Promise<unknown>): Promise<string | undefined> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof ConnectError, String(error));
    return fromConnectError(error)?.code;
  }
  assert.fail("the call was not refused");
}

before(async () => {
  net = await writeTestConfig(1);
  sequencer = createNodeClient(SequencerService, nodeBaseUrl(net.ports.sequencer));
});

after(async () => {
  await runLockstep(["down", ...cfg()]);
  rmSync(net.dir, { recursive: true, force: true });
});

const kept = new TestMember("kept");
const gone = new TestMember("gone");
const late = new TestMember("late");
const pending = new TestMember("pending");
let setTaken = "";

test("restored from a set taken before a revoke: the plan names it, apply carries it, the member stays out", async () => {
  await cli(["node", "start", "sequencer1", "--detach"]);
  for (const m of [kept, gone]) {
    await cli(["synchronizer", "admit", m.id]);
    await m.register(sequencer);
  }
  // The set's last timestamp is an admission, not an event: the manifest must count it.
  const admittedLast = (await cli(["synchronizer", "admit", pending.id])).json<Admission>().changedAt;
  assert.equal(await head(), admittedLast, "an admission moves the head");
  const set = (await cli(["backup", "create", "--nodes", "sequencer1"])).json<{ set: string }>().set;
  setTaken = set;
  const manifest = JSON.parse(readFileSync(join(net.dir, "backups", set, "manifest.json"), "utf8")) as {
    nodes: { kind: string; position: { head: string | null } }[];
  };
  assert.equal(manifest.nodes.find((n) => n.kind === "sequencer")?.position.head, admittedLast);

  const revokedAt = (await cli(["synchronizer", "revoke", gone.id])).json<Admission>().changedAt;
  const lateAt = (await cli(["synchronizer", "admit", late.id])).json<Admission>().changedAt;
  assert.equal(await head(), lateAt);
  await cli(["node", "stop", "sequencer1"]);

  const plan = (await cli(["restore", "plan", set, "--nodes", "sequencer1", "--replace"])).json<PlanJson>();
  const check = plan.checks.find((c) => c.node === "sequencer1" && c.check === "allow-list");
  assert.ok(check, JSON.stringify(plan.checks));
  assert.equal(check.verdict, "warn");
  assert.equal(check.code, "RESTORE_ADMISSIONS_AFTER_SET");
  assert.ok(check.message.includes(`${gone.id} (at ${revokedAt})`), check.message);
  assert.ok(check.message.includes(`${late.id} (at ${lateAt})`), check.message);
  assert.ok(!check.message.includes(kept.id), "an unchanged member is not named");

  const applied = await cli(["restore", "apply", set, "--nodes", "sequencer1", "--replace", "--yes"]);
  await cli(["node", "start", "sequencer1", "--detach"]);

  const list = await members();
  assert.equal(list.get(gone.id)?.state, "revoked", "the revocation came through the restore");
  assert.equal(list.get(gone.id)?.changedAt, revokedAt, "with its own timestamp");
  assert.equal(list.get(kept.id)?.state, "admitted");
  assert.equal(list.get(late.id), undefined, "the later admission is not carried");

  assert.equal(await refusal(gone.register(sequencer)), "SEQUENCER_MEMBER_REVOKED");
  assert.equal(await refusal(sequencer.send(gone.sendRequest())), "SEQUENCER_MEMBER_REVOKED");
  assert.equal(
    await refusal(sequencer.subscribe(gone.subscribeRequest())[Symbol.asyncIterator]().next()),
    "SEQUENCER_MEMBER_REVOKED",
  );
  assert.equal(await refusal(late.register(sequencer)), "TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED");
  // The operator admits it again, deliberately; its registration comes after the carried revocation.
  await cli(["synchronizer", "admit", late.id]);
  assert.ok((await late.register(sequencer)) > BigInt(revokedAt), "the restored head counts the revocation");
  await sequencer.send(kept.sendRequest());
  // And apply said what it did.
  assert.match(
    applied.stderr + applied.stdout,
    new RegExp(`carried the revocation\\(s\\) made after the set: ${gone.id}`),
  );
});

test("without a live sequencer database the plan says the allow-list could not be read", async () => {
  await runLockstep(["node", "stop", "sequencer1", ...cfg()]); // running unless the test before failed
  const set = setTaken;
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(join(net.dir, "data")) });
  await cluster.start();
  await cluster.dropDatabase(embeddedDatabaseName("sequencer1"));
  const plan = (await cli(["restore", "plan", set, "--nodes", "sequencer1"])).json<PlanJson>();
  const check = plan.checks.find((c) => c.node === "sequencer1" && c.check === "allow-list");
  assert.equal(check?.verdict, "warn", JSON.stringify(plan.checks));
  assert.equal(check?.code, "RESTORE_ALLOW_LIST_UNREAD");
  assert.match(check?.remedy ?? "", /lockstep synchronizer revoke/);
});
