/**
 * A whole test network for the participant's integration tests: a real sequencer node, a real
 * mediator node and participant nodes (NodeRuntime, real PostgreSQL), each on its own database.
 *
 *   const pg = await startTestPostgres();
 *   const net = await startParticipantNetwork(pg, ["participant1", "participant2"]);
 *   const alice = (await net.backend("participant1").allocateParty("alice")).party;
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { validateConfig } from "../../src/common/config.ts";
import { configNodes, type LockstepConfig, type NodeEntry } from "../../src/common/config-schema.ts";
import { silentLogger } from "../../src/common/logging.ts";
import { mediatorNodeKind } from "../../src/mediator/mediator-node.ts";
import { NodeRuntime } from "../../src/node/node-runtime.ts";
import type { LedgerApiBackend } from "../../src/participant/ledger-api-backend.ts";
import { ledgerApiRoutes } from "../../src/participant/ledger-api-service.ts";
import {
  type ParticipantNode,
  type ParticipantNodeOptions,
  participantNodeKindWith,
} from "../../src/participant/participant-node.ts";
import type { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { startTestSequencer, type TestSequencer } from "./sequencer-harness.ts";

export interface ParticipantNetwork {
  readonly sequencer: TestSequencer;
  /** The mediator's runtime (tests stop it so that requests wait for a verdict). */
  readonly mediator: NodeRuntime;
  readonly config: LockstepConfig;
  /** The running participant node of that name (changes on restart). */
  node(name: string): ParticipantNode;
  backend(name: string): LedgerApiBackend;
  runtime(name: string): NodeRuntime;
  /** Stops the participant's process and starts a new one on the same database. */
  restartParticipant(name: string): Promise<void>;
  stopParticipant(name: string): Promise<void>;
  startParticipant(name: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startParticipantNetwork(
  pg: LocalPostgres,
  participants: readonly string[],
  parameters: Record<string, string> = { "participant-response-timeout": "5s" },
  participantOptions: Pick<ParticipantNodeOptions, "commandTrackingTimeoutMs"> = {},
): Promise<ParticipantNetwork> {
  const sequencer = await startTestSequencer(pg, { parameters });
  const dataDir = mkdtempSync(join(tmpdir(), "lockstep-participants-"));
  const storage = async (database: string) => {
    await pg.ensureDatabase(database);
    return { url: pg.connectionUrl(database), replication: { check: "off" } };
  };
  const config = validateConfig({
    "data-dir": dataDir,
    synchronizer: {
      id: "sync1",
      parameters,
      sequencer: { name: "sequencer", port: sequencer.port },
      mediator: { name: "mediator", port: 4002, storage: await storage("mediator_pt") },
    },
    participants: await Promise.all(
      participants.map(async (name, i) => ({
        name,
        port: 4011 + 10 * i,
        storage: await storage(`${name}_pt`),
        "ledger-api": { auth: { type: "off" as const } },
      })),
    ),
  });
  const entries = new Map(configNodes(config).map((e) => [e.name, e]));
  const logger = silentLogger("participant-test");
  const nodes = new Map<string, ParticipantNode>();
  const runtimes = new Map<string, NodeRuntime>();

  const mediator = new NodeRuntime({
    entry: entries.get("mediator") as NodeEntry,
    config,
    dataDir,
    logger,
    definition: mediatorNodeKind,
    port: 0,
  });
  await mediator.start();
  assert.equal(mediator.currentRole, "active");

  const startParticipant = async (name: string) => {
    const definition = participantNodeKindWith({
      ...participantOptions,
      ledgerApiRoutes,
      onCreate: (node) => nodes.set(name, node),
    });
    const runtime = new NodeRuntime({
      entry: entries.get(name) as NodeEntry,
      config,
      dataDir,
      logger,
      definition,
      port: 0,
      lockPollMs: 100,
    });
    await runtime.start();
    assert.equal(runtime.currentRole, "active", (await runtime.status()).lastError?.message);
    runtimes.set(name, runtime);
    await (nodes.get(name) as ParticipantNode).ready();
  };
  const stopParticipant = async (name: string) => {
    await runtimes.get(name)?.stop();
    runtimes.delete(name);
  };
  for (const name of participants) await startParticipant(name);

  const get = <T>(map: Map<string, T>, name: string): T => {
    const value = map.get(name);
    if (!value) throw new Error(`no running participant ${name}`);
    return value;
  };
  return {
    sequencer,
    mediator,
    config,
    node: (name) => get(nodes, name),
    backend: (name) => get(nodes, name).backend,
    runtime: (name) => get(runtimes, name),
    restartParticipant: async (name) => {
      await stopParticipant(name);
      await startParticipant(name);
    },
    stopParticipant,
    startParticipant,
    stop: async () => {
      for (const name of [...runtimes.keys()]) await stopParticipant(name);
      await mediator.stop();
      await sequencer.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
