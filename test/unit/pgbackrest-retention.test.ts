/**
 * Which pgBackRest backups `lockstep backup expire` expires (planPgBackRestExpiry, pure), and the
 * executor's edges against a fake pgBackRest (no folder, not installed, one `expire --set` per chain,
 * a failure reported). The real tool: test/integration/pgbackrest-expire.test.ts.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { type Manifest, type NodeBackup, sealManifest } from "../../src/backup/manifest.ts";
import type { PgBackRest } from "../../src/backup/pgbackrest/pgbackrest-cli.ts";
import type { PgBackRestBackup } from "../../src/backup/pgbackrest/pgbackrest-info.ts";
import {
  expirePgBackRest,
  planPgBackRestExpiry,
  type StanzaExpiryPlan,
} from "../../src/backup/pgbackrest/pgbackrest-retention.ts";
import { LockstepError } from "../../src/common/errors.ts";
import { unsignedManifest } from "../support/manifest-fixture.ts";

/** A set whose nodes restore from these [stanza, label] backups. */
function set(id: string, refs: [string, string][]): Manifest {
  const base = unsignedManifest(id);
  const template = base.nodes[0] as NodeBackup & { kind: "participant" };
  const nodes = refs.map(([stanza, label], i): NodeBackup => {
    const { format: _format, ...rest } = template;
    return {
      ...rest,
      name: `participant${i + 1}`,
      engine: {
        name: "pgbackrest",
        stanza,
        label,
        type: label.endsWith("F") ? "full" : label.endsWith("D") ? "diff" : "incr",
        startLsn: "0/2000028",
        stopLsn: "0/2000100",
        database: `participant${i + 1}`,
        target: { type: "name", name: `lockstep-${id}`, lsn: "0/3000000" },
      },
    };
  });
  return sealManifest({ ...base, manifestVersion: 3, nodes });
}

/** A backup as `info` describes it; `on`: the backups it builds on, the last being its prior. */
function backup(label: string, on: string[] = []): PgBackRestBackup {
  const type = label.endsWith("F") ? "full" : label.endsWith("D") ? "diff" : "incr";
  return {
    label,
    type,
    ...(on.length > 0 ? { prior: on.at(-1) } : {}),
    references: on,
    lsn: { start: "0/2000028", stop: "0/2000100" },
    wal: { start: "000000010000000000000002", stop: "000000010000000000000002" },
    startedAt: new Date(0),
    stoppedAt: new Date(0),
    size: { database: 1, delta: 1, repository: 1, repositoryDelta: 1 },
    pageErrors: false,
  };
}

const F1 = "20261201-010000F";
const F1_I1 = `${F1}_20261201-020000I`;
const F1_I2 = `${F1}_20261201-030000I`;
const F1_D1 = `${F1}_20261201-020000D`;
const F1_D1_I = `${F1}_20261201-023000I`;
const F1_D2 = `${F1}_20261201-030000D`;
const F2 = "20261202-010000F";
const F2_I1 = `${F2}_20261202-020000I`;

/** full → incr → incr, then a new full. */
const chain = [backup(F1), backup(F1_I1, [F1]), backup(F1_I2, [F1, F1_I1]), backup(F2)];

const one = (plans: StanzaExpiryPlan[], stanza = "s1"): StanzaExpiryPlan => {
  const plan = plans.find((p) => p.stanza === stanza);
  assert.ok(plan, `a plan for ${stanza}`);
  return plan;
};
const labels = (entries: { label: string }[]) => entries.map((e) => e.label);

test("full → incr → incr: a set on the last incr keeps the whole chain", () => {
  const plan = one(planPgBackRestExpiry([set("S1", [["s1", F1_I2]])], new Map([["s1", chain]])));
  assert.deepEqual(labels(plan.kept), [F1, F1_I1, F1_I2, F2]);
  assert.deepEqual(plan.expired, []);
  assert.deepEqual(plan.roots, []);
  const kept = new Map(plan.kept.map((k) => [k.label, k]));
  assert.deepEqual(kept.get(F1)?.neededBy, ["S1"]);
  assert.match(kept.get(F1)?.reason ?? "", new RegExp(`${F1_I2} builds on it \\(restored by set S1\\)`));
  assert.match(kept.get(F1_I2)?.reason ?? "", /set S1 restores from it/);
  assert.deepEqual(kept.get(F2)?.neededBy, []);
  assert.match(kept.get(F2)?.reason ?? "", /newest full backup of stanza s1.*never expired/);
});

