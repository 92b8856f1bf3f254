import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { stringify } from "yaml";
import { freePort } from "../../src/common/loopback.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { evaluateReplication, type ReplicationFinding } from "../../src/storage/replication-check.ts";
import { readReplicationFacts } from "../../src/storage/replication-facts.ts";
import { runLockstep } from "../support/cli.ts";
import { startReplicatedPostgres } from "../support/replication.ts";
import { waitFor } from "../support/wait.ts";

// A real primary with one synchronous standby (standby1). The node logs in as `lockstep_node`
// (pg_monitor, owner of its database); `lockstep_plain` has no monitoring privilege.
const repl = await startReplicatedPostgres({ replication: "sync" });
await repl.admin("CREATE ROLE lockstep_node LOGIN");
await repl.admin("GRANT pg_monitor TO lockstep_node");
await repl.admin("CREATE ROLE lockstep_plain LOGIN");
await repl.admin("CREATE DATABASE sequencer_db OWNER lockstep_node");
const nodeUrl = repl.primary.url("sequencer_db", "lockstep_node");

// The CLI runs against a config whose sequencer uses that database; the check mode comes from the env.
const dir = mkdtempSync(join(tmpdir(), "lockstep-repl-cli-"));
const configPath = join(dir, "lockstep.yaml");
writeFileSync(
  configPath,
  stringify({
    "data-dir": "data",
    synchronizer: {
      id: "sync1",
      sequencer: { name: "sequencer1", port: await freePort(), storage: { url: nodeUrl } },
      mediator: { name: "mediator1", port: await freePort() },
    },
    participants: [{ name: "participant1", port: await freePort(), "ledger-api": { auth: { type: "off" } } }],
    backup: { repository: "backups" },
  }),
);
const cfg = ["--config", configPath];
const withCheck = (check: "fail" | "warn") => ({
  env: { LOCKSTEP_SYNCHRONIZER_SEQUENCER_STORAGE_REPLICATION_CHECK: check },
});

after(async () => {
  await runLockstep(["down", ...cfg]);
  rmSync(dir, { recursive: true, force: true });
});

async function check(url = nodeUrl, minSyncStandbys = 1) {
  const db = createPgDb({ connectionString: url, max: 1 });
  try {
    const facts = await readReplicationFacts(db);
    return { facts, findings: evaluateReplication(facts, { minSyncStandbys }) };
  } finally {
    await db.close();
  }
}

const kinds = (findings: readonly { kind: string }[]) => findings.map((f) => f.kind);

interface ReportJson {
  ok: boolean;
  findings: ReplicationFinding[];
  standbys: {
    applicationName: string;
    syncState: string;
    writeLagMs: number | null;
    replayLagBytes: string | null;
  }[];
}

/** `lockstep node start sequencer1` under check: fail must refuse, naming every expected finding. */
async function assertStartRefused(expected: string[]) {
  const start = await runLockstep(["node", "start", "sequencer1", "--json", ...cfg], withCheck("fail"));
  assert.equal(start.code, 3, start.stdout + start.stderr);
  const { error } = start.json<{ error: { code: string; message: string; remedy: string } }>();
  assert.equal(error.code, "REPLICATION_MISCONFIGURED");
  for (const kind of expected) {
    assert.match(error.message, new RegExp(`${kind}: `), `${kind} named in: ${error.message}`);
    assert.match(error.remedy, new RegExp(`${kind}: `), `${kind}'s remedy in: ${error.remedy}`);
  }
}

test("primary with a synchronous standby: the check passes and reports the standby's lag", async () => {
  await repl.adminOn("sequencer_db", "CREATE TABLE lag_probe (x int); INSERT INTO lag_probe VALUES (1)");
  const { facts, findings } = await check();
  assert.deepEqual(findings, []);
  assert.equal(facts.standbys.length, 1);
  assert.equal(facts.standbys[0]?.applicationName, "standby1");
  assert.equal(facts.standbys[0]?.syncState, "sync");
  assert.equal(typeof facts.standbys[0]?.replayLagBytes, "bigint");

  const cli = await runLockstep(["replication", "check", "sequencer1", "--json", ...cfg]);
  assert.equal(cli.code, 0, cli.stdout + cli.stderr);
  const report = cli.json<ReportJson>();
  assert.equal(report.ok, true);
  assert.deepEqual(report.findings, []);
  assert.equal(report.standbys[0]?.applicationName, "standby1");
  assert.equal(typeof report.standbys[0]?.replayLagBytes, "string", "int64 as a decimal string");

  // check: fail lets a correctly replicated node start.
  const started = await runLockstep(
    ["node", "start", "sequencer1", "--detach", "--json", ...cfg],
    withCheck("fail"),
  );
  assert.equal(started.code, 0, started.stdout + started.stderr);
  assert.equal(started.json<{ role: string }>().role, "active");
  const stopped = await runLockstep(["node", "stop", "sequencer1", ...cfg]);
  assert.equal(stopped.code, 0, stopped.stderr);
});

