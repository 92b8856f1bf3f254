/**
 * End-to-end ledger throughput: SubmitAndWait transactions per second and p50/p99 latency with 1, 8
 * and 32 concurrent clients spread over two participants, on a network started as an operator
 * would (`lockstep up --detach`: every node its own process, the embedded PostgreSQL 15 with fsync
 * on). Printed beside a baseline measured in the same run on the same cluster (pgbench, one
 * client, single-row INSERT commits per second) and their ratio, with each node's CPU use during
 * each phase and its peak RSS (VmHWM).
 *
 *   npm run bench:ledger        # BENCH_SECONDS=15 BENCH_CLIENTS=1,8,32 BENCH_BASELINE_SECONDS=10
 *
 * BENCH_CPU_PROF=DIR starts the nodes with --cpu-prof (profiles written to DIR at `down`).
 */

import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, freemem, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Client } from "@connectrpc/connect";
import pg from "pg";
import { stringify } from "yaml";
import { type LockstepRun, runLockstep } from "../src/cli/self-process.ts";
import { fromConnectError } from "../src/common/connect-errors.ts";
import { freePort, LOOPBACK } from "../src/common/loopback.ts";
import { createNodeClient, nodeBaseUrl } from "../src/common/rpc-client.ts";
import { CommandService } from "../src/gen/lockstep/ledger/v1/command_service_pb.ts";
import { PartyManagementService } from "../src/gen/lockstep/ledger/v1/party_management_service_pb.ts";
import { embeddedClusterDir } from "../src/node/node-database.ts";
import { LocalPostgres } from "../src/storage/local-postgres.ts";
import { pgbenchInserts } from "./pgbench-baseline.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 3);
const CLIENTS = (process.env.BENCH_CLIENTS ?? "1,8,32").split(",").map(Number);
const CPU_PROF = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;
const CLK_TCK = 100; // Linux USER_HZ: /proc/PID/stat counts CPU time in 1/100 s.

/** Profiles the process from start to exit; the session is synchronous, so the exit handler can write. */
const CPU_PROF_PRELOAD = `
import { Session } from "node:inspector";
import { writeFileSync } from "node:fs";
const session = new Session();
session.connect();
session.post("Profiler.enable");
session.post("Profiler.setSamplingInterval", { interval: 1000 });
session.post("Profiler.start");
process.on("exit", () => {
  session.post("Profiler.stop", (err, r) => {
    if (!err) writeFileSync(DIR + "/" + process.argv.slice(2, 5).join("-").replace(/[^\\w.-]/g, "_") + "-" + process.pid + ".cpuprofile", JSON.stringify(r.profile));
  });
});
`;

const base = mkdtempSync(join(tmpdir(), "lockstep-bench-ledger-"));
const configPath = join(base, "lockstep.yaml");
const dataDir = join(base, "data");

function lockstep(args: string[], env: NodeJS.ProcessEnv = {}): Promise<LockstepRun> {
  return runLockstep([...args, "--config", configPath], {
    env: { ...process.env, LOCKSTEP_LOG_LEVEL: "warn", ...env },
  });
}

/** utime + stime of a process in seconds; 0 once it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

function parentOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return -1;
  }
}

/** The postmaster and its children (backends, WAL writer, checkpointer, …). */
function postgresPids(): number[] {
  const postmaster = Number(
    readFileSync(join(embeddedClusterDir(dataDir), "data", "postmaster.pid"), "utf8").split("\n")[0],
  );
  const children = readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => parentOf(pid) === postmaster);
  return [postmaster, ...children];
}

function vmHwmMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

/** Cumulative counters at one moment: CPU seconds per process group, commits per database. */
interface Sample {
  cpu: Map<string, number>;
  postgresPids: Map<number, number>;
  commits: Map<string, number>;
}

async function sample(nodes: { name: string; pid: number }[], stats: pg.Client): Promise<Sample> {
  const cpu = new Map(nodes.map((n) => [n.name, cpuSeconds(n.pid)]));
  const usage = process.cpuUsage();
  cpu.set("bench clients", (usage.user + usage.system) / 1e6);
  const postgres = new Map(postgresPids().map((pid) => [pid, cpuSeconds(pid)]));
  const { rows } = await stats.query<{ datname: string; xact_commit: string }>(
    "SELECT datname, xact_commit FROM pg_stat_database WHERE datname IS NOT NULL",
  );
  return {
    cpu,
    postgresPids: postgres,
    commits: new Map(rows.map((r) => [r.datname, Number(r.xact_commit)])),
  };
}

