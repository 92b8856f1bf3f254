import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isAlive } from "../storage/server-process.ts";

/** Pid and log files of node processes under the data dir (docs/cli.md: `up --detach`, `down`). */
export interface ProcessFiles {
  pidFile: string;
  logFile: string;
}

function baseName(name: string, replica?: string): string {
  return replica ? `${name}.${replica}` : name;
}

export function processFiles(dataDir: string, name: string, replica?: string): ProcessFiles {
  return {
    pidFile: join(dataDir, "run", `${baseName(name, replica)}.pid`),
    logFile: join(dataDir, "logs", `${baseName(name, replica)}.log`),
  };
}

export function ensureProcessDirs(dataDir: string): void {
  mkdirSync(join(dataDir, "run"), { recursive: true });
  mkdirSync(join(dataDir, "logs"), { recursive: true });
}

export { isAlive };

/** The pid in a pid file if that process is still alive; a stale file is removed. */
export function livePid(pidFile: string): number | undefined {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(pidFile, "utf8"), 10);
  } catch {
    return undefined;
  }
  if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) return pid;
  rmSync(pidFile, { force: true });
  return undefined;
}

/** The pid on the first line; a replica's own port on the second (status and switch-over find it there). */
export function writePidFile(pidFile: string, pid: number, port?: number): void {
  writeFileSync(pidFile, port === undefined ? `${pid}\n` : `${pid}\n${port}\n`);
}

/** The port written beside the pid, if any. */
function pidFilePort(pidFile: string): number | undefined {
  try {
    const port = Number.parseInt(readFileSync(pidFile, "utf8").split("\n")[1] ?? "", 10);
    return Number.isInteger(port) && port > 0 ? port : undefined;
  } catch {
    return undefined;
  }
}

export function removePidFile(pidFile: string, pid: number): void {
  // Only our own: a replica or a restarted node may have rewritten it.
  try {
    if (Number.parseInt(readFileSync(pidFile, "utf8"), 10) === pid) rmSync(pidFile, { force: true });
  } catch {
    // already gone
  }
}

export interface RunningProcess {
  name: string;
  replica?: string;
  pid: number;
  pidFile: string;
  /** A replica's own port (from its pid file). */
  port?: number;
}

/** Every node process with a live pid file under the data dir. */
export function runningProcesses(dataDir: string): RunningProcess[] {
  let files: string[];
  try {
    files = readdirSync(join(dataDir, "run")).filter((f) => f.endsWith(".pid"));
  } catch {
    return [];
  }
  const result: RunningProcess[] = [];
  for (const file of files) {
    const pidFile = join(dataDir, "run", file);
    const pid = livePid(pidFile);
    if (pid === undefined) continue;
    const [name, replica] = file.slice(0, -".pid".length).split(".");
    result.push({ name: name as string, replica, pid, pidFile, port: pidFilePort(pidFile) });
  }
  return result;
}

/** The last lines of a log file, to explain why a detached process died. */
export function logTail(logFile: string, lines = 15): string {
  try {
    return readFileSync(logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Sends SIGTERM, waits for exit, then SIGKILL after the grace period. */
export async function terminate(pid: number, graceMs = 15_000): Promise<"terminated" | "killed" | "gone"> {
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return "gone";
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return "terminated";
    await sleep(100);
  }
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return "terminated";
  }
  return "killed";
}
