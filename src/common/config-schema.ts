import { z } from "zod";
import { parseDuration } from "./duration.ts";
import { NAME_PATTERN } from "./ids.ts";

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
    // Only PostgreSQL URLs: a bare `host:5432` would otherwise pass as a URL with scheme "host:".
    url: z
      .url({ protocol: /^postgres(ql)?$/, error: "expected a postgres://user@host:port/db URL" })
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

const node = z
  .object({ name, port, storage: storage.default(defaultStorage), crypto: crypto.default(() => ({})) })
  .strict();

const participant = node
  .extend({
    restore: z
      .object({ "deduplication-recovery": z.enum(["reject", "warn"]).default("reject") })
      .strict()
      .default(() => ({ "deduplication-recovery": "reject" as const })),
  })
  .strict();

export const configSchema = z
  .object({
    "data-dir": z.string().min(1).default(".lockstep"),
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
      })
      .strict(),
    participants: z.array(participant).default([]),
    backup: z
      .object({
        repository: z.string().min(1).default("backups"),
        format: z.enum(["tar", "custom", "directory"]).default("custom"),
        "app-hook": z.string().default(""),
        jobs: z.number().int().min(1).default(2),
      })
      .strict()
      .default(() => ({ repository: "backups", format: "custom" as const, "app-hook": "", jobs: 2 })),
  })
  .strict()
  .superRefine((config, ctx) => {
    const seen = new Map<string, string>();
    const ports = new Map<number, string>();
    // Paths keep array indexes as numbers, as zod's own issues do.
    const nodes: [(string | number)[], { name: string; port: number }][] = [
      [["synchronizer", "sequencer"], config.synchronizer.sequencer],
      [["synchronizer", "mediator"], config.synchronizer.mediator],
      ...config.participants.map((p, i): [(string | number)[], { name: string; port: number }] => [
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
      const otherPort = ports.get(n.port);
      if (otherPort)
        ctx.addIssue({
          code: "custom",
          path: [...path, "port"],
          message: `port ${n.port} is also used by ${otherPort}`,
        });
      ports.set(n.port, n.name);
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
