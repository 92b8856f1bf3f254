import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The `lockstep` entry point, for commands that run other lockstep commands (up --detach, demo). */
export const LOCKSTEP_BIN = fileURLToPath(new URL("../../bin/lockstep.js", import.meta.url));

/** What a `lockstep` subprocess did: its exit code and everything it wrote. */
export interface LockstepRun {
  /**
   * The exit code; -1 when the child was killed by a signal (`signal` names it). Never 1 or
   * another real code: those are error categories (errors.ts), and a crash must not pass for one.
   */
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface LockstepRunOptions {
  /** The child's whole environment; process.env by default. */
  env?: NodeJS.ProcessEnv;
  /** Kills the child (SIGKILL) and rejects after this long; no limit by default. */
  timeoutMs?: number;
}

/**
 * Runs `lockstep ARGS` as a subprocess, exactly as an operator would, and collects its output: the
 * one way the CLI (demo), the benchmarks and the tests run lockstep. Rejects only when the child
 * cannot be started or runs past timeoutMs; a failing command resolves with its code.
 */
export function runLockstep(args: readonly string[], options: LockstepRunOptions = {}): Promise<LockstepRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LOCKSTEP_BIN, ...args], {
      env: options.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            child.kill("SIGKILL");
            reject(new Error(`lockstep ${args.join(" ")} timed out\n${stderr}`));
          }, options.timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, signal, stdout, stderr });
    });
  });
}

export interface SelfResult extends LockstepRun {
  /** stdout parsed as JSON (the command ran with --json), or undefined when it is not JSON. */
  json: Record<string, unknown> | undefined;
}

/** runLockstep with `--json`, its stdout parsed. */
export async function runLockstepJson(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<SelfResult> {
  const run = await runLockstep([...args, "--json"], { env });
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(run.stdout) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { ...run, json };
}
