import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { runLockstep as runSelf } from "../../src/cli/self-process.ts";
import { readAdminTokenFile, registerAdminToken } from "../../src/common/admin-credentials.ts";
import { freePort, LOOPBACK } from "../../src/common/loopback.ts";
import { httpUrl } from "../../src/common/node-endpoint.ts";

export interface CliResult {
  /** -1 when the child was killed by a signal (src/cli/self-process.ts). */
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON (commands run with --json print one document). */
  json: <T = Record<string, unknown>>() => T;
}

/**
 * Runs the real `lockstep` binary as a subprocess, as an operator would: the one spawn helper
 * (src/cli/self-process.ts), with quiet logs, a 120 s limit and `json()` for `--json` output.
 */
export async function runLockstep(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CliResult> {
  const run = await runSelf(args, {
    env: { ...process.env, LOCKSTEP_LOG_LEVEL: "warn", ...options.env },
    timeoutMs: options.timeoutMs ?? 120_000,
  });
  return { ...run, json: <T>() => JSON.parse(run.stdout) as T };
}

export interface TestNetworkHosts {
  sequencer: string;
  mediator: string;
  participants: string[];
}

export interface TestNetworkConfig {
  dir: string;
  configPath: string;
  ports: { sequencer: number; mediator: number; participants: number[] };
  /** Each node's `host` (127.0.0.1 unless given); with the default `address`, also where it is reached. */
  hosts: TestNetworkHosts;
}

export interface TestConfigOptions {
  /** Per-node `host`, e.g. a different loopback address per node to stand for separate machines. */
  hosts?: Partial<TestNetworkHosts>;
}

/** Writes a lockstep.yaml for a network on free ports with its data dir in a fresh temp dir. */
export async function writeTestConfig(
  participants = 2,
  options: TestConfigOptions = {},
): Promise<TestNetworkConfig> {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-cli-"));
  const ports = { sequencer: await freePort(), mediator: await freePort(), participants: [] as number[] };
  for (let i = 0; i < participants; i++) ports.participants.push(await freePort());
  const hosts: TestNetworkHosts = {
    sequencer: options.hosts?.sequencer ?? LOOPBACK,
    mediator: options.hosts?.mediator ?? LOOPBACK,
    participants: ports.participants.map((_, i) => options.hosts?.participants?.[i] ?? LOOPBACK),
  };
  // `host` is written only when given, so the default configs stay as before.
  const at = (host: string | undefined) => (host ? { host } : {});
  const config = {
    "data-dir": "data",
    synchronizer: {
      id: "sync1",
      sequencer: { name: "sequencer1", port: ports.sequencer, ...at(options.hosts?.sequencer) },
      mediator: { name: "mediator1", port: ports.mediator, ...at(options.hosts?.mediator) },
    },
    participants: ports.participants.map((port, i) => ({
      name: `participant${i + 1}`,
      port,
      ...at(options.hosts?.participants?.[i]),
      // Ledger API auth off by explicit config (a test that needs it turns it on: ledger-api-auth.test.ts).
      "ledger-api": { auth: { type: "off" } },
    })),
    backup: { repository: "backups" },
  };
  const configPath = join(dir, "lockstep.yaml");
  writeFileSync(configPath, stringify(config));
  // This process's admin calls to the network (tests' own clients) carry the token its nodes create.
  const nodeHosts = [
    [hosts.sequencer, ports.sequencer],
    [hosts.mediator, ports.mediator],
    ...ports.participants.map((port, i) => [hosts.participants[i] as string, port] as const),
  ] as const;
  registerAdminToken(
    nodeHosts.map(([host, port]) => new URL(httpUrl(host, port)).host),
    () => readAdminTokenFile(join(dir, "data", "admin-token")),
  );
  return { dir, configPath, ports, hosts };
}
