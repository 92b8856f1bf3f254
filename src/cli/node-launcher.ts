import { spawn } from "node:child_process";
import { openSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import type { ErrorCodeName } from "../common/error-codes.ts";
import { ERRORS } from "../common/error-codes.ts";
import { LockstepError } from "../common/errors.ts";
import type { NodeEndpoint } from "../common/node-endpoint.ts";
import { getJson } from "../common/tls-client.ts";
import { isAlive, logTail, processFiles } from "../node/process-files.ts";
import { LOCKSTEP_BIN } from "./self-process.ts";

export interface LaunchRequest {
  configPath: string;
  dataDir: string;
  name: string;
  port: number;
  /** Where the node is reached (nodeEndpoint, with the replica's port): its health is polled there. */
  endpoint: NodeEndpoint;
  replica?: string;
  /** How long to wait for the node's health endpoint to answer. */
  timeoutMs?: number;
  /** `node start --no-admit`: the node waits for an operator's `synchronizer admit` (admit-configured.ts). */
  noAdmit?: boolean;
  /** Added to the node's environment, e.g. a `LOCKSTEP_…` config override (`lockstep failover`). */
  env?: Record<string, string>;
}

export interface LaunchedNode {
  name: string;
  replica?: string;
  pid: number;
  port: number;
  /** host:port where it is reached. */
  address: string;
  role: string;
  logFile: string;
}

/**
 * Starts `lockstep node start NAME` as a detached process logging to the data dir, and waits until
 * its health endpoint answers (active or passive). A process that dies first is reported with
 * the error it printed, so `up --detach` fails as clearly as the foreground would.
 */
export async function launchDetached(request: LaunchRequest): Promise<LaunchedNode> {
  const { logFile } = processFiles(request.dataDir, request.name, request.replica);
  // --json: a failure is printed as one JSON line, which startFailure() reads back from the log.
  const args = [LOCKSTEP_BIN, "node", "start", request.name, "--config", request.configPath, "--json"];
  if (request.replica) args.push("--replica", request.replica, "--port", String(request.port));
  if (request.noAdmit) args.push("--no-admit");
  const log = openSync(logFile, "a");
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ["ignore", log, log],
    env: { ...process.env, ...request.env },
  });
  child.unref();
  const pid = child.pid as number;
  let exitCode: number | null = null;
  child.on("exit", (code) => {
    exitCode = code ?? 1;
  });
  const deadline = Date.now() + (request.timeoutMs ?? 60_000);
  while (Date.now() < deadline) {
    if (exitCode !== null || !isAlive(pid)) throw startFailure(request.name, logFile);
    const role = await healthRole(request.endpoint.url);
    // "failed" counts as started: the node stays up on purpose to show its error and remedy in
    // status (e.g. a fork detected right after a restore), which is the answer the operator needs.
    if (role === "active" || role === "passive" || role === "failed") {
      const { name, replica, port, endpoint } = request;
      return { name, replica, pid, port, address: endpoint.address, role, logFile };
    }
    await sleep(200);
  }
  throw new LockstepError("NODE_START_FAILED", {
    node: request.name,
    reason: `no healthy answer at ${request.endpoint.address} within ${(request.timeoutMs ?? 60_000) / 1000}s`,
    logFile,
  });
}

async function healthRole(url: string): Promise<string | undefined> {
  try {
    // Not fetch(): an https node needs the network's CA (tls-client.ts).
    const { body } = await getJson(`${url}/health`, 1000);
    return (body as { status?: string } | undefined)?.status;
  } catch {
    return undefined;
  }
}

/** Rebuilds the error the child printed (`{"error": …}` under --json) from its log. */
function startFailure(name: string, logFile: string): LockstepError {
  const tail = logTail(logFile, 40);
  for (const line of tail.split("\n").reverse()) {
    if (!line.startsWith('{"error"')) continue;
    try {
      const { error } = JSON.parse(line) as { error: { code: string; metadata?: Record<string, string> } };
      if (ERRORS.has(error.code as ErrorCodeName))
        return new LockstepError(error.code as ErrorCodeName, error.metadata ?? {});
    } catch {
      // not our line
    }
  }
  return new LockstepError("NODE_START_FAILED", { node: name, reason: tail, logFile });
}
