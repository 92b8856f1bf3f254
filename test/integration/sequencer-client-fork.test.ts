/**
 * THE FORK TEST (docs/design.md §2 "Sequenced events", §4.3): a sequencer restored from a dump that is older
 * than what a member already stored sequences different events at new timestamps. The member that is
 * ahead must stop with SEQUENCER_FORK_DETECTED, once, without retrying; a member that was behind the
 * dump's position catches up cleanly on the restored sequencer.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import { StringValueSchema } from "@bufbuild/protobuf/wkt";
import { createLogger } from "../../src/common/logging.ts";
import { encodeMessagePayload } from "../../src/sequencer-client/event-payload.ts";
import { startTestPostgres } from "../support/postgres.ts";
import { createMember, startTestSequencer, stopAll } from "../support/sequencer-client-harness.ts";
import { waitUntil, withinSeconds } from "../support/wait.ts";

const run = promisify(execFile);
const PG_BIN = "/usr/lib/postgresql/15/bin";

after(stopAll);
const pg = await startTestPostgres();
const work = mkdtempSync(join(tmpdir(), "lockstep-fork-"));
after(() => rmSync(work, { recursive: true, force: true }));

function text(value: string): Uint8Array {
  return encodeMessagePayload(StringValueSchema, create(StringValueSchema, { value }));
}

test("a member ahead of a restored sequencer detects the fork and stops; one behind catches up", async () => {
  const sequencer = await startTestSequencer(pg);
  const logLines: string[] = [];
  const logger = createLogger({
    node: "ahead",
    level: "info",
    destination: { write: (l) => logLines.push(l) },
  });
  const ahead = await createMember(pg, sequencer, "ahead", { logger });
  const behind = await createMember(pg, sequencer, "behind");
  await ahead.start();
  await behind.start();
  await ahead.client.send({ recipients: [behind.client.member], payload: text("m1"), messageId: "m1" });
  await behind.waitFor((r) => r.messageId === "m1");
  await ahead.waitFor((r) => r.messageId === "m1");

  // `behind` stops here; the sequencer still delivers m2 to it, inside the dump.
  await behind.stop();
  await ahead.client.send({ recipients: [behind.client.member], payload: text("m2"), messageId: "m2" });
  await ahead.waitFor((r) => r.messageId === "m2");

  const dump = join(work, "sequencer.dump");
  await run(join(PG_BIN, "pg_dump"), [
    "--format=custom",
    `--file=${dump}`,
    pg.connectionUrl(sequencer.database),
  ]);

  // After the dump: `ahead` stores m3, which the restored sequencer will never have.
  await ahead.client.send({ recipients: [ahead.client.member], payload: text("m3"), messageId: "m3" });
  await ahead.waitFor((r) => r.messageId === "m3");
  const m3 = (await ahead.handled()).find((r) => r.messageId === "m3")?.timestamp as bigint;

  await sequencer.stop();
  const restored = `${sequencer.database}_restored`;
  await pg.ensureDatabase(restored);
  await run(join(PG_BIN, "pg_restore"), ["--exit-on-error", `--dbname=${pg.connectionUrl(restored)}`, dump]);
  await sequencer.start(restored);

  // New traffic on the restored sequencer: new events at new timestamps, chained on the dump's
  // history. (`ahead` resubscribes from m3 whenever its backoff allows; m4 comes after m3 either way.)
  await ahead.client.send({ recipients: [behind.client.member], payload: text("m4"), messageId: "m4" });
  await waitUntil("ahead detected the fork", () => ahead.fatals.length > 0);
  const [fork] = ahead.fatals;
  assert.ok(
    fork?.code === "SEQUENCER_FORK_DETECTED" || fork?.code === "PREVIOUS_TIMESTAMP_MISMATCH",
    `got ${fork?.code}: ${fork?.message}`,
  );
  assert.equal(fork.metadata.timestamp, String(m3), "names the stored event");
  assert.match(fork.remedy, /older backup|new synchronizer|Restore/);
  const status = ahead.client.status();
  assert.ok(status.failed && !status.connected);
  assert.equal(status.lastError?.code, fork.code);
  assert.ok(!(await ahead.handled()).some((r) => r.messageId === "m4"), "the forked event is not processed");

  // One ERROR line names both events: the stored one (timestamp, chain hash) and the one received.
  const errors = logLines.map((l) => JSON.parse(l)).filter((l) => l.level === 50 && l.code === fork.code);
  const refused = errors.find((l) => l.stored && l.received);
  assert.ok(refused, `an error line with both events: ${JSON.stringify(errors)}`);
  assert.equal(refused.stored.timestamp, String(m3));
  assert.match(refused.stored.chainHash, /^[0-9a-f]{64}$/);
  assert.ok(BigInt(refused.received.timestamp) > m3);
  assert.match(refused.received.chainHash, /^[0-9a-f]{64}$/);

  // No retry loop: the subscription loop ended by itself (so no further Subscribe can follow), and
  // onFatal was called once.
  const attempts = status.subscribeAttempts;
  await withinSeconds(ahead.client.loopEnded(), 10, "the subscription loop to end after the fork");
  assert.equal(ahead.client.status().subscribeAttempts, attempts);
  assert.equal(ahead.fatals.length, 1);

  // `behind` (last stored m1, before the dump's position) resumes: m1 echo, m2, then m4.
  await behind.start();
  await behind.waitFor((r) => r.messageId === "m4");
  const rows = await behind.handled();
  assert.deepEqual(
    rows.filter((r) => r.messageId.startsWith("m")).map((r) => [r.messageId, r.times]),
    [
      ["m1", 1],
      ["m2", 1],
      ["m4", 1],
    ],
  );
  assert.deepEqual(behind.fatals, []);
  assert.equal(behind.client.status().failed, false);
});
