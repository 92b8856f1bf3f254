/**
 * Fail-over benchmark (issue 12). Section `takeover`: the time from SIGKILL of a participant's active
 * process to its passive process (`node start NAME --replica ID --port P`, same database) serving the
 * Ledger API, median of BENCH_RUNS kills, on a network started as an operator would (`up --detach`,
 * embedded PostgreSQL 15, fsync on). Printed beside two baselines measured in the same run:
 *
 *   - lock release: SIGKILL of a bare process holding a session advisory lock on the same cluster, to
 *     another session's pg_try_advisory_lock succeeding (polled every millisecond): the floor that
 *     PostgreSQL and the kernel set, before any Lockstep code runs;
 *   - cold restart: SIGKILL of the only process, then at once `lockstep node start NAME --detach`,
 *     to the new process serving the Ledger API: what a supervisor that restarts at once gets without
 *     a passive process (the figure a passive process is there to beat).
 *
 * Each is measured to the first Ledger API read answered (StateService.GetLedgerEnd) and to the first
 * command committed (CommandService.SubmitAndWait of an Iou), probing every 10 ms.
 *
 *   npm run bench:failover        # BENCH_RUNS=5 BENCH_SECTIONS=takeover,sync-standby
 *
 * Sections are independent and report into one table; `sync-standby` (bench/sync-standby.ts) is the
 * ledger throughput with a synchronous standby beside the same without it (goal ≥ 0.6×).
 */

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { stringify } from "yaml";
import { type LockstepRun, runLockstep } from "../src/cli/self-process.ts";
import { fromConnectError } from "../src/common/connect-errors.ts";
import { freePort, LOOPBACK } from "../src/common/loopback.ts";
import { createNodeClient, nodeBaseUrl } from "../src/common/rpc-client.ts";
import { CommandService } from "../src/gen/lockstep/ledger/v1/command_service_pb.ts";
import { PartyManagementService } from "../src/gen/lockstep/ledger/v1/party_management_service_pb.ts";
import { StateService } from "../src/gen/lockstep/ledger/v1/state_service_pb.ts";
import { embeddedClusterDir } from "../src/node/node-database.ts";
import { livePid, processFiles } from "../src/node/process-files.ts";
import { LocalPostgres } from "../src/storage/local-postgres.ts";
import { createIouCommand } from "../test/support/ledger-network.ts";
import { syncStandbySection } from "./sync-standby.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const SECTIONS = (process.env.BENCH_SECTIONS ?? "takeover,sync-standby").split(",");
const PROBE_MS = 10;
const NODE = "participant1";

const base = mkdtempSync(join(tmpdir(), "lockstep-bench-failover-"));
const configPath = join(base, "lockstep.yaml");
const dataDir = join(base, "data");

function lockstep(args: string[]): Promise<LockstepRun> {
  return runLockstep([...args, "--config", configPath], {
    env: { ...process.env, LOCKSTEP_LOG_LEVEL: "warn" },
  });
}

/** One figure of the run's table: a median in ms (or a ratio), with what it is compared to. */
interface Figure {
  section: string;
  what: string;
  samples: number[];
  unit: "ms" | "tx/s";
  goal?: string;
}

const figures: Figure[] = [];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** A process of the participant: the one at its configured port, or the replica. */
interface Proc {
  replica?: string;
  port: number;
}

interface Network {
  procs: [Proc, Proc];
  party: string;
  pgPort: number;
}

async function startNetwork(): Promise<Network> {
  const ports = { sequencer: await freePort(), mediator: await freePort(), p1: await freePort() };
  writeFileSync(
    configPath,
    stringify({
      "data-dir": dataDir,
      synchronizer: {
        id: "bench",
        sequencer: { name: "sequencer1", port: ports.sequencer },
        mediator: { name: "mediator1", port: ports.mediator },
      },
      participants: [{ name: NODE, port: ports.p1, "ledger-api": { auth: { type: "off" } } }],
      backup: { repository: join(base, "backups") },
    }),
  );
  const up = await lockstep(["up", "--detach", "--json"]);
  if (up.code !== 0) throw new Error(`lockstep up failed: ${up.stdout}${up.stderr}`);
  const procs: [Proc, Proc] = [{ port: ports.p1 }, { replica: "r2", port: await freePort() }];
  const party = (
    await createNodeClient(PartyManagementService, nodeBaseUrl(ports.p1)).allocateParty({
      partyIdHint: "alice",
    })
  ).party;
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(dataDir) });
  const { port: pgPort } = await cluster.start();
  return { procs, party, pgPort };
}

