import { ERRORS, type ErrorCodeName } from "../common/error-codes.ts";
import type { ErrorJson } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type { SequencedEvent } from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import type { TopologyState } from "../crypto/topology.ts";
import type { ConfirmationRequest, Verdict } from "../gen/lockstep/protocol/v1/confirmation_pb.ts";
import { parseTransaction } from "../ledger/transaction-codec.ts";
import { visibleTo } from "../ledger/transaction-view.ts";
import { parseProtocolMessage } from "../protocol/confirmation-messages.ts";
import type { EventContext } from "../sequencer-client/sequencer-client.ts";
import type { Tx } from "../storage/db.ts";
import { changeId } from "./deduplication.ts";
import {
  activeContracts,
  archiveContracts,
  insertCompletion,
  insertContracts,
  insertUpdate,
  knownContractIds,
  nextOffset,
} from "./participant-store.ts";
import {
  decideRequest,
  type InFlightSubmission,
  inFlightByMessageId,
  inFlightByRequest,
  insertRequest,
  lockContracts,
  lockedContracts,
  markResponseSequenced,
  removeInFlight,
  requestById,
  setInFlightRequest,
  timedOutInFlight,
} from "./request-store.ts";
import { activenessProblems, checkRequest, contractsToLock } from "./request-validation.ts";

/** What the node must do after the handler's transaction committed. */
export interface ProcessingOutcome {
  /** A request was stored with a response to send. */
  readonly responsesToSend: boolean;
  /** The ledger end moved (updates or completions). */
  readonly ledgerChanged: boolean;
  /** The sequencer refused one of our response submissions: send it again. */
  readonly refusedMessageId?: string;
}

/**
 * The participant's event handler (docs/design.md §2 steps 4–5): runs inside the sequencer client's
 * transaction, so every effect commits atomically with the clean timestamp (and the ledger end
 * with it), and a replay after a crash redoes exactly the same. Sending is the node's job, after
 * commit (see confirmation-sender.ts).
 */
export class RequestProcessor {
  constructor(
    private readonly self: () => string,
    private readonly log: Logger,
  ) {}

  async handle(event: SequencedEvent, tx: Tx, context: EventContext): Promise<ProcessingOutcome> {
    // The ledger end commits synchronously: the sequencer client's processing transaction sets
    // synchronous_commit = on for every member (event-pipeline.ts processRun, docs/design.md §3).
    const self = this.self();
    const own = event.sender === self;
    let responsesToSend = false;
    let ledgerChanged = false;
    let refusedMessageId: string | undefined;

    if (event.deliverError) {
      if (own) {
        const messageId = event.deliverError.messageId || event.messageId;
        const submission = await inFlightByMessageId(tx, messageId);
        if (submission && submission.requestId === null) {
          // Canton's timely rejection: the sequencer will never sequence it.
          const code =
            event.deliverError.code === "SEQUENCER_MAX_SEQUENCING_TIME_EXCEEDED"
              ? "REQUEST_TIME_OUT"
              : event.deliverError.code;
          await this.reject(
            tx,
            submission,
            errorJson(code, `not sequenced: ${event.deliverError.reason}`),
            event.timestamp,
          );
          ledgerChanged = true;
        } else if (!submission) refusedMessageId = messageId;
      }
    } else {
      const message = parseProtocolMessage(event.payload);
      if (message?.kind === "request") {
        if (own) {
          const submission = await inFlightByMessageId(tx, event.messageId);
          if (submission) await setInFlightRequest(tx, submission.changeId, event.timestamp);
        }
        if (event.recipients.includes(self))
          responsesToSend = await this.onRequest(tx, event, message.message, context.topology);
      } else if (message?.kind === "response" && own) {
        await markResponseSequenced(tx, message.message.requestId);
      } else if (message?.kind === "verdict") {
        ledgerChanged = await this.onVerdict(tx, event, message.message, context.topology);
      }
    }

    // Submissions that can no longer be sequenced: this event proves the sequencer's time is past them.
    for (const submission of await timedOutInFlight(tx, event.timestamp)) {
      const reason = `the submission was not sequenced by its max sequencing time ${submission.maxSequencingTime}`;
      await this.reject(tx, submission, errorJson("REQUEST_TIME_OUT", reason, { reason }), event.timestamp);
      ledgerChanged = true;
    }
    return { responsesToSend, ledgerChanged, ...(refusedMessageId ? { refusedMessageId } : {}) };
  }

