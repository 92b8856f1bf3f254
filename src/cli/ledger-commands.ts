import { readFileSync } from "node:fs";
import type { DescService, JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { type CallOptions, type Client, Code, ConnectError } from "@connectrpc/connect";
import type { Command } from "commander";
import type { ParticipantConfig } from "../common/config-schema.ts";
import { fromConnectError } from "../common/connect-errors.ts";
import { DurationFormatError, parseDuration } from "../common/duration.ts";
import { LockstepError } from "../common/errors.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { CommandService } from "../gen/lockstep/ledger/v1/command_service_pb.ts";
import type { CommandsSchema } from "../gen/lockstep/ledger/v1/commands_pb.ts";
import type { Contract } from "../gen/lockstep/ledger/v1/event_pb.ts";
import { PartyManagementService } from "../gen/lockstep/ledger/v1/party_management_service_pb.ts";
import { StateService } from "../gen/lockstep/ledger/v1/state_service_pb.ts";
import { findNode, loadCliConfig, outputFor } from "./cli-context.ts";
import { registerLedgerUserCommands } from "./ledger-user-commands.ts";
import { table } from "./output.ts";

/** docs/cli.md: `ledger submit --user-id` defaults to this. */
export const DEFAULT_CLI_USER_ID = "lockstep-cli";

/** A contract as `ledger acs --json` prints it (docs/cli.md). */
export interface AcsContractJson {
  contractId: string;
  template: string;
  arguments: JsonObject;
  signatories: string[];
  observers: string[];
  createdOffset: string;
}

export interface ParticipantTarget {
  name: string;
  address: string;
  /** Headers of every call: the access token, when one was given (docs/security.md). */
  options: CallOptions;
  /** Whether a token goes with the calls (then an absent user id is the token's). */
  hasToken: boolean;
  /** The participant's config entry (`ledger token` reads its auth). */
  config: ParticipantConfig;
}

/** The environment variable `ledger …` reads an access token from when neither flag gives one. */
export const LEDGER_TOKEN_ENV = "LOCKSTEP_LEDGER_TOKEN";

/** `ledger --token JWT`, else `--token-file FILE`, else $LOCKSTEP_LEDGER_TOKEN; undefined for none. */
export function ledgerToken(command: Command): string | undefined {
  const opts = command.optsWithGlobals() as { token?: string; tokenFile?: string };
  if (opts.token) return opts.token.trim();
  if (opts.tokenFile) {
    try {
      return readFileSync(opts.tokenFile, "utf8").trim();
    } catch (error) {
      throw new LockstepError("INVALID_ARGUMENT", {
        details: `--token-file ${opts.tokenFile}: ${(error as Error).message}`,
      });
    }
  }
  return process.env[LEDGER_TOKEN_ENV]?.trim() || undefined;
}

/** The participant's Ledger API address, from the config; NODE_UNKNOWN for a name that is not a participant. */
export async function participantTarget(command: Command, name: string): Promise<ParticipantTarget> {
  const loaded = await loadCliConfig(command);
  const entry = findNode(loaded, name);
  if (entry.kind !== "participant") {
    const known = loaded.config.participants.map((p) => p.name).join(", ");
    throw new LockstepError("NODE_UNKNOWN", { node: name, known });
  }
  const token = ledgerToken(command);
  return {
    name,
    address: nodeEndpoint(entry).url,
    options: token ? { headers: { authorization: `Bearer ${token}` } } : {},
    hasToken: token !== undefined,
    config: entry.config as ParticipantConfig,
  };
}

/**
 * Runs one Ledger API call, turning what comes back into the LockstepError the node threw, or
 * NODE_NOT_RUNNING when nobody answers at the participant's port.
 */
export async function ledgerCall<S extends DescService, T>(
  target: ParticipantTarget,
  service: S,
  call: (client: Client<S>) => Promise<T>,
): Promise<T> {
  try {
    return await call(createNodeClient(service, target.address));
  } catch (error) {
    const lockstep = fromConnectError(error);
    if (lockstep) throw lockstep;
    // Our own deadline fired before the participant's answer arrived.
    if (error instanceof ConnectError && error.code === Code.DeadlineExceeded) {
      throw new LockstepError(
        "REQUEST_TIME_OUT",
        { reason: `no answer from ${target.name} before the deadline` },
        { cause: error },
      );
    }
    if (error instanceof ConnectError && error.code === Code.Unavailable) {
      throw new LockstepError(
        "NODE_NOT_RUNNING",
        { node: target.name, address: target.address },
        { cause: error },
      );
    }
    throw error;
  }
}

/** `--args JSON`: a JSON object, else INVALID_ARGUMENT (exit 2) naming the flag. */
export function parseArgsFlag(text: string | undefined, flag = "--args"): JsonObject | undefined {
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `${flag} is not valid JSON: ${(error as Error).message}`,
    });
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new LockstepError("INVALID_ARGUMENT", { details: `${flag} must be a JSON object` });
  }
  return value as JsonObject;
}