async function startProcess(proc: Proc): Promise<LockstepRun> {
  const replica = proc.replica ? ["--replica", proc.replica, "--port", String(proc.port)] : [];
  const run = await lockstep(["node", "start", NODE, ...replica, "--detach", "--json"]);
  if (run.code !== 0) throw new Error(`node start ${NODE} ${replica.join(" ")}: ${run.stdout}${run.stderr}`);
  return run;
}

async function healthOf(proc: Proc): Promise<string | undefined> {
  try {
    const r = await fetch(`${nodeBaseUrl(proc.port)}/health`, { signal: AbortSignal.timeout(1000) });
    return ((await r.json()) as { status?: string }).status;
  } catch {
    return undefined;
  }
}

function pidOf(proc: Proc): number {
  const pid = livePid(processFiles(dataDir, NODE, proc.replica).pidFile);
  if (!pid) throw new Error(`no live process for ${NODE}${proc.replica ? ` (${proc.replica})` : ""}`);
  return pid;
}

let commandSeq = 0;

/** From `since`: ms to the first GetLedgerEnd that `proc` answers, and to the first command it commits. */
async function untilServing(
  proc: Proc,
  party: string,
  since: number,
): Promise<{ read: number; command: number }> {
  const url = nodeBaseUrl(proc.port);
  const state = createNodeClient(StateService, url);
  const commands = createNodeClient(CommandService, url);
  let read = Number.NaN;
  for (;;) {
    try {
      await state.getLedgerEnd({}, { timeoutMs: 1000 });
      read = performance.now() - since;
      break;
    } catch {
      await sleep(PROBE_MS);
    }
  }
  const commandId = `failover-${process.pid}-${commandSeq++}`;
  for (;;) {
    try {
      await commands.submitAndWait(
        { commands: createIouCommand(commandId, party, party, { userId: "bench-failover", amount: "1.00" }) },
        { timeoutMs: 30_000 },
      );
      return { read, command: performance.now() - since };
    } catch (error) {
      const code = fromConnectError(error)?.code;
      // Not accepted (passive, or still connecting to the sequencer), or not known: send it again.
      if (code === "DUPLICATE_COMMAND") return { read, command: performance.now() - since };
      await sleep(PROBE_MS);
    }
  }
}

