import assert from "node:assert/strict";
import { test } from "node:test";
import { expireArgs, restoreArgs } from "../../src/backup/pgbackrest/pgbackrest-cli.ts";
import {
  archiveCommand,
  pgBackRestConfig,
  pgBackRestRepoPath,
  postgresSettings,
} from "../../src/backup/pgbackrest/pgbackrest-config.ts";
import { lsnToBigInt, parseInfo, parseVerify } from "../../src/backup/pgbackrest/pgbackrest-info.ts";
import { isLockstepError } from "../../src/common/errors.ts";

const input = {
  stanza: "lockstep",
  repoPath: pgBackRestRepoPath("/srv/backups"),
  stateDir: "/srv/data/postgres-pgbackrest",
  cluster: { dataDir: "/srv/data/postgres/data", port: 5433, socketDir: "/srv/data/postgres" },
};

test("pgbackrest.conf names the repository, state folders, fixed choices and the cluster", () => {
  const text = pgBackRestConfig(input);
  const lines = text.trimEnd().split("\n");
  for (const line of [
    "[global]",
    "repo1-path=/srv/backups/pgbackrest",
    "lock-path=/srv/data/postgres-pgbackrest/lock",
    "log-path=/srv/data/postgres-pgbackrest/log",
    "spool-path=/srv/data/postgres-pgbackrest/spool",
    "start-fast=y",
    "compress-type=zst",
    "process-max=2",
    "archive-async=n",
    "expire-auto=n",
    "[lockstep]",
    "pg1-path=/srv/data/postgres/data",
    "pg1-port=5433",
    "pg1-socket-path=/srv/data/postgres",
    "pg1-user=postgres",
  ]) {
    assert.ok(lines.includes(line), `has ${line}`);
  }
  // The stanza section comes after the global one, and holds the pg1 options.
  assert.ok(lines.indexOf("[lockstep]") < lines.indexOf("pg1-path=/srv/data/postgres/data"));
  assert.ok(lines.indexOf("[global]") < lines.indexOf("[lockstep]"));
  assert.match(
    pgBackRestConfig({ ...input, compressType: "lz4", processMax: 4 }),
    /compress-type=lz4\nprocess-max=4\n/,
  );
});

test("pgbackrest.conf refuses what would break the file or the socket", () => {
  const refused = (change: object, pattern: RegExp) =>
    assert.throws(
      () => pgBackRestConfig({ ...input, ...change }),
      (e: unknown) => isLockstepError(e) && e.code === "CONFIG_INVALID" && pattern.test(e.message),
    );
  refused({ stanza: "a b" }, /stanza/);
  refused({ repoPath: "relative/repo" }, /absolute/);
  refused({ stateDir: "/x\n[evil]" }, /line breaks/);
  refused({ processMax: 0 }, /process-max/);
  refused({ cluster: { ...input.cluster, port: 70000 } }, /port/);
  refused({ cluster: { ...input.cluster, socketDir: `/${"d".repeat(100)}` } }, /too long/);
  refused({ cluster: { ...input.cluster, socketDir: "/a,b" } }, /must not contain/);
});

test("archive_command and the server settings for archiving", () => {
  assert.equal(
    archiveCommand("/srv/state/pgbackrest.conf", "lockstep"),
    "pgbackrest --config=/srv/state/pgbackrest.conf --stanza=lockstep archive-push %p",
  );
  // A path with a space or a quote is quoted for the shell PostgreSQL runs it with.
  assert.equal(
    archiveCommand("/srv/my state/it's.conf", "s"),
    `pgbackrest '--config=/srv/my state/it'\\''s.conf' --stanza=s archive-push %p`,
  );
  assert.deepEqual(postgresSettings({ configFile: "/c.conf", stanza: "s", socketDir: "/run/pg" }), {
    wal_level: "replica",
    archive_mode: "on",
    archive_command: "pgbackrest --config=/c.conf --stanza=s archive-push %p",
    archive_timeout: "1min",
    unix_socket_directories: "/run/pg",
  });
});

