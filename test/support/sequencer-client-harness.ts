/**
 * A real sequencer (NodeRuntime + sequencerNodeKind on a database of the test cluster) and
 * sequencer-client members on their own databases, for the sequencer client's integration tests.
 *
 *   const pg = await startTestPostgres();
 *   const sequencer = await startTestSequencer(pg);          // fixed port, so restarts keep the URL
 *   const a = await createMember(pg, sequencer, "member-a"); // own migrated DB
 *   await a.start();                                        // client + recording handler
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { validateConfig } from "../../src/common/config.ts";
import type { LockstepError } from "../../src/common/errors.ts";
import { type Logger, silentLogger } from "../../src/common/logging.ts";
import { freePort } from "../../src/common/loopback.ts";
import { nodeBaseUrl } from "../../src/common/rpc-client.ts";
import type { SequencedEvent } from "../../src/common/sequenced-event.ts";
import { keyStoreMigrations } from "../../src/crypto/key-store-migrations.ts";
import { NodeRuntime } from "../../src/node/node-runtime.ts";
import { sequencerNodeKind } from "../../src/sequencer/sequencer-node.ts";
import { createSequencerClient } from "../../src/sequencer-client/create-sequencer-client.ts";
import type {
  EventContext,
  SequencerClient,
  SequencerClientOptions,
} from "../../src/sequencer-client/sequencer-client.ts";
import { sequencerClientMigrations } from "../../src/sequencer-client/sequencer-client-migrations.ts";
import type { Db, Tx } from "../../src/storage/db.ts";
import { type Migration, runMigrations } from "../../src/storage/migrations.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { createTestDb, type TestPostgres } from "./postgres.ts";
import { waitUntil } from "./wait.ts";

export interface TestSequencer {
  readonly url: string;
  readonly port: number;
  /** The database the sequencer currently runs on. */
  database: string;
  runtime: NodeRuntime;
  stop(): Promise<void>;
  /** Starts it again (after stop), on the same port, on `database` (default: the current one). */
  start(database?: string): Promise<void>;
}

const started: { stop(): Promise<void> }[] = [];

/** Stops every sequencer and client the harness started; call from the test file's `after`. */
export async function stopAll(): Promise<void> {
  for (const s of started.reverse()) await s.stop().catch(() => {});
  started.length = 0;
}

export async function startTestSequencer(
  pg: TestPostgres,
  options: { logger?: Logger; database?: string } = {},
): Promise<TestSequencer> {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "lockstep-seq-"));
  const database = options.database ?? `sequencer_${Math.random().toString(16).slice(2, 10)}`;
  await pg.ensureDatabase(database);
  const logger = options.logger ?? silentLogger("sequencer1");
  const make = (db: string) => {
    const config = validateConfig({
      "data-dir": dataDir,
      synchronizer: {
        id: "sync1",
        // These tests register members of their own making (the allow-list has its own tests).
        onboarding: "open",
        sequencer: {
          name: "sequencer1",
          port,
          storage: { url: pg.connectionUrl(db), replication: { check: "off" } },
        },
        mediator: { name: "mediator1", port: port + 1 },
      },
    });
    const sequencer = config.synchronizer.sequencer;
    return new NodeRuntime({
      entry: { name: sequencer.name, kind: "sequencer", port, config: sequencer },
      config,
      dataDir,
      logger,
      definition: sequencerNodeKind,
      lockPollMs: 100,
    });
  };
  const handle: TestSequencer = {
    url: nodeBaseUrl(port),
    port,
    database,
    runtime: make(database),
    async stop() {
      await handle.runtime.stop();
    },
    async start(db?: string) {
      handle.database = db ?? handle.database;
      handle.runtime = make(handle.database);
      await handle.runtime.start();
    },
  };
  await handle.runtime.start();
  started.push({
    stop: async () => {
      await handle.runtime.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  });
  return handle;
}

