import type { NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { newId } from "../common/ids.ts";
import type { Logger } from "../common/logging.ts";
import { type Micros, nowMicros } from "../common/time.ts";
import { type ActiveContract, contractIdMatches, stakeholdersOf } from "../ledger/contract.ts";
import type { CreateNode, ExerciseNode } from "../ledger/transaction.ts";
import type { TransactionView } from "../ledger/transaction-view.ts";
import { nodeConnection } from "../node/node-database.ts";
import type { Db, Queryable } from "../storage/db.ts";
import { createStorageDb } from "../storage/storage-db.ts";
import type { ParticipantAcs } from "./acs-compare.ts";
import {
  activeContracts,
  allActiveContracts,
  archiveContracts,
  displayNames,
  insertContracts,
  insertUpdate,
  nextOffset,
  readLedgerEnd,
} from "./participant-store.ts";
import { lockedContracts } from "./request-store.ts";
import { synchronizerMigrations } from "./synchronizer-migration.ts";

/**
 * `lockstep repair add | purge` (docs/restore.md, "The synchronizer is lost or restored behind the
 * participants"), as Canton's repair.add and repair.purge: contracts copied into, or archived on, a
 * participant that is disconnected (the caller holds it offline, offline-repair.ts). Each repaired
 * contract takes a ledger offset of its own with an update of kind 'repair' (a transaction without
 * command or request: it creates or archives that one contract), so offsets continue without reuse,
 * the update stream shows the repair, and the stored ACS stays the one the updates replay to.
 * One command is one database transaction: every contract is repaired, or none.
 *
 * Record time and ledger time of a repair are the repairing host's clock in micros: no sequencer
 * orders a repair. The created event of an added contract keeps the contract's own createdAt.
 */

export type RepairOperation = "add" | "purge";

export interface RepairedContract {
  readonly contractId: string;
  readonly template: string;
  readonly stakeholders: readonly string[];
  readonly offset: bigint;
  readonly updateId: string;
}

export interface RepairOutcome {
  readonly participant: string;
  readonly operation: RepairOperation;
  /** add: the participant the contracts were copied from. */
  readonly fromParticipant?: string;
  readonly ledgerEndBefore: bigint;
  readonly ledgerEnd: bigint;
  /** The host's clock when the repair ran: the record and ledger time of its updates. */
  readonly recordTime: Micros;
  readonly contracts: readonly RepairedContract[];
}

// --- reads (any participant, running or not) ---------------------------------------------------

/**
 * Runs `work` on a participant's database without any lock, in one read-only repeatable-read
 * transaction (a consistent snapshot even while the participant runs). INVALID_ARGUMENT when the
 * database holds no participant schema (never started, or the config names another database).
 */
export async function readParticipantDatabase<T>(
  entry: NodeEntry,
  dataDir: string,
  logger: Logger,
  work: (q: Queryable) => Promise<T>,
): Promise<T> {
  const connection = await nodeConnection(entry, dataDir, logger);
  const db = createStorageDb({
    connectionString: connection.url,
    applicationName: `lockstep-repair-read-${entry.name}`,
    max: 1,
    logger,
  });
  try {
    return await db.transaction(
      async (q) => {
        const schema = await q.one<{ table: string | null }>(
          "SELECT to_regclass('participant_contracts')::text AS table",
        );
        if (schema.table === null) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details: `${entry.name}'s database (${connection.description}) holds no participant ledger: the participant never started, or storage.url names another database`,
          });
        }
        return work(q);
      },
      { isolation: "repeatable read", readOnly: true },
    );
  } finally {
    await db.close();
  }
}

/** The parties the participant hosts (its participant_parties). */
export async function hostedParties(q: Queryable): Promise<Set<string>> {
  return new Set((await displayNames(q)).keys());
}

/** Of the contracts the participant ever stored among `ids` (all when undefined): id → archived offset or null. */
async function storedContracts(
  q: Queryable,
  ids: readonly string[] | undefined,
): Promise<Map<string, bigint | null>> {
  const rows = await q.query<{ contract_id: string; archived_offset: bigint | null }>(
    `SELECT contract_id, archived_offset FROM participant_contracts
     WHERE $1::text[] IS NULL OR contract_id = ANY($1::text[])`,
    [ids ? [...ids] : null],
  );
  return new Map(rows.map((r) => [r.contract_id, r.archived_offset]));
}

