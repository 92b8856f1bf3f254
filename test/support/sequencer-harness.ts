/**
 * Helpers for tests against a real sequencer node: start one on a test cluster (a NodeRuntime
 * with a real NodeServer on port 0), and act as members that sign their requests. Others may
 * reuse it (sequencer client, mediator, participant tests).
 *
 *   const pg = await startTestPostgres();
 *   const seq = await startTestSequencer(pg);
 *   const alice = new TestMember("alice");
 *   await alice.register(seq.client);
 *   await seq.client.send(alice.sendRequest({ recipients: [alice.id] }));
 *   const events = await collectEvents(seq.client, alice, { count: 2 });
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { anyPack, StringValueSchema } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { validateConfig } from "../../src/common/config.ts";
import { configNodes, type NodeEntry } from "../../src/common/config-schema.ts";
import { uniqueIdentifier } from "../../src/common/ids.ts";
import { silentLogger } from "../../src/common/logging.ts";
import { createNodeClient, nodeBaseUrl } from "../../src/common/rpc-client.ts";
import { type EventPosition, eventFromProto, type SequencedEvent } from "../../src/common/sequenced-event.ts";
import { nowMicros } from "../../src/common/time.ts";
import {
  acknowledgementDigest,
  generateKeyPair,
  type KeyPair,
  sign,
  submissionBatchDigest,
  submissionDigest,
  subscriptionDigest,
} from "../../src/crypto/keys.ts";
import {
  memberKeys,
  type SignedTopologyTransaction,
  signedTopologyFromParts,
  signedTopologyToParts,
  signTopologyTransaction,
  TopologyState,
} from "../../src/crypto/topology.ts";
import {
  type AcknowledgeRequestSchema,
  EventPayloadSchema,
  type SendRequestSchema,
  SequencerService,
  type SignedSubmissionsSchema,
  SubmissionSchema,
  type SubscribeRequestSchema,
} from "../../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { NodeRuntime } from "../../src/node/node-runtime.ts";
import { sequencerNodeKind } from "../../src/sequencer/sequencer-node.ts";
import { validateNext } from "../../src/sequencer-client/event-validation.ts";
import type { LocalPostgres } from "../../src/storage/local-postgres.ts";

export type SequencerClient = Client<typeof SequencerService>;

export interface TestSequencer {
  readonly runtime: NodeRuntime;
  readonly port: number;
  readonly client: SequencerClient;
  /** The sequencer's database, for tests that look inside. */
  readonly database: string;
  readonly connectionUrl: string;
  stop(): Promise<void>;
  /** Stops this process and starts a new one on the same database (a new port). */
  restart(): Promise<TestSequencer>;
}

export interface TestSequencerOptions {
  /** Reuse a database (restart); default: a fresh one. */
  database?: string;
  mediatorName?: string;
  parameters?: Record<string, string>;
  /** synchronizer.onboarding: open by default here, as these tests register members of their own. */
  onboarding?: "open" | "allow-list";
}

/** A sequencer node on `pg`, active and serving on a free port. Stop it at the end of the test. */
export async function startTestSequencer(
  pg: LocalPostgres,
  options: TestSequencerOptions = {},
): Promise<TestSequencer> {
  const database = options.database ?? `sequencer_${randomBytes(4).toString("hex")}`;
  await pg.ensureDatabase(database);
  const connectionUrl = pg.connectionUrl(database);
  const config = validateConfig({
    synchronizer: {
      id: "sync1",
      onboarding: options.onboarding ?? "open",
      ...(options.parameters ? { parameters: options.parameters } : {}),
      sequencer: { name: "sequencer", port: 4001, storage: { url: connectionUrl } },
      mediator: { name: options.mediatorName ?? "mediator", port: 4002 },
    },
  });
  const entry = configNodes(config)[0] as NodeEntry;
  const dataDir = mkdtempSync(join(tmpdir(), "lockstep-seq-"));
  const runtime = new NodeRuntime({
    entry,
    config,
    dataDir,
    logger: silentLogger("sequencer"),
    definition: sequencerNodeKind,
    port: 0,
    lockPollMs: 100,
  });
  await runtime.start();
  if (runtime.currentRole !== "active") {
    const status = await runtime.status();
    await runtime.stop();
    throw new Error(`sequencer did not become active: ${status.lastError?.message ?? status.role}`);
  }
  const port = runtime.port;
  const stop = async () => {
    await runtime.stop();
    rmSync(dataDir, { recursive: true, force: true });
  };
  return {
    runtime,
    port,
    client: createNodeClient(SequencerService, nodeBaseUrl(port)),
    database,
    connectionUrl,
    stop,
    restart: async () => {
      await stop();
      return startTestSequencer(pg, { ...options, database });
    },
  };
}

