import type { LockstepConfig } from "../common/config-schema.ts";
import type { Logger } from "../common/logging.ts";
import {
  contentHash,
  eventFromRow,
  nextChainHash,
  type SequencedEventRow,
} from "../common/sequenced-event.ts";
import { recomputeAcs } from "../ledger/acs.ts";
import { embeddedClusterDir } from "../node/node-database.ts";
import { allActiveContracts, readLedgerEnd, readUpdates } from "../participant/participant-store.ts";
import type { Queryable } from "../storage/db.ts";
import { LocalPostgres } from "../storage/local-postgres.ts";
import { createPgDb } from "../storage/pg-db.ts";
import type { BackupEngines } from "./backup-engines.ts";
import type { BackupRepository } from "./backup-repository.ts";
import { type Manifest, manifestJson, type NodeBackup } from "./manifest.ts";
import { readNodeSnapshotInfo } from "./node-position.ts";

export interface DrillOptions {
  manifest: Manifest;
  repository: BackupRepository;
  engines: BackupEngines;
  config: LockstepConfig;
  jobs: number;
  logger: Logger;
  progress: (line: string) => void;
}

export interface DrillResult {
  nodes: { node: string; checks: string[] }[];
  problems: string[];
}

/** What the chain check reads of each stored event: everything but the signature. */
type ChainRow = Omit<SequencedEventRow, "signature">;

/**
 * Checks a stored event chain page by page: increasing timestamps, previous timestamps linking
 * each event to the one before, and every chain hash = SHA-256(previous chain hash ‖ content hash).
 * The first stored event is trusted as the anchor unless it is the member's first (previous null).
 */
async function checkChain(
  label: string,
  page: (after: bigint, limit: number) => Promise<ChainRow[]>,
): Promise<{ problems: string[]; events: number; last: ChainRow | undefined }> {
  let prev: ChainRow | undefined;
  let events = 0;
  let after = -(2n ** 63n);
  for (;;) {
    const rows = await page(after, 1000);
    for (const row of rows) {
      events++;
      const content = contentHash(eventFromRow({ ...row, signature: Buffer.alloc(0) }));
      const anchor = prev === undefined && row.previous_timestamp !== null;
      if (prev && row.previous_timestamp !== prev.timestamp) {
        return {
          problems: [
            `${label}: event ${row.timestamp} names previous ${row.previous_timestamp}, stored before it is ${prev.timestamp}`,
          ],
          events,
          last: row,
        };
      }
      if (!anchor && !nextChainHash(prev?.chain_hash ?? null, content).equals(row.chain_hash)) {
        return {
          problems: [`${label}: chain hash of event ${row.timestamp} does not follow from its predecessor`],
          events,
          last: row,
        };
      }
      prev = row;
    }
    if (rows.length < 1000) return { problems: [], events, last: prev };
    after = (rows[rows.length - 1] as ChainRow).timestamp;
  }
}

async function checkMemberNode(
  q: Queryable,
  node: NodeBackup,
): Promise<{ problems: string[]; checks: string[] }> {
  const checks: string[] = [];
  const chain = await checkChain(`${node.name} stored events`, (after, limit) =>
    q.query<ChainRow>(
      `SELECT timestamp, previous_timestamp, sender, message_id, recipients, payload, deliver_error, chain_hash
         FROM sequencer_client_events WHERE timestamp > $1 ORDER BY timestamp LIMIT $2`,
      [after, limit],
    ),
  );
  checks.push(`event chain of ${chain.events} stored events`);
  const problems = [...chain.problems];
  if (node.kind === "participant") {
    const end = await readLedgerEnd(q);
    const views = [];
    for (let after = 0n; ; ) {
      const page = await readUpdates(q, after, end, undefined, 500);
      views.push(...page.map((u) => u.view));
      if (page.length < 500) break;
      after = (page[page.length - 1] as { offset: bigint }).offset;
    }
    try {
      const recomputed = recomputeAcs(views);
      const stored = await allActiveContracts(q);
      const want = [...recomputed.keys()].sort();
      const have = stored.map((c) => c.contractId).sort();
      if (manifestJson(want) !== manifestJson(have)) {
        const missing = want.filter((id) => !have.includes(id));
        const extra = have.filter((id) => !want.includes(id));
        problems.push(
          `${node.name}: stored ACS differs from the ACS recomputed from ${views.length} updates (missing ${missing.length}, extra ${extra.length})`,
        );
      }
      checks.push(`ACS of ${have.length} contracts = recomputed from ${views.length} updates`);
    } catch (error) {
      problems.push(`${node.name}: updates do not replay: ${(error as Error).message}`);
    }
  }
  return { problems, checks };
}

