import { setTimeout as sleep } from "node:timers/promises";
import { LockstepError } from "../../common/errors.ts";
import { withPgClient } from "../../storage/pg-client.ts";
import type { NodeCluster } from "./node-cluster.ts";

/**
 * A restore point (or a commit past a recovery target) is only a target once the WAL holding it is
 * in the stanza's repository. On Lockstep's embedded cluster archiving is synchronous
 * (`archive-async=n`, pgbackrest-config.ts): `archive_command` (`pgbackrest archive-push`) returns 0
 * only once the segment is stored in the repository, so the archiver's success is the repository's.
 * There `pg_switch_wal()` closes the segment and we watch `pg_stat_archiver` until it reports that
 * segment (or a later one: segments are archived in order) — a fraction of a second, instead of a
 * `pgbackrest check` process (≈ 0.8 s of every backup's fixed time, docs/performance.md).
 * An external cluster may archive asynchronously (success there means "queued in the spool"), so
 * it gets `pgbackrest check`, which waits on the repository itself.
 */
export async function waitWalArchived(
  cluster: NodeCluster,
  lsn: string,
  timeoutMs = 60_000,
): Promise<"archiver" | "check"> {
  if (!cluster.embedded) {
    await cluster.pgbackrest.check();
    return "check";
  }
  await withPgClient(cluster.url, async (client) => {
    // Switching is a no-op when the segment holds nothing since the last switch; `lsn` then lies
    // in an already closed segment, which the archiver handles on its own.
    const wanted = await client.query<{ file: string }>(
      "SELECT pg_walfile_name($1::pg_lsn) AS file FROM pg_switch_wal()",
      [lsn],
    );
    const file = wanted.rows[0]?.file as string;
    const deadline = Date.now() + timeoutMs;
    for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
      const row = await client.query<{ last: string | null; failed: string | null; failedAt: string | null }>(
        `SELECT last_archived_wal AS last, last_failed_wal AS failed,
                (last_failed_time > coalesce(last_archived_time, '-infinity'))::text AS "failedAt"
           FROM pg_stat_archiver`,
      );
      const { last, failed, failedAt } = row.rows[0] ?? { last: null, failed: null, failedAt: null };
      // Names of one timeline order as their segments; a later timeline's sort after.
      if (last !== null && isWalFile(last) && last >= file) return;
      if (Date.now() > deadline) {
        const failing = failedAt === "true" && failed ? ` (the archiver is failing, last on ${failed})` : "";
        throw new LockstepError("PGBACKREST_TIMEOUT", {
          command: `archive-push of ${file}${failing}`,
          timeout: `${Math.round(timeoutMs / 1000)} s`,
          logPath: cluster.pgbackrest.paths.logPath,
        });
      }
      await sleep(delay);
    }
  });
  return "archiver";
}

/** A WAL segment's file name (the archiver also archives `.history` and `.backup` files). */
function isWalFile(name: string): boolean {
  return /^[0-9A-F]{24}$/.test(name);
}
