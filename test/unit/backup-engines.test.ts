import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { BackupEngines, chooseEngine } from "../../src/backup/backup-engines.ts";
import { createBackupKeyFile } from "../../src/backup/backup-keys.ts";
import { exampleConfig } from "../../src/common/config.ts";
import { configNodes, type LockstepConfig, type NodeEntry } from "../../src/common/config-schema.ts";
import { isLockstepError } from "../../src/common/errors.ts";
import { silentLogger } from "../../src/common/logging.ts";

// The backup engine registry (src/backup/backup-engines.ts): which engine backs up a node, and a
// clear refusal, never a silent pg_dump, for an engine this build does not have.

function network(edit: (config: LockstepConfig) => void = () => {}): {
  config: LockstepConfig;
  node: (name: string) => NodeEntry;
} {
  const config = exampleConfig("/tmp/lockstep-engines");
  edit(config);
  return {
    config,
    node: (name) => configNodes(config).find((n) => n.name === name) as NodeEntry,
  };
}

test("a node's engine: --engine, else the node's backup.engine, else backup.engine (default pg-dump)", () => {
  const plain = network();
  assert.equal(plain.config.backup.engine, "pg-dump");
  assert.deepEqual(chooseEngine(plain.config, plain.node("participant1")), {
    engine: "pg-dump",
    chosenBy: "backup.engine, for participant1",
  });

  const mixed = network((c) => {
    c.backup.engine = "pgbackrest";
    const participant1 = c.participants[0];
    if (participant1) participant1.backup = { engine: "pg-dump" };
  });
  assert.deepEqual(chooseEngine(mixed.config, mixed.node("participant1")), {
    engine: "pg-dump",
    chosenBy: "participant1's backup.engine",
  });
  assert.deepEqual(chooseEngine(mixed.config, mixed.node("participant2")), {
    engine: "pgbackrest",
    chosenBy: "backup.engine, for participant2",
  });
  // --engine wins over both, for this run.
  assert.deepEqual(chooseEngine(mixed.config, mixed.node("participant2"), "pg-dump"), {
    engine: "pg-dump",
    chosenBy: "--engine, for participant2",
  });
});

test("pg-dump is made once, with the config's format and jobs or the run's", () => {
  const { config, node } = network();
  const engines = new BackupEngines(config, silentLogger("test"), { format: "directory" });
  const engine = engines.forNode(node("participant1"));
  assert.equal(engine.name, "pg-dump");
  assert.equal(engine.restoresInto, "database");
  assert.deepEqual(
    engine.verifyTiers.map((t) => t.name),
    ["authentication", "archive listing"],
  );
  assert.equal(engines.forNode(node("sequencer1")), engine);
  const artifact = {
    setDir: "/x",
    name: "participant1.dump",
    record: { name: "pg-dump" as const, format: "custom" as const },
  };
  assert.equal(engines.forArtifact(artifact), engine);
});

test("pgbackrest is made with backup.pgbackrest's type or the run's --type", () => {
  const { config, node } = network((c) => {
    c.backup.engine = "pgbackrest";
  });
  const engines = new BackupEngines(config, silentLogger("test"));
  const engine = engines.forNode(node("mediator1"));
  assert.equal(engine.name, "pgbackrest");
  assert.deepEqual(
    engine.verifyTiers.map((t) => t.name),
    ["pgBackRest repository", "pgBackRest verify"],
  );
  assert.equal(engine.restoresInto, "database");
  // --engine pg-dump for one run takes every node back to pg_dump.
  assert.equal(
    new BackupEngines(config, silentLogger("test"), { engine: "pg-dump" }).forNode(node("mediator1")).name,
    "pg-dump",
  );
});

test("an engine this build lacks is refused by name, saying which setting chose it", () => {
  const { config, node } = network((c) => {
    c.backup.engine = "pgbackrest";
  });
  // A build with pg_dump only.
  const pgDumpOnly = new BackupEngines(network().config, silentLogger("test")).forNode(node("mediator1"));
  const factories = { "pg-dump": () => pgDumpOnly };
  const engines = new BackupEngines(config, silentLogger("test"), {}, factories);
  assert.throws(
    () => engines.forNode(node("mediator1")),
    (error: unknown) =>
      isLockstepError(error, "BACKUP_ENGINE_UNAVAILABLE") &&
      error.exitCode === 2 &&
      /pgbackrest \(chosen by backup\.engine, for mediator1\).*available: pg-dump/.test(error.message),
  );
  assert.throws(
    () =>
      new BackupEngines(network().config, silentLogger("test"), { engine: "pgbackrest" }, factories).forNode(
        node("mediator1"),
      ),
    (error: unknown) =>
      isLockstepError(error, "BACKUP_ENGINE_UNAVAILABLE") &&
      /chosen by --engine, for mediator1/.test(error.message),
  );
});

test("with backup.encryption, every engine is handed out; a key file that cannot be used is refused first", () => {
  const { config, node } = network((c) => {
    c.backup.engine = "pgbackrest";
    c.backup.encryption = { "key-file": "/nonexistent/backup.key", "previous-key-files": [] };
  });
  // pgbackrest encrypts through pgBackRest's repository encryption: no refusal of the engine, but
  // of the key file, before anything starts, whichever engine the run uses.
  for (const engine of ["pgbackrest", "pg-dump"] as const) {
    assert.throws(
      () => new BackupEngines(config, silentLogger("test"), { engine }).forNode(node("mediator1")),
      (error: unknown) =>
        isLockstepError(error, "BACKUP_KEY_FILE_INVALID") && /\/nonexistent\/backup\.key/.test(error.message),
    );
  }
  const dir = mkdtempSync(join(tmpdir(), "lockstep-engines-"));
  try {
    const key = createBackupKeyFile(join(dir, "backup.key"));
    config.backup.encryption = { "key-file": key.source, "previous-key-files": [] };
    assert.equal(
      new BackupEngines(config, silentLogger("test")).forNode(node("mediator1")).name,
      "pgbackrest",
    );
    assert.equal(
      new BackupEngines(config, silentLogger("test"), { engine: "pg-dump" }).forNode(node("mediator1")).name,
      "pg-dump",
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
