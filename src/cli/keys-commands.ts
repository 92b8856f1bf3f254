import type { Command } from "commander";
import type { NodeEntry } from "../common/config-schema.ts";
import { crashPoint } from "../common/crash-points.ts";
import { LockstepError } from "../common/errors.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { microsToIso } from "../common/time.ts";
import { KeyAdminService, type KeyInfo, type ListKeysResponse } from "../gen/lockstep/admin/v1/keys_pb.ts";
import { runBackupCreate } from "./backup-commands.ts";
import { findNode, loadCliConfig, outputFor } from "./cli-context.ts";
import { registerKeysWrapperCommand } from "./keys-wrapper-command.ts";
import { table } from "./output.ts";
import { retryRetryable } from "./retry-retryable.ts";

export function keyAdminClient(entry: NodeEntry) {
  return createNodeClient(KeyAdminService, nodeEndpoint(entry).url);
}

type KeyAdminClient = ReturnType<typeof keyAdminClient>;

/** The node's KeyAdminService, each call retried while the node is still starting (retryRetryable). */
export function retryingKeyAdmin(entry: NodeEntry, progress: (line: string) => void): KeyAdminClient {
  const rpc = keyAdminClient(entry);
  return new Proxy(rpc, {
    get: (target, name: keyof KeyAdminClient) => {
      const method = target[name] as (request: unknown) => Promise<unknown>;
      return (request: unknown) => retryRetryable(() => method.call(target, request), progress);
    },
  });
}

const short = (fingerprint: string) => `${fingerprint.slice(0, 12)}…`;

/** docs/cli.md `keys list --json`. */
export function keysJson(node: string, listed: ListKeysResponse) {
  return {
    node,
    member: listed.member || null,
    keys: listed.keys.map((k) => ({
      fingerprint: k.fingerprint,
      purpose: k.purpose,
      state: k.state,
      createdAt: k.createdAt,
      activatedAt: k.activatedAt || null,
      revokedAt: k.revokedAt || null,
      inTopology: k.inTopology,
      backupSets: k.backupSets,
      wrapperFingerprint: k.wrapperFingerprint || null,
    })),
    overrides: listed.overrides.map((o) => ({
      at: o.at,
      action: o.action,
      fingerprint: o.fingerprint,
      warning: o.warning,
    })),
    wrapperKeys: listed.wrapperKeys.map((w) => ({
      fingerprint: w.fingerprint,
      state: w.state,
      source: w.source,
      createdAt: w.createdAt,
      retiredAt: w.retiredAt || null,
      backupSets: w.backupSets,
    })),
  };
}

type Step = "generate" | "backup" | "announce" | "revoke";
const STEPS: readonly Step[] = ["generate", "backup", "announce", "revoke"];

interface StepResult {
  step: Step;
  outcome: "done" | "already" | "skipped";
  detail: string;
}

/**
 * Where a rotation stands, from the node's keys: a pending signing key is one generated and not yet
 * announced; a signing key topology lists beside another is one announced whose predecessor is not
 * yet revoked. Neither: nothing under way, a new rotation starts.
 */
export function rotationTarget(keys: readonly KeyInfo[]): { key: KeyInfo; from: Step } | undefined {
  const signing = keys.filter((k) => k.purpose === "signing");
  const pending = signing.find((k) => k.state === "pending");
  if (pending) return { key: pending, from: "generate" };
  const listed = signing.filter((k) => k.inTopology && k.state === "active");
  if (listed.length > 1) {
    const newest = [...listed].sort((a, b) => (a.activatedAt < b.activatedAt ? 1 : -1))[0] as KeyInfo;
    return { key: newest, from: "backup" };
  }
  return undefined;
}

