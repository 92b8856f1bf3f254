import { keyStoreMigrations } from "../crypto/key-store-migrations.ts";
import type { Migration } from "../storage/migrations.ts";

/**
 * The sequencer's schema (versions 100+; node_state has 1, the key store 1000+). One row per
 * sequenced submission in `sequencer_events`, one row per member view in `sequencer_deliveries`
 * (each member has its own previous timestamp and hash chain, see common/sequenced-event.ts).
 */
const sequencerOwnMigrations: readonly Migration[] = [
  {
    version: 100,
    name: "sequencer_store",
    sql: `
-- Singleton: what is not per member. The pruning lower bound is the oldest timestamp a member can
-- still subscribe from (NULL: never pruned).
CREATE TABLE sequencer_state (
  singleton           boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  pruning_lower_bound bigint
);
INSERT INTO sequencer_state DEFAULT VALUES;

-- Every sequenced submission once, with its unique, strictly increasing timestamp (microseconds).
CREATE TABLE sequencer_events (
  timestamp     bigint PRIMARY KEY,
  sender        text NOT NULL,
  message_id    text NOT NULL,
  recipients    text[] NOT NULL,
  payload       bytea NOT NULL,
  -- {messageId, reason, code} when the submission was rejected (delivered to the sender only).
  deliver_error jsonb
);

-- One view per member that receives the event: its own chain.
CREATE TABLE sequencer_deliveries (
  member             text NOT NULL,
  timestamp          bigint NOT NULL,
  previous_timestamp bigint,
  chain_hash         bytea NOT NULL,
  signature          bytea NOT NULL,
  PRIMARY KEY (member, timestamp)
);
-- Pruning deletes by timestamp across members.
CREATE INDEX sequencer_deliveries_timestamp ON sequencer_deliveries (timestamp);

-- Registered (subscribing) members; the highest writer epoch seen fences old writers (DESIGN §3).
CREATE TABLE sequencer_members (
  member        text PRIMARY KEY,
  registered_at bigint NOT NULL,
  writer_epoch  bigint NOT NULL DEFAULT 0
);

-- Where each member's chain stands; written in the same transaction as its deliveries, and kept by
-- pruning, so that the chain continues after its older events are gone.
CREATE TABLE sequencer_member_heads (
  member          text PRIMARY KEY,
  last_timestamp  bigint NOT NULL,
  last_chain_hash bytea NOT NULL
);

-- Each member's clean timestamp; pruning stays below the minimum.
CREATE TABLE sequencer_acknowledgements (
  member          text PRIMARY KEY,
  timestamp       bigint NOT NULL,
  acknowledged_at timestamptz NOT NULL DEFAULT now()
);

-- Accepted topology transactions with the timestamp they are effective from (never pruned:
-- members bootstrap their topology state from it).
CREATE TABLE sequencer_topology (
  effective_at      bigint NOT NULL,
  position          integer NOT NULL,
  transaction       bytea NOT NULL,
  signer_public_key bytea NOT NULL,
  signature         bytea NOT NULL,
  PRIMARY KEY (effective_at, position)
);
`,
  },
  {
    version: 101,
    name: "retention_holds_and_activations",
    sql: `
-- Retention holds (docs/design.md §2, §4.6): one row per member position of a retained backup set. The
-- safe pruning point stays at or below the oldest; backup expire releases a set's holds.
CREATE TABLE sequencer_retention_holds (
  set_id     text NOT NULL,
  member     text NOT NULL,
  timestamp  bigint NOT NULL,
  created_at bigint NOT NULL,
  PRIMARY KEY (set_id, member)
);
-- Sets whose holds a forced prune released: no longer restorable against this sequencer.
CREATE TABLE sequencer_stranded_sets (
  set_id        text PRIMARY KEY,
  pruned_before bigint NOT NULL,
  stranded_at   bigint NOT NULL
);
-- The activation holding writer_epoch: an equal epoch from another activation is refused.
ALTER TABLE sequencer_members ADD COLUMN writer_activation text NOT NULL DEFAULT '';
`,
  },
  {
    version: 102,
    name: "synchronizer_identity",
    // The synchronizer this database sequences for (synchronizer-identity.ts): a database of a lost
    // synchronizer is never reused under another id by mistake (lockstep repair new-synchronizer).
    sql: `
CREATE TABLE sequencer_synchronizer (
  singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  synchronizer_id  text NOT NULL,
  recorded_at      timestamptz NOT NULL DEFAULT now()
);
`,
  },
  {
    version: 103,
    name: "member_admissions",
    // The allow-list of a permissioned synchronizer (member-admissions.ts). Each change has the
    // sequencing timestamp the writer gave it (the head counts it, so no event reuses it). Members
    // registered before the list existed stay in: they were let in by the rules of their time.
    sql: `
CREATE TABLE sequencer_admissions (
  member      text PRIMARY KEY,
  state       text NOT NULL CHECK (state IN ('admitted', 'revoked')),
  changed_at  bigint NOT NULL,
  changed_by  text NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sequencer_admissions (member, state, changed_at, changed_by)
SELECT member, 'admitted', registered_at, 'registered-before-allow-list' FROM sequencer_members;
`,
  },
];

/** Everything a sequencer's database needs beyond node_state, in the order the runtime applies it. */
export const sequencerMigrations: readonly Migration[] = [...keyStoreMigrations, ...sequencerOwnMigrations];
