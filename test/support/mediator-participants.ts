/**
 * Test participants for the mediator's integration tests: plain sequencer-client members on their
 * own databases that host parties, send ConfirmationRequests and ConfirmationResponses, and record
 * every event they receive. No participant logic beyond that (the participant node is another issue).
 */
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { uniqueIdentifier } from "../../src/common/ids.ts";
import type { Logger } from "../../src/common/logging.ts";
import type { SequencedEvent } from "../../src/common/sequenced-event.ts";
import type { Micros } from "../../src/common/time.ts";
import { KeyStore } from "../../src/crypto/key-store.ts";
import { keyStoreMigrations } from "../../src/crypto/key-store-migrations.ts";
import { namespaceOf, signTopologyTransaction } from "../../src/crypto/topology.ts";
import {
  ConfirmationRequestSchema,
  type Verdict,
} from "../../src/gen/lockstep/protocol/v1/confirmation_pb.ts";
import {
  parseProtocolMessage,
  protocolPayload,
  signConfirmationResponse,
} from "../../src/protocol/confirmation-messages.ts";
import { createSequencerClient } from "../../src/sequencer-client/create-sequencer-client.ts";
import type { SequencerClient } from "../../src/sequencer-client/sequencer-client.ts";
import { sequencerClientMigrations } from "../../src/sequencer-client/sequencer-client-migrations.ts";
import type { Db } from "../../src/storage/db.ts";
import { runMigrations } from "../../src/storage/migrations.ts";
import { waitFor } from "./wait.ts";

export class TestParticipant {
  readonly events: SequencedEvent[] = [];

  private constructor(
    readonly client: SequencerClient,
    private readonly keys: KeyStore,
  ) {}

  static async start(options: {
    db: Db;
    name: string;
    sequencerUrl: string;
    logger: Logger;
  }): Promise<TestParticipant> {
    await runMigrations(options.db, "participant", [...sequencerClientMigrations, ...keyStoreMigrations]);
    const client = createSequencerClient({
      db: options.db,
      logger: options.logger,
      memberName: options.name,
      sequencerUrl: options.sequencerUrl,
      identity: () => ({ writerEpoch: 1n }),
      onFatal: (error) => options.logger.error({ code: error.code }, error.message),
      reconnect: { initialMs: 50, maxMs: 500 },
    });
    const participant = new TestParticipant(client, new KeyStore(options.db));
    await client.start(async (event) => {
      participant.events.push(event);
    });
    return participant;
  }

  get member(): string {
    return this.client.member;
  }

  /** A party id in this participant's namespace (its PartyToParticipant is up to the caller). */
  partyId(name: string): string {
    return uniqueIdentifier(name, namespaceOf(this.member));
  }

  /**
   * Hosts a new party here: a PartyToParticipant signed with this participant's namespace key,
   * submitted through its own client (SubmitTopology); resolves once its topology (as of the last
   * processed event) shows the party.
   */
  async allocateParty(name: string): Promise<string> {
    const party = this.partyId(name);
    const tx = signTopologyTransaction(
      {
        operation: "add",
        serial: 1,
        mapping: { type: "PartyToParticipant", party, participant: this.member },
      },
      await this.keys.namespaceKey(),
    );
    await this.client.submitTopology([tx]);
    await this.waitFor(`party ${name}`, () =>
      this.client.topology().participantOf(party, 2n ** 63n - 1n) === this.member ? true : undefined,
    );
    return party;
  }

  /** Polls (test/support/wait.ts) until `find` returns something, or fails after `timeoutMs`. */
  waitFor<T>(what: string, find: () => T | undefined, timeoutMs = 10_000): Promise<T> {
    return waitFor(`${this.member}: ${what}`, find, timeoutMs, 20);
  }

  /** Sends a ConfirmationRequest and returns its request id (the sequencing timestamp of its receipt). */
  async submitRequest(args: {
    informees: string[];
    confirmingParties: string[];
    recipients: string[];
    rootHash?: Buffer;
  }): Promise<{ requestId: Micros; rootHash: Buffer }> {
    const rootHash = args.rootHash ?? randomBytes(32);
    const request = create(ConfirmationRequestSchema, {
      rootHash,
      informees: args.informees,
      confirmingParties: args.confirmingParties,
      submittingParticipant: this.member,
      ledgerTime: BigInt(Date.now()) * 1000n,
      transaction: Buffer.from("opaque to the mediator"),
    });
    const { messageId } = await this.client.send({
      recipients: args.recipients,
      payload: protocolPayload({ kind: "request", message: request }),
    });
    const receipt = await this.waitFor("the request's receipt", () =>
      this.events.find((e) => e.sender === this.member && e.messageId === messageId),
    );
    if (receipt.deliverError) throw new Error(`request refused: ${receipt.deliverError.reason}`);
    return { requestId: receipt.timestamp, rootHash };
  }

  /** Waits until this participant received the request (as an informee participant). */
  async awaitRequest(requestId: Micros): Promise<void> {
    await this.waitFor(`request ${requestId}`, () => this.events.find((e) => e.timestamp === requestId));
  }

  /** Signs and sends a response to the mediator; resolves once it is sequenced. */
  async respond(args: {
    mediator: string;
    requestId: Micros;
    rootHash: Buffer;
    parties: string[];
    reject?: { code: string; reason: string };
  }): Promise<Micros> {
    const response = signConfirmationResponse(
      {
        requestId: args.requestId,
        rootHash: args.rootHash,
        participant: this.member,
        confirmingParties: args.parties,
        verdict: args.reject
          ? { case: "reject", value: { ...args.reject, participant: this.member } }
          : { case: "approve", value: {} },
      },
      await this.keys.activeSigningKey(),
    );
    const { messageId } = await this.client.send({
      recipients: [args.mediator],
      payload: protocolPayload({ kind: "response", message: response }),
    });
    const receipt = await this.waitFor("the response's receipt", () =>
      this.events.find((e) => e.sender === this.member && e.messageId === messageId),
    );
    if (receipt.deliverError) throw new Error(`response refused: ${receipt.deliverError.reason}`);
    return receipt.timestamp;
  }

  /** Every verdict received for the request, in order. */
  verdicts(requestId: Micros): { verdict: Verdict; event: SequencedEvent }[] {
    const out: { verdict: Verdict; event: SequencedEvent }[] = [];
    for (const event of this.events) {
      const message = event.deliverError ? undefined : parseProtocolMessage(event.payload);
      if (message?.kind === "verdict" && message.message.requestId === requestId) {
        out.push({ verdict: message.message, event });
      }
    }
    return out;
  }

  async awaitVerdict(requestId: Micros, timeoutMs = 15_000): Promise<Verdict> {
    const found = await this.waitFor(
      `the verdict of ${requestId}`,
      () => this.verdicts(requestId)[0],
      timeoutMs,
    );
    return found.verdict;
  }

  async stop(): Promise<void> {
    await this.client.stop();
  }
}