test("restore and expire options", () => {
  assert.deepEqual(restoreArgs({ dataDir: "/d" }), ["--pg1-path=/d", "--type=default"]);
  assert.deepEqual(
    restoreArgs({
      dataDir: "/d",
      set: "L",
      target: { type: "immediate" },
      databases: ["a", "b"],
      delta: true,
    }),
    [
      "--pg1-path=/d",
      "--type=immediate",
      "--set=L",
      "--target-action=promote",
      "--db-include=a",
      "--db-include=b",
      "--delta",
    ],
  );
  assert.deepEqual(
    restoreArgs({ dataDir: "/d", target: { type: "name", name: "cp1" }, targetAction: "pause" }),
    ["--pg1-path=/d", "--type=name", "--target=cp1", "--target-action=pause"],
  );
  // A restore point is followed on the timeline it was written on, not the newest.
  assert.deepEqual(
    restoreArgs({ dataDir: "/d", target: { type: "name", name: "cp1", timeline: 2 } }).slice(1),
    ["--type=name", "--target=cp1", "--target-timeline=2", "--target-action=promote"],
  );
  assert.deepEqual(
    restoreArgs({
      dataDir: "/d",
      target: { type: "time", time: new Date("2026-12-03T05:02:28.123Z"), exclusive: true },
    }),
    [
      "--pg1-path=/d",
      "--type=time",
      "--target=2026-12-03 05:02:28.123+00",
      "--target-exclusive",
      "--target-action=promote",
    ],
  );
  assert.deepEqual(
    restoreArgs({ dataDir: "/d", target: { type: "time", time: "2026-12-03 05:02:28.123456+00" } }).slice(
      2,
      3,
    ),
    ["--target=2026-12-03 05:02:28.123456+00"],
  );
  assert.deepEqual(expireArgs({ set: "L" }), ["--set=L"]);
  assert.deepEqual(expireArgs({ retentionFull: 2, retentionFullType: "count", retentionDiff: 3 }), [
    "--repo1-retention-full=2",
    "--repo1-retention-full-type=count",
    "--repo1-retention-diff=3",
  ]);
});

// pgBackRest 2.45's `info --output=json` (a full and an incremental), as printed.
const INFO = `[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000005","min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000002","stop":"000000010000000000000003"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":37944001,"repository":{"delta":4677816,"size":4677816},"size":37944001},"label":"20261203-050225F","lsn":{"start":"0/2000028","stop":"0/3000050"},"prior":null,"reference":null,"timestamp":{"start":1796274145,"stop":1796274148},"type":"full"},{"archive":{"start":"000000010000000000000005","stop":"000000010000000000000005"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"database-ref":[{"name":"a","oid":16384},{"name":"postgres","oid":5}],"error":false,"info":{"delta":606474,"repository":{"delta":43049,"size":4677832},"size":37944002},"label":"20261203-050225F_20261203-050228I","link":null,"lsn":{"start":"0/5000028","stop":"0/5000100"},"prior":"20261203-050225F","reference":["20261203-050225F"],"tablespace":null,"timestamp":{"start":1796274148,"stop":1796274150},"type":"incr"}],"cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7714938695381390947,"version":"15"}],"name":"main","repo":[{"cipher":"none","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]`;