/** `lockstep keys list | rotate | rotate-wrapper` (docs/keys.md). */
export function registerKeysCommands(program: Command): void {
  const keys = program.command("keys").description("a node's keys: list, rotate in the safe order");

  keys
    .command("list")
    .description(
      "every key with purpose, state and since when, whether topology lists it, the backup sets that hold it",
    )
    .argument("<node>", "node name")
    .action(async (name: string, _opts: unknown, command: Command) => {
      const out = outputFor(command);
      const entry = findNode(await loadCliConfig(command), name);
      const json = keysJson(entry.name, await keyAdminClient(entry).listKeys({}));
      out.result(json, () =>
        [
          `${entry.name}: ${json.member ?? "(not registered)"}`,
          table(
            ["FINGERPRINT", "PURPOSE", "STATE", "SINCE", "IN TOPOLOGY", "BACKUP SETS"],
            json.keys.map((k) => [
              short(k.fingerprint),
              k.purpose,
              k.state,
              k.revokedAt ?? k.activatedAt ?? k.createdAt,
              k.inTopology ? "yes" : "no",
              k.backupSets.length === 0 ? "none" : k.backupSets.join(", "),
            ]),
          ),
          ...json.wrapperKeys.map(
            (w) =>
              `wrapper key ${short(w.fingerprint)} ${w.state} (${w.source}); sets: ${w.backupSets.join(", ") || "none"}`,
          ),
          ...json.overrides.map(
            (o) => `warning (${o.at}, forced ${o.action} of ${short(o.fingerprint)}): ${o.warning}`,
          ),
        ].join("\n"),
      );
    });

  keys
    .command("rotate")
    .description(
      "rotate the node's signing key: generate and store (pending) → back up → announce → revoke the old; rerun to resume",
    )
    .argument("<node>", "node name")
    .option(
      "--backup-set <set>",
      "a completed set registered in the node that holds the new key, instead of a new backup",
    )
    .option("--force", "announce and revoke without a backup that holds the new key (recorded in the node)")
    .action(async (name: string, opts: { backupSet?: string; force?: boolean }, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const entry = findNode(loaded, name);
      const rpc = retryingKeyAdmin(entry, (line) => out.info(line));
      const force = opts.force === true;
      const steps: StepResult[] = [];
      const warnings: string[] = [];
      const report = (result: StepResult) => {
        steps.push(result);
        out.info(`${STEPS.indexOf(result.step) + 1}/4 ${result.step}: ${result.detail}`);
        crashPoint(`keys-rotate-after-${result.step}`);
      };

      const before = await rpc.listKeys({});
      const previous = before.keys
        .filter((k) => k.purpose === "signing" && k.inTopology)
        .map((k) => k.fingerprint);
      let target = rotationTarget(before.keys);
      if (target) {
        report({
          step: "generate",
          outcome: "already",
          detail: `resuming with key ${target.key.fingerprint} (${target.key.state})`,
        });
      } else {
        const generated = await rpc.generateSigningKey({});
        if (!generated.key)
          throw new LockstepError("INTERNAL_ERROR", { details: "no key in GenerateSigningKey" });
        target = { key: generated.key, from: "generate" };
        report({
          step: "generate",
          outcome: generated.generated ? "done" : "already",
          detail: `key ${generated.key.fingerprint} stored as pending`,
        });
      }
      const fingerprint = target.key.fingerprint;

      report(
        await backupStep(
          opts.backupSet,
          force,
          fingerprint,
          entry.name,
          async () => {
            const manifest = await runBackupCreate(loaded.config, [entry], (line) => out.info(`  ${line}`));
            return manifest.id;
          },
          rpc,
        ),
      );

      const announced = await rpc.announceSigningKey({ fingerprint, force });
      if (announced.warning) warnings.push(announced.warning);
      report({
        step: "announce",
        outcome: announced.alreadyAnnounced ? "already" : "done",
        detail: announced.alreadyAnnounced
          ? "topology lists the key already; it is active"
          : `topology lists the key from ${microsToIso(announced.effectiveAt)}; the node signs with it`,
      });

      const revoked = await rpc.revokeSigningKeys({ keepFingerprint: fingerprint, force });
      if (revoked.warning) warnings.push(revoked.warning);
      report({
        step: "revoke",
        outcome: revoked.effectiveAt === 0n ? "already" : "done",
        detail:
          revoked.revoked.length === 0
            ? "no other key to revoke"
            : `revoked ${revoked.revoked.join(", ")}${revoked.effectiveAt === 0n ? "" : ` from ${microsToIso(revoked.effectiveAt)}`}`,
      });

      const json = {
        node: entry.name,
        key: fingerprint,
        previous: previous.filter((fp) => fp !== fingerprint),
        steps,
        warnings,
      };
      out.result(json, () =>
        [`${entry.name} signs with key ${fingerprint}`, ...warnings.map((w) => `warning: ${w}`)].join("\n"),
      );
    });

  registerKeysWrapperCommand(keys);
}

/**
 * The backup step: a named set must be registered in the node and hold the key; else a set that
 * does is enough; else a new backup of the node. With --force and no set, skipped: the node records
 * the override when it announces.
 */
async function backupStep(
  named: string | undefined,
  force: boolean,
  fingerprint: string,
  node: string,
  backUp: () => Promise<string>,
  rpc: KeyAdminClient,
): Promise<StepResult> {
  const key = (await rpc.listKeys({})).keys.find((k) => k.fingerprint === fingerprint);
  const holding = key?.backupSets ?? [];
  if (named !== undefined) {
    if (!holding.includes(named)) {
      throw new LockstepError("KEY_NOT_BACKED_UP", {
        node,
        fingerprint,
        action: `using set ${named} (not a completed set registered in ${node} that holds the key)`,
      });
    }
    return { step: "backup", outcome: "already", detail: `set ${named} holds the key` };
  }
  if (holding.length > 0) {
    return { step: "backup", outcome: "already", detail: `set ${holding[0]} holds the key` };
  }
  if (force) {
    return { step: "backup", outcome: "skipped", detail: "skipped (--force): no backup holds the new key" };
  }
  const set = await backUp();
  const after = (await rpc.listKeys({})).keys.find((k) => k.fingerprint === fingerprint);
  if (!after?.backupSets.includes(set)) {
    throw new LockstepError("KEY_NOT_BACKED_UP", {
      node,
      fingerprint,
      action: `going on (set ${set} completed but was not registered in the node)`,
    });
  }
  return { step: "backup", outcome: "done", detail: `set ${set} holds the key` };
}
