import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import pg from "pg";
import { LOCKSTEP_BIN } from "../../src/cli/self-process.ts";
import { embeddedClusterDir, embeddedDatabaseName } from "../../src/node/node-database.ts";
import { processFiles } from "../../src/node/process-files.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { type CliResult, runLockstep } from "./cli.ts";
import type { LedgerClients } from "./ledger-client.ts";
import type { LedgerNetwork } from "./ledger-network.ts";
import { contractKey, createIouCommand, waitFor } from "./ledger-network.ts";

/** What restore scenarios do to a network started with startLedgerNetwork, through the CLI. */

export interface PlanJson {
  set: string;
  ok: boolean;
  checks: {
    node: string;
    check: string;
    verdict: string;
    code: string | null;
    message: string;
    remedy: string | null;
  }[];
}

export interface StatusNode {
  name: string;
  running: boolean;
  role: string | null;
  incarnation: string | null;
  position: Record<string, unknown> | null;
  deduplicationRecovery: Record<string, unknown> | null;
  lastError: { code: string; message: string; remedy: string } | null;
}

function expectOk(r: CliResult, what: string): CliResult {
  assert.equal(r.code, 0, `${what} failed (${r.code}): ${r.stdout}${r.stderr}`);
  return r;
}

/** `lockstep backup create [--nodes …]`; returns the set id. */
export async function backupCreate(n: LedgerNetwork, nodes?: string[]): Promise<string> {
  const args = ["backup", "create", "--json", ...(nodes ? ["--nodes", nodes.join(",")] : []), ...n.cfg];
  const r = expectOk(await runLockstep(args, { timeoutMs: 180_000 }), "backup create");
  return r.json<{ set: string }>().set;
}

export async function nodeStop(n: LedgerNetwork, node: string): Promise<void> {
  expectOk(await runLockstep(["node", "stop", node, "--json", ...n.cfg]), `node stop ${node}`);
}

export async function nodeStart(n: LedgerNetwork, node: string): Promise<void> {
  expectOk(
    await runLockstep(["node", "start", node, "--detach", "--json", ...n.cfg], { timeoutMs: 120_000 }),
    `node start ${node}`,
  );
}

/** Simulates the loss of a node's database (embedded cluster). */
export async function dropNodeDatabase(n: LedgerNetwork, node: string): Promise<void> {
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(n.dataDir) });
  await cluster.start();
  await cluster.dropDatabase(embeddedDatabaseName(node));
}

export function restore(n: LedgerNetwork, verb: "plan" | "apply", set: string, extra: string[] = []) {
  const yes = verb === "apply" ? ["--yes"] : [];
  return runLockstep(["restore", verb, set, "--json", ...yes, ...extra, ...n.cfg], { timeoutMs: 180_000 });
}

export async function status(n: LedgerNetwork): Promise<StatusNode[]> {
  const r = expectOk(await runLockstep(["status", "--json", ...n.cfg]), "status");
  return r.json<{ nodes: StatusNode[] }>().nodes;
}

export async function nodeStatus(n: LedgerNetwork, node: string): Promise<StatusNode> {
  const found = (await status(n)).find((s) => s.name === node);
  assert.ok(found, `status lists ${node}`);
  return found;
}

/** Waits until the node reports lastError with one of the codes; returns it. */
export async function waitForNodeError(n: LedgerNetwork, node: string, codes: string[]): Promise<StatusNode> {
  return waitFor(
    `${node} to fail with ${codes.join(" or ")}`,
    async () => {
      const s = await nodeStatus(n, node);
      return s.lastError && codes.includes(s.lastError.code) ? s : undefined;
    },
    60_000,
    1000,
  );
}

/** Waits until the node's deduplication recovery completed; returns its status (the log on failure). */
export async function waitForRecovery(n: LedgerNetwork, node: string): Promise<StatusNode> {
  return waitFor(
    `${node}'s deduplication recovery to complete`,
    async () => {
      const s = await nodeStatus(n, node);
      return s.deduplicationRecovery === null ? s : undefined;
    },
    60_000,
    500,
  ).catch((error) => {
    throw new Error(`${error}\n${nodeLog(n, node)}`);
  });
}

export function nodeLog(n: LedgerNetwork, node: string): string {
  try {
    return readFileSync(processFiles(n.dataDir, node).logFile, "utf8").slice(-4000);
  } catch {
    return "";
  }
}

/**
 * Runs `lockstep restore apply` and SIGKILLs it as soon as stderr shows `pattern` (a step of the
 * apply), as a crash or an impatient operator would. Resolves with the stderr seen.
 */
export function killApplyAt(
  n: LedgerNetwork,
  set: string,
  extra: string[],
  pattern: RegExp,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [LOCKSTEP_BIN, "restore", "apply", set, "--yes", ...extra, ...n.cfg],
      { env: { ...process.env, LOCKSTEP_LOG_LEVEL: "warn" }, stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    let killed = false;
    child.stderr.on("data", (d) => {
      stderr += d;
      if (!killed && pattern.test(stderr)) {
        killed = true;
        child.kill("SIGKILL");
      }
    });
    child.on("error", reject);
    child.on("close", (code, signal) => {
      if (signal === "SIGKILL") resolve(stderr);
      else reject(new Error(`restore apply ended (${code}) before ${pattern}: ${stderr}`));
    });
  });
}

/** The sorted contract keys of a party's ACS on participant i (0 or 1): what two views are compared by. */
export async function acsKeys(n: LedgerNetwork, i: 0 | 1, party: string): Promise<string[]> {
  const r = await (n.clients[i] as LedgerClients).state.getActiveContracts({ parties: [party] });
  return r.contracts.map(contractKey).sort();
}

/** Creates an Iou on participant i (0 or 1) and waits for its completion there. */
export function createIou(
  n: LedgerNetwork,
  i: 0 | 1,
  id: string,
  issuer: string,
  owner: string,
  amount = "1.00",
) {
  return (n.clients[i] as LedgerClients).commands.submitAndWait(
    { commands: createIouCommand(id, issuer, owner, { amount }) },
    { timeoutMs: 60_000 },
  );
}

/** A lockstep command on the network's config that must succeed (5 minutes at most). */
export async function cliOk(n: LedgerNetwork, ...args: string[]): Promise<CliResult> {
  return expectOk(await runLockstep([...args, ...n.cfg], { timeoutMs: 300_000 }), args.join(" "));
}

/** The embedded cluster's clock: recovery to a time compares it with commit times of that server. */
export async function serverTime(n: LedgerNetwork): Promise<string> {
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(n.dataDir) });
  await cluster.start();
  const client = new pg.Client({ connectionString: cluster.connectionUrl("postgres") });
  await client.connect();
  try {
    return (await client.query<{ t: string }>("SELECT clock_timestamp()::text AS t")).rows[0]?.t as string;
  } finally {
    await client.end();
  }
}
