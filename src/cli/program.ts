import { ConnectError } from "@connectrpc/connect";
import { Command, CommanderError } from "commander";
import { fromConnectError } from "../common/connect-errors.ts";
import { LockstepError } from "../common/errors.ts";
import { tlsHandshakeFailure } from "../common/tls-diagnosis.ts";
import { LOCKSTEP_VERSION } from "../common/version.ts";
import { registerBackupCommands } from "./backup-commands.ts";
import { registerCheckpointCommands } from "./checkpoint-commands.ts";
import { registerConfigCommands } from "./config-command.ts";
import { registerDemoCommand } from "./demo-command.ts";
import { registerFailoverCommand } from "./failover-command.ts";
import { registerKeysCommands } from "./keys-commands.ts";
import { registerLedgerCommands } from "./ledger-commands.ts";
import { registerNodeCommands } from "./node-commands.ts";
import { Output, wasReported } from "./output.ts";
import { registerRepairCommands } from "./repair-commands.ts";
import { registerReplicationCommand } from "./replication-command.ts";
import { registerRestoreCommands } from "./restore-commands.ts";
import { registerSequencerCommands } from "./sequencer-commands.ts";
import { registerStatusCommand } from "./status-command.ts";
import { registerSynchronizerCommands } from "./synchronizer-commands.ts";
import { registerTlsCommands } from "./tls-commands.ts";

/** Every (sub)command throws instead of exiting, so usage errors come back to runCli for exit code 2. */
function overrideExits(command: Command): void {
  for (const sub of command.commands) {
    sub.exitOverride();
    overrideExits(sub);
  }
}

export function buildProgram(): Command {
  const program = new Command("lockstep")
    .description("Run, back up and restore a Canton-style synchronized ledger")
    .version(LOCKSTEP_VERSION)
    .option("--config <file>", "config file (default ./lockstep.yaml, or $LOCKSTEP_CONFIG)")
    .option("--json", "one JSON document on stdout; human text and progress go to stderr")
    .showHelpAfterError()
    .exitOverride();
  registerConfigCommands(program);
  registerNodeCommands(program);
  registerStatusCommand(program);
  registerSequencerCommands(program);
  registerSynchronizerCommands(program);
  registerLedgerCommands(program);
  registerRestoreCommands(program);
  registerBackupCommands(program);
  registerCheckpointCommands(program);
  registerKeysCommands(program);
  registerTlsCommands(program);
  registerReplicationCommand(program);
  registerFailoverCommand(program);
  registerRepairCommands(program);
  registerDemoCommand(program);
  overrideExits(program);
  return program;
}

/** Runs the CLI and returns the exit code of docs/cli.md: 0 done, 1 failed, 2 usage/config, 3 refused by a safety check. */
export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  const json = argv.includes("--json");
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (error) {
    // The one place an exit code is decided: from the error's category (LockstepError.exitCode).
    if (wasReported(error)) return error.exitCode;
    if (error instanceof CommanderError) {
      if (error.code === "commander.helpDisplayed" || error.code === "commander.version") return 0;
      if (error.code === "commander.help") return 0;
      if (json)
        return new Output(true).failure(new LockstepError("INVALID_ARGUMENT", { details: error.message }));
      return 2;
    }
    // A node's own error comes back as a ConnectError: show its code and remedy, not INTERNAL_ERROR.
    return new Output(json).failure(
      fromConnectError(error) ?? unreachableNode(error) ?? (await tlsHandshakeFailure(error)) ?? error,
    );
  }
}

/** A refused connection means the node is not running: say so, with how to start it. */
function unreachableNode(error: unknown): LockstepError | undefined {
  const cause = (error as { cause?: { code?: string; address?: string; port?: number } })?.cause;
  if (error instanceof ConnectError && cause?.code === "ECONNREFUSED") {
    return new LockstepError("NODE_UNREACHABLE", { address: `${cause.address}:${cause.port}` });
  }
  return undefined;
}
