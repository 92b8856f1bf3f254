import type { Command } from "commander";
import type { LoadedConfig } from "../common/config.ts";
import type { NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { createLogger, type Logger } from "../common/logging.ts";
import { isContractId } from "../ledger/contract.ts";
import { type AcsComparison, compareAcs, describeDifference } from "../participant/acs-compare.ts";
import {
  addContracts,
  purgeContracts,
  type RepairOutcome,
  readParticipantAcs,
  readParticipantDatabase,
  sourceContracts,
} from "../participant/acs-repair.ts";
import { withOfflineParticipant } from "../participant/offline-repair.ts";
import { findNode, loadCliConfig, outputFor } from "./cli-context.ts";
import { alreadyReported, table } from "./output.ts";

const collect = (value: string, previous: string[] = []) => [...previous, value];

function repairLogger(): Logger {
  return createLogger({ node: "repair", level: process.env.LOCKSTEP_LOG_LEVEL ?? "warn" });
}

function participantEntry(loaded: LoadedConfig, name: string): NodeEntry {
  const entry = findNode(loaded, name);
  if (entry.kind !== "participant") {
    throw new LockstepError("INVALID_ARGUMENT", { details: `${name} is a ${entry.kind}, not a participant` });
  }
  return entry;
}

function contractIds(ids: readonly string[]): string[] {
  const malformed = ids.find((id) => !isContractId(id));
  if (malformed !== undefined) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `--contract-id ${malformed} is not a contract id (00 and 64 hex digits)`,
    });
  }
  return [...ids];
}

export function comparisonText(c: AcsComparison): string {
  const [a, b] = c.participants;
  const head = `compared ${c.compared} shared contract(s) of ${a} and ${b}: ${c.differences.length === 0 ? "no difference" : `${c.differences.length} difference(s)`}`;
  if (c.differences.length === 0) return head;
  const rows = c.differences.map((d) => [d.contractId, d.kind, describeDifference(d)]);
  return [
    head,
    table(["CONTRACT", "KIND", "DIFFERENCE"], rows),
    "fix with the participant stopped: lockstep repair add P --from-participant Q --contract-id ID, or lockstep repair purge P --contract-id ID",
  ].join("\n");
}

export function repairText(r: RepairOutcome): string {
  const verb =
    r.operation === "add"
      ? `added to ${r.participant} from ${r.fromParticipant}`
      : `purged on ${r.participant}`;
  return [
    `${r.contracts.length} contract(s) ${verb}; ledger end ${r.ledgerEndBefore} → ${r.ledgerEnd}`,
    table(
      ["OFFSET", "CONTRACT", "TEMPLATE", "STAKEHOLDERS", "UPDATE"],
      r.contracts.map((c) => [
        String(c.offset),
        c.contractId,
        c.template,
        c.stakeholders.join(","),
        c.updateId,
      ]),
    ),
  ].join("\n");
}

/**
 * `lockstep repair compare-acs | add | purge` (docs/cli.md): after a synchronizer loss, find the
 * shared contracts two participants disagree on, and fix them as Canton's repair.add and
 * repair.purge do. compare-acs reads both databases (the participants may run); add and purge
 * work on a stopped participant's database (offline-repair.ts).
 */
export function registerRepairAcsCommands(repair: Command): void {
  repair
    .command("compare-acs")
    .description(
      "the shared contracts two participants disagree on, read from their databases (they may run): active on one only, archived on one, or with other content; exit 3 on any difference",
    )
    .argument("<participant1>", "participant name")
    .argument("<participant2>", "participant name")
    .action(async (first: string, second: string, _opts: unknown, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      if (first === second) throw new LockstepError("INVALID_ARGUMENT", { details: "name two participants" });
      const dataDir = loaded.config["data-dir"];
      const logger = repairLogger();
      const read = (entry: NodeEntry) =>
        readParticipantDatabase(entry, dataDir, logger, (q) => readParticipantAcs(q, entry.name));
      const [entryA, entryB] = [participantEntry(loaded, first), participantEntry(loaded, second)];
      const comparison = compareAcs(await read(entryA), await read(entryB));
      out.result(comparison, () => comparisonText(comparison));
      if (comparison.differences.length > 0) {
        throw alreadyReported(
          new LockstepError("ACS_DIFFERENCES_FOUND", { first, second, count: comparison.differences.length }),
        );
      }
    });

  repair
    .command("add")
    .description(
      "copy contracts from another participant's database into this stopped participant as active contracts, each at a new offset (refused when it has them already, active or archived)",
    )
    .argument("<participant>", "the participant to add to (stopped)")
    .requiredOption("--from-participant <name>", "the participant whose active contracts are copied")
    .requiredOption("--contract-id <id>", "a contract to copy (repeatable)", collect)
    .action(
      async (name: string, opts: { fromParticipant: string; contractId: string[] }, command: Command) => {
        const out = outputFor(command);
        const loaded = await loadCliConfig(command);
        const target = participantEntry(loaded, name);
        const from = participantEntry(loaded, opts.fromParticipant);
        if (from.name === target.name) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details: "--from-participant names the participant itself",
          });
        }
        const ids = contractIds(opts.contractId);
        const dataDir = loaded.config["data-dir"];
        const logger = repairLogger();
        const outcome = await withOfflineParticipant(
          target,
          dataDir,
          logger,
          "repair add",
          async ({ db }) => {
            const source = await readParticipantDatabase(from, dataDir, logger, (q) =>
              sourceContracts(q, ids),
            );
            return addContracts(db, {
              participant: name,
              fromParticipant: from.name,
              contractIds: ids,
              source,
            });
          },
        );
        out.result(outcome, () => repairText(outcome));
      },
    );

  repair
    .command("purge")
    .description("archive active contracts on this stopped participant, each at a new offset")
    .argument("<participant>", "the participant to purge on (stopped)")
    .requiredOption("--contract-id <id>", "a contract to archive (repeatable)", collect)
    .action(async (name: string, opts: { contractId: string[] }, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const target = participantEntry(loaded, name);
      const ids = contractIds(opts.contractId);
      const outcome = await withOfflineParticipant(
        target,
        loaded.config["data-dir"],
        repairLogger(),
        "repair purge",
        ({ db }) => purgeContracts(db, name, ids),
      );
      out.result(outcome, () => repairText(outcome));
    });
}
