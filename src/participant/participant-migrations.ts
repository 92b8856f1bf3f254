import type { Migration } from "../storage/migrations.ts";
import { userManagementMigration } from "./user-store.ts";

/**
 * The participant's schema (versions 400–499). Everything but the local party metadata and the
 * in-flight registrations is written by the sequencer client's event handler, in the transaction
 * that also records the clean timestamp: the ledger is a function of the sequenced events, so a
 * replay from clean after a crash rebuilds exactly the same rows.
 */
export const participantMigrations: readonly Migration[] = [
  {
    version: 400,
    name: "participant_ledger",
    sql: `
-- The ledger end: the last offset handed out (updates and rejection completions share offsets).
CREATE TABLE participant_ledger_end (
  singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  ledger_end  bigint NOT NULL
);
INSERT INTO participant_ledger_end (ledger_end) VALUES (0);

-- Committed transactions visible to a hosted party, as their projection to the hosted parties.
CREATE TABLE participant_updates (
  ledger_offset  bigint PRIMARY KEY,
  update_id      text NOT NULL UNIQUE,
  request_id     bigint NOT NULL UNIQUE,
  record_time    bigint NOT NULL,
  ledger_time    bigint NOT NULL,
  command_id     text NOT NULL,
  act_as         text[] NOT NULL,
  -- Every informee of the whole transaction (to select by requesting parties).
  informees      text[] NOT NULL,
  -- The TransactionView for the hosted parties, canonical JSON (bigints as strings).
  view           text NOT NULL
);

-- Contracts of hosted stakeholders; active while archived_offset is null. created/archived
-- offsets give the ACS at any offset.
CREATE TABLE participant_contracts (
  contract_id      text PRIMARY KEY,
  template         text NOT NULL,
  arguments        text NOT NULL,
  signatories      text[] NOT NULL,
  observers        text[] NOT NULL,
  created_at       bigint NOT NULL,
  salt             text NOT NULL,
  created_offset   bigint NOT NULL,
  archived_offset  bigint
);
CREATE INDEX participant_contracts_active ON participant_contracts (created_offset) WHERE archived_offset IS NULL;

-- Completions of this participant's submissions, per user (Canton's command completion stream).
CREATE TABLE participant_completions (
  ledger_offset   bigint PRIMARY KEY,
  change_id       text NOT NULL,
  user_id         text NOT NULL,
  command_id      text NOT NULL,
  submission_id   text NOT NULL,
  act_as          text[] NOT NULL,
  -- null when the command succeeded, else the ErrorJson of the rejection.
  error           text,
  update_id       text,
  dedup_period    text NOT NULL,
  record_time     bigint NOT NULL
);
CREATE INDEX participant_completions_user ON participant_completions (user_id, ledger_offset);
CREATE INDEX participant_completions_submission ON participant_completions (submission_id);

-- Canton's command deduplication state: the last accepted completion per change id.
CREATE TABLE participant_command_deduplication (
  change_id       text PRIMARY KEY,
  ledger_offset   bigint NOT NULL,
  record_time     bigint NOT NULL,
  submission_id   text NOT NULL
);

-- Submissions registered and not yet completed (Canton's in_flight_submission), by change id.
CREATE TABLE in_flight_submission (
  change_id            text PRIMARY KEY,
  user_id              text NOT NULL,
  command_id           text NOT NULL,
  act_as               text[] NOT NULL,
  submission_id        text NOT NULL,
  message_id           text NOT NULL UNIQUE,
  root_hash            bytea NOT NULL,
  max_sequencing_time  bigint NOT NULL,
  dedup_period         text NOT NULL,
  -- The sequencing timestamp of the confirmation request, once its receipt was processed.
  request_id           bigint UNIQUE,
  registered_at        timestamptz NOT NULL DEFAULT now()
);

-- Confirmation requests this participant validated, keyed by their sequencing timestamp.
CREATE TABLE participant_requests (
  request_id          bigint PRIMARY KEY,
  root_hash           bytea NOT NULL,
  sender              text NOT NULL,
  mediator            text NOT NULL,
  -- The serialized transaction; null when it did not parse.
  transaction         bytea,
  -- The hosted confirming parties this participant answers for (empty: no response).
  confirming_parties  text[] NOT NULL,
  -- null: approve; else {"code", "reason"}.
  local_rejection     text,
  state               text NOT NULL CHECK (state IN ('pending', 'committed', 'rejected')),
  response_sequenced  boolean NOT NULL DEFAULT false,
  decided_at          bigint
);
CREATE INDEX participant_requests_pending ON participant_requests (request_id) WHERE state = 'pending';

-- Contracts locked by a pending request (Canton's conflict detection): released on its verdict.
CREATE TABLE participant_locks (
  contract_id  text PRIMARY KEY,
  request_id   bigint NOT NULL
);
CREATE INDEX participant_locks_request ON participant_locks (request_id);

-- Local metadata of the parties allocated here (the hosting itself is topology).
CREATE TABLE participant_parties (
  party         text PRIMARY KEY,
  display_name  text NOT NULL,
  allocated_at  timestamptz NOT NULL DEFAULT now()
);
`,
  },
  {
    version: 401,
    name: "synchronizer_migrations_and_repairs",
    // Recovery from a lost synchronizer (docs/restore.md, "The synchronizer is lost or restored behind
    // the participants"): lockstep repair migrate-synchronizer moves the participant to another
    // synchronizer, lockstep repair add / purge fix contract-set differences. Both take ledger offsets
    // of their own, so offsets continue without reuse:
    // * a migration is a row here, at its offset (the marker the update and completion streams carry);
    // * a repair is an update of kind 'repair' (a transaction without command or request: it creates
    //   or archives one contract), so the update stream shows it as it shows any transaction.
    sql: `
CREATE TABLE participant_synchronizer_migrations (
  id                     bigserial PRIMARY KEY,
  ledger_offset          bigint NOT NULL UNIQUE,
  from_synchronizer      text NOT NULL,
  to_synchronizer        text NOT NULL,
  forced                 boolean NOT NULL,
  -- The migrating host's clock in micros (informational: no sequencer orders a migration).
  migrated_at            bigint NOT NULL,
  -- What the participant had of the old synchronizer (its client state is cleared by the migration).
  old_clean_timestamp    bigint,
  old_events             bigint NOT NULL,
  contracts_moved        bigint NOT NULL,
  -- Forced: the change ids and command ids of the submissions completed as abandoned, and the
  -- requests that were still unfinished (rolled back: their contracts unlocked, nothing committed).
  abandoned_change_ids   text[] NOT NULL DEFAULT '{}',
  abandoned_command_ids  text[] NOT NULL DEFAULT '{}',
  abandoned_requests     bigint[] NOT NULL DEFAULT '{}',
  -- Set once the participant re-announced its hosted parties on the new synchronizer.
  parties_announced_at   timestamptz
);

-- The synchronizer an active contract is assigned to; NULL: the participant's first synchronizer.
ALTER TABLE participant_contracts ADD COLUMN synchronizer_id text;

-- 'transaction': committed through the confirmation protocol; 'repair': lockstep repair add/purge.
ALTER TABLE participant_updates
  ADD COLUMN kind text NOT NULL DEFAULT 'transaction' CHECK (kind IN ('transaction', 'repair')),
  ALTER COLUMN request_id DROP NOT NULL;
`,
  },
  userManagementMigration,
];
