import assert from "node:assert/strict";
import { after, test } from "node:test";
import { type CliResult, runLockstep } from "../support/cli.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import {
  allocateKnownParty,
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
} from "../support/ledger-network.ts";
import {
  nodeLog,
  nodeStart,
  nodeStop,
  type PlanJson,
  restore,
  waitForRecovery,
} from "../support/restore-network.ts";

// Issue 11: signing key rotation that cannot outrun the backups, through the CLI on real
// PostgreSQL. Before it there was no `keys` command, and nothing refused to announce a key no
// backup held: a restore from any existing set came back without the key topology expected.

let network: LedgerNetwork | undefined;
after(() => network?.down());

interface KeysJson {
  member: string | null;
  keys: {
    fingerprint: string;
    purpose: string;
    state: string;
    inTopology: boolean;
    backupSets: string[];
  }[];
  overrides: { action: string; fingerprint: string; warning: string }[];
}

interface RotateJson {
  key: string;
  previous: string[];
  steps: { step: string; outcome: string; detail: string }[];
  warnings: string[];
}

const cli = (n: LedgerNetwork, args: string[], env?: NodeJS.ProcessEnv) =>
  runLockstep([...args, "--json", ...n.cfg], { env, timeoutMs: 180_000 });

function ok(r: CliResult, what: string): CliResult {
  assert.equal(r.code, 0, `${what} failed (${r.code}): ${r.stdout}${r.stderr}`);
  return r;
}

async function keysList(n: LedgerNetwork, node: string): Promise<KeysJson> {
  return ok(await cli(n, ["keys", "list", node]), `keys list ${node}`).json<KeysJson>();
}

function signing(keys: KeysJson) {
  return keys.keys.filter((k) => k.purpose === "signing");
}

/** A two-party transaction: both participants confirm it and the mediator checks their signatures. */
async function transact(n: LedgerNetwork, id: string, issuer: string, owner: string, via = 0): Promise<void> {
  await (n.clients[via] as LedgerClients).commands.submitAndWait(
    { commands: createIouCommand(id, issuer, owner) },
    { timeoutMs: 60_000 },
  );
}

/** After a finished rotation: one active signing key, in topology; every earlier one revoked, none pending. */
function assertRotated(keys: KeysJson, key: string, previous: readonly string[]): void {
  const s = signing(keys);
  assert.deepEqual(
    s.filter((k) => k.state === "active").map((k) => [k.fingerprint, k.inTopology]),
    [[key, true]],
    JSON.stringify(s),
  );
  assert.equal(s.filter((k) => k.state === "pending").length, 0, "no pending key left");
  for (const fp of previous) {
    const old = s.find((k) => k.fingerprint === fp);
    assert.equal(old?.state, "revoked", `${fp} revoked: ${JSON.stringify(s)}`);
    assert.equal(old?.inTopology, false);
  }
}

