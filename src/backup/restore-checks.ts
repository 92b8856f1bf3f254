import type { Client } from "@connectrpc/connect";
import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import type { ErrorCodeName } from "../common/error-codes.ts";
import { LockstepError, type MetadataFor, toLockstepError } from "../common/errors.ts";
import { parseUniqueIdentifier } from "../common/ids.ts";
import { END_OF_TIME } from "../common/time.ts";
import { loadWrapperKey } from "../crypto/key-wrapping.ts";
import type {
  GetSequencerStatusResponse,
  SequencerService,
} from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { fetchTopology } from "../sequencer-client/topology-bootstrap.ts";
import type { Artifact } from "./backup-engine.ts";
import { checkFile } from "./file-hash.ts";
import { type Manifest, type NodeBackup, nodeEngine } from "./manifest.ts";
import type { TargetState } from "./restore-target.ts";
import type { RuntimeEngine } from "./runtime-engine.ts";

export type Verdict = "pass" | "warn" | "refuse";

/** One preflight check of docs/design.md §4.4 for one node (docs/cli.md `restore plan` JSON). */
export interface RestoreCheck {
  node: string;
  check: string;
  verdict: Verdict;
  /** The error code the refusal (or warning) stands for; null when it passed. */
  code: string | null;
  message: string;
  remedy: string | null;
  /** A refusal that --force turned into a warning (order and fork checks only). */
  forced?: boolean;
}

/**
 * What --force may override, by name: restoring onto a predicted fork is a decision (order,
 * sequencer-fork), and so is going ahead when a check could not run (RESTORE_CHECK_SKIPPED, e.g.
 * the sequencer is down); every other refusal is a fact (missing events, a missing key, a running
 * node, a corrupt artifact) that --force cannot change.
 */
export const FORCE_NAMES: readonly string[] = [
  "order",
  "sequencer-fork",
  "sequencer-events",
  "keys",
  "synchronizer",
  "encryption",
];

export function isForceable(check: RestoreCheck): boolean {
  return (
    check.check === "order" ||
    check.check === "sequencer-fork" ||
    check.check === "synchronizer" ||
    (check.check === "encryption" && check.code === "BACKUP_NOT_ENCRYPTED") ||
    check.code === "RESTORE_CHECK_SKIPPED"
  );
}

export function passed(node: string, check: string, message: string): RestoreCheck {
  return { node, check, verdict: "pass", code: null, message, remedy: null };
}

export function failed<C extends ErrorCodeName>(
  node: string,
  check: string,
  verdict: Exclude<Verdict, "pass">,
  code: C,
  metadata: MetadataFor<C>,
  message?: string,
): RestoreCheck {
  // The keys were checked against C at the call; the constructor cannot see through a type parameter.
  const error = new LockstepError<ErrorCodeName>(code, metadata);
  return { node, check, verdict, code, message: message ?? error.message, remedy: error.remedy };
}

/** Sizes and SHA-256 of every file of the node's artifact, as the manifest lists them. */
export async function checkChecksums(setDir: string, set: string, node: NodeBackup): Promise<RestoreCheck> {
  for (const file of node.files) {
    const check = await checkFile(setDir, file);
    if (!check.ok) {
      return failed(node.name, "checksums", "refuse", "BACKUP_CORRUPTED", {
        set,
        details:
          check.problem === "missing"
            ? `${file.path} is missing`
            : `${file.path} does not match its size and SHA-256 in the manifest`,
      });
    }
  }
  return passed(node.name, "checksums", `${node.files.length} file(s) match the manifest`);
}

/** The engine's preflight (pgbackrest: the backup and its WAL still in pgBackRest's repository). */
export async function checkArtifact(
  engine: RuntimeEngine,
  artifact: Artifact,
  node: NodeBackup,
): Promise<RestoreCheck | null> {
  try {
    const seen = await engine.preflightCheck(artifact);
    return seen === null ? null : passed(node.name, "artifact", seen);
  } catch (error) {
    const failure = toLockstepError(error);
    return {
      node: node.name,
      check: "artifact",
      verdict: "refuse",
      code: failure.code,
      message: failure.message,
      remedy: failure.remedy,
    };
  }
}

/**
 * An artifact stored in plain while the config encrypts backups (a pg-dump artifact, or a
 * pgbackrest backup in the plain repository): expected for a set made before encryption was
 * enabled, but also what a rewritten manifest would declare to slip a plain dump in (its checksum
 * is no signature, so nothing in the repository can tell the two apart). Refused, so that a
 * writer of the repository cannot downgrade a set unnoticed; `--force encryption` is the
 * operator's word that the set is an older one they trust (recorded in the recovery record).
 */
export function checkEncrypted(
  config: LockstepConfig,
  manifest: Manifest,
  node: NodeBackup,
): RestoreCheck | null {
  const record = nodeEngine(node);
  if (record.encryption) return null; // the artifact check names its key
  const set = manifest.id;
  if (plainAmongEncrypted(manifest).includes(node.name)) {
    // Never a set made as it says: a tampered one, whatever the config (and not to be forced).
    return failed(node.name, "encryption", "refuse", "BACKUP_CORRUPTED", {
      set,
      file: node.artifact,
      details: plainAmongEncryptedDetails(node),
    });
  }
  if (!config.backup.encryption) return null;
  return failed(node.name, "encryption", "refuse", "BACKUP_NOT_ENCRYPTED", { set, artifact: node.artifact });
}

