import type { Micros } from "../common/time.ts";
import type { Queryable } from "../storage/db.ts";
import { periodFromText, periodToText } from "./deduplication.ts";
import type { DeduplicationPeriod } from "./ledger-api-backend.ts";

/**
 * In-flight submissions (this participant's own, Canton's in_flight_submission), the confirmation
 * requests it validated, and the contract locks of the pending ones.
 */

// --- in-flight submissions ----------------------------------------------------------------------

export interface InFlightSubmission {
  readonly changeId: string;
  readonly userId: string;
  readonly commandId: string;
  readonly actAs: readonly string[];
  readonly submissionId: string;
  readonly messageId: string;
  readonly rootHash: Buffer;
  readonly maxSequencingTime: Micros;
  readonly deduplicationPeriod: DeduplicationPeriod;
  readonly requestId: Micros | null;
}

interface InFlightRow {
  change_id: string;
  user_id: string;
  command_id: string;
  act_as: string[];
  submission_id: string;
  message_id: string;
  root_hash: Buffer;
  max_sequencing_time: bigint;
  dedup_period: string;
  request_id: bigint | null;
}

function toInFlight(r: InFlightRow): InFlightSubmission {
  return {
    changeId: r.change_id,
    userId: r.user_id,
    commandId: r.command_id,
    actAs: r.act_as,
    submissionId: r.submission_id,
    messageId: r.message_id,
    rootHash: r.root_hash,
    maxSequencingTime: r.max_sequencing_time,
    deduplicationPeriod: periodFromText(r.dedup_period),
    requestId: r.request_id,
  };
}

/**
 * Registers the submission; returns the submission id of the one already in flight for the same
 * change id instead, if any. A concurrent registration of the same change id waits on the primary
 * key until the other transaction ends, so exactly one wins.
 */
export async function registerInFlight(tx: Queryable, s: InFlightSubmission): Promise<string | undefined> {
  const inserted = await tx.execute(
    `INSERT INTO in_flight_submission (change_id, user_id, command_id, act_as, submission_id, message_id,
       root_hash, max_sequencing_time, dedup_period)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (change_id) DO NOTHING`,
    [
      s.changeId,
      s.userId,
      s.commandId,
      [...s.actAs],
      s.submissionId,
      s.messageId,
      s.rootHash,
      s.maxSequencingTime,
      periodToText(s.deduplicationPeriod),
    ],
  );
  if (inserted === 1) return undefined;
  const existing = await tx.maybeOne<{ submission_id: string }>(
    "SELECT submission_id FROM in_flight_submission WHERE change_id = $1",
    [s.changeId],
  );
  return existing?.submission_id ?? "unknown";
}

export async function inFlightByMessageId(
  q: Queryable,
  messageId: string,
): Promise<InFlightSubmission | undefined> {
  const row = await q.maybeOne<InFlightRow>("SELECT * FROM in_flight_submission WHERE message_id = $1", [
    messageId,
  ]);
  return row && toInFlight(row);
}

export async function inFlightByRequest(
  q: Queryable,
  requestId: Micros,
): Promise<InFlightSubmission | undefined> {
  const row = await q.maybeOne<InFlightRow>("SELECT * FROM in_flight_submission WHERE request_id = $1", [
    requestId,
  ]);
  return row && toInFlight(row);
}

export async function setInFlightRequest(tx: Queryable, changeId: string, requestId: Micros): Promise<void> {
  await tx.execute("UPDATE in_flight_submission SET request_id = $2 WHERE change_id = $1", [
    changeId,
    requestId,
  ]);
}

export async function removeInFlight(tx: Queryable, changeId: string): Promise<void> {
  await tx.execute("DELETE FROM in_flight_submission WHERE change_id = $1", [changeId]);
}

/** Not sequenced and past their max sequencing time as of sequencer time `at`. */
export async function timedOutInFlight(tx: Queryable, at: Micros): Promise<InFlightSubmission[]> {
  const rows = await tx.query<InFlightRow>(
    `SELECT * FROM in_flight_submission WHERE request_id IS NULL AND max_sequencing_time < $1
     ORDER BY max_sequencing_time, change_id`,
    [at],
  );
  return rows.map(toInFlight);
}

