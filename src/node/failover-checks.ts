import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { ServerProbe } from "../storage/server-probe.ts";

/**
 * The checks of `lockstep failover NODE --to URL` (docs/operations.md "Fail-over runbook"), pure:
 * verdicts from what the servers answered (storage/server-probe.ts). Why they exist: the advisory
 * lock keeps one writer per database, not per node, so starting a node on the other site's copy
 * while the old primary still takes writes leaves two writers of one node. The writer epoch makes
 * the sequencer refuse the old one once the new one registered (docs/design.md §3), but the old
 * database may still be written by anything else: fence it, or know that it is unreachable.
 */

export interface FailoverNode {
  name: string;
  kind: string;
}

/** The target as checked: the host that is the primary and the writer epoch its copy holds. */
export interface TargetVerdict {
  host: string;
  writerEpoch: bigint;
}

/** Why the old primary counts as fenced: each host's state, or the operator's word. */
export interface OldPrimaryVerdict {
  fenced: "unreachable" | "standby" | "read-only" | "asserted";
  /** One line per host, e.g. `10.0.0.5:5432: unreachable (no answer in time)`. */
  hosts: string[];
  /** The operator said --old-primary-fenced. */
  asserted: boolean;
}

/**
 * The target must answer as a primary (not in recovery, writable) and hold this node's database:
 * a node_state row with its name and kind. Of several hosts (a multi-host URL), the one primary
 * counts; two writable primaries holding the node would be a split brain and are refused.
 */
export function checkTarget(
  node: FailoverNode,
  target: string,
  probes: readonly ServerProbe[],
): TargetVerdict {
  const primaries = probes.filter(
    (p): p is Extract<ServerProbe, { kind: "server" }> => p.kind === "server" && !p.inRecovery && !p.readOnly,
  );
  if (primaries.length === 0) {
    throw new LockstepError("FAILOVER_TARGET_NOT_PRIMARY", {
      node: node.name,
      target,
      reason: probes.map(targetState).join("; "),
    });
  }
  if (primaries.length > 1) {
    throw new LockstepError("FAILOVER_TARGET_NOT_PRIMARY", {
      node: node.name,
      target,
      reason: `${primaries.map((p) => p.host).join(" and ")} are both writable primaries: settle which one is the primary first`,
    });
  }
  const primary = primaries[0] as Extract<ServerProbe, { kind: "server" }>;
  const state = primary.nodeState;
  if (!state || state.name !== node.name || state.kind !== node.kind) {
    throw new LockstepError("FAILOVER_TARGET_WRONG_DATABASE", {
      node: node.name,
      kind: node.kind,
      target,
      reason: state
        ? `it belongs to ${state.kind} ${state.name}`
        : "the database has no node_state row (not a Lockstep node's database, or never started)",
    });
  }
  return { host: primary.host, writerEpoch: state.writerEpoch };
}

/**
 * The old primary must not take writes any more: every host unreachable (from here), a standby, or
 * read-only. Else the operator must have fenced it and say so (`asserted`); it is recorded and printed.
 */
export function checkOldPrimary(
  node: FailoverNode,
  oldPrimary: string,
  probes: readonly ServerProbe[],
  asserted: boolean,
): OldPrimaryVerdict {
  const hosts = probes.map(oldState);
  const live = probes.filter((p) => !fencedState(p));
  if (live.length > 0) {
    if (asserted) return { fenced: "asserted", hosts, asserted };
    throw new LockstepError("FAILOVER_OLD_PRIMARY_LIVE", {
      node: node.name,
      oldPrimary,
      reason: live.map(oldState).join("; "),
    });
  }
  const states = probes.map(fencedState);
  const fenced = states.includes("read-only")
    ? "read-only"
    : states.includes("standby")
      ? "standby"
      : "unreachable";
  return { fenced, hosts, asserted };
}

function fencedState(p: ServerProbe): "unreachable" | "standby" | "read-only" | undefined {
  if (p.kind === "unreachable") return "unreachable";
  if (p.kind === "server" && p.inRecovery) return "standby";
  if (p.kind === "server" && p.readOnly) return "read-only";
  // A server that answers with an error (login refused, database gone) may still take others' writes.
  return undefined;
}

function targetState(p: ServerProbe): string {
  if (p.kind === "unreachable") return `${p.host} does not answer (${p.reason})`;
  if (p.kind === "error") return `${p.host} answered with an error (${p.reason})`;
  if (p.inRecovery) return `${p.host} is a standby (pg_is_in_recovery() is true): not promoted`;
  return `${p.host} is read-only (default_transaction_read_only)`;
}

function oldState(p: ServerProbe): string {
  if (p.kind === "unreachable") return `${p.host}: unreachable (${p.reason})`;
  if (p.kind === "error") return `${p.host}: answers, with an error (${p.reason})`;
  if (p.inRecovery) return `${p.host}: a standby (in recovery)`;
  if (p.readOnly) return `${p.host}: read-only`;
  return `${p.host}: a writable primary${p.nodeState ? ` holding ${p.nodeState.name} at writer epoch ${p.nodeState.writerEpoch}` : ""}`;
}

/** Where a node's storage.url is in the config, as a key path and as its `LOCKSTEP_` override. */
export interface StorageUrlKey {
  key: string;
  env: string;
}

export function storageUrlKey(config: LockstepConfig, entry: NodeEntry): StorageUrlKey {
  let path: string;
  if (entry.kind === "sequencer") path = "synchronizer.sequencer";
  else if (entry.kind === "mediator") path = "synchronizer.mediator";
  else path = `participants.${config.participants.findIndex((p) => p.name === entry.name)}`;
  const key = `${path}.storage.url`;
  // config.ts: `LOCKSTEP_` + the key path upper-cased, `_` for both `.` and `-`.
  return { key, env: `LOCKSTEP_${key.toUpperCase().replace(/[.-]/g, "_")}` };
}
