import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import pg from "pg";
import { checkNode, setupNode } from "../../src/backup/pgbackrest/cluster-setup.ts";
import { inspectSetup, nodeCluster, requireSetUp } from "../../src/backup/pgbackrest/node-cluster.ts";
import { exampleConfig } from "../../src/common/config.ts";
import { configNodes, type NodeEntry } from "../../src/common/config-schema.ts";
import { isLockstepError } from "../../src/common/errors.ts";
import { silentLogger } from "../../src/common/logging.ts";
import { embeddedClusterDir } from "../../src/node/node-database.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { waitFor } from "../support/wait.ts";

// `backup setup` and `backup check` on a real embedded cluster and the real pgBackRest: a fresh
// cluster is refused (not archiving, no stanza), setup switches archiving on (one restart) and
// creates the stanza, check passes; then an operator breaks archive_command: check names the
// setting, and once the archiver has failed, the archiver too.

const base = mkdtempSync(join(tmpdir(), "lockstep-pgbr-setup-"));
const config = exampleConfig(join(base, "data"));
const logger = silentLogger("test");
const participant = configNodes(config).find((e) => e.name === "participant1") as NodeEntry;
after(async () => {
  await new LocalPostgres({ dir: embeddedClusterDir(config["data-dir"]) }).stop().catch(() => {});
  rmSync(base, { recursive: true, force: true });
});

async function sql(url: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

test("a fresh cluster is refused, setup makes it archive, check proves it, a broken archive_command is found", async () => {
  const fresh = await nodeCluster(config, participant, logger);
  const before = await inspectSetup(fresh);
  assert.equal(before.archiving, false);
  assert.equal(before.stanza, false);
  await assert.rejects(requireSetUp(fresh), (e: unknown) => isLockstepError(e, "PGBACKREST_NOT_SET_UP"));

  const setUp = await setupNode(config, participant, logger);
  assert.equal(setUp.managed, "embedded");
  assert.equal(setUp.restarted, true, "archive_mode needs a restart");
  assert.deepEqual(setUp.pending, []);
  const again = await setupNode(config, participant, logger);
  assert.equal(again.restarted, false, "a second setup changes nothing");

  const ok = await checkNode(config, participant, logger);
  assert.equal(ok.ok, true, JSON.stringify(ok.findings));
  assert.deepEqual(
    ok.findings.map((f) => f.check),
    ["settings", "stanza", "pgbackrest check", "wal in repository", "archiver"],
  );

  // Broken by hand: WAL no longer reaches the repository.
  const cluster = await nodeCluster(config, participant, logger);
  await sql(cluster.url, "ALTER SYSTEM SET archive_command = 'false'");
  await sql(cluster.url, "SELECT pg_reload_conf()");
  const broken = await checkNode(config, participant, logger);
  assert.equal(broken.ok, false);
  assert.match(broken.findings.find((f) => f.check === "settings")?.detail ?? "", /archive_command/);
  // The archiver tries (and fails) once a segment is complete.
  await sql(cluster.url, "SELECT txid_current()");
  await sql(cluster.url, "SELECT pg_switch_wal()");
  const archiver = await waitFor(
    "the archiver to report its failure",
    async () => {
      const found = (await checkNode(config, participant, logger)).findings.find(
        (f) => f.check === "archiver",
      );
      return found?.ok === false ? found : undefined;
    },
    30_000,
    500,
  );
  assert.equal(archiver?.ok, false, JSON.stringify(archiver));
  assert.match(archiver?.detail ?? "", /failed after the last success/);
});
