import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import pg from "pg";
import { stringify } from "yaml";
import { ensureAdminTokenFile } from "../../src/common/admin-credentials.ts";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { freePort } from "../../src/common/loopback.ts";
import { adminClient } from "../../src/node/clients.ts";
import { processFiles, runningProcesses } from "../../src/node/process-files.ts";
import { runLockstep } from "../support/cli.ts";
import { type LedgerClients, ledgerClients } from "../support/ledger-client.ts";
import { createIouCommand } from "../support/ledger-network.ts";
import { startTestPostgres } from "../support/postgres.ts";
import { type ReplicatedPostgres, startReplicatedPostgres } from "../support/replication.ts";
import { createSites, type Forwarder, type Site, type Sites, sitesUnavailable } from "../support/sites.ts";
import { waitFor } from "../support/wait.ts";

// Site loss (issue 12, docs/operations.md "Two sites"): site A holds the primary of the sequencer's
// and participant1's databases and runs both nodes; site B holds the standby; the mediator and
// participant2 run in the root namespace ("elsewhere") on their own database. The sequencer is
// reached through a service address (a forwarder standing for DNS or a load balancer) that the
// operator points at the site that runs it; participant1 is reached at its site's own address.
// Each site has its own config file: they differ in data-dir and in the host of the nodes that move.
// The runbook is docs/operations.md's; the second test runs it on asynchronous replication.

const skip = sitesUnavailable();

/** What a test started, stopped in reverse order when it ends (t.after), whether it passed or not. */
type Cleanups = (() => Promise<void>)[];

function cleanUpAfter(t: TestContext): Cleanups {
  const cleanups: Cleanups = [];
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
  });
  return cleanups;
}

interface Ack {
  commandId: string;
  contractId: string;
}

interface TwoSites {
  sites: Sites;
  a: Site;
  b: Site;
  repl: ReplicatedPostgres;
  sequencer: Forwarder;
  config: { a: string; b: string; core: string };
  dir: string;
  ports: { sequencer: number; mediator: number; p1: number; p2: number };
  p1At: (site: Site) => LedgerClients;
  p2: LedgerClients;
  alice: string;
  bob: string;
}