/**
 * The pg-dump artifacts of a set stored in plain while another pg-dump artifact of the same set is
 * encrypted: one `backup create` dumps every node under the same key or none, so such a set was
 * rewritten (a plain dump slipped in). pgbackrest records may mix legitimately (a point in time
 * served from an older plain repository for one node), so they are not compared.
 */
export function plainAmongEncrypted(manifest: Manifest): string[] {
  const dumps = manifest.nodes.filter((n) => nodeEngine(n).name === "pg-dump");
  if (!dumps.some((n) => nodeEngine(n).encryption)) return [];
  return dumps.filter((n) => !nodeEngine(n).encryption).map((n) => n.name);
}

export function plainAmongEncryptedDetails(node: NodeBackup): string {
  return `${node.artifact} is stored in plain while the set's other artifacts are encrypted (one backup create encrypts all or none: its manifest was rewritten)`;
}

/**
 * docs/design.md §4.3: restored together with the set's own sequencer, a member must be a prefix of that
 * sequencer's history (the set's order check, on chain hashes). Restored against the live
 * sequencer, the set's sequencer (if any) does not matter: the live `sequencer-fork` check decides,
 * never an older set's sequencer. A refusal is overridable by `--force order`.
 */
export function checkOrder(manifest: Manifest, node: NodeBackup, withSetSequencer: boolean): RestoreCheck {
  if (node.kind === "sequencer") {
    return passed(node.name, "order", `the members restored with it are checked against it`);
  }
  if (!withSetSequencer) {
    return passed(node.name, "order", "restored against the live sequencer: see sequencer-fork");
  }
  const finding = manifest.unsafe.find((u) => u.node === node.name);
  if (finding) {
    return failed(
      node.name,
      "order",
      "refuse",
      "RESTORE_SET_UNSAFE",
      {
        set: manifest.id,
        node: node.name,
        clean: finding.clean ?? "(none)",
        sequencerLastDelivered: finding.sequencerLastDelivered ?? "(none)",
        sequencerSet: finding.sequencerSet ?? "(live)",
      },
      `backup set ${manifest.id} is unsafe: ${node.name}'s last stored event at ${finding.lastStored} (chain hash ${finding.storedHash?.slice(0, 16) ?? "?"}…) is ${finding.sequencerHash ? `not the set's sequencer's (${finding.sequencerHash.slice(0, 16)}…)` : "not held by the set's sequencer"}: restoring both forks`,
    );
  }
  if (manifest.manifestVersion < 2) {
    return failed(node.name, "order", "warn", "RESTORE_CHECK_SKIPPED", {
      check: "order",
      node: node.name,
      reason: "the set was written by an older build that compared timestamps only, not chain hashes",
    });
  }
  return passed(node.name, "order", "a prefix of the set's sequencer's history (chain hash)");
}

/** A forced prune released this set's holds: the live sequencer cannot serve the member from it. */
export function checkStranded(
  manifest: Manifest,
  node: NodeBackup,
  live: GetSequencerStatusResponse,
): RestoreCheck | undefined {
  const stranded = live.stranded.find((s) => s.setId === manifest.id);
  if (!stranded) return undefined;
  return failed(node.name, "retention", "refuse", "RESTORE_SET_STRANDED", {
    set: manifest.id,
    node: node.name,
    prunedBefore: stranded.prunedBefore,
  });
}

/**
 * For a participant or mediator restored against a live sequencer: can the sequencer still serve it
 * from its last stored event, and is that event the one the sequencer delivered (chain hash)? Two
 * checks: `sequencer-events` (EVENTS_UNAVAILABLE_FOR_TIMESTAMP predicted) and `sequencer-fork`.
 */
