import { create } from "@bufbuild/protobuf";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import { newId } from "../common/ids.ts";
import type { Logger } from "../common/logging.ts";
import { END_OF_TIME, type Micros, maxMicros, msToMicros, nowMicros } from "../common/time.ts";
import { ConfirmationRequestSchema } from "../gen/lockstep/protocol/v1/confirmation_pb.ts";
import type { ActiveContract } from "../ledger/contract.ts";
import { interpret } from "../ledger/interpreter.ts";
import { partySet } from "../ledger/ledger-value.ts";
import type { Command, Transaction } from "../ledger/transaction.ts";
import { hashSerializedTransaction, serializeTransaction } from "../ledger/transaction-codec.ts";
import { protocolPayload } from "../protocol/confirmation-messages.ts";
import type { SequencerClient } from "../sequencer-client/sequencer-client.ts";
import type { Db } from "../storage/db.ts";
import { changeId, duplicateOf, resolveDeduplicationPeriod } from "./deduplication.ts";
import type { SubmitCommands } from "./ledger-api-backend.ts";
import {
  acceptedCompletion,
  activeContracts,
  lastCompletionOffset,
  readLedgerEnd,
} from "./participant-store.ts";
import { registerInFlight } from "./request-store.ts";

export interface Submitted {
  readonly submissionId: string;
  readonly changeId: string;
  /** The last completion of (submission id, change id) before this one registered: not this one's. */
  readonly completedBefore: bigint;
  readonly transaction: Transaction;
}

/**
 * Command submission (docs/design.md §2 steps 1–3): interpret against the local ACS, register in flight
 * with the deduplication check, and send the confirmation request to the informee participants
 * and the mediator.
 */
export class SubmissionService {
  constructor(
    private readonly db: Db,
    private readonly client: SequencerClient,
    private readonly incarnation: () => string,
    private readonly log: Logger,
    /** Refuses submissions while a restored participant recovers its deduplication state (docs/design.md §4.5). */
    private readonly recoveryGate: (commandId: string) => void = () => {},
  ) {}

  /**
   * The refusals that tell the application more than "not connected" (an old incarnation, the
   * deduplication recovery after a restore): the Ledger API runs them before the connection check.
   */
  precheck(commands: SubmitCommands): void {
    if (commands.incarnation && commands.incarnation !== this.incarnation()) {
      throw new LockstepError("PARTICIPANT_INCARNATION_CHANGED", {
        requested: commands.incarnation,
        current: this.incarnation(),
      });
    }
    this.recoveryGate(commands.commandId);
  }

  async submit(commands: SubmitCommands): Promise<Submitted> {
    this.precheck(commands);
    if (!commands.userId || !commands.commandId)
      throw new LockstepError("INVALID_ARGUMENT", { details: "user id and command id are required" });
    const self = this.client.member;
    const topology = this.client.topology();
    const now = nowMicros();
    const actAs = partySet(commands.actAs);
    const notHosted = actAs.filter((p) => topology.participantOf(p, END_OF_TIME) !== self);
    if (actAs.length === 0 || notHosted.length > 0) {
      throw new LockstepError("INVALID_ARGUMENT", {
        details:
          actAs.length === 0
            ? "act-as names no party"
            : `act-as parties not hosted on this participant: ${notHosted.join(", ")}`,
      });
    }
    const parameters = topology.parameters(this.client.sequencerTime() ?? now);
    const ledgerEnd = await readLedgerEnd(this.db);
    const period = resolveDeduplicationPeriod(
      commands.deduplicationPeriod,
      parameters.maxDeduplicationDurationMs,
      ledgerEnd,
    );
    const submissionId = commands.submissionId || newId();
    const transaction = await this.interpret(commands, actAs, submissionId, now);

    const informeeHosts = transaction.informees.map(
      (p) => [p, topology.participantOf(p, END_OF_TIME)] as const,
    );
    const unknown = informeeHosts.filter(([, host]) => host === undefined).map(([p]) => p);
    if (unknown.length > 0) {
      throw new LockstepError("INVALID_ARGUMENT", {
        details: `informees not hosted anywhere: ${unknown.join(", ")}`,
      });
    }
    const mediator = topology.mediators(END_OF_TIME)[0];
    if (!mediator) throw new LockstepError("INTERNAL_ERROR", { details: "the synchronizer has no mediator" });
    const recipients = [...new Set([...informeeHosts.map(([, host]) => host as string), mediator])];

    const bytes = serializeTransaction(transaction);
    const rootHash = hashSerializedTransaction(bytes);
    // Canton: maxSequencingTime = ledger time + tolerance, so a late request cannot be sequenced.
    const maxSequencingTime = transaction.ledgerTime + msToMicros(parameters.ledgerTimeRecordTimeToleranceMs);
    const id = changeId(commands.userId, commands.commandId, actAs);
    // Unique per submission, never the client's submission id (which an application may reuse):
    // the in-flight row is found by it (Canton: a fresh MessageId for every send).
    const messageId = `request-${newId()}`;
    // Synchronous whatever the server's default (docs/design.md §3): after a fail-over the in-flight
    // row is what deduplicates a resubmission and times the request out; lost, the command could
    // take effect twice.
    let completedBefore = -1n;
    await this.db.transaction(
      async (tx) => {
        const existing = await registerInFlight(tx, {
          changeId: id,
          userId: commands.userId,
          commandId: commands.commandId,
          actAs,
          submissionId,
          messageId,
          rootHash,
          maxSequencingTime,
          deduplicationPeriod: period,
          requestId: null,
        });
        if (existing !== undefined)
          throw new LockstepError("SUBMISSION_ALREADY_IN_FLIGHT", { existingSubmissionId: existing });
        // After the insert: a completion of the same change id that committed while we waited on
        // its in-flight row is visible to this statement (read committed).
        const duplicate = duplicateOf(await acceptedCompletion(tx, id), period, now);
        if (duplicate) throw duplicate;
        // Nothing can complete this submission before its row commits: every completion of the
        // same ids seen now is an earlier submission's.
        completedBefore = await lastCompletionOffset(tx, submissionId, id);
      },
      { synchronousCommit: true },
    );

    const request = create(ConfirmationRequestSchema, {
      rootHash,
      informees: [...transaction.informees],
      confirmingParties: [...transaction.confirmingParties],
      submittingParticipant: self,
      ledgerTime: transaction.ledgerTime,
      transaction: bytes,
    });
    try {
      await this.client.send({
        recipients,
        payload: protocolPayload({ kind: "request", message: request }),
        messageId,
        maxSequencingTime,
      });
    } catch (error) {
      const failure = toLockstepError(error);
      if (!failure.retryable) {
        // Refused outright, so never sequenced: the change id is free again.
        await this.db.execute(
          "DELETE FROM in_flight_submission WHERE change_id = $1 AND request_id IS NULL",
          [id],
        );
        throw failure;
      }
      // Maybe sequenced: the receipt or the timely rejection completes it (Canton's in-flight tracking).
      this.log.warn({ code: failure.code, submissionId }, `sending the request failed: ${failure.message}`);
    }
    return { submissionId, changeId: id, completedBefore, transaction };
  }