/** Every submission in flight, oldest first (a synchronizer migration abandons them, forced). */
export async function allInFlight(q: Queryable): Promise<InFlightSubmission[]> {
  const rows = await q.query<InFlightRow>(
    "SELECT * FROM in_flight_submission ORDER BY registered_at, change_id",
  );
  return rows.map(toInFlight);
}

/** Submissions still waiting to be sequenced: while there are any, ask for time proofs. */
export async function unsequencedInFlightCount(q: Queryable): Promise<number> {
  const row = await q.one<{ n: number }>(
    "SELECT count(*)::int AS n FROM in_flight_submission WHERE request_id IS NULL",
  );
  return row.n;
}

// --- validated requests -----------------------------------------------------------------------

export interface LocalRejection {
  readonly code: string;
  readonly reason: string;
}

export interface StoredRequest {
  readonly requestId: Micros;
  readonly rootHash: Buffer;
  readonly sender: string;
  readonly mediator: string;
  readonly transaction: Buffer | null;
  readonly confirmingParties: readonly string[];
  readonly localRejection: LocalRejection | null;
  readonly state: "pending" | "committed" | "rejected";
}

interface RequestRow {
  request_id: bigint;
  root_hash: Buffer;
  sender: string;
  mediator: string;
  transaction: Buffer | null;
  confirming_parties: string[];
  local_rejection: string | null;
  state: StoredRequest["state"];
}

function toRequest(r: RequestRow): StoredRequest {
  return {
    requestId: r.request_id,
    rootHash: r.root_hash,
    sender: r.sender,
    mediator: r.mediator,
    transaction: r.transaction,
    confirmingParties: r.confirming_parties,
    localRejection: r.local_rejection === null ? null : (JSON.parse(r.local_rejection) as LocalRejection),
    state: r.state,
  };
}

export async function insertRequest(tx: Queryable, r: Omit<StoredRequest, "state">): Promise<void> {
  await tx.execute(
    `INSERT INTO participant_requests (request_id, root_hash, sender, mediator, transaction, confirming_parties,
       local_rejection, state, response_sequenced)
     VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)`,
    [
      r.requestId,
      r.rootHash,
      r.sender,
      r.mediator,
      r.transaction,
      [...r.confirmingParties],
      r.localRejection === null ? null : JSON.stringify(r.localRejection),
      // Nothing to send when it hosts no confirming party.
      r.confirmingParties.length === 0,
    ],
  );
}

export async function requestById(q: Queryable, requestId: Micros): Promise<StoredRequest | undefined> {
  const row = await q.maybeOne<RequestRow>("SELECT * FROM participant_requests WHERE request_id = $1", [
    requestId,
  ]);
  return row && toRequest(row);
}

export async function decideRequest(
  tx: Queryable,
  requestId: Micros,
  state: "committed" | "rejected",
  at: Micros,
): Promise<void> {
  await tx.execute("UPDATE participant_requests SET state = $2, decided_at = $3 WHERE request_id = $1", [
    requestId,
    state,
    at,
  ]);
  await tx.execute("DELETE FROM participant_locks WHERE request_id = $1", [requestId]);
}

export async function markResponseSequenced(tx: Queryable, requestId: Micros): Promise<void> {
  await tx.execute("UPDATE participant_requests SET response_sequenced = true WHERE request_id = $1", [
    requestId,
  ]);
}

/** Pending requests whose response was not yet seen sequenced: (re-)sent after commit and on start. */
export async function unsentResponses(q: Queryable): Promise<StoredRequest[]> {
  const rows = await q.query<RequestRow>(
    `SELECT * FROM participant_requests WHERE state = 'pending' AND NOT response_sequenced ORDER BY request_id`,
  );
  return rows.map(toRequest);
}

// --- locks --------------------------------------------------------------------------------------

export async function lockedContracts(q: Queryable, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const rows = await q.query<{ contract_id: string }>(
    "SELECT contract_id FROM participant_locks WHERE contract_id = ANY($1::text[])",
    [ids],
  );
  return rows.map((r) => r.contract_id);
}

export async function lockContracts(tx: Queryable, ids: readonly string[], requestId: Micros): Promise<void> {
  for (const id of ids) {
    await tx.execute("INSERT INTO participant_locks (contract_id, request_id) VALUES ($1, $2)", [
      id,
      requestId,
    ]);
  }
}