/** SIGKILL every node process started from a data dir (the test's own, by pid). */
function killNodes(dataDir: string): void {
  for (const p of runningProcesses(dataDir)) {
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}

async function startTwoSites(t: TestContext, replication: "sync" | "async"): Promise<TwoSites> {
  const cleanups = cleanUpAfter(t);
  const sites = await createSites(["a", "b"], { autoCleanup: false });
  cleanups.push(() => sites.cleanup());
  const [a, b] = [sites.get("a"), sites.get("b")];
  const repl = await startReplicatedPostgres({
    replication,
    listenAddress: a.address,
    standbyAddresses: [b.address],
    netns: { primary: a.netns, standbys: [b.netns] },
    autoCleanup: false,
  });
  cleanups.push(() => repl.cleanup());
  for (const db of ["sequencer1", "participant1"]) await repl.createDatabase(db);
  const core = await startTestPostgres({ autoCleanup: false });
  cleanups.push(() => core.cleanup());
  for (const db of ["mediator1", "participant2"]) await core.ensureDatabase(db);

  const dir = mkdtempSync(join(tmpdir(), "lockstep-sites-"));
  const ports = {
    sequencer: await freePort(),
    mediator: await freePort(),
    p1: await freePort(),
    p2: await freePort(),
  };
  const sequencer = await sites.forward(ports.sequencer, { host: a.address, port: ports.sequencer });
  // One admin token for the three configs' data dirs, as hosts of one network share it (docs/security.md).
  const adminTokenPath = join(dir, "admin-token");
  process.env.LOCKSTEP_ADMIN_TOKEN = ensureAdminTokenFile(adminTokenPath);
  const siteConfig = (dataDir: string, site: Site) => ({
    "data-dir": dataDir,
    // The sites' nodes bind addresses of their network namespaces: cleartext there on purpose.
    tls: "off",
    admin: { "token-file": adminTokenPath },
    synchronizer: {
      id: "sync1",
      parameters: { "ledger-time-record-time-tolerance": "10s" },
      sequencer: {
        name: "sequencer1",
        port: ports.sequencer,
        host: site.address,
        address: sequencer.address,
        storage: { url: repl.primary.url("sequencer1") },
      },
      mediator: {
        name: "mediator1",
        port: ports.mediator,
        storage: { url: core.connectionUrl("mediator1") },
      },
    },
    participants: [
      {
        name: "participant1",
        port: ports.p1,
        host: site.address,
        "ledger-api": { auth: { type: "off" } },
        storage: { url: repl.primary.url("participant1") },
      },
      {
        name: "participant2",
        port: ports.p2,
        storage: { url: core.connectionUrl("participant2") },
        "ledger-api": { auth: { type: "off" } },
      },
    ],
    backup: { repository: "backups" },
  });
  const config = { a: join(dir, "site-a.yaml"), b: join(dir, "site-b.yaml"), core: join(dir, "core.yaml") };
  writeFileSync(config.a, stringify(siteConfig("data-a", a)));
  writeFileSync(config.b, stringify(siteConfig("data-b", b)));
  writeFileSync(config.core, stringify(siteConfig("data-core", a)));
  cleanups.push(async () => {
    for (const d of ["data-a", "data-b", "data-core"]) killNodes(join(dir, d));
    rmSync(dir, { recursive: true, force: true });
  });

  const start = async (site: Site | undefined, node: string, configPath: string) => {
    const args = ["node", "start", node, "--detach", "--json", "--config", configPath];
    const r = site ? await site.lockstep(args) : await runLockstep(args);
    assert.equal(r.code, 0, `${node}: ${r.stdout}${r.stderr}`);
  };
  await start(a, "sequencer1", config.a);
  await start(undefined, "mediator1", config.core);
  await start(a, "participant1", config.a);
  await start(undefined, "participant2", config.core);

  const p1At = (site: Site) => ledgerClients(ports.p1, site.address);
  const p2 = ledgerClients(ports.p2);
  const allocate = async (clients: LedgerClients, hint: string) => {
    const { party } = await clients.parties.allocateParty({ partyIdHint: hint });
    for (const c of [p1At(a), p2]) {
      await waitFor(`${party} known`, async () =>
        (await c.parties.listParties({})).parties.some((p) => p.party === party) ? true : undefined,
      );
    }
    return party;
  };
  const alice = await allocate(p1At(a), "alice");
  const bob = await allocate(p2, "bob");
  return { sites, a, b, repl, sequencer, config, dir, ports, p1At, p2, alice, bob };
}

/** Creates an Iou through `clients`; resolves once the participant acknowledged it (SubmitAndWait). */
async function iou(
  clients: LedgerClients,
  commandId: string,
  issuer: string,
  owner: string,
  amount = "1.00",
) {
  const r = await clients.commands.submitAndWait(
    { commands: createIouCommand(commandId, issuer, owner, { amount }) },
    { timeoutMs: 30_000 },
  );
  return { commandId, contractId: r.createdContractIds[0] as string };
}

/** Contract ids in a party's active contract set at a participant. */
async function acs(clients: LedgerClients, party: string): Promise<Map<string, string>> {
  const r = await clients.state.getActiveContracts({ parties: [party] }, { timeoutMs: 30_000 });
  return new Map(r.contracts.map((c) => [c.contractId, JSON.stringify(c.arguments)]));
}

/** The operator promotes B's standby (as `pg_ctl promote` would); resolves once it is a primary. */
async function promote(s: TwoSites): Promise<void> {
  const client = new pg.Client({ connectionString: s.repl.standbys[0]?.url("postgres") });
  await client.connect();
  try {
    // wait => true: returns once promoted (or false after 60 s).
    const r = await client.query<{ promoted: boolean }>("SELECT pg_promote(true, 60) AS promoted");
    assert.equal(r.rows[0]?.promoted, true, "B's standby promoted");
  } finally {
    await client.end();
  }
}

/** `lockstep failover` run at site B (the node binds B's address), its JSON and the steps it printed. */
async function failover(s: TwoSites, node: string, database: string) {
  const target = s.repl.standbys[0]?.url(database) as string;
  const r = await s.b.lockstep(["failover", node, "--to", target, "--json", "--config", s.config.b]);
  return { ...r, target };
}

test("site loss with a live old writer: acknowledged transactions survive at B, the old writer is refused when the link heals", {
  skip,
}, async (t) => {
  const s = await startTwoSites(t, "sync");
  const { a, b } = s;
  const check = await runLockstep(["replication", "check", "participant1", "--json", "--config", s.config.a]);
  assert.equal(check.code, 0, `synchronous standby: the check passes\n${check.stdout}${check.stderr}`);

  // Traffic both ways, each acknowledged to its client.
  const acked: Ack[] = [];
  for (let i = 0; i < 3; i++) acked.push(await iou(s.p1At(a), `before-cut-p1-${i}`, s.alice, s.bob));
  for (let i = 0; i < 2; i++) acked.push(await iou(s.p2, `before-cut-p2-${i}`, s.bob, s.alice));

  await a.cut();
  const cutAt = Date.now();

  // Before promotion the target is a standby: refused, nothing started.
  const early = await failover(s, "participant1", "participant1");
  assert.equal(early.code, 3, early.stdout + early.stderr);
  assert.equal(early.json<{ error: { code: string } }>().error.code, "FAILOVER_TARGET_NOT_PRIMARY");

  await promote(s);

  const seq = await failover(s, "sequencer1", "sequencer1");
  assert.equal(seq.code, 0, seq.stdout + seq.stderr);
  t.diagnostic(`failover sequencer1 (stderr):\n${seq.stderr.trim()}`);
  const seqResult = seq.json<{
    writerEpoch: string;
    writerEpochBefore: string;
    oldPrimaryFenced: { fenced: string };
    configChange: { key: string; env: string };
  }>();
  assert.equal(seqResult.oldPrimaryFenced.fenced, "unreachable");
  assert.ok(BigInt(seqResult.writerEpoch) > BigInt(seqResult.writerEpochBefore));
  assert.equal(seqResult.configChange.key, "synchronizer.sequencer.storage.url");
  // The operator points the sequencer's service address at site B.
  s.sequencer.point({ host: b.address, port: s.ports.sequencer });

  const p1 = await failover(s, "participant1", "participant1");
  assert.equal(p1.code, 0, p1.stdout + p1.stderr);
  const p1Result = p1.json<{
    writerEpoch: string;
    writerEpochBefore: string;
    heardBySequencer: boolean;
    configChange: { env: string };
  }>();
  assert.equal(p1Result.configChange.env, "LOCKSTEP_PARTICIPANTS_0_STORAGE_URL");
  assert.ok(BigInt(p1Result.writerEpoch) > BigInt(p1Result.writerEpochBefore));
  // From here on the sequencer refuses the old writer: it has heard the new epoch.
  assert.equal(p1Result.heardBySequencer, true, p1.stderr);
  t.diagnostic(`site A cut → both nodes active at B in ${((Date.now() - cutAt) / 1000).toFixed(1)} s`);

  // Every acknowledged transaction is at B, in participant1's ledger.
  const atB = s.p1At(b);
  const ledgerB = await acs(atB, s.alice);
  for (const ack of acked) assert.ok(ledgerB.has(ack.contractId), `${ack.commandId} is at B`);

  // The network goes on: both directions commit through the sequencer at B.
  const after1 = await waitFor(
    "a command through participant1 at B",
    () => iou(atB, "after-failover-p1", s.alice, s.bob),
    60_000,
    1000,
  );
  const after2 = await iou(s.p2, "after-failover-p2", s.bob, s.alice);
  acked.push(after1, after2);

  // The link heals. Both old writers at A are stopped: the new activations at B fence them
  // (writer-fencing.ts: each reads where its predecessor ran from its copy of the database and tells
  // it, retrying until it answers), and participant1's old process is refused by the sequencer if it
  // reaches it first. Either way: failed with STALE_WRITER_EPOCH, in status and in its log. The old
  // sequencer has no one above it: the fence is the only thing that stops it.
  await a.heal();
  const healedAt = Date.now();
  for (const [node, port] of [
    ["participant1", s.ports.p1],
    ["sequencer1", s.ports.sequencer],
  ] as const) {
    const oldAdmin = adminClient(port, a.address);
    let lastSeen = "";
    const old = await waitFor(
      `${node}'s old process at A to stop`,
      async () => {
        const status = await oldAdmin.getStatus({}, { timeoutMs: 2000 });
        lastSeen = `${status.role} ${status.lastError?.code ?? ""}`;
        return status.role === "failed" ? status : undefined;
      },
      60_000,
      500,
    ).catch((error: unknown) => {
      throw new Error(`${error} (last seen: ${lastSeen})`);
    });
    t.diagnostic(
      `old ${node} at A failed ${((Date.now() - healedAt) / 1000).toFixed(1)} s after the link healed: ${old.lastError?.code} ${old.lastError?.message}`,
    );
    assert.equal(old.lastError?.code, "STALE_WRITER_EPOCH", old.lastError?.message);
    const oldLog = readFileSync(processFiles(join(s.dir, "data-a"), node).logFile, "utf8");
    assert.match(oldLog, /STALE_WRITER_EPOCH/);
  }
  const fencing = await adminClient(s.ports.sequencer, b.address).getStatus({});
  t.diagnostic(`sequencer1 at B, fencing of its predecessor: ${fencing.fencingJson}`);
  assert.equal(JSON.parse(fencing.fencingJson).state, "fenced");

  // Nothing it does reaches the ledger: a submission to it is refused…
  const refused = await s
    .p1At(a)
    .commands.submitAndWait(
      { commands: createIouCommand("from-old-writer", s.alice, s.bob, { amount: "666.00" }) },
      { timeoutMs: 30_000 },
    )
    .then(
      () => "committed",
      (error: unknown) => fromConnectError(error)?.code ?? String(error),
    );
  assert.equal(refused, "STALE_WRITER_EPOCH");
  // …and once a later command committed at B (the sequencer orders everything), neither ledger has it.
  acked.push(await iou(atB, "after-heal-p1", s.alice, s.bob));
  for (const [where, clients, party] of [
    ["participant1 at B", atB, s.alice],
    ["participant2", s.p2, s.bob],
  ] as const) {
    const contracts = await acs(clients, party);
    assert.deepEqual(
      [...contracts.keys()].sort(),
      acked.map((x) => x.contractId).sort(),
      `${where} holds exactly the acknowledged transactions`,
    );
    // The amount itself, quoted: party ids carry hex hashes, which contain "666" now and then.
    assert.ok(![...contracts.values()].some((args) => args.includes('"666.00"')), `${where}: nothing from A`);
  }
});

/** Resolves once B's standby has replayed everything the primary had written when called. */
async function standbyCaughtUp(s: TwoSites): Promise<void> {
  const [row] = await s.repl.admin<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn");
  const lsn = row?.lsn as string;
  await waitFor("B's standby to catch up", async () => {
    const client = new pg.Client({ connectionString: s.repl.standbys[0]?.url("postgres") });
    await client.connect();
    try {
      const r = await client.query<{ behind: string }>(
        "SELECT pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn())::text AS behind",
        [lsn],
      );
      return Number(r.rows[0]?.behind) <= 0 ? true : undefined;
    } finally {
      await client.end();
    }
  });
}

test("site loss with asynchronous replication: the check reports it beforehand, and what was acknowledged after the standby fell behind is lost", {
  skip,
}, async (t) => {
  const s = await startTwoSites(t, "async");
  const { a, b } = s;
  // Beforehand: the check says so, for both nodes whose primary is at A.
  for (const node of ["sequencer1", "participant1"]) {
    const check = await runLockstep(["replication", "check", node, "--json", "--config", s.config.a]);
    assert.equal(
      check.code,
      3,
      `${node}: an asynchronous standby is a finding\n${check.stdout}${check.stderr}`,
    );
    const report = check.json<{ ok: boolean; findings: { kind: string; message: string }[] }>();
    assert.equal(report.ok, false);
    assert.ok(report.findings.some((f) => f.kind === "synchronous-standby-names"));
    t.diagnostic(`${node}: ${report.findings.map((f) => `${f.kind}: ${f.message}`).join(" | ")}`);
  }

  const replicated: Ack[] = [];
  replicated.push(await iou(s.p1At(a), "replicated-p1", s.alice, s.bob));
  replicated.push(await iou(s.p2, "replicated-p2", s.bob, s.alice));
  await standbyCaughtUp(s);

  // The link between the sites fails first: A goes on acknowledging, its standby no longer follows.
  await s.sites.partition("a", "b");
  const unreplicated: Ack[] = [];
  unreplicated.push(await iou(s.p1At(a), "unreplicated-p1", s.alice, s.bob));
  unreplicated.push(await iou(s.p2, "unreplicated-p2", s.bob, s.alice));

  // B promoted while A still runs: from where A's primary still answers, fail-over is refused (two
  // writable copies of one node's database is the split brain the check exists for).
  await promote(s);
  const target = s.repl.standbys[0]?.url("participant1") as string;
  const refused = await runLockstep([
    "failover",
    "participant1",
    "--to",
    target,
    "--json",
    "--config",
    s.config.b,
  ]);
  assert.equal(refused.code, 3, refused.stdout + refused.stderr);
  assert.equal(refused.json<{ error: { code: string } }>().error.code, "FAILOVER_OLD_PRIMARY_LIVE");

  await a.cut();
  const seq = await failover(s, "sequencer1", "sequencer1");
  assert.equal(seq.code, 0, seq.stdout + seq.stderr);
  s.sequencer.point({ host: b.address, port: s.ports.sequencer });
  const p1 = await failover(s, "participant1", "participant1");
  assert.equal(p1.code, 0, p1.stdout + p1.stderr);

  // What is lost: every transaction acknowledged after the standby fell behind is missing at B.
  const ledgerB = await acs(s.p1At(b), s.alice);
  const lost = [...replicated, ...unreplicated].filter((x) => !ledgerB.has(x.contractId));
  t.diagnostic(`acknowledged but lost at B: ${lost.map((x) => x.commandId).join(", ") || "none"}`);
  assert.deepEqual(
    lost.map((x) => x.commandId),
    unreplicated.map((x) => x.commandId),
  );
  // participant2 and the mediator are not at A: they received those events, the sequencer at B
  // never had them. Resubscribing there, they find its history differs from theirs and stop on it
  // (docs/design.md §2, fork detection) instead of going on with ledgers that disagree.
  for (const [node, port] of [
    ["participant2", s.ports.p2],
    ["mediator1", s.ports.mediator],
  ] as const) {
    const stopped = await waitFor(
      `${node} to report the sequencer's lost history`,
      async () => {
        const status = await adminClient(port).getStatus({}, { timeoutMs: 2000 });
        return status.role === "failed" ? status : undefined;
      },
      60_000,
      500,
    );
    assert.equal(stopped.lastError?.code, "SEQUENCER_FORK_DETECTED", stopped.lastError?.message);
    t.diagnostic(`${node}: ${stopped.lastError?.code}: ${stopped.lastError?.message}`);
  }
});
