import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import type { Manifest } from "../../src/backup/manifest.ts";
import { stanzaPgBackRest } from "../../src/backup/pgbackrest/node-cluster.ts";
import { loadConfig } from "../../src/common/config.ts";
import { configNodes } from "../../src/common/config-schema.ts";
import { silentLogger } from "../../src/common/logging.ts";
import { runLockstep } from "../support/cli.ts";
import { allocateKnownParty, type LedgerNetwork, startLedgerNetwork } from "../support/ledger-network.ts";
import {
  acsKeys,
  cliOk,
  createIou,
  dropNodeDatabase,
  nodeStart,
  nodeStop,
  type PlanJson,
  restore,
  waitForRecovery,
} from "../support/restore-network.ts";
import { waitFor } from "../support/wait.ts";

// Issue 14's first scenario, on real pgBackRest and real PostgreSQL: the network's config names the
// pgbackrest engine, so `lockstep up` sets the embedded cluster up (archiving, stanza) before any
// node runs. Full backup, traffic, incremental; participant2 loses its database while the others keep
// running; it is restored from the incremental set (a physical restore into a scratch cluster, to
// the set's restore point), replays from the sequencer and agrees with participant1. The set passes
// `backup verify --drill`; a damaged file in pgBackRest's repository is then found by `backup verify`.

let network: LedgerNetwork | undefined;
after(() => network?.down());

const create = createIou;
const cli = cliOk;

async function physicalBackup(n: LedgerNetwork, type: string): Promise<Manifest> {
  const r = await cli(n, "backup", "create", "--engine", "pgbackrest", "--type", type, "--json");
  const set = r.json<{ set: string }>().set;
  return JSON.parse(readFileSync(join(n.net.dir, "backups", set, "manifest.json"), "utf8")) as Manifest;
}

test("a participant restored from a pgBackRest incremental replays and agrees; drill passes; damage is found", async (t) => {
  const n = await startLedgerNetwork({
    tolerance: "5s",
    configure: (config) => {
      config.backup = { ...(config.backup ?? {}), engine: "pgbackrest" };
    },
  });
  network = n;
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 1, "bob");
  await create(n, 0, "a1", alice, bob);

  const check = await cli(n, "backup", "check", "participant2", "--json");
  assert.equal(check.json<{ ok: boolean }>().ok, true, check.stdout);

  const full = await physicalBackup(n, "full");
  const fullRecord = full.nodes[0]?.engine;
  assert.equal(fullRecord?.name, "pgbackrest");
  t.diagnostic(`full set ${full.id}: ${fullRecord?.name === "pgbackrest" ? fullRecord.label : "?"}`);

  await create(n, 1, "b1", bob, alice);
  await create(n, 0, "a2", alice, bob);
  const incr = await physicalBackup(n, "incr");
  const p2 = incr.nodes.find((x) => x.name === "participant2");
  assert.ok(p2?.engine?.name === "pgbackrest" && p2.engine.type === "incr", JSON.stringify(p2?.engine));
  assert.ok(incr.safe, "the physical set passes the order check on chain hashes");
  // One pgBackRest backup of the shared cluster for all four nodes.
  assert.equal(
    new Set(incr.nodes.map((x) => (x.engine?.name === "pgbackrest" ? x.engine.label : ""))).size,
    1,
  );

  // After the set: traffic participant2 gets back from the sequencer after its restore.
  await create(n, 0, "a3", alice, bob);
  await create(n, 1, "b2", bob, alice);
  // Read once participant1 has all five: b2 was submitted on participant2 and acknowledged there.
  const expected = await waitFor("participant1 to hold the five contracts", async () => {
    const keys = await acsKeys(n, 0, alice);
    return keys.length === 5 ? keys : undefined;
  });

  await nodeStop(n, "participant2");
  await dropNodeDatabase(n, "participant2");
  const plan = await restore(n, "plan", incr.id, ["--nodes", "participant2"]);
  assert.equal(plan.code, 0, plan.stdout + plan.stderr);
  assert.ok(plan.json<PlanJson>().ok);
  // The others share the embedded cluster and keep running: participant2 alone, by copy.
  const path = plan.json<PlanJson>().checks.find((c) => c.check === "restore-path");
  assert.match(path?.message ?? "", /physical, by copy/);
  const apply = await restore(n, "apply", incr.id, ["--nodes", "participant2"]);
  assert.equal(apply.code, 0, apply.stdout + apply.stderr);
  await nodeStart(n, "participant2");
  await waitForRecovery(n, "participant2");
  let seen: string[] = [];
  await waitFor(
    "participant2 to agree with participant1",
    async () => {
      seen = await acsKeys(n, 1, bob).catch(() => []);
      return JSON.stringify(seen) === JSON.stringify(expected) ? true : undefined;
    },
    90_000,
    500,
  ).catch((error) => {
    throw new Error(
      `${error}: participant2 holds ${JSON.stringify(seen)}, participant1 ${JSON.stringify(expected)}`,
    );
  });
  assert.deepEqual(await acsKeys(n, 1, alice), await acsKeys(n, 0, alice));

  const drill = await cli(n, "backup", "verify", incr.id, "--drill", "--json");
  t.diagnostic(drill.stdout.slice(0, 400));

  // Damage one file of the repository: pgBackRest's verify (through Lockstep's) must find it.
  const bundleRoot = join(n.net.dir, "backups", "pgbackrest", "backup");
  const victim = findFile(bundleRoot, (f) => f.includes("/pg_data/base/") && statSync(f).size > 0);
  writeFileSync(victim, "damaged");
  const verify = await runLockstep(["backup", "verify", incr.id, "--json", ...n.cfg], { timeoutMs: 300_000 });
  assert.notEqual(verify.code, 0, `verify must fail on a damaged repository: ${verify.stdout}`);
  assert.match(verify.stdout + verify.stderr, /pgBackRest verify/);

  // pgBackRest's backups expired behind Lockstep's back (by hand): `restore plan` refuses the set
  // up front instead of failing half-way through apply.
  const record = p2.engine;
  const { config } = await loadConfig({ path: n.net.configPath });
  const pgbackrest = stanzaPgBackRest(config, configNodes(config), record.stanza, silentLogger("test"));
  pgbackrest.prepare();
  await pgbackrest.expire({ set: record.label });
  const gone = await restore(n, "plan", incr.id, ["--nodes", "participant2", "--replace"]);
  assert.equal(gone.code, 3, gone.stdout + gone.stderr);
  const artifact = gone.json<PlanJson>().checks.find((c) => c.check === "artifact");
  assert.equal(artifact?.code, "PGBACKREST_BACKUP_MISSING", JSON.stringify(artifact));
});

function findFile(dir: string, want: (path: string) => boolean): string {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) {
      const found = (() => {
        try {
          return findFile(path, want);
        } catch {
          return undefined;
        }
      })();
      if (found) return found;
    } else if (want(path)) return path;
  }
  throw new Error(`no file under ${dir}`);
}
