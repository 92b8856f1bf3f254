import type { Migration } from "../storage/migrations.ts";

/**
 * Schema of the private key store, shared by every node kind: each kind appends these to its own
 * migration list (versions 1000+ stay clear of the kinds' own numbering). Private keys live in the
 * node's own database so that they are inside its backups (docs/design.md §2 "Topology and keys").
 */
export const keyStoreMigrations: readonly Migration[] = [
  {
    version: 1000,
    name: "crypto_private_keys",
    sql: `
CREATE TABLE crypto_private_keys (
  fingerprint  text PRIMARY KEY,
  purpose      text NOT NULL CHECK (purpose IN ('namespace', 'signing')),
  state        text NOT NULL CHECK (state IN ('pending', 'active', 'revoked')),
  public_key   bytea NOT NULL CHECK (octet_length(public_key) = 32),
  private_key  bytea NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  activated_at timestamptz,
  revoked_at   timestamptz
);
-- The namespace key is the node's identity: there is exactly one active at a time.
CREATE UNIQUE INDEX crypto_private_keys_one_active_namespace
  ON crypto_private_keys (purpose) WHERE purpose = 'namespace' AND state = 'active';
`,
  },
  {
    version: 1001,
    name: "crypto_rotation_and_wrapping",
    // wrapper_fingerprint: the wrapper key a private key is encrypted under (NULL: plain PKCS8).
    // Overrides: every --force past the backup-before-announce/revoke/retire rule, with its warning.
    // Wrapper keys: which encrypted the store, and which are retired (docs/keys.md).
    sql: `
ALTER TABLE crypto_private_keys ADD COLUMN wrapper_fingerprint text;
CREATE TABLE crypto_key_overrides (
  id          bigserial PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT now(),
  action      text NOT NULL CHECK (action IN ('announce', 'revoke', 'retire-wrapper')),
  fingerprint text NOT NULL,
  warning     text NOT NULL
);
CREATE TABLE crypto_wrapper_keys (
  fingerprint text PRIMARY KEY,
  state       text NOT NULL CHECK (state IN ('active', 'retired')),
  source      text NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now(),
  retired_at  timestamptz
);
`,
  },
];
