import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { parse, stringify } from "yaml";
import { BackupRepository } from "../../src/backup/backup-repository.ts";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { createNodeClient, nodeBaseUrl } from "../../src/common/rpc-client.ts";
import { generateWrapperKeyFile, loadWrapperKey, openPrivateKey } from "../../src/crypto/key-wrapping.ts";
import { KeyAdminService } from "../../src/gen/lockstep/admin/v1/keys_pb.ts";
import { embeddedClusterDir, embeddedDatabaseName } from "../../src/node/node-database.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { findClientTools } from "../../src/storage/postgres-binaries.ts";
import { type CliResult, runLockstep } from "../support/cli.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import {
  allocateKnownParty,
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
} from "../support/ledger-network.ts";
import {
  backupCreate,
  nodeLog,
  nodeStop,
  type PlanJson,
  restore,
  waitForNodeError,
} from "../support/restore-network.ts";

// Issue 11, keys encrypted at rest, through the CLI on real PostgreSQL: a dump of a node whose
// private keys are sealed under a wrapper key gives none of them away; restoring it needs the
// wrapper key (restore plan says so before anything changes); keys rotate-wrapper re-encrypts the
// store and retires the old wrapper key only once a backup holds the store under the new one.

let network: LedgerNetwork | undefined;
after(() => network?.down());

type Encryption = { "wrapper-key-file": string; "previous-wrapper-key-files"?: string[] };

interface KeysJson {
  keys: { fingerprint: string; wrapperFingerprint: string | null }[];
  overrides: { action: string; fingerprint: string; warning: string }[];
  wrapperKeys: { fingerprint: string; state: string; source: string; backupSets: string[] }[];
}

interface RotateWrapperJson {
  wrapperFingerprint: string;
  retired: string[];
  steps: { step: string; outcome: string; detail: string }[];
  warnings: string[];
  config: { "wrapper-key-file": string; "previous-wrapper-key-files": string[] };
}

function ok(r: CliResult, what: string): CliResult {
  assert.equal(r.code, 0, `${what} failed (${r.code}): ${r.stdout}${r.stderr}`);
  return r;
}

/** participant1's config entry in the YAML file at `path`, edited by `edit`, written back. */
function editParticipant1(path: string, edit: (p: Record<string, unknown>) => void): void {
  const config = parse(readFileSync(path, "utf8")) as ConfigInput;
  edit(config.participants?.[0] as Record<string, unknown>);
  writeFileSync(path, stringify(config));
}

function setEncryption(path: string, encryption: Encryption | undefined): void {
  editParticipant1(path, (p) => {
    p.crypto = encryption ? { "private-key-encryption": encryption } : {};
  });
}