test("synchronous_commit=off on the role: a finding naming ALTER ROLE; check: fail refuses to start", async () => {
  await repl.admin("ALTER ROLE lockstep_node SET synchronous_commit = off");
  try {
    const { findings } = await check();
    assert.deepEqual(kinds(findings), ["synchronous-commit"]);
    assert.match(findings[0]?.message ?? "", /ALTER ROLE "lockstep_node" SET/);
    await assertStartRefused(["synchronous-commit"]);
  } finally {
    await repl.admin("ALTER ROLE lockstep_node RESET synchronous_commit");
  }
});

test("a per-database override counts, and a role-in-database one in force masks it", async () => {
  await repl.admin("ALTER DATABASE sequencer_db SET synchronous_commit = local");
  try {
    const { findings } = await check();
    assert.deepEqual(kinds(findings), ["synchronous-commit"]);
    assert.match(findings[0]?.remedy ?? "", /ALTER DATABASE "sequencer_db" RESET synchronous_commit/);
    await repl.admin(
      "ALTER ROLE lockstep_node IN DATABASE sequencer_db SET synchronous_commit = remote_apply",
    );
    assert.deepEqual(kinds((await check()).findings), []);
  } finally {
    await repl.admin("ALTER ROLE lockstep_node IN DATABASE sequencer_db RESET synchronous_commit");
    await repl.admin("ALTER DATABASE sequencer_db RESET synchronous_commit");
  }
});

test("a role without pg_monitor cannot read the standbys: reported as such, not guessed", async () => {
  const { findings } = await check(repl.primary.url("sequencer_db", "lockstep_plain"));
  assert.deepEqual(kinds(findings), ["replication-unreadable"]);
  assert.match(findings[0]?.remedy ?? "", /GRANT pg_monitor TO "lockstep_plain"/);
});

test("asynchronous replication (empty synchronous_standby_names) is reported beforehand; fail refuses, warn starts and shows it in status", async () => {
  await repl.setSynchronousStandbyNames("");
  await repl.waitForStandbys({ standby1: "async" });
  try {
    const { findings } = await check();
    assert.deepEqual(kinds(findings), ["synchronous-standby-names", "sync-standbys"]);
    assert.match(findings[1]?.message ?? "", /standby1 is async \(streaming\)/);
    assert.match(findings[0]?.remedy ?? "", /FIRST 1 \(standby1\)/);

    const cli = await runLockstep(["replication", "check", "sequencer1", "--json", ...cfg]);
    assert.equal(cli.code, 3, cli.stdout + cli.stderr);
    assert.deepEqual(kinds(cli.json<ReportJson>().findings), ["synchronous-standby-names", "sync-standbys"]);

    await assertStartRefused(["synchronous-standby-names", "sync-standbys"]);

    const started = await runLockstep(
      ["node", "start", "sequencer1", "--detach", "--json", ...cfg],
      withCheck("warn"),
    );
    assert.equal(started.code, 0, started.stdout + started.stderr);
    const status = await runLockstep(["status", "--json", ...cfg]);
    assert.equal(status.code, 0, status.stderr);
    const sequencer = status
      .json<{ nodes: { name: string; running: boolean; replication: ReplicationFinding[] }[] }>()
      .nodes.find((n) => n.name === "sequencer1");
    assert.equal(sequencer?.running, true);
    assert.deepEqual(kinds(sequencer?.replication ?? []), ["synchronous-standby-names", "sync-standbys"]);
    assert.ok(sequencer?.replication.every((f) => f.remedy.length > 0));
    const stopped = await runLockstep(["node", "stop", "sequencer1", ...cfg]);
    assert.equal(stopped.code, 0, stopped.stderr);
  } finally {
    await repl.setSynchronousStandbyNames('FIRST 1 ("standby1")');
    await repl.waitForStandbys({ standby1: "sync" });
  }
});

test("min-sync-standbys above what synchronous_standby_names waits for", async () => {
  const { findings } = await check(nodeUrl, 2);
  assert.deepEqual(kinds(findings), ["synchronous-standby-count", "sync-standbys"]);
});

test("without a standby: too few synchronous standbys; check: fail refuses to start before any commit would wait", async () => {
  const standby = repl.standbys[0];
  assert.ok(standby);
  await standby.stop();
  try {
    await waitFor("standby1 gone from pg_stat_replication", async () =>
      (await repl.admin("SELECT 1 FROM pg_stat_replication")).length === 0 ? true : undefined,
    );
    const { findings } = await check();
    assert.deepEqual(kinds(findings), ["sync-standbys"]);
    assert.match(findings[0]?.message ?? "", /no standby is connected/);
    await assertStartRefused(["sync-standbys"]);
  } finally {
    await standby.start();
    await repl.waitForStandbys({ standby1: "sync" });
  }
});
