import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import type { Db } from "../../src/storage/db.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { type ParticipantNetwork, startParticipantNetwork } from "../support/participant-network.ts";
import { startTestPostgres } from "../support/postgres.ts";
import { waitFor } from "../support/wait.ts";

// Every connection of the nodes logs in as `postgres`, whose synchronous_commit is off: what a
// misconfigured server would give them. The critical writes must still commit with it on.
const pg = await startTestPostgres();
const admin = createPgDb({ connectionString: pg.connectionUrl("postgres"), max: 1 });
await admin.execute("ALTER ROLE postgres SET synchronous_commit = off");
let net: ParticipantNetwork | undefined;
const dbs: Db[] = [];

after(async () => {
  await net?.stop();
  await Promise.all([admin, ...dbs].map((db) => db.close()));
});

/**
 * Records, for every statement that writes one of `tables`, the synchronous_commit in force in its
 * transaction (a statement trigger runs inside it, so it sees SET LOCAL and session SETs alike).
 */
async function audit(database: string, tables: string[]): Promise<Db> {
  const db = createPgDb({ connectionString: pg.connectionUrl(database), max: 1 });
  dbs.push(db);
  await db.execute("CREATE TABLE sc_audit (tbl text NOT NULL, setting text NOT NULL)");
  await db.execute(`CREATE FUNCTION sc_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO sc_audit VALUES (TG_TABLE_NAME, current_setting('synchronous_commit'));
      RETURN NULL;
    END $$`);
  for (const table of tables) {
    await db.execute(
      `CREATE TRIGGER sc_audit AFTER INSERT OR UPDATE ON ${table} FOR EACH STATEMENT EXECUTE FUNCTION sc_audit_row()`,
    );
  }
  return db;
}

async function settings(db: Db, table: string): Promise<string[]> {
  const rows = await db.query<{ setting: string }>("SELECT setting FROM sc_audit WHERE tbl = $1", [table]);
  return rows.map((r) => r.setting);
}

test("with the role's synchronous_commit off, in-flight registration, ledger end, clean index and sequenced events still commit with it on", async () => {
  const fresh = createPgDb({ connectionString: pg.connectionUrl("postgres"), max: 1 });
  dbs.push(fresh);
  assert.equal(
    (await fresh.one<{ s: string }>("SELECT current_setting('synchronous_commit') AS s")).s,
    "off",
  );

  net = await startParticipantNetwork(pg, ["participant1"]);
  const participant = await audit("participant1_pt", [
    "in_flight_submission",
    "participant_ledger_end",
    "sequencer_client_clean",
  ]);
  const mediator = await audit("mediator_pt", ["sequencer_client_clean"]);
  // sequencer_acknowledgements is the control: an ordinary write, so it must show the role's off.
  const sequencer = await audit(net.sequencer.database, ["sequencer_events", "sequencer_acknowledgements"]);

  const p1 = net.backend("participant1");
  const alice = (await p1.allocateParty("alice")).party;
  await p1.submitAndWait({
    userId: "app",
    commandId: randomUUID(),
    actAs: [alice],
    command: {
      kind: "create",
      template: "Iou",
      arguments: { issuer: alice, owner: alice, amount: "1.00", currency: "USD" },
    },
  });
  const control = await waitFor("an acknowledgement written after the triggers", async () => {
    const seen = await settings(sequencer, "sequencer_acknowledgements");
    return seen.length > 0 ? seen : undefined;
  });
  assert.ok(
    control.every((s) => s === "off"),
    `an ordinary write runs with the role's setting: ${control}`,
  );

  const critical: [string, Db, string][] = [
    ["participant", participant, "in_flight_submission"],
    ["participant", participant, "participant_ledger_end"],
    ["participant", participant, "sequencer_client_clean"],
    ["mediator", mediator, "sequencer_client_clean"],
    ["sequencer", sequencer, "sequencer_events"],
  ];
  for (const [node, db, table] of critical) {
    const seen = await settings(db, table);
    assert.ok(seen.length > 0, `${node} wrote ${table}`);
    assert.deepEqual(new Set(seen), new Set(["on"]), `${node}'s ${table} commits synchronously`);
  }
});