type CommandsInit = MessageInitShape<typeof CommandsSchema>;

interface SubmitFlags {
  participant: string;
  actAs: string[];
  commandId: string;
  userId?: string;
  submissionId?: string;
  dedup?: string;
  create?: string;
  exercise?: string;
  choice?: string;
  args?: string;
  timeout?: string;
}

/** `ledger submit --timeout`: the call's deadline in ms (sent to the participant), undefined when absent. */
export function timeoutFromFlag(timeout: string | undefined): number | undefined {
  if (timeout === undefined) return undefined;
  try {
    return parseDuration(timeout);
  } catch (error) {
    if (error instanceof DurationFormatError)
      throw new LockstepError("INVALID_ARGUMENT", { details: `--timeout: ${error.message}` });
    throw error;
  }
}

/** The Commands message of `ledger submit`, validating the flag combinations (INVALID_ARGUMENT → exit 2). */
export function commandsFromFlags(flags: SubmitFlags): CommandsInit {
  const usage = (details: string) => new LockstepError("INVALID_ARGUMENT", { details });
  if (Boolean(flags.create) === Boolean(flags.exercise))
    throw usage("give exactly one of --create TEMPLATE or --exercise CONTRACT_ID");
  if (flags.exercise && !flags.choice) throw usage("--exercise needs --choice NAME");
  if (flags.create && flags.choice) throw usage("--choice goes with --exercise, not --create");
  if (flags.create && flags.args === undefined) throw usage("--create needs --args JSON");
  const args = parseArgsFlag(flags.args);
  let deduplicationPeriod: CommandsInit["deduplicationPeriod"] = { case: undefined };
  if (flags.dedup !== undefined) {
    try {
      deduplicationPeriod = {
        case: "deduplicationDuration",
        value: durationFromMs(parseDuration(flags.dedup)),
      };
    } catch (error) {
      if (error instanceof DurationFormatError) throw usage(`--dedup: ${error.message}`);
      throw error;
    }
  }
  const command: CommandsInit["command"] = flags.create
    ? { case: "create", value: { template: flags.create, createArguments: args } }
    : { case: "exercise", value: { contractId: flags.exercise, choice: flags.choice, choiceArgument: args } };
  return {
    userId: flags.userId ?? DEFAULT_CLI_USER_ID,
    commandId: flags.commandId,
    submissionId: flags.submissionId ?? "",
    actAs: flags.actAs,
    deduplicationPeriod,
    command,
  };
}

