import { join } from "node:path";
import { BackupRepository } from "../../src/backup/backup-repository.ts";
import { embeddedClusterDir, embeddedDatabaseName } from "../../src/node/node-database.ts";
import type { Db } from "../../src/storage/db.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { type CliResult, runLockstep, type TestNetworkConfig, writeTestConfig } from "./cli.ts";

/** A whole network started with `lockstep up --detach` (subprocesses), for backup tests. */
export interface BackupTestNetwork {
  net: TestNetworkConfig;
  cli: (...args: string[]) => Promise<CliResult>;
  repository: BackupRepository;
  /** A Db on a node's database in the embedded cluster. */
  nodeDb: (node: string) => Db;
  /** Allocates a party on participant1 and creates an Iou, returning the party. */
  traffic: (party?: string) => Promise<string>;
  down: () => Promise<void>;
}

export async function startBackupNetwork(participants = 1): Promise<BackupTestNetwork> {
  const net = await writeTestConfig(participants);
  const cli = (...args: string[]) =>
    runLockstep([...args, "--config", net.configPath], { timeoutMs: 180_000 });
  const up = await cli("up", "--detach", "--json");
  if (up.code !== 0) throw new Error(`lockstep up failed: ${up.stdout}${up.stderr}`);
  const dataDir = join(net.dir, "data");
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(dataDir) });
  const dbs: Db[] = [];
  let commands = 0;
  let alice: string | undefined;
  return {
    net,
    cli,
    repository: new BackupRepository(join(net.dir, "backups")),
    nodeDb(node) {
      const db = createPgDb({ connectionString: cluster.connectionUrl(embeddedDatabaseName(node)), max: 1 });
      dbs.push(db);
      return db;
    },
    async traffic() {
      if (!alice) {
        const r = await cli("ledger", "allocate-party", "alice", "--participant", "participant1", "--json");
        if (r.code !== 0) throw new Error(`allocate-party failed: ${r.stdout}${r.stderr}`);
        alice = r.json<{ party: string }>().party;
      }
      const args = JSON.stringify({ issuer: alice, owner: alice, amount: "10.00", currency: "USD" });
      const r = await cli(
        "ledger",
        "submit",
        "--participant",
        "participant1",
        "--act-as",
        alice,
        "--command-id",
        `backup-test-${++commands}`,
        "--create",
        "Iou",
        "--args",
        args,
        "--json",
      );
      if (r.code !== 0) throw new Error(`submit failed: ${r.stdout}${r.stderr}`);
      return alice;
    },
    async down() {
      await Promise.all(dbs.map((db) => db.close()));
      await cli("down");
    },
  };
}