  /**
   * Interprets against the contracts visible to act-as and read-as parties. The interpreter's
   * lookup is synchronous, so contracts are loaded as it asks for them and interpretation re-runs.
   */
  private async interpret(
    commands: SubmitCommands,
    actAs: string[],
    submissionId: string,
    now: Micros,
  ): Promise<Transaction> {
    const readers = new Set([...actAs, ...(commands.readAs ?? [])]);
    const loaded = new Map<string, ActiveContract | undefined>();
    const command: Command =
      commands.command.kind === "create"
        ? {
            kind: "create",
            template: commands.command.template,
            arguments: commands.command.arguments,
            actAs,
          }
        : {
            kind: "exercise",
            contractId: commands.command.contractId,
            choice: commands.command.choice,
            argument: commands.command.argument ?? {},
            actAs,
          };
    let ledgerTime = commands.ledgerTime ?? this.ledgerTime(commands, now);
    const submitter = {
      participant: this.client.member,
      userId: commands.userId,
      commandId: commands.commandId,
      submissionId,
    };
    for (let attempt = 0; attempt < 100; attempt++) {
      const missing: string[] = [];
      let tx: Transaction;
      try {
        tx = interpret(command, {
          ledgerTime,
          submitter,
          lookupContract: (id) => {
            if (!loaded.has(id)) missing.push(id);
            return loaded.get(id);
          },
        });
      } catch (error) {
        if (missing.length === 0) throw error;
        for (const { createdOffset: _offset, ...c } of await activeContracts(this.db, missing)) {
          const visible = [...c.signatories, ...c.observers].some((p) => readers.has(p));
          loaded.set(c.contractId, visible ? c : undefined);
        }
        for (const id of missing) if (!loaded.has(id)) loaded.set(id, undefined);
        continue;
      }
      // Canton: the ledger time is not before the ledger time of any input contract.
      const latestInput = tx.inputContracts.reduce((t, c) => maxMicros(t, c.createdAt), ledgerTime);
      if (commands.ledgerTime === undefined && latestInput > ledgerTime) {
        ledgerTime = latestInput;
        continue;
      }
      return tx;
    }
    throw new LockstepError("INTERNAL_ERROR", { details: "interpretation did not settle" });
  }

  private ledgerTime(commands: SubmitCommands, now: Micros): Micros {
    let t = now;
    if (commands.minLedgerTimeAbs !== undefined) t = maxMicros(t, commands.minLedgerTimeAbs);
    if (commands.minLedgerTimeRelMs !== undefined)
      t = maxMicros(t, now + msToMicros(commands.minLedgerTimeRelMs));
    return t;
  }
}