/** CPU (cores) per process group and commits per second per database between two samples. */
function rates(before: Sample, after: Sample, seconds: number) {
  const cpu = new Map([...after.cpu].map(([k, v]) => [k, (v - (before.cpu.get(k) ?? 0)) / seconds]));
  // Backends come and go: count only the processes alive at both samples.
  let postgres = 0;
  for (const [pid, v] of after.postgresPids) {
    const was = before.postgresPids.get(pid);
    if (was !== undefined) postgres += v - was;
  }
  cpu.set("postgres", postgres / seconds);
  const commits = new Map(
    [...after.commits].map(([k, v]) => [k, (v - (before.commits.get(k) ?? 0)) / seconds] as const),
  );
  return { cpu, commits };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

interface PhaseResult {
  clients: number;
  tps: number;
  p50: number;
  p99: number;
  committed: number;
  errors: Map<string, number>;
  /** Cores used per process group. */
  cpu: Map<string, number>;
  /** Commits per second per node database. */
  commits: Map<string, number>;
  /** Share of sampled node-database backends per state / wait event, e.g. "participant1 active IO:WALSync". */
  waits: Map<string, number>;
}

/**
 * Samples pg_stat_activity of the node databases every 50 ms: where their sessions spend the time
 * (running, waiting for a lock or a WAL flush, or idle in a transaction while the node computes).
 */
function sampleWaits(stats: pg.Client, until: () => boolean): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  let samples = 0;
  return (async () => {
    while (!until()) {
      const { rows } = await stats.query<{ datname: string; state: string; wait: string | null }>(
        `SELECT datname, state, wait_event_type || ':' || wait_event AS wait FROM pg_stat_activity
          WHERE datname NOT IN ('postgres', 'bench_baseline') AND backend_type = 'client backend'
            AND state <> 'idle' AND pid <> pg_backend_pid()`,
      );
      samples++;
      for (const r of rows) {
        const key = `${r.datname} ${r.state}${r.wait ? ` ${r.wait}` : ""}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
      await sleep(50);
    }
    return new Map([...counts].map(([k, v]) => [k, v / Math.max(1, samples)]));
  })();
}

type Submitter = { client: Client<typeof CommandService>; party: string; other: string };

/** `clients` loops of SubmitAndWait (creating an Iou), alternating participants; counted after a warm-up. */
async function phase(
  clients: number,
  submitters: Submitter[],
  nodes: { name: string; pid: number }[],
  stats: pg.Client,
): Promise<PhaseResult> {
  const latencies: number[] = [];
  const errors = new Map<string, number>();
  let measuring = false;
  let stop = false;
  let seq = 0;
  const loop = async (i: number) => {
    const s = submitters[i % submitters.length] as Submitter;
    while (!stop) {
      const commandId = `bench-${clients}-${i}-${seq++}`;
      const started = performance.now();
      try {
        await s.client.submitAndWait({
          commands: {
            userId: "bench",
            commandId,
            actAs: [s.party],
            command: {
              case: "create",
              value: {
                template: "Iou",
                createArguments: { issuer: s.party, owner: s.other, amount: "1.00", currency: "USD" },
              },
            },
          },
        });
        if (measuring) latencies.push(performance.now() - started);
      } catch (error) {
        const code = fromConnectError(error)?.code ?? String(error).slice(0, 80);
        if (measuring) errors.set(code, (errors.get(code) ?? 0) + 1);
      }
    }
  };
  const running = Array.from({ length: clients }, (_, i) => loop(i));
  await sleep(WARMUP_SECONDS * 1000);
  measuring = true;
  const waits = sampleWaits(stats, () => !measuring);
  const before = await sample(nodes, stats);
  const t0 = performance.now();
  await sleep(SECONDS * 1000);
  measuring = false;
  const elapsed = (performance.now() - t0) / 1000;
  const after = await sample(nodes, stats);
  stop = true;
  await Promise.all(running);
  latencies.sort((a, b) => a - b);
  const { cpu, commits } = rates(before, after, elapsed);
  return {
    clients,
    tps: latencies.length / elapsed,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    committed: latencies.length,
    errors,
    cpu,
    commits,
    waits: await waits,
  };
}

async function main(): Promise<void> {
  const ports = {
    sequencer: await freePort(),
    mediator: await freePort(),
    p1: await freePort(),
    p2: await freePort(),
  };
  writeFileSync(
    configPath,
    stringify({
      "data-dir": dataDir,
      synchronizer: {
        id: "bench",
        sequencer: { name: "sequencer1", port: ports.sequencer },
        mediator: { name: "mediator1", port: ports.mediator },
      },
      participants: [
        { name: "participant1", port: ports.p1, "ledger-api": { auth: { type: "off" } } },
        { name: "participant2", port: ports.p2, "ledger-api": { auth: { type: "off" } } },
      ],
      backup: { repository: join(base, "backups") },
    }),
  );
  const env: NodeJS.ProcessEnv = {};
  if (CPU_PROF) {
    // --cpu-prof is refused in NODE_OPTIONS; a preloaded inspector session does the same job.
    mkdirSync(CPU_PROF, { recursive: true });
    const preload = join(base, "cpu-prof.mjs");
    writeFileSync(preload, CPU_PROF_PRELOAD.replace("DIR", JSON.stringify(CPU_PROF)));
    env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ""} --import ${preload}`.trim();
  }
  const up = await lockstep(["up", "--detach", "--json"], env);
  if (up.code !== 0) throw new Error(`lockstep up failed: ${up.stdout}${up.stderr}`);
  const nodes = (JSON.parse(up.stdout) as { nodes: { name: string; pid: number }[] }).nodes;

  const cluster = new LocalPostgres({ dir: embeddedClusterDir(dataDir) });
  const { port: pgPort } = await cluster.start();
  await cluster.ensureDatabase("bench_baseline");
  const stats = new pg.Client({ host: LOOPBACK, port: pgPort, user: "postgres", database: "postgres" });
  await stats.connect();
  const { rows: settingRows } = await stats.query<{ name: string; setting: string }>(
    "SELECT name, setting FROM pg_settings WHERE name IN ('fsync','synchronous_commit','wal_sync_method','server_version') ORDER BY name",
  );
  const settings = settingRows.map((r) => `${r.name}=${r.setting}`).join(", ");
  const cpu0 = cpus()[0]?.model ?? "?";
  console.log(
    `machine: ${cpus().length} cpus (${cpu0}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB (${(freemem() / 2 ** 30).toFixed(1)} free), node ${process.version}`,
  );
  console.log(`PostgreSQL (embedded, shared by all nodes): ${settings}`);
  const baseline = pgbenchInserts({
    binDir: cluster.binaries.binDir,
    port: pgPort,
    database: "bench_baseline",
    workDir: base,
  });
  console.log(
    `baseline: pgbench, 1 client, one-row INSERT per transaction: ${baseline.toFixed(0)} commits/s`,
  );

  const parties = await Promise.all(
    [ports.p1, ports.p2].map(async (port, i) => {
      const client = createNodeClient(PartyManagementService, nodeBaseUrl(port));
      return (await client.allocateParty({ partyIdHint: i === 0 ? "alice" : "bob" })).party;
    }),
  );
  // Wait until each participant's topology knows both parties.
  for (const port of [ports.p1, ports.p2]) {
    const client = createNodeClient(PartyManagementService, nodeBaseUrl(port));
    for (let i = 0; ; i++) {
      const known = (await client.listParties({})).parties.map((p) => p.party);
      if (parties.every((p) => known.includes(p))) break;
      if (i > 300) throw new Error("parties did not become known");
      await sleep(100);
    }
  }
  const submitters: Submitter[] = [
    {
      client: createNodeClient(CommandService, nodeBaseUrl(ports.p1)),
      party: parties[0] as string,
      other: parties[1] as string,
    },
    {
      client: createNodeClient(CommandService, nodeBaseUrl(ports.p2)),
      party: parties[1] as string,
      other: parties[0] as string,
    },
  ];

  const results: PhaseResult[] = [];
  for (const clients of CLIENTS) {
    const r = await phase(clients, submitters, nodes, stats);
    results.push(r);
    const cpu = [...r.cpu].map(([name, c]) => `${name} ${(c * 100).toFixed(0)}%`).join(", ");
    const commitsPerTx = [...r.commits]
      .filter(([db, c]) => c > 0 && db !== "postgres")
      .map(([db, c]) => `${db} ${r.tps > 0 ? (c / r.tps).toFixed(1) : `${c.toFixed(1)}/s`}`)
      .join(", ");
    const waits = [...r.waits]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 8)
      .map(([k, v]) => `${k} ${v.toFixed(2)}`)
      .join(", ");
    const errors = r.errors.size ? ` errors: ${JSON.stringify(Object.fromEntries(r.errors))}` : "";
    console.log(
      `${String(clients).padStart(2)} clients: ${r.tps.toFixed(1)} tx/s (ratio to baseline ${(r.tps / baseline).toFixed(3)}), p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms, ${r.committed} committed${errors}\n   CPU (of one core): ${cpu}\n   commits per transaction: ${commitsPerTx}\n   busy PG sessions (average count): ${waits}`,
    );
  }
  console.log("peak RSS (VmHWM):");
  for (const n of nodes) console.log(`  ${n.name.padEnd(13)} ${vmHwmMiB(n.pid).toFixed(0)} MiB`);
  await stats.end();
  console.log("\n| clients | tx/s | p50 ms | p99 ms | tx/s ÷ baseline |\n|---|---|---|---|---|");
  for (const r of results) {
    console.log(
      `| ${r.clients} | ${r.tps.toFixed(1)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${(r.tps / baseline).toFixed(3)} |`,
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