/** An EventPayload carrying a protocol message (a StringValue in an Any), as members send. */
export function messagePayload(text: string): Uint8Array {
  return toBinary(
    EventPayloadSchema,
    create(EventPayloadSchema, {
      content: {
        case: "message",
        value: anyPack(StringValueSchema, create(StringValueSchema, { value: text })),
      },
    }),
  );
}

export interface SendOptions {
  recipients?: string[];
  payload?: Uint8Array;
  messageId?: string;
  /** Default: an hour from now. */
  maxSequencingTime?: bigint;
  writerEpoch?: bigint;
  writerActivation?: string;
  timeProof?: boolean;
  /** Sign as if this member sent it (e.g. an impostor's key). */
  signWith?: KeyPair;
}

let messageCounter = 0;

/** A member with its own keys, which builds and signs sequencer requests. */
export class TestMember {
  readonly namespace: KeyPair = generateKeyPair("namespace");
  readonly signing: KeyPair = generateKeyPair("signing");
  readonly id: string;
  writerEpoch = 1n;
  /** Sent beside writerEpoch; '' is a valid activation too (the first seen at an epoch holds it). */
  writerActivation = "";

  constructor(readonly name: string) {
    this.id = uniqueIdentifier(name, this.namespace.fingerprint);
  }

  memberKeysTransaction(serial = 1): SignedTopologyTransaction {
    return signTopologyTransaction(
      { operation: "add", serial, mapping: memberKeys(this.id, this.namespace, [this.signing]) },
      this.namespace,
    );
  }

  /** Registers and returns registered_at. */
  async register(client: SequencerClient): Promise<bigint> {
    const response = await client.registerMember({
      memberKeys: signedTopologyToParts(this.memberKeysTransaction()),
    });
    return response.registeredAt;
  }

  sendRequest(options: SendOptions = {}): MessageInitShape<typeof SendRequestSchema> {
    const submission = this.submission(options);
    const key = options.signWith ?? this.signing;
    return {
      submission,
      signature: sign(key.privateKey, submissionDigest(submission)),
      signingKeyFingerprint: this.signing.fingerprint,
    };
  }

  /** SendBatchRequest.signed: these submissions under one signature of this member's key. */
  signedSubmissions(
    submissions: Uint8Array[],
    options: { signWith?: KeyPair } = {},
  ): MessageInitShape<typeof SignedSubmissionsSchema> {
    const key = options.signWith ?? this.signing;
    return {
      sender: this.id,
      submissions,
      signature: sign(key.privateKey, submissionBatchDigest(this.id, submissions)),
      signingKeyFingerprint: this.signing.fingerprint,
    };
  }

  /** A serialized Submission from this member (sender: options.sender ?? this member). */
  submission(options: SendOptions & { sender?: string } = {}): Uint8Array {
    return toBinary(
      SubmissionSchema,
      create(SubmissionSchema, {
        sender: options.sender ?? this.id,
        messageId: options.messageId ?? `${this.name}-${++messageCounter}`,
        recipients: options.recipients ?? [this.id],
        payload: options.payload ?? (options.timeProof ? new Uint8Array(0) : messagePayload("hello")),
        maxSequencingTime: options.maxSequencingTime ?? nowMicros() + 3_600_000_000n,
        writerEpoch: options.writerEpoch ?? this.writerEpoch,
        writerActivation: options.writerActivation ?? this.writerActivation,
        timeProof: options.timeProof ?? false,
      }),
    );
  }