test("keys rotate: ordered, resumable after a kill at every step, forced only with a trace; restores keep the node signing", async () => {
  network = await startLedgerNetwork({ participants: 2, tolerance: "10s" });
  const n = network;
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 1, "bob");
  await transact(n, "before-rotation", alice, bob);

  // 1. Ordered rotation of participant1: each step shown; the backup set holds the new key.
  const before = await keysList(n, "participant1");
  assert.equal(signing(before).length, 1);
  const first = ok(await cli(n, ["keys", "rotate", "participant1"]), "keys rotate").json<RotateJson>();
  assert.deepEqual(
    first.steps.map((s) => [s.step, s.outcome]),
    [
      ["generate", "done"],
      ["backup", "done"],
      ["announce", "done"],
      ["revoke", "done"],
    ],
  );
  assert.deepEqual(first.warnings, []);
  const rotated = await keysList(n, "participant1");
  assertRotated(rotated, first.key, first.previous);
  const setWithNewKey = signing(rotated).find((k) => k.fingerprint === first.key)?.backupSets[0];
  assert.ok(setWithNewKey, "the rotation's backup set is registered in the node and holds the new key");
  await transact(n, "after-rotation", alice, bob);

  // 2. Restore participant1 from that set (taken mid-rotation: the new key still pending in it).
  // The store follows topology on start, so the node signs with the key the network expects.
  await nodeStop(n, "participant1");
  ok(await restore(n, "apply", setWithNewKey, ["--nodes", "participant1", "--replace"]), "restore apply");
  await nodeStart(n, "participant1");
  await waitForRecovery(n, "participant1");
  assertRotated(await keysList(n, "participant1"), first.key, first.previous);
  await transact(n, "after-restore", alice, bob).catch((error) => {
    throw new Error(`${error}\n${nodeLog(n, "participant1")}`);
  });

  // 3. A rotation forced without a backup: done, with the override recorded and shown; the set
  // from step 1 no longer holds the key topology lists, and restore plan says so.
  const forced = ok(
    await cli(n, ["keys", "rotate", "participant1", "--force"]),
    "forced rotate",
  ).json<RotateJson>();
  assert.equal(forced.steps.find((s) => s.step === "backup")?.outcome, "skipped");
  assert.equal(forced.warnings.length, 2, "announce and revoke each warn");
  const afterForce = await keysList(n, "participant1");
  assertRotated(afterForce, forced.key, [first.key]);
  assert.deepEqual(
    afterForce.overrides.map((o) => [o.action, o.fingerprint]),
    [
      ["announce", forced.key],
      ["revoke", forced.key],
    ],
  );
  const plan = await restore(n, "plan", setWithNewKey, ["--nodes", "participant1"]);
  assert.equal(plan.code, 3, plan.stdout + plan.stderr);
  const keysCheck = plan.json<PlanJson>().checks.find((c) => c.check === "keys");
  assert.equal(keysCheck?.verdict, "refuse", JSON.stringify(keysCheck));
  assert.equal(keysCheck?.code, "MISSING_PRIVATE_KEY");
  await transact(n, "after-forced", alice, bob);

  // 4. Without --force, the node itself refuses to announce a key no backup holds.
  const pending = (await cli(n, ["keys", "rotate", "participant1", "--backup-set", setWithNewKey])).json<{
    error: { code: string };
  }>();
  assert.equal(pending.error.code, "KEY_NOT_BACKED_UP", "a set that does not hold the new key is refused");
  const again = ok(await cli(n, ["keys", "rotate", "participant1"]), "rotate resumes").json<RotateJson>();
  assert.equal(again.steps[0]?.outcome, "already", "the pending key of the refused attempt is reused");
  assertRotated(await keysList(n, "participant1"), again.key, [forced.key]);

  // 5. participant2: the CLI killed after each step, then rerun: it completes with one new key.
  const p2Before = signing(await keysList(n, "participant2")).map((k) => k.fingerprint);
  for (const step of ["generate", "backup", "announce"]) {
    const killed = await cli(n, ["keys", "rotate", "participant2"], {
      LOCKSTEP_CRASH_AT: `keys-rotate-after-${step}`,
    });
    assert.equal(killed.code, -1, `killed after ${step}: ${killed.stderr}`);
  }
  const mid = signing(await keysList(n, "participant2"));
  assert.equal(mid.length, 2, "one key generated across the interrupted runs");
  assert.deepEqual(
    mid.map((k) => [k.state, k.inTopology]),
    [
      ["active", true],
      ["active", true],
    ],
    "announced, old not yet revoked",
  );
  const resumed = ok(await cli(n, ["keys", "rotate", "participant2"]), "resumed rotate").json<RotateJson>();
  assert.deepEqual(
    resumed.steps.map((s) => s.outcome),
    ["already", "already", "already", "done"],
  );
  assertRotated(await keysList(n, "participant2"), resumed.key, p2Before);
  await transact(n, "after-p2-rotation", bob, alice, 1);

  // 6. The node killed between sequencing its announcement and marking the key active: after a
  // restart the store follows topology, and the rerun completes.
  await nodeStop(n, "participant2");
  ok(
    await runLockstep(["node", "start", "participant2", "--detach", ...n.cfg], {
      env: { LOCKSTEP_CRASH_AT: "key-announced" },
    }),
    "node start with crash point",
  );
  const crashed = await cli(n, ["keys", "rotate", "participant2"]);
  assert.notEqual(crashed.code, 0, `the node died under the announce: ${crashed.stdout}${crashed.stderr}`);
  await nodeStart(n, "participant2");
  const afterCrash = ok(
    await cli(n, ["keys", "rotate", "participant2"]),
    "rotate after node crash",
  ).json<RotateJson>();
  assert.equal(afterCrash.steps.find((s) => s.step === "announce")?.outcome, "already");
  assertRotated(await keysList(n, "participant2"), afterCrash.key, [resumed.key]);
  await transact(n, "after-p2-crash", bob, alice, 1);

  // 7. The mediator's key (its verdicts are signed sends), then the sequencer's own: events after
  // the revocation are signed with the new key, and every member keeps accepting them.
  const medBefore = signing(await keysList(n, "mediator1")).map((k) => k.fingerprint);
  const med = ok(await cli(n, ["keys", "rotate", "mediator1"]), "rotate mediator").json<RotateJson>();
  assertRotated(await keysList(n, "mediator1"), med.key, medBefore);
  await transact(n, "after-mediator-rotation", alice, bob);
  const seqBefore = signing(await keysList(n, "sequencer1")).map((k) => k.fingerprint);
  const seq = ok(await cli(n, ["keys", "rotate", "sequencer1"]), "rotate sequencer").json<RotateJson>();
  assertRotated(await keysList(n, "sequencer1"), seq.key, seqBefore);
  await transact(n, "after-sequencer-rotation", alice, bob);
  await transact(n, "after-sequencer-rotation-2", bob, alice, 1);
});