test("full → incr → incr no set needs: one `expire --set` of the full takes the incrs along", () => {
  const plan = one(
    planPgBackRestExpiry([set("S2", [["s1", F2]])], new Map([["s1", chain]]), {
      deleted: [set("S1", [["s1", F1_I1]])],
    }),
  );
  assert.deepEqual(labels(plan.kept), [F2]);
  assert.match(plan.kept[0]?.reason ?? "", /set S2 restores from it; also the newest full backup/);
  assert.deepEqual(labels(plan.expired), [F1, F1_I1, F1_I2]);
  assert.deepEqual(plan.roots, [{ label: F1, dependents: [F1_I1, F1_I2] }]);
  const why = new Map(plan.expired.map((e) => [e.label, e.reason]));
  assert.match(why.get(F1)!, /no remaining set needs it \(set S1, deleted now, did\)$/);
  assert.match(why.get(F1_I1)!, new RegExp(`set S1, deleted now, did\\); goes with ${F1}`));
  assert.match(why.get(F1_I2)!, new RegExp(`taken by hand.*; goes with ${F1}, which it builds on`));
});

test("differential: a set on the second diff keeps it and the full; the first diff and its incr go", () => {
  const backups = [
    backup(F1),
    backup(F1_D1, [F1]),
    backup(F1_D1_I, [F1, F1_D1]),
    backup(F1_D2, [F1]),
    backup(F2),
  ];
  const plan = one(planPgBackRestExpiry([set("S1", [["s1", F1_D2]])], new Map([["s1", backups]])));
  assert.deepEqual(labels(plan.kept), [F1, F1_D2, F2]);
  assert.deepEqual(labels(plan.expired), [F1_D1, F1_D1_I]);
  assert.deepEqual(plan.roots, [{ label: F1_D1, dependents: [F1_D1_I] }]);
});

test("two stanzas are planned apart; a set may need backups of both", () => {
  const other = [backup(F1), backup(F1_I1, [F1]), backup(F2), backup(F2_I1, [F2])];
  const plans = planPgBackRestExpiry(
    [set("S1", [["s1", F1_I1]]), set("S2", [["s2", F2_I1]])],
    new Map([
      ["s2", other],
      ["s1", chain],
    ]),
  );
  assert.deepEqual(
    plans.map((p) => p.stanza),
    ["s1", "s2"],
  );
  const s1 = one(plans, "s1");
  assert.deepEqual(labels(s1.kept), [F1, F1_I1, F2]);
  assert.deepEqual(labels(s1.expired), [F1_I2]);
  assert.deepEqual(s1.roots, [{ label: F1_I2, dependents: [] }]);
  const s2 = one(plans, "s2");
  assert.deepEqual(labels(s2.kept), [F2, F2_I1]);
  assert.deepEqual(labels(s2.expired), [F1, F1_I1]);
  // A set on both stanzas keeps its backup in each.
  const both = planPgBackRestExpiry(
    [
      set("S3", [
        ["s1", F1],
        ["s2", F1_I1],
      ]),
    ],
    new Map([
      ["s1", chain],
      ["s2", other],
    ]),
  );
  assert.deepEqual(labels(one(both, "s1").kept), [F1, F2]);
  assert.deepEqual(labels(one(both, "s2").kept), [F1, F1_I1, F2]);
  assert.deepEqual(labels(one(both, "s2").expired), [F2_I1]);
});

test("backups taken by hand are expired unless a kept one builds on them", () => {
  const backups = [backup(F1), backup(F1_I1, [F1]), backup(F2), backup(F2_I1, [F2])];
  const plan = one(planPgBackRestExpiry([], new Map([["s1", backups]])));
  assert.deepEqual(labels(plan.kept), [F2]);
  assert.deepEqual(labels(plan.expired), [F1, F1_I1, F2_I1]);
  assert.deepEqual(plan.roots, [
    { label: F1, dependents: [F1_I1] },
    { label: F2_I1, dependents: [] },
  ]);
  for (const e of plan.expired) assert.match(e.reason, /taken by hand/);
});

test("the newest full is never expired, even when no set needs it; an older full alone goes", () => {
  const plan = one(planPgBackRestExpiry([], new Map([["s1", [backup(F1), backup(F2)]]])));
  assert.deepEqual(plan.kept, [
    {
      label: F2,
      neededBy: [],
      reason:
        "the newest full backup of stanza s1: the base the next incremental or differential backup builds on, never expired",
    },
  ]);
  assert.deepEqual(labels(plan.expired), [F1]);
  // A stanza with a single full: kept.
  assert.deepEqual(labels(one(planPgBackRestExpiry([], new Map([["s1", [backup(F1)]]]))).kept), [F1]);
});

