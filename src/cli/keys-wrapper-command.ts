import { existsSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import { stringify } from "yaml";
import { crashPoint } from "../common/crash-points.ts";
import { LockstepError } from "../common/errors.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { generateWrapperKeyFile, loadWrapperKey, type WrapperKey } from "../crypto/key-wrapping.ts";
import { KeyAdminService } from "../gen/lockstep/admin/v1/keys_pb.ts";
import { runBackupCreate } from "./backup-commands.ts";
import { findNode, loadCliConfig, outputFor } from "./cli-context.ts";

type Step = "key" | "rewrap" | "backup" | "retire";
const STEPS: readonly Step[] = ["key", "rewrap", "backup", "retire"];

interface StepResult {
  step: Step;
  outcome: "done" | "already" | "skipped";
  detail: string;
}

interface RotateWrapperOptions {
  newKeyFile: string;
  backupSet?: string;
  force?: boolean;
}

/** The new wrapper key: generated (owner-only) when the file does not exist yet, else read. */
function newWrapperKey(path: string): { key: WrapperKey; generated: boolean } {
  if (existsSync(path)) return { key: loadWrapperKey(path), generated: false };
  return { key: generateWrapperKeyFile(path), generated: true };
}

/**
 * `lockstep keys rotate-wrapper NODE --new-key-file PATH` (docs/keys.md): new key file → the node
 * re-encrypts its store under it → a backup holds the store under it → the former wrapper keys are
 * retired. Every step is idempotent and found done from the node's state (or the file), so a rerun
 * after an interruption anywhere finishes the rotation.
 */
export function registerKeysWrapperCommand(keys: Command): void {
  keys
    .command("rotate-wrapper")
    .description(
      "re-encrypt the node's private keys under a new wrapper key: key file → re-encrypt → back up → retire the old; rerun to resume",
    )
    .argument("<node>", "node name")
    .requiredOption(
      "--new-key-file <path>",
      "the new wrapper key file, on the node's host; generated (mode 0600) if it does not exist",
    )
    .option(
      "--backup-set <set>",
      "a completed set registered in the node and sealed under the new wrapper key, instead of a new backup",
    )
    .option("--force", "retire the old wrapper key without a backup under the new one (recorded in the node)")
    .action(async (name: string, opts: RotateWrapperOptions, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const entry = findNode(loaded, name);
      const rpc = createNodeClient(KeyAdminService, nodeEndpoint(entry).url);
      const force = opts.force === true;
      const steps: StepResult[] = [];
      const warnings: string[] = [];
      const report = (result: StepResult) => {
        steps.push(result);
        out.info(`${STEPS.indexOf(result.step) + 1}/4 ${result.step}: ${result.detail}`);
        crashPoint(`keys-rotate-wrapper-after-${result.step}`);
      };

      // 1. The key file. Relative paths are the operator's, from the current directory.
      const path = resolve(opts.newKeyFile);
      const { key, generated } = newWrapperKey(path);
      const fingerprint = key.fingerprint;
      report({
        step: "key",
        outcome: generated ? "done" : "already",
        detail: generated
          ? `generated wrapper key ${fingerprint} in ${path} (mode 0600)`
          : `wrapper key ${fingerprint} read from ${path}`,
      });

      // 2. The node re-encrypts every private key under it (the node reads the file itself).
      const rewrapped = await rpc.rewrapPrivateKeys({ wrapperKeyFile: path });
      report({
        step: "rewrap",
        outcome: rewrapped.rewrapped > 0 ? "done" : "already",
        detail:
          rewrapped.rewrapped > 0
            ? `${rewrapped.rewrapped} private key(s) re-encrypted under ${fingerprint}${rewrapped.previousFingerprint ? ` (were under ${rewrapped.previousFingerprint})` : ""}`
            : `every private key is under ${fingerprint} already`,
      });

      // 3. A completed set registered in the node that holds the store under the new key.
      const listed = await rpc.listKeys({});
      const former = listed.wrapperKeys.filter((w) => w.state === "active" && w.fingerprint !== fingerprint);
      const holding = listed.wrapperKeys.find((w) => w.fingerprint === fingerprint)?.backupSets ?? [];
      if (opts.backupSet !== undefined) {
        if (!holding.includes(opts.backupSet)) {
          throw new LockstepError("KEY_NOT_BACKED_UP", {
            node: entry.name,
            fingerprint,
            action: `using set ${opts.backupSet} (not a completed set registered in ${entry.name} sealed under the new wrapper key)`,
          });
        }
        report({ step: "backup", outcome: "already", detail: `set ${opts.backupSet} holds the store` });
      } else if (holding.length > 0) {
        report({ step: "backup", outcome: "already", detail: `set ${holding[0]} holds the store` });
      } else if (force) {
        report({
          step: "backup",
          outcome: "skipped",
          detail: "skipped (--force): no backup holds the store under the new wrapper key",
        });
      } else {
        const manifest = await runBackupCreate(loaded.config, [entry], (line) => out.info(`  ${line}`));
        const after = await rpc.listKeys({});
        const sets = after.wrapperKeys.find((w) => w.fingerprint === fingerprint)?.backupSets ?? [];
        if (!sets.includes(manifest.id)) {
          throw new LockstepError("KEY_NOT_BACKED_UP", {
            node: entry.name,
            fingerprint,
            action: `going on (set ${manifest.id} completed but is not registered in the node under the new wrapper key)`,
          });
        }
        report({ step: "backup", outcome: "done", detail: `set ${manifest.id} holds the store` });
      }

      // 4. Every former wrapper key still active is retired (the node checks the backup rule).
      for (const old of former) {
        const retired = await rpc.retireWrapperKey({ fingerprint: old.fingerprint, force });
        if (retired.warning) warnings.push(retired.warning);
      }
      report({
        step: "retire",
        outcome: former.length > 0 ? "done" : "already",
        detail:
          former.length > 0
            ? `retired ${former.map((w) => w.fingerprint).join(", ")}`
            : "no former wrapper key left to retire",
      });

      // What the operator changes: the node reads its wrapper keys from the config at every start.
      const configured = entry.config.crypto["private-key-encryption"];
      const previous = [
        ...new Set([
          ...former.map((w) => w.source),
          ...(configured
            ? [configured["wrapper-key-file"], ...configured["previous-wrapper-key-files"]]
            : []),
        ]),
      ].filter((file) => file !== "" && file !== path);
      const config = {
        "wrapper-key-file": path,
        "previous-wrapper-key-files": previous,
      };
      const next = [
        `Before ${entry.name} starts again, set in its config:`,
        stringify({ crypto: { "private-key-encryption": config } }, { flow: false })
          .trimEnd()
          .split("\n")
          .map((line) => `  ${line}`)
          .join("\n"),
        previous.length > 0
          ? "Keep each previous file while a backup set sealed under its key may be restored (keys list shows the sets per wrapper key)."
          : "",
        `Until then ${entry.name} refuses to start (MISSING_WRAPPER_KEY): its keys are under the new wrapper key only.`,
      ].filter(Boolean);
      const json = {
        node: entry.name,
        wrapperFingerprint: fingerprint,
        wrapperKeyFile: path,
        retired: former.map((w) => w.fingerprint),
        steps,
        warnings,
        config,
      };
      out.result(json, () =>
        [
          `${entry.name}'s private keys are encrypted under wrapper key ${fingerprint}`,
          ...warnings.map((w) => `warning: ${w}`),
          ...next,
        ].join("\n"),
      );
      if (out.json) out.info(next.join("\n"));
    });
}
