import { appendFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import type { NodeEntry } from "../common/config-schema.ts";
import { parseDuration } from "../common/duration.ts";
import { LockstepError } from "../common/errors.ts";
import { LOOPBACK } from "../common/loopback.ts";
import { httpUrl, isWildcardHost, nodeEndpoint } from "../common/node-endpoint.ts";
import { adminClient } from "../node/clients.ts";
import {
  checkOldPrimary,
  checkTarget,
  type OldPrimaryVerdict,
  type StorageUrlKey,
  storageUrlKey,
  type TargetVerdict,
} from "../node/failover-checks.ts";
import { ensureProcessDirs, livePid, processFiles } from "../node/process-files.ts";
import { multiHostUrlProblem, parseMultiHostUrl } from "../storage/multi-host.ts";
import { describeServerUrl, probeServers } from "../storage/server-probe.ts";
import { findNode, loadCliConfig, outputFor, prepareDataDir } from "./cli-context.ts";
import { type LaunchedNode, launchDetached } from "./node-launcher.ts";
import type { Output } from "./output.ts";

/** How long to wait for a moved member to subscribe at its sequencer before saying it has not. */
const HEARD_TIMEOUT_MS = 30_000;

interface FailoverOptions {
  to: string;
  oldPrimaryFenced?: boolean;
  timeout: string;
}

/** docs/cli.md's `failover --json` document. */
export interface FailoverResult {
  node: string;
  kind: string;
  /** `host:port/database` of the new and the old primary (never with credentials). */
  target: string;
  oldPrimary: string;
  oldPrimaryFenced: OldPrimaryVerdict;
  /** The writer epoch the target's copy held, and the one the node took when it became active. */
  writerEpochBefore: string;
  writerEpoch: string;
  pid: number;
  address: string;
  logFile: string;
  /** Whether the sequencer has heard the new epoch (it then refuses the old writer); null for the sequencer itself. */
  heardBySequencer: boolean | null;
  /** The change the operator must make so that the next start uses the new primary. */
  configChange: StorageUrlKey & { value: string };
}

type AdminStatus = Awaited<ReturnType<ReturnType<typeof adminClient>["getStatus"]>>;

/** The URL as the operator may see it again: the password, if any, masked. */
function maskedUrl(url: string): string {
  if (parseMultiHostUrl(url).password === undefined) return url;
  return url.replace(/^(postgres(?:ql)?:\/\/[^:@/]*):[^@/]*@/, "$1:****@");
}

/**
 * `lockstep failover NODE --to URL` (docs/operations.md "Fail-over runbook"), run on a machine of
 * the site the node moves to: the target must be a promoted primary holding the node's database,
 * the old primary (the configured storage.url) unreachable, a standby or read-only, unless the
 * operator says it is fenced; then the node starts in the background on the target, with storage.url
 * overridden for its process only, and the command waits until it is active (and, for a member,
 * until its sequencer has heard the new writer epoch).
 */
export function registerFailoverCommand(program: Command): void {
  program
    .command("failover")
    .description(
      "start a node at another site on its database's promoted replica: checks that the target is a primary holding the node's database and that the old primary is unreachable or demoted, starts the node there in the background, prints its writer epoch and the config change to make",
    )
    .argument("<node>", "node name")
    .requiredOption("--to <url>", "the promoted primary's URL of the node's database (postgresql://…)")
    .option(
      "--old-primary-fenced",
      "the old primary is fenced in a way the check cannot see (stopped for good, its site isolated); recorded and printed",
    )
    .option("--timeout <duration>", "how long each database server may take to answer", "3s")
    .action(async (name: string, opts: FailoverOptions, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const entry = findNode(loaded, name);
      const oldUrl = entry.config.storage.url;
      if (!oldUrl) {
        throw new LockstepError("INVALID_ARGUMENT", {
          details: `${name} uses the embedded database (no storage.url): there is no replica to fail over to`,
        });
      }
      const problem = multiHostUrlProblem(opts.to);
      if (problem) throw new LockstepError("INVALID_ARGUMENT", { details: `--to: ${problem}` });
      const timeoutMs = durationOption(opts.timeout);
      const target = describeServerUrl(opts.to);
      const oldPrimary = describeServerUrl(oldUrl);
      if (target === oldPrimary) {
        throw new LockstepError("INVALID_ARGUMENT", {
          details: `--to names ${name}'s configured storage.url (${oldPrimary}): give the promoted replica's URL`,
        });
      }
      const dataDir = loaded.config["data-dir"];
      const running = livePid(processFiles(dataDir, name).pidFile);
      if (running) throw new LockstepError("NODE_ALREADY_RUNNING", { node: name, pid: running });

      out.info(`failover of ${entry.kind} ${name}: from ${oldPrimary} to ${target}`);
      const { checked, fenced } = await runChecks(out, entry, opts, {
        target,
        oldPrimary,
        oldUrl,
        timeoutMs,
      });

      const key = storageUrlKey(loaded.config, entry);
      const endpoint = nodeEndpoint(entry);
      // The node runs on this machine: wait for it where it binds, whatever the others dial.
      const local = isWildcardHost(endpoint.bindHost) ? LOOPBACK : endpoint.bindHost;
      out.info(
        `[3/4] starting ${name} on ${target} (bound to ${endpoint.bindHost}:${entry.port}; ${key.env} overrides ${key.key})`,
      );
      prepareDataDir(dataDir);
      ensureProcessDirs(dataDir);
      // On file beside the node's own log lines: who decided what, on which grounds.
      appendFileSync(
        processFiles(dataDir, name).logFile,
        `${JSON.stringify({ time: new Date().toISOString(), msg: "lockstep failover", node: name, target, oldPrimary, oldPrimaryFenced: fenced })}\n`,
      );
      const launched = await launchDetached({
        configPath: loaded.path,
        dataDir,
        name,
        port: entry.port,
        endpoint: { ...endpoint, url: httpUrl(local, entry.port, endpoint.tls) },
        env: { [key.env]: opts.to },
      });

      const member = entry.kind !== "sequencer";
      out.info(`[4/4] waiting for ${name} to be active${member ? " and heard by its sequencer" : ""}`);
      const { status, heardBySequencer } = await awaitActive(
        out,
        entry,
        launched,
        adminClient(entry.port, local, { tls: endpoint.tls }),
      );
      out.info(
        `      active, pid ${launched.pid}, writer epoch ${status.writerEpoch} (was ${checked.writerEpoch})`,
      );
      if (heardBySequencer !== null) {
        out.info(
          heardBySequencer
            ? `      subscribed at its sequencer with epoch ${status.writerEpoch}: the sequencer now refuses the old writer`
            : `      not subscribed at its sequencer within ${HEARD_TIMEOUT_MS / 1000} s: the old writer is refused only once it is (is the sequencer running, and its address pointed at this site?)`,
        );
      }

      const result: FailoverResult = {
        node: name,
        kind: entry.kind,
        target,
        oldPrimary,
        oldPrimaryFenced: fenced,
        writerEpochBefore: checked.writerEpoch.toString(),
        writerEpoch: status.writerEpoch.toString(),
        pid: launched.pid,
        address: launched.address,
        logFile: launched.logFile,
        heardBySequencer,
        configChange: { ...key, value: maskedUrl(opts.to) },
      };
      out.result(result, () => resultText(result));
    });
}

function durationOption(value: string): number {
  try {
    return parseDuration(value);
  } catch (error) {
    throw new LockstepError("INVALID_ARGUMENT", { details: `--timeout: ${(error as Error).message}` });
  }
}

/** Steps 1 and 2: the target, then the old primary; each refusal is thrown with its code. */
async function runChecks(
  out: Output,
  entry: NodeEntry,
  opts: FailoverOptions,
  at: { target: string; oldPrimary: string; oldUrl: string; timeoutMs: number },
): Promise<{ checked: TargetVerdict; fenced: OldPrimaryVerdict }> {
  const node = { name: entry.name, kind: entry.kind };
  out.info(`[1/4] target ${at.target}: is it a promoted primary holding ${entry.name}'s database?`);
  const checked = checkTarget(node, at.target, await probeServers(opts.to, at.timeoutMs));
  out.info(
    `      yes: ${checked.host} is a primary; ${entry.name}'s writer epoch there is ${checked.writerEpoch}`,
  );

  out.info(`[2/4] old primary ${at.oldPrimary}: unreachable, demoted or read-only?`);
  const probes = await probeServers(at.oldUrl, at.timeoutMs);
  const fenced = checkOldPrimary(node, at.oldPrimary, probes, Boolean(opts.oldPrimaryFenced));
  for (const line of fenced.hosts) out.info(`      ${line}`);
  if (fenced.fenced === "asserted") {
    out.info("      it still takes writes; going on because --old-primary-fenced says it is fenced");
  } else if (fenced.fenced === "unreachable") {
    // Unreachable from here is not fenced for everyone (docs/operations.md, runbook step 1).
    out.info("      unreachable from here: make sure no client of the old site can still write to it");
  }
  return { checked, fenced };
}

/**
 * Step 4: the node must be active (not passive behind another process on the target, not failed);
 * a member then until its first subscription at the sequencer passed its check, which is when the
 * sequencer has recorded the new epoch and refuses the old writer.
 */
async function awaitActive(
  out: Output,
  entry: NodeEntry,
  launched: LaunchedNode,
  admin: ReturnType<typeof adminClient>,
): Promise<{ status: AdminStatus; heardBySequencer: boolean | null }> {
  const refused = (status: AdminStatus) => {
    if (status.role === "failed" && status.lastError) {
      out.info(`      ${entry.name} failed: ${status.lastError.code}: ${status.lastError.message}`);
      out.info(`      remedy: ${status.lastError.remedy}`);
    }
    return new LockstepError("NODE_START_FAILED", {
      node: entry.name,
      reason:
        status.role === "failed" && status.lastError
          ? `${status.lastError.code}: ${status.lastError.message}`
          : `it is ${status.role}: another process of ${entry.name} holds the lock on the target database (it keeps running, pid ${launched.pid})`,
      logFile: launched.logFile,
    });
  };
  const status = await admin.getStatus({}, { timeoutMs: 5000 });
  if (status.role !== "active") throw refused(status);
  if (entry.kind === "sequencer") return { status, heardBySequencer: null };
  const deadline = Date.now() + HEARD_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const now = await admin.getStatus({}, { timeoutMs: 5000 });
    if (now.role !== "active") throw refused(now);
    const position = now.positionJson ? (JSON.parse(now.positionJson) as { subscriptionCheck?: string }) : {};
    if (position.subscriptionCheck === "passed") return { status, heardBySequencer: true };
    await sleep(500);
  }
  return { status, heardBySequencer: false };
}

function resultText(r: FailoverResult): string {
  const next =
    r.heardBySequencer === null
      ? "Point the sequencer's address at this site now, then fail over the other nodes of the old site."
      : r.heardBySequencer
        ? `The sequencer refuses the old writer (epoch ${r.writerEpochBefore}) from now on.`
        : `The sequencer has not heard the new epoch yet: until it does, it does not refuse the old writer (epoch ${r.writerEpochBefore}).`;
  const fenced =
    r.oldPrimaryFenced.fenced === "asserted"
      ? "fenced, as the operator asserted (--old-primary-fenced)"
      : r.oldPrimaryFenced.fenced;
  return [
    `${r.node} is active on ${r.target} at ${r.address} with writer epoch ${r.writerEpoch}.`,
    next,
    `old primary ${r.oldPrimary}: ${fenced}`,
    "",
    `Change the config now, on every site: ${r.configChange.key}: ${r.configChange.value}`,
    `(until then this process runs with ${r.configChange.env}; a restart with the old config would go back to ${r.oldPrimary})`,
  ].join("\n");
}
