import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import type { Duration, Timestamp, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { LockstepError } from "../common/errors.ts";
import type { Micros } from "../common/time.ts";
import type { Commands } from "../gen/lockstep/ledger/v1/commands_pb.ts";
import type { CompletionSchema } from "../gen/lockstep/ledger/v1/completion_pb.ts";
import type { ContractSchema, TransactionSchema } from "../gen/lockstep/ledger/v1/event_pb.ts";
import type { SynchronizerMigrationSchema } from "../gen/lockstep/ledger/v1/synchronizer_migration_pb.ts";
import type {
  CommandSpec,
  Completion,
  ContractView,
  DeduplicationPeriod,
  LedgerEvent,
  SubmitCommands,
  SynchronizerMigrationMarker,
  Update,
} from "./ledger-api-backend.ts";

/**
 * Proto messages ↔ the LedgerApiBackend's plain types. Requests are checked here for what the
 * wire format cannot express (required fields, non-negative offsets) so the backend sees only
 * well-formed values; everything about ledger state is the backend's to judge.
 */

const MICROS_PER_SECOND = 1_000_000n;

function invalid(details: string): LockstepError {
  return new LockstepError("INVALID_ARGUMENT", { details });
}

export function timestampToMicros(ts: Timestamp): Micros {
  return ts.seconds * MICROS_PER_SECOND + BigInt(Math.floor(ts.nanos / 1000));
}

export function microsToTimestamp(micros: Micros): MessageInitShape<typeof TimestampSchema> {
  // Floor division, so that times before the epoch keep 0 ≤ nanos < 1e9 as the spec requires.
  let seconds = micros / MICROS_PER_SECOND;
  let rest = micros % MICROS_PER_SECOND;
  if (rest < 0n) {
    seconds -= 1n;
    rest += MICROS_PER_SECOND;
  }
  return { seconds, nanos: Number(rest) * 1000 };
}

export function durationToMs(d: Duration): number {
  return Number(d.seconds) * 1000 + Math.floor(d.nanos / 1_000_000);
}

function msToDuration(ms: number): { seconds: bigint; nanos: number } {
  const seconds = Math.trunc(ms / 1000);
  return { seconds: BigInt(seconds), nanos: Math.round((ms - seconds * 1000) * 1_000_000) };
}

/** Offsets on the wire are int64; negative ones mean nothing. */
export function checkOffset(offset: bigint, field: string): bigint {
  if (offset < 0n) throw invalid(`${field} must not be negative (got ${offset})`);
  return offset;
}

/**
 * Daml-LF's LedgerString and Party (ids, user ids, command ids) are at most 255 characters; Canton
 * refuses longer ones with INVALID_FIELD (RequestValidationErrors.InvalidField). Checked before
 * anything is stored, so a huge id never reaches the command deduplication tables.
 */
export const MAX_ID_LENGTH = 255;

export function checkIdLength(value: string, field: string): string {
  if (value.length > MAX_ID_LENGTH)
    throw new LockstepError("INVALID_FIELD", {
      fieldName: field,
      details: `${value.length} characters, at most ${MAX_ID_LENGTH} allowed`,
    });
  return value;
}

/** An empty proto3 string means "not set". */
export function optionalString(value: string): string | undefined {
  return value === "" ? undefined : value;
}

export function toSubmitCommands(commands: Commands | undefined): SubmitCommands {
  if (!commands) throw invalid("commands is required");
  if (!commands.userId) throw invalid("commands.user_id is required");
  if (!commands.commandId) throw invalid("commands.command_id is required");
  if (commands.actAs.length === 0) throw invalid("commands.act_as must name at least one party");
  checkIdLength(commands.userId, "commands.user_id");
  checkIdLength(commands.commandId, "commands.command_id");
  checkIdLength(commands.submissionId, "commands.submission_id");
  for (const party of commands.actAs) checkIdLength(party, "commands.act_as");
  for (const party of commands.readAs) checkIdLength(party, "commands.read_as");
  let deduplicationPeriod: DeduplicationPeriod | undefined;
  const dedup = commands.deduplicationPeriod;
  if (dedup.case === "deduplicationDuration") {
    const durationMs = durationToMs(dedup.value);
    // Canton's DeduplicationPeriodValidator.validateNonNegativeDuration: INVALID_FIELD, not a period error.
    if (durationMs < 0)
      throw new LockstepError("INVALID_FIELD", {
        fieldName: "deduplication_period",
        details: "Duration must be positive",
      });
    deduplicationPeriod = { kind: "duration", durationMs };
  } else if (dedup.case === "deduplicationOffset") {
    deduplicationPeriod = {
      kind: "offset",
      offset: checkOffset(dedup.value, "commands.deduplication_offset"),
    };
  }
  return {
    userId: commands.userId,
    commandId: commands.commandId,
    submissionId: optionalString(commands.submissionId),
    actAs: commands.actAs,
    readAs: commands.readAs,
    deduplicationPeriod,
    minLedgerTimeAbs: commands.minLedgerTimeAbs && timestampToMicros(commands.minLedgerTimeAbs),
    minLedgerTimeRelMs: commands.minLedgerTimeRel && durationToMs(commands.minLedgerTimeRel),
    ledgerTime: commands.ledgerTime && timestampToMicros(commands.ledgerTime),
    incarnation: optionalString(commands.incarnation),
    command: toCommandSpec(commands.command),
  };
}

function toCommandSpec(command: Commands["command"]): CommandSpec {
  switch (command.case) {
    case "create":
      if (!command.value.template) throw invalid("commands.create.template is required");
      // Absent arguments are the empty record; the template then names what is missing.
      return {
        kind: "create",
        template: command.value.template,
        arguments: command.value.createArguments ?? {},
      };
    case "exercise":
      if (!command.value.contractId) throw invalid("commands.exercise.contract_id is required");
      if (!command.value.choice) throw invalid("commands.exercise.choice is required");
      return {
        kind: "exercise",
        contractId: command.value.contractId,
        choice: command.value.choice,
        argument: command.value.choiceArgument,
      };
    default:
      throw invalid("commands must hold a create or an exercise command");
  }
}

function dedupToProto(
  period: DeduplicationPeriod,
): MessageInitShape<typeof CompletionSchema>["deduplicationPeriod"] {
  return period.kind === "duration"
    ? { case: "deduplicationDuration", value: msToDuration(period.durationMs) }
    : { case: "deduplicationOffset", value: period.offset };
}

export function completionToProto(c: Completion): MessageInitShape<typeof CompletionSchema> {
  return {
    commandId: c.commandId,
    submissionId: c.submissionId,
    userId: c.userId,
    actAs: [...c.actAs],
    status:
      c.status.kind === "succeeded"
        ? { case: "succeeded", value: {} }
        : {
            case: "failed",
            value: {
              code: c.status.error.code,
              message: c.status.error.message,
              retryable: c.status.error.retryable,
              remedy: c.status.error.remedy,
              metadata: c.status.error.metadata ?? {},
            },
          },
    updateId: c.updateId ?? "",
    offset: c.offset,
    deduplicationPeriod: dedupToProto(c.deduplicationPeriod),
    recordTime: microsToTimestamp(c.recordTime),
  };
}

export function contractToProto(c: ContractView): MessageInitShape<typeof ContractSchema> {
  return {
    contractId: c.contractId,
    template: c.template,
    // LedgerRecord is JSON by construction (ledger-value.ts); only readonly-ness differs.
    arguments: c.arguments as JsonObject,
    signatories: [...c.signatories],
    observers: [...c.observers],
    createdOffset: c.createdOffset,
    createdAt: microsToTimestamp(c.createdAt),
  };
}

function eventToProto(e: LedgerEvent) {
  return e.kind === "created"
    ? {
        event: {
          case: "created" as const,
          value: { contract: contractToProto(e.contract), witnessParties: [...e.witnessParties] },
        },
      }
    : {
        event: {
          case: "archived" as const,
          value: { contractId: e.contractId, template: e.template, witnessParties: [...e.witnessParties] },
        },
      };
}

export function transactionToProto(u: Update): MessageInitShape<typeof TransactionSchema> {
  return {
    updateId: u.updateId,
    commandId: u.commandId,
    offset: u.offset,
    effectiveAt: microsToTimestamp(u.effectiveAt),
    recordTime: microsToTimestamp(u.recordTime),
    events: u.events.map(eventToProto),
  };
}

export function migrationToProto(
  m: SynchronizerMigrationMarker,
): MessageInitShape<typeof SynchronizerMigrationSchema> {
  return {
    offset: m.offset,
    fromSynchronizerId: m.fromSynchronizerId,
    toSynchronizerId: m.toSynchronizerId,
    migratedAt: microsToTimestamp(m.migratedAt),
    forced: m.forced,
    contractsMoved: m.contractsMoved,
    abandonedSubmissions: BigInt(m.abandonedCommandIds.length),
  };
}
