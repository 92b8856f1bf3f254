import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { NodeBackup } from "../../src/backup/manifest.ts";
import {
  admissionsNotCarried,
  allowListCheck,
  changesAfter,
  clearSavedAllowList,
  type LiveAllowList,
  readLiveAllowList,
  revocationsToCarry,
  saveLiveAllowList,
} from "../../src/backup/restore-allow-list.ts";
import type { PlannedNode } from "../../src/backup/restore-plan.ts";
import { restoreMarkerPath } from "../../src/node/restore-marker.ts";
import type { Admission } from "../../src/sequencer/member-admissions.ts";

const row = (member: string, state: Admission["state"], at: bigint): Admission => ({
  member,
  state,
  at,
  by: "operator",
});

// The set's head is 100: rows at or below it are in the set, rows above were made after it.
const live = [
  row("kept::1", "admitted", 50n), // unchanged since the set
  row("revoked-later::1", "revoked", 120n), // admitted in the set, revoked after it
  row("new::1", "admitted", 130n), // admitted only after the set
  row("back::1", "admitted", 140n), // revoked in the set, let back in after it
];
const restored = [
  row("kept::1", "admitted", 50n),
  row("revoked-later::1", "admitted", 40n),
  row("back::1", "revoked", 60n),
];

test("changes after the set: by the set's head; a null head (nothing sequenced) takes every row", () => {
  const changes = changesAfter(live, 100n);
  assert.deepEqual(
    changes.revoked.map((a) => a.member),
    ["revoked-later::1"],
  );
  assert.deepEqual(
    changes.admitted.map((a) => a.member),
    ["new::1", "back::1"],
  );
  assert.equal(changesAfter(live, null).admitted.length, 3);
  assert.deepEqual(changesAfter(live, 200n), { revoked: [], admitted: [] });
});

test("apply carries newer revocations only, and names the admissions it does not carry", () => {
  assert.deepEqual(revocationsToCarry(live, restored), [row("revoked-later::1", "revoked", 120n)]);
  // A rerun on a database that holds the carried row already: nothing more.
  const carried = [...restored.filter((a) => a.member !== "revoked-later::1"), live[1] as Admission];
  assert.deepEqual(revocationsToCarry(live, carried), []);
  // A restored decision newer than the live one (the live database is an older restore) stays.
  assert.deepEqual(revocationsToCarry([row("x::1", "revoked", 10n)], [row("x::1", "admitted", 20n)]), []);
  // A member revoked only after the set, unknown to the restored list: carried too.
  assert.deepEqual(revocationsToCarry([row("y::1", "revoked", 150n)], []), [row("y::1", "revoked", 150n)]);
  assert.deepEqual(
    admissionsNotCarried(live, restored).map((a) => a.member),
    ["new::1", "back::1"],
  );
});

const sequencerBackup = {
  name: "sequencer1",
  kind: "sequencer",
  member: "sequencer1::1220aa",
  position: { head: "100", members: {}, pruningLowerBound: null },
} as unknown as NodeBackup;

test("the plan's allow-list check: revocations carried pass, later admissions warn, an unread list warns", () => {
  const read = (rows: Admission[]): LiveAllowList => ({
    status: "read",
    database: "lockstep_sequencer1",
    rows,
    changes: changesAfter(rows, 100n),
  });
  const none = allowListCheck(sequencerBackup, "set-1", read([live[0] as Admission]));
  assert.equal(none.verdict, "pass");
  assert.match(none.message, /no allow-list change after the set/);

  const revokedOnly = allowListCheck(sequencerBackup, "set-1", read(live.slice(0, 2)));
  assert.equal(revokedOnly.verdict, "pass");
  assert.match(
    revokedOnly.message,
    /revoked after the set, carried into the restore: revoked-later::1 \(at 120\)/,
  );

  const both = allowListCheck(sequencerBackup, "set-1", read(live));
  assert.equal(both.verdict, "warn");
  assert.equal(both.code, "RESTORE_ADMISSIONS_AFTER_SET");
  assert.match(both.message, /NOT carried .*new::1 \(at 130\), back::1 \(at 140\)/);
  assert.match(both.message, /carried into the restore: revoked-later::1/);
  assert.match(both.remedy ?? "", /lockstep synchronizer admit/);

  const unread = allowListCheck(sequencerBackup, "set-1", { status: "unavailable", reason: "no database" });
  assert.equal(unread.verdict, "warn");
  assert.equal(unread.code, "RESTORE_ALLOW_LIST_UNREAD");
  assert.match(unread.message, /no database/);
  assert.match(unread.remedy ?? "", /lockstep synchronizer revoke/);

  assert.equal(allowListCheck(sequencerBackup, "set-1", { status: "carried-already" }).verdict, "pass");
});

test("an interrupted in-place restore: the rerun carries the list apply saved before the swap", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "lockstep-allow-list-"));
  try {
    // The database in place is a restored one; never read it as the live list.
    const node = { backup: sequencerBackup, alreadyRestored: false } as unknown as PlannedNode;
    writeFileSync(restoreMarkerPath(dataDir), JSON.stringify({ set: "set-1", nodes: ["sequencer1"] }));
    const unsaved = await readLiveAllowList(node, "set-1", dataDir);
    assert.equal(unsaved.status, "unavailable");

    const read: LiveAllowList = {
      status: "read",
      database: "lockstep_sequencer1",
      rows: live,
      changes: changesAfter(live, 100n),
    };
    await saveLiveAllowList(dataDir, "set-1", sequencerBackup, read);
    const again = await readLiveAllowList(node, "set-1", dataDir);
    assert.equal(again.status, "read");
    if (again.status !== "read") return;
    assert.deepEqual(again.rows, live, "timestamps come back as bigints");
    assert.deepEqual(again.changes, read.changes);
    // Saved for another set: not this restore's.
    assert.equal((await readLiveAllowList(node, "set-2", dataDir)).status, "unavailable");
    clearSavedAllowList(dataDir);
    assert.equal((await readLiveAllowList(node, "set-1", dataDir)).status, "unavailable");
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
