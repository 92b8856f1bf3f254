import { accessSync, constants, mkdirSync, statSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import { adminTokenFile, readAdminTokenFile } from "../common/admin-credentials.ts";
import type { LoadedConfig } from "../common/config.ts";
import { loadConfig } from "../common/config.ts";
import type { NodeEntry } from "../common/config-schema.ts";
import { configNodes } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { configureClientTls } from "../common/tls-client.ts";
import { registerNetworkAdminToken } from "../node/admin-token.ts";
import { Output } from "./output.ts";

export interface GlobalOptions {
  config?: string;
  json?: boolean;
}

export function globalOptions(command: Command): GlobalOptions {
  return command.optsWithGlobals() as GlobalOptions;
}

export function outputFor(command: Command): Output {
  return new Output(Boolean(globalOptions(command).json));
}

/**
 * The config per docs/cli.md: --config FILE, else $LOCKSTEP_CONFIG, else ./lockstep.yaml. Admin
 * calls to its nodes then carry the network's admin token ($LOCKSTEP_ADMIN_TOKEN, else the token
 * file, read when first needed: `lockstep up` may create it after this).
 */
export async function loadCliConfig(command: Command): Promise<LoadedConfig> {
  const path = globalOptions(command).config ?? process.env.LOCKSTEP_CONFIG ?? "lockstep.yaml";
  const loaded = await loadConfig({ path: resolve(path) });
  registerNetworkAdminToken(loaded.config, () => readAdminTokenFile(adminTokenFile(loaded.config)));
  // https to nodes with TLS: the network's CAs, the CLI's client certificate (tls-client.ts).
  configureClientTls(loaded.config);
  return loaded;
}

/**
 * Creates the data dir if needed and checks this user may use it: a dir owned by someone else
 * would make the embedded cluster fail later with a confusing PostgreSQL error.
 */
export function prepareDataDir(dataDir: string): void {
  try {
    mkdirSync(dataDir, { recursive: true });
    accessSync(dataDir, constants.W_OK | constants.X_OK);
  } catch (error) {
    throw new LockstepError("DATA_DIR_NOT_WRITABLE", { path: dataDir, reason: (error as Error).message });
  }
  const uid = process.getuid?.();
  const owner = statSync(dataDir).uid;
  if (uid !== undefined && uid !== 0 && owner !== uid) {
    throw new LockstepError("DATA_DIR_NOT_WRITABLE", {
      path: dataDir,
      reason: `owned by uid ${owner}, not ${uid}`,
    });
  }
}

export function findNode(loaded: LoadedConfig, name: string): NodeEntry {
  const nodes = configNodes(loaded.config);
  const entry = nodes.find((n) => n.name === name);
  if (!entry)
    throw new LockstepError("NODE_UNKNOWN", { node: name, known: nodes.map((n) => n.name).join(", ") });
  return entry;
}

/** Nodes named by `--nodes a,b` (all when absent), each checked against the config. */
export function selectNodes(loaded: LoadedConfig, names?: string): NodeEntry[] {
  if (!names) return configNodes(loaded.config);
  return names
    .split(",")
    .map((n) => n.trim())
    .filter(Boolean)
    .map((n) => findNode(loaded, n));
}
