import type { ErrorJson } from "../common/errors.ts";
import type { Micros } from "../common/time.ts";
import type { ActiveContract } from "../ledger/contract.ts";
import { type LedgerRecord, ledgerJson } from "../ledger/ledger-value.ts";
import type { TransactionView } from "../ledger/transaction-view.ts";
import type { Queryable } from "../storage/db.ts";
import { type AcceptedCompletion, periodFromText, periodToText } from "./deduplication.ts";
import type { Completion, SynchronizerMigrationMarker } from "./ledger-api-backend.ts";

/**
 * The participant's tables (participant-migrations.ts): plain reads and writes, no decisions.
 * Writers take the handler's transaction; readers any Queryable.
 */

// --- ledger end ----------------------------------------------------------------------------

export async function readLedgerEnd(q: Queryable): Promise<bigint> {
  const row = await q.one<{ ledger_end: bigint }>("SELECT ledger_end FROM participant_ledger_end");
  return row.ledger_end;
}

/** Hands out the next offset; the new ledger end commits with the handler's clean timestamp. */
export async function nextOffset(tx: Queryable): Promise<bigint> {
  const row = await tx.one<{ ledger_end: bigint }>(
    "UPDATE participant_ledger_end SET ledger_end = ledger_end + 1 RETURNING ledger_end",
  );
  return row.ledger_end;
}

// --- contracts ---------------------------------------------------------------------------------

interface ContractRow {
  contract_id: string;
  template: string;
  arguments: string;
  signatories: string[];
  observers: string[];
  created_at: bigint;
  salt: string;
  created_offset: bigint;
}

export interface StoredContract extends ActiveContract {
  readonly createdOffset: bigint;
}

const CONTRACT_COLUMNS =
  "contract_id, template, arguments, signatories, observers, created_at, salt, created_offset";

function toContract(row: ContractRow): StoredContract {
  return {
    contractId: row.contract_id,
    template: row.template,
    arguments: JSON.parse(row.arguments) as LedgerRecord,
    signatories: row.signatories,
    observers: row.observers,
    createdAt: row.created_at,
    salt: row.salt,
    createdOffset: row.created_offset,
  };
}

/** Active contracts among `ids` (with any hosted stakeholder). */
export async function activeContracts(q: Queryable, ids: readonly string[]): Promise<StoredContract[]> {
  if (ids.length === 0) return [];
  const rows = await q.query<ContractRow>(
    `SELECT ${CONTRACT_COLUMNS} FROM participant_contracts
     WHERE contract_id = ANY($1::text[]) AND archived_offset IS NULL`,
    [ids],
  );
  return rows.map(toContract);
}

/** The ids among `ids` that this participant has ever stored (active or archived). */
export async function knownContractIds(q: Queryable, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const rows = await q.query<{ contract_id: string }>(
    "SELECT contract_id FROM participant_contracts WHERE contract_id = ANY($1::text[])",
    [ids],
  );
  return rows.map((r) => r.contract_id);
}