/** What compare-acs needs of one participant. */
export async function readParticipantAcs(q: Queryable, participant: string): Promise<ParticipantAcs> {
  const archived = new Map<string, bigint>();
  for (const [id, offset] of await storedContracts(q, undefined))
    if (offset !== null) archived.set(id, offset);
  return {
    participant,
    hostedParties: await hostedParties(q),
    active: (await allActiveContracts(q)).map(instanceOf),
    archived,
  };
}

/** The contract instance alone (a stored contract also carries its created offset). */
function instanceOf(c: ActiveContract): ActiveContract {
  const { contractId, template, arguments: args, signatories, observers, createdAt, salt } = c;
  return { contractId, template, arguments: args, signatories, observers, createdAt, salt };
}

/** The source's active contracts among `ids` (repair add reads them from the other participant). */
export async function sourceContracts(q: Queryable, ids: readonly string[]): Promise<ActiveContract[]> {
  return (await activeContracts(q, ids)).map(instanceOf);
}

// --- the update a repair writes -----------------------------------------------------------------

/**
 * The TransactionView of a repair, for the hosted parties: add creates the contract; purge
 * archives it as Canton's repair.purge does, by a consuming exercise of Archive by its signatories.
 */
export function repairView(
  operation: RepairOperation,
  contract: ActiveContract,
  hosted: ReadonlySet<string>,
  ledgerTime: Micros,
): TransactionView {
  const c = instanceOf(contract);
  const witnesses = stakeholdersOf(c).filter((p) => hosted.has(p));
  const node: CreateNode | ExerciseNode =
    operation === "add"
      ? {
          kind: "create",
          contractId: c.contractId,
          template: c.template,
          arguments: c.arguments,
          signatories: c.signatories,
          observers: c.observers,
        }
      : {
          kind: "exercise",
          contractId: c.contractId,
          template: c.template,
          choice: "Archive",
          argument: {},
          actingParties: c.signatories,
          consuming: true,
          signatories: c.signatories,
          observers: c.observers,
          children: [],
        };
  return {
    ledgerTime,
    nodes: [node],
    witnesses,
    inputContracts: operation === "add" ? [] : [c],
    createdContracts: operation === "add" ? [c] : [],
    archivedContracts: operation === "add" ? [] : [c.contractId],
  };
}

/** The update of one repair: no request, no command, no submitter; its informees the stakeholders. */
async function insertRepairUpdate(
  tx: Queryable,
  offset: bigint,
  updateId: string,
  time: Micros,
  contract: ActiveContract,
  view: TransactionView,
): Promise<void> {
  await insertUpdate(tx, {
    offset,
    updateId,
    requestId: null,
    recordTime: time,
    ledgerTime: time,
    commandId: "",
    actAs: [],
    informees: stakeholdersOf(contract),
    view,
  });
  await tx.execute("UPDATE participant_updates SET kind = 'repair' WHERE ledger_offset = $1", [offset]);
}

/**
 * One repair command in one transaction: `select` checks the request against the participant's
 * state and returns the contracts to repair (or throws, and nothing is written); then each takes
 * the next offset, in the given order.
 */
async function commitRepairs(
  db: Db,
  target: { participant: string; operation: RepairOperation; fromParticipant?: string; now: Micros },
  select: (tx: Queryable, hosted: ReadonlySet<string>) => Promise<ActiveContract[]>,
): Promise<RepairOutcome> {
  const { participant, operation, fromParticipant, now } = target;
  return db.transaction(
    async (tx) => {
      const hosted = await hostedParties(tx);
      const contracts = await select(tx, hosted);
      const ledgerEndBefore = await readLedgerEnd(tx);
      // An added contract is assigned where the participant's other active contracts are: to the
      // last migration's target, or (null) to its first synchronizer.
      const synchronizer =
        operation === "add" ? ((await synchronizerMigrations(tx)).at(-1)?.to ?? null) : null;
      const repaired: RepairedContract[] = [];
      for (const contract of contracts) {
        const offset = await nextOffset(tx);
        const updateId = `repair-${newId()}`;
        const view = repairView(operation, contract, hosted, now);
        await insertRepairUpdate(tx, offset, updateId, now, contract, view);
        if (operation === "purge") await archiveContracts(tx, [contract.contractId], offset);
        else {
          await insertContracts(tx, [contract], offset);
          if (synchronizer !== null) {
            await tx.execute("UPDATE participant_contracts SET synchronizer_id = $2 WHERE contract_id = $1", [
              contract.contractId,
              synchronizer,
            ]);
          }
        }
        repaired.push({
          contractId: contract.contractId,
          template: contract.template,
          stakeholders: stakeholdersOf(contract),
          offset,
          updateId,
        });
      }
      return {
        participant,
        operation,
        ...(fromParticipant ? { fromParticipant } : {}),
        ledgerEndBefore,
        ledgerEnd: await readLedgerEnd(tx),
        recordTime: now,
        contracts: repaired,
      };
    },
    { synchronousCommit: true },
  );
}

