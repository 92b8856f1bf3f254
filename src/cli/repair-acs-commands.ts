import type { Command } from "commander";

/** `lockstep repair compare-acs | add | purge` (docs/cli.md). */
export function registerRepairAcsCommands(_repair: Command): void {}
