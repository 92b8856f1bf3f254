import { appendFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
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
} from "../node/failover-checks.ts";
import { ensureProcessDirs, livePid, processFiles } from "../node/process-files.ts";
import { multiHostUrlProblem, parseMultiHostUrl } from "../storage/multi-host.ts";
import { describeServerUrl, probeServers } from "../storage/server-probe.ts";
import { findNode, loadCliConfig, outputFor, prepareDataDir } from "./cli-context.ts";
import { launchDetached } from "./node-launcher.ts";

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
  target: string;
  oldPrimary: string;
  oldPrimaryFenced: OldPrimaryVerdict;
  /** The writer epoch the target's copy held, and the one the node took when it became active. */
  writerEpochBefore: string;
  writerEpoch: string;
  pid: number;
  address: string;
  logFile: string;
  /** Whether the sequencer has heard the new epoch (then it refuses the old writer); null for the sequencer itself. */
  heardBySequencer: boolean | null;
  /** The change the operator must make so that the next start uses the new primary. */
  configChange: StorageUrlKey & { value: string };
}

/** The URL as the operator may see it again: the password, if any, masked. */
function maskedUrl(url: string): string {
  const { password } = parseMultiHostUrl(url);
  if (password === undefined) return url;
  return url.replace(/^(postgres(?:ql)?:\/\/[^:@/]*):[^@/]*@/, "$1:****@");
}