/** Baseline 1: SIGKILL of a process holding a session advisory lock → another session gets it. */
async function lockReleaseMs(pgPort: number): Promise<number> {
  const lockId = 4242;
  const holder = spawn(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import pg from "pg";
       const c = new pg.Client({ host: ${JSON.stringify(LOOPBACK)}, port: ${pgPort}, user: "postgres", database: "postgres" });
       await c.connect();
       await c.query("SELECT pg_advisory_lock(${lockId})");
       process.stdout.write("locked\\n");
       setInterval(() => {}, 1000);`,
    ],
    { cwd: process.cwd(), stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve, reject) => {
    holder.stdout.once("data", () => resolve());
    holder.once("exit", (code) => reject(new Error(`lock holder exited (${code})`)));
  });
  const other = new pg.Client({ host: LOOPBACK, port: pgPort, user: "postgres", database: "postgres" });
  await other.connect();
  try {
    const exited = new Promise((resolve) => holder.once("exit", resolve));
    holder.kill("SIGKILL");
    const killed = performance.now();
    for (;;) {
      const { rows } = await other.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1) AS ok", [lockId]);
      if (rows[0]?.ok) {
        const ms = performance.now() - killed;
        await other.query("SELECT pg_advisory_unlock($1)", [lockId]);
        await exited;
        return ms;
      }
      await sleep(1);
    }
  } finally {
    await other.end();
  }
}

async function takeoverSection(network: Network): Promise<void> {
  const { procs, party, pgPort } = network;
  const lockRelease: number[] = [];
  for (let i = 0; i < RUNS; i++) lockRelease.push(await lockReleaseMs(pgPort));

  // Passive replica beside the active process: kill whichever is active, alternating.
  await startProcess(procs[1]);
  const takeoverRead: number[] = [];
  const takeoverCommand: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const roles = await Promise.all(procs.map(healthOf));
    const activeIndex = roles.indexOf("active");
    if (activeIndex < 0 || roles[1 - activeIndex] !== "passive")
      throw new Error(`roles before run ${i}: ${roles}`);
    const active = procs[activeIndex] as Proc;
    const passive = procs[1 - activeIndex] as Proc;
    process.kill(pidOf(active), "SIGKILL");
    const t = await untilServing(passive, party, performance.now());
    takeoverRead.push(t.read);
    takeoverCommand.push(t.command);
    console.log(
      `takeover ${i + 1}/${RUNS}: ${active.replica ?? "main"} killed → ${passive.replica ?? "main"} read ${t.read.toFixed(0)} ms, command ${t.command.toFixed(0)} ms`,
    );
    await startProcess(active); // back as the passive one
  }

  // Cold restart: only one process; kill it and start a new one at once. Stopping the replica hands
  // the lock to the main process if the replica held it.
  const lone = procs[0];
  await lockstep(["node", "stop", NODE, "--replica", "r2"]);
  for (let i = 0; (await healthOf(lone)) !== "active"; i++) {
    if (i > 200) throw new Error("the main process did not become active after the replica stopped");
    await sleep(50);
  }
  const coldRead: number[] = [];
  const coldCommand: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    process.kill(pidOf(lone), "SIGKILL");
    const killed = performance.now();
    const restarted = startProcess(lone);
    const t = await untilServing(lone, party, killed);
    await restarted;
    coldRead.push(t.read);
    coldCommand.push(t.command);
    console.log(
      `cold restart ${i + 1}/${RUNS}: read ${t.read.toFixed(0)} ms, command ${t.command.toFixed(0)} ms`,
    );
  }

  const section = "takeover";
  figures.push(
    {
      section,
      what: "SIGKILL → passive answers a Ledger API read",
      samples: takeoverRead,
      unit: "ms",
      goal: "≤ 2000",
    },
    { section, what: "SIGKILL → passive commits a command", samples: takeoverCommand, unit: "ms" },
    {
      section,
      what: "baseline: PostgreSQL frees a killed session's advisory lock",
      samples: lockRelease,
      unit: "ms",
    },
    { section, what: "baseline: cold restart answers a Ledger API read", samples: coldRead, unit: "ms" },
    { section, what: "baseline: cold restart commits a command", samples: coldCommand, unit: "ms" },
  );
  const ratio = median(coldRead) / median(takeoverRead);
  console.log(`takeover is ${ratio.toFixed(1)}× faster than a cold restart (reads, medians)`);
}

async function main(): Promise<void> {
  console.log(
    `machine: ${cpus().length} cpus (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB, node ${process.version}; load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`,
  );
  for (const section of SECTIONS) {
    if (section === "takeover") await takeoverSection(await startNetwork());
    else if (section === "sync-standby") figures.push(...(await syncStandbySection()));
    else throw new Error(`unknown section ${section} (known: takeover, sync-standby)`);
  }
  console.log("\n| section | figure | median | min | max | runs | goal |\n|---|---|---|---|---|---|---|");
  for (const f of figures) {
    const fmt = (v: number) => (f.unit === "ms" ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} tx/s`);
    console.log(
      `| ${f.section} | ${f.what} | ${fmt(median(f.samples))} | ${fmt(Math.min(...f.samples))} | ${fmt(Math.max(...f.samples))} | ${f.samples.length} | ${f.goal ?? ""} |`,
    );
  }
}

try {
  await main();
} finally {
  await lockstep(["down"]);
  rmSync(base, { recursive: true, force: true });
}
process.exit(0);
