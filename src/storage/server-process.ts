import { execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, lstatSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";

/**
 * OS plumbing for the local PostgreSQL server: running its tools as the right user, pid
 * liveness (the one isAlive), ownership. Kept apart so local-postgres.ts reads as cluster logic.
 * Free ports and the loopback address: common/loopback.ts.
 */

export interface RunAs {
  uid: number;
  gid: number;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: alive, but another user's (the postgres user's, when we are not root).
    return (error as NodeJS.ErrnoException).code === "EPERM" && !isZombie(pid);
  }
  return !isZombie(pid);
}

/**
 * A killed process whose parent never reaps it (a detached node under an init that does not, as in
 * some containers) still answers kill(pid, 0): on Linux its state in /proc says it is a zombie.
 */
function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z";
  } catch {
    return false;
  }
}

export interface RunResult {
  /** The exit code; -1 when it could not be started, or was killed by a signal (e.g. on abort). */
  code: number;
  /** stdout and stderr interleaved as they came. */
  output: string;
  stdout: string;
  stderr: string;
  /** Why it could not run or was stopped, e.g. "ENOENT" (no such executable) or "ABORT_ERR". */
  errorCode?: string;
}

/**
 * Runs a PostgreSQL tool (or pgBackRest) to completion, as `runAs` when given; never rejects.
 * `signal` kills it (SIGTERM): the result then has code -1 and the caller tells why from the signal.
 */
export function run(
  file: string,
  args: string[],
  cwd: string,
  runAs?: RunAs,
  options: { signal?: AbortSignal } = {},
): Promise<RunResult> {
  return new Promise((resolveRun) => {
    const child = spawn(file, args, {
      cwd,
      env: { ...process.env, LC_ALL: "C", LANG: "C" },
      stdio: ["ignore", "pipe", "pipe"],
      ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const result: RunResult = { code: -1, output: "", stdout: "", stderr: "" };
    let done = false;
    const finish = (code: number) => {
      if (done) return;
      done = true;
      resolveRun({ ...result, code });
    };
    child.stdout.on("data", (d) => {
      result.output += d;
      result.stdout += d;
    });
    child.stderr.on("data", (d) => {
      result.output += d;
      result.stderr += d;
    });
    child.on("error", (error) => {
      result.output += error.message;
      result.stderr += error.message;
      result.errorCode = (error as NodeJS.ErrnoException).code;
      finish(-1);
    });
    child.on("close", (code) => finish(code ?? -1));
    // Should a grandchild keep our pipes open, do not wait for it once the tool itself exited.
    child.on("exit", (code) => setTimeout(() => finish(code ?? -1), 1000).unref());
  });
}

/** uid/gid of the OS user `postgres`, or undefined when there is none. */
export function postgresOsUser(): RunAs | undefined {
  try {
    const id = (flag: string) =>
      Number.parseInt(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }), 10);
    return { uid: id("-u"), gid: id("-g") };
  } catch {
    return undefined;
  }
}

export function chownTree(path: string, owner: RunAs): void {
  const st = lstatSync(path);
  if (st.uid !== owner.uid || st.gid !== owner.gid) chownSync(path, owner.uid, owner.gid);
  if (st.isDirectory()) for (const entry of readdirSync(path)) chownTree(join(path, entry), owner);
}

/**
 * Gives `user` search permission (only that) on `dir` and its ancestors where it lacks it, so the
 * server can reach a data dir under e.g. /root or a 0700 temp dir. Returns the dirs it changed.
 */
export function makeTraversable(dir: string, user: RunAs): string[] {
  const changed: string[] = [];
  for (let current = dir; ; current = dirname(current)) {
    const st = statSync(current);
    const bit = st.uid === user.uid ? 0o100 : st.gid === user.gid ? 0o010 : 0o001;
    if ((st.mode & bit) === 0) {
      chmodSync(current, (st.mode & 0o7777) | bit);
      changed.push(current);
    }
    if (current === dirname(current)) return changed;
  }
}