/**
 * `lockstep failover NODE --to URL` (docs/operations.md "Fail-over runbook"), run on a machine of
 * the site the node moves to: the target must be a promoted primary holding the node's database,
 * the old primary (the configured storage.url) unreachable, a standby or read-only, unless the
 * operator says it is fenced; then the node starts in the background on the target, with storage.url
 * overridden for this process only, and the command waits until it is active.
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
      let timeoutMs: number;
      try {
        timeoutMs = parseDuration(opts.timeout);
      } catch (error) {
        throw new LockstepError("INVALID_ARGUMENT", { details: `--timeout: ${(error as Error).message}` });
      }
      const target = describeServerUrl(opts.to);
      const oldPrimary = describeServerUrl(oldUrl);
      if (target === oldPrimary) {
        throw new LockstepError("INVALID_ARGUMENT", {
          details: `--to names ${name}'s configured storage.url (${oldPrimary}): give the promoted replica's URL`,
        });
      }
      const node = { name: entry.name, kind: entry.kind };
      const dataDir = loaded.config["data-dir"];
      const { pidFile, logFile } = processFiles(dataDir, name);
      const running = livePid(pidFile);
      if (running) throw new LockstepError("NODE_ALREADY_RUNNING", { node: name, pid: running });

      out.info(`failover of ${entry.kind} ${name}: from ${oldPrimary} to ${target}`);
      out.info(`[1/4] target ${target}: is it a promoted primary holding ${name}'s database?`);
      const checked = checkTarget(node, target, await probeServers(opts.to, timeoutMs));
      out.info(
        `      yes: ${checked.host} is a primary; ${name}'s writer epoch there is ${checked.writerEpoch}`,
      );

      out.info(`[2/4] old primary ${oldPrimary}: unreachable, demoted or read-only?`);
      const fenced = checkOldPrimary(
        node,
        oldPrimary,
        await probeServers(oldUrl, timeoutMs),
        Boolean(opts.oldPrimaryFenced),
      );
      for (const line of fenced.hosts) out.info(`      ${line}`);
      if (fenced.fenced === "asserted") {
        out.info("      it still takes writes; going on because --old-primary-fenced says it is fenced");
      } else if (fenced.fenced === "unreachable") {
        // Unreachable from here is not fenced for everyone: docs/operations.md says what to check.
        out.info("      unreachable from here: make sure no client of the old site can still write to it");
      }

      const key = storageUrlKey(loaded.config, entry);
      const endpoint = nodeEndpoint(entry);
      // The node runs on this machine: wait for it where it binds, whatever the others dial.
      const local = isWildcardHost(endpoint.bindHost) ? LOOPBACK : endpoint.bindHost;
      out.info(
        `[3/4] starting ${name} on ${target} (bound to ${endpoint.bindHost}:${entry.port}; ${key.env} overrides ${key.key})`,
      );
      prepareDataDir(dataDir);
      ensureProcessDirs(dataDir);
      // Recorded beside the node's own log lines, so the decision is on file with the node.
      appendFileSync(
        logFile,
        `${JSON.stringify({
          time: new Date().toISOString(),
          msg: "lockstep failover",
          node: name,
          target,
          oldPrimary,
          oldPrimaryFenced: fenced.fenced,
          oldPrimaryHosts: fenced.hosts,
          assertedByOperator: fenced.asserted,
        })}\n`,
      );
      const launched = await launchDetached({
        configPath: loaded.path,
        dataDir,
        name,
        port: entry.port,
        endpoint: { ...endpoint, url: httpUrl(local, entry.port) },
        env: { [key.env]: opts.to },
      });

      out.info(
        `[4/4] waiting for ${name} to be active${entry.kind === "sequencer" ? "" : " and heard by its sequencer"}`,
      );
      const admin = adminClient(entry.port, local);
      const failure = (status: {
        role: string;
        lastError?: { code: string; message: string; remedy: string };
      }) => {
        if (status.role === "failed" && status.lastError) {
          out.info(`      ${name} failed: ${status.lastError.code}: ${status.lastError.message}`);
          out.info(`      remedy: ${status.lastError.remedy}`);
          return new LockstepError("NODE_START_FAILED", {
            node: name,
            reason: `${status.lastError.code}: ${status.lastError.message}`,
            logFile: launched.logFile,
          });
        }
        return new LockstepError("NODE_START_FAILED", {
          node: name,
          reason: `it is ${status.role}: another process of ${name} holds the lock on the target database (it keeps running, pid ${launched.pid})`,
          logFile: launched.logFile,
        });
      };
      const status = await admin.getStatus({}, { timeoutMs: 5000 });
      if (status.role !== "active") throw failure(status);
      out.info(
        `      active, pid ${launched.pid}, writer epoch ${status.writerEpoch} (was ${checked.writerEpoch})`,
      );
      // The sequencer refuses the old writer only once it has heard the new epoch: at the member's
      // first subscription, whose resubscription check then passes.
      let heardBySequencer: boolean | null = null;
      if (entry.kind !== "sequencer") {
        heardBySequencer = false;
        const deadline = Date.now() + HEARD_TIMEOUT_MS;
        while (Date.now() < deadline) {
          const now = await admin.getStatus({}, { timeoutMs: 5000 });
          if (now.role !== "active") throw failure(now);
          const position = now.positionJson
            ? (JSON.parse(now.positionJson) as { subscriptionCheck?: string })
            : {};
          if (position.subscriptionCheck === "passed") {
            heardBySequencer = true;
            break;
          }
          await sleep(500);
        }
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
      out.result(result, () =>
        [
          `${name} is active on ${target} at ${launched.address} with writer epoch ${result.writerEpoch}.`,
          heardBySequencer === null
            ? "Point the sequencer's address at this site now, then fail over the nodes of the old site."
            : heardBySequencer
              ? `The sequencer refuses the old writer (epoch ${result.writerEpochBefore}) from now on.`
              : `The sequencer has not heard the new epoch yet: until it does, it would not refuse the old writer (epoch ${result.writerEpochBefore}).`,
          `old primary ${oldPrimary}: ${fenced.fenced === "asserted" ? "fenced, as the operator asserted (--old-primary-fenced)" : fenced.fenced}`,
          "",
          `Change the config now, on every site: ${key.key}: ${result.configChange.value}`,
          `(until then this process runs with ${key.env}; a restart with the old config would go back to ${oldPrimary})`,
        ].join("\n"),
      );
    });
}
