import assert from "node:assert/strict";
import { test } from "node:test";
import {
  evaluateReplication,
  parseSynchronousStandbyNames,
  type ReplicationFacts,
  type StandbyFact,
} from "../../src/storage/replication-check.ts";

function standby(name: string, syncState: string, state = "streaming"): StandbyFact {
  return {
    applicationName: name,
    clientAddress: "10.0.0.2",
    state,
    syncState,
    writeLagMs: 1,
    flushLagMs: 1,
    replayLagMs: 2,
    replayLagBytes: 0n,
  };
}

function facts(overrides: Partial<ReplicationFacts> = {}): ReplicationFacts {
  return {
    role: "node",
    database: "participant1",
    synchronousCommit: { value: "on", source: "default" },
    overrides: [],
    synchronousStandbyNames: "FIRST 1 (s1)",
    canReadReplication: true,
    standbys: [standby("s1", "sync")],
    patroni: false,
    ...overrides,
  };
}

const kinds = (f: ReplicationFacts, minSyncStandbys = 1) =>
  evaluateReplication(f, { minSyncStandbys }).map((x) => x.kind);

test("synchronous_standby_names grammar: FIRST, ANY, bare count, bare list, quoted names, empty", () => {
  assert.deepEqual(parseSynchronousStandbyNames('FIRST 2 ("s1", s2)'), {
    method: "first",
    count: 2,
    names: ["s1", "s2"],
  });
  assert.deepEqual(parseSynchronousStandbyNames("any 1 (a,b)"), {
    method: "any",
    count: 1,
    names: ["a", "b"],
  });
  assert.deepEqual(parseSynchronousStandbyNames("3 (a, b, c)"), {
    method: "first",
    count: 3,
    names: ["a", "b", "c"],
  });
  assert.deepEqual(parseSynchronousStandbyNames("a, b"), { method: "first", count: 1, names: ["a", "b"] });
  assert.deepEqual(parseSynchronousStandbyNames("*"), { method: "first", count: 1, names: ["*"] });
  assert.equal(parseSynchronousStandbyNames("  "), undefined);
});

test("a streaming synchronous standby with synchronous_commit on, remote_write or remote_apply passes", () => {
  for (const value of ["on", "remote_write", "remote_apply"]) {
    assert.deepEqual(kinds(facts({ synchronousCommit: { value, source: "configuration file" } })), []);
  }
  // ANY n: every candidate reports quorum.
  assert.deepEqual(
    kinds(
      facts({
        synchronousStandbyNames: "ANY 2 (s1, s2)",
        standbys: [standby("s1", "quorum"), standby("s2", "quorum")],
      }),
      2,
    ),
    [],
  );
});

test("synchronous_commit off or local is a finding naming where it is set, with the matching remedy", () => {
  const byRole = evaluateReplication(facts({ synchronousCommit: { value: "off", source: "user" } }), {
    minSyncStandbys: 1,
  });
  assert.deepEqual(
    byRole.map((f) => f.kind),
    ["synchronous-commit"],
  );
  assert.match(byRole[0]?.message ?? "", /off .*ALTER ROLE "node" SET/);
  assert.match(byRole[0]?.remedy ?? "", /ALTER ROLE "node" RESET synchronous_commit/);

  const byDatabase = evaluateReplication(
    facts({
      synchronousCommit: { value: "local", source: "database" },
      overrides: [{ scope: "database", role: null, database: "participant1", value: "local" }],
    }),
    { minSyncStandbys: 1 },
  );
  assert.match(byDatabase[0]?.remedy ?? "", /ALTER DATABASE "participant1" RESET synchronous_commit/);

  // The role-in-database setting is in force; the role's own weaker one would apply next: both named.
  const layered = evaluateReplication(
    facts({
      synchronousCommit: { value: "off", source: "database user" },
      overrides: [
        { scope: "role", role: "node", database: null, value: "local" },
        { scope: "role-in-database", role: "node", database: "participant1", value: "off" },
      ],
    }),
    { minSyncStandbys: 1 },
  );
  assert.match(layered[0]?.remedy ?? "", /IN DATABASE "participant1" RESET .*the role override \(local\)/);

  const server = evaluateReplication(
    facts({ synchronousCommit: { value: "off", source: "configuration file" } }),
    {
      minSyncStandbys: 1,
    },
  );
  assert.match(server[0]?.remedy ?? "", /ALTER SYSTEM SET synchronous_commit = on/);
});