  /** Validates, locks the consumed inputs when it approves, and stores the request. */
  private async onRequest(
    tx: Tx,
    event: SequencedEvent,
    request: ConfirmationRequest,
    topology: TopologyState,
  ): Promise<boolean> {
    const requestId = event.timestamp;
    if (await requestById(tx, requestId)) return false;
    // No mediator among the recipients: no verdict can ever come, and its locks would hold the
    // inputs forever. Canton's participant raises an alarm ("root hash messages that were not sent
    // to a mediator") and does not process the request; so do we.
    const mediators = new Set(topology.mediators(requestId));
    const mediator = event.recipients.find((r) => mediators.has(r));
    if (mediator === undefined) {
      this.log.warn(
        { requestId: String(requestId), sender: event.sender },
        "request sent to no mediator ignored",
      );
      return false;
    }
    const self = this.self();
    const checks = checkRequest({ request, sender: event.sender, recordTime: requestId, topology, self });
    const problems = [...checks.problems];
    const view = checks.view;
    if (view) {
      const inputs = view.inputContracts.map((c) => c.contractId);
      const created = view.createdContracts.map((c) => c.contractId);
      const state = {
        active: new Set((await activeContracts(tx, inputs)).map((c) => c.contractId)),
        locked: new Set(await lockedContracts(tx, inputs)),
        known: new Set(await knownContractIds(tx, created)),
      };
      problems.push(...activenessProblems(view, state));
      if (problems.length === 0) await lockContracts(tx, contractsToLock(view), requestId);
    } else if (!checks.transaction) {
      this.log.warn({ requestId: String(requestId) }, "request with an unparsable transaction");
    }
    const first = problems[0];
    const confirmingParties = checks.confirmingHere;
    await insertRequest(tx, {
      requestId,
      rootHash: Buffer.from(request.rootHash),
      sender: event.sender,
      mediator,
      // A malformed payload (one not hashing to the root hash, or declaring other confirming parties
      // than its transaction's...) is never committed here, whatever the verdict: the mediator
      // approves what the declared confirmers approved. Canton likewise applies only views that
      // match the request's root hash and pass the participant's well-formedness checks.
      transaction: checks.transaction && checks.authentic ? Buffer.from(request.transaction) : null,
      confirmingParties,
      localRejection: first ? { code: first.code, reason: first.message } : null,
    });
    this.log.debug(
      { requestId: String(requestId), confirming: confirmingParties, rejection: first?.code },
      "validated confirmation request",
    );
    return confirmingParties.length > 0;
  }

