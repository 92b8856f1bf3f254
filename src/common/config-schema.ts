import { z } from "zod";
import { parseDuration } from "./duration.ts";
import { NAME_PATTERN } from "./ids.ts";
import { LOOPBACK } from "./loopback.ts";
import {
  bindHostsOverlap,
  bindSite,
  canonicalHost,
  type EndpointConfig,
  hostProblem,
  isWildcardHost,
  nodeEndpoint,
  parseAddress,
} from "./node-endpoint.ts";
import { networkTlsSchema, nodeTlsSchema } from "./tls-schema.ts";

/** A duration string (`30s`) parsed to milliseconds. Exported so tools can write durations back. */
export const durationSchema = z.string().transform((value, ctx) => {
  try {
    return parseDuration(value);
  } catch (e) {
    ctx.addIssue({ code: "custom", message: (e as Error).message });
    return z.NEVER;
  }
});

const port = z.number().int().min(1).max(65535);
const name = z
  .string()
  .regex(NAME_PATTERN, "a node name is lower case letters, digits, - and _, starting with a letter");

const replication = z
  .object({
    check: z.enum(["fail", "warn", "off"]).default("warn"),
    "min-sync-standbys": z.number().int().min(0).default(1),
  })
  .strict();

const storage = z
  .object({
    // Only PostgreSQL URLs: a bare `host:5432` would otherwise pass as a URL with scheme "host:". In
    // libpq's syntax, which names several hosts for a Patroni cluster (WHATWG URL parsing refuses
    // that); storage/multi-host.ts checks the rest when the node opens it (common cannot import it).
    url: z
      .string()
      .regex(/^postgres(ql)?:\/\/[^\s]*$/, {
        error:
          "expected a postgres://user@host:port/db URL (a cluster: postgres://user@host1:port1,host2:port2/db?target_session_attrs=read-write)",
      })
      .optional(),
    replication: replication.default(() => ({ check: "warn" as const, "min-sync-standbys": 1 })),
  })
  .strict();

// Factories, not objects: zod only shallow-clones object defaults, so nodes would share `replication`.
const defaultStorage = () => ({ replication: { check: "warn" as const, "min-sync-standbys": 1 } });

// Private keys encrypted at rest under a wrapper key kept outside the database (docs/keys.md):
// the current file encrypts, the previous ones only decrypt (older backup sets, a rotation under way).
const crypto = z
  .object({
    "private-key-encryption": z
      .object({
        "wrapper-key-file": z.string().min(1),
        "previous-wrapper-key-files": z.array(z.string().min(1)).default([]),
      })
      .strict()
      .optional(),
  })
  .strict();

// Where a node listens and how the others reach it, so a network can span hosts (docs/configuration.md).
const host = z.string().superRefine((value, ctx) => {
  const problem = hostProblem(value);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});
