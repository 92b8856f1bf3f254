import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The `lockstep` entry point, for commands that run other lockstep commands (up --detach, demo). */
export const LOCKSTEP_BIN = fileURLToPath(new URL("../../bin/lockstep.js", import.meta.url));

export interface SelfResult {
  code: number;
  /** stdout parsed as JSON (the command ran with --json), or undefined when it is not JSON. */
  json: Record<string, unknown> | undefined;
  stderr: string;
}

/** Runs `lockstep ARGS --json` as a subprocess, exactly as an operator would. */
export function runLockstepJson(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<SelfResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LOCKSTEP_BIN, ...args, "--json"], {
      env,
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
    child.on("error", reject);
    child.on("close", (code) => {
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(stdout) as Record<string, unknown>;
      } catch {
        json = undefined;
      }
      resolve({ code: code ?? 1, json, stderr });
    });
  });
}
