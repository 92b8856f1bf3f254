import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { SignJWT } from "jose";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { createNodeClient, nodeBaseUrl } from "../../src/common/rpc-client.ts";
import { UserManagementService } from "../../src/gen/lockstep/ledger/v1/user_management_service_pb.ts";
import { runLockstep } from "../support/cli.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import {
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";
import { withinSeconds } from "../support/wait.ts";

// Open streams re-check their user's rights (Canton's OngoingAuthorizationObserver): a real
// participant (`lockstep up --detach`, HS256 tokens) re-reads them every two seconds
// (`ledger-api.user-rights-check-interval: 2s`); a revoke through the CLI or a deleted user ends the
// stream with STALE_STREAM_AUTHORIZATION, while a change that leaves the stream covered does not.
const SECRET = "0123456789abcdef0123456789abcdef-stream-secret";
// Two seconds, not less: on a loaded CI machine a rights query can take a second, and the safety
// switch (twice the interval since the last finished check) would close the stream under test.
const CHECK_INTERVAL_MS = 2_000;

let network: LedgerNetwork;
let p1: LedgerClients;
let users: ReturnType<typeof createNodeClient<typeof UserManagementService>>;
let alice: string;
let bob: string;

const secret = new TextEncoder().encode(SECRET);
const token = (sub: string) =>
  new SignJWT({ scope: "daml_ledger_api" })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(sub)
    .setExpirationTime("10m")
    .sign(secret);
const bearer = async (sub: string) => ({ headers: { authorization: `Bearer ${await token(sub)}` } });

const canActAs = (party: string) => ({ kind: { case: "canActAs" as const, value: { party } } });
const canReadAs = (party: string) => ({ kind: { case: "canReadAs" as const, value: { party } } });

/** A stream consumed in the background: what it delivered, and the error it ended with. */
function consume<T>(stream: AsyncIterable<T>): { seen: T[]; ended: Promise<{ code: string; grpc: Code }> } {
  const seen: T[] = [];
  const ended = (async () => {
    try {
      for await (const item of stream) seen.push(item);
    } catch (error) {
      const lockstep = fromConnectError(error);
      assert.ok(lockstep && error instanceof ConnectError, `expected a Lockstep error, got ${String(error)}`);
      return { code: lockstep.code, grpc: error.code };
    }
    assert.fail("the stream completed instead of being closed");
  })();
  return { seen, ended };
}

before(async () => {
  network = await startLedgerNetwork({
    participants: 1,
    configure: (config: ConfigInput, dir: string) => {
      writeFileSync(join(dir, "ledger-secret"), SECRET, { mode: 0o600 });
      const [one] = config.participants ?? [];
      assert.ok(one);
      one["ledger-api"] = {
        auth: { type: "hs256", "secret-file": "ledger-secret" },
        "user-rights-check-interval": `${CHECK_INTERVAL_MS}ms`,
      };
    },
  });
  [p1] = network.clients as [LedgerClients];
  users = createNodeClient(UserManagementService, nodeBaseUrl(network.participantPorts[0] as number));
  const admin = await bearer("participant_admin");
  alice = (await p1.parties.allocateParty({ partyIdHint: "alice" }, admin)).party;
  bob = (await p1.parties.allocateParty({ partyIdHint: "bob" }, admin)).party;
  await waitFor("alice and bob known", async () => {
    const known = (await p1.parties.listParties({}, admin)).parties.map((p) => p.party);
    return known.includes(alice) && known.includes(bob) ? true : undefined;
  });
});

after(() => network?.down());