const address = z.string().superRefine((value, ctx) => {
  const { problem } = parseAddress(value);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

/**
 * The backup engines a config can name (docs/backup.md "Engines"): pg-dump (logical, per database)
 * and pgbackrest (physical, a whole cluster with its WAL archive). Which of them this build has is
 * the backup registry's business (src/backup/backup-engines.ts), not the config's.
 */
export const BACKUP_ENGINES = ["pg-dump", "pgbackrest"] as const;
export type BackupEngineName = (typeof BACKUP_ENGINES)[number];

// A node whose database is backed up otherwise than the others (e.g. a large participant on its
// own cluster, backed up physically); absent: the network's backup.engine.
//
// pgbackrest: where an external database's cluster is, for pgBackRest (it runs on the database's
// host, reads PGDATA and connects over the server's Unix socket); the embedded cluster needs none.
const externalCluster = z
  .object({
    stanza: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, {
      error: "letters, digits, '_', '.' or '-' (at most 64)",
    }),
    "pg-data": z.string().startsWith("/", { error: "an absolute path (the cluster's PGDATA)" }),
    "socket-dir": z.string().startsWith("/", { error: "an absolute path (one of unix_socket_directories)" }),
    "pg-port": z.number().int().min(1).max(65535).default(5432),
    "pg-user": z.string().min(1).default("postgres"),
  })
  .strict();
const nodeBackup = z
  .object({ engine: z.enum(BACKUP_ENGINES).optional(), pgbackrest: externalCluster.optional() })
  .strict();
export type ExternalClusterConfig = z.infer<typeof externalCluster>;

/** The pgbackrest engine's options (config `backup.pgbackrest`). */
const pgbackrestOptions = z
  .object({
    // incr by default, as pgBackRest's own: it takes a full when the stanza has none yet.
    type: z.enum(["full", "diff", "incr"]).default("incr"),
    "process-max": z.number().int().min(1).max(64).default(2),
    "compress-type": z.enum(["zst", "gz", "lz4", "bz2", "none"]).default("zst"),
  })
  .strict();
/** `backup.encryption`: key files of 32 random bytes as 64 hex digits (`lockstep backup key create`). */
const backupEncryption = z
  .object({
    "key-file": z.string().min(1),
    "previous-key-files": z.array(z.string().min(1)).default([]),
  })
  .strict();
const defaultPgbackrestOptions = () => ({
  type: "incr" as const,
  "process-max": 2,
  "compress-type": "zst" as const,
});

const node = z
  .object({
    name,
    port,
    host: host.default(LOOPBACK),
    address: address.optional(),
    storage: storage.default(defaultStorage),
    crypto: crypto.default(() => ({})),
    backup: nodeBackup.optional(),
    // TLS on the node's port (docs/security.md "TLS"); absent: the network's `tls`.
    tls: nodeTlsSchema.optional(),
    // The largest request message the node's port reads, in bytes (Canton's per-API
    // max-inbound-message-size); absent: the node kind's default (node-server.ts MESSAGE_LIMITS).
    // Connect's hard ceiling is 2^32-1.
    "max-inbound-message-size": z.number().int().min(1024).max(0xffffffff).optional(),
  })
  .strict();

// Ledger API authorization (docs/security.md "Ledger API authorization"): JWTs whose `sub` is a user
// of the participant. No default on purpose: a participant refuses to start until the config says
// which (participant-node.ts), so auth is off only where a config says `off`.
const ledgerApiAuth = z.discriminatedUnion("type", [
  z.object({ type: z.literal("off") }).strict(),
  z
    .object({
      type: z.literal("hs256"),
      "secret-file": z.string().min(1),
      audience: z.string().min(1).optional(),
      issuer: z.string().min(1).optional(),
    })
    .strict(),
  z
    .object({
      type: z.literal("jwks"),
      "jwks-file": z.string().min(1).optional(),
      "jwks-url": z.url({ protocol: /^https?$/ }).optional(),
      audience: z.string().min(1).optional(),
      issuer: z.string().min(1).optional(),
    })
    .strict(),
]);
/** Canton's ledger-api.user-management-service.cache-expiry-after-write-in-seconds default (5). */
export const DEFAULT_USER_RIGHTS_CHECK_INTERVAL_MS = 5_000;
const ledgerApi = z
  .object({
    auth: ledgerApiAuth.optional(),
    // How often an open stream re-reads its user's rights (docs/security.md "Ledger API
    // authorization"); Canton's interval, which its cache-expiry-after-write-in-seconds sets.
    "user-rights-check-interval": durationSchema.default(DEFAULT_USER_RIGHTS_CHECK_INTERVAL_MS),
  })
  .strict()
  .superRefine((api, ctx) => {
    const interval = api["user-rights-check-interval"];
    if (interval < 100 || interval > 3_600_000)
      ctx.addIssue({
        code: "custom",
        path: ["user-rights-check-interval"],
        message: "between 100ms and 1h",
      });
    const auth = api.auth;
    if (auth?.type === "jwks" && (auth["jwks-file"] === undefined) === (auth["jwks-url"] === undefined))
      ctx.addIssue({
        code: "custom",
        path: ["auth"],
        message: "a jwks auth names exactly one of jwks-file and jwks-url",
      });
  });
export type LedgerApiAuthConfig = z.output<typeof ledgerApiAuth>;

const participant = node
  .extend({
    "ledger-api": ledgerApi.optional(),
    restore: z
      .object({ "deduplication-recovery": z.enum(["reject", "warn"]).default("reject") })
      .strict()
      .default(() => ({ "deduplication-recovery": "reject" as const })),
  })
  .strict();

export const configSchema = z
  .object({
    "data-dir": z.string().min(1).default(".lockstep"),
    // Every node's TLS unless it has its own: off, auto (certificates issued under the data dir) or files.
    tls: networkTlsSchema.optional(),
    // The Admin API's bearer token, shared by the network's nodes and the CLI (docs/security.md
    // "Admin API"); without token-file: <data-dir>/admin-token, created by `lockstep up`/the nodes.
    admin: z
      .object({ "token-file": z.string().min(1).optional() })
      .strict()
      .optional(),
    synchronizer: z
      .object({
        id: name,
        parameters: z
          .object({
            "ledger-time-record-time-tolerance": durationSchema.default(60_000),
            "participant-response-timeout": durationSchema.default(30_000),
            "max-deduplication-duration": durationSchema.default(7 * 86_400_000),
          })
          .strict()
          .default(() => ({
            "ledger-time-record-time-tolerance": 60_000,
            "participant-response-timeout": 30_000,
            "max-deduplication-duration": 7 * 86_400_000,
          })),
        // retention: how long the operator's pruning schedule keeps events (Canton's default is 7
        // days); backup list shows, per set, until when the live sequencer can serve it.
        sequencer: node.extend({ retention: durationSchema.default(7 * 86_400_000) }).strict(),
        mediator: node,
        // Who may register with the sequencer (docs/security.md "Permissioned synchronizer"), as
        // Canton's onboardingRestriction: allow-list = RestrictedOpen (only admitted member ids),
        // open = UnrestrictedOpen (anyone with a self-signed key).
        onboarding: z.enum(["open", "allow-list"]).default("allow-list"),
      })
      .strict(),
    participants: z.array(participant).default([]),
    backup: z
      .object({
        repository: z.string().min(1).default("backups"),
        engine: z.enum(BACKUP_ENGINES).default("pg-dump"),
        // The pg-dump engine's options (its format and its parallel jobs, also pg_restore's).
        format: z.enum(["tar", "custom", "directory"]).default("custom"),
        "app-hook": z.string().default(""),
        jobs: z.number().int().min(1).default(2),
        pgbackrest: pgbackrestOptions.default(defaultPgbackrestOptions),
        // Artifacts encrypted at rest (docs/backup.md "Encryption"): the key file encrypts new
        // sets, previous ones only decrypt older sets.
        encryption: backupEncryption.optional(),
      })
      .strict()
      .default(() => ({
        repository: "backups",
        engine: "pg-dump" as const,
        format: "custom" as const,
        "app-hook": "",
        jobs: 2,
        pgbackrest: defaultPgbackrestOptions(),
      })),
  })
  .strict()
  .superRefine((config, ctx) => {
    const seen = new Map<string, string>();
    const bound: { name: string; host: string; site: string; port: number }[] = [];
    const addresses = new Map<string, string>();
    // Paths keep array indexes as numbers, as zod's own issues do.
    const nodes: [(string | number)[], EndpointConfig & { name: string }][] = [
      [["synchronizer", "sequencer"], config.synchronizer.sequencer],
      [["synchronizer", "mediator"], config.synchronizer.mediator],
      ...config.participants.map((p, i): [(string | number)[], EndpointConfig & { name: string }] => [
        ["participants", i],
        p,
      ]),
    ];
    for (const [path, n] of nodes) {
      const other = seen.get(n.name);
      if (other)
        ctx.addIssue({
          code: "custom",
          path: [...path, "name"],
          message: `duplicate node name "${n.name}" (also at ${other})`,
        });
      seen.set(n.name, path.join("."));
      // One port may serve several nodes only on different machines: a wildcard takes it on all of its own.
      const nodeHost = n.host ?? LOOPBACK;
      const mine = { name: n.name, host: nodeHost, site: bindSite(n), port: n.port };
      const clash = bound.find((b) => b.port === n.port && bindHostsOverlap(b.site, mine.site));
      bound.push(mine);
      if (clash) {
        const wildcard = [clash, mine].find((b) => isWildcardHost(b.host));
        const machine =
          wildcard && !isWildcardHost(wildcard.site) ? `${wildcard.site}'s machine` : "the machine";
        const where =
          clash.host === nodeHost
            ? nodeHost === LOOPBACK
              ? ""
              : ` on ${nodeHost}`
            : wildcard
              ? ` (${wildcard.name} binds ${wildcard.host}: every address of ${machine})`
              : ` (${clash.host} and ${nodeHost} are the same loopback)`;
        ctx.addIssue({
          code: "custom",
          path: [...path, "port"],
          message: `port ${n.port} is also used by ${clash.name}${where}`,
        });
        continue;
      }
      const reach = nodeEndpoint(n);
      const key = `${canonicalHost(reach.host)} ${reach.port}`;
      const sameAddress = addresses.get(key);
      if (sameAddress)
        ctx.addIssue({
          code: "custom",
          path: [...path, n.address === undefined ? "host" : "address"],
          message: `${reach.address} is also the address of ${sameAddress}`,
        });
      addresses.set(key, n.name);
    }
  });

export type LockstepConfig = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
export type NodeKind = "sequencer" | "mediator" | "participant";
export type ParticipantConfig = LockstepConfig["participants"][number];
export type NodeConfig = LockstepConfig["synchronizer"]["mediator"];
export type SequencerConfig = LockstepConfig["synchronizer"]["sequencer"];
export type CryptoConfig = NodeConfig["crypto"];

/** One node of the config with its kind, as the runtime and the CLI address them. */
export interface NodeEntry {
  name: string;
  kind: NodeKind;
  port: number;
  config: NodeConfig | SequencerConfig | ParticipantConfig;
}

export function configNodes(config: LockstepConfig): NodeEntry[] {
  const { sequencer, mediator } = config.synchronizer;
  return [
    { name: sequencer.name, kind: "sequencer", port: sequencer.port, config: sequencer },
    { name: mediator.name, kind: "mediator", port: mediator.port, config: mediator },
    ...config.participants.map((p) => ({
      name: p.name,
      kind: "participant" as const,
      port: p.port,
      config: p,
    })),
  ];
}
