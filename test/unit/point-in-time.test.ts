import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  cliTarget,
  describeTarget,
  restorePointName,
  walArchived,
} from "../../src/backup/pgbackrest/pgbackrest-engine.ts";
import { RESTORE_POINT_NAME_MAX, walSegmentOf } from "../../src/backup/pgbackrest/restore-point.ts";
import { parseTargetTime } from "../../src/backup/point-in-time.ts";
import { lookupsOf } from "../../src/backup/point-in-time-set.ts";
import { isLockstepError } from "../../src/common/errors.ts";

// The pure parts of point-in-time recovery: target times, restore point names, WAL segment names.

test("a target time needs its zone; it is kept as given for PostgreSQL, parsed for choosing a backup", () => {
  const t = parseTargetTime("2026-12-03 07:05:24.093661+00");
  assert.equal(t.text, "2026-12-03 07:05:24.093661+00", "microseconds reach PostgreSQL");
  assert.equal(t.at.toISOString(), "2026-12-03T07:05:24.093Z");
  assert.equal(parseTargetTime("2026-12-03T07:05:24Z").at.toISOString(), "2026-12-03T07:05:24.000Z");
  assert.equal(parseTargetTime("2026-12-03 09:05:24+0200").at.toISOString(), "2026-12-03T07:05:24.000Z");
  assert.equal(parseTargetTime("2026-12-03 02:05:24-05:00").at.toISOString(), "2026-12-03T07:05:24.000Z");
  for (const bad of ["2026-12-03 07:05:24", "yesterday", "2026-12-03", "2026-13-40 99:00:00Z"]) {
    assert.throws(
      () => parseTargetTime(bad),
      (e: unknown) => isLockstepError(e, "INVALID_ARGUMENT"),
      bad,
    );
  }
  // Not judged by this host's clock (the cluster's decides, in commitPastTarget): a time ahead of it parses.
  const ahead = new Date(Date.now() + 3_600_000);
  assert.equal(parseTargetTime(ahead.toISOString(), "--sequencer-to-time").at.getTime(), ahead.getTime());
});

test("restore point names fit PostgreSQL's 63 bytes and stay distinct", () => {
  assert.equal(
    restorePointName("20261203T070527Z-a8ee22", "participant1"),
    "lockstep-20261203T070527Z-a8ee22-participant1",
  );
  const long1 = restorePointName("20261203T070527Z-a8ee22", `p${"x".repeat(46)}1`);
  const long2 = restorePointName("20261203T070527Z-a8ee22", `p${"x".repeat(46)}2`);
  assert.ok(Buffer.byteLength(long1) <= RESTORE_POINT_NAME_MAX, long1);
  assert.notEqual(long1, long2);
});

test("the WAL segment holding an LSN (16 MiB segments, timeline left out)", () => {
  assert.equal(walSegmentOf("0/5000028"), "0000000000000005");
  assert.equal(walSegmentOf("0/FF000000"), "00000000000000FF");
  assert.equal(walSegmentOf("1/0"), "0000000100000000");
  assert.equal(walSegmentOf("2A/3B000001"), "0000002A0000003B");
});

test("recorded targets become pgBackRest's and read well", () => {
  assert.deepEqual(cliTarget({ type: "name", name: "checkpoint-cp1", lsn: "0/5000028" }), {
    type: "name",
    name: "checkpoint-cp1",
  });
  assert.deepEqual(cliTarget({ type: "time", time: "2026-12-03 07:05:24+00" }), {
    type: "time",
    time: "2026-12-03 07:05:24+00",
  });
  assert.equal(describeTarget({ type: "name", name: "cp", lsn: "0/1" }), "restore point cp (0/1)");
});

test("the sequencer's side of the order check looks up the members' last stored events only", () => {
  const base = {
    incarnation: "i",
    writerEpoch: "1",
    synchronizerId: "sync1",
    keyFingerprints: [],
    wrapperFingerprint: null,
    postgres: { version: "15", systemIdentifier: "1" },
  };
  const lookups = lookupsOf([
    {
      ...base,
      nodeName: "participant1",
      kind: "participant",
      member: "PAR::p1",
      position: { clean: "5", ledgerEnd: "2", lastStored: { timestamp: "7", chainHash: "a".repeat(64) } },
    },
    {
      ...base,
      nodeName: "mediator1",
      kind: "mediator",
      member: "MED::m1",
      position: { clean: null, lastStored: null },
    },
    {
      ...base,
      nodeName: "participant2",
      kind: "participant",
      member: null,
      position: { clean: null, ledgerEnd: "0", lastStored: null },
    },
    {
      ...base,
      nodeName: "sequencer1",
      kind: "sequencer",
      member: "SEQ::s1",
      position: { head: "9", members: {}, pruningLowerBound: null },
    },
  ]);
  assert.deepEqual(lookups, [{ member: "PAR::p1", timestamp: "7" }]);
});

test("a restore point's WAL is looked up on its own timeline in the repository's archive", () => {
  const repo = mkdtempSync(join(tmpdir(), "lockstep-walarchived-"));
  try {
    const dir = join(repo, "archive", "s", "15-1");
    mkdirSync(join(dir, "0000000100000000"), { recursive: true });
    mkdirSync(join(dir, "0000000200000000"), { recursive: true });
    writeFileSync(join(dir, "0000000100000000", `000000010000000000000009-${"a".repeat(40)}.zst`), "");
    writeFileSync(join(dir, "0000000200000000", `00000002000000000000000A-${"b".repeat(40)}.zst`), "");
    // Timeline 2 went further than segment 9, but only timeline 1 has segment 9.
    assert.equal(walArchived(repo, "s", "0/9008FF8", 1), true);
    assert.equal(walArchived(repo, "s", "0/9008FF8", 2), false);
    assert.equal(walArchived(repo, "s", "0/9008FF8"), true, "no timeline recorded: any");
    assert.equal(walArchived(repo, "s", "0/B000000", 2), false);
    assert.equal(walArchived(repo, "other", "0/9008FF8", 1), false);
  } finally {
    rmSync(repo, { recursive: true, force: true });
  }
});