test("info: the backup chain, LSNs, times, sizes and the archived WAL range", () => {
  const info = parseInfo(INFO, "main");
  assert.deepEqual(info.status, { code: 0, message: "ok" });
  assert.equal(info.backupRunning, false);
  assert.deepEqual(info.archive, [
    { id: "15-1", min: "000000010000000000000001", max: "000000010000000000000005" },
  ]);
  const [full, incr] = info.backups;
  assert.equal(full?.type, "full");
  assert.equal(full?.prior, undefined);
  assert.deepEqual(full?.references, []);
  assert.equal(full?.databases, undefined);
  assert.deepEqual(full?.lsn, { start: "0/2000028", stop: "0/3000050" });
  assert.equal(incr?.type, "incr");
  assert.equal(incr?.prior, "20261203-050225F");
  assert.deepEqual(incr?.references, ["20261203-050225F"]);
  assert.deepEqual(incr?.wal, { start: "000000010000000000000005", stop: "000000010000000000000005" });
  assert.deepEqual(incr?.databases, [
    { name: "a", oid: 16384 },
    { name: "postgres", oid: 5 },
  ]);
  assert.equal(incr?.startedAt.getTime(), 1796274148_000);
  assert.deepEqual(incr?.size, {
    database: 37944002,
    delta: 606474,
    repository: 4677832,
    repositoryDelta: 43049,
  });
  assert.throws(() => parseInfo(INFO, "other"), /stanza other is not in the output/);
  assert.throws(() => parseInfo("not json", "main"), /not JSON/);
  // A stanza that does not exist yet: status code 1, no backups.
  const missing = parseInfo(
    `[{"archive":[],"backup":[],"cipher":"none","db":[],"name":"s","repo":[],"status":{"code":1,"message":"missing stanza path"}}]`,
    "s",
  );
  assert.equal(missing.status.code, 1);
  assert.deepEqual(missing.backups, []);
});

test("LSNs compare as numbers", () => {
  assert.equal(lsnToBigInt("0/5000028"), 0x5000028n);
  assert.equal(lsnToBigInt("16/B374D848"), (0x16n << 32n) | 0xb374d848n);
  assert.ok(lsnToBigInt("1/0") > lsnToBigInt("0/FFFFFFFF"));
  assert.throws(() => lsnToBigInt("nope"), /not an LSN/);
});

// `verify --output=text --verbose --log-level-console=info` after flipping bytes in one backup file.
const VERIFY_DAMAGED = `2026-12-03 05:02:48.709 P00   INFO: verify command begin 2.45: --config=/tmp/x.conf --stanza=main --verbose
2026-12-03 05:02:48.787 P01   INFO: invalid checksum '20261203-050225F/pg_data/base/16384/1247.zst'
2026-12-03 05:02:49.067 P00   INFO: stanza: main
                                    status: error
                                      backup: 20261203-050225F, status: invalid, total files checked: 1561, total valid files: 1560
                                        missing: 0, checksum invalid: 1, size invalid: 0, other: 0
stanza: main
status: error
  archiveId: 15-1, total WAL checked: 5, total valid WAL: 5
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261203-050225F, status: invalid, total files checked: 1561, total valid files: 1560
    missing: 0, checksum invalid: 1, size invalid: 0, other: 0
  backup: 20261203-050225F_20261203-050228I, status: invalid, total files checked: 1561, total valid files: 1560
    missing: 0, checksum invalid: 1, size invalid: 0, other: 0
2026-12-03 05:02:49.067 P00   INFO: verify command end: completed successfully (360ms)
`;

test("verify: damaged files are reported per backup and by name", () => {
  const report = parseVerify(VERIFY_DAMAGED);
  assert.equal(report.ok, false);
  assert.equal(report.status, "error");
  assert.deepEqual(report.problems, ["invalid checksum '20261203-050225F/pg_data/base/16384/1247.zst'"]);
  assert.deepEqual(report.archives, [
    { id: "15-1", checked: 5, valid: 5, missing: 0, checksumInvalid: 0, sizeInvalid: 0, other: 0 },
  ]);
  assert.deepEqual(
    report.backups.map((b) => [b.label, b.status, b.checksumInvalid]),
    [
      ["20261203-050225F", "invalid", 1],
      ["20261203-050225F_20261203-050228I", "invalid", 1],
    ],
  );
  assert.ok(report.text.startsWith("stanza: main\nstatus: error\n"));

  const clean = parseVerify(
    [
      "stanza: main",
      "status: ok",
      "  archiveId: 15-1, total WAL checked: 5, total valid WAL: 5",
      "    missing: 0, checksum invalid: 0, size invalid: 0, other: 0",
      "  backup: 20261203-050225F, status: valid, total files checked: 1561, total valid files: 1561",
      "    missing: 0, checksum invalid: 0, size invalid: 0, other: 0",
    ].join("\n"),
  );
  assert.equal(clean.ok, true);
  assert.deepEqual(clean.problems, []);
  assert.throws(() => parseVerify("nothing useful"), /no status/);
});
