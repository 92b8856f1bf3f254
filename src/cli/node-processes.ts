import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { AdminService, type GetStatusResponse } from "../gen/lockstep/admin/v1/admin_pb.ts";
import { runningProcesses } from "../node/process-files.ts";

/** One process of a node in `status --json` (`processes`). */
export interface ProcessStatusJson {
  /** The replica id; null for the process at the node's configured address. */
  replica: string | null;
  address: string;
  running: boolean;
  /** active | passive | starting | failed | stopping; null when it does not answer. */
  role: string | null;
  writerEpoch: string | null;
  pid: number | null;
}

export interface NodeProcess {
  json: ProcessStatusJson;
  /** Its GetStatus answer, when it answered. */
  status?: GetStatusResponse;
  url: string;
}

/**
 * Every process of a node this host knows of: the one at the node's configured address, and each
 * replica with a live pid file under the data dir (`node start NAME --replica ID --port P` writes its
 * port there), each asked for its status.
 */
export async function nodeProcesses(
  config: LockstepConfig,
  entry: NodeEntry,
  timeoutMs = 2000,
): Promise<NodeProcess[]> {
  const targets = [
    { replica: null as string | null, endpoint: nodeEndpoint(entry), pid: null as number | null },
    ...runningProcesses(config["data-dir"])
      .filter((p) => p.name === entry.name && p.replica && p.port)
      .sort((a, b) => String(a.replica).localeCompare(String(b.replica)))
      .map((p) => ({ replica: p.replica ?? null, endpoint: nodeEndpoint(entry, p.port), pid: p.pid })),
  ];
  return Promise.all(
    targets.map(async ({ replica, endpoint, pid }): Promise<NodeProcess> => {
      const json = { replica, address: endpoint.address };
      try {
        const status = await createNodeClient(AdminService, endpoint.url).getStatus({}, { timeoutMs });
        return {
          json: {
            ...json,
            running: true,
            role: status.role,
            writerEpoch: status.writerEpoch.toString(),
            pid: status.pid,
          },
          status,
          url: endpoint.url,
        };
      } catch {
        return { json: { ...json, running: false, role: null, writerEpoch: null, pid }, url: endpoint.url };
      }
    }),
  );
}

/** The process that speaks for the node in status: the active one, else the one at the configured address, else any that answers. */
export function representative(processes: NodeProcess[]): NodeProcess | undefined {
  return (
    processes.find((p) => p.status?.role === "active") ??
    processes.find((p) => p.json.replica === null && p.status) ??
    processes.find((p) => p.status)
  );
}