  subscribeRequest(
    options: { from?: bigint; writerEpoch?: bigint; writerActivation?: string; issuedAt?: bigint } = {},
  ): MessageInitShape<typeof SubscribeRequestSchema> {
    const request = {
      member: this.id,
      fromTimestamp: options.from ?? null,
      writerEpoch: options.writerEpoch ?? this.writerEpoch,
      writerActivation: options.writerActivation ?? this.writerActivation,
      issuedAt: options.issuedAt ?? nowMicros(),
      nonce: randomBytes(16),
    };
    return {
      ...request,
      fromTimestamp: options.from,
      signature: sign(this.signing.privateKey, subscriptionDigest(request)),
      signingKeyFingerprint: this.signing.fingerprint,
    };
  }

  acknowledgeRequest(
    timestamp: bigint,
    writerEpoch = this.writerEpoch,
    writerActivation = this.writerActivation,
  ): MessageInitShape<typeof AcknowledgeRequestSchema> {
    return {
      member: this.id,
      timestamp,
      writerEpoch,
      writerActivation,
      signature: sign(
        this.signing.privateKey,
        acknowledgementDigest({ member: this.id, timestamp, writerEpoch, writerActivation }),
      ),
      signingKeyFingerprint: this.signing.fingerprint,
    };
  }
}

/**
 * Subscribes and collects events until `count` arrived (or, with `idleMs`, until no event came
 * for that long), then closes the stream. Rejects with the stream's error.
 */
export async function collectEvents(
  client: SequencerClient,
  member: TestMember,
  options: { from?: bigint; count?: number; idleMs?: number; timeoutMs?: number } = {},
): Promise<SequencedEvent[]> {
  const controller = new AbortController();
  const events: SequencedEvent[] = [];
  const deadline = setTimeout(
    () => controller.abort(new Error("collectEvents timed out")),
    options.timeoutMs ?? 10_000,
  );
  let idle: NodeJS.Timeout | undefined;
  const armIdle = () => {
    if (options.idleMs === undefined) return;
    clearTimeout(idle);
    idle = setTimeout(() => controller.abort("idle"), options.idleMs);
  };
  armIdle();
  try {
    for await (const response of client.subscribe(member.subscribeRequest({ from: options.from }), {
      signal: controller.signal,
    })) {
      for (const e of response.events) events.push(eventFromProto(e));
      armIdle();
      if (options.count !== undefined && events.length >= options.count) break;
    }
  } catch (error) {
    if (controller.signal.reason !== "idle") throw error;
  } finally {
    clearTimeout(deadline);
    clearTimeout(idle);
    controller.abort("done");
  }
  return events;
}

/** The sequencer's id and signing keys from GetTopology, for validateNext. */
export async function sequencerKeys(
  client: SequencerClient,
): Promise<{ sequencerId: string; keys: Buffer[] }> {
  const response = await client.getTopology({});
  const state = TopologyState.replay(
    response.synchronizerNamespace,
    response.transactions.map((t) => ({
      signed: signedTopologyFromParts(t.transaction as NonNullable<typeof t.transaction>),
      effectiveAt: t.effectiveAt,
    })),
  );
  const keys = state.signingKeysOf(response.sequencerId, 2n ** 63n - 1n).map((k) => k.publicKey);
  return { sequencerId: response.sequencerId, keys };
}

/** Validates a member's events as a chain (validateNext), from `prior`; returns the last position. */
export function validateChain(
  events: readonly SequencedEvent[],
  keys: Buffer[],
  prior: EventPosition | null = null,
): EventPosition | null {
  let position = prior;
  for (const event of events) position = validateNext(position, event, keys);
  return position;
}