export async function checkAgainstSequencer(
  rpc: Client<typeof SequencerService>,
  node: NodeBackup,
): Promise<RestoreCheck[]> {
  if (node.kind === "sequencer") return [];
  const name = node.name;
  const member = node.member;
  if (!member) {
    return [passed(name, "sequencer-events", "the node never registered: it registers anew on start")];
  }
  const last = node.position.lastStored;
  const at = last ? BigInt(last.timestamp) : 0n;
  const info = await rpc.getMemberEvent({ member, timestamp: at }, { timeoutMs: 10_000 });
  const unavailable = (reason: string) =>
    failed(name, "sequencer-events", "refuse", "EVENTS_UNAVAILABLE_FOR_TIMESTAMP", {
      timestamp: last?.timestamp ?? "its registration",
      member,
      reason,
    });
  if (info.registeredAt === undefined) {
    return [unavailable("the live sequencer does not know the member (was the synchronizer replaced?)")];
  }
  if (!last) {
    const pruned = info.pruningLowerBound !== undefined && info.pruningLowerBound > info.registeredAt;
    return pruned
      ? [unavailable(`the sequencer pruned below ${info.pruningLowerBound}, after the registration`)]
      : [passed(name, "sequencer-events", "the sequencer still has every event of the member")];
  }
  if (at < info.registeredAt) {
    return [unavailable(`the member was registered at ${info.registeredAt}, after the backup's position`)];
  }
  if (info.pruningLowerBound !== undefined && at < info.pruningLowerBound) {
    return [unavailable(`the sequencer pruned below ${info.pruningLowerBound}`)];
  }
  const events = passed(name, "sequencer-events", `the sequencer still has events from ${last.timestamp}`);
  const received = info.event ? Buffer.from(info.event.chainHash).toString("hex") : null;
  if (received === last.chainHash) {
    return [events, passed(name, "sequencer-fork", `the sequencer's event at ${last.timestamp} matches`)];
  }
  const fork = failed(
    name,
    "sequencer-fork",
    "refuse",
    "SEQUENCER_FORK_DETECTED",
    {
      timestamp: last.timestamp,
      storedHash: last.chainHash.slice(0, 16),
      receivedHash: received?.slice(0, 16) ?? "none",
    },
    received === null
      ? `fork predicted: the sequencer has no event for ${node.member} at ${last.timestamp} (its last is ${info.lastDelivered ?? "none"}): it is behind the backup`
      : `fork predicted: the sequencer's event at ${last.timestamp} has chain hash ${received.slice(0, 16)}…, the backup's ${last.chainHash.slice(0, 16)}…`,
  );
  return [events, fork];
}

/** Every key topology lists as active for the node must be in the backup's private key store. */
export async function checkKeys(
  rpc: Client<typeof SequencerService>,
  node: NodeBackup,
): Promise<RestoreCheck> {
  if (!node.member) return passed(node.name, "keys", "the node never registered: no keys in topology");
  const { state } = await fetchTopology(rpc);
  const active = [
    parseUniqueIdentifier(node.member).namespace,
    ...state.signingKeysOf(node.member, END_OF_TIME).map((k) => k.fingerprint),
  ];
  const held = new Set(node.keyFingerprints);
  const missing = active.filter((fp) => !held.has(fp));
  if (missing.length > 0) {
    return failed(node.name, "keys", "refuse", "MISSING_PRIVATE_KEY", {
      fingerprint: missing.join(", "),
      node: node.name,
    });
  }
  return passed(node.name, "keys", `the backup holds all ${active.length} key(s) topology lists as active`);
}

/**
 * A set whose private keys are sealed under a wrapper key restores into a node that cannot start
 * unless the restoring config has that key (current or previous): a fact, not forceable.
 */
export function checkWrapperKey(node: NodeBackup, entry: NodeEntry): RestoreCheck {
  const needed = node.wrapperFingerprint;
  if (!needed) return passed(node.name, "wrapper-key", "the backup's private keys are stored in plain");
  const encryption = entry.config.crypto["private-key-encryption"];
  const files = encryption
    ? [encryption["wrapper-key-file"], ...encryption["previous-wrapper-key-files"]]
    : [];
  const seen: string[] = [];
  for (const file of files) {
    try {
      const key = loadWrapperKey(file);
      if (key.fingerprint === needed) {
        return passed(node.name, "wrapper-key", `the backup's private keys open under ${key.source}`);
      }
      seen.push(`${key.source} holds ${key.fingerprint}`);
    } catch (error) {
      seen.push((error as Error).message);
    }
  }
  return failed(node.name, "wrapper-key", "refuse", "MISSING_WRAPPER_KEY", {
    node: node.name,
    fingerprint: needed,
    where: ` to the restoring config (${seen.length === 0 ? `no crypto.private-key-encryption for ${node.name}` : seen.join("; ")})`,
  });
}

/**
 * A participant's set from another synchronizer than the config's (taken before a migration, docs/restore.md
 * "The synchronizer is lost or restored behind the participants"): restored, the participant would
 * come back on the old synchronizer's state and refuse to start under this config until migrated
 * again, and what it committed since the migration would be gone. Refused unless forced.
 */
export function checkSynchronizer(
  set: string,
  node: NodeBackup,
  target: TargetState,
  configured: string,
): RestoreCheck {
  const inSet = node.synchronizerId?.split("::")[0] ?? null;
  if (inSet === null || inSet === configured) {
    return passed(node.name, "synchronizer", `on ${inSet ?? configured}, as the config`);
  }
  const since =
    target.synchronizer?.id === configured && target.synchronizer.migratedAtOffset !== null
      ? `; it was migrated to ${configured} at offset ${target.synchronizer.migratedAtOffset}, and what it committed since would be gone`
      : "";
  return failed(node.name, "synchronizer", "refuse", "RESTORE_SYNCHRONIZER_MIGRATED", {
    node: node.name,
    set,
    setSynchronizer: inSet,
    current: configured,
    meaning: `restored, it comes back on ${inSet}'s state and refuses to start while the config names ${configured} (PARTICIPANT_SYNCHRONIZER_MISMATCH) until migrated again${since}`,
  });
}
