import { join } from "node:path";
import { BackupRepository } from "../../src/backup/backup-repository.ts";
import { embeddedClusterDir, embeddedDatabaseName } from "../../src/node/node-database.ts";
import type { Db } from "../../src/storage/db.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { type CliResult, runLockstep } from "./cli.ts";
import { type LedgerNetwork, startLedgerNetwork } from "./ledger-network.ts";

/** The one network harness (startLedgerNetwork) with what backup tests use on top. */
export interface BackupTestNetwork extends LedgerNetwork {
  cli: (...args: string[]) => Promise<CliResult>;
  repository: BackupRepository;
  /** A Db on a node's database in the embedded cluster. */
  nodeDb: (node: string) => Db;
  /** Allocates a party on participant1 and creates an Iou, returning the party. */
  traffic: (party?: string) => Promise<string>;
}

export async function startBackupNetwork(participants = 1): Promise<BackupTestNetwork> {
  const network = await startLedgerNetwork({ participants });
  const cli = (...args: string[]) => runLockstep([...args, ...network.cfg], { timeoutMs: 180_000 });
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(network.dataDir) });
  const dbs: Db[] = [];
  let commands = 0;
  let alice: string | undefined;
  const expect = (r: CliResult, what: string) => {
    if (r.code !== 0) throw new Error(`${what} failed: ${r.stdout}${r.stderr}`);
    return r;
  };
  return {
    ...network,
    cli,
    repository: new BackupRepository(join(network.net.dir, "backups")),
    nodeDb(node) {
      const db = createPgDb({ connectionString: cluster.connectionUrl(embeddedDatabaseName(node)), max: 1 });
      dbs.push(db);
      return db;
    },
    async traffic() {
      if (!alice) {
        const r = await cli("ledger", "allocate-party", "alice", "--participant", "participant1", "--json");
        alice = expect(r, "allocate-party").json<{ party: string }>().party;
      }
      const args = JSON.stringify({ issuer: alice, owner: alice, amount: "10.00", currency: "USD" });
      const submit = ["--participant", "participant1", "--act-as", alice, "--command-id"];
      const r = await cli(
        "ledger",
        "submit",
        ...submit,
        `backup-test-${++commands}`,
        "--create",
        "Iou",
        "--args",
        args,
        "--json",
      );
      expect(r, "submit");
      return alice;
    },
    async down() {
      await Promise.all(dbs.map((db) => db.close()));
      await network.down();
    },
  };
}
