/**
 * Moves one database from a scratch cluster (a physical restore) into the node's target database on
 * another server: pg_dump of the source piped straight into pg_restore of the target, nothing on disk
 * in between. PostgreSQL cannot move a database's files between clusters (relation file numbers,
 * transaction ids and the commit log are the cluster's), so this is the one step of a physical
 * restore that is logical; docs/backup.md explains when a node gets a cluster of its own instead.
 */
import { spawn } from "node:child_process";
import { LockstepError } from "../../common/errors.ts";
import { findClientTools } from "../../storage/postgres-binaries.ts";

export interface CopyOptions {
  /** Drop the target's objects first (a non-empty target). */
  clean?: boolean;
  signal?: AbortSignal;
}

function tail(text: string): string {
  return text.trim().slice(-2000);
}

/** Keeps a password out of messages. */
function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, "//$1@");
}

export async function copyDatabase(
  sourceUrl: string,
  targetUrl: string,
  options: CopyOptions = {},
): Promise<void> {
  const tools = findClientTools();
  const spawnOptions = { ...(options.signal ? { signal: options.signal } : {}) };
  const dump = spawn(tools.pgDump, ["--format=c", "--compress=0", "--no-password", `--dbname=${sourceUrl}`], {
    stdio: ["ignore", "pipe", "pipe"],
    ...spawnOptions,
  });
  const restore = spawn(
    tools.pgRestore,
    [
      `--dbname=${targetUrl}`,
      "--no-password",
      "--no-owner",
      "--no-privileges",
      "--exit-on-error",
      ...(options.clean ? ["--clean", "--if-exists"] : []),
    ],
    { stdio: ["pipe", "ignore", "pipe"], ...spawnOptions },
  );
  let dumpErr = "";
  let restoreErr = "";
  dump.stderr?.on("data", (d: Buffer) => {
    dumpErr = (dumpErr + d.toString()).slice(-4000);
  });
  restore.stderr?.on("data", (d: Buffer) => {
    restoreErr = (restoreErr + d.toString()).slice(-4000);
  });
  // A closed pipe on one side shows up as the other side's exit code: ignore EPIPE here.
  restore.stdin?.on("error", () => {});
  dump.stdout?.pipe(restore.stdin as NodeJS.WritableStream);
  const exited = (child: ReturnType<typeof spawn>) =>
    new Promise<number | string>((resolve) => {
      child.on("error", (error) => resolve(error.message));
      child.on("close", (code, signal) => resolve(code ?? signal ?? "?"));
    });
  const [dumpCode, restoreCode] = await Promise.all([exited(dump), exited(restore)]);
  if (dumpCode !== 0 || restoreCode !== 0) {
    const reason =
      dumpCode !== 0
        ? `pg_dump of the restored database exited ${dumpCode}: ${tail(dumpErr)}`
        : `pg_restore into ${redact(targetUrl)} exited ${restoreCode}: ${tail(restoreErr)}`;
    throw new LockstepError("POSTGRES_FAILED", {
      dataDir: redact(targetUrl),
      reason,
      logFile: "the message above",
    });
  }
}