test("a weak override masked by a stronger one in force is not a finding", () => {
  assert.deepEqual(
    kinds(
      facts({
        synchronousCommit: { value: "on", source: "database user" },
        overrides: [
          { scope: "database", role: null, database: "participant1", value: "off" },
          { scope: "role-in-database", role: "node", database: "participant1", value: "on" },
        ],
      }),
    ),
    [],
  );
});

test("empty synchronous_standby_names with an asynchronous standby: two findings, the remedy names the standby", () => {
  const findings = evaluateReplication(
    facts({ synchronousStandbyNames: "", standbys: [standby("s1", "async")] }),
    {
      minSyncStandbys: 1,
    },
  );
  assert.deepEqual(
    findings.map((f) => f.kind),
    ["synchronous-standby-names", "sync-standbys"],
  );
  assert.match(findings[0]?.remedy ?? "", /FIRST 1 \(s1\)/);
  assert.match(findings[0]?.remedy ?? "", /Patroni/, "names the Patroni way too when unsure");
  assert.match(findings[1]?.message ?? "", /s1 is async \(streaming\)/);
});

test("no standby connected, or one not yet streaming, is too few", () => {
  const none = evaluateReplication(facts({ standbys: [] }), { minSyncStandbys: 1 });
  assert.deepEqual(
    none.map((f) => f.kind),
    ["sync-standbys"],
  );
  assert.match(none[0]?.message ?? "", /no standby is connected/);
  assert.match(none[0]?.remedy ?? "", /pg_basebackup -R/);
  assert.deepEqual(kinds(facts({ standbys: [standby("s1", "sync", "catchup")] })), ["sync-standbys"]);
});

test("min-sync-standbys above what synchronous_standby_names waits for", () => {
  assert.deepEqual(kinds(facts({ standbys: [standby("s1", "sync"), standby("s2", "potential")] }), 2), [
    "synchronous-standby-count",
    "sync-standbys",
  ]);
});

test("min-sync-standbys 0 asks for no standby: only synchronous_commit is judged", () => {
  assert.deepEqual(
    kinds(facts({ synchronousStandbyNames: "", standbys: [], canReadReplication: false }), 0),
    [],
  );
  assert.deepEqual(kinds(facts({ synchronousCommit: { value: "off", source: "user" } }), 0), [
    "synchronous-commit",
  ]);
});

test("without pg_monitor the standbys cannot be judged: its own finding, not a guess", () => {
  const findings = evaluateReplication(
    facts({ canReadReplication: false, standbys: [{ ...standby("s1", ""), state: null, syncState: null }] }),
    { minSyncStandbys: 1 },
  );
  assert.deepEqual(
    findings.map((f) => f.kind),
    ["replication-unreadable"],
  );
  assert.match(findings[0]?.remedy ?? "", /GRANT pg_monitor TO "node"/);
});

test("under Patroni the remedies say what to change in Patroni, not ALTER SYSTEM", () => {
  const findings = evaluateReplication(facts({ patroni: true, synchronousStandbyNames: "", standbys: [] }), {
    minSyncStandbys: 1,
  });
  assert.match(findings[0]?.remedy ?? "", /synchronous_mode: true/);
  assert.doesNotMatch(findings[0]?.remedy ?? "", /ALTER SYSTEM/);
  assert.match(findings[1]?.remedy ?? "", /patronictl list/);
});
