import type { NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type { NodeIdentity } from "../common/node-kind.ts";
import type { ClientTlsIdentity } from "../common/tls-client.ts";
import type { FenceWriterRequest } from "../gen/lockstep/admin/v1/admin_pb.ts";
import type { Db } from "../storage/db.ts";
import {
  bumpWriterEpoch,
  databaseWriterEpoch,
  ensureNodeState,
  fenceSecret,
  type PreviousActivation,
  raiseWriterEpochAbove,
  unverifiedWriterEpoch,
} from "./node-state.ts";
import {
  type FenceNotice,
  type FenceOutcome,
  fencePrevious,
  receiveFence,
  type WriterFencer,
} from "./writer-fencing.ts";

// Who this process writes as: the node's identity and writer epoch (node-state.ts), bumped at each
// activation and raised after an unverified restore, and this process's side of writer fencing
// (writer-fencing.ts) — notifying the activation it replaced, judging notices from newer ones. Kept
// apart from NodeRuntime, which decides when to activate and what being fenced does to the process.

export class WriterIdentity {
  private identity: NodeIdentity | undefined;
  /** The node's fence secret (node_state.fence_secret), read at start. */
  private secret: Buffer | undefined;
  /** This process's own latest activation: the one a fence notice must name to concern it. */
  private activatedHere: string | undefined;
  private previousFencer: WriterFencer | undefined;
  /** Where this process serves (processAddress), recorded with each activation for the next one. */
  address = "";
  /** Whether this node serves TLS: so does the process it fences (the same node's config). */
  tls = false;
  /** The certificate its fence notices present (the node's own: nodeClientTls). */
  clientTls: ClientTlsIdentity | undefined;

  constructor(
    private readonly node: string,
    private readonly logger: Logger,
  ) {}

  /** As read at start, then after each bump or raise; undefined before start. */
  get current(): NodeIdentity | undefined {
    return this.identity;
  }

  /** The fencer of the previous activation, for status. */
  get fencer(): WriterFencer | undefined {
    return this.previousFencer;
  }

  require(): NodeIdentity {
    if (!this.identity)
      throw new LockstepError("INTERNAL_ERROR", { details: "node identity read before start" });
    return this.identity;
  }

  /** Reads the node's identity (creating it on a fresh database) and its fence secret. */
  async load(db: Db, entry: NodeEntry): Promise<void> {
    this.identity = await ensureNodeState(db, entry.name, entry.kind);
    this.secret = await fenceSecret(db);
  }

  /** A new activation: bumps the writer epoch durably; returns the activation it replaced. */
  async bump(db: Db): Promise<PreviousActivation> {
    const { previous, ...identity } = await bumpWriterEpoch(db, this.address);
    this.identity = identity;
    this.activatedHere = identity.writerActivation;
    return previous;
  }

  /**
   * A restore that could not reach the sequencer stamped the backup's own epoch and flagged it
   * (recovery_records.epoch_unverified); the member may have been activated since the backup, so
   * before acting the node takes an epoch above the sequencer's record of it, exactly + 1, instead
   * of guessing a margin. `sequencerRecord` throws while the sequencer is unreachable (the caller
   * retries): the flag stays set and nothing is sent on the unverified epoch.
   */
  async settle(db: Db, sequencerRecord: () => Promise<bigint>): Promise<void> {
    const recoveryId = await unverifiedWriterEpoch(db);
    if (recoveryId === undefined) return;
    const record = await sequencerRecord();
    this.identity = await raiseWriterEpochAbove(db, recoveryId, record);
    this.activatedHere = this.identity.writerActivation;
    this.logger.info(
      { writerEpoch: this.identity.writerEpoch.toString(), sequencerRecord: record.toString() },
      "writer epoch raised above the sequencer's record after a restore",
    );
  }

  /**
   * Tells the process of the activation this one replaced that it is stale, when it ran elsewhere,
   * in the background while `current()` holds; any earlier fencer stops.
   */
  fencePrevious(previous: PreviousActivation, current: () => boolean): void {
    this.stopFencing();
    this.previousFencer = fencePrevious(
      previous,
      {
        node: this.node,
        address: this.address,
        tls: this.tls,
        ...(this.clientTls ? { clientTls: this.clientTls } : {}),
        secret: this.secret as Buffer,
        identity: this.require(),
        logger: this.logger,
      },
      current,
    );
  }

  stopFencing(): void {
    this.previousFencer?.stop();
  }

  /** Authenticates and judges a notice from a newer activation (receiveFence), and logs the verdict. */
  async receive(
    request: FenceWriterRequest,
    db: Db,
  ): Promise<{ outcome: FenceOutcome; notice: FenceNotice }> {
    const { outcome, notice, databaseEpoch } = await receiveFence(
      request,
      { node: this.node, secret: this.secret, activation: this.activatedHere },
      () => databaseWriterEpoch(db),
    );
    this.logger.info(
      {
        outcome,
        from: notice.writerEndpoint,
        epoch: notice.writerEpoch.toString(),
        databaseEpoch: databaseEpoch?.toString(),
      },
      "fence notice from a newer activation of this node",
    );
    return { outcome, notice };
  }
}