test("encrypted key store: no plaintext key in a dump, restore needs the wrapper key, rotate-wrapper in the safe order", async () => {
  let keyA = "";
  network = await startLedgerNetwork({
    participants: 1,
    configure: (config, dir) => {
      mkdirSync(join(dir, "keys"));
      generateWrapperKeyFile(join(dir, "keys", "p1-a.key"));
      generateWrapperKeyFile(join(dir, "keys", "sequencer.key"));
      keyA = join(dir, "keys", "p1-a.key");
      const participant = config.participants?.[0] as Record<string, unknown>;
      // Relative to the config file's directory, as data-dir and backup.repository are.
      participant.crypto = { "private-key-encryption": { "wrapper-key-file": "keys/p1-a.key" } };
      participant.restore = { "deduplication-recovery": "warn" };
      config.synchronizer.sequencer.crypto = {
        "private-key-encryption": { "wrapper-key-file": "keys/sequencer.key" },
      };
    },
  });
  const n = network;
  const configPath = n.net.configPath;
  const cli = (args: string[], env?: NodeJS.ProcessEnv, cfg = n.cfg) =>
    runLockstep([...args, "--json", ...cfg], { env, timeoutMs: 180_000 });
  const clients = n.clients[0] as LedgerClients;
  const alice = await allocateKnownParty(n, 0, "alice");
  let commands = 0;
  const submit = async (what: string) => {
    await clients.commands
      .submitAndWait({ commands: createIouCommand(`cmd-${++commands}`, alice, alice) }, { timeoutMs: 60_000 })
      .catch((error) => {
        throw new Error(`${what}: ${error}\n${nodeLog(n, "participant1")}`);
      });
  };
  await submit("submission on the encrypted participant");

  const a = loadWrapperKey(keyA);
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(n.dataDir) });
  const p1Db = createPgDb({
    connectionString: cluster.connectionUrl(embeddedDatabaseName("participant1")),
    max: 1,
  });
  const storedRows = () =>
    p1Db.query<{
      fingerprint: string;
      public_key: Buffer;
      private_key: Buffer;
      wrapper_fingerprint: string | null;
    }>(
      "SELECT fingerprint, public_key, private_key, wrapper_fingerprint FROM crypto_private_keys ORDER BY 1",
    );
  try {
    // 1. The store is sealed under a; the plain keys are what the wrapper key opens.
    const rows = await storedRows();
    assert.equal(rows.length, 2);
    assert.ok(rows.every((r) => r.wrapper_fingerprint === a.fingerprint));
    const plain = rows.map((r) => ({ ...r, pkcs8: openPrivateKey(a, r.fingerprint, r.private_key) }));
    const keys = ok(await cli(["keys", "list", "participant1"]), "keys list").json<KeysJson>();
    assert.deepEqual(
      keys.wrapperKeys.map((w) => [w.fingerprint, w.state, w.source]),
      [[a.fingerprint, "active", a.source]],
    );

    // 2. A backup: the manifest names the wrapper key, the dump holds no private key bytes.
    const set1 = await backupCreate(n, ["participant1"]);
    const repository = new BackupRepository(join(n.net.dir, "backups"));
    const manifest = await repository.readManifest(set1);
    const node = manifest.nodes.find((x) => x.name === "participant1");
    assert.equal(node?.wrapperFingerprint, a.fingerprint);
    const artifact = join(repository.setDir(set1), node?.artifact ?? "");
    const sql = spawnSync(findClientTools().pgRestore, ["-f", "-", artifact], { maxBuffer: 1 << 28 });
    assert.equal(sql.status, 0, String(sql.stderr));
    const dumped = [sql.stdout, readFileSync(artifact)];
    for (const key of plain) {
      // The public key is in the dump: the search sees bytea columns.
      assert.ok(sql.stdout.includes(key.public_key.toString("hex")), "public key in the decoded dump");
      const seed = key.pkcs8.subarray(key.pkcs8.length - 32);
      for (const secret of [key.pkcs8, seed]) {
        for (const form of [secret, secret.toString("hex"), secret.toString("base64")]) {
          for (const bytes of dumped) {
            assert.equal(bytes.includes(form), false, `private key ${key.fingerprint} found in the dump`);
          }
        }
      }
    }

    // 3. Restoring without the wrapper key is refused, naming it; not forceable.
    await nodeStop(n, "participant1");
    const noKeyConfig = join(n.net.dir, "no-key.yaml");
    writeFileSync(noKeyConfig, readFileSync(configPath));
    setEncryption(noKeyConfig, undefined);
    const noKey = ["--config", noKeyConfig];
    const refused = await cli(["restore", "plan", set1, "--nodes", "participant1", "--replace"], {}, noKey);
    assert.equal(refused.code, 3, refused.stdout + refused.stderr);
    const plan = refused.json<{ checks: (PlanJson["checks"][number] & { message: string })[] }>();
    const refusals = plan.checks.filter((c) => c.verdict === "refuse");
    assert.deepEqual(
      refusals.map((c) => [c.check, c.code]),
      [["wrapper-key", "MISSING_WRAPPER_KEY"]],
      JSON.stringify(plan.checks),
    );
    assert.match(refusals[0]?.message ?? "", new RegExp(a.fingerprint));
    const forced = await cli(
      ["restore", "plan", set1, "--nodes", "participant1", "--replace", "--force", "wrapper-key"],
      {},
      noKey,
    );
    assert.equal(forced.code, 2, "a missing wrapper key is a fact, not a decision");

    // 4. With it: restored, started, and it signs (a submission goes through the network).
    ok(await restore(n, "apply", set1, ["--nodes", "participant1", "--replace"]), "restore apply");
    ok(await cli(["node", "start", "participant1", "--detach"]), "node start after restore");
    await submit("submission after the restore");

    // 5. rotate-wrapper to b, killed right after the store was re-encrypted.
    const keyB = join(n.net.dir, "keys", "p1-b.key");
    const killed = await cli(["keys", "rotate-wrapper", "participant1", "--new-key-file", keyB], {
      LOCKSTEP_CRASH_AT: "keys-rotate-wrapper-after-rewrap",
    });
    assert.equal(killed.code, -1, `killed after rewrap: ${killed.stderr}`);
    assert.equal(statSync(keyB).mode & 0o777, 0o600, "the new key file is the owner's only");
    const b = loadWrapperKey(keyB);
    assert.ok((await storedRows()).every((r) => r.wrapper_fingerprint === b.fingerprint));
    await submit("submission under the new wrapper key");
    // The node itself refuses to retire a while no backup holds the store under b.
    const rpc = createNodeClient(KeyAdminService, nodeBaseUrl(n.participantPorts[0] as number));
    const early = await rpc.retireWrapperKey({ fingerprint: a.fingerprint, force: false }).then(
      () => assert.fail("retired without a backup"),
      (error: unknown) => fromConnectError(error),
    );
    assert.equal(early?.code, "KEY_NOT_BACKED_UP", String(early));

    // The rerun finishes: key and rewrap found done, a backup, then the retire.
    const resumed = ok(
      await cli(["keys", "rotate-wrapper", "participant1", "--new-key-file", keyB]),
      "rotate-wrapper rerun",
    ).json<RotateWrapperJson>();
    assert.deepEqual(
      resumed.steps.map((s) => [s.step, s.outcome]),
      [
        ["key", "already"],
        ["rewrap", "already"],
        ["backup", "done"],
        ["retire", "done"],
      ],
    );
    assert.deepEqual(resumed.retired, [a.fingerprint]);
    assert.deepEqual(resumed.config, { "wrapper-key-file": keyB, "previous-wrapper-key-files": [keyA] });
    const afterB = ok(await cli(["keys", "list", "participant1"]), "keys list").json<KeysJson>();
    assert.deepEqual(
      afterB.wrapperKeys.map((w) => [w.fingerprint, w.state]),
      [
        [b.fingerprint, "active"],
        [a.fingerprint, "retired"],
      ],
    );
    assert.equal(afterB.wrapperKeys[0]?.backupSets.length, 1, "the rotation's set holds the store under b");
    assert.ok(afterB.keys.every((k) => k.wrapperFingerprint === b.fingerprint));

    // 6. b → c forced: no backup, the retire recorded with its warning.
    const keyC = join(n.net.dir, "keys", "p1-c.key");
    const forcedRotation = ok(
      await cli(["keys", "rotate-wrapper", "participant1", "--new-key-file", keyC, "--force"]),
      "forced rotate-wrapper",
    ).json<RotateWrapperJson>();
    assert.deepEqual(
      forcedRotation.steps.map((s) => [s.step, s.outcome]),
      [
        ["key", "done"],
        ["rewrap", "done"],
        ["backup", "skipped"],
        ["retire", "done"],
      ],
    );
    assert.equal(forcedRotation.warnings.length, 1);
    const c = loadWrapperKey(keyC);
    const afterC = ok(await cli(["keys", "list", "participant1"]), "keys list").json<KeysJson>();
    assert.deepEqual(
      afterC.overrides.map((o) => [o.action, o.fingerprint]),
      [["retire-wrapper", b.fingerprint]],
    );

    // 7. Restarts: the old config (a only) is refused naming c and its file; c with b as previous
    // starts, and so does c alone (the rows are under c already).
    await nodeStop(n, "participant1");
    await runLockstep(["node", "start", "participant1", "--detach", ...n.cfg]);
    const stale = await waitForNodeError(n, "participant1", ["MISSING_WRAPPER_KEY"]);
    assert.match(stale.lastError?.message ?? "", new RegExp(`${c.fingerprint}.*${keyC}`));
    await nodeStop(n, "participant1");
    setEncryption(configPath, { "wrapper-key-file": keyC, "previous-wrapper-key-files": [keyB, keyA] });
    ok(await cli(["node", "start", "participant1", "--detach"]), "start with c, b and a as previous");
    await submit("submission after the switch in the config");
    await nodeStop(n, "participant1");
    setEncryption(configPath, { "wrapper-key-file": "keys/p1-c.key" });
    ok(await cli(["node", "start", "participant1", "--detach"]), "start with c only");
    await submit("submission with only the current wrapper key configured");
    assert.ok(existsSync(keyA), "the tool never deletes a wrapper key file");
  } finally {
    await p1Db.close();
  }
});