/** What the recording handler saw, per event, written in the handler's transaction. */
const handledMigration: Migration = {
  version: 1,
  name: "test_handled",
  sql: `CREATE TABLE test_handled (
    timestamp bigint PRIMARY KEY,
    counter bigint NOT NULL,
    sender text NOT NULL,
    message_id text NOT NULL,
    times_handled integer NOT NULL DEFAULT 1
  );`,
};

export interface TestMember {
  readonly db: Db;
  readonly name: string;
  client: SequencerClient;
  readonly fatals: LockstepError[];
  /** Thrown by the handler (once) for the event whose message id matches; simulates a crash. */
  failOnMessageId?: string;
  /** Creates a new client on the same DB (a restart) and starts it. */
  start(overrides?: Partial<SequencerClientOptions>): Promise<void>;
  stop(): Promise<void>;
  /** Rows of test_handled, oldest first. */
  handled(): Promise<
    { timestamp: bigint; counter: bigint; sender: string; messageId: string; times: number }[]
  >;
  /** Resolves once the handler has processed an event matching `predicate` (polls the DB). */
  waitFor(
    predicate: (row: { sender: string; messageId: string }) => boolean,
    timeoutMs?: number,
  ): Promise<void>;
}

/** A member with its own migrated database (in the test cluster) that talks to `sequencer`. */
export async function createMember(
  pg: TestPostgres,
  sequencer: TestSequencer,
  name: string,
  options: { db?: Db; logger?: Logger } = {},
): Promise<TestMember> {
  const db = options.db ?? (await createTestDb(pg, name));
  await runMigrations(db, "test-member", [
    handledMigration,
    ...sequencerClientMigrations,
    ...keyStoreMigrations,
  ]);
  const member: TestMember = {
    db,
    name,
    client: undefined as unknown as SequencerClient,
    fatals: [],
    async start(overrides = {}) {
      member.client = createSequencerClient({
        db,
        logger: options.logger ?? silentLogger(name),
        memberName: name,
        sequencerUrl: sequencer.url,
        identity: () => ({ writerEpoch: 1n }),
        onFatal: (e) => member.fatals.push(e),
        ackIntervalMs: 200,
        reconnect: { initialMs: 50, maxMs: 500 },
        ...overrides,
      });
      await member.client.start((event, tx, context) => record(member, event, tx, context));
    },
    async stop() {
      await member.client?.stop();
    },
    async handled() {
      const rows = await db.query<{
        timestamp: bigint;
        counter: bigint;
        sender: string;
        message_id: string;
        times_handled: number;
      }>("SELECT * FROM test_handled ORDER BY timestamp");
      return rows.map((r) => ({
        timestamp: r.timestamp,
        counter: r.counter,
        sender: r.sender,
        messageId: r.message_id,
        times: r.times_handled,
      }));
    },
    async waitFor(predicate, timeoutMs = 10_000) {
      await waitUntil(`${name}: an event`, async () => (await member.handled()).some(predicate), timeoutMs);
    },
  };
  started.push({ stop: () => member.stop() });
  return member;
}

async function record(
  member: TestMember,
  event: SequencedEvent,
  tx: Tx,
  context: EventContext,
): Promise<void> {
  await tx.execute(
    `INSERT INTO test_handled (timestamp, counter, sender, message_id) VALUES ($1, $2, $3, $4)
     ON CONFLICT (timestamp) DO UPDATE SET times_handled = test_handled.times_handled + 1`,
    [event.timestamp, context.counter, event.sender, event.messageId],
  );
  if (member.failOnMessageId !== undefined && event.messageId === member.failOnMessageId) {
    member.failOnMessageId = undefined;
    throw new Error(`simulated crash while processing ${event.messageId}`);
  }
}

/** A second Db on an existing database of the test cluster (e.g. one restored by pg_restore). */
export function openDb(pg: TestPostgres, database: string): Db {
  return createPgDb({ connectionString: pg.connectionUrl(database), applicationName: "test-open" });
}
