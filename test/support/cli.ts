import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { freePort } from "../../src/node/free-port.ts";

const BIN = fileURLToPath(new URL("../../bin/lockstep.js", import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON (commands run with --json print one document). */
  json: <T = Record<string, unknown>>() => T;
}

/** Runs the real `lockstep` binary as a subprocess, as an operator would. */
export function runLockstep(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, LOCKSTEP_LOG_LEVEL: "warn", ...options.env },
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
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`lockstep ${args.join(" ")} timed out\n${stderr}`));
    }, options.timeoutMs ?? 120_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr, json: <T>() => JSON.parse(stdout) as T });
    });
  });
}

export interface TestNetworkConfig {
  dir: string;
  configPath: string;
  ports: { sequencer: number; mediator: number; participants: number[] };
}

/** Writes a lockstep.yaml for a network on free ports with its data dir in a fresh temp dir. */
export async function writeTestConfig(participants = 2): Promise<TestNetworkConfig> {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-cli-"));
  const ports = { sequencer: await freePort(), mediator: await freePort(), participants: [] as number[] };
  for (let i = 0; i < participants; i++) ports.participants.push(await freePort());
  const config = {
    "data-dir": "data",
    synchronizer: {
      id: "sync1",
      sequencer: { name: "sequencer1", port: ports.sequencer },
      mediator: { name: "mediator1", port: ports.mediator },
    },
    participants: ports.participants.map((port, i) => ({ name: `participant${i + 1}`, port })),
    backup: { repository: "backups" },
  };
  const configPath = join(dir, "lockstep.yaml");
  writeFileSync(configPath, stringify(config));
  return { dir, configPath, ports };
}