test("a deleted set's incr that a remaining set's incr builds on keeps the whole chain", () => {
  const plan = one(
    planPgBackRestExpiry([set("S2", [["s1", F1_I2]])], new Map([["s1", chain]]), {
      deleted: [set("S1", [["s1", F1_I1]])],
    }),
  );
  assert.deepEqual(plan.expired, []);
  const i1 = plan.kept.find((k) => k.label === F1_I1);
  assert.deepEqual(i1?.neededBy, ["S2"]);
  assert.match(i1?.reason ?? "", new RegExp(`${F1_I2} builds on it \\(restored by set S2\\)`));
});

test("a set being written may need any backup: nothing is expired", () => {
  const plan = one(planPgBackRestExpiry([], new Map([["s1", chain]]), { writing: ["W1"] }));
  assert.deepEqual(plan.expired, []);
  assert.deepEqual(labels(plan.kept), [F1, F1_I1, F1_I2, F2]);
  assert.deepEqual(plan.kept[0]?.neededBy, ["W1"]);
  assert.match(plan.kept[0]?.reason ?? "", /set W1 is being written/);
});

test("a label pgBackRest no longer holds is reported missing; pg_dump sets name no backup", () => {
  const plan = one(
    planPgBackRestExpiry(
      [set("S1", [["s1", "20261130-010000F"]]), sealManifest(unsignedManifest("S0"))],
      new Map([["s1", [backup(F2)]]]),
    ),
  );
  assert.deepEqual(plan.missing, [{ label: "20261130-010000F", neededBy: ["S1"] }]);
  assert.deepEqual(labels(plan.kept), [F2]);
});

// The executor, against a fake pgBackRest.
const base = mkdtempSync(join(tmpdir(), "lockstep-pgbackrest-retention-"));
after(() => rmSync(base, { recursive: true, force: true }));

function fake(backups: PgBackRestBackup[], failOn?: string): { tool: PgBackRest; expired: string[] } {
  const expired: string[] = [];
  const tool = {
    info: async () => ({
      stanza: "s1",
      status: { code: 0, message: "ok" },
      backups,
      archive: [],
      backupRunning: false,
    }),
    expire: async (request: { set: string }) => {
      if (request.set === failOn)
        throw new LockstepError("PGBACKREST_FAILED", {
          command: "expire",
          exitCode: 1,
          reason: "boom",
          logPath: "/log",
        });
      expired.push(request.set);
    },
  } as unknown as PgBackRest;
  return { tool, expired };
}

const quiet = () => {};

test("executor: no pgbackrest folder, or pgBackRest not installed: nothing to do, no error", async () => {
  const none = await expirePgBackRest({
    context: { repoPath: join(base, "absent"), forStanza: () => assert.fail("not called") },
    dryRun: false,
    deleted: [set("S1", [["s1", F1]])],
    current: async () => ({ remaining: [], writing: [] }),
    progress: quiet,
  });
  assert.deepEqual(none, []);
  const repoPath = join(base, "repo1");
  mkdirSync(join(repoPath, "backup", "s1"), { recursive: true });
  const lines: string[] = [];
  const missing = await expirePgBackRest({
    context: {
      repoPath,
      forStanza: () => {
        throw new LockstepError("PGBACKREST_NOT_INSTALLED", { executable: "pgbackrest", reason: "ENOENT" });
      },
    },
    dryRun: false,
    deleted: [],
    current: async () => ({ remaining: [], writing: [] }),
    progress: (line) => lines.push(line),
  });
  assert.deepEqual(missing, []);
  assert.match(lines.join("\n"), /pgBackRest is not installed/);
});

test("executor: one `expire --set` per chain; a dry run runs none; a failure is reported", async () => {
  const repoPath = join(base, "repo2");
  mkdirSync(join(repoPath, "backup", "s1"), { recursive: true });
  const backups = [backup(F1), backup(F1_I1, [F1]), backup(F2), backup(F2_I1, [F2])];
  const run = async (dryRun: boolean, failOn?: string) => {
    const { tool, expired } = fake(backups, failOn);
    const result = await expirePgBackRest({
      context: { repoPath, forStanza: () => tool },
      dryRun,
      deleted: [],
      current: async () => ({ remaining: [set("S2", [["s1", F2]])], writing: [] }),
      progress: quiet,
    });
    return { result, expired };
  };
  const dry = await run(true);
  assert.deepEqual(dry.expired, []);
  assert.deepEqual(labels(dry.result[0]!.expired), [F1, F1_I1, F2_I1]);
  const real = await run(false);
  assert.deepEqual(real.expired, [F1, F2_I1]);
  assert.deepEqual(labels(real.result[0]!.expired), [F1, F1_I1, F2_I1]);
  assert.deepEqual(labels(real.result[0]!.kept), [F2]);
  const failed = await run(false, F2_I1);
  assert.deepEqual(labels(failed.result[0]!.expired), [F1, F1_I1], "only what pgBackRest did expire");
  assert.match(failed.result[0]!.error ?? "", /boom/);
});