async function checkSequencer(
  q: Queryable,
  node: NodeBackup,
): Promise<{ problems: string[]; checks: string[] }> {
  const problems: string[] = [];
  const heads = await q.query<{ member: string; last_timestamp: bigint; last_chain_hash: Buffer }>(
    "SELECT member, last_timestamp, last_chain_hash FROM sequencer_member_heads ORDER BY member",
  );
  let events = 0;
  for (const head of heads) {
    const chain = await checkChain(`${node.name} deliveries to ${head.member}`, (after, limit) =>
      q.query<ChainRow>(
        `SELECT d.timestamp, d.previous_timestamp, e.sender, e.message_id, e.recipients, e.payload, e.deliver_error, d.chain_hash
           FROM sequencer_deliveries d JOIN sequencer_events e ON e.timestamp = d.timestamp
          WHERE d.member = $1 AND d.timestamp > $2 ORDER BY d.timestamp LIMIT $3`,
        [head.member, after, limit],
      ),
    );
    events += chain.events;
    problems.push(...chain.problems);
    // Pruning may have removed every delivery of a member; its head row then stands alone.
    if (
      chain.last &&
      (chain.last.timestamp !== head.last_timestamp || !chain.last.chain_hash.equals(head.last_chain_hash))
    ) {
      problems.push(`${node.name}: head of ${head.member} is not its last delivered event`);
    }
  }
  return { problems, checks: [`event chains of ${heads.length} members (${events} deliveries)`] };
}

/**
 * The restore drill (docs/design.md §4.6): each node of the set restored into a scratch database of the
 * local embedded cluster, checked (identity and position = manifest, event chains, participant ACS =
 * ACS recomputed from its updates), then dropped.
 */
export async function drillSet(options: DrillOptions): Promise<DrillResult> {
  const { manifest, progress } = options;
  const cluster = new LocalPostgres({
    dir: embeddedClusterDir(options.config["data-dir"]),
    logger: options.logger,
  });
  const started = await cluster.start();
  const result: DrillResult = { nodes: [], problems: [] };
  try {
    for (const node of manifest.nodes) {
      const scratch = `lockstep_drill_${manifest.id.slice(-6)}_${node.name.replace(/-/g, "_")}`.toLowerCase();
      await cluster.dropDatabase(scratch);
      await cluster.ensureDatabase(scratch);
      const db = createPgDb({
        connectionString: cluster.connectionUrl(scratch),
        max: 1,
        logger: options.logger,
      });
      try {
        progress(`${node.name}: drill restore into scratch database ${scratch}`);
        const artifact = options.repository.artifact(manifest.id, node);
        await options.engines
          .forArtifact(artifact)
          .restore(
            artifact,
            { kind: "database", url: cluster.connectionUrl(scratch) },
            { jobs: options.jobs },
          );
        // The sequencer's side of the order check is looked up again at the same member positions.
        const views = node.kind === "sequencer" ? node.position.memberEvents : undefined;
        const lookups = Object.entries(views ?? {}).map(([member, v]) => ({
          member,
          timestamp: v.timestamp,
        }));
        const info = await readNodeSnapshotInfo(db, node.kind, manifest.synchronizerId, lookups);
        if (node.kind === "sequencer" && views === undefined && "memberEvents" in info.position) {
          info.position.memberEvents = undefined; // manifest v1 recorded none
        }
        const problems: string[] = [];
        const same = (what: string, a: unknown, b: unknown) => {
          if (manifestJson(a) !== manifestJson(b))
            problems.push(`${node.name}: restored ${what} differs from the manifest`);
        };
        same("position", info.position, node.position);
        same(
          "identity",
          [info.nodeName, info.kind, info.incarnation, info.writerEpoch, info.member],
          [node.name, node.kind, node.incarnation, node.writerEpoch, node.member],
        );
        same("key fingerprints", info.keyFingerprints, node.keyFingerprints);
        // The drill reads no private key, so sealed ones need no wrapper key here; which key
        // sealed them must still be the one the manifest names (restore plan relies on it).
        same("wrapper key", info.wrapperFingerprint, node.wrapperFingerprint ?? null);
        const checks = ["identity, keys and position match the manifest"];
        const kindChecks =
          node.kind === "sequencer" ? await checkSequencer(db, node) : await checkMemberNode(db, node);
        problems.push(...kindChecks.problems);
        checks.push(...kindChecks.checks);
        result.nodes.push({ node: node.name, checks });
        result.problems.push(...problems);
        progress(
          `${node.name}: drill ${problems.length === 0 ? "passed" : "FAILED"}: ${[...checks, ...problems].join("; ")}`,
        );
      } catch (error) {
        result.problems.push(`${node.name}: drill restore failed: ${(error as Error).message}`);
      } finally {
        await db.close();
        await cluster.dropDatabase(scratch).catch(() => undefined);
      }
    }
  } finally {
    // Leave the cluster as found: nodes may be using it.
    if (!started.reused) await cluster.stop().catch(() => undefined);
  }
  return result;
}