test("a stream stays open across checks while its rights cover it; a revoke through the CLI closes it", async () => {
  const admin = await bearer("participant_admin");
  await users.createUser({ user: { id: "watcher" }, rights: [canActAs(alice), canReadAs(bob)] }, admin);
  const asWatcher = await bearer("watcher");
  const { offset: begin } = await p1.state.getLedgerEnd({}, admin);
  const stream = consume(
    p1.updates.getUpdates({ beginExclusive: begin, parties: [alice] }, { ...asWatcher, timeoutMs: 120_000 }),
  );

  // A change of the user's rights that this stream does not read: Canton would close the stream
  // (it compares the whole claim set); Lockstep keeps it, since it still may read alice.
  await users.revokeUserRights({ userId: "watcher", rights: [canReadAs(bob)] }, admin);
  const revokedAt = Date.now();
  // Past twice the interval, so that re-checks ran since the revoke: had one found the stream
  // stale, or had none run, it would have been closed (the safety switch closes a stream whose
  // last check is older than twice the interval at its next item).
  await sleep(2 * CHECK_INTERVAL_MS + 500 - (Date.now() - revokedAt));
  const created = await p1.commands.submitAndWait(
    { commands: createIouCommand("stream-1", alice, bob, { userId: "watcher" }) },
    asWatcher,
  );
  await waitFor("the stream delivers alice's new Iou", () =>
    stream.seen.some((u) => u.update.case === "transaction" && u.update.value.updateId === created.updateId)
      ? true
      : undefined,
  );

  // The right the stream reads with, revoked by an operator through the CLI.
  const adminToken = await token("participant_admin");
  const revoke = await runLockstep([
    "ledger",
    "user",
    "revoke",
    "watcher",
    "--act-as",
    alice,
    "--participant",
    "participant1",
    "--json",
    "--token",
    adminToken,
    ...network.cfg,
  ]);
  assert.equal(revoke.code, 0, `${revoke.stdout}${revoke.stderr}`);
  assert.deepEqual(revoke.json().revoked, [`CanActAs(${alice})`]);
  // Closed by the next check: within an interval, bounded generously for a loaded machine.
  assert.deepEqual(await withinSeconds(stream.ended, 20, "the stream to be closed"), {
    code: "STALE_STREAM_AUTHORIZATION",
    grpc: Code.Aborted,
  });
  // Re-opened as the error's remedy says: now refused outright.
  const reopened = consume(p1.updates.getUpdates({ beginExclusive: begin, parties: [alice] }, asWatcher));
  assert.deepEqual(await reopened.ended, { code: "PERMISSION_DENIED", grpc: Code.PermissionDenied });
});

test("deleting the user closes its completion stream", async () => {
  const admin = await bearer("participant_admin");
  await users.createUser({ user: { id: "doomed" }, rights: [canActAs(alice)] }, admin);
  const asDoomed = await bearer("doomed");
  const { offset: begin } = await p1.state.getLedgerEnd({}, admin);
  const stream = consume(
    p1.completions.completionStream(
      { beginExclusive: begin, userId: "", parties: [alice] },
      { ...asDoomed, timeoutMs: 120_000 },
    ),
  );
  await p1.commands.submitAndWait(
    { commands: createIouCommand("doomed-1", alice, alice, { userId: "doomed" }) },
    asDoomed,
  );
  await waitFor("the completion delivered", () =>
    stream.seen.some((c) => c.response.case === "completion" && c.response.value.commandId === "doomed-1")
      ? true
      : undefined,
  );
  await users.deleteUser({ userId: "doomed" }, admin);
  assert.deepEqual(await withinSeconds(stream.ended, 20, "the stream to be closed"), {
    code: "STALE_STREAM_AUTHORIZATION",
    grpc: Code.Aborted,
  });
});

test("a too short user-rights-check-interval is a config error", async () => {
  const bad = join(network.net.dir, "bad-interval.yaml");
  writeFileSync(
    bad,
    JSON.stringify({
      synchronizer: {
        id: "s",
        sequencer: { name: "sequencer1", port: 1 },
        mediator: { name: "mediator1", port: 2 },
      },
      participants: [
        {
          name: "participant1",
          port: 3,
          "ledger-api": { auth: { type: "off" }, "user-rights-check-interval": "10ms" },
        },
      ],
    }),
  );
  const r = await runLockstep(["config", "check", "--config", bad]);
  assert.equal(r.code, 2, `${r.stdout}${r.stderr}`);
  assert.match(`${r.stdout}${r.stderr}`, /CONFIG_INVALID/);
  assert.match(`${r.stdout}${r.stderr}`, /user-rights-check-interval/);
});