export function contractJson(c: Contract): AcsContractJson {
  return {
    contractId: c.contractId,
    template: c.template,
    arguments: c.arguments ?? {},
    signatories: c.signatories,
    observers: c.observers,
    createdOffset: c.createdOffset.toString(),
  };
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function registerLedgerCommands(program: Command): void {
  const ledger = program
    .command("ledger")
    .description("use a participant's Ledger API")
    .option(
      "--token <jwt>",
      `an access token for the Ledger API (else --token-file, else $${LEDGER_TOKEN_ENV})`,
    )
    .option("--token-file <file>", "a file holding the access token");

  ledger
    .command("allocate-party <name>")
    .description("allocate a party hosted on the participant; prints the party id")
    .requiredOption("--participant <name>", "the participant that hosts the party")
    .option("--display-name <text>", "a display name for the party")
    .action(async (name: string, opts: { participant: string; displayName?: string }, command: Command) => {
      const out = outputFor(command);
      const target = await participantTarget(command, opts.participant);
      const response = await ledgerCall(target, PartyManagementService, (c) =>
        c.allocateParty({ partyIdHint: name, displayName: opts.displayName ?? "" }, target.options),
      );
      out.result({ party: response.party }, () => response.party);
    });

  ledger
    .command("submit")
    .description("submit a command and wait for its outcome")
    .requiredOption("--participant <name>", "the participant to submit to")
    .requiredOption("--act-as <party>", "a party the command acts as (repeatable)", collect)
    .requiredOption("--command-id <id>", "the application's command id (deduplication key)")
    .option(
      "--user-id <id>",
      `the application's user id (default: the token's user, without a token ${DEFAULT_CLI_USER_ID})`,
    )
    .option("--submission-id <id>", "this submission attempt's id (generated when absent)")
    .option("--dedup <duration>", "deduplication period, e.g. 30s (the participant's maximum when absent)")
    .option("--create <template>", "create a contract of this template, e.g. Iou")
    .option("--exercise <contractId>", "exercise a choice on this contract")
    .option("--choice <name>", "the choice to exercise, e.g. Transfer")
    .option("--args <json>", "contract or choice arguments as a JSON object")
    .option(
      "--timeout <duration>",
      "give up waiting after this long, e.g. 30s (REQUEST_TIME_OUT; the participant's default: 5m)",
    )
    .action(async (opts: SubmitFlags, command: Command) => {
      const out = outputFor(command);
      const timeoutMs = timeoutFromFlag(opts.timeout);
      const target = await participantTarget(command, opts.participant);
      // With a token, an absent user id is the token's (the participant fills it in, as Canton's).
      const commands = commandsFromFlags({
        ...opts,
        userId: opts.userId ?? (target.hasToken ? "" : undefined),
      });
      const r = await ledgerCall(target, CommandService, (c) =>
        c.submitAndWait({ commands }, { ...target.options, timeoutMs }),
      );
      const result = {
        updateId: r.updateId,
        offset: r.offset.toString(),
        createdContractIds: r.createdContractIds,
        archivedContractIds: r.archivedContractIds,
      };
      out.result(result, () =>
        [
          `committed update ${r.updateId} at offset ${r.offset}`,
          ...r.createdContractIds.map((id) => `  created  ${id}`),
          ...r.archivedContractIds.map((id) => `  archived ${id}`),
        ].join("\n"),
      );
    });

  ledger
    .command("acs")
    .description("the active contracts of a party")
    .requiredOption("--participant <name>", "the participant to ask")
    .requiredOption("--party <party>", "a stakeholder party (repeatable)", collect)
    .option("--template <name>", "only contracts of this template")
    .action(async (opts: { participant: string; party: string[]; template?: string }, command: Command) => {
      const out = outputFor(command);
      const target = await participantTarget(command, opts.participant);
      const r = await ledgerCall(target, StateService, (c) =>
        c.getActiveContracts({ parties: opts.party, template: opts.template ?? "" }, target.options),
      );
      const contracts = r.contracts.map(contractJson);
      out.result({ contracts, offset: r.offset.toString() }, () =>
        contracts.length === 0
          ? `no active contracts at offset ${r.offset}`
          : table(
              ["CONTRACT", "TEMPLATE", "ARGUMENTS", "SIGNATORIES"],
              contracts.map((c) => [
                `${c.contractId.slice(0, 14)}…`,
                c.template,
                JSON.stringify(c.arguments),
                c.signatories.join(","),
              ]),
            ),
      );
    });

  ledger
    .command("end")
    .description("the ledger end offset and the participant's incarnation")
    .requiredOption("--participant <name>", "the participant to ask")
    .action(async (opts: { participant: string }, command: Command) => {
      const out = outputFor(command);
      const target = await participantTarget(command, opts.participant);
      const r = await ledgerCall(target, StateService, (c) => c.getLedgerEnd({}, target.options));
      out.result(
        { offset: r.offset.toString(), incarnation: r.incarnation },
        () => `offset ${r.offset}, incarnation ${r.incarnation}`,
      );
    });

  registerLedgerUserCommands(ledger);
}