export async function insertContracts(
  tx: Queryable,
  contracts: readonly ActiveContract[],
  offset: bigint,
): Promise<void> {
  for (const c of contracts) {
    await tx.execute(
      `INSERT INTO participant_contracts (${CONTRACT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [
        c.contractId,
        c.template,
        ledgerJson(c.arguments),
        [...c.signatories],
        [...c.observers],
        c.createdAt,
        c.salt,
        offset,
      ],
    );
  }
}

export async function archiveContracts(tx: Queryable, ids: readonly string[], offset: bigint): Promise<void> {
  if (ids.length === 0) return;
  await tx.execute(
    `UPDATE participant_contracts SET archived_offset = $2
     WHERE contract_id = ANY($1::text[]) AND archived_offset IS NULL`,
    [ids, offset],
  );
}

/** The contracts of which one of `parties` is a stakeholder, active at `offset`. */
export async function contractsActiveAt(
  q: Queryable,
  parties: readonly string[],
  offset: bigint,
  template?: string,
): Promise<StoredContract[]> {
  const rows = await q.query<ContractRow>(
    `SELECT ${CONTRACT_COLUMNS} FROM participant_contracts
     WHERE created_offset <= $2 AND (archived_offset IS NULL OR archived_offset > $2)
       AND (signatories || observers) && $1::text[] AND ($3::text IS NULL OR template = $3)
     ORDER BY created_offset, contract_id`,
    [[...parties], offset, template ?? null],
  );
  return rows.map(toContract);
}

/** Every contract active at the ledger end, for integrity checks (ACS recomputed from updates). */
export async function allActiveContracts(q: Queryable): Promise<StoredContract[]> {
  const rows = await q.query<ContractRow>(
    `SELECT ${CONTRACT_COLUMNS} FROM participant_contracts WHERE archived_offset IS NULL ORDER BY contract_id`,
  );
  return rows.map(toContract);
}

// --- updates -----------------------------------------------------------------------------------

export interface StoredUpdate {
  readonly offset: bigint;
  readonly updateId: string;
  /** Null for a repair (`lockstep repair add/purge`): no confirmation request committed it. */
  readonly requestId: Micros | null;
  readonly recordTime: Micros;
  readonly ledgerTime: Micros;
  readonly commandId: string;
  readonly actAs: readonly string[];
  readonly informees: readonly string[];
  readonly view: TransactionView;
}

export async function insertUpdate(tx: Queryable, u: StoredUpdate): Promise<void> {
  await tx.execute(
    `INSERT INTO participant_updates
       (ledger_offset, update_id, request_id, record_time, ledger_time, command_id, act_as, informees, view)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [
      u.offset,
      u.updateId,
      u.requestId,
      u.recordTime,
      u.ledgerTime,
      u.commandId,
      [...u.actAs],
      [...u.informees],
      viewToText(u.view),
    ],
  );
}

/** Updates after `after` up to `upTo` in which one of `parties` is an informee (all when parties is undefined). */
export async function readUpdates(
  q: Queryable,
  after: bigint,
  upTo: bigint,
  parties: readonly string[] | undefined,
  limit = 200,
): Promise<StoredUpdate[]> {
  const rows = await q.query<{
    ledger_offset: bigint;
    update_id: string;
    request_id: bigint | null;
    record_time: bigint;
    ledger_time: bigint;
    command_id: string;
    act_as: string[];
    informees: string[];
    view: string;
  }>(
    `SELECT * FROM participant_updates
     WHERE ledger_offset > $1 AND ledger_offset <= $2 AND ($3::text[] IS NULL OR informees && $3::text[])
     ORDER BY ledger_offset LIMIT $4`,
    [after, upTo, parties ? [...parties] : null, limit],
  );
  return rows.map((r) => ({
    offset: r.ledger_offset,
    updateId: r.update_id,
    requestId: r.request_id,
    recordTime: r.record_time,
    ledgerTime: r.ledger_time,
    commandId: r.command_id,
    actAs: r.act_as,
    informees: r.informees,
    view: viewFromText(r.view),
  }));
}

const contractToWire = (c: ActiveContract) => ({ ...c, createdAt: c.createdAt.toString() });
const contractFromWire = (c: ActiveContract & { createdAt: string | bigint }): ActiveContract => ({
  ...c,
  createdAt: BigInt(c.createdAt),
});

export function viewToText(view: TransactionView): string {
  return ledgerJson({
    ...view,
    ledgerTime: view.ledgerTime.toString(),
    inputContracts: view.inputContracts.map(contractToWire),
    createdContracts: view.createdContracts.map(contractToWire),
  });
}

export function viewFromText(text: string): TransactionView {
  const json = JSON.parse(text) as TransactionView & { ledgerTime: string };
  return {
    ...json,
    ledgerTime: BigInt(json.ledgerTime),
    inputContracts: json.inputContracts.map(contractFromWire),
    createdContracts: json.createdContracts.map(contractFromWire),
  };
}

// --- synchronizer migrations (written by synchronizer-migration.ts) ----------------------------

/** The migration markers after `after` up to `upTo`: what the update and completion streams carry. */
export async function readMigrationMarkers(
  q: Queryable,
  after: bigint,
  upTo: bigint,
  limit = 200,
): Promise<SynchronizerMigrationMarker[]> {
  const rows = await q.query<{
    ledger_offset: bigint;
    from_synchronizer: string;
    to_synchronizer: string;
    migrated_at: bigint;
    forced: boolean;
    contracts_moved: bigint;
    abandoned_command_ids: string[];
  }>(
    `SELECT ledger_offset, from_synchronizer, to_synchronizer, migrated_at, forced, contracts_moved,
       abandoned_command_ids
     FROM participant_synchronizer_migrations WHERE ledger_offset > $1 AND ledger_offset <= $2
     ORDER BY ledger_offset LIMIT $3`,
    [after, upTo, limit],
  );
  return rows.map((r) => ({
    kind: "synchronizer-migration",
    offset: r.ledger_offset,
    fromSynchronizerId: r.from_synchronizer,
    toSynchronizerId: r.to_synchronizer,
    migratedAt: r.migrated_at,
    forced: r.forced,
    contractsMoved: r.contracts_moved,
    abandonedCommandIds: r.abandoned_command_ids,
  }));
}

// --- completions and deduplication ---------------------------------------------------------------

export interface StoredCompletion extends Completion {
  readonly changeId: string;
}

export async function insertCompletion(tx: Queryable, c: StoredCompletion): Promise<void> {
  await tx.execute(
    `INSERT INTO participant_completions (ledger_offset, change_id, user_id, command_id, submission_id, act_as,
       error, update_id, dedup_period, record_time)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
    [
      c.offset,
      c.changeId,
      c.userId,
      c.commandId,
      c.submissionId,
      [...c.actAs],
      c.status.kind === "failed" ? JSON.stringify(c.status.error) : null,
      c.updateId ?? null,
      periodToText(c.deduplicationPeriod),
      c.recordTime,
    ],
  );
  if (c.status.kind === "succeeded") {
    await tx.execute(
      `INSERT INTO participant_command_deduplication (change_id, ledger_offset, record_time, submission_id)
       VALUES ($1, $2, $3, $4)
       ON CONFLICT (change_id) DO UPDATE SET ledger_offset = $2, record_time = $3, submission_id = $4`,
      [c.changeId, c.offset, c.recordTime, c.submissionId],
    );
  }
}

interface CompletionRow {
  ledger_offset: bigint;
  change_id: string;
  user_id: string;
  command_id: string;
  submission_id: string;
  act_as: string[];
  error: string | null;
  update_id: string | null;
  dedup_period: string;
  record_time: bigint;
}

function toCompletion(r: CompletionRow): StoredCompletion {
  return {
    changeId: r.change_id,
    commandId: r.command_id,
    submissionId: r.submission_id,
    userId: r.user_id,
    actAs: r.act_as,
    status:
      r.error === null ? { kind: "succeeded" } : { kind: "failed", error: JSON.parse(r.error) as ErrorJson },
    ...(r.update_id !== null ? { updateId: r.update_id } : {}),
    offset: r.ledger_offset,
    deduplicationPeriod: periodFromText(r.dedup_period),
    recordTime: r.record_time,
  };
}

export async function readCompletions(
  q: Queryable,
  userId: string,
  parties: readonly string[],
  after: bigint,
  upTo: bigint,
  limit = 200,
): Promise<StoredCompletion[]> {
  const rows = await q.query<CompletionRow>(
    `SELECT * FROM participant_completions
     WHERE user_id = $1 AND act_as && $2::text[] AND ledger_offset > $3 AND ledger_offset <= $4
     ORDER BY ledger_offset LIMIT $5`,
    [userId, [...parties], after, upTo, limit],
  );
  return rows.map(toCompletion);
}

/**
 * One submission as SubmitAndWait tracks it: its id and its change id (user, command id, act-as).
 * The submission id alone is the client's word and may be another user's: Canton's SubmissionTracker
 * keys by SubmissionKey(commandId, submissionId, userId, parties) for that reason. Even both may name
 * an earlier, completed submission (an application resubmitting a rejected command with the same
 * submission id): only a completion after `afterOffset`, the last one of the key when this
 * submission registered, is this submission's.
 */
export interface SubmissionKey {
  readonly submissionId: string;
  readonly changeId: string;
  readonly afterOffset: bigint;
}

export const submissionKeyString = (k: SubmissionKey): string =>
  `${k.submissionId}\n${k.changeId}\n${k.afterOffset}`;

/** The first completion after its bound of each of these submissions that has one (one query for many waiters). */
export async function completionsOfSubmissions(
  q: Queryable,
  keys: readonly SubmissionKey[],
): Promise<Map<string, StoredCompletion>> {
  const rows = await q.query<CompletionRow & { key_index: string }>(
    `SELECT DISTINCT ON (k.i) c.*, k.i AS key_index
       FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS k(submission_id, change_id, after_offset, i)
       JOIN participant_completions c
         ON c.submission_id = k.submission_id AND c.change_id = k.change_id AND c.ledger_offset > k.after_offset
      ORDER BY k.i, c.ledger_offset`,
    [keys.map((k) => k.submissionId), keys.map((k) => k.changeId), keys.map((k) => k.afterOffset.toString())],
  );
  return new Map(
    rows.map((r) => [submissionKeyString(keys[Number(r.key_index) - 1] as SubmissionKey), toCompletion(r)]),
  );
}

/** The offset of the last completion of a submission id and change id, -1 if none. */
export async function lastCompletionOffset(
  q: Queryable,
  submissionId: string,
  changeId: string,
): Promise<bigint> {
  const row = await q.maybeOne<{ last: string | null }>(
    `SELECT max(ledger_offset)::text AS last FROM participant_completions
      WHERE submission_id = $1 AND change_id = $2`,
    [submissionId, changeId],
  );
  return row?.last == null ? -1n : BigInt(row.last);
}

export async function acceptedCompletion(
  q: Queryable,
  changeId: string,
): Promise<AcceptedCompletion | undefined> {
  const row = await q.maybeOne<{ ledger_offset: bigint; record_time: bigint; submission_id: string }>(
    "SELECT ledger_offset, record_time, submission_id FROM participant_command_deduplication WHERE change_id = $1",
    [changeId],
  );
  return row && { offset: row.ledger_offset, recordTime: row.record_time, submissionId: row.submission_id };
}

// --- parties ----------------------------------------------------------------------------------

export async function recordParty(q: Queryable, party: string, displayName: string): Promise<void> {
  await q.execute(
    `INSERT INTO participant_parties (party, display_name) VALUES ($1, $2)
     ON CONFLICT (party) DO UPDATE SET display_name = CASE WHEN $2 = '' THEN participant_parties.display_name ELSE $2 END`,
    [party, displayName],
  );
}

export async function displayNames(q: Queryable): Promise<Map<string, string>> {
  const rows = await q.query<{ party: string; display_name: string }>(
    "SELECT party, display_name FROM participant_parties",
  );
  return new Map(rows.map((r) => [r.party, r.display_name]));
}
