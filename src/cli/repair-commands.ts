import type { Command } from "commander";
import { registerRepairAcsCommands } from "./repair-acs-commands.ts";
import { registerRepairSynchronizerCommands } from "./repair-synchronizer-commands.ts";

/**
 * `lockstep repair …` (docs/restore.md, "The synchronizer is lost or restored behind the
 * participants"): roll out a new synchronizer, migrate the participants to it, and compare and fix
 * their contract sets, as Canton's repair.migrate_synchronizer, repair.add and repair.purge do.
 */
export function registerRepairCommands(program: Command): void {
  const repair = program
    .command("repair")
    .description(
      "recover from a lost synchronizer: a new one, participants migrated, contract sets compared and fixed",
    );
  registerRepairSynchronizerCommands(repair);
  registerRepairAcsCommands(repair);
}
