import { ERRORS, type ErrorCodeName } from "../common/error-codes.ts";
import type { ErrorJson } from "../common/errors.ts";
import { LockstepError } from "../common/errors.ts";
import type { NodeIdentity, NodeKindStatus } from "../common/node-kind.ts";
import { LOCKSTEP_VERSION } from "../common/version.ts";
import type { HealthReport } from "./health.ts";
import type { NodeRole } from "./node-runtime.ts";

// What a node reports about itself: GET /health, the Admin API's GetStatus, and the error a failed
// node answers with. Kept apart from NodeRuntime: it only reads a snapshot of the runtime's state,
// and its shape follows the API, not the node's lifecycle.

/** A node's status as the Admin API reports it (the init shape of GetStatusResponse). */
export interface NodeStatus {
  name: string;
  kind: string;
  role: string;
  positionJson: string;
  incarnation: string;
  writerEpoch: bigint;
  deduplicationRecoveryJson: string;
  /** Each replication finding as JSON `{kind, message, remedy}` (replication-monitor.ts). */
  replicationFindings: string[];
  lastError?: { code: string; message: string; remedy: string };
  pid: number;
  startedAt: string;
  version: string;
  replica: string;
  fencingJson: string;
}

/** The runtime's state that status and health report, read when they are asked. */
export interface NodeSnapshot {
  name: string;
  kind: string;
  role: NodeRole;
  lastError: ErrorJson | undefined;
  replica: string | undefined;
  startedAt: Date;
  replication: { statusFindings(): string[] } | undefined;
  /** The writer identity (writer-identity.ts): read when the status is built. */
  writer: { current: NodeIdentity | undefined; fencer: { report(): unknown } | undefined };
}

export function nodeHealth(node: NodeSnapshot): HealthReport {
  const status = node.role === "stopped" ? "stopping" : node.role;
  const reason =
    node.lastError?.message ??
    (status === "passive" ? "another process of this node holds the database lock" : undefined);
  return { node: node.name, kind: node.kind, status, reason };
}

/** The status of a node; `kindStatus` is its active kind's, if any. */
export function nodeStatus(node: NodeSnapshot, kindStatus: NodeKindStatus | undefined): NodeStatus {
  const identity = node.writer.current;
  return {
    name: node.name,
    kind: node.kind,
    role: node.role,
    positionJson: JSON.stringify(kindStatus?.position ?? {}, bigintReplacer),
    incarnation: identity?.incarnation ?? "",
    writerEpoch: identity?.writerEpoch ?? 0n,
    deduplicationRecoveryJson: kindStatus?.deduplicationRecovery
      ? JSON.stringify(kindStatus.deduplicationRecovery, bigintReplacer)
      : "",
    replicationFindings: node.replication?.statusFindings() ?? [],
    lastError: node.lastError
      ? { code: node.lastError.code, message: node.lastError.message, remedy: node.lastError.remedy }
      : kindStatus?.warning,
    pid: process.pid,
    startedAt: node.startedAt.toISOString(),
    version: LOCKSTEP_VERSION,
    replica: node.replica ?? "",
    fencingJson: node.writer.fencer ? JSON.stringify(node.writer.fencer.report()) : "",
  };
}

export function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/** A failed node's error, rebuilt with its code, message and remedy. */
export function nodeFailure(error: ErrorJson): LockstepError {
  if (!ERRORS.has(error.code as ErrorCodeName)) {
    return new LockstepError("INTERNAL_ERROR", { details: `${error.code}: ${error.message}` });
  }
  return new LockstepError(error.code as ErrorCodeName, error.metadata ?? {});
}