  /** Commits or rolls back; a verdict for a request that is not pending here is a no-op. */
  private async onVerdict(
    tx: Tx,
    event: SequencedEvent,
    verdict: Verdict,
    topology: TopologyState,
  ): Promise<boolean> {
    const request = await requestById(tx, verdict.requestId);
    if (request?.state !== "pending") return false;
    // Only the request's mediator decides it: any member can send a message shaped like a verdict,
    // and the sequencer vouches for the sender. Canton discards a mediator result not signed by the
    // request's mediator (ProtocolProcessor: "with an invalid signature for <mediator>").
    if (event.sender !== request.mediator) {
      this.log.warn(
        { requestId: String(verdict.requestId), sender: event.sender, mediator: request.mediator },
        "verdict from a member that is not the request's mediator ignored",
      );
      return false;
    }
    if (!request.rootHash.equals(Buffer.from(verdict.rootHash))) {
      this.log.warn({ requestId: String(verdict.requestId) }, "verdict with another root hash ignored");
      return false;
    }
    const submission = await inFlightByRequest(tx, request.requestId);
    const outcome = verdict.outcome;
    // A replay (the same transaction again, under a new request id) commits nothing: its update id,
    // the root hash, is taken. Without this check the update's unique key failed the event for good
    // and stopped this participant (Canton rejects replays as MalformedRequest).
    const replay =
      outcome.case === "approve" &&
      (
        await tx.query("SELECT 1 FROM participant_updates WHERE update_id = $1", [
          request.rootHash.toString("hex"),
        ])
      ).length > 0;
    if (replay)
      this.log.warn(
        { requestId: String(request.requestId) },
        "approved replay of a committed transaction ignored",
      );
    if (outcome.case === "approve" && request.transaction && !replay) {
      const transaction = parseTransaction(request.transaction);
      const view = visibleTo(transaction, topology.partiesOf(this.self(), request.requestId));
      await decideRequest(tx, request.requestId, "committed", event.timestamp);
      if (!view) return false;
      const offset = await nextOffset(tx);
      const updateId = request.rootHash.toString("hex");
      await archiveContracts(tx, view.archivedContracts, offset);
      const known = new Set(
        await knownContractIds(
          tx,
          view.createdContracts.map((c) => c.contractId),
        ),
      );
      await insertContracts(
        tx,
        view.createdContracts.filter((c) => !known.has(c.contractId)),
        offset,
      );
      await insertUpdate(tx, {
        offset,
        updateId,
        requestId: request.requestId,
        recordTime: request.requestId,
        ledgerTime: transaction.ledgerTime,
        commandId: transaction.submitter.commandId,
        actAs: transaction.command.actAs,
        informees: transaction.informees,
        view,
      });
      if (submission) {
        await this.complete(tx, submission, { kind: "succeeded" }, request.requestId, offset, updateId);
      } else if (transaction.submitter.participant === this.self()) {
        // Our own submission whose in-flight row is gone (restored from a backup taken before it
        // was submitted): the replay rebuilds its completion, so a resubmission deduplicates (docs/design.md §4.5).
        const actAs = [...transaction.command.actAs];
        const { userId, commandId, submissionId } = transaction.submitter;
        const durationMs = topology.parameters(request.requestId).maxDeduplicationDurationMs;
        await insertCompletion(tx, {
          changeId: changeId(userId, commandId, actAs),
          commandId,
          submissionId,
          userId,
          actAs,
          status: { kind: "succeeded" },
          updateId,
          offset,
          deduplicationPeriod: { kind: "duration", durationMs },
          recordTime: request.requestId,
        });
      }
      return true;
    }
    await decideRequest(tx, request.requestId, "rejected", event.timestamp);
    if (!submission) return false;
    const error =
      outcome.case === "reject" || outcome.case === "timeout"
        ? errorJson(outcome.value.code, outcome.value.reason)
        : errorJson("INTERNAL_ERROR", "approved a transaction that is malformed here, or committed before");
    await this.reject(tx, submission, error, event.timestamp);
    return true;
  }

  private async reject(
    tx: Tx,
    submission: InFlightSubmission,
    error: ErrorJson,
    recordTime: Micros,
  ): Promise<void> {
    const offset = await nextOffset(tx);
    await this.complete(tx, submission, { kind: "failed", error }, recordTime, offset);
  }

  private async complete(
    tx: Tx,
    s: InFlightSubmission,
    status: { kind: "succeeded" } | { kind: "failed"; error: ErrorJson },
    recordTime: Micros,
    offset: bigint,
    updateId?: string,
  ): Promise<void> {
    await insertCompletion(tx, {
      changeId: s.changeId,
      commandId: s.commandId,
      submissionId: s.submissionId,
      userId: s.userId,
      actAs: s.actAs,
      status,
      ...(updateId ? { updateId } : {}),
      offset,
      deduplicationPeriod: s.deduplicationPeriod,
      recordTime,
    });
    await removeInFlight(tx, s.changeId);
  }
}

/** A rejection as applications see it: the registry's fields for the code, the given message. */
export function errorJson(code: string, message: string, metadata: Record<string, string> = {}): ErrorJson {
  const definition = ERRORS.get(code as ErrorCodeName);
  return {
    code,
    message,
    retryable: definition?.retryable ?? false,
    remedy: definition?.remedy.replace(/\{(\w+)\}/g, (whole, key: string) => metadata[key] ?? whole) ?? "",
    metadata,
  };
}
