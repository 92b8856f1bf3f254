import type { Migration } from "../storage/migrations.ts";

/**
 * Schema of the sequencer client in the member's own database (mediator, participant): append to
 * the node kind's migrations. Versions 200–299 are the client's, clear of the kinds' own numbering
 * and of keyStoreMigrations (1000+).
 */
export const sequencerClientMigrations: readonly Migration[] = [
  {
    version: 200,
    name: "sequencer_client",
    sql: `
-- The member's registration with its synchronizer (one row; the member id is derived from the keys).
CREATE TABLE sequencer_client_registration (
  singleton               boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  member                  text NOT NULL,
  registered_at           bigint NOT NULL,
  sequencer_id            text NOT NULL,
  synchronizer_id         text NOT NULL,
  synchronizer_namespace  text NOT NULL,
  created_at              timestamptz NOT NULL DEFAULT now()
);

-- Every event received, stored BEFORE it is processed (DESIGN §2), with a local counter.
CREATE TABLE sequencer_client_events (
  counter             bigserial PRIMARY KEY,
  timestamp           bigint NOT NULL UNIQUE,
  previous_timestamp  bigint,
  sender              text NOT NULL,
  message_id          text NOT NULL,
  recipients          text[] NOT NULL,
  payload             bytea NOT NULL,
  deliver_error       jsonb,
  chain_hash          bytea NOT NULL CHECK (octet_length(chain_hash) = 32),
  signature           bytea NOT NULL,
  stored_at           timestamptz NOT NULL DEFAULT now()
);

-- The clean timestamp: the last event fully processed, written in the handler's transaction.
CREATE TABLE sequencer_client_clean (
  singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  clean_timestamp  bigint NOT NULL,
  updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Accepted topology transactions in sequencing order: the bootstrap snapshot, then the ones that
-- arrived as events (written in the same transaction as the clean timestamp).
CREATE TABLE sequencer_client_topology (
  seq                bigserial PRIMARY KEY,
  effective_at       bigint NOT NULL,
  transaction        bytea NOT NULL,
  signer_public_key  bytea NOT NULL,
  signature          bytea NOT NULL
);
`,
  },
];