// --- add and purge --------------------------------------------------------------------------------

function conflict(operation: RepairOperation, contractId: string, participant: string, reason: string) {
  return new LockstepError("REPAIR_CONTRACT_CONFLICT", { operation, contractId, participant, reason });
}

/** Each id once, in the order given. */
function distinct(ids: readonly string[]): string[] {
  return [...new Set(ids)];
}

export interface AddRequest {
  readonly participant: string;
  readonly fromParticipant: string;
  readonly contractIds: readonly string[];
  /** The source participant's active contracts among contractIds (sourceContracts). */
  readonly source: readonly ActiveContract[];
  readonly now?: Micros;
}

/**
 * Copies the contracts into the (offline) participant's database as active contracts. Refused
 * (REPAIR_CONTRACT_CONFLICT, nothing written) when the source does not hold one active, when its
 * instance does not match its id, when the participant stored it already, active or archived (as
 * Canton's repair.add: an archived contract never becomes active again), or when the participant
 * hosts none of its stakeholders.
 */
export async function addContracts(db: Db, request: AddRequest): Promise<RepairOutcome> {
  const { participant, fromParticipant } = request;
  const source = new Map(request.source.map((c) => [c.contractId, c]));
  const target = { participant, operation: "add" as const, fromParticipant, now: request.now ?? nowMicros() };
  return commitRepairs(db, target, async (tx, hosted) => {
    const ids = distinct(request.contractIds);
    const stored = await storedContracts(tx, ids);
    return ids.map((id) => {
      const refuse = (reason: string) => conflict("add", id, participant, reason);
      const contract = source.get(id);
      if (!contract) throw refuse(`${fromParticipant} does not hold it as an active contract`);
      if (!contractIdMatches(contract))
        throw refuse(`its instance on ${fromParticipant} does not match its id`);
      const archivedOffset = stored.get(id);
      if (archivedOffset === null) throw refuse("it is already active there");
      if (archivedOffset !== undefined) {
        throw refuse(
          `it was archived there at offset ${archivedOffset}, and an archived contract never becomes active again`,
        );
      }
      const stakeholders = stakeholdersOf(contract);
      if (!stakeholders.some((p) => hosted.has(p))) {
        throw refuse(`it hosts none of its stakeholders (${stakeholders.join(", ")})`);
      }
      return contract;
    });
  });
}

/**
 * Archives active contracts on the (offline) participant. Refused (REPAIR_CONTRACT_CONFLICT,
 * nothing written) when one is not active there, or is locked by a pending request (one that was
 * unfinished when the participant stopped: its outcome is still to come, or to be rolled back).
 */
export async function purgeContracts(
  db: Db,
  participant: string,
  contractIds: readonly string[],
  now: Micros = nowMicros(),
): Promise<RepairOutcome> {
  return commitRepairs(db, { participant, operation: "purge", now }, async (tx) => {
    const ids = distinct(contractIds);
    const active = new Map((await activeContracts(tx, ids)).map((c) => [c.contractId, instanceOf(c)]));
    const stored = await storedContracts(tx, ids);
    const locked = new Set(await lockedContracts(tx, ids));
    return ids.map((id) => {
      const refuse = (reason: string) => conflict("purge", id, participant, reason);
      const contract = active.get(id);
      if (!contract) {
        const archivedOffset = stored.get(id);
        throw refuse(
          archivedOffset == null
            ? "it is not stored there"
            : `it is archived there already (offset ${archivedOffset})`,
        );
      }
      if (locked.has(id)) throw refuse("it is locked by a pending request");
      return contract;
    });
  });
}
